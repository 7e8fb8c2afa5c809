"""Pictures of a run: sample grids, the progress GIF, and the loss and D(x) curves.

Every file here is written atomically (see `common.run.atomic_write`), so an image
viewer, a notebook or a kill never sees a half-written file.
"""

import math
import os

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")  # Write files only; never open a window (servers, CI, Colab).
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.run import atomic_write  # noqa: E402


def image_grid(images, columns=None, padding=2):
    """Tile a batch of images in [-1, 1], shaped (N, H, W, C), into one uint8 picture.

    The grid is as square as N allows; cells are separated by `padding` white pixels.
    Grayscale batches give an (H, W) picture, colour ones (H, W, 3).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"image_grid wants (N, H, W, C) images, got shape {images.shape}")
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        255,
        dtype=np.uint8,
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid[..., 0] if channels == 1 else grid


def save_image_grid(images, path, columns=None):
    """Write `image_grid(images)` to `path` as a PNG and return the grid."""
    grid = image_grid(images, columns)
    atomic_write(path, lambda temporary: iio.imwrite(temporary, grid, extension=".png"))
    return grid


def write_gif(frame_paths, path, seconds_per_frame=0.25):
    """Write the PNGs in `frame_paths`, in order, as one looping GIF at `path`.

    The GIF is rebuilt from the sample PNGs rather than appended to, so it always
    matches the samples on disk, also after a kill or a resume. Frames are decoded
    once per process and cached.
    """
    frames = [_read_frame(frame_path) for frame_path in frame_paths]
    if not frames:
        return
    # Hold the newest frame a little longer so a viewer sees where training stands.
    durations = [seconds_per_frame * 1000] * (len(frames) - 1) + [seconds_per_frame * 4000]
    if len(frames) == 1:
        durations = durations[0]  # Pillow wants a number, not a list, for a single frame.
    atomic_write(
        path,
        lambda temporary: iio.imwrite(
            temporary, np.stack(frames), extension=".gif", duration=durations, loop=0
        ),
    )


_frame_cache = {}


def _read_frame(frame_path):
    # Keyed by modification time too: a resumed epoch writes its sample PNG again.
    status = os.stat(frame_path)
    key = (str(frame_path), status.st_mtime_ns, status.st_size)
    if key not in _frame_cache:
        _frame_cache[key] = iio.imread(frame_path)
    return _frame_cache[key]


def plot_losses(history, path):
    """Generator and discriminator loss per epoch, from history rows (dicts)."""
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(7, 4))
    style = _line_style(epochs)
    axes.plot(epochs, [row["d_loss"] for row in history], label="discriminator", **style)
    axes.plot(epochs, [row["g_loss"] for row in history], label="generator", **style)
    axes.set(xlabel="epoch", ylabel="loss (mean over the epoch)", title="Losses")
    _finish(figure, axes, path)


def plot_d_probs(history, path):
    """Mean D(x) on real images and D(G(z)) on generated ones per epoch.

    An even game keeps both near 0.5; D(x) near 1 with D(G(z)) near 0 means the
    discriminator is winning outright, and the generator learns little.
    """
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(7, 4))
    style = _line_style(epochs)
    axes.plot(epochs, [row["d_real"] for row in history], label="D(x), real images", **style)
    axes.plot(epochs, [row["d_fake"] for row in history], label="D(G(z)), generated images",
              **style)
    axes.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    axes.set(xlabel="epoch", ylabel="mean probability 'real'", ylim=(0, 1),
             title="Discriminator outputs")
    _finish(figure, axes, path)


def plot_quality(history, path):
    """FID and KID per scored epoch (rows with a "fid" value), on two axes.

    Both fall as samples get closer to the real images; KID, unbiased, is the one to
    trust when the image count is small.
    """
    rows = [row for row in history if "fid" in row]
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4))
    style = _line_style(epochs)
    axes.plot(epochs, [row["fid"] for row in rows], color="tab:blue", label="FID", **style)
    axes.set(xlabel="epoch", ylabel="FID (lower is better)", title="Sample quality")
    kid_axes = axes.twinx()
    kid_axes.plot(epochs, [row["kid"] for row in rows], color="tab:orange", label="KID",
                  **style)
    kid_axes.set_ylabel("KID (lower is better)")
    axes.legend(handles=axes.get_lines() + kid_axes.get_lines(), loc="upper right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)


def _line_style(epochs):
    # Mark each epoch's point while there are few, or a one-epoch run draws an empty plot.
    return {"marker": "." if len(epochs) < 50 else None}


def _finish(figure, axes, path):
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)
