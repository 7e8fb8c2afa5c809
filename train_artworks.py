"""Train a DCGAN on one artist's paintings (or several) at 64x64, seed 002's setup.

What a seed is: docs/sources.md (the source descriptions the scripts follow).

Usage:
    python train_artworks.py --artist Rembrandt       # downloads the set once, then trains
    python train_artworks.py --artist Rembrandt --artist Pablo_Picasso --out-dir runs/two
    python train_artworks.py --data-dir images        # a copy you already have
    python train_artworks.py --resume                 # continue the same run
    python train_artworks.py --help                   # every flag and its default

From a notebook cell: `main(["--artist", "Rembrandt"])`.

Data: "Best Artworks of All Time", one folder per artist (Rembrandt/, Pablo_Picasso/, ...),
from --data-dir, else data/best-artworks/images, else Kaggle
(ikarus777/best-artworks-of-all-time, cached). Each painting is cut to its central square
and decoded once to 64x64. Writes samples, progress.gif, plots, history.csv,
generator.keras and checkpoints to --out-dir (default runs/artworks).
"""

import argparse
import unicodedata

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
CROP = 1.0  # A centered square of the full shorter side: paintings come in every shape.
DATA_DIR = "data/best-artworks/images"  # Used when it exists and --data-dir is not given.
KAGGLE = KaggleDataset("Best Artworks of All Time", "ikarus777/best-artworks-of-all-time",
                       version=1, size_bytes=2_400_000_000,
                       find=Folder(holding=("Rembrandt", "Pablo_Picasso")))


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train seed 002's DCGAN on one artist's paintings (64x64x3). "
                    "Seeds: docs/sources.md.")
    # The seed's learning rate is 3e-3; 2e-4 is DCGAN's. It and adaptive colour and
    # translation are measured choices on 262 paintings (BENCHMARKS.md).
    Run.add_arguments(parser, "artworks", epochs=400, batch_size=64, lr=2e-4, latent_dim=128,
                      augment="color,translation", adaptive=True, flip=True, download=True)
    parser.add_argument("--artist", action="append", default=None,
                        help="an artist folder to train on, e.g. Rembrandt or 'Pablo Picasso' "
                             "(case, spaces and accents forgiven); repeat it for several "
                             "(default: Rembrandt)")
    parser.add_argument("--seed-layers", action="store_true",
                        help="seed 002's own layers: ReLU in G and dropout 0.3 in D (the "
                             "default, DCGAN's LeakyReLU and no dropout, measured better)")
    parser.add_argument("--cache-dir", default=None,
                        help="keep the decoded 64x64 images here and reuse them in later "
                             "runs, read from disk (default: decode into memory each run)")
    return parser


# --- Data ---------------------------------------------------------------------------------


def artist_key(name):
    """How artist names are compared: 'pablo picasso' finds Pablo_Picasso, 'durer' Dürer."""
    name = unicodedata.normalize("NFKD", name)
    name = "".join(char for char in name if not unicodedata.combining(char))
    return "".join(char for char in name.casefold() if char.isalnum())


def choose_artists(folder, artists):
    """The artist folders in `folder` that `artists` name; ValueError naming the choices.
    Kaggle's zip unpacks to images/images/<artist>/, so a lone images/ inside is entered."""
    children = sorted(path for path in folder.iterdir() if path.is_dir())
    if len(children) == 1 and children[0].name == "images":
        children = sorted(path for path in children[0].iterdir() if path.is_dir())
    chosen = []
    for artist in artists:
        matches = [path for path in children if path.name == artist] or \
            [path for path in children if artist_key(path.name) == artist_key(artist)]
        if len(matches) != 1:
            names = ", ".join(path.name for path in (matches or children)) or "none"
            raise ValueError(f"--artist {artist!r} matches {len(matches)} folders in {folder}"
                             f" ({names}); give one of those names exactly")
        chosen.append(matches[0])
    return list(dict.fromkeys(chosen))


def read_images(args):
    """The chosen artists' paintings as uint8 (N, 64, 64, 3), decoded once, and where they
    came from."""
    folder, origin = resolve_data_dir(args.data_dir, DATA_DIR, KAGGLE, args.download)
    artists = choose_artists(folder, args.artist or ["Rembrandt"])
    images, source = read_image_folders(artists, crop=CROP, cache_dir=args.cache_dir,
                                        name="artworks")
    return images, {**source, **origin}


# --- Models (seed 002: Conv2DTranspose, 64 base features; its ReLU in G and dropout in D
# with --seed-layers, as they lost to DCGAN's LeakyReLU on a few hundred paintings) ------

FEATURES = 64  # Seed 002's FEATURES_GEN and FEATURES_DISC.
DROPOUT = 0.3  # Seed 002's, after each of D's layers (--seed-layers).


def batch_norm():
    # Momentum 0.9 lets the moving statistics the sample grids use keep up early on. When
    # devices split the batch, the statistics are still the whole batch's (synchronized).
    several = tf.distribute.get_strategy().num_replicas_in_sync > 1
    return layers.BatchNormalization(momentum=0.9, synchronized=several)


def make_generator(latent_dim=128, seed_layers=False):
    def activation():
        return layers.ReLU() if seed_layers else layers.LeakyReLU(SLOPE)

    def up(filters):  # Doubles height and width.
        return [layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False),
                batch_norm(), activation()]

    return keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Reshape((1, 1, latent_dim)),                             # 1x1xlatent
        layers.Conv2DTranspose(FEATURES * 8, 4, padding="valid", use_bias=False),
        batch_norm(),
        activation(),                                                   # 4x4x512
        *up(FEATURES * 4),                                              # 8x8x256
        *up(FEATURES * 2),                                              # 16x16x128
        *up(FEATURES),                                                  # 32x32x64
        # The output layer computes in float32 under mixed precision, like D's logit.
        layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh",
                               dtype="float32"),
    ], name="generator")                                                # 64x64x3 in [-1, 1]


def make_discriminator(seed_layers=False):
    def down(filters, normalize=True):  # Halves height and width.
        return [layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=not normalize),
                *([batch_norm()] if normalize else []),
                layers.LeakyReLU(SLOPE),
                *([layers.Dropout(DROPOUT)] if seed_layers else [])]

    return keras.Sequential([
        keras.Input((64, 64, 3)),
        *down(FEATURES, normalize=False),  # No BatchNorm on the input layer.  32x32x64
        *down(FEATURES * 2),                                            # 16x16x128
        *down(FEATURES * 4),                                            # 8x8x256
        *down(FEATURES * 8),                                            # 4x4x512
        layers.Conv2D(1, 4, padding="valid", dtype="float32"),          # 1x1x1
        layers.Flatten(dtype="float32"),                                # one logit: "real"
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
        generator = make_generator(args.latent_dim, args.seed_layers)
        discriminator = make_discriminator(args.seed_layers)
    # Both Adams, the generator's moving average and the checkpoint, restored on --resume.
    step = run.setup(train_step, generator, discriminator,
                     lambda count, seed: sample_noise(count, args.latent_dim, seed))

    for epoch in run.epochs():  # After the last finished epoch, up to --epochs.
        for real, noise in run.batches(images, flip=args.flip):
            run.log(step(real, noise))
        run.end_epoch()  # Samples, GIF, history, plots; checkpoint and generator on a clock.


if __name__ == "__main__":
    main()
