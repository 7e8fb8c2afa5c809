"""What the offline scores cost and where their floor is: FCD (Fashion-MNIST) and SWD (64px).

Usage:
    python benchmarks/offline_scores.py --fashion /usr/share/datasets/fashion-mnist \\
        --faces ../shared/data/celeba

FCD: 10,000 real test images against the classifier's features of (a) 10,000 other real
images, the training split's first (the floor), (b) uniform noise; and the seconds one
score takes (the real features cached, as --eval-every has them). SWD: the same for
SWD_COUNT (2,048) images of a folder split in two halves. Not part of the tests; the
figures are in BENCHMARKS.md.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def as_generator(images):
    """A stand-in generator returning `images` (float32 in [-1, 1]) batch after batch."""
    position = {"next": 0}

    def generator(noise, training=False):
        start = position["next"]
        position["next"] = start + len(noise)
        return images[start:start + len(noise)]
    return generator


def timed(meter, generator):
    start = time.perf_counter()
    scores = meter.measure(generator, lambda count, seed: np.zeros((count, 1), np.float32))
    return scores, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--faces", default=None, help="a folder of face images (64px run)")
    args = parser.parse_args()
    from common import quality
    from common.classifier import read_split, to_model_range

    test, _ = read_split(args.fashion, "t10k")
    train, _ = read_split(args.fashion, "train")
    start = time.perf_counter()
    meter = quality.ClassifierMeter(test, 10000, None)
    print(f"FCD: real features of 10,000 images in {time.perf_counter() - start:.1f} s")
    floor, seconds = timed(meter, as_generator(to_model_range(train[:10000])))
    noise = np.random.default_rng(0).uniform(-1, 1, (10000, 28, 28, 1)).astype(np.float32)
    far, _ = timed(meter, as_generator(noise))
    print(f"FCD real train vs real test {floor['fcd']:.3f} (one score {seconds:.1f} s); "
          f"uniform noise {far['fcd']:.1f}")
    if args.faces:
        from common.image_cache import load_images
        from common.images import find_images
        paths = find_images(Path(args.faces))
        pixels, _, _ = load_images(paths, 64)
        half = len(pixels) // 2
        meter = quality.SlicedWassersteinMeter(pixels[:half], 10000)
        floor, seconds = timed(meter, as_generator(to_model_range(pixels[half:])))
        noise = np.random.default_rng(0).uniform(-1, 1, (meter.count, 64, 64, 3))
        far, _ = timed(meter, as_generator(noise.astype(np.float32)))
        print(f"SWD {meter.count} real vs {meter.count} other real {floor['swd']:.2f} "
              f"(one score {seconds:.1f} s); uniform noise {far['swd']:.1f}")


if __name__ == "__main__":
    main()
