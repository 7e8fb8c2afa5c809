"""The tests run the scripts in their own process, through main(argv), as a notebook cell
does (conftest.run_main). These prove such a run leaves the process as a new Python would
find it, so one test's run cannot change what the next one sees."""

import random
import signal

import keras
import numpy as np
from tensorflow.python.eager import context

from common import rundir
from conftest import QUICK_FASHION_BATCH, reset_global_state, run_main

SCRIPT = "train_fashion_mnist.py"


def assert_as_a_new_process(handler):
    assert keras.mixed_precision.global_policy().name == "float32"
    assert keras.layers.Dense(1).name == "dense"  # Keras' name counters start again.
    assert context.global_seed() is None
    assert signal.getsignal(signal.SIGINT) is handler
    assert not rundir._locks  # The out-dir is free for the next run, in any process.


def seeded_draws():
    return random.random(), float(np.random.random())


def test_a_run_in_this_process_leaves_nothing_behind(tmp_path, quick_data):
    handler = signal.getsignal(signal.SIGINT)
    keras.utils.set_random_seed(3)
    after_seed_3 = seeded_draws()
    result = run_main(SCRIPT, "--data-dir", quick_data, "--batch-size", QUICK_FASHION_BATCH,
                      "--out-dir", tmp_path / "run", "--max-steps", 1, "--precision",
                      "bfloat16", "--seed", 3)
    assert "precision mixed_bfloat16" in result.stdout  # The run did change the policy.
    assert_as_a_new_process(handler)
    keras.utils.set_random_seed(3)
    seeded_draws()
    reset_global_state()
    assert seeded_draws() != after_seed_3  # The run's --seed no longer decides the draws.
    # And the same folder runs again at once, as after a finished process.
    again = run_main(SCRIPT, "--data-dir", quick_data, "--batch-size", QUICK_FASHION_BATCH,
                     "--out-dir", tmp_path / "run", "--resume", "--epochs", 2, "--max-steps", 1)
    assert f"resuming {tmp_path / 'run'} after epoch 1" in again.stdout


def test_the_reset_puts_back_what_a_run_changes(tmp_path):
    """What the autouse fixture calls after every test, on state changed by hand."""
    handler = signal.getsignal(signal.SIGINT)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.layers.Dense(1), keras.layers.Dense(1)
    keras.utils.set_random_seed(5)
    signal.signal(signal.SIGINT, lambda *args: None)
    rundir.lock_out_dir(tmp_path)
    assert rundir._locks and context.global_seed() == 5
    reset_global_state()
    assert_as_a_new_process(handler)
