"""What closing an epoch costs: the progress GIF over a whole run, and the other files.

Usage:
    python benchmarks/epoch_close.py                   # 400 epochs, 100 frames, 3-5 minutes
    python benchmarks/epoch_close.py --epochs 100 --repeats 3

Part 1, the GIF over a run of --epochs sampled epochs, on 8x8 grids of 64px colour images:
Ukiyo-e paintings from ../shared/data/wikiart_2styles (random smooth images when missing)
with Gaussian noise that falls from 40/255 to 4/255 over the run, standing in for a GAN's
samples getting cleaner (noise is what makes GIF frames big). It compares
  (a) the old write_gif (imageio, every sample re-quantized and re-encoded) called every
      epoch: timed at 10, 50 and 100 frames and extrapolated linearly to the run,
  (b) ProgressGif, add + write every epoch,
  (c) ProgressGif, add every epoch, write every 20 epochs (a 60 s clock on the 3 s
      epochs of a 262-image artworks run); and a resume (rebuild_from the samples on disk),
then the final GIF sizes, also for noise grids (the size cap's worst case) and 28x28
grayscale grids, and how the palette methods compare on one frame.

Part 2, the rest of an artworks epoch close (train_artworks models, --ema on, a history
of --epochs rows): median seconds and bytes written per item over --repeats rounds, then
cProfile's top 15 lines by cumulative and by own time over up to 3 more rounds. Not part
of the tests.
"""

import argparse
import cProfile
import glob
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import plotting  # noqa: E402
from common.gif import GIF_FRAMES, GIF_MAX_BYTES, ProgressGif, _parse_gif_frame  # noqa: E402
from common.plotting import image_grid  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "wikiart_2styles" / "images" / "Ukiyo_e"


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def load_paintings(count=64, seed=0):
    """`count` 64x64 paintings in [-1, 1] (the fixed noise's images), or smooth stand-ins."""
    files = sorted(glob.glob(str(DATA / "*.jpg")))
    rng = np.random.default_rng(seed)
    if len(files) >= count:
        chosen = rng.choice(files, count, replace=False)
        pixels = [np.asarray(Image.open(f).convert("RGB").resize((64, 64), Image.BILINEAR))
                  for f in chosen]
        source = f"{count} Ukiyo-e paintings from {DATA}"
    else:
        pixels = [np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                             .resize((64, 64), Image.BICUBIC)) for _ in range(count)]
        source = f"random smooth images ({DATA} is missing)"
    return np.stack(pixels).astype(np.float32) / 127.5 - 1, source


def sample_grid(paintings, epoch, epochs):
    """Epoch `epoch`'s sample grid: the paintings plus noise that fades over the run."""
    rng = np.random.default_rng(epoch)
    sigma = (40 + (4 - 40) * (epoch - 1) / max(1, epochs - 1)) / 127.5
    drift = rng.normal(0, 0.03, (1, 1, 1, 3))  # A little colour change from epoch to epoch.
    return image_grid(np.clip(paintings + drift + rng.normal(0, sigma, paintings.shape), -1, 1))


def legacy_write_gif(frame_paths, path, cache, seconds_per_frame=0.25):
    """write_gif as it was before ProgressGif: imageio re-quantizes and encodes every frame
    each call; frames are decoded once per process (cache)."""
    import imageio.v3 as iio

    frames = []
    for frame_path in frame_paths:
        if frame_path not in cache:
            cache[frame_path] = iio.imread(frame_path)
        frames.append(cache[frame_path])
    durations = [seconds_per_frame * 1000] * (len(frames) - 1) + [seconds_per_frame * 4000]
    if len(frames) == 1:
        durations = durations[0]  # Pillow wants a number, not a list, for a single frame.
    plotting.atomic_write(path, lambda temporary: iio.imwrite(
        temporary, np.stack(frames), extension=".gif", duration=durations, loop=0))


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / mse)


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        print("  " + "  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


# --- Part 1: the GIF -----------------------------------------------------------------------


def gif_part(args, folder):
    paintings, source = load_paintings()
    epochs = list(range(1, args.epochs + 1))
    print(f"grids: {source}, 8x8 of 64px, noise 40/255 -> 4/255 over {args.epochs} epochs")
    samples = folder / "samples"
    samples.mkdir(parents=True)
    paths, grids = [], []
    for epoch in epochs:  # The sample grids, and the PNGs a run leaves on disk.
        grids.append(sample_grid(paintings, epoch, args.epochs))
        paths.append(samples / f"epoch_{epoch:04d}.png")
        Image.fromarray(grids[-1]).save(paths[-1], compress_level=1)
    rows = []

    # (a) The old write_gif every epoch: time per call at a few frame counts, then fit.
    # It decoded each PNG once per process; that is done here, outside the clock.
    cache = {path: np.asarray(Image.open(path)) for path in paths[:100]}
    legacy_write_gif(paths[:1], folder / "old.gif", cache)  # Imports and first-call costs.
    counts, seconds, sizes = [], [], []
    for count in sorted({min(c, args.epochs) for c in (10, 50, 100)}):
        start = time.perf_counter()
        legacy_write_gif(paths[:count], folder / "old.gif", cache)
        counts.append(count)
        seconds.append(time.perf_counter() - start)
        sizes.append((folder / "old.gif").stat().st_size)
    slope, intercept = np.polyfit(counts, seconds, 1)
    total = sum(intercept + slope * k for k in epochs)
    per_frame_bytes = sizes[-1] / counts[-1]
    rows.append(["(a) old write_gif, every epoch", f"{total:.0f} (fit)",
                 f"{intercept + slope * args.epochs:.2f} (fit)", args.epochs,
                 f"{per_frame_bytes * args.epochs / 1e6:.1f} (fit)"])
    old_points = ", ".join(f"{c} frames {s:.2f} s" for c, s in zip(counts, seconds))

    # (b) ProgressGif, add + write every epoch, as run.py can; (c) writes every N epochs.
    for every in (1, 20):
        gif = ProgressGif(folder / f"every{every}.gif", max_frames=args.max_frames)
        spent, last_write = 0.0, 0.0
        for epoch, grid in zip(epochs, grids):
            start = time.perf_counter()
            gif.add(epoch, grid)
            if epoch % every == 0 or epoch == epochs[-1]:
                write_start = time.perf_counter()
                gif.write()
                last_write = time.perf_counter() - write_start
            spent += time.perf_counter() - start
        label = ("(b) ProgressGif, write every epoch" if every == 1 else
                 f"(c) ProgressGif, write every {every} epochs")
        if every == 20:
            label += " (60 s clock, 3 s epochs)"
        rows.append([label, f"{spent:.1f}", f"{last_write:.3f}", len(gif.shown()),
                     f"{(folder / f'every{every}.gif').stat().st_size / 1e6:.1f}"])

    start = time.perf_counter()
    resumed = ProgressGif(folder / "resumed.gif", max_frames=args.max_frames)
    resumed.rebuild_from(paths)
    resumed.write()
    rows.append(["resume: rebuild_from the PNGs + write", f"{time.perf_counter() - start:.1f}",
                 "", len(resumed.shown()),
                 f"{(folder / 'resumed.gif').stat().st_size / 1e6:.1f}"])
    same = len({(folder / name).read_bytes() for name in ("every1.gif", "every20.gif",
                                                              "resumed.gif")}) == 1
    table(f"GIF over a {args.epochs}-epoch run, max_frames={args.max_frames}",
          ["", "total s", "last write s", "frames", "final MB"], rows)
    print(f"  (a) measured: {old_points}; (b), (c) and the resume give the same file: {same}")

    # Size at the frame cap: the worst case for bytes is max_frames frames all shown.
    rng = np.random.default_rng(0)
    worst = []
    for label, make in [
            ("paintings, early (noise 40/255)", lambda e: sample_grid(paintings, 1, 400)),
            ("uniform noise, 8x8 of 64px RGB", lambda e: image_grid(
                rng.uniform(-1, 1, (64, 64, 64, 3)))),
            ("uniform noise, 8x8 of 28px gray", lambda e: image_grid(
                rng.uniform(-1, 1, (64, 28, 28, 1))))]:
        gif = ProgressGif(folder / "worst.gif", max_frames=args.max_frames)
        start = time.perf_counter()
        for epoch in range(1, args.max_frames + 1):
            gif.add(epoch, make(epoch))
        gif.write()
        colours = sorted(len(frame.table) // 3 for frame in gif._frames.values())
        worst.append([label, len(gif.shown()),
                      f"{(folder / 'worst.gif').stat().st_size / 1e6:.1f}",
                      f"{colours[len(colours) // 2]}",
                      f"{(time.perf_counter() - start) / args.max_frames * 1000:.0f}"])
    table(f"Size with all {args.max_frames} frames shown (cap {GIF_MAX_BYTES / 1e6:.0f}"
          " MB)", ["frames", "n", "MB", "median colours", "ms/frame"], worst)

    palette_table(paintings)


def palette_table(paintings):
    """One frame quantized to 256 colours by several methods: KB, PSNR, milliseconds."""
    import imageio.v3 as iio

    def old(image):  # What the old write_gif wrote: imageio, Pillow's ADAPTIVE (median cut).
        data = iio.imwrite("<bytes>", np.asarray(image)[None], extension=".gif")
        return Image.open(io.BytesIO(data)).convert("RGB"), len(data)

    def median_cut(image):
        return image.quantize(256, method=Image.Quantize.MEDIANCUT), None

    def octree(image):  # Pillow's fast octree with its own pixel mapping.
        return image.quantize(256, method=Image.Quantize.FASTOCTREE), None

    def chosen(image):  # ProgressGif: the octree's palette, each pixel its nearest colour.
        palette = image.quantize(256, method=Image.Quantize.FASTOCTREE)
        return image.quantize(palette=palette, dither=Image.Dither.NONE), None

    rows = []
    for content, grid in [("clean", sample_grid(paintings, 400, 400)),
                          ("noise 22/255", sample_grid(paintings, 200, 400)),
                          ("noise 40/255", sample_grid(paintings, 1, 400))]:
        image = Image.fromarray(grid)
        for name, method in [("old write_gif (imageio)", old), ("median cut", median_cut),
                             ("octree", octree), ("octree + nearest (chosen)", chosen)]:
            start = time.perf_counter()
            quantized, size = method(image)
            if size is None:
                buffer = io.BytesIO()
                quantized.save(buffer, format="GIF", interlace=False)
                size = len(_parse_gif_frame(buffer.getvalue()))
            rows.append([content, name, f"{size / 1000:.0f}",
                         f"{psnr(quantized.convert('RGB'), grid):.1f}",
                         f"{(time.perf_counter() - start) * 1000:.0f}"])
    table("One 530x530 frame, 256 colours, no dithering (ProgressGif then cuts colours until "
          "the frame fits max_bytes / max_frames)", ["grid", "palette", "KB", "PSNR dB", "ms"],
          rows)


# --- Part 2: the rest of the epoch close ---------------------------------------------------


def close_part(args, folder):
    import keras
    import tensorflow as tf

    import train_artworks
    from common.devices import portable_copy

    try:
        from common.files import atomic_write, write_history
    except ImportError:  # Before common/run.py was split.
        from common.files import atomic_write, write_history

    keras.utils.set_random_seed(0)
    generator = train_artworks.make_generator(128)
    discriminator = train_artworks.make_discriminator()
    ema_generator = train_artworks.make_generator(128)
    ema_generator.set_weights(generator.get_weights())
    optimizers = []
    for model in (generator, discriminator):
        optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
        optimizer.build(model.trainable_variables)
        optimizers.append(optimizer)
    fixed_noise = tf.Variable(tf.random.normal([64, 128]), trainable=False)
    checkpoint = tf.train.Checkpoint(
        generator=generator, discriminator=discriminator, generator_optimizer=optimizers[0],
        discriminator_optimizer=optimizers[1], epochs_done=tf.Variable(0, dtype=tf.int64),
        fixed_noise=fixed_noise, ema_generator=ema_generator)
    manager = tf.train.CheckpointManager(checkpoint, folder / "checkpoints", max_to_keep=3)
    rng = np.random.default_rng(0)
    history = [{"epoch": e, "d_loss": 1.2 + rng.normal(0, .1), "g_loss": 0.9 + rng.normal(0, .1),
                "d_real": 0.6, "d_fake": 0.4, "images_per_sec": 90.0, "seconds": 3.0}
               for e in range(1, args.epochs + 1)]
    gif = ProgressGif(folder / "progress.gif", max_frames=args.max_frames)
    for epoch in range(1, args.max_frames + 1):  # A GIF with max_frames frames shown.
        gif.add(epoch, rng.integers(0, 256, (530, 530, 3), dtype=np.uint8))
    gif.write()
    state = {"epoch": args.max_frames}

    def sample():
        state["images"] = ema_generator(fixed_noise, training=False)

    def grid():
        state["grid"] = plotting.save_image_grid(state["images"], folder / "sample.png")

    def gif_add_write():
        state["epoch"] += 1
        gif.add(state["epoch"], state["grid"])
        gif.write()

    def checkpoint_save():
        state["prefix"] = manager.save(checkpoint_number=state["epoch"])

    items = [
        ("sample 64 images (EMA G)", sample, None),
        ("save_image_grid", grid, ["sample.png"]),
        ("ProgressGif add + write", gif_add_write, ["progress.gif"]),
        ("write_history", lambda: write_history(folder, history), ["history.csv"]),
        ("plot_losses", lambda: plotting.plot_losses(history, folder / "losses.png"),
         ["losses.png"]),
        ("plot_d_probs", lambda: plotting.plot_d_probs(history, folder / "d_probs.png"),
         ["d_probs.png"]),
        ("generator.keras", lambda: atomic_write(folder / "generator.keras",
                                                 portable_copy(ema_generator).save),
         ["generator.keras"]),
        ("checkpoint (G, D, 2 Adam, EMA G)", checkpoint_save, "checkpoint"),
    ]
    for _, run, _ in items:  # Warm up: first calls trace and import.
        run()
    timings = {name: [] for name, _, _ in items}
    for _ in range(args.repeats):
        for name, run, _ in items:
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)

    def bytes_written(outputs):
        if outputs is None:
            return 0
        if outputs == "checkpoint":
            return sum(os.path.getsize(p) for p in glob.glob(state["prefix"] + ".*"))
        return sum((folder / name).stat().st_size for name in outputs)

    rows = [[name, f"{statistics.median(timings[name]):.3f}",
             f"{bytes_written(outputs) / 1e6:.2f}"] for name, _, outputs in items]
    total = sum(statistics.median(timings[name]) for name, _, _ in items)
    rows.append(["total", f"{total:.3f}", ""])
    table(f"Artworks epoch close, median of {args.repeats} (history of {args.epochs} rows)",
          ["item", "seconds", "MB written"], rows)

    profile = cProfile.Profile()
    rounds = min(3, args.repeats)
    profile.enable()
    for _ in range(rounds):
        for _, run, _ in items:
            run()
    profile.disable()
    print(f"\ncProfile of {rounds} whole closes, top 15 by cumulative time:")
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(15)
    lines = stream.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    print("\n".join(lines[start : start + 16]))
    print("\nand top 15 by own time (where the seconds are spent):")
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("tottime").print_stats(15)
    lines = stream.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    print("\n".join(lines[start : start + 16]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--max-frames", type=int, default=GIF_FRAMES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-gif", action="store_true")
    parser.add_argument("--skip-close", action="store_true")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores, load average "
          f"{os.getloadavg()[0]:.1f} (other work on the machine slows every row alike)")
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_gif:
            gif_part(args, Path(folder) / "gif")
        if not args.skip_close:
            (Path(folder) / "close").mkdir()
            close_part(args, Path(folder) / "close")


if __name__ == "__main__":
    main()
