"""Per-epoch progress: a live bar while the epoch runs, one fixed-format line at its end."""

import math
import sys
import time

import numpy as np
import tensorflow as tf

METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


class EpochLog:
    """Collects an epoch's per-step metrics and shows a progress bar.

    `add` keeps each step's metrics (common.losses.step_metrics: a dict of tensors by name)
    as they are: they are read back from the device only when the bar redraws (twice a
    second at most), so the training loop never waits for the accelerator just to print.
    """

    def __init__(self, epoch, epochs, steps, first_step, stream=None):
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.first_step = first_step  # Global step number of this epoch's first step.
        self.stream = stream or sys.stdout
        self.interactive = _interactive(self.stream)
        self.pending = []  # Per-step metric tensors not yet read back.
        self.totals = np.zeros(len(METRICS))
        self.done = 0  # Steps read back so far.
        self.images = 0
        self.start = time.perf_counter()
        self.last_draw = self.start

    def add(self, metrics):
        """Record one step's metrics; redraw the bar when it is due."""
        self.pending.append(metrics)
        now = time.perf_counter()
        if now - self.last_draw >= (0.5 if self.interactive else 30.0):
            self.last_draw = now
            self.flush()
            self._draw(now)

    def flush(self):
        """Read the pending steps back; raise FloatingPointError at a non-finite loss."""
        if not self.pending:
            return
        # One stack and one read-back per name for all pending steps, not one per step.
        values = {name: np.asarray(tf.stack([metrics[name] for metrics in self.pending]))
                  for name in (*METRICS, "images")}
        bad = ~(np.isfinite(values["d_loss"]) & np.isfinite(values["g_loss"]))
        if bad.any():
            index = int(np.argmax(bad))
            raise FloatingPointError(
                f"non-finite loss at epoch {self.epoch}, step {self.done + index + 1} of the "
                f"epoch (global step {self.first_step + self.done + index}): "
                f"d_loss={values['d_loss'][index]}, g_loss={values['g_loss'][index]}")
        self.totals += [values[name].sum() for name in METRICS]
        self.images += int(values["images"].sum())
        self.done += len(self.pending)
        self.pending = []

    def summary(self, **extra):
        """Flush and return the epoch's history row (means over its steps, and `extra`
        columns such as augment_p); `print_row` prints it."""
        self.flush()
        seconds = time.perf_counter() - self.start
        means = self.totals / max(self.done, 1)
        row = {"epoch": self.epoch, **dict(zip(METRICS, means.round(6).tolist()))}
        row["images_per_sec"] = round(self.images / seconds, 1)
        row["seconds"] = round(seconds, 2)
        row.update(extra)
        return row

    def print_row(self, row, note=""):
        """The epoch's line, in place of the bar; `note` (what has gone wrong) at its end."""
        if self.interactive:
            self.stream.write("\r\033[K")
        print(format_row(row, self.epochs, note), file=self.stream, flush=True)

    def _draw(self, now):
        means = self.totals / max(self.done, 1)
        width = 20
        filled = int(width * self.done / max(self.steps, 1))
        rate = self.images / max(now - self.start, 1e-9)
        text = (f"epoch {self.epoch}/{self.epochs} [{'=' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.steps} d_loss {means[0]:.4f} g_loss {means[1]:.4f} "
                f"D(x) {means[2]:.3f} D(G(z)) {means[3]:.3f} {rate:.0f} img/s")
        if self.interactive:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)


def write_tensorboard(writer, row, grid=None):
    """Log an epoch's history row (losses, D(x), D(G(z)), img/s, FID and KID when scored)
    as TensorBoard scalars at step = epoch, and its sample grid (uint8) as an image."""
    import tensorflow as tf  # Only runs with --tensorboard need it here.
    with writer.as_default(step=row["epoch"]):
        for name, value in row.items():
            if name != "epoch":
                tf.summary.scalar(name, value)
        if grid is not None:
            grid = grid[..., None] if grid.ndim == 2 else grid  # Grayscale grids get a channel.
            tf.summary.image("samples", grid[None])
    writer.flush()  # So TensorBoard shows the epoch now, not when the buffer fills.


def format_row(row, epochs, note=""):
    """The one fixed-format line printed per epoch, `note` at its end when there is one."""
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs} | d_loss {row['d_loss']:.4f} | "
            f"g_loss {row['g_loss']:.4f} | D(x) {row['d_real']:.3f} | "
            f"D(G(z)) {row['d_fake']:.3f} | {row['images_per_sec']:.1f} img/s | "
            f"{row['seconds']:.1f} s" + (f" | p {row['augment_p']:.3f}" if "augment_p" in row else "")
            + (f" | {note}" if note else ""))


def _interactive(stream):
    """A terminal or a notebook redraws a line in place; a log file would fill with them."""
    # A notebook's stdout is ipykernel's OutStream; merely importing ipykernel is not enough.
    in_notebook = type(stream).__module__.startswith("ipykernel")
    return in_notebook or (hasattr(stream, "isatty") and stream.isatty())


def steps_per_epoch(count, batch_size):
    return math.ceil(count / batch_size)
