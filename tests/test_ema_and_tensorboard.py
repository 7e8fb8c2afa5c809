"""--ema (a moving average of the generator) and --tensorboard, unit by unit and in a run of
every script (conftest.straight_run: three epochs with --ema 0.9 --tensorboard)."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.ema import average_decay, copy_weights, restore, update_average
from common.files import read_history, write_history
from conftest import LATENT, QUICK_FASHION_BATCH, SCRIPTS, STRAIGHT_EPOCHS, run_main, script_module

SCRIPT = "train_fashion_mnist.py"


def small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), layers.Dense(4), layers.BatchNormalization()])


# --- The average ---------------------------------------------------------------------------


def test_average_moves_a_share_of_the_way_and_warms_up():
    model, average = small_model(0), small_model(1)
    start = [w.numpy() for w in average.weights]
    target = [w.numpy() for w in model.weights]
    # Late in a run the decay is the one asked for: each weight moves 1 - 0.9 of the way.
    update_average(average, model, 0.9, step=10_000)
    for before, after, goal in zip(start, [w.numpy() for w in average.weights], target):
        np.testing.assert_allclose(after, 0.9 * before + 0.1 * goal, rtol=1e-5, atol=1e-6)
    # At step 0 the warm-up decay is (1 + 0) / (10 + 0) = 0.1, whatever was asked for.
    copy_weights(average, small_model(1))
    update_average(average, model, 0.999, step=0)
    for before, after, goal in zip(start, [w.numpy() for w in average.weights], target):
        np.testing.assert_allclose(after, 0.1 * before + 0.9 * goal, rtol=1e-5, atol=1e-6)


def test_ema_rampup_bounds_the_half_life_by_the_steps_taken():
    # --ema-rampup 0.05: at step 200 the half-life is 10 steps, so 10 steps halve the gap.
    decay = float(average_decay(0.999, 200, rampup=0.05))
    assert decay ** 10 == pytest.approx(0.5, rel=1e-4)
    assert float(average_decay(0.999, 1, rampup=0.05)) < 1e-5  # Step 1: nearly a copy.
    # Late in a run the decay asked for is the limit, with or without the ramp.
    assert float(average_decay(0.99, 100_000, rampup=0.05)) == pytest.approx(0.99)
    # 0: tf.train.ExponentialMovingAverage's (1 + step) / (10 + step), as before the flag.
    assert float(average_decay(0.999, 90)) == pytest.approx(91 / 100)
    # A smaller ramp follows the generator closer for longer.
    assert float(average_decay(0.99, 500, 0.02)) < float(average_decay(0.99, 500, 0.05))


def test_average_covers_batchnorm_statistics():
    model, average = small_model(0), small_model(1)
    model(np.random.default_rng(0).normal(5, 2, size=(64, 3)).astype(np.float32), training=True)
    moving_mean = [w for w in model.weights if "moving_mean" in w.path][0].numpy()
    assert np.abs(moving_mean).max() > 0  # The trained model's statistics moved.
    update_average(average, model, 0.0, step=10_000)  # Decay 0: a plain copy.
    for weight, copied in zip(model.weights, average.weights):
        np.testing.assert_allclose(weight.numpy(), copied.numpy(), rtol=1e-6, atol=1e-7)


def test_restore_starts_a_missing_average_from_the_generator(tmp_path):
    generator, average = small_model(0), small_model(1)
    path = tf.train.Checkpoint(generator=generator).save(str(tmp_path / "ckpt"))
    restored, fresh_average = small_model(2), small_model(3)
    checkpoint = tf.train.Checkpoint(generator=restored, ema_generator=fresh_average)
    restore(checkpoint, path, fresh_average, restored)
    for saved, got, averaged in zip(generator.weights, restored.weights, fresh_average.weights):
        np.testing.assert_array_equal(saved.numpy(), got.numpy())
        np.testing.assert_array_equal(saved.numpy(), averaged.numpy())
    # A checkpoint with an average restores it as saved.
    path = tf.train.Checkpoint(generator=generator, ema_generator=average).save(
        str(tmp_path / "with"))
    restore(checkpoint, path, fresh_average, restored)
    for saved, averaged in zip(average.weights, fresh_average.weights):
        np.testing.assert_array_equal(saved.numpy(), averaged.numpy())


# --- In a run ------------------------------------------------------------------------------


def checkpointed_models(out, with_average, script=SCRIPT):
    """The generator (and average) of the run's latest checkpoint."""
    module = script_module(script)
    generator = module.make_generator(LATENT[script])
    objects = {"generator": generator}
    if with_average:
        objects["ema_generator"] = average = module.make_generator(LATENT[script])
    tf.train.Checkpoint(**objects).restore(
        tf.train.latest_checkpoint(str(out / "checkpoints"))).expect_partial()
    return generator, (average if with_average else None)


def weights_of(model):
    return [w.numpy() for w in model.weights]


def assert_same_weights(a, b):
    for x, y in zip(weights_of(a), weights_of(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def differs(a, b):
    return any(not np.allclose(x, y) for x, y in zip(weights_of(a), weights_of(b)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_generator_keras_is_the_checkpointed_average(script, straight_run):
    out = straight_run(script)
    generator, average = checkpointed_models(out, with_average=True, script=script)
    saved = keras.saving.load_model(out / "generator.keras")
    assert_same_weights(saved, average)
    assert differs(average, generator)  # So the check above tells the two apart.
    # The fixed noise behind the sample grids is of the script's own distribution.
    noise = tf.train.load_variable(tf.train.latest_checkpoint(str(out / "checkpoints")),
                                   "fixed_noise/.ATTRIBUTES/VARIABLE_VALUE")
    assert noise.shape == (64, LATENT[script])
    if script == "train_faces.py":  # Seed 003 draws uniform noise, also for the samples.
        assert noise.min() >= -1 and noise.max() <= 1
    else:
        assert np.abs(noise).max() > 1


def test_resuming_keeps_the_average_and_without_ema_saves_the_generator(tmp_path, quick_data):
    out = tmp_path / "run"
    run_main(SCRIPT, "--data-dir", quick_data, "--out-dir", out, "--epochs", "1", "--ema", "0",
               "--batch-size", QUICK_FASHION_BATCH)
    generator, _ = checkpointed_models(out, with_average=False)
    assert_same_weights(keras.saving.load_model(out / "generator.keras"), generator)
    # Turning the average on when resuming: it starts from the trained generator.
    result = run_main(SCRIPT, "--data-dir", quick_data, "--out-dir", out, "--resume",
                        "--epochs", "2", "--ema", "0.99")
    assert "after epoch 1" in result.stdout
    generator, average = checkpointed_models(out, with_average=True)
    assert_same_weights(keras.saving.load_model(out / "generator.keras"), average)
    assert differs(average, generator)
    assert not (out / "tensorboard").exists()  # Nothing for TensorBoard without the flag.


# --- TensorBoard ---------------------------------------------------------------------------


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("script", SCRIPTS)
def test_tensorboard_has_each_epochs_numbers_and_grid(script, straight_run):
    out = straight_run(script)
    epochs = list(range(1, STRAIGHT_EPOCHS + 1))
    events = read_events(out / "tensorboard")
    with open(out / "history.csv", newline="") as file:
        history = list(csv.DictReader(file))
    for name in ("d_loss", "g_loss", "d_real", "d_fake", "images_per_sec", "seconds",
                 "diversity", "images"):
        logged = events.Tensors(name)
        assert [event.step for event in logged] == epochs, name
        for event, row in zip(logged, history):
            assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(float(row[name]),
                                                                              rel=1e-5)
    grids = events.Tensors("samples")
    assert [event.step for event in grids] == epochs
    assert events.SummaryMetadata("samples").plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(grids[-1].tensor_proto)
    image = tf.io.decode_png(png).numpy()
    sample = tf.io.decode_png(tf.io.read_file(str(out / "samples" / "epoch_0003.png")))
    assert (int(width), int(height)) == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(image, sample.numpy())


# --- History with quality columns ----------------------------------------------------------


def test_history_keeps_fid_and_kid_for_the_scored_epochs_only(tmp_path):
    plain = {"d_loss": 1.0, "g_loss": 2.0, "d_real": 0.6, "d_fake": 0.4,
             "images_per_sec": 10.0, "seconds": 3.0}
    rows = [{"epoch": 1, **plain}, {"epoch": 2, **plain, "fid": 12.5, "kid": 0.01},
            {"epoch": 3, **plain}]
    write_history(tmp_path, rows)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].endswith(",seconds,fid,kid")
    assert lines[1].endswith(",,") and lines[2].endswith(",12.5,0.01")
    assert read_history(tmp_path, 3) == rows
    write_history(tmp_path, rows[:1])  # No scored epoch: no quality columns.
    assert (tmp_path / "history.csv").read_text().splitlines()[0].endswith(",seconds")
