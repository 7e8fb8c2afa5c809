"""Image folders, decoded once: what the three 64x64 scripts share for their data.

A dataset here is a folder of image files as it ships (CelebA's img_align_celeba/, AFHQ's
train/cat/..., one folder per artist). `find_images` lists it, `decode_images` turns every
file into a small uint8 RGB square exactly once, skipping the files that are not images,
and, given a cache folder, keeps the result on disk so later runs skip decoding too. The
training scripts then feed batches from that uint8 array: no epoch decodes a JPEG again,
and no float32 copy of the whole set ever exists.

A folder is untrusted input: a file that is not a readable image (random bytes, a truncated
or corrupted picture, a header declaring billions of pixels, a FIFO, a symlink loop, a file
whose reading fails) is skipped with its reason; it never crashes, hangs or exhausts the
memory of a run (tests/test_hostile_image_files.py).
"""

import hashlib
import json
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MAX_PIXELS = 100_000_000  # Refuse a file that claims more pixels than this: a decompression bomb.
# The formats of those extensions, whatever a file's name says. Left to itself Pillow tries
# all of its ~40 readers on a file it does not recognise, rarely used ones included (and its
# EPS reader runs Ghostscript).
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
CACHE_VERSION = 2  # Bump when decoding changes, so older caches are not reused.


def find_images(folder):
    """Every image file under `folder`, searched recursively, sorted by path.

    Symlinked folders are not followed (no loops); other files are ignored.
    """
    found = []
    for root, folders, files in os.walk(folder):
        folders.sort()
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(Path(root) / name)
    return sorted(found)


def decode_image(path, size, crop=1.0):
    """One image file as uint8 RGB pixels (size, size, 3).

    The picture is cut to a centered square whose side is `crop` times its shorter side,
    then shrunk to size x size with an antialiasing (Lanczos) filter. Grayscale, palette,
    CMYK and 16-bit images become RGB; transparent pixels are laid on white; a GIF gives
    its first frame. Raises OSError or ValueError for anything that is not a readable image
    (and, from a hostile file, Pillow may raise other exceptions: decode_images skips those).
    """
    _check_before_opening(path)
    with Image.open(path, formats=FORMATS) as image:
        width, height = image.size
        _check_pixels(image.size)  # Opening read the header only: nothing is decoded yet.
        side = max(1, round(min(width, height) * crop))
        # A JPEG can be decoded at 1/2, 1/4 or 1/8 scale directly, far faster than in full:
        # a 512x512 AFHQ photo headed for 64x64 decodes 8x smaller. Pillow keeps at least
        # the requested size, so the final resize still has pixels to antialias from.
        if image.format == "JPEG" and side >= 2 * size:
            image.draft("RGB", (width * 2 * size // side, height * 2 * size // side))
            side = max(1, min(round(side * image.width / width), *image.size))
        # Crop first, then resize: the filter never reaches past the crop for its pixels.
        square = _to_rgb(image).crop(_centered_square(*image.size, side))
        picture = square.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(picture, dtype=np.uint8)


def _centered_square(width, height, side):
    """The crop box (left, top, right, bottom) of the side x side square in the middle of a
    width x height picture, in whole pixels and exactly `side` wide and tall. (Rounding each
    edge on its own can make a one-pixel-wide square empty: the middle of a 1x64 picture
    spans rows 31.5 to 32.5, which both round to 32, and an empty crop resized is black.)"""
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _check_before_opening(path):
    """Refuse what Pillow must not open: anything but a regular file, and a WebP declaring
    more than MAX_PIXELS."""
    # Opening a FIFO for reading waits for a writer, forever, and a device such as
    # /dev/zero never ends. A dangling symlink or a symlink loop fails here, with its reason.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file")
    # Pillow's WebP reader allocates the whole canvas while it opens the file, before
    # anyone can look at the size; the other readers read only the header to open.
    with open(path, "rb") as file:
        _check_pixels(_webp_size(file.read(30)))


def _check_pixels(size):
    """Refuse a declared (width, height) above MAX_PIXELS, before any pixel is decoded."""
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"{size[0]}x{size[1]} pixels is more than this loader accepts "
                         f"({MAX_PIXELS:,})")


def _webp_size(header):
    """The canvas (width, height) the first 30 bytes of a WebP file declare; None for other
    files, or a header too short to say."""
    if len(header) < 30 or header[:4] != b"RIFF" or header[8:12] != b"WEBP":
        return None
    chunk = header[12:16]
    if chunk == b"VP8X":  # Extended (alpha, animation): 24-bit sizes minus one.
        return (int.from_bytes(header[24:27], "little") + 1,
                int.from_bytes(header[27:30], "little") + 1)
    if chunk == b"VP8 " and header[23:26] == b"\x9d\x01\x2a":  # Lossy: 14-bit sizes.
        return (int.from_bytes(header[26:28], "little") & 0x3FFF,
                int.from_bytes(header[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and header[20] == 0x2F:  # Lossless: 14-bit sizes minus one.
        bits = int.from_bytes(header[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _to_rgb(image):
    """RGB for every mode Pillow opens: alpha is composited on white, not dropped."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits first; a plain convert would clip to white.
        pixels = np.asarray(image, dtype=np.float64)
        high = max(float(pixels.max()), 1.0)
        image = Image.fromarray((pixels / (65535.0 if high > 255 else 255.0) * 255).clip(0, 255)
                                .astype(np.uint8))
    return image.convert("RGB")


def decode_images(paths, size, crop=1.0, workers=None, out=None):
    """Decode every file in `paths` once, in parallel threads (Pillow decodes outside the GIL).

    Returns (pixels, skipped): pixels is a uint8 array (good files, size, size, 3), in the
    order of `paths`; skipped lists (path, reason) for files that could not be read. When
    `out` is given it is a writable array of len(paths) rows to decode into (a memory map on
    disk for sets that do not fit in memory), and pixels is a view of its first rows.
    """
    paths = list(paths)
    pixels = np.empty((len(paths), size, size, 3), np.uint8) if out is None else out
    workers = workers or min(32, (os.cpu_count() or 1) + 2)

    def decode(item):
        index, path = item
        try:
            pixels[index] = decode_image(path, size, crop)
            return None
        except Exception as error:
            # Any error one file raises skips that file, never the run: Pillow's readers
            # raise OSError, ValueError, SyntaxError or DecompressionBombError, but a hostile
            # file can also bring MemoryError, a DecompressionBombWarning (when warnings are
            # errors) or, in other Pillow versions, EOFError, struct.error, IndexError...
            return path, _reason(error)

    pool = ThreadPoolExecutor(workers)
    try:
        failures = [result for result in pool.map(decode, enumerate(paths), chunksize=64)
                    if result is not None]
    except BaseException:
        # Ctrl-C (or any error) stops the decoding now: the files not started yet are
        # dropped, and only the few being decoded are waited for, so that no thread still
        # writes into `pixels` when the caller removes a half-built cache.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    # Close the gaps the skipped files left, keeping the order of the good ones.
    failed = {path for path, _ in failures}
    good = 0
    for index, path in enumerate(paths):
        if path not in failed:
            if good != index:
                pixels[good] = pixels[index]
            good += 1
    return pixels[:good], failures


def _reason(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:120]


# --- The on-disk cache (--cache-dir) ------------------------------------------------------


def cache_key(paths, size, crop, root):
    """A name for one decoded set: changes when any file is added, removed, or modified,
    or when the decoding settings change."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, size, crop]).encode())
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
        pixels, skipped = decode_images(paths, size, crop)
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
        pixels, skipped = decode_images(paths, size, crop, out=target)
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


def describe_skipped(skipped, total, shown=3):
    """One line for the files that could not be read, naming the first few."""
    if not skipped:
        return None
    examples = "; ".join(f"{_printable(str(path))} ({_printable(reason)})"
                         for path, reason in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (f"skipped {len(skipped)} of {total} files that are not readable images: "
            f"{examples}{more}")


def _printable(text):
    """`text` with what would break the line escaped: a newline, a control character, or a
    byte of a file name that is not UTF-8 (which print() cannot encode on a UTF-8 terminal)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# --- From folders to training batches: what every script's data goes through ---------------


def read_image_folders(folders, size=64, crop=1.0, cache_dir=None, name="images"):
    """Every readable image under `folders` (searched recursively) as uint8 (N, size, size,
    3), decoded once, and a record of where it came from (JSON, kept in args.json, from
    which common.evaluate reads the same images again). Prints a line for skipped files;
    ValueError when no image is readable."""
    folders = [Path(folder) for folder in folders]
    paths = [path for folder in folders for path in find_images(folder)]
    root = os.path.commonpath([str(folder) for folder in folders])
    pixels, skipped, where = load_images(paths, size, crop=crop, cache_dir=cache_dir,
                                         root=root, name=name)
    if len(pixels) == 0:
        raise ValueError(f"{' and '.join(map(str, folders))} has no readable images "
                         f"({len(paths)} files with the extensions "
                         f"{' '.join(IMAGE_EXTENSIONS)})")
    if skipped:
        print(describe_skipped(skipped, len(pixels) + len(skipped)))
    return pixels, {"folders": [str(folder) for folder in folders], "size": size,
                    "crop": crop, "cache_dir": cache_dir, "name": name, "where": where,
                    "description": f"data: {' + '.join(map(str, folders))}",
                    "images": f"{' + '.join(folder.name for folder in folders)} ({where})"}


def read_source(source):
    """The images a `read_image_folders` record (from args.json) describes, read again."""
    return read_image_folders(source["folders"], source["size"], source["crop"],
                              source.get("cache_dir"), source.get("name", "images"))[0]


def image_batches(pixels, batch_size, seed, flip=False):
    """Endless shuffled batches of images in [-1, 1] from uint8 pixels (N, H, W, C).

    Nothing is decoded again: the data set holds only indices, and each batch gathers its
    rows from the uint8 array (or its memory map on disk), so no float32 copy of the whole
    set exists. Each epoch reshuffles; the last batch of an epoch may be smaller.
    """
    import tensorflow as tf  # Here: reading folders (common.evaluate) needs no TensorFlow.

    def gather(indices):
        return pixels[np.sort(indices)]  # Sorted reads are kinder to a memory map on disk.

    def to_float(batch):
        batch = tf.ensure_shape(batch, (None, *pixels.shape[1:]))
        batch = tf.cast(batch, tf.float32) / 127.5 - 1.0
        return tf.image.random_flip_left_right(batch, seed=seed) if flip else batch

    return (
        tf.data.Dataset.range(len(pixels))
        .shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda indices: tf.numpy_function(gather, [indices], tf.uint8),
             num_parallel_calls=tf.data.AUTOTUNE)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
    )
