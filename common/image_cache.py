"""The on-disk cache of decoded images (--cache-dir): decoded once into a file that later
runs read back as a memory map, so a set larger than memory trains from disk. Safe with
several runs at once (a lock per build) and after a kill (stale builds are removed)."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from common import images  # By module: tests replace images.decode_images.


def cache_key(paths, size, crop, root):
    """A name for one decoded set: changes when any file is added, removed, or modified,
    or when the decoding settings change."""
    digest = hashlib.sha256(json.dumps([images.CACHE_VERSION, size, crop]).encode())
    for path in paths:
        try:
            status = os.stat(path)
            size, mtime = status.st_size, status.st_mtime_ns
        except OSError:  # A dangling symlink or a symlink loop: decoding skips it.
            size = mtime = -1
        digest.update(f"{os.path.relpath(path, root)}\0{size}\0{mtime}\n"
                      .encode(errors="surrogateescape"))
    return digest.hexdigest()[:20]


def load_images(paths, size, crop=1.0, cache_dir=None, root=None, name="images"):
    """Decoded pixels for `paths`, and the skipped files, decoding only what is not cached.

    Without `cache_dir` the pixels live in memory. With it, they are decoded once into
    `cache_dir/<name>-<key>/pixels.u8` and read back as a memory map in later runs, so a
    set larger than memory (all of CelebA is 2.5 GB at 64x64) trains from disk.
    Returns (pixels, skipped, where) with `where` saying how the pixels were obtained.
    """
    paths = list(paths)
    if cache_dir is None:
        pixels, skipped = images.decode_images(paths, size, crop)
        return pixels, skipped, "decoded"
    folder = Path(cache_dir) / f"{name}-{cache_key(paths, size, crop, root or '/')}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            pixels = np.memmap(folder / "pixels.u8", np.uint8, mode="r",
                               shape=(meta["count"], size, size, 3))
            return pixels, [tuple(item) for item in meta["skipped"]], f"cached in {folder}"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # A damaged cache is rebuilt below.
    shape = (max(len(paths), 1), size, size, 3)
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(cache_dir)  # Their space counts as free below.
        _check_room(cache_dir, int(np.prod(shape)), len(paths))
        building = Path(cache_dir) / f".{folder.name}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
    except OSError as error:
        raise ValueError(f"cannot write to --cache-dir {cache_dir} ({error.strerror}); "
                         f"choose a writable --cache-dir or leave it out") from None
    lock = None
    try:
        lock = _lock_build(building)
        # Every byte of the file is given its disk space now: a disk that fills up while we
        # decode fails here with ENOSPC, not later in a write through the memory map, which
        # the kernel can only report with SIGBUS (a "Bus error" killing the process).
        _preallocate(building / "pixels.u8", int(np.prod(shape)))
        target = np.memmap(building / "pixels.u8", np.uint8, mode="r+", shape=shape)
        pixels, skipped = images.decode_images(paths, size, crop, out=target)
        count = len(pixels)
        target.flush()
        del pixels, target
        os.truncate(building / "pixels.u8", count * size * size * 3)
        meta = {"count": count, "size": size, "crop": crop,
                "skipped": [[str(path), reason] for path, reason in skipped]}
        (building / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        lock = _unlock_build(building, lock)
        os.replace(building, folder)  # The finished cache appears in one step.
    except OSError as error:
        _unlock_build(building, lock)
        shutil.rmtree(building, ignore_errors=True)
        raise ValueError(f"cannot build the image cache in --cache-dir {cache_dir} "
                         f"({error.strerror or error}); free some space there, choose another "
                         f"--cache-dir, or leave it out") from None
    except BaseException:  # Ctrl-C included: no half-built cache is left behind.
        _unlock_build(building, lock)
        shutil.rmtree(building, ignore_errors=True)
        raise
    if count == 0:
        return np.empty((0, size, size, 3), np.uint8), skipped, "decoded"
    pixels = np.memmap(folder / "pixels.u8", np.uint8, mode="r", shape=(count, size, size, 3))
    return pixels, skipped, f"decoded into {folder}"


def _check_room(cache_dir, size, count):
    """ValueError unless `cache_dir`'s disk has room for `size` bytes of pixels and a margin."""
    needed = size + size // 100 + (1 << 20)
    free = shutil.disk_usage(cache_dir).free
    if free < needed:
        raise ValueError(f"--cache-dir {cache_dir} has {_megabytes(free)} free but caching "
                         f"{count:,} images needs {_megabytes(needed)}; free some space there, "
                         f"choose another --cache-dir, or leave it out (the pixels then stay "
                         f"in memory)")


def _megabytes(size):
    return f"{size / 1e6:,.1f} MB"


def _preallocate(path, size):
    """Create `path` with `size` bytes whose disk space is taken now (OSError ENOSPC when
    there is not enough), not when they are first written: posix_fallocate where the system
    and file system have it, else by writing zeros."""
    import errno
    with open(path, "wb") as file:
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is not None and size > 0:
            try:
                allocate(file.fileno(), 0, size)
                return
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
        zeros = bytes(1 << 20)
        for start in range(0, size, len(zeros)):
            file.write(zeros[:size - start])


# A build in progress holds an flock on this file in its folder; the lock dies with the
# process, however it ends (a kill, a bus error), so a later run can tell a build that is
# still going from one a killed run left behind.
LOCK_NAME = ".lock"


def _lock_build(building):
    """Open and lock `building`/LOCK_NAME; returns the open file (None where there is no
    flock: the process id in the folder's name then tells whether its build still runs)."""
    try:
        import fcntl
    except ImportError:  # Windows.
        return None
    lock = open(building / LOCK_NAME, "wb")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def _unlock_build(building, lock):
    """Remove the lock file and release the lock (before the folder is renamed or removed)."""
    if lock is not None:
        Path(building, LOCK_NAME).unlink(missing_ok=True)
        lock.close()
    return None


def _remove_stale_builds(cache_dir):
    """Remove the `.<name>.building-<pid>` folders in `cache_dir` that no running build owns:
    what a run killed while decoding (Ctrl-C twice, a kill -9, a bus error) left, with its
    disk space. A build another process is still running is left alone."""
    for entry in Path(cache_dir).glob(".*.building-*"):
        pid = entry.name.rpartition(".building-")[2]
        if entry.is_dir() and pid.isdigit() and not _build_running(entry, int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _build_running(building, pid):
    """Whether a process still builds the cache in `building`, created by process `pid`."""
    try:
        import fcntl
        descriptor = os.open(building / LOCK_NAME, os.O_RDONLY)
    except ImportError:  # Windows: no flock, and os.kill would end the process.
        return True
    except FileNotFoundError:
        descriptor = None
    except OSError:
        return True  # Cannot tell: leave it.
    if descriptor is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # Locked: its build is running.
        finally:
            os.close(descriptor)  # Releases the lock just taken.
    # Unlocked, or made before its lock: stale if it is this process's (no build of this
    # process holds it) or its process is gone.
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # Alive, another user's.
    return True
