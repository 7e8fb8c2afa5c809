"""A small GIF of a run's sample grids for the README: at most --frames grids spread evenly
over the run (the last always included), scaled by --scale.

Usage:
    python benchmarks/showcase_gif.py runs/artworks docs/artworks_progress.gif --frames 24

The run's own progress.gif keeps up to 100 full-size frames (up to about 19 MB); this copy
is for pages that load it on every view. Not part of the tests.
"""

import argparse
from pathlib import Path

from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--seconds-per-frame", type=float, default=0.25)
    args = parser.parse_args()
    grids = sorted(Path(args.run, "samples").glob("epoch_*.png"))
    if not grids:
        raise SystemExit(f"error: no sample grids in {Path(args.run, 'samples')}")
    count = min(args.frames, len(grids))
    chosen = [grids[round(index * (len(grids) - 1) / max(count - 1, 1))] for index in range(count)]
    frames = []
    for path in chosen:
        image = Image.open(path).convert("RGB")
        size = (round(image.width * args.scale), round(image.height * args.scale))
        frames.append(image.resize(size, Image.LANCZOS).quantize(colors=128))
    # The last frame stays up longer, so the result is what a viewer sees most.
    durations = [int(args.seconds_per_frame * 1000)] * (count - 1) + [2000]
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=durations,
                   loop=0, optimize=True)
    print(f"{args.out}: {count} frames of {len(grids)} grids, "
          f"{Path(args.out).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
