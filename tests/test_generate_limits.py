"""python -m common.generate with values too large to run: each is one
argparse-style error line naming the limit, and large allowed values stream in batches."""

import json
import tracemalloc

import keras
import pytest

import common.generate as generate
from conftest import run_forked


def cli(*args):
    """`python -m common.generate args` in a process of its own."""
    return run_forked("-m", "common.generate", *args, check=False, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder whose generator makes 64x64 colour images (48 KB each as float32)."""
    folder = tmp_path_factory.mktemp("limits") / "run"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4 * 4 * 3),
                              keras.layers.Reshape((4, 4, 3)), keras.layers.UpSampling2D(16),
                              keras.layers.Activation("tanh")], name="generator")
    model.save(folder / "generator.keras")
    (folder / "args.json").write_text(json.dumps({"latent_dim": 8, "seed": 0}))
    return folder


@pytest.mark.parametrize("flags, words", [
    (["--num", "1000000000"], "--num: must be at most 100,000"),
    (["--num", "1000000000", "--individual", "many"], "--num: must be at most 100,000"),
    (["--num", "5000"], "a grid of at most 4,096 images"),
    (["--num", "100", "--interpolate", "5"], "at most 64 side-by-side walks"),
    (["--interpolate", "1000000000"], "--interpolate: must be at most 1,000"),
    (["--points", "1000000000", "--interpolate", "2"], "--points: must be at most 1,000"),
    (["--points", "50", "--interpolate", "50"], "2,500 frames; at most 1,000"),
    (["--seed", "-1"], "--seed: must be at least 0"),
    (["--seed", str(2**32)], "--seed: must be at most 4,294,967,295"),
    (["--seed", "9" * 5000], "--seed: must be a whole number"),
])
def test_values_too_large_are_one_line_errors(tmp_path, run, flags, words):
    flags = [str(tmp_path / flag) if flag == "many" else flag for flag in flags]
    if "--individual" not in flags:  # Never write into the repository, should it run.
        flags += ["--out", tmp_path / ("walk.gif" if "--interpolate" in flags else "grid.png")]
    result = cli(run, *flags)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(("error:", "usage:")), result.stderr[-3000:]
    assert words in lines[-1] and len(lines[-1]) < 300, lines[-1]
    assert not list(tmp_path.iterdir())


def test_the_largest_allowed_seed_works(tmp_path, run):
    generate.main([run, "--num", "2", "--seed", 2**32 - 1, "--out", tmp_path / "grid.png"])
    assert (tmp_path / "grid.png").is_file()


def test_many_individual_images_stream_in_batches(tmp_path, run, monkeypatch):
    # 1,000 images of 64x64x3 are 49 MB as float32; in batches of 100, under 5 MB at a time.
    monkeypatch.setattr(generate, "BATCH_SIZE", 100)
    tracemalloc.start()
    try:
        generate.main([run, "--num", 1000, "--individual", tmp_path / "many"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    paths = sorted((tmp_path / "many").iterdir())
    assert len(paths) == 1000 and paths[0].name == "0000.png" and paths[-1].name == "0999.png"
    assert peak < 20 << 20, f"held {peak:,} bytes at once"
    # The same pictures as a small run with the same seed: the batches do not change them.
    generate.main([run, "--num", 3, "--individual", tmp_path / "few"])
    assert [path.read_bytes() for path in sorted((tmp_path / "few").iterdir())] == \
           [path.read_bytes() for path in paths[:3]]


def test_a_long_walk_keeps_one_frame_of_images_at_a_time(tmp_path, run):
    import imageio.v3 as iio
    tracemalloc.start()
    try:
        generate.main([run, "--num", 16, "--points", 4, "--interpolate", 50,
                       "--out", tmp_path / "walk.gif"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    frames = iio.imread(tmp_path / "walk.gif", index=None)
    assert frames.shape == (200, 4 * 66 + 2, 4 * 66 + 2, 3)
    # 200 RGB frames of 266x266 are 42 MB; one frame's 16 float32 images are 0.8 MB.
    assert peak < 30 << 20, f"held {peak:,} bytes at once"
