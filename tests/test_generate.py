"""common/generate.py as a user runs it: grids, single PNGs, latent walks, and bad input."""

import json

import imageio.v3 as iio
import keras
import numpy as np
import pytest

from common.generate import draw_noise, latent_walk, lerp, main, slerp
from common.plotting import image_grid
from conftest import ROOT, run_forked


def cli(*args):
    """`python -m common.generate args` in a process of its own."""
    return run_forked("-m", "common.generate", *args, check=False, timeout=300)


def save_run(folder, model, **saved):
    """A run folder as the scripts leave it: generator.keras and args.json."""
    folder.mkdir(parents=True)
    model.save(folder / "generator.keras")
    (folder / "args.json").write_text(json.dumps({"latent_dim": 8, "seed": 0, **saved}))
    return folder


def tiny_generator():
    """4x4 colour images from 8 noise values: a generator in shape only, fast to run."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4 * 4 * 3),
                             keras.layers.Reshape((4, 4, 3)), keras.layers.Activation("tanh")],
                            name="generator")


def revealing_generator():
    """4x4 grayscale images that show the noise itself: each pixel is half a noise value,
    so noise in [-1, 1] gives pixels in [64, 191] and noise outside it pixels outside."""
    dense = keras.layers.Dense(16, use_bias=False)
    model = keras.Sequential([keras.Input((8,)), dense, keras.layers.Reshape((4, 4, 1))],
                             name="generator")
    dense.set_weights([0.5 * np.hstack([np.eye(8), np.eye(8)])])
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("tiny") / "run", tiny_generator())


def expected_images(run, count, seed=0, distribution="normal"):
    model = keras.saving.load_model(run / "generator.keras")
    noise = draw_noise(distribution, count, 8, np.random.default_rng(seed))
    return np.asarray(model(noise, training=False))


def pixel_range(folder):
    pixels = np.stack([iio.imread(path) for path in sorted(folder.glob("*.png"))])
    return pixels.min(), pixels.max()


# --- Interpolation -------------------------------------------------------------------------


def test_slerp_ends_at_its_endpoints_and_keeps_to_the_sphere():
    a, b = np.random.default_rng(0).standard_normal((2, 5, 16))
    np.testing.assert_allclose(slerp(a, b, 0.0), a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, rtol=0, atol=1e-12)
    x, y = np.eye(2)
    middle = slerp(x, y, 0.5)
    assert np.linalg.norm(middle) == pytest.approx(1.0)  # lerp would give 0.707
    np.testing.assert_allclose(middle, [0.5 ** 0.5, 0.5 ** 0.5])
    assert np.all(np.isfinite(slerp(x, 2 * x, 0.3)))  # Parallel vectors: no division by 0.


def test_lerp_stays_in_the_uniform_cube_where_slerp_leaves_it():
    corners = np.random.default_rng(0).choice([-1.0, 1.0], (4, 3, 32))  # (K, walks, latent)
    assert np.abs(latent_walk(corners, 7, "uniform")).max() <= 1.0
    assert np.abs(latent_walk(corners, 7, "normal")).max() > 1.1
    np.testing.assert_allclose(lerp([1, 1], [1, -1], 0.5), [1, 0])


def test_latent_walk_visits_every_point_and_loops_back_to_the_first():
    points = np.random.default_rng(0).standard_normal((3, 2, 16))
    walk = latent_walk(points, 5, "normal")
    assert walk.shape == (15, 2, 16) and walk.dtype == np.float32
    np.testing.assert_allclose(walk[::5], points, atol=1e-6)
    # The last frame is one step short of the first point: the frame after it is frame 0.
    np.testing.assert_allclose(walk[-1], slerp(points[2], points[0], 4 / 5), atol=1e-6)
    np.testing.assert_allclose(slerp(points[2], points[0], 5 / 5), walk[0], atol=1e-6)


def test_noise_is_seeded_and_of_the_named_distribution():
    uniform = draw_noise("uniform", 1000, 8, np.random.default_rng(1))
    normal = draw_noise("normal", 1000, 8, np.random.default_rng(1))
    assert uniform.dtype == normal.dtype == np.float32 and uniform.shape == (1000, 8)
    assert uniform.min() >= -1 and uniform.max() <= 1 and np.abs(normal).max() > 2
    np.testing.assert_array_equal(normal, draw_noise("normal", 1000, 8, np.random.default_rng(1)))


# --- Output --------------------------------------------------------------------------------


def test_grid_holds_the_generators_images_in_image_grid_layout(tiny, tmp_path, capsys):
    main([tiny, "--num", "10", "--out", tmp_path / "grid.png"])
    grid = iio.imread(tmp_path / "grid.png")
    assert grid.shape == (3 * (4 + 2) + 2, 4 * (4 + 2) + 2, 3)  # 10 images: 4 columns, 3 rows
    np.testing.assert_array_equal(grid, image_grid(expected_images(tiny, 10)))
    assert f"wrote 10 images of 4x4x3 to {tmp_path / 'grid.png'} (noise: normal, latent 8, " \
           "seed 0)" in capsys.readouterr().out


def test_individual_writes_one_png_per_image(tiny, tmp_path):
    main([tiny, "--num", "5", "--individual", tmp_path / "single"])
    paths = sorted((tmp_path / "single").iterdir())
    assert [path.name for path in paths] == [f"{index:04d}.png" for index in range(5)]
    cells = image_grid(expected_images(tiny, 5), columns=1, padding=0).reshape(5, 4, 4, 3)
    np.testing.assert_array_equal(np.stack([iio.imread(path) for path in paths]), cells)
    gray = save_run(tmp_path / "gray", revealing_generator())
    main([gray, "--num", "2", "--individual", tmp_path / "gray_single"])
    assert iio.imread(tmp_path / "gray_single" / "0001.png").shape == (4, 4)  # saved 2-D


def test_same_seed_same_pictures_other_seed_other_pictures(tiny, tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        main([tiny, "--num", "300", "--seed", seed, "--out", tmp_path / f"{name}.png"])
    read = lambda name: (tmp_path / f"{name}.png").read_bytes()  # noqa: E731
    assert read("a") == read("b") and read("a") != read("c")


def test_noise_distribution_comes_from_args_json(tmp_path):
    uniform = save_run(tmp_path / "faces", revealing_generator(), noise="uniform")
    normal = save_run(tmp_path / "fashion", revealing_generator())  # no "noise": normal
    main([uniform, "--num", "50", "--individual", tmp_path / "u"])
    main([normal, "--num", "50", "--individual", tmp_path / "n"])
    main([uniform, "--num", "50", "--individual", tmp_path / "forced", "--noise", "normal"])
    low, high = pixel_range(tmp_path / "u")
    assert 64 <= low and high <= 191  # every noise value inside [-1, 1]
    for folder in ("n", "forced"):
        low, high = pixel_range(tmp_path / folder)
        assert low < 40 and high > 215  # noise well outside [-1, 1]


def test_walk_gif_has_every_frame_and_loops_seamlessly(tmp_path, capsys):
    run = save_run(tmp_path / "run", revealing_generator(), noise="uniform")
    main([run, "--num", "2", "--points", "3", "--interpolate", "6", "--out", tmp_path / "w.gif"])
    frames = iio.imread(tmp_path / "w.gif", index=None).astype(float)
    assert frames.shape[:3] == (3 * 6, 4 + 4, 2 * (4 + 2) + 2)  # 2 walks side by side
    cells = frames[:, 2:6][:, :, np.r_[2:6, 8:12]]  # the images, without the white padding
    assert cells.min() >= 64 and cells.max() <= 191  # lerp keeps uniform noise in [-1, 1]
    # Seamless: from the last frame back to the first is one ordinary step, not a jump.
    steps = [np.abs(frames[(i + 1) % len(frames)] - frames[i]).max() for i in range(len(frames))]
    assert steps[-1] <= 1.5 * max(steps[:-1]) and min(steps) > 0
    assert "wrote 2 latent walks of 4x4x1 (18 frames, lerp, looping)" in capsys.readouterr().out


def test_refuses_to_overwrite_without_overwrite(tiny, tmp_path):
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"mine")
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main([tiny, "--out", grid])
    assert grid.read_bytes() == b"mine"
    main([tiny, "--out", grid, "--overwrite"])
    assert iio.imread(grid).ndim == 3
    folder = tmp_path / "single"
    folder.mkdir()
    (folder / "0002.png").write_bytes(b"mine")
    with pytest.raises(SystemExit, match="0002.png already exists"):
        main([tiny, "--num", "4", "--individual", folder])
    assert [path.name for path in folder.iterdir()] == ["0002.png"]  # nothing written
    main([tiny, "--num", "4", "--individual", folder, "--overwrite"])
    assert len(list(folder.iterdir())) == 4


# --- Bad input -----------------------------------------------------------------------------


def bad_sources(root, tiny):
    """(source, the path the message must name) for every kind of wrong SOURCE."""
    (root / "empty").mkdir()
    (root / "notes.keras").write_text("not a model")
    truncated(root / "truncated.keras", tiny)
    discriminator(root / "discriminator.keras")
    keras.Sequential([keras.Input((8,)), keras.layers.Dense(5)]).save(root / "vector.keras")
    mismatch = save_run(root / "mismatch", tiny_generator())
    (mismatch / "args.json").write_text('{"latent_dim": 100}')
    broken = save_run(root / "broken_args", tiny_generator())
    (broken / "args.json").write_text('{"latent_dim": 8,')
    return [(root / "missing", root / "missing"), (root / "empty", root / "empty")] + [
        (root / name, root / name) for name in ("notes.keras", "truncated.keras",
                                                "discriminator.keras", "vector.keras")] + [
        (mismatch, mismatch / "generator.keras"), (broken, broken / "args.json")]


def test_every_bad_source_is_one_clear_line_naming_the_path(tiny, tmp_path):
    for source, path in bad_sources(tmp_path, tiny):
        with pytest.raises(SystemExit) as raised:
            main([source, "--out", tmp_path / "grid.png"])
        message = str(raised.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        assert str(path) in message, message
    assert not (tmp_path / "grid.png").exists()


def discriminator(path):
    keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(1)],
                     name="discriminator").save(path)


def truncated(path, tiny):
    whole = (tiny / "generator.keras").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


@pytest.mark.parametrize("source, flags, words", [
    ("run", ["--num", "0"], "--num: must be at least 1"),
    ("run", ["--num", "many"], "--num: must be a whole number"),
    ("run", ["--interpolate", "-3"], "--interpolate: must be at least 1"),
    ("run", ["--points", "1"], "--points: must be at least 2"),
    ("run", ["--noise", "gaussian"], "--noise: invalid choice"),
    ("run", ["--out", "grid.jpg"], "must end in .png"),
    ("run", ["--interpolate", "5", "--individual", "folder"], "drop it or --interpolate"),
    ("missing", [], "does not exist"),
    ("truncated.keras", [], "not a complete .keras zip"),
    ("discriminator.keras", [], "is not a generator"),  # The one case that loads TensorFlow.
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, tiny, source, flags, words):
    path = tiny if source == "run" else tmp_path / source
    if source == "truncated.keras":
        truncated(path, tiny)
    elif source == "discriminator.keras":
        discriminator(path)
    result = cli(path, *(flags or ["--out", tmp_path / "grid.png"]))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    # TensorFlow's start-up log lines may come first; ours is the one error line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert words in errors[0] and (source == "run" or str(path) in errors[0]), errors[0]
    assert not (tmp_path / "grid.png").exists() and not (ROOT / "grid.png").exists()


# --- A real run ----------------------------------------------------------------------------


def test_real_fashion_mnist_run_gives_grid_images_and_walk(tmp_path, fashion_sample_run):
    run = fashion_sample_run  # A one-step run of train_fashion_mnist.py on the real sample.
    result = cli(run, "--num", "9", "--out", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr
    assert f"wrote 9 images of 28x28x1 to {tmp_path / 'grid.png'} (noise: normal, latent 128, " \
           "seed 0)" in result.stdout
    assert iio.imread(tmp_path / "grid.png").shape == (3 * 30 + 2, 3 * 30 + 2)
    main([run, "--num", "9", "--out", tmp_path / "again.png"])  # Bit for bit across processes.
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "grid.png").read_bytes()
    main([run, "--num", "3", "--individual", tmp_path / "single"])
    assert [iio.imread(path).shape for path in sorted((tmp_path / "single").iterdir())] == \
           [(28, 28)] * 3
    main([run, "--num", "2", "--interpolate", "3", "--out", tmp_path / "walk.gif"])
    frames = iio.imread(tmp_path / "walk.gif", index=None)
    assert frames.shape[:3] == (4 * 3, 30 + 2, 2 * 30 + 2)
