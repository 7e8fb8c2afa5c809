"""The three 64x64 scripts (faces, animals, artworks) as users run them, on folders the
tests build: every kind of file, decode-once, learning, bad input. (Resume, Ctrl-C, a NaN
stop and a full disk are tested on every script in test_survival.py.)"""

import importlib
import json
import shutil
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

import common.images
from common.image_data import image_batches
from common.metrics import pixel_fid
from common.noise import with_noise
from conftest import (flip_generator_loss, generate_in_fresh_process,
                      optimizer_steps, refused, run_main, snapshot)

SCRIPTS = ("train_faces.py", "train_animals.py", "train_artworks.py")
LATENT = {"train_faces.py": 100, "train_animals.py": 100, "train_artworks.py": 128}
BATCH = 8


def module(script):
    return importlib.import_module(script[:-3])


def train(script, data, out, *flags, check=True):
    return run_main(script, "--data-dir", data, "--out-dir", out, "--batch-size", BATCH,
                      *flags, check=check)


def dataset_of(script, pixels, batch_size, noise="uniform"):
    """The (images, noise) batches a run of the script trains on, as Run.batches makes them:
    common.image_data.image_batches paired with the script's own sample_noise by with_noise."""
    draw = module(script).sample_noise
    if script == "train_faces.py":
        def sample(count, seed):
            return draw(count, LATENT[script], seed, noise)
    else:
        def sample(count, seed):
            return draw(count, LATENT[script], seed)
    return with_noise(image_batches(pixels, batch_size, 0, True), sample, 0)


def expected_images(script, messy_folder):
    """Good images the script should find: artworks trains on Rembrandt/ alone."""
    _, good, _ = messy_folder
    return (good + 1) // 2 if script == "train_artworks.py" else good


# --- Models --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_models_map_noise_to_64px_images_in_range(script):
    latent = LATENT[script]
    generator, discriminator = module(script).make_generator(latent), \
        module(script).make_discriminator()
    assert generator.output_shape == (None, 64, 64, 3)
    assert discriminator.output_shape == (None, 1)
    images = generator(tf.random.normal([4, latent]) * 10, training=False).numpy()
    assert images.shape == (4, 64, 64, 3) and images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (4, 1)
    slopes = {round(float(layer.negative_slope), 3) for model in (generator, discriminator)
              for layer in model.layers if layer.__class__.__name__ == "LeakyReLU"}
    assert slopes == {0.2}


def test_artworks_layers_are_dcgans_and_seed_layers_gives_the_seeds():
    artworks = module("train_artworks.py")
    kinds = lambda model: {layer.__class__.__name__ for layer in model.layers}  # noqa: E731
    generator, discriminator = artworks.make_generator(128), artworks.make_discriminator()
    assert "LeakyReLU" in kinds(generator) and "ReLU" not in kinds(generator)
    assert "Dropout" not in kinds(discriminator)
    generator = artworks.make_generator(128, seed_layers=True)
    discriminator = artworks.make_discriminator(seed_layers=True)
    assert "ReLU" in kinds(generator) and "LeakyReLU" not in kinds(generator)
    rates = [layer.rate for layer in discriminator.layers if hasattr(layer, "rate")]
    assert rates == [artworks.DROPOUT] * 4
    assert artworks.build_parser().parse_args(["--seed-layers"]).seed_layers


def test_an_artworks_run_saved_before_seed_layers_resumes_with_the_seeds_layers():
    from common import flags
    artworks = module("train_artworks.py")
    for saved, kept in [({"dataset": "artworks", "epochs": 3}, True),  # Before 2026-12-01.
                        ({"dataset": "artworks", "epochs": 3, "seed_layers": False}, False)]:
        args, explicit = flags.parse_args(artworks.build_parser(), ["--resume"])
        assert flags.merge_resumed_args(args, explicit, saved).seed_layers is kept


def test_an_artworks_run_saved_before_augment_resumes_without_augmentation():
    from common import flags
    artworks = module("train_artworks.py")
    fresh, _ = flags.parse_args(artworks.build_parser(), [])
    assert fresh.augment != "none" and fresh.augment_adaptive  # Today's default augments.
    old = {"dataset": "artworks", "epochs": 3}  # args.json of a run from before --augment.
    args, explicit = flags.parse_args(artworks.build_parser(), ["--resume"])
    args = flags.merge_resumed_args(args, explicit, old)
    assert (args.augment, args.augment_adaptive) == ("none", False)
    saved = {**old, "augment": "translation", "augment_adaptive": True}
    args, explicit = flags.parse_args(artworks.build_parser(), ["--resume"])
    args = flags.merge_resumed_args(args, explicit, saved)
    assert (args.augment, args.augment_adaptive) == ("translation", True)


# --- A run on a messy folder, as a user makes one ------------------------------------------


@pytest.fixture(scope="module")
def runs(module_folder, messy_folder):
    """Each script's two-epoch run on the messy folder (made once, shared by tests)."""
    root, _, _ = messy_folder
    made = {}

    def get(script):
        if script not in made:
            out = module_folder / script[:-3]
            made[script] = (out, train(script, root, out, "--epochs", "2"))
        return made[script]
    return get


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_on_a_messy_folder_writes_every_output(script, runs, messy_folder):
    out, result = runs(script)
    count = expected_images(script, messy_folder)
    assert f"{count} training images from " in result.stdout
    # The three broken files are skipped, counted and named; the .txt is not an image.
    skipped = next(line for line in result.stdout.splitlines() if line.startswith("skipped"))
    assert skipped.startswith(f"skipped 3 of {count + 3} files that are not readable images")
    for name in messy_folder[2]:
        assert name in skipped
    assert "notes.txt" not in result.stdout
    for name in ("args.json", "history.csv", "generator.keras", "progress.gif", "losses.png",
                 "d_probs.png", "checkpoints/checkpoint", "samples/epoch_0001.png",
                 "samples/epoch_0002.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert iio.imread(out / "samples" / "epoch_0002.png").shape == (8 * 66 + 2, 8 * 66 + 2, 3)
    assert iio.imread(out / "progress.gif", index=None).shape[0] == 2
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2
    steps = -(-count // BATCH)  # The last batch of each epoch is a partial one.
    assert count % BATCH != 0 and optimizer_steps(out) == 2 * steps
    assert "epoch 2/2 | d_loss " in result.stdout and " img/s | " in result.stdout
    # Where the images came from, how they were cut, and the noise G takes: what
    # common.evaluate reads back from args.json without the script.
    saved = json.loads((out / "args.json").read_text())
    root = messy_folder[0]
    folders = [str(root / "Rembrandt")] if script == "train_artworks.py" else [str(root)]
    assert saved["data_source"]["folders"] == folders and saved["data_source"]["size"] == 64
    assert saved["data_source"]["crop"] == pytest.approx(module(script).CROP)
    assert saved["noise"] == ("uniform" if script == "train_faces.py" else "normal")


@pytest.mark.parametrize("script", SCRIPTS)
def test_generator_loads_in_a_fresh_process(script, runs):
    out, _ = runs(script)
    shape, low, high = generate_in_fresh_process(out / "generator.keras", 3, LATENT[script],
                                                 "uniform")
    assert shape == "(3, 64, 64, 3)" and -1 <= low < high <= 1


# --- Decode once ---------------------------------------------------------------------------


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    original = common.images.decode_image

    def counting(path, *args, **kwargs):
        calls.append(path)
        return original(path, *args, **kwargs)
    monkeypatch.setattr(common.images, "decode_image", counting)
    return calls


def read(script, folder, cache_dir=None, artists=("Rembrandt", "pablo picasso")):
    """The script's read_images on `folder`, as its main() calls it: (pixels, source)."""
    args = SimpleNamespace(data_dir=str(folder), download=False, cache_dir=cache_dir,
                           artist=list(artists) if script == "train_artworks.py" else None)
    return module(script).read_images(args)


def skipped_line(capsys):
    """The one line a reader printed for the files it skipped."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_file_is_decoded_once_and_epochs_decode_nothing(script, messy_folder,
                                                              count_decodes, capsys):
    root, good, broken = messy_folder
    pixels, source = read(script, root)
    assert pixels.dtype == np.uint8 and pixels.shape == (good, 64, 64, 3)
    assert len(count_decodes) == good + len(broken)  # Every image file, once.
    line = skipped_line(capsys)
    assert line.startswith(f"skipped {len(broken)} of {good + len(broken)} files")
    assert all(name in line for name in broken)
    assert source["where"] == "decoded" and source["size"] == 64
    batches = iter(dataset_of(script, pixels, 4))
    for _ in range(2):  # Two epochs.
        seen = sum(int(next(batches)[0].shape[0]) for _ in range(-(-good // 4)))
        assert seen == good  # Each epoch ends with its smaller last batch.
    assert len(count_decodes) == good + len(broken)  # The epochs decoded nothing.


def test_cache_dir_decodes_once_across_runs(tmp_path, messy_folder, count_decodes, capsys):
    root, good, broken = messy_folder
    cache = tmp_path / "cache"
    first, source = read("train_animals.py", root, cache)
    assert source["where"].startswith("decoded into ") and source["cache_dir"] == cache
    assert len(count_decodes) == good + len(broken)
    skipped = skipped_line(capsys)
    second, source = read("train_animals.py", root, cache)
    assert source["where"].startswith("cached in ") and len(count_decodes) == good + len(broken)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    assert isinstance(second, np.memmap)
    assert skipped_line(capsys) == skipped  # The cache remembers what it skipped.
    # A changed folder is decoded again, not served stale.
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    (other / "Rembrandt" / "99_new.png").write_bytes((root / "Rembrandt" / "01_b.png").read_bytes())
    third, source = read("train_animals.py", other, cache)
    assert source["where"].startswith("decoded into ") and len(third) == good + 1


def test_cache_dir_in_a_script_run(tmp_path, messy_folder):
    root = messy_folder[0]
    cache = tmp_path / "cache"
    first = train("train_animals.py", root, tmp_path / "a", "--max-steps", "1",
                  "--cache-dir", cache)
    second = train("train_animals.py", root, tmp_path / "b", "--max-steps", "1",
                   "--cache-dir", cache)
    assert "decoded into" in first.stdout and "cached in" in second.stdout
    assert "skipped 3 of" in second.stdout  # The cache remembers what it skipped.


def test_flip_mirrors_some_images_and_only_when_asked():
    image = np.zeros((1, 64, 64, 3), np.uint8)
    image[:, :, :8] = 255  # A white stripe on the left edge only.
    pixels = np.repeat(image, 64, axis=0)
    flipped = next(iter(image_batches(pixels, 64, 0, flip=True))).numpy()
    left = flipped[:, :, :8].mean(axis=(1, 2, 3)) > 0
    assert 10 < left.sum() < 54  # About half mirrored, at random.
    plain = next(iter(image_batches(pixels, 64, 0, flip=False))).numpy()
    assert (plain[:, :, :8] == 1).all() and plain.min() == -1


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_batch_brings_its_own_fresh_noise(script):
    pixels = np.zeros((10, 64, 64, 3), np.uint8)
    batches = iter(dataset_of(script, pixels, 4))
    epochs = [[next(batches) for _ in range(3)] for _ in range(2)]
    for batches in epochs:
        assert [tuple(noise.shape) for _, noise in batches] == [(4, LATENT[script])] * 2 + [
            (2, LATENT[script])]  # Sized like each batch, the last smaller one too.
    first, second = (np.concatenate([noise for _, noise in batches]) for batches in epochs)
    assert not np.allclose(first, second)  # Each epoch draws new noise.
    if script == "train_faces.py":  # Seed 003's uniform noise, or normal when asked.
        assert first.min() >= -1 and first.max() <= 1
        normal = np.concatenate([noise for _, noise in dataset_of(script, pixels, 5, "normal")
                                 .take(2)])
        assert np.abs(normal).max() > 1
    else:
        assert np.abs(first).max() > 1 and abs(first.mean()) < 0.2


@pytest.mark.parametrize("script, flip", [("train_faces.py", False), ("train_animals.py", False),
                                          ("train_artworks.py", True)])
def test_flip_defaults(script, flip):
    assert module(script).build_parser().parse_args([]).flip is flip
    assert module(script).build_parser().parse_args(["--no-flip"]).flip is False


# --- Artists -------------------------------------------------------------------------------


def test_artist_names_are_forgiving_and_repeatable(tmp_path, messy_folder):
    artworks = module("train_artworks.py")
    root, good, _ = messy_folder
    pixels, source = read("train_artworks.py", root, artists=["PABLO PICASSO"])
    assert len(pixels) == good // 2 and source["folders"] == [str(root / "Pablo_Picasso")]
    pixels, source = read("train_artworks.py", root, artists=["rembrandt", "pablo-picasso"])
    assert len(pixels) == good and source["folders"] == [str(root / "Rembrandt"),
                                                         str(root / "Pablo_Picasso")]
    assert "Rembrandt + Pablo_Picasso" in source["images"]
    assert artworks.choose_artists(root, ["Rembrandt", "REMBRANDT"]) == [root / "Rembrandt"]
    # Kaggle's zip unpacks to images/images/<artist>/: the outer folder works too.
    shutil.copytree(root, tmp_path / "images" / "images")
    assert artworks.choose_artists(tmp_path / "images", ["Rembrandt"]) == [
        tmp_path / "images" / "images" / "Rembrandt"]
    assert len(read("train_artworks.py", tmp_path / "images", artists=["Rembrandt"])[0]) == len(
        read("train_artworks.py", root, artists=["Rembrandt"])[0])
    assert artworks.artist_key("Albrecht_Du\u0308rer") == artworks.artist_key("albrecht durer")


# --- Learning ------------------------------------------------------------------------------

LEARNING_STEPS, LEARNING_BATCH = 40, 16
DIFFAUGMENT = "color,translation,cutout"  # Augmented training must learn too.


def train_and_score(script, data, out, real, augment=DIFFAUGMENT):
    run_main(script, "--data-dir", data, "--out-dir", out, "--max-steps", LEARNING_STEPS,
             "--batch-size", LEARNING_BATCH, "--augment", augment)
    generator = tf.keras.models.load_model(str(out / "generator.keras"))
    noise = np.random.default_rng(1).normal(size=(500, LATENT[script])).astype(np.float32)
    return pixel_fid(real, generator.predict(noise, verbose=0))


@pytest.fixture(scope="module")
def shapes_and_untrained_score(shapes_folder):
    _, pixels = shapes_folder
    real = pixels.astype(np.float32) / 127.5 - 1
    tf.keras.utils.set_random_seed(0)  # The script's own seed: the same starting weights.
    generator = module("train_animals.py").make_generator(100)
    noise = np.random.default_rng(1).normal(size=(500, 100)).astype(np.float32)
    return real, pixel_fid(real, generator.predict(noise, verbose=0))


@pytest.mark.parametrize("augment", ["none", DIFFAUGMENT])
def test_64px_training_moves_samples_toward_the_data(tmp_path, shapes_folder,
                                                     shapes_and_untrained_score, augment):
    real, untrained = shapes_and_untrained_score
    trained = train_and_score("train_animals.py", shapes_folder[0], tmp_path / "run", real,
                              augment)
    assert trained < 0.7 * untrained, (trained, untrained)


def test_64px_learning_test_fails_when_the_generator_loss_sign_is_flipped(
        tmp_path, shapes_folder, shapes_and_untrained_score, monkeypatch):
    real, untrained = shapes_and_untrained_score
    flip_generator_loss("train_animals.py", monkeypatch)
    flipped = train_and_score("train_animals.py", shapes_folder[0], tmp_path / "run", real)
    assert not flipped < 0.7 * untrained, (flipped, untrained)


# --- Bad input: one line naming the path and the fix; nothing of a run lost ----------------


def refused_run(script, data, out, *flags):
    """train()'s command, refused in this process (test_refusals proves the same line comes
    from a fresh Python): its one line."""
    return refused(script, "--data-dir", data, "--out-dir", out, "--batch-size", BATCH, *flags)


@pytest.fixture
def earlier_run(tmp_path, runs):
    def get(script):
        out = tmp_path / "earlier"
        shutil.copytree(runs(script)[0], out)
        return out, snapshot(out)
    return get


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_folder(script, tmp_path, earlier_run):
    out, before = earlier_run(script)
    # --epochs 3: the earlier run finished its two epochs, and a resume with nothing left to
    # do would say so and stop before reading any data.
    line = refused_run(script, tmp_path / "nowhere", out, "--resume", "--epochs", 3)
    assert line.startswith(f"error: --data-dir {tmp_path / 'nowhere'} does not exist; point "
                           f"it at the ")
    assert snapshot(out) == before


@pytest.mark.parametrize("script", SCRIPTS)
def test_folder_without_a_readable_image(script, tmp_path, earlier_run):
    out, before = earlier_run(script)
    folder = tmp_path / "junk"
    (folder / "Rembrandt").mkdir(parents=True)
    (folder / "Rembrandt" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "Rembrandt" / "readme.txt").write_text("hello")
    line = refused_run(script, folder, out, "--resume", "--epochs", 3)
    assert line.startswith("error: ") and "has no readable images (1 files" in line
    assert str(folder) in line
    assert snapshot(out) == before


def test_unknown_artist_lists_the_artists_found(tmp_path, messy_folder, earlier_run):
    out, before = earlier_run("train_artworks.py")
    line = refused_run("train_artworks.py", messy_folder[0], out, "--resume", "--epochs", 3,
                       "--artist", "Monet")
    assert line == (f"error: --artist 'Monet' matches 0 folders in {messy_folder[0]} "
                    f"(Pablo_Picasso, Rembrandt); give one of those names exactly")
    assert snapshot(out) == before


def test_folder_without_artist_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    line = refused_run("train_artworks.py", tmp_path / "flat", tmp_path / "out")
    assert line == (f"error: --artist 'Rembrandt' matches 0 folders in {tmp_path / 'flat'} "
                    f"(none); give one of those names exactly")
    assert not (tmp_path / "out" / "args.json").exists()

