"""Image files decoded once: each file of a folder into a small uint8 RGB square.

`find_images` lists a folder as it ships (CelebA's img_align_celeba/, AFHQ's train/cat/...,
one folder per artist), `decode_images` turns every file into a uint8 square exactly once,
skipping the files that are not images. The on-disk cache of the result is
common/image_cache.py; the batches a script trains on, common/image_data.py.

A folder is untrusted input: a file that is not a readable image (random bytes, a truncated
or corrupted picture, a header declaring billions of pixels, a FIFO, a symlink loop, a file
whose reading fails) is skipped with its reason; it never crashes, hangs or exhausts the
memory of a run (tests/test_hostile_image_files.py).
"""

import os
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
