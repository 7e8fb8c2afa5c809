"""train_fashion_mnist.py as a user runs it: outputs, learning, bad input. (Resume, Ctrl-C
and a NaN stop are tested on every script in test_survival.py.)"""

import json
import os
import shutil
import sys
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

import train_fashion_mnist as script
from common.metrics import pixel_fid
from common.checkpoints import epochs_of_checkpoints
from conftest import (FASHION_SAMPLE, QUICK_FASHION_BATCH, flip_generator_loss,
                      generate_in_fresh_process, optimizer_steps,
                      refused, run_main, snapshot, write_idx_images)

SCRIPT = "train_fashion_mnist.py"
OUTPUTS = ("args.json", "history.csv", "generator.keras", "progress.gif", "losses.png",
           "d_probs.png", "checkpoints/checkpoint", "samples/epoch_0001.png")


def train(data, out, *flags, check=True):
    return run_main(SCRIPT, "--data-dir", data, "--out-dir", out, *flags, check=check)


# --- Models --------------------------------------------------------------------------------


def test_models_match_seed_004_to_the_parameter():
    generator, discriminator = script.make_generator(128), script.make_discriminator()
    assert generator.count_params() == 2_579_457
    assert sum(int(np.prod(w.shape)) for w in generator.non_trainable_weights) == 896
    assert discriminator.count_params() == 393_729
    assert generator.output_shape == (None, 28, 28, 1)
    assert discriminator.output_shape == (None, 1)
    assert all(layer.negative_slope == pytest.approx(0.2) for layer in generator.layers
               if layer.__class__.__name__ == "LeakyReLU")
    images = generator(tf.random.normal([5, 128]) * 10, training=False).numpy()
    assert images.min() >= -1 and images.max() <= 1


# --- A run, as a user makes one ------------------------------------------------------------


@pytest.fixture(scope="module")
def two_epochs(module_folder, tiny_data):
    out = module_folder / "two"
    result = train(tiny_data, out, "--epochs", "2")
    return out, result


def test_run_writes_every_output(two_epochs, tiny_data):
    out, result = two_epochs
    for name in OUTPUTS + ("samples/epoch_0002.png",):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0] == ("epoch,d_loss,g_loss,d_real,d_fake,images_per_sec,seconds,"
                        "diversity,images")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    row = dict(zip(lines[0].split(","), map(float, lines[2].split(","))))
    assert 0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1 and row["images_per_sec"] > 0
    # The health check's columns: the samples' variety, and 200 images trained on an epoch.
    assert 0 < row["diversity"] < 2 and row["images"] == 400
    assert iio.imread(out / "progress.gif", index=None).shape[0] == 2
    assert iio.imread(out / "samples" / "epoch_0001.png").shape == (8 * 30 + 2, 8 * 30 + 2)
    for plot in ("losses.png", "d_probs.png"):
        assert iio.imread(out / plot).ndim == 3
    args = json.loads((out / "args.json").read_text())
    assert args["epochs"] == 2 and args["latent_dim"] == 128 and args["batch_size"] == 128
    # Where the images came from and the noise G takes: what common.evaluate reads back.
    assert args["data_source"]["idx"] == str(tiny_data / "train-images-idx3-ubyte.gz")
    assert args["noise"] == "normal" and args["dataset"] == "fashion_mnist"
    # One fixed-format line per epoch, with the numbers history.csv holds.
    assert "epoch 2/2 | d_loss " in result.stdout and " img/s | " in result.stdout
    # 200 images at batch 128: two steps an epoch, the second a partial batch of 72.
    assert optimizer_steps(out) == 4
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"


def test_generator_loads_in_a_fresh_process(two_epochs):
    out, _ = two_epochs
    shape, low, high = generate_in_fresh_process(out / "generator.keras", 6, 128)
    assert shape == "(6, 28, 28, 1)" and -1 <= low < high <= 1


def test_main_runs_from_python_like_a_notebook_cell(tmp_path, tiny_data, monkeypatch, capsys):
    # Jupyter's own argv must not reach argparse.
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    monkeypatch.chdir(tmp_path)
    script.main(["--data-dir", tiny_data, "--epochs", 1, "--max-steps", 1])
    assert (tmp_path / "runs" / "fashion_mnist" / "generator.keras").is_file()
    assert "stopped after --max-steps 1" in capsys.readouterr().out


def test_sample_every_and_max_steps(tmp_path, quick_data):
    out = tmp_path / "run"
    result = train(quick_data, out, "--batch-size", QUICK_FASHION_BATCH, "--epochs", "3",
                   "--sample-every", "2", "--max-steps", "5")
    # Steps 1-2 epoch 1, 3-4 epoch 2, step 5 closes epoch 3 early: it is the last, so sampled.
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0002.png",
                                                                    "epoch_0003.png"]
    assert iio.imread(out / "progress.gif", index=None).shape[0] == 2
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    assert optimizer_steps(out) == 5
    assert "stopped after --max-steps 5" in result.stdout
    # The default --checkpoint-every 5m saves at the first epoch of a run and when it stops
    # (here at --max-steps), not at each epoch of a short run.
    assert {os.path.basename(path): epochs for path, epochs in
            epochs_of_checkpoints(out / "checkpoints").items()} == {"ckpt-2": 1, "ckpt-5": 3}


def test_overwrite_starts_over_and_keeps_other_files(tmp_path, quick_data, straight_run):
    out = tmp_path / "run"
    shutil.copytree(straight_run(SCRIPT), out)  # Three epochs, with TensorBoard.
    (out / "my_notes.txt").write_text("mine")
    train(quick_data, out, "--overwrite", "--epochs", "1", "--batch-size", QUICK_FASHION_BATCH)
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 1
    assert not (out / "samples" / "epoch_0002.png").exists()
    assert not (out / "tensorboard").exists()  # Not asked for this time: gone with the run.
    assert optimizer_steps(out) == 2
    assert (out / "my_notes.txt").read_text() == "mine"


# --- Learning ------------------------------------------------------------------------------

LEARNING_STEPS, LEARNING_BATCH = 50, 16


def score_generator(path, real):
    """pixel_fid of 500 generated images against the real sample; lower is closer."""
    generator = tf.keras.models.load_model(path) if isinstance(path, str) else path
    noise = np.random.default_rng(1).normal(size=(500, 128)).astype(np.float32)
    return pixel_fid(real, generator.predict(noise, verbose=0))


def train_and_score(out, real):
    run_main(SCRIPT, "--data-dir", FASHION_SAMPLE, "--out-dir", out, "--max-steps",
             LEARNING_STEPS, "--batch-size", LEARNING_BATCH)
    return score_generator(str(out / "generator.keras"), real)


@pytest.fixture(scope="module")
def real_and_untrained_score(sample_images):
    real = sample_images[..., np.newaxis].astype(np.float32) / 127.5 - 1
    tf.keras.utils.set_random_seed(0)  # The script's own seed: the same starting weights.
    return real, score_generator(script.make_generator(128), real)


def test_training_moves_samples_toward_the_data(tmp_path, real_and_untrained_score):
    """50 steps on real Fashion-MNIST bring the generator's pixel statistics measurably
    closer to the data's (measured: about 350 untrained, about 230 after)."""
    real, untrained = real_and_untrained_score
    trained = train_and_score(tmp_path / "run", real)
    assert trained < 0.8 * untrained, (trained, untrained)


def test_learning_test_fails_when_the_generator_loss_sign_is_flipped(
        tmp_path, real_and_untrained_score, monkeypatch):
    """The negative control: the same check on a copy whose generator maximises its loss
    must not pass (measured: it gets worse, about 500), so the test above has teeth."""
    real, untrained = real_and_untrained_score
    flip_generator_loss(SCRIPT, monkeypatch)
    flipped = train_and_score(tmp_path / "run", real)
    assert not flipped < 0.8 * untrained, (flipped, untrained)


# --- Bad input: one line naming the path or flag and the fix; nothing of a run lost ---------


def error_line(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def refused_run(data, out, *flags):
    """train()'s command, refused in this process (test_refusals proves the same line comes
    from a fresh Python): its one line."""
    return refused(SCRIPT, "--data-dir", data, "--out-dir", out, *flags)


@pytest.fixture
def earlier_run(tmp_path, fashion_sample_run):
    """A fresh copy of a finished one-step run, and a snapshot of its files."""
    out = tmp_path / "earlier"
    shutil.copytree(fashion_sample_run, out)
    return out, snapshot(out)


def bad_folder(tmp_path, kind):
    folder = tmp_path / kind
    folder.mkdir()
    target = folder / "train-images-idx3-ubyte.gz"
    good = (FASHION_SAMPLE / "train-images-idx3-ubyte.gz").read_bytes()
    if kind == "truncated-gzip":
        target.write_bytes(good[: len(good) // 2])
    elif kind == "truncated-idx":
        import gzip
        raw = gzip.decompress(good)
        target.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    elif kind == "wrong-magic":
        write_idx_images(folder / "x", np.zeros((2, 28, 28)))
        import gzip
        raw = bytearray(gzip.decompress((folder / "x").read_bytes()))
        raw[3] = 0x01  # 2049: a labels file where images belong.
        target.write_bytes(gzip.compress(bytes(raw)))
        (folder / "x").unlink()
    elif kind == "not-gzip":
        target.write_text("this is not a gzip file")
    elif kind == "empty-folder":
        target.unlink(missing_ok=True)
    return folder


@pytest.mark.parametrize("kind, expected", [
    ("missing", "does not exist; point it at a folder holding train-images-idx3-ubyte.gz"),
    ("empty-folder", "has no train-images-idx3-ubyte.gz; it should hold"),
    ("truncated-gzip", "train-images-idx3-ubyte.gz (Compressed file ended"),
    ("truncated-idx", "is truncated: its header promises 2000 images"),
    ("wrong-magic", "is not an idx image file (magic number 2049, expected 2051)"),
    ("not-gzip", "cannot read"),
])
def test_bad_data_folder(tmp_path, earlier_run, kind, expected):
    out, before = earlier_run
    folder = tmp_path / "missing" if kind == "missing" else bad_folder(tmp_path, kind)
    # --epochs 2: the earlier run finished its one epoch, and a resume with nothing left to
    # do would say so and stop before reading any data.
    line = refused_run(folder, out, "--resume", "--epochs", "2")
    assert line.startswith("error: ") and expected in line and str(folder) in line
    assert snapshot(out) == before


def test_existing_run_is_refused_untouched(tiny_data, earlier_run):
    out, before = earlier_run
    line = refused_run(tiny_data, out, "--epochs", "1")
    assert f"error: {out} already holds a run" in line and "--resume" in line
    assert snapshot(out) == before


def test_unwritable_out_dir(tmp_path, tiny_data):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = refused_run(tiny_data, blocker / "run")
    assert f"cannot write to --out-dir {blocker / 'run'}" in line and "writable" in line


@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--batch-size", "-3"], "argument --batch-size: must be at least 1, got -3"),
    (["--lr", "-1"], "argument --lr: must be a finite number above 0"),
])
def test_nonsense_flags(tmp_path, tiny_data, earlier_run, flags, expected):
    out, before = earlier_run
    result = train(tiny_data, out, "--resume", *flags, check=False)
    line = error_line(result)
    assert result.returncode == 2 and line.startswith("error: ") and expected in line
    assert line.endswith(f"(see {SCRIPT} --help)") and "usage:" not in result.stderr
    assert snapshot(out) == before


def test_no_source_names_all_three_ways(monkeypatch, tmp_path):
    monkeypatch.setattr(script, "DEBIAN_DIR", str(tmp_path / "no-debian"))

    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(script.keras.utils, "get_file", offline)
    with pytest.raises(ValueError) as error:
        script.read_images(SimpleNamespace(data_dir=None))
    message = str(error.value)
    assert "--data-dir" in message and "apt-get install dataset-fashion-mnist" in message
    assert "download failed" in message


def test_sources_in_order(monkeypatch, tmp_path, sample_images):
    debian = tmp_path / "debian"
    debian.mkdir()
    write_idx_images(debian / "train-images-idx3-ubyte.gz", sample_images[:3])
    monkeypatch.setattr(script, "DEBIAN_DIR", str(debian))
    images, source = script.read_images(SimpleNamespace(data_dir=None))
    assert images.shape == (3, 28, 28, 1) and source["idx"].startswith(str(debian))
    images, source = script.read_images(SimpleNamespace(data_dir=str(FASHION_SAMPLE)))
    assert images.shape == (2000, 28, 28, 1) and images.dtype == np.uint8
    assert source["idx"] == str(FASHION_SAMPLE / "train-images-idx3-ubyte.gz")
