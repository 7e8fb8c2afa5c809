"""Train a DCGAN on CelebA faces at 64x64, seed 003's setup (with seed 001's Adam settings).

Usage:
    python train_faces.py --data-dir data/img_align_celeba --epochs 20
    python train_faces.py --data-dir data/img_align_celeba --resume   # continue the same run
    python train_faces.py --help                                      # every flag and default

From a notebook cell: `main(["--data-dir", "img_align_celeba", "--epochs", "5"])`.

Data: CelebA's img_align_celeba/ folder as it ships (202,599 jpg of 178x218), searched
recursively. Each face is cut to the central 140x140 square and decoded once to 64x64 (in
memory, or under --cache-dir). Writes samples, progress.gif, plots, history.csv,
generator.keras and checkpoints to --out-dir (default runs/faces).
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from common.devices import (choose_jit, choose_policy, choose_strategy, describe, is_chief,
                            portable_copy, set_policy)
from common.ema import copy_weights, restore, update_average
from common.images import IMAGE_EXTENSIONS, describe_skipped, find_images, load_images
from common.losses import discriminator_loss, generator_loss, global_batch_size, mean_probability
from common.noise import with_noise
from common.optimizers import make_adam
from common.plotting import plot_d_probs, plot_losses, plot_quality, save_image_grid, write_gif
from common.progress import EpochLog, steps_per_epoch, write_tensorboard
from common.quality import make_meter
from common.run import (StopOnInterrupt, add_common_arguments, atomic_write, clear_run,
                        disk_errors_exit, latest_checkpoint, load_args, merge_resumed_args,
                        parse_args, prepare_out_dir, read_history, sample_path, sample_paths,
                        save_args, write_history)

IMAGE_SIZE = 64
SAMPLE_COUNT = 64  # Images in each sample grid (8x8), drawn from one fixed noise batch.
SLOPE = 0.2  # LeakyReLU slope of the DCGAN paper (Keras 3's default is 0.3).
DOWNLOAD = ("CelebA's img_align_celeba.zip from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
            "(or Kaggle's jessicali9530/celeba-dataset) and unzip it")
# CelebA's aligned faces are 178x218 with the face in the middle. The central 140x140
# square (a side of 140/178 of the width) keeps the face and drops most background: the
# crop widely used for 64x64 CelebA GANs. A fraction, so half-size copies crop the same.
CROP = 140 / 178


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train seed 003's DCGAN on CelebA faces (64x64x3).")
    add_common_arguments(parser, "faces", epochs=20, batch_size=128, lr=2e-4, latent_dim=100)
    parser.set_defaults(data_dir="data/img_align_celeba")
    parser.add_argument("--noise", choices=("uniform", "normal"), default="uniform",
                        help="distribution of the generator's input: uniform in [-1, 1] as "
                             "seed 003 draws it, or standard normal (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None,
                        help="keep the decoded 64x64 images here and reuse them in later "
                             "runs, read from disk (default: decode into memory each run)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                        help="flip each image left-right at random (default: %(default)s)")
    return parser


# --- Data ---------------------------------------------------------------------------------


def read_images(data_dir, cache_dir=None):
    """Every readable image under `data_dir` as uint8 (N, 64, 64, 3), decoded once."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"--data-dir {folder} does not exist; download {DOWNLOAD} and "
                         f"point --data-dir at it")
    paths = find_images(folder)
    pixels, skipped, where = load_images(paths, IMAGE_SIZE, crop=CROP, cache_dir=cache_dir,
                                         root=folder, name="faces")
    if len(pixels) == 0:
        raise ValueError(f"--data-dir {folder} has no readable images "
                         f"({len(paths)} files with the extensions {' '.join(IMAGE_EXTENSIONS)}"
                         f"); point it at CelebA's img_align_celeba/")
    return pixels, skipped, f"{folder} ({where})"


def load_dataset(pixels, batch_size, seed, flip, latent_dim, noise):
    """Shuffled (images in [-1, 1], noise) batches from the decoded uint8 pixels.

    Nothing is decoded again: the data set holds only indices, and each batch gathers its
    rows from the uint8 array (or its memory map on disk), so no float32 copy of the whole
    set exists. The generator's noise comes with each batch (see common/noise.py).
    """
    def gather(indices):
        return pixels[np.sort(indices)]  # Sorted reads are kinder to a memory map on disk.

    def to_float(batch):
        batch = tf.ensure_shape(batch, (None, IMAGE_SIZE, IMAGE_SIZE, 3))
        batch = tf.cast(batch, tf.float32) / 127.5 - 1.0
        return tf.image.random_flip_left_right(batch, seed=seed) if flip else batch

    return (
        tf.data.Dataset.range(len(pixels))
        .shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)  # The last batch may be smaller; train_step handles it.
        .map(lambda indices: tf.numpy_function(gather, [indices], tf.uint8),
             num_parallel_calls=tf.data.AUTOTUNE)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()  # Endless: main() takes each epoch's batches from one iterator.
        .apply(lambda batches: with_noise(
            batches, lambda count, size, pair: sample_noise(count, size, pair, noise),
            latent_dim, seed))
        .prefetch(tf.data.AUTOTUNE)
    )


# --- Models (seed 003: Dense + Conv2DTranspose, BatchNorm, LeakyReLU, tanh) ---------------


def batch_norm():
    # Momentum 0.9 lets the moving statistics the sample grids use keep up early on. When
    # devices split the batch (models are built inside the strategy's scope), the
    # statistics are still the whole batch's (synchronized), so the model trains the same
    # on one device or several; one device needs no synchronizing.
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
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
        *down(64, normalize=False),  # No BatchNorm on the input layer, as in DCGAN.  32x32x64
        *down(128),                                                     # 16x16x128
        *down(256),                                                     # 8x8x256
        *down(512),                                                     # 4x4x512
        layers.Flatten(),
        layers.Dense(1, dtype="float32"),                               # one logit: "real"
    ], name="discriminator")


def sample_noise(count, latent_dim, seed, distribution="uniform"):
    """Generator input, uniform in [-1, 1] or standard normal; `seed` is a pair of integers
    (stateless random)."""
    if distribution == "uniform":
        return tf.random.stateless_uniform([count, latent_dim], seed, -1.0, 1.0)
    return tf.random.stateless_normal([count, latent_dim], seed)


# --- Training -----------------------------------------------------------------------------


def train_step(real, noise, generator, discriminator, generator_optimizer,
               discriminator_optimizer):
    """One step on this device's share of the batch. main() compiles it with tf.function
    and runs it on every device of the strategy (just one, unless --strategy says more)."""
    # Losses are divided by the whole step's image count, not this device's share, so the
    # gradients the devices add up are those of the whole batch's mean loss. It comes
    # from the data, so the last, smaller batch of an epoch works too.
    batch_size = global_batch_size(real)

    # Generate once: both updates use these images, as pytorch/examples' DCGAN does.
    with tf.GradientTape() as generator_tape:
        fake = generator(noise, training=True)

    # Update D: score real images as real and generated ones as fake.
    with tf.GradientTape() as tape:
        real_logits = discriminator(real, training=True)
        fake_logits = discriminator(fake, training=True)
        d_loss = discriminator_loss(real_logits, fake_logits, batch_size)
        scaled_loss = discriminator_optimizer.scale_loss(d_loss)  # Scaled only for float16.
    gradients = tape.gradient(scaled_loss, discriminator.trainable_variables)
    discriminator_optimizer.apply_gradients(zip(gradients, discriminator.trainable_variables))

    # Update G: make the just-updated D score the same generated images as real.
    with generator_tape:  # Carries on recording from the generator's forward pass.
        g_loss = generator_loss(discriminator(fake, training=True), batch_size)
        scaled_loss = generator_optimizer.scale_loss(g_loss)
    gradients = generator_tape.gradient(scaled_loss, generator.trainable_variables)
    generator_optimizer.apply_gradients(zip(gradients, generator.trainable_variables))

    images = tf.cast(tf.shape(real)[0], tf.float32)
    return tf.stack([d_loss, g_loss, mean_probability(real_logits, batch_size),
                     mean_probability(fake_logits, batch_size), images])


def main(argv=None):
    args, explicit = parse_args(build_parser(), argv)
    out_dir = Path(args.out_dir)
    try:
        # The strategy comes first: a multi-worker one must exist before TensorFlow starts.
        strategy = choose_strategy(args.strategy)
        chief = is_chief(strategy)  # Only the chief writes the run's files.
        policy, jit = choose_policy(args.precision), choose_jit(args.jit, strategy)
        resuming = prepare_out_dir(out_dir, args.resume or bool(args.resume_from),
                                   args.overwrite, writer=chief)
        if resuming:
            args = merge_resumed_args(args, explicit, load_args(out_dir),
                                      fixed=("latent_dim", "noise"))
        images, skipped, source = read_images(args.data_dir, args.cache_dir)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{len(images)} training images from {source}")
    if skipped:
        print(describe_skipped(skipped, len(images) + len(skipped)))
    if args.overwrite and chief:
        clear_run(out_dir)
    print(describe(strategy, policy, jit))

    keras.utils.set_random_seed(args.seed)
    set_policy(policy)  # The models below compute in this precision.
    with strategy.scope():  # Variables made here are mirrored on every device.
        generator = make_generator(args.latent_dim)
        discriminator = make_discriminator()
        # --ema: a moving average of G's weights that never trains (common/ema.py). It
        # draws the samples and is the generator.keras a run leaves.
        ema_generator = make_generator(args.latent_dim) if args.ema else None
        generator_optimizer = make_adam(args.lr, policy)
        discriminator_optimizer = make_adam(args.lr, policy)
        # Build the optimizers' slots now, inside the scope: a checkpoint can restore into
        # them, and tf.distribute needs them made before the first step.
        generator_optimizer.build(generator.trainable_variables)
        discriminator_optimizer.build(discriminator.trainable_variables)
    # Everything --resume needs besides: finished epochs, and the fixed noise behind the
    # sample grids (so the GIF shows the same 64 faces throughout).
    epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    fixed_noise = tf.Variable(
        sample_noise(SAMPLE_COUNT, args.latent_dim, [args.seed, 0], args.noise), trainable=False)
    checkpoint = tf.train.Checkpoint(
        generator=generator, discriminator=discriminator,
        generator_optimizer=generator_optimizer, discriminator_optimizer=discriminator_optimizer,
        epochs_done=epochs_done, fixed_noise=fixed_noise)
    if args.ema:
        copy_weights(ema_generator, generator)  # The average starts where G starts.
        checkpoint.ema_generator = ema_generator
    sampler = ema_generator if args.ema else generator  # Draws every sample a user sees.
    # Every worker takes part in a save; the chief's is the run's, the others' are scratch.
    checkpoint_dir = out_dir / "checkpoints" if chief else Path(tempfile.mkdtemp())
    try:  # --resume-from: later checkpoints and samples are moved aside, not deleted.
        latest = latest_checkpoint(out_dir, args.resume_from if chief else None)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=args.keep_checkpoints)
    if resuming and latest:
        restore(checkpoint, latest, ema_generator, generator)
        for optimizer in (generator_optimizer, discriminator_optimizer):
            optimizer.learning_rate.assign(args.lr)  # A resumed run may lower --lr.
        print(f"resuming {out_dir} after epoch {int(epochs_done)}")
    history = read_history(out_dir, int(epochs_done))
    if chief:
        save_args(out_dir, args)
    # --eval-every: FID and KID of the samples against the real images (None when off, or
    # when InceptionV3's weights cannot be had: then it says so once and training goes on).
    meter = (make_meter(images, args.eval_count, out_dir / "inception_real.npz",
                        args.inception_weights, args.seed)
             if args.eval_every and chief else None)
    board = (tf.summary.create_file_writer(str(out_dir / "tensorboard"))
             if args.tensorboard and chief else None)

    # One compiled call per step: each device runs train_step on its share of the batch
    # (compiled by XLA per device when jit is on), and the metrics, each device's share
    # of the batch means, are summed.
    replica_step = tf.function(train_step, jit_compile=jit, reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def distributed_step(real, noise):
        metrics = strategy.run(replica_step, args=(real, noise, generator, discriminator,
                                                   generator_optimizer, discriminator_optimizer))
        if args.ema:  # Fixed when traced: without an average this step has no extra work.
            update_average(ema_generator, generator, args.ema, generator_optimizer.iterations)
        return strategy.reduce("SUM", metrics, axis=None)

    # The data's shuffles and noise are seeded by the finished epochs too, so a resumed
    # run goes on with new batches instead of replaying epoch 1's.
    data_seed = args.seed + 7919 * int(epochs_done)
    dataset = strategy.experimental_distribute_dataset(
        load_dataset(images, args.batch_size, data_seed, args.flip, args.latent_dim,
                     args.noise))
    # One iterator for the whole run: the data set repeats, an epoch is `steps` batches
    # (the last one smaller), and no epoch waits for a new iterator to start.
    batches = iter(dataset)
    steps = steps_per_epoch(len(images), args.batch_size)
    steps_taken = 0
    with StopOnInterrupt() as interrupt:
        for epoch in range(int(epochs_done) + 1, args.epochs + 1):
            log = EpochLog(epoch, args.epochs, steps, int(generator_optimizer.iterations.numpy()) + 1)
            try:
                for _ in range(steps):
                    real, noise = next(batches)
                    log.add(distributed_step(real, noise))
                    steps_taken += 1
                    if interrupt.requested or steps_taken == args.max_steps:
                        break
                log.flush()  # Raises at a non-finite loss before anything is saved.
            except FloatingPointError as error:
                raise SystemExit(
                    f"error: {error}. Kept the last good checkpoint "
                    f"({manager.latest_checkpoint or 'none yet'}); continue from it with "
                    f"--resume, perhaps with a lower --lr") from None
            if interrupt.requested:
                # Mid-epoch: epochs_done still counts finished epochs, so --resume runs
                # this epoch again from these weights.
                with disk_errors_exit(out_dir, manager):
                    path = manager.save(
                        checkpoint_number=int(generator_optimizer.iterations.numpy()))
                print(f"saved {path}; continue with --resume --out-dir {out_dir}")
                raise SystemExit(130)

            # Close the epoch. The checkpoint comes last, so it always describes an epoch
            # whose outputs are all on disk; a kill before it just repeats the epoch.
            row = log.summary()
            stopping = epoch == args.epochs or steps_taken == args.max_steps
            if meter and (epoch % args.eval_every == 0 or stopping):
                row.update(meter.score(sampler, lambda count, seed: sample_noise(
                    count, args.latent_dim, seed, args.noise)))
            history.append(row)
            # A full disk or a lost folder stops the run with one line; every file is
            # written atomically, so the last good epoch's files are kept.
            with disk_errors_exit(out_dir, manager):
                grid = None
                if chief and (epoch % args.sample_every == 0 or stopping):
                    grid = save_image_grid(sampler(fixed_noise, training=False),
                                           sample_path(out_dir, epoch))
                    write_gif(sample_paths(out_dir, epoch), out_dir / "progress.gif")
                if chief:
                    write_history(out_dir, history)
                    plot_losses(history, out_dir / "losses.png")
                    plot_d_probs(history, out_dir / "d_probs.png")
                    if meter:
                        plot_quality(history, out_dir / "quality.png")
                    if board:
                        write_tensorboard(board, row, grid)
                    atomic_write(out_dir / "generator.keras", portable_copy(sampler).save)
                epochs_done.assign(epoch)
                manager.save(checkpoint_number=int(generator_optimizer.iterations.numpy()))
            if steps_taken == args.max_steps:
                print(f"stopped after --max-steps {args.max_steps}")
                break
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    print(f"done: {out_dir}")


if __name__ == "__main__":
    main()
