"""Shared test helpers: run a script as a user would, and make small idx datasets."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FASHION_SAMPLE = ROOT / "tests" / "data" / "fashion_mnist"
sys.path.insert(0, str(ROOT))  # So tests can import the scripts and common/.

# Quiet TensorFlow's start-up logging in the subprocesses; errors still show.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_script(script, *args, check=True, timeout=600):
    """Run ROOT/script with args in a fresh Python, as `python script ...` would."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)],
                            capture_output=True, text=True, env=ENV, timeout=timeout,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def write_idx_images(path, images):
    """Write uint8 images (N, H, W) as an idx3 .gz file, the format Fashion-MNIST ships in."""
    images = np.asarray(images, np.uint8)
    header = struct.pack(">IIII", 2051, *images.shape)
    Path(path).write_bytes(gzip.compress(header + images.tobytes()))


@pytest.fixture(scope="session")
def sample_images():
    """The shipped real sample's 2,000 training images, uint8 (N, 28, 28)."""
    raw = gzip.decompress((FASHION_SAMPLE / "train-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, sample_images):
    """200 real images: two steps an epoch at batch 128, the second a partial batch of 72."""
    folder = tmp_path_factory.mktemp("tiny_fashion")
    write_idx_images(folder / "train-images-idx3-ubyte.gz", sample_images[:200])
    return folder
