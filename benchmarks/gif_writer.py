"""Pillow's multi-frame GIF writer (what imageio uses for GIFs) against ProgressGif's own:
the cost of one write of a 100-frame progress.gif of 8x8 grids of 64px images, and whether
the file keeps every frame it was given.

Usage: python benchmarks/gif_writer.py   (about 10 s; figures in BENCHMARKS.md)
"""

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import gif  # noqa: E402

FRAMES, SIDE, WRITES = 100, 530, 5  # 530x530: an 8x8 grid of 64px images with padding.


def noisy_grids(rng):
    """Blocky colour grids whose noise falls over the run, as a GAN's samples clean up."""
    for index in range(FRAMES):
        blocks = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((67, 67, 1)))[:SIDE, :SIDE]
        noise = rng.normal(0, 40 - 0.36 * index, blocks.shape)
        yield Image.fromarray(np.clip(blocks + noise, 0, 255).astype(np.uint8))


def median_ms(write):
    times = []
    for _ in range(WRITES):
        start = time.perf_counter()
        write()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[WRITES // 2]


def main():
    images = list(noisy_grids(np.random.default_rng(0)))
    # Both writers get the same work: each frame quantized once beforehand.
    quantized = [image.quantize(palette=image.quantize(256, method=Image.Quantize.FASTOCTREE),
                                dither=Image.Dither.NONE) for image in images]
    encoded = [gif._encode_frame(image, None) for image in images]

    def pillow():
        quantized[0].save(io.BytesIO(), format="GIF", save_all=True,
                          append_images=quantized[1:], duration=250, loop=0)

    def ours():
        b"".join(gif._gif_bytes(encoded, 0.25))

    print(f"Pillow save_all: {median_ms(pillow):.0f} ms per write of {FRAMES} frames")
    print(f"ProgressGif (frames kept encoded): {median_ms(ours):.0f} ms per write")

    # Does the file hold every frame given? Two identical frames, then a colour one.
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)))
    colour = images[0].resize((64, 64)).quantize(256)
    buffer = io.BytesIO()
    gray.save(buffer, format="GIF", save_all=True, append_images=[gray.copy(), colour],
              duration=250, loop=0)
    print(f"Pillow: 3 frames given (gray, the same gray, colour), "
          f"{Image.open(io.BytesIO(buffer.getvalue())).n_frames} in the file")


if __name__ == "__main__":
    main()
