"""The out-dir: made, locked against a second run, refused when it holds a run (unless
--resume or --overwrite), cleared for --overwrite. Its files are common/files.py; its
checkpoints, common/checkpoints.py.

Layout of `--out-dir` (see README "What a run writes"):

    samples/epoch_0001.png  progress.gif  losses.png  d_probs.png  history.csv
    generator.keras  checkpoints/  args.json
    quality.png  inception_real.npz     with --eval-every (classifier_real.npz: Fashion-MNIST)
    tensorboard/                        with --tensorboard
"""

import errno
import os
import shutil
from pathlib import Path

from common.checkpoints import remove_leftovers

try:
    import fcntl  # Locks the out-dir; POSIX only (Linux, macOS, Colab).
except ImportError:  # Windows: runs there are not locked.
    fcntl = None

# Any of these in an out-dir means a run lives there and must not be overwritten silently.
RUN_OUTPUTS = (
    "args.json", "history.csv", "checkpoints", "generator.keras", "progress.gif", "samples",
    "losses.png", "d_probs.png", "quality.png", "inception_real.npz", "classifier_real.npz",
    "tensorboard",
)
LOCK_NAME = ".lock"


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


def first_missing(path):
    """The outermost folder of `path` that does not exist yet (None if it all exists):
    what making `path` creates, and what `remove_new_out_dir` may take away again."""
    path, missing = Path(path).absolute(), None
    while not path.exists() and path != path.parent:
        path, missing = path.parent, path
    return missing


def remove_new_out_dir(out_dir, created):
    """A run refused before it wrote anything leaves no trace: let go of the lock and remove
    the folders this invocation made (`created`, from first_missing) if they hold nothing
    but the lock file."""
    handle = _locks.pop(os.path.realpath(out_dir), None)
    if handle:
        handle.close()
    if created is None:
        return
    # Only this run's own lock goes, then each folder it made while it is empty: another
    # run's folder or lock below `created` (started beside it) stops the clean-up there.
    out_dir, created = Path(out_dir).absolute(), Path(created)
    if handle:
        (out_dir / LOCK_NAME).unlink(missing_ok=True)
    for folder in [out_dir, *out_dir.parents]:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


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


def clear_run(out_dir):
    """Delete what an earlier run wrote in `out_dir` (only that: other files stay)."""
    for name in RUN_OUTPUTS:
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
