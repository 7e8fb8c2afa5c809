"""--augment in a real run: the policy and ADA's p are part of the run (args.json, the
checkpoint, history.csv) and --resume carries them on."""

import csv
import importlib
import json

import numpy as np
import tensorflow as tf

from conftest import QUICK_FASHION_BATCH, run_main, write_idx_images


def test_resume_keeps_the_policy_and_p(tmp_path, sample_images):
    data = tmp_path / "data"
    data.mkdir()
    write_idx_images(data / "train-images-idx3-ubyte.gz", sample_images[:128])
    out = tmp_path / "run"
    flags = ("train_fashion_mnist.py", "--data-dir", data, "--out-dir", out, "--batch-size", "32",
             "--checkpoint-every", "1")
    run_main(*flags, "--epochs", "1", "--augment", "translation,cutout", "--augment-adaptive")
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(latest)]
    probability = [name for name in names if name.startswith("augment_probability/probability")]
    assert probability, names
    saved_p = float(tf.train.load_variable(latest, probability[0]))

    result = run_main(*flags, "--epochs", "2", "--resume")  # No --augment typed again.
    saved = json.loads((out / "args.json").read_text())
    assert saved["augment"] == "translation,cutout" and saved["augment_adaptive"] is True
    with open(out / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert float(rows[0]["augment_p"]) == round(saved_p, 4)
    # p moves by at most 4 steps of 32 images / 25,000 per adjustment: epoch 2 starts where
    # epoch 1 ended, not from 0 again.
    assert abs(float(rows[1]["augment_p"]) - saved_p) <= 4 * 32 / 25_000 + 1e-6
    assert " | p " in result.stdout


def epoch_losses(out):
    with open(out / "history.csv", newline="") as file:
        return np.array([[float(row["d_loss"]), float(row["g_loss"])]
                         for row in csv.DictReader(file)])


def test_augment_probability_reaches_the_train_step(tmp_path, quick_data):
    """The same seeded run (in this process, as a notebook would) with every transform at
    --augment-probability 0 trains exactly as without --augment; at 1 it does not."""
    main = importlib.import_module("train_fashion_mnist").main
    losses = {}
    for name, flags in {"none": ["--augment", "none"],
                        "0": ["--augment", "color,translation,cutout",
                              "--augment-probability", "0"],
                        "1": ["--augment", "color,translation,cutout",
                              "--augment-probability", "1"]}.items():
        main(["--data-dir", str(quick_data), "--batch-size", str(QUICK_FASHION_BATCH),
              "--out-dir", str(tmp_path / name), "--epochs", "2", "--precision", "float32",
              "--ema", "0", *flags])
        assert json.loads((tmp_path / name / "args.json").read_text())[
            "augment_probability"] == (0.5 if name == "none" else float(name))
        losses[name] = epoch_losses(tmp_path / name)
    np.testing.assert_allclose(losses["0"], losses["none"], rtol=1e-4)
    assert np.abs(losses["1"] - losses["none"]).max() > 1e-2, losses
