"""Time a 64x64 script's input pipeline on its own: the one-time decode, then epochs.

Usage:
    python benchmarks/pipeline.py train_animals.py --data-dir /path/to/afhq/train
    python benchmarks/pipeline.py train_artworks.py --data-dir images --artist Rembrandt

Prints the decode rate (first epoch's work) and the img/s of whole epochs afterwards,
which read only the decoded uint8 pixels. Not part of the test run.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", choices=("train_faces.py", "train_animals.py",
                                           "train_artworks.py"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--artist", action="append", default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    script = importlib.import_module(args.script[:-3])

    start = time.perf_counter()
    if args.script == "train_artworks.py":
        pixels, skipped, source = script.read_images(args.data_dir, args.artist or ["Rembrandt"],
                                                     args.cache_dir)
    else:
        pixels, skipped, source = script.read_images(args.data_dir, args.cache_dir)
    seconds = time.perf_counter() - start
    print(f"decode: {len(pixels) + len(skipped)} files from {source} in {seconds:.1f} s = "
          f"{(len(pixels) + len(skipped)) / seconds:.0f} img/s")

    dataset = script.load_dataset(pixels, args.batch_size, seed=0,
                                  flip=args.script == "train_artworks.py")
    for epoch in range(1, args.epochs + 1):
        start, count = time.perf_counter(), 0
        for batch in dataset:
            count += int(batch.shape[0])
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {count} images in {seconds:.2f} s = {count / seconds:.0f} img/s")


if __name__ == "__main__":
    main()
