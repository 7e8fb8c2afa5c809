"""common.idx: the Fashion-MNIST idx reader, against good files and crafted, hostile ones.

Every bad file must give one ValueError line naming the file and the fix, before any large
allocation or decompression: no segfault, no MemoryError, no traceback (issue 13, case 6).
"""

import gzip
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from conftest import ENV, ROOT


def idx(count, rows=28, columns=28, payload=None, magic=2051):
    """The bytes of an idx3 file: a header as given, then `payload` (default: the pixels the
    header promises, a recognisable pattern)."""
    if payload is None:
        payload = (np.arange(count * rows * columns) % 251).astype(np.uint8).tobytes()
    return struct.pack(">IIII", magic, count, rows, columns) + payload


def write(folder, name, raw, compress=None):
    path = folder / name
    compress = name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def gzip_bomb(path, header, zeros):
    """A valid gzip file: `header`, then `zeros` zero bytes, compressed ~1000:1 in a stream."""
    with gzip.open(path, "wb") as file:
        file.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros // len(chunk)):
            file.write(chunk)
    return path


def read(path, **options):
    from common.idx import read_idx_images
    return read_idx_images(path, **options)


def refused(path, *words):
    """read(path) raises one ValueError line naming the path, the fix, and `words`."""
    with pytest.raises(ValueError) as caught:
        read(path)
    line = str(caught.value)
    assert "\n" not in line and str(path) in line, line
    assert "download it again" in line or "--data-dir" in line, line
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"])
def test_a_good_file_round_trips_plain_and_gzipped(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write(tmp_path, name, struct.pack(">IIII", 2051, 5, 28, 28) + images.tobytes())
    pixels = read(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(pixels[..., 0], images)


def test_the_shipped_sample_reads_and_another_shape_can_be_asked_for(tmp_path):
    pixels = read(ROOT / "tests" / "data" / "fashion_mnist" / "train-images-idx3-ubyte.gz")
    assert pixels.shape == (2000, 28, 28, 1) and pixels.max() > 200
    small = read(write(tmp_path, "small.gz", idx(3, 4, 5)), shape=(4, 5))
    assert small.shape == (3, 4, 5, 1)


# Crafted headers: (file name, bytes, words the message must hold).
CRAFTED = {
    "count-0": (idx(0), ["declares 0 images"]),
    "4e9-of-0x0": (idx(4_000_000_000, 0, 0), ["0x0", "28x28"]),
    "1x1": (idx(784, 1, 1), ["1x1", "28x28"]),
    "wrong-magic": (idx(2, magic=2049), ["magic number 2049, expected 2051"]),
    "truncated": (idx(10, payload=idx(5)[16:]), ["is truncated: its header promises 10 images"]),
    "too-long": (idx(10, payload=idx(11)[16:]), ["too long", "10 images"]),
    "short-header": (idx(10)[:9], ["is truncated (9 bytes)"]),
    "4e9-of-28x28": (idx(4_000_000_000, payload=idx(2)[16:]), ["4,000,000,000"]),
    "empty": (b"", ["is truncated (0 bytes)"]),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_each_crafted_header_is_one_line(tmp_path, kind, suffix):
    raw, words = CRAFTED[kind]
    refused(write(tmp_path, f"{kind}{suffix}", raw), *words)


def test_a_gzip_bomb_declaring_two_images_is_refused_without_inflating_it(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.gz", idx(2)[:16], 256 << 20)  # 256 MB of zeros.
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(bomb, "too long")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 8 << 20, f"read {peak:,} bytes into memory"


def test_a_huge_count_in_a_small_gzip_is_refused_before_decompressing(tmp_path):
    path = write(tmp_path, "huge.gz", idx(500_000, payload=idx(3)[16:]))
    refused(path, "is truncated: its header promises 500000 images")
    # Past any real dataset: refused from the header alone.
    refused(write(tmp_path, "more.gz", idx(50_000_000, payload=b"")), "50,000,000")


@pytest.mark.parametrize("damage", ["flipped", "cut", "not-gzip", "trailing-garbage"])
def test_a_corrupt_gzip_is_one_line(tmp_path, damage):
    good = bytearray(gzip.compress(idx(20)))
    if damage == "flipped":
        good[len(good) // 2] ^= 0xFF
        good[len(good) // 2 + 1] ^= 0x55
    elif damage == "cut":
        good = good[: len(good) // 2]
    elif damage == "not-gzip":
        good = bytearray(b"this is not a gzip file")
    else:
        good += b"garbage!" * 4
    refused(write(tmp_path, f"{damage}.gz", bytes(good), compress=False), "cannot read")


def test_a_folder_or_fifo_in_its_place_is_one_line(tmp_path):
    import os
    (tmp_path / "folder.gz").mkdir()
    refused(tmp_path / "folder.gz")
    os.mkfifo(tmp_path / "fifo.gz")
    refused(tmp_path / "fifo.gz", "not a regular file")  # Never opened: it would block.


RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
from common.idx import read_idx_images
try:
    pixels = read_idx_images(sys.argv[2])
except ValueError as error:
    raise SystemExit(f"error: {error}")
print(pixels.shape, int(pixels.sum()))
"""


def test_crafted_files_never_crash_a_fresh_process(tmp_path):
    files = [write(tmp_path, f"{kind}{suffix}", raw)
             for kind, (raw, _) in CRAFTED.items() for suffix in ("", ".gz")]
    files.append(gzip_bomb(tmp_path / "bomb.gz", idx(2)[:16], 64 << 20))
    cut = zlib.compress(idx(30))[:-7]
    files.append(write(tmp_path, "cut.gz", cut, compress=False))
    for path in files:
        result = subprocess.run([sys.executable, "-c", RUNNER, str(ROOT), str(path)],
                                capture_output=True, text=True, env=ENV, timeout=60)
        assert result.returncode == 1, (path, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
