"""Train a DCGAN on Fashion-MNIST (28x28 grayscale clothing), seed 004's exact models.

What a seed is: docs/sources.md (the source descriptions the scripts follow).

Usage:
    python train_fashion_mnist.py --epochs 50
    python train_fashion_mnist.py --epochs 80 --resume       # continue the same run
    python train_fashion_mnist.py --help                     # every flag and its default

From a notebook cell: `main(["--epochs", "5"])`.

Data, first that works: --data-dir (a folder with the idx .gz files), Debian's
`dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist, Keras' download (once,
cached in ~/.keras/datasets). Writes samples, progress.gif, plots, history.csv,
generator.keras and checkpoints to --out-dir (default runs/fashion_mnist).
"""

import argparse
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

try:
    from common.idx import read_idx_images
    from common.losses import discriminator_loss, generator_loss, step_metrics
    from common.run import Run
except ModuleNotFoundError as error:  # A script pasted alone into a notebook.
    if error.name != "common":
        raise
    raise SystemExit("error: this script needs the common/ folder beside it: clone the "
                     "repository and run it from there (see the README's Colab cells)") from None

SLOPE = 0.2  # LeakyReLU slope of the DCGAN paper (Keras 3's default is 0.3).
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train seed 004's DCGAN on Fashion-MNIST (28x28x1). Seeds: docs/sources.md.")
    # Adam at 8e-4, 4x DCGAN's 2e-4: closer to held-out images at 1, 2 and 4 epochs over 3
    # seeds (BENCHMARKS.md, "Quality per step"); --lr 2e-4 brings seed 001's back.
    Run.add_arguments(parser, "fashion_mnist", epochs=50, batch_size=128, lr=8e-4,
                      latent_dim=128, augment="none")
    return parser


# --- Data ---------------------------------------------------------------------------------


def read_images(args):
    """The 60,000 training images as uint8 (N, 28, 28, 1), and where they came from."""
    if args.data_dir is not None:
        folder = Path(args.data_dir)
        if not folder.is_dir():
            state = "is a file" if folder.exists() else "does not exist"
            raise ValueError(f"--data-dir {folder} {state}; point it at a folder holding "
                             f"{TRAIN_IMAGES}")
        path = next((folder / name for name in (TRAIN_IMAGES, TRAIN_IMAGES[:-3])
                     if (folder / name).is_file()), None)
        if path is None:
            raise ValueError(f"--data-dir {folder} has no {TRAIN_IMAGES}; it should hold the "
                             f"Fashion-MNIST idx files")
    elif Path(DEBIAN_DIR, TRAIN_IMAGES).is_file():
        path = Path(DEBIAN_DIR, TRAIN_IMAGES)
    else:
        try:  # The file keras.datasets.fashion_mnist downloads, into the same cache.
            path = keras.utils.get_file(TRAIN_IMAGES, KERAS_ORIGIN + TRAIN_IMAGES,
                                        cache_subdir="datasets/fashion-mnist")
        except Exception as error:  # No internet, a proxy, a broken cache: all end alike.
            raise ValueError(
                f"found no Fashion-MNIST: no --data-dir given, {DEBIAN_DIR} is missing, and "
                f"Keras' download failed ({type(error).__name__}). Either pass --data-dir with "
                f"the idx .gz files, or `apt-get install dataset-fashion-mnist` "
                f"(Debian/Ubuntu), or connect to the internet") from None
    return read_idx_images(path), {"idx": str(path), "description": f"data: {path}"}


# --- Models (seed 004, to the parameter) --------------------------------------------------


def batch_norm():
    # When devices split the batch (models are built inside the strategy's scope), the
    # statistics are still the whole batch's (synchronized), so the model trains the same
    # on one device or several; one device needs no synchronizing.
    several = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return layers.BatchNormalization(synchronized=several)


def make_generator(latent_dim=128):
    return keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(7 * 7 * 256),
        layers.LeakyReLU(SLOPE),
        layers.Reshape((7, 7, 256)),                            # 7x7x256
        layers.UpSampling2D(),
        layers.Conv2D(256, 3, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),                                # 14x14x256
        layers.UpSampling2D(),
        layers.Conv2D(128, 3, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),                                # 28x28x128
        layers.Conv2D(64, 3, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),                                # 28x28x64
        # The output layer computes in float32 under mixed precision, like D's logit.
        layers.Conv2D(1, 3, padding="same", activation="tanh", dtype="float32"),  # 28x28x1
    ], name="generator")


def make_discriminator():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, strides=2, padding="same"),
        layers.LeakyReLU(SLOPE),
        layers.Dropout(0.25),                                   # 14x14x32
        layers.Conv2D(64, 3, strides=2, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),
        layers.Dropout(0.25),                                   # 7x7x64
        layers.Conv2D(128, 3, strides=2, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),
        layers.Dropout(0.25),                                   # 4x4x128
        layers.Conv2D(256, 3, strides=1, padding="same"),
        batch_norm(),
        layers.LeakyReLU(SLOPE),
        layers.Dropout(0.25),                                   # 4x4x256
        layers.Flatten(),
        layers.Dense(1, dtype="float32"),                       # one logit: "real"
    ], name="discriminator")


def sample_noise(count, latent_dim, seed):
    """Standard-normal generator input; `seed` is a pair of integers (stateless random, so
    the input pipeline can draw it)."""
    return tf.random.stateless_normal([count, latent_dim], seed)


# --- Training -----------------------------------------------------------------------------


# Compiled in one place, run.setup (tf.function, with XLA under --jit), into a call that
# also updates the generator's moving average and --augment-adaptive's p after the step.
def train_step(real, noise, generator, discriminator, generator_optimizer,
               discriminator_optimizer, augment):
    """One step on this device's share of the batch; `augment` is --augment's transform of
    every image D sees (the identity without it)."""
    # Generate once: both updates use these images, as pytorch/examples' DCGAN does.
    with tf.GradientTape() as generator_tape:
        fake = generator(noise, training=True)

    # Update D: score real images as real and generated ones as fake.
    with tf.GradientTape() as tape:
        real_logits = discriminator(augment(real), training=True)
        fake_logits = discriminator(augment(fake), training=True)
        d_loss = discriminator_loss(real_logits, fake_logits)
        scaled_loss = discriminator_optimizer.scale_loss(d_loss)  # Scaled only for float16.
    gradients = tape.gradient(scaled_loss, discriminator.trainable_variables)
    discriminator_optimizer.apply_gradients(zip(gradients, discriminator.trainable_variables))

    # Update G: make the just-updated D score the same generated images as real.
    with generator_tape:  # Carries on recording from the generator's forward pass.
        g_loss = generator_loss(discriminator(augment(fake), training=True))
        scaled_loss = generator_optimizer.scale_loss(g_loss)
    gradients = generator_tape.gradient(scaled_loss, generator.trainable_variables)
    generator_optimizer.apply_gradients(zip(gradients, generator.trainable_variables))
    return step_metrics(d_loss, g_loss, real_logits, fake_logits)


def main(argv=None):
    # Checks every flag and the out-dir, and picks the devices, precision and XLA.
    run = Run(build_parser(), argv)
    args = run.args
    images = run.load_images(read_images, args)  # One line, not a traceback, on bad data.
    with run.scope():  # Variables on every device of the strategy, layers in its precision.
        generator = make_generator(args.latent_dim)
        discriminator = make_discriminator()
    # Both Adams, the generator's moving average and the checkpoint, restored on --resume.
    step = run.setup(train_step, generator, discriminator,
                     lambda count, seed: sample_noise(count, args.latent_dim, seed))

    for epoch in run.epochs():  # After the last finished epoch, up to --epochs.
        for real, noise in run.batches(images):
            run.log(step(real, noise))
        run.end_epoch()  # Samples, GIF, history, plots; checkpoint and generator on a clock.


if __name__ == "__main__":
    main()
