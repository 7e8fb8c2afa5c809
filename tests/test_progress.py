"""common/progress.py and Ctrl-C: the epoch bar and line, a non-finite step, the
interrupt request."""


import pytest
import tensorflow as tf

from common import run
from common.progress import EpochLog, format_row


def step(*values):
    """A step's metrics as common.losses.step_metrics gives them: tensors by name."""
    names = ("d_loss", "g_loss", "d_real", "d_fake", "real_sign", "images")
    return {name: tf.constant(value) for name, value in zip(names, values)}


def test_epoch_log_means_and_row(capsys):
    log = EpochLog(epoch=2, epochs=10, steps=2, first_step=5)
    log.add(step(1.0, 2.0, 0.8, 0.2, 0.5, 128.0))
    log.add(step(3.0, 4.0, 0.6, 0.4, -0.5, 72.0))
    row = log.summary()
    assert capsys.readouterr().out == ""  # The row first; the line once it is complete.
    log.print_row(row)
    assert row["epoch"] == 2 and row["d_loss"] == 2.0 and row["g_loss"] == 3.0
    assert log.images == 200  # The step's image count rides along with its metrics.
    assert row["d_real"] == pytest.approx(0.7) and row["d_fake"] == pytest.approx(0.3)
    assert row["images_per_sec"] > 0
    line = capsys.readouterr().out.strip()
    assert line == format_row(row, 10)
    assert line.startswith("epoch  2/10 | d_loss 2.0000 | g_loss 3.0000 | D(x) 0.700")


def test_epoch_log_names_the_first_non_finite_step():
    log = EpochLog(epoch=3, epochs=5, steps=10, first_step=21)
    log.add(step(1.0, 1.0, 0.5, 0.5, 0.0, 8.0))
    log.add(step(1.0, float("nan"), 0.5, 0.5, 0.0, 8.0))
    log.add(step(float("inf"), 1.0, 0.5, 0.5, 0.0, 8.0))
    with pytest.raises(FloatingPointError, match=r"epoch 3, step 2 of the epoch \(global step 22\)"):
        log.flush()


def test_stop_on_interrupt_turns_sigint_into_a_request():
    import os
    import signal
    with run.StopOnInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
