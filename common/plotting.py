"""Pictures of a run: sample grids and the loss, D(x) and quality curves (the progress GIF
is common/gif.py).

Every file here is written atomically (see `common.files.atomic_write`), so an image
viewer, a notebook or a kill never sees a half-written file.
"""

import math

import imageio.v3 as iio
import numpy as np
# A bare Figure draws straight to a file with the Agg canvas: no pyplot, so no window, no
# figure left open in a notebook, and 40% less time an epoch than plt.subplots (measured).
from matplotlib.figure import Figure

from common.files import atomic_write


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


def plot_losses(history, path):
    """Generator and discriminator loss per epoch, from history rows (dicts)."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    style = _line_style(epochs)
    axes.plot(epochs, [row["d_loss"] for row in history], label="discriminator", **style)
    axes.plot(epochs, [row["g_loss"] for row in history], label="generator", **style)
    axes.set(xlabel="epoch", ylabel="loss (mean over the epoch)", title="Losses")
    _finish(figure, axes, path)


def plot_d_probs(history, path):
    """Mean D(x) on real images and D(G(z)) on generated ones per epoch, and the fixed-noise
    samples' diversity (common/health.py) where the history has it.

    An even game keeps both near 0.5; D(x) near 1 with D(G(z)) near 0 means the
    discriminator is winning outright, and the generator learns little; diversity falling
    far below 1 means the samples look alike (mode collapse).
    """
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    style = _line_style(epochs)
    axes.plot(epochs, [row["d_real"] for row in history], label="D(x), real images", **style)
    axes.plot(epochs, [row["d_fake"] for row in history], label="D(G(z)), generated images",
              **style)
    if any("augment_p" in row for row in history):  # --augment-adaptive's strength, also 0-1.
        axes.plot([row["epoch"] for row in history if "augment_p" in row],
                  [row["augment_p"] for row in history if "augment_p" in row],
                  label="augmentation p", color="gray", **style)
    variety = [row for row in history if "diversity" in row]  # The health check's, 1 = real.
    if variety:
        axes.plot([row["epoch"] for row in variety], [row["diversity"] for row in variety],
                  label="sample diversity (real images: 1)", color="tab:green", **style)
    axes.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    top = max([1.0] + [row["diversity"] + 0.05 for row in variety])
    axes.set(xlabel="epoch", ylabel="mean probability 'real'; diversity", ylim=(0, top),
             title="Discriminator outputs and sample diversity")
    _finish(figure, axes, path)


# The score columns common/quality.py writes, with their axis labels (all lower is better).
QUALITY_SCORES = {"fid": "FID", "kid": "KID", "fcd": "FCD (classifier features)",
                  "swd": "SWD (x1000)"}


def plot_quality(history, path):
    """Each score of the scored epochs (rows with one of QUALITY_SCORES) in a panel of its
    own, over the epochs: FID and KID, FCD, or SWD, whichever the run has."""
    names = [name for name in QUALITY_SCORES if any(name in row for row in history)]
    figure = Figure(figsize=(7, 1.5 + 2.2 * max(1, len(names))))
    panels = figure.subplots(max(1, len(names)), 1, sharex=True, squeeze=False)
    for name, axes in zip(names, panels[:, 0]):
        rows = [row for row in history if name in row]
        epochs = [row["epoch"] for row in rows]
        axes.plot(epochs, [row[name] for row in rows], color="tab:blue", **_line_style(epochs))
        axes.set_ylabel(QUALITY_SCORES[name])
        axes.grid(alpha=0.3)
    panels[0, 0].set_title("Sample quality (lower is better)")
    panels[-1, 0].set_xlabel("epoch")
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))


def _line_style(epochs):
    # Mark each epoch's point while there are few, or a one-epoch run draws an empty plot.
    return {"marker": "." if len(epochs) < 50 else None}


def _finish(figure, axes, path):
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
