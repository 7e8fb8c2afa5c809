"""Draw docs/tensorboard_scalars.png from a run's TensorBoard event files.

    python docs/tensorboard_picture.py runs/fashion_mnist/tensorboard docs/tensorboard_scalars.png

The values are read with TensorBoard's own event reader, the ones TensorBoard plots; the
picture stands in for a screenshot on a machine without a browser.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def main(folder, out):
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    names = ["d_loss", "g_loss", "d_real", "d_fake", "images_per_sec"]
    grids = events.Tensors("samples")
    figure, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    for axis, name in zip(axes, names):
        logged = events.Tensors(name)
        axis.plot([event.step for event in logged],
                  [float(tf.make_ndarray(event.tensor_proto)) for event in logged], marker="o")
        axis.set(title=name, xlabel="epoch")
        axis.grid(alpha=0.3)
    image = tf.io.decode_png(tf.make_ndarray(grids[-1].tensor_proto)[2]).numpy()
    axes[-1].imshow(image[..., 0], cmap="gray")
    axes[-1].set(title=f"samples, epoch {grids[-1].step}")
    axes[-1].axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:])
