"""Score finished Fashion-MNIST runs side by side: pixel-FID against the real test set.

Usage:
    python train_fashion_mnist.py --epochs 1 --precision float32 --out-dir runs/f32
    python train_fashion_mnist.py --epochs 1 --precision auto --out-dir runs/auto
    python benchmarks/fashion_quality.py runs/f32 runs/auto

For each run it loads generator.keras, generates 10,000 images from fixed noise (the same
noise for every run) and prints the pixel-FID (common/metrics.py: Frechet distance on the
top 20 principal components of pixels; lower is better) against the 10,000 real test
images, next to the pixel-FID of 10,000 real training images (the floor) for scale.
Not part of the test run; see BENCHMARKS.md.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders holding generator.keras")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--count", type=int, default=10000)
    args = parser.parse_args()

    import keras

    from common.metrics import pixel_fid
    from train_fashion_mnist import read_idx_images

    def scaled(images):
        return images[:args.count].astype(np.float32) / 127.5 - 1

    folder = Path(args.data_dir)
    test = scaled(read_idx_images(folder / "t10k-images-idx3-ubyte.gz"))
    train = scaled(read_idx_images(folder / "train-images-idx3-ubyte.gz"))
    print(f"real train vs real test (the floor): {pixel_fid(test, train):.2f}")
    for run in args.runs:
        generator = keras.saving.load_model(Path(run) / "generator.keras")
        noise = np.random.default_rng(0).normal(
            size=(args.count, generator.input_shape[-1])).astype(np.float32)
        generated = generator.predict(noise, batch_size=500, verbose=0)
        print(f"{run}: pixel-FID {pixel_fid(test, generated):.2f}")


if __name__ == "__main__":
    main()
