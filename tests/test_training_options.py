"""The training options from the literature (--lr-d, --lr-g, --beta-1, --beta-2, --init,
--ema-rampup): each reaches the train step, the defaults train exactly as before, and
--resume keeps them."""

import json

import numpy as np
import pytest
import tensorflow as tf

from common import initialization
from conftest import QUICK_FASHION_BATCH, SCRIPTS, run_main, script_module

SCRIPT = "train_fashion_mnist.py"
DEFAULT_LR = script_module(SCRIPT).build_parser().get_default("lr")


def train(data, out, *flags, epochs=1):
    """One epoch of two steps (the moving average at its default): Adam's first step is
    lr * sign(gradient) whatever its betas, so the betas show in the second step's update,
    in the weights after the epoch rather than in its losses."""
    return run_main(SCRIPT, "--data-dir", data, "--batch-size", QUICK_FASHION_BATCH,
                    "--out-dir", out, "--epochs", epochs, "--precision", "float32", *flags)


def trained_weights(out):
    """G's and D's own weights (not the moving average) in the run's newest checkpoint, as
    one vector."""
    module = script_module(SCRIPT)
    generator, discriminator = module.make_generator(), module.make_discriminator()
    tf.train.Checkpoint(generator=generator, discriminator=discriminator).restore(
        tf.train.latest_checkpoint(str(out / "checkpoints"))).expect_partial()
    return np.concatenate([weight.numpy().ravel()
                           for weight in generator.weights + discriminator.weights])


def samples(out):
    """generator.keras (the moving average) on fixed noise."""
    import keras
    generator = keras.saving.load_model(out / "generator.keras")
    return np.asarray(generator(np.ones((4, generator.input_shape[-1]), np.float32),
                                training=False))


@pytest.fixture(scope="module")
def plain_run(module_folder, quick_data):
    out = module_folder / "plain"
    train(quick_data, out)
    return out


def test_the_defaults_train_as_before_the_options(tmp_path, quick_data, plain_run):
    """Each option typed at its default value trains exactly as the plain run."""
    out = tmp_path / "defaults"
    train(quick_data, out, "--lr-d", DEFAULT_LR, "--lr-g", DEFAULT_LR, "--beta-1", "0.5",
          "--beta-2", "0.999", "--init", "keras", "--ema-rampup", "0")
    np.testing.assert_allclose(trained_weights(out), trained_weights(plain_run), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(samples(out), samples(plain_run), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("script, lr", [("train_fashion_mnist.py", 8e-4),
                                        ("train_faces.py", 2e-4), ("train_animals.py", 2e-4),
                                        ("train_artworks.py", 2e-4)])
def test_default_learning_rates_are_the_measured_ones(script, lr):
    """Fashion-MNIST's moved to 8e-4 (BENCHMARKS.md, "Quality per step"); the 64px scripts
    keep their sources' 2e-4 until measured there (README, Defaults)."""
    assert script_module(script).build_parser().get_default("lr") == lr


@pytest.mark.parametrize("flags", [["--lr-d", "2e-3"], ["--lr-g", "2e-3"], ["--beta-1", "0.9"],
                                   ["--beta-2", "0.9"], ["--init", "dcgan"]],
                         ids=lambda flags: " ".join(flags))
def test_each_option_reaches_the_train_step(tmp_path, quick_data, plain_run, flags):
    out = tmp_path / "run"
    train(quick_data, out, *flags)
    # The defaults' run agrees with plain_run to ~1e-7 (the test above).
    assert np.abs(trained_weights(out) - trained_weights(plain_run)).max() > 1e-5, flags


def test_ema_rampup_reaches_the_average_and_not_the_training(tmp_path, quick_data, plain_run):
    """The ramp moves only the moving average: the same weights trained, other samples."""
    ramped = tmp_path / "ramped"
    train(quick_data, ramped, "--ema-rampup", "0.05")
    np.testing.assert_allclose(trained_weights(ramped), trained_weights(plain_run),
                               rtol=1e-5, atol=1e-7)
    assert np.abs(samples(ramped) - samples(plain_run)).max() > 1e-3


@pytest.fixture(scope="module")
def resumed_run(module_folder, quick_data):
    """A run begun with every option off its default, then resumed with only --lr: what
    make_adam and update_average were given in both, and the run folder."""
    from common import run as run_module
    out, made, ramps = module_folder / "resumed", [], []
    make_adam, update_average = run_module.make_adam, run_module.update_average
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "make_adam", lambda *arguments: made.append(arguments) or
                      make_adam(*arguments))
        patch.setattr(run_module, "update_average", lambda *arguments: ramps.append(
            arguments[-1]) or update_average(*arguments))
        train(quick_data, out, "--lr-d", "1e-3", "--beta-1", "0.9", "--beta-2", "0.99",
              "--ema-rampup", "0.05")
        traced = len(ramps)
        train(quick_data, out, "--resume", "--lr", "1e-4", epochs=2)  # --lr: only G's side.
    return out, made, ramps, traced


def test_the_options_survive_resume(resumed_run):
    out, made, _, _ = resumed_run
    # (G's rate, policy, beta_1, beta_2), then D's: in the new run and the resumed one.
    assert made == [(DEFAULT_LR, "float32", 0.9, 0.99), (1e-3, "float32", 0.9, 0.99),
                    (1e-4, "float32", 0.9, 0.99), (1e-3, "float32", 0.9, 0.99)]
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    rate = {side: float(tf.train.load_variable(
        latest, f"{side}_optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"))
        for side in ("generator", "discriminator")}
    assert rate == pytest.approx({"generator": 1e-4, "discriminator": 1e-3})
    saved = json.loads((out / "args.json").read_text())
    assert (saved["lr_d"], saved["lr_g"], saved["beta_1"]) == (1e-3, None, 0.9)


def test_ema_rampup_survives_resume(resumed_run):
    out, _, ramps, traced = resumed_run
    # Traced in the new run and in the resumed one, with the ramp each time.
    assert 0 < traced < len(ramps) and set(ramps) == {0.05}
    assert json.loads((out / "args.json").read_text())["ema_rampup"] == 0.05


@pytest.mark.parametrize("script", SCRIPTS)
def test_dcgan_init_draws_every_kernel_from_n_0_0_02(script):
    module = script_module(script)
    for model in (module.make_generator(), module.make_discriminator()):
        initialization.dcgan_init(model, [0, 1])
        kernels = [layer.kernel.numpy() for layer in model.layers
                   if getattr(layer, "kernel", None) is not None]
        assert len(kernels) >= 3
        for kernel in kernels:
            assert abs(kernel.mean()) < 0.003 and kernel.std() == pytest.approx(0.02, rel=0.1)
        for layer in model.layers:
            if getattr(layer, "gamma", None) is not None:
                assert layer.gamma.numpy().std() == pytest.approx(0.02, rel=0.5)
                assert abs(layer.gamma.numpy().mean() - 1) < 0.02
                assert not layer.beta.numpy().any()
