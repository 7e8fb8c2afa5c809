"""Fashion-MNIST's idx image files (train-images-idx3-ubyte[.gz]), read safely.

An idx3 file is a 16-byte header (magic 2051, image count, rows, columns, big-endian
uint32) and then count * rows * columns bytes of pixels. The file is untrusted input: its
header is checked against the expected image size, sane limits and the size of the file
before any memory is taken, and a gzipped file is inflated a bounded piece at a time, never
beyond what the header promises (plus one byte, to notice extra data). So a crafted header
(billions of 0x0 images, more images than bytes) or a gzip bomb gets one ValueError line
naming the file and the fix, never a crash or an exhausted memory (tests/test_idx.py).
"""

import gzip
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

MAGIC = 2051  # idx3: unsigned bytes, three dimensions.
HEADER = 16
MAX_IMAGES = 1_000_000  # Fashion-MNIST has 60,000; past this a header is not believed.
MAX_DEFLATE_RATIO = 1032  # Deflate cannot expand data more than this (zlib's tech notes).
CHUNK = 1 << 20  # Bytes inflated at a time.


def read_idx_images(path, shape=(28, 28)):
    """Read an idx3 image file (gzip or plain) into a uint8 array (N, rows, columns, 1).

    `shape` is the (rows, columns) the images must have: Fashion-MNIST's 28x28. A file is
    gzipped if its name ends in .gz or its content starts with gzip's magic bytes. Raises
    ValueError, one line naming `path` and the fix, for every file that is not exactly
    such an idx3 file.
    """
    path = Path(path)
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):  # A FIFO would block, a device never end.
            raise ValueError(f"{path} is not a regular file; download it again")
        with open(path, "rb") as file:
            gzipped = path.suffix == ".gz" or file.read(2) == b"\x1f\x8b"
            file.seek(0)
            if gzipped:
                return _read(path, gzip.GzipFile(fileobj=file, mode="rb"), shape,
                             compressed=status.st_size)
            return _read(path, file, shape, payload=status.st_size - HEADER)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ValueError(f"cannot read {path} ({reason}); download it again") from None


def _read(path, stream, shape, payload=None, compressed=None):
    """The images from an open `stream` (plain or inflating). `payload` is the number of
    pixel bytes a plain file holds; `compressed` is a gzipped file's size."""
    header = _read_exactly(stream, HEADER)
    if len(header) < HEADER:
        raise ValueError(f"{path} is truncated ({len(header)} bytes); download it again")
    magic, count, rows, columns = struct.unpack(">IIII", header)
    check_header(path, magic, count, rows, columns, shape)
    size = count * rows * columns
    if payload is not None and payload != size:  # A plain file: its size says it all.
        _wrong_size(path, count, rows, columns, payload)
    if compressed is not None and size + HEADER > compressed * MAX_DEFLATE_RATIO + 1024:
        raise ValueError(f"{path} is truncated: its header promises {count} images of "
                         f"{rows}x{columns} ({size:,} bytes) but {compressed:,} compressed "
                         f"bytes cannot hold that much; download it again")
    pixels = np.empty(size, np.uint8)  # At most MAX_IMAGES images: a bounded allocation.
    view = memoryview(pixels)
    done = 0
    while done < size:
        read = stream.readinto(view[done:done + CHUNK])
        if not read:
            _wrong_size(path, count, rows, columns, done)
        done += read
    if stream.read(1):  # Inflates at most one byte more (and checks gzip's CRC at the end).
        _wrong_size(path, count, rows, columns, None)
    return pixels.reshape(count, rows, columns, 1)


def check_header(path, magic, count, rows, columns, shape=(28, 28)):
    """ValueError, one line, unless the header describes 1..MAX_IMAGES images of `shape`."""
    if magic != MAGIC:
        raise ValueError(f"{path} is not an idx image file (magic number {magic}, expected "
                         f"{MAGIC}); point --data-dir at the Fashion-MNIST files")
    if (rows, columns) != tuple(shape):
        raise ValueError(f"{path} holds images of {rows}x{columns}, not the "
                         f"{shape[0]}x{shape[1]} of Fashion-MNIST; point --data-dir at the "
                         f"Fashion-MNIST files, or download it again")
    if count == 0:
        raise ValueError(f"{path} declares 0 images; download it again")
    if count > MAX_IMAGES:
        raise ValueError(f"{path} declares {count:,} images, more than this reader accepts "
                         f"({MAX_IMAGES:,}; Fashion-MNIST has 60,000); download it again")


def _wrong_size(path, count, rows, columns, pixel_bytes):
    """The ValueError for pixels that do not match the header: fewer, or (None) more."""
    if pixel_bytes is not None and pixel_bytes < count * rows * columns:
        raise ValueError(f"{path} is truncated: its header promises {count} images of "
                         f"{rows}x{columns} but it holds {pixel_bytes} bytes of pixels; "
                         f"download it again")
    extra = "" if pixel_bytes is None else f" ({pixel_bytes} bytes of pixels)"
    raise ValueError(f"{path} is too long: it holds more than the {count} images of "
                     f"{rows}x{columns} its header promises{extra}; download it again")


def _read_exactly(stream, size):
    """Up to `size` bytes: fewer only at the end of the stream."""
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data
