"""The run directory: what a run writes, how it is kept safe, and how it resumes.

Layout of `--out-dir` (see README "What a run writes"):

    samples/epoch_0001.png  progress.gif  losses.png  d_probs.png  history.csv
    generator.keras  checkpoints/  args.json
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from common.devices import add_device_arguments

# Any of these in an out-dir means a run lives there and must not be overwritten silently.
RUN_OUTPUTS = (
    "args.json", "history.csv", "checkpoints", "generator.keras", "progress.gif", "samples",
    "losses.png", "d_probs.png",
)
HISTORY_COLUMNS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_sec", "seconds")
SAMPLE_PATTERN = re.compile(r"^epoch_(\d+)\.png$")
# Flags a resumed run does not take over from args.json (see merge_resumed_args).
NOT_RESUMED = ("resume", "overwrite", "precision", "jit", "strategy")


def atomic_write(path, write):
    """Call `write(temporary_path)`, then move the finished file over `path` in one step.

    Readers see the old file or the new one, never half of one; if `write` fails or the
    process is interrupted, the temporary file is removed and `path` is untouched. The
    temporary name keeps the extension, so writers that choose a format by it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- Command line -------------------------------------------------------------------------

class _Unset(list):
    """A 'not typed' marker. A list, because argparse appends to a repeatable flag's
    value; it copies the marker first, so a typed repeatable flag is not the marker."""


_UNSET = _Unset()


def parse_args(parser, argv=None):
    """Parse `argv` and return (args, the set of flags the user gave explicitly).

    With argv=None the command line is read, except inside a notebook kernel (Colab,
    Jupyter), whose own argv (`-f kernel.json`) is not meant for us: there it means [].
    """
    if argv is None:
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    argv = [str(value) for value in argv]
    args = parser.parse_args(argv)
    # argparse fills in a default only for names missing from the namespace it is given,
    # so parsing again over a namespace of sentinels shows which flags were typed.
    probe = argparse.Namespace(**{name: _UNSET for name in vars(args)})
    explicit = {name for name, value in vars(parser.parse_args(argv, probe)).items()
                if value is not _UNSET}
    return args, explicit


def positive_int(text):
    """argparse type for counts that must be at least 1."""
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text):
    """argparse type for rates that must be finite and above 0."""
    value = _number(text, float, "a number")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _number(text, kind, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_common_arguments(parser, dataset, epochs, batch_size, lr, latent_dim):
    """The flags every script has (SPEC.md's command-line contract), with its defaults."""
    parser.add_argument("--epochs", type=positive_int, default=epochs,
                        help="epochs to train in all, counting resumed ones (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="images per training step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=lr,
                        help="Adam learning rate of both models; with --resume it replaces "
                             "the saved one (default: %(default)s)")
    parser.add_argument("--latent-dim", type=positive_int, default=latent_dim,
                        help="length of the generator's noise vector (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed for weights, noise and shuffling (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="where the dataset is (default: see the README)")
    parser.add_argument("--out-dir", default=os.path.join("runs", dataset),
                        help="where samples, plots, checkpoints and the generator go "
                             "(default: %(default)s)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="stop after this many training steps in this invocation, then "
                             "close the epoch normally; for tests and benchmarks "
                             "(default: no limit)")
    parser.add_argument("--sample-every", type=positive_int, default=1,
                        help="epochs between sample grids; the last epoch always gets one "
                             "(default: %(default)s)")
    add_device_arguments(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --out-dir from its latest checkpoint "
                            "(starts one if there is none)")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the run in --out-dir and start over")


def merge_resumed_args(args, explicit, saved, fixed=("latent_dim",)):
    """On --resume, the saved run's arguments win except for flags typed this time.

    So `--resume` alone continues with the original settings and `--resume --epochs 200`
    extends the run. Flags in `fixed` shape the models and cannot change. --precision,
    --jit and --strategy describe the machine, not the run: a run resumed elsewhere (a new
    Colab machine) uses what is typed now, or auto.
    """
    for name in fixed:
        if name in explicit and name in saved and getattr(args, name) != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} {getattr(args, name)} does not match the run being resumed "
                f"({flag} {saved[name]}); drop {flag} or choose another --out-dir")
    for name, value in saved.items():
        if name not in explicit and name not in NOT_RESUMED and hasattr(args, name):
            setattr(args, name, value)
    return args


# --- The out-dir --------------------------------------------------------------------------


def prepare_out_dir(out_dir, resume, overwrite, writer=True):
    """Check that `out_dir` can take this run; return True when there is a run to resume.

    Changes nothing of an earlier run: a run there needs --resume or --overwrite, and
    --overwrite deletes nothing yet (see `clear_run`, called once the data has loaded).
    In a multi-worker run only the chief is the `writer`; the other workers check nothing
    (the chief may be writing already) and resume when told to.
    """
    out_dir = Path(out_dir)
    if not writer:
        return resume
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} is a file, not a folder; choose another --out-dir")
    found = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if found and not (resume or overwrite):
        raise ValueError(
            f"{out_dir} already holds a run ({', '.join(found)}); pass --resume to continue "
            f"it, --overwrite to delete it and start over, or choose another --out-dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"cannot write to --out-dir {out_dir} ({error.strerror}); choose a writable "
            f"--out-dir") from None
    return bool(found) and resume


def clear_run(out_dir):
    """Delete what an earlier run wrote in `out_dir` (only that: other files stay)."""
    for name in RUN_OUTPUTS:
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_args(out_dir, args):
    """Write the run's arguments to args.json."""
    text = json.dumps(vars(args), indent=2, sort_keys=True) + "\n"
    atomic_write(Path(out_dir) / "args.json", lambda temporary: Path(temporary).write_text(text))


def load_args(out_dir):
    """The saved arguments of the run in `out_dir`, or {} when it has none."""
    path = Path(out_dir) / "args.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} ({error}); fix or delete it, or pass --overwrite")


# --- History and samples ------------------------------------------------------------------


def write_history(out_dir, rows):
    """Write history.csv: one row per finished epoch."""
    def write(temporary):
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(Path(out_dir) / "history.csv", write)


def read_history(out_dir, up_to_epoch):
    """The rows of history.csv for epochs 1..up_to_epoch (later rows belong to an epoch
    whose checkpoint was never written, so it will run again)."""
    path = Path(out_dir) / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as file:
        rows = [{name: (int(row["epoch"]) if name == "epoch" else float(row[name]))
                 for name in HISTORY_COLUMNS} for row in csv.DictReader(file)]
    return [row for row in rows if row["epoch"] <= up_to_epoch]


def sample_path(out_dir, epoch):
    return Path(out_dir) / "samples" / f"epoch_{epoch:04d}.png"


def sample_paths(out_dir, up_to_epoch):
    """The sample grids of epochs 1..up_to_epoch, oldest first: the GIF's frames."""
    folder = Path(out_dir) / "samples"
    found = []
    for path in folder.glob("epoch_*.png") if folder.is_dir() else []:
        match = SAMPLE_PATTERN.match(path.name)
        if match and int(match.group(1)) <= up_to_epoch:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


class StopOnInterrupt:
    """Turn Ctrl-C into a request the training loop answers at the end of a step.

    The loop then checkpoints and exits cleanly instead of dying mid-write. A second
    Ctrl-C interrupts at once. Works in scripts and notebook kernels (main thread).
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # Not the main thread: leave Ctrl-C as it is.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        print("\nCtrl-C: stopping after this step and saving a checkpoint "
              "(press again to quit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
