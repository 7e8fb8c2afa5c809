"""Pillow's multi-frame GIF writer (what imageio uses for GIFs) against ProgressGif's own:
the cost of one write of a 100-frame progress.gif of 8x8 grids of 64px images, and whether
the file keeps every frame it was given.

Usage: python benchmarks/gif_writer.py   (about 10 s; figures in BENCHMARKS.md)
"""
import io, sys, time
import numpy as np
from PIL import Image
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from common import gif
rng = np.random.default_rng(0)
frames = []
for i in range(100):
    base = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((66, 66, 1)))[:530, :530]
    img = np.clip(base + rng.normal(0, 40 - 0.36 * i, base.shape), 0, 255).astype(np.uint8)
    frames.append(Image.fromarray(img))
quantized = [im.quantize(palette=im.quantize(256, method=Image.Quantize.FASTOCTREE), dither=Image.Dither.NONE) for im in frames]
encoded = [gif._encode_frame(im, None) for im in frames]
for name, write in (("Pillow save_all", lambda: quantized[0].save(io.BytesIO(), format="GIF", save_all=True, append_images=quantized[1:], duration=250, loop=0)),
                    ("ProgressGif (frames kept encoded)", lambda: b"".join(gif._gif_bytes(encoded, 0.25)))):
    times = []
    for _ in range(5):
        t = time.perf_counter(); write(); times.append(time.perf_counter() - t)
    print(f"{name}: median {sorted(times)[2]*1000:.0f} ms per write of 100 frames")
# Faithfulness: two identical consecutive frames, and a colour frame after a gray one.
gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)))
colour = frames[0].resize((64, 64)).quantize(256)
buffer = io.BytesIO()
gray.save(buffer, format="GIF", save_all=True, append_images=[gray.copy(), colour], duration=250, loop=0)
read = Image.open(io.BytesIO(buffer.getvalue()))
print("Pillow: 3 frames given (gray, the same gray, colour), file has", read.n_frames)
read.seek(read.n_frames - 1)
print("Pillow: colour frame error", np.abs(np.asarray(read.convert("RGB"), float) - np.asarray(colour.convert("RGB"), float)).mean())
