"""Train a DCGAN on CelebA faces at 64x64, seed 003's setup (with seed 001's Adam settings).

What a seed is: docs/sources.md (the source descriptions the scripts follow).

Usage:
    python train_faces.py --epochs 20                  # downloads CelebA once, then trains
    python train_faces.py --data-dir img_align_celeba  # a copy you already have
    python train_faces.py --resume                     # continue the same run
    python train_faces.py --help                       # every flag and its default

From a notebook cell: `main(["--epochs", "5"])`.

Data: CelebA's aligned faces (202,599 jpg of 178x218), from --data-dir, else
data/img_align_celeba, else Kaggle (jessicali9530/celeba-dataset, 1.4 GB, cached). Each
face is cut to its central 140x140 square and decoded once to 64x64. Writes samples,
progress.gif, plots, history.csv, generator.keras and checkpoints to --out-dir
(default runs/faces).
"""

import argparse

import keras
import tensorflow as tf
from keras import layers

try:
    from common.download import Folder, KaggleDataset, resolve_data_dir
    from common.image_data import read_image_folders
    from common.losses import discriminator_loss, generator_loss, step_metrics
    from common.run import Run
except ModuleNotFoundError as error:  # A script pasted alone into a notebook.
    if error.name != "common":
        raise
    raise SystemExit("error: this script needs the common/ folder beside it: clone the "
                     "repository and run it from there (see the README's Colab cells)") from None

SLOPE = 0.2  # LeakyReLU slope of the DCGAN paper (Keras 3's default is 0.3).
# CelebA's aligned faces are 178x218 with the face in the middle. The central 140x140
# square keeps the face and drops most background: the crop widely used for 64x64 CelebA
# GANs. A fraction of the width, so half-size copies crop the same.
CROP = 140 / 178
DATA_DIR = "data/img_align_celeba"  # Used when it exists and --data-dir is not given.
KAGGLE = KaggleDataset("CelebA", "jessicali9530/celeba-dataset", version=2,
                       size_bytes=1_430_000_000,
                       find=Folder(named="img_align_celeba", images=True))


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train seed 003's DCGAN on CelebA faces (64x64x3). Seeds: docs/sources.md.")
    Run.add_arguments(parser, "faces", epochs=20, batch_size=128, lr=2e-4, latent_dim=100,
                     augment="none", flip=False, download=True)
    parser.add_argument("--noise", choices=("uniform", "normal"), default="uniform",
                        help="distribution of the generator's input: uniform in [-1, 1] as "
                             "seed 003 draws it, or standard normal (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None,
                        help="keep the decoded 64x64 images here and reuse them in later "
                             "runs, read from disk (default: decode into memory each run)")
    return parser


# --- Data ---------------------------------------------------------------------------------


def read_images(args):
    """The faces as uint8 (N, 64, 64, 3), decoded once, and where they came from."""
    folder, origin = resolve_data_dir(args.data_dir, DATA_DIR, KAGGLE, args.download)
    images, source = read_image_folders([folder], crop=CROP, cache_dir=args.cache_dir,
                                        name="faces")
    return images, {**source, **origin}


# --- Models (seed 003: Dense + Conv2DTranspose, BatchNorm, LeakyReLU, tanh) ---------------


def batch_norm():
    # Momentum 0.9 lets the moving statistics the sample grids use keep up early on. When
    # devices split the batch, the statistics are still the whole batch's (synchronized).
    several = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return layers.BatchNormalization(momentum=0.9, synchronized=several)


def make_generator(latent_dim=100):
    def up(filters):  # Doubles height and width.
        return [layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False),
                batch_norm(), layers.LeakyReLU(SLOPE)]

    return keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(4 * 4 * 512, use_bias=False),
        batch_norm(),
        layers.LeakyReLU(SLOPE),
        layers.Reshape((4, 4, 512)),                                    # 4x4x512
        *up(256),                                                       # 8x8x256
        *up(128),                                                       # 16x16x128
        *up(64),                                                        # 32x32x64
        # The output layer computes in float32 under mixed precision, like D's logit.
        layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh",
                               dtype="float32"),
    ], name="generator")                                                # 64x64x3 in [-1, 1]


def make_discriminator():
    def down(filters, normalize=True):  # Halves height and width.
        return [layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=not normalize),
                *([batch_norm()] if normalize else []),
                layers.LeakyReLU(SLOPE)]

    return keras.Sequential([
        keras.Input((64, 64, 3)),
        *down(64, normalize=False),  # No BatchNorm on the input layer, as in DCGAN.  32x32x64
        *down(128),                                                     # 16x16x128
        *down(256),                                                     # 8x8x256
        *down(512),                                                     # 4x4x512
        layers.Flatten(),
        layers.Dense(1, dtype="float32"),                               # one logit: "real"
    ], name="discriminator")


def sample_noise(count, latent_dim, seed, distribution="uniform"):
    """Generator input, uniform in [-1, 1] or standard normal; `seed` is a pair of integers
    (stateless random, so the input pipeline can draw it)."""
    if distribution == "uniform":
        return tf.random.stateless_uniform([count, latent_dim], seed, -1.0, 1.0)
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
                     lambda count, seed: sample_noise(count, args.latent_dim, seed, args.noise))

    for epoch in run.epochs():  # After the last finished epoch, up to --epochs.
        for real, noise in run.batches(images, flip=args.flip):
            run.log(step(real, noise))
        run.end_epoch()  # Samples, GIF, history, plots; checkpoint and generator on a clock.


if __name__ == "__main__":
    main()
