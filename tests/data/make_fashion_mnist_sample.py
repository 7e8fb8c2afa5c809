"""Rebuild tests/data/fashion_mnist/ from the full Fashion-MNIST idx files.

The sample is the first TRAIN_COUNT training and TEST_COUNT test images with their
labels, in the dataset's own idx .gz format, so the scripts read it exactly as they read
the full set. Usage (Debian: `apt-get install dataset-fashion-mnist` provides the source):

    python tests/data/make_fashion_mnist_sample.py /usr/share/datasets/fashion-mnist
"""

import gzip
import struct
import sys
from pathlib import Path

TRAIN_COUNT, TEST_COUNT = 2000, 500


def copy_head(source, target, count):
    raw = gzip.decompress(source.read_bytes())
    magic = struct.unpack(">I", raw[:4])[0]
    dimensions = magic & 0xFF  # idx: the low byte of the magic number counts the dimensions.
    shape = struct.unpack(">" + "I" * dimensions, raw[4 : 4 + 4 * dimensions])
    header_size = 4 + 4 * dimensions
    item_size = 1
    for size in shape[1:]:
        item_size *= size
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * dimensions, count, *shape[1:])
    body = raw[header_size : header_size + count * item_size]
    # mtime=0 keeps the files byte-identical from one rebuild to the next.
    target.write_bytes(gzip.compress(header + body, compresslevel=9, mtime=0))


def main(source_dir):
    source_dir, target_dir = Path(source_dir), Path(__file__).parent / "fashion_mnist"
    target_dir.mkdir(exist_ok=True)
    for split, count in (("train", TRAIN_COUNT), ("t10k", TEST_COUNT)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            copy_head(source_dir / name, target_dir / name, count)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
