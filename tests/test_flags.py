"""common/flags.py: the shared flags, their checks, and what --resume takes from args.json."""

import argparse
import shlex
import sys

import pytest

from common import flags, run


def _parser():
    parser = argparse.ArgumentParser(prog="demo")
    run.Run.add_arguments(parser, "demo", epochs=5, batch_size=128, lr=2e-4, latent_dim=100)
    return parser


def test_parse_args_reports_explicit_flags():
    args, explicit = flags.parse_args(_parser(), ["--epochs", "7", "--batch-size", "128"])
    assert args.epochs == 7 and args.lr == 2e-4 and args.out_dir.endswith("demo")
    assert explicit == {"epochs", "batch_size"}  # Typed flags count even at their default.


def test_parse_args_ignores_notebook_kernel_argv(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel.json"])
    args, explicit = flags.parse_args(_parser())
    assert args.epochs == 5 and explicit == set()


# A bad value of each kind of flag, as typed, and the words of its one-line error.
BAD_FLAGS = {
    # Not a whole number.
    "--epochs ten": "argument --epochs: must be a whole number",
    "--epochs abc": "argument --epochs: must be a whole number, got 'abc'",
    # Below the least.
    "--epochs 0": "argument --epochs: must be at least 1, got 0",
    "--batch-size -4": "argument --batch-size: must be at least 1, got -4",
    "--gif-frames 1": "argument --gif-frames: must be at least 2, got 1",
    "--seed -1": "argument --seed: must be at least 0, got -1",
    "--eval-count 1": "argument --eval-count: must be at least 2, got 1",
    # Above the most.
    "--seed 1099511627776": "argument --seed: must be at most 2,147,483,647, got 1,099,",
    "--latent-dim 100000000": "argument --latent-dim: must be at most 4,096, got 100,",
    # Rates and probabilities.
    "--lr 0": "argument --lr: must be a finite number above 0",
    "--lr nan": "argument --lr: must be a finite number above 0",
    "--augment-probability 1.5": "argument --augment-probability: must be from 0 to 1",
    # Intervals.
    "--checkpoint-every 2.5": "argument --checkpoint-every: epochs must be whole",
    "--checkpoint-every 0m": "argument --checkpoint-every: must be a number of epochs",
    "--checkpoint-every soon": "or of minutes (e.g. 10m), got 'soon'",
    # Folders, and flags that exclude each other.
    "--out-dir ''": "argument --out-dir: is empty; give a folder path",
    "--data-dir ''": "argument --data-dir: is empty; give a folder path",
    "--resume --overwrite": "not allowed with argument",
    # Choices.
    "--on-collapse quit": "argument --on-collapse: invalid choice: 'quit' (choose from",
}


@pytest.mark.parametrize("typed, message", BAD_FLAGS.items(), ids=list(BAD_FLAGS))
def test_nonsense_flags_exit_with_one_error_line(typed, message, capsys):
    # One line naming the flag and pointing to --help, exit status 2: no usage block.
    with pytest.raises(SystemExit) as exit_info:
        flags.parse_args(_parser(), shlex.split(typed))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "usage:" not in err, err
    assert message in err and err.rstrip().endswith("(see demo --help)"), err


@pytest.mark.parametrize("text, value", [
    ("3", [3, "epochs"]), ("5m", [5.0, "minutes"]), ("0.5min", [0.5, "minutes"]),
    (" 10 minutes ", [10.0, "minutes"]),
])
def test_checkpoint_every_takes_epochs_or_minutes(text, value):
    args, _ = flags.parse_args(_parser(), ["--checkpoint-every", text])
    assert args.checkpoint_every == value
    assert flags.parse_args(_parser(), [])[0].checkpoint_every == [5.0, "minutes"]


def test_merge_resumed_args_keeps_saved_values_unless_typed():
    args, explicit = flags.parse_args(_parser(), ["--resume", "--epochs", "9"])
    saved = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "latent_dim": 100, "resume": False}
    merged = flags.merge_resumed_args(args, explicit, saved)
    assert (merged.epochs, merged.batch_size, merged.lr, merged.resume) == (9, 64, 1e-3, True)


def test_resume_does_not_take_over_max_steps():
    # --max-steps limits one invocation: a resumed run is not cut short by the last one's.
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    merged = flags.merge_resumed_args(args, explicit, {"max_steps": 1, "epochs": 3})
    assert merged.max_steps is None and merged.epochs == 3
    args, explicit = flags.parse_args(_parser(), ["--resume", "--max-steps", "7"])
    assert flags.merge_resumed_args(args, explicit, {"max_steps": 1}).max_steps == 7


def test_resumed_run_takes_the_machine_flags_typed_now():
    # A run started with --precision float16 on a T4, resumed on a CPU, must not keep it.
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    saved = {"precision": "float16", "jit": "on", "strategy": "mirrored", "batch_size": 64}
    merged = flags.merge_resumed_args(args, explicit, saved)
    assert (merged.precision, merged.jit, merged.strategy) == ("auto", "auto", "auto")
    assert merged.batch_size == 64


def test_a_run_saved_before_augment_probability_resumes_with_what_it_used():
    # Runs saved before --augment-probability existed augmented every image (p = 1).
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    assert args.augment_probability == flags.AUGMENT_PROBABILITY != 1
    old = {"augment": "translation", "epochs": 3}
    assert flags.merge_resumed_args(args, explicit, old).augment_probability == 1.0
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    assert flags.merge_resumed_args(args, explicit, {**old, "augment_probability": 0.25}
                                    ).augment_probability == 0.25
    args, explicit = flags.parse_args(_parser(), ["--resume", "--augment-probability", "0.7"])
    assert flags.merge_resumed_args(args, explicit, old).augment_probability == 0.7


def test_merge_resumed_args_refuses_a_different_model():
    args, explicit = flags.parse_args(_parser(), ["--resume", "--latent-dim", "64"])
    expected = r"--latent-dim 64 does not match the run being resumed \(--latent-dim 100\)"
    with pytest.raises(ValueError, match=expected):
        flags.merge_resumed_args(args, explicit, {"latent_dim": 100})


def test_parse_args_sees_a_typed_repeatable_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--artist", action="append", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    args, explicit = flags.parse_args(parser, ["--artist", "A", "--artist", "B"])
    assert args.artist == ["A", "B"] and explicit == {"artist"}
    args, explicit = flags.parse_args(parser, [])
    assert args.artist is None and explicit == set()
