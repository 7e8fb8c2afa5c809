"""The run directory: what a run writes, how it is kept safe, and how it resumes.

Layout of `--out-dir` (see README "What a run writes"):

    samples/epoch_0001.png  progress.gif  losses.png  d_probs.png  history.csv
    generator.keras  checkpoints/  args.json
    quality.png  inception_real.npz     with --eval-every
    tensorboard/                        with --tensorboard
"""

import argparse
import contextlib
import csv
import errno
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

try:
    import fcntl  # Locks the out-dir; POSIX only (Linux, macOS, Colab).
except ImportError:  # Windows: runs there are not locked.
    fcntl = None

from common.devices import add_device_arguments

# Any of these in an out-dir means a run lives there and must not be overwritten silently.
RUN_OUTPUTS = (
    "args.json", "history.csv", "checkpoints", "generator.keras", "progress.gif", "samples",
    "losses.png", "d_probs.png", "quality.png", "inception_real.npz", "tensorboard",
)
HISTORY_COLUMNS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_sec", "seconds")
# Columns only epochs scored with --eval-every have; empty in the other rows.
QUALITY_COLUMNS = ("fid", "kid")
SAMPLE_PATTERN = re.compile(r"^epoch_(\d+)\.png$")
# --ema's default decay: see BENCHMARKS.md "EMA of the generator" for the measurement.
EMA_DECAY = 0.99
# Flags a resumed run does not take over from args.json (see merge_resumed_args).
NOT_RESUMED = ("resume", "overwrite", "resume_from", "precision", "jit", "strategy")
LOCK_NAME = ".lock"
ROLLED_BACK = "rolled_back"  # Where --resume-from puts what came after the chosen epoch.


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


def decay(text):
    """argparse type for --ema: a decay in [0, 1), where 0 turns the average off."""
    value = _number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def count(text):
    """argparse type for intervals where 0 means 'never'."""
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more, got {value}")
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
    parser.add_argument("--ema", type=decay, default=EMA_DECAY, metavar="DECAY",
                        help="keep a moving average of the generator's weights with this decay "
                             "and use it for samples, generator.keras and FID/KID; 0 turns it "
                             "off (default: %(default)s)")
    parser.add_argument("--eval-every", type=count, default=0, metavar="EPOCHS",
                        help="score FID and KID against the real images every this many "
                             "epochs, into history.csv and quality.png; 0 never "
                             "(default: %(default)s)")
    parser.add_argument("--eval-count", type=positive_int, default=10000, metavar="N",
                        help="generated and real images per FID/KID score; fewer is faster "
                             "but biased upward (default: %(default)s)")
    parser.add_argument("--inception-weights", default="imagenet", metavar="PATH",
                        help="InceptionV3 weights for FID/KID: 'imagenet' (Keras downloads "
                             "them once) or a weights file (default: %(default)s)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log the epoch's numbers and sample grid for TensorBoard "
                             "under OUT_DIR/tensorboard")
    add_device_arguments(parser)
    # Not a flag: args.json records which script made the run, for common.evaluate.
    parser.set_defaults(dataset=dataset)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --out-dir from its latest checkpoint "
                            "(starts one if there is none)")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the run in --out-dir and start over")
    start.add_argument("--resume-from", type=positive_int, default=None, metavar="EPOCH",
                       help="continue the run in --out-dir from the checkpoint of this earlier "
                            "epoch (after a collapse); what came after it is moved to "
                            f"OUT_DIR/{ROLLED_BACK}/, not deleted")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=3, metavar="N",
                        help="keep the checkpoints of the last N epochs (default: %(default)s)")


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
    lock_out_dir(out_dir)
    remove_leftovers(out_dir)
    return bool(found) and resume


_locks = {}  # Out-dir -> its open lock file, held until the process ends.


def lock_out_dir(out_dir):
    """Hold an exclusive lock on `out_dir` for the rest of this process, or refuse.

    The lock is the kernel's (flock on OUT_DIR/.lock), so it goes away with the process,
    however it ends: a killed run never leaves it stuck. A second `main()` in the same
    notebook kernel reuses the lock it already holds. Where locks are not supported
    (Windows, some network drives) runs go unlocked.
    """
    key = os.path.realpath(out_dir)
    if fcntl is None or key in _locks:
        return
    try:
        handle = open(Path(out_dir) / LOCK_NAME, "a+")
    except OSError:
        return  # Cannot even create the lock file: the write probe reports the folder.
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        owner = handle.read().strip()
        handle.close()
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise ValueError(
                f"another run{f' (process {owner})' if owner else ''} is using --out-dir "
                f"{out_dir}; wait for it to finish, stop it, or choose another --out-dir"
            ) from None
        return  # The file system has no locks.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _locks[key] = handle


def remove_leftovers(out_dir):
    """Delete the temporary files a killed run can leave: half-written files of
    `atomic_write`, the write probe, and a checkpoint save that never finished. Only
    called with the out-dir's lock held, so no live run is writing them."""
    out_dir = Path(out_dir)
    for folder in (out_dir, out_dir / "samples"):
        for path in folder.glob(".*.tmp-*") if folder.is_dir() else []:
            path.unlink(missing_ok=True)
    for path in out_dir.glob(".write-test-*"):
        path.unlink(missing_ok=True)
    checkpoints = out_dir / "checkpoints"
    if not checkpoints.is_dir():
        return
    # TensorFlow writes a checkpoint as ckpt-N_temp/ and merges it into ckpt-N.index and
    # .data; the state file "checkpoint" names it only once all that is done. So a save
    # that never finished left a _temp folder, or ckpt-N files numbered past the latest
    # checkpoint the state file lists (numbers only grow within a run).
    numbers = [_checkpoint_number(Path(path).name) for path in _checkpoint_paths(checkpoints)]
    # A state file that lists nothing is unreadable (TensorFlow ignores one it cannot parse):
    # then which checkpoints are the run's is unknown, and none is deleted. So is a missing
    # one once history.csv has a row past epoch 1: epoch 2 cannot close before epoch 1's
    # checkpoint is listed, so the list was lost, not yet to be written.
    try:
        past_epoch_one = any(row["epoch"] >= 2 for row in read_history(out_dir, float("inf")))
    except (OSError, ValueError, KeyError):  # An unreadable history: assume the worst.
        past_epoch_one = True
    lost = (checkpoints / "checkpoint").exists() or past_epoch_one
    newest = max(numbers, default=float("inf") if lost else -1)
    for path in checkpoints.iterdir():
        if path.name.startswith(".") and ".tmp" in path.name or "_temp" in path.name:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        elif path.name.startswith("checkpoint.tmp"):  # The state file, half written.
            path.unlink(missing_ok=True)
        elif _checkpoint_number(path.name) > newest:
            path.unlink(missing_ok=True)


def _checkpoint_number(name):
    """N of ckpt-N.index / ckpt-N.data-...; -1 for any other name."""
    match = re.match(r"^ckpt-(\d+)(\.|$)", name)
    return int(match.group(1)) if match else -1


def _checkpoint_paths(checkpoints):
    """The checkpoints the state file lists, oldest first."""
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(checkpoints))
    return list(state.all_model_checkpoint_paths) if state else []


def epochs_of_checkpoints(checkpoints):
    """{checkpoint path: finished epochs it holds}, oldest first. A checkpoint the state
    file lists but whose index is gone (deleted by hand, or a kill while TensorFlow was
    deleting the oldest one) is left out."""
    import tensorflow as tf
    return {path: int(tf.train.load_variable(path, "epochs_done/.ATTRIBUTES/VARIABLE_VALUE"))
            for path in _checkpoint_paths(checkpoints) if Path(path + ".index").exists()}


def latest_checkpoint(out_dir, resume_from=None):
    """The checkpoint a resumed run starts from (None for a new run), after rolling back to
    `resume_from` when given (see `roll_back`).

    Raises ValueError when checkpoint files exist but TensorFlow's list of them is missing
    or unreadable: starting over there would overwrite the run's history and samples.
    """
    import tensorflow as tf
    if resume_from:
        return roll_back(out_dir, resume_from)
    checkpoints = Path(out_dir) / "checkpoints"
    latest = tf.train.latest_checkpoint(str(checkpoints))
    if latest is None and any(_checkpoint_number(path.name) >= 0
                              for path in (checkpoints.iterdir() if checkpoints.is_dir() else [])):
        raise ValueError(f"{checkpoints} holds checkpoint files, but its list of them "
                         f"(the file 'checkpoint') is missing or unreadable; restore that "
                         f"file, or pass --overwrite to start over")
    return latest


def roll_back(out_dir, epoch):
    """Make the checkpoint of `epoch` the run's latest (--resume-from) and return it.

    Later checkpoints, sample grids of later epochs, history.csv and generator.keras are
    moved (not deleted) to OUT_DIR/rolled_back/after_epoch_<epoch>[_2...]/, so a roll-back
    loses nothing. A Ctrl-C checkpoint taken during the next epoch also holds `epoch`
    finished epochs; the one written at the epoch's end (the fewest steps) is chosen.
    """
    import tensorflow as tf
    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    epochs = epochs_of_checkpoints(checkpoints) if checkpoints.is_dir() else {}
    chosen = [path for path, done in epochs.items() if done == epoch]
    if not chosen:
        kept = ", ".join(str(done) for done in sorted(set(epochs.values()))) or "none"
        raise ValueError(f"--resume-from {epoch}: {checkpoints} has no checkpoint of epoch "
                         f"{epoch} (kept epochs: {kept}); choose one of those, and keep more "
                         f"next time with --keep-checkpoints")
    chosen = chosen[0]
    order = list(epochs)
    later = order[order.index(chosen) + 1:]
    aside = out_dir / ROLLED_BACK / f"after_epoch_{epoch}"
    suffix = 2
    while aside.exists():
        aside = out_dir / ROLLED_BACK / f"after_epoch_{epoch}_{suffix}"
        suffix += 1
    moves = [file for path in later for file in checkpoints.glob(Path(path).name + ".*")]
    moves += [path for path in sample_paths(out_dir, 10**9)
              if int(SAMPLE_PATTERN.match(path.name).group(1)) > epoch]
    if moves:  # Rolling back to the newest epoch sets nothing aside.
        moves += [out_dir / name for name in ("history.csv", "generator.keras")
                  if (out_dir / name).exists()]
    for path in moves:
        target = aside / path.relative_to(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "history.csv":
            shutil.copy2(path, target)  # The kept rows are still needed; resume trims it.
        else:
            os.replace(path, target)
    # Rewrite TensorFlow's state file (a text protobuf) to end at the chosen checkpoint,
    # with each kept one's timestamp: without one CheckpointManager would stop tracking it.
    state = tf.train.get_checkpoint_state(str(checkpoints))
    stamps = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps))
    lines = [f'model_checkpoint_path: "{Path(chosen).name}"']
    lines += [f'all_model_checkpoint_paths: "{Path(path).name}"'
              for path in order if path not in later]
    lines += [f"all_model_checkpoint_timestamps: {stamps.get(path, time.time())}"
              for path in order if path not in later]
    lines += [f"last_preserved_timestamp: {state.last_preserved_timestamp}"]
    text = "\n".join(lines) + "\n"
    atomic_write(checkpoints / "checkpoint", lambda temporary: Path(temporary).write_text(text))
    print(f"rolled back to epoch {epoch} ({chosen}); moved {len(moves)} later files to {aside}")
    return chosen


@contextlib.contextmanager
def disk_errors_exit(out_dir, manager):
    """Turn a failed write in the block (a full disk, a read-only or vanished folder) into
    one line and exit 1, after removing what the failed writes left half done. Every
    file is written atomically and the checkpoint comes last, so the last good one and
    the files that match it are still in place for --resume."""
    import tensorflow as tf
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        try:
            remove_leftovers(out_dir)
        except (OSError, ValueError, tf.errors.OpError):
            pass
        # The state file says which checkpoint is kept, not the manager: a save that failed
        # while being recorded is already the manager's latest, and was just removed.
        try:
            kept = tf.train.latest_checkpoint(str(manager.directory))
        except (OSError, ValueError, tf.errors.OpError):
            kept = None
        raise SystemExit(
            f"error: cannot write to {out_dir} ({_write_error_reason(error)}); kept the "
            f"last good checkpoint ({kept or 'none yet'}). Free some space or fix the "
            f"folder, then continue with --resume") from None


def _write_error_reason(error):
    """Why a write failed, in the system's words ("No space left on device", "File too
    large", "Read-only file system"): TensorFlow's messages put it after the op's name and
    its own temporary path, which a user has no use for."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    lines = str(text).strip().splitlines()
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:\w+\]$", "", text).rsplit("; ", 1)[-1]
    return text[:200] or type(error).__name__


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
        columns = HISTORY_COLUMNS + tuple(
            name for name in QUALITY_COLUMNS if any(name in row for row in rows))
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore", restval="")
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
        rows = [{name: int(row[name]) if name == "epoch" else float(row[name])
                 for name in HISTORY_COLUMNS + QUALITY_COLUMNS if row.get(name)}
                for row in csv.DictReader(file)]
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
