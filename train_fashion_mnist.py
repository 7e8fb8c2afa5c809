"""Train a DCGAN on Fashion-MNIST (28x28 grayscale clothing), seed 004's exact models.

Usage:
    python train_fashion_mnist.py --epochs 50
    python train_fashion_mnist.py --epochs 80 --resume       # continue the same run
    python train_fashion_mnist.py --help                     # every flag and its default

From a notebook cell: `main(["--epochs", "5"])`.

Data, first that works: --data-dir (a folder with the idx .gz files), Debian's
`dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist, Keras' download.
Writes samples, progress.gif, plots, history.csv, generator.keras and checkpoints to
--out-dir (default runs/fashion_mnist).
"""

import argparse
import gzip
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from common.devices import (choose_jit, choose_policy, choose_strategy, describe, is_chief,
                            portable_copy, set_policy)
from common.ema import copy_weights, restore, update_average
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

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SAMPLE_COUNT = 64  # Images in each sample grid (8x8), drawn from one fixed noise batch.
SLOPE = 0.2  # LeakyReLU slope of the DCGAN paper (Keras 3's default is 0.3).


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train seed 004's DCGAN on Fashion-MNIST (28x28x1).")
    add_common_arguments(parser, "fashion_mnist", epochs=50, batch_size=128, lr=2e-4,
                         latent_dim=128)
    return parser


# --- Data ---------------------------------------------------------------------------------


def read_idx_images(path):
    """Read an idx3 image file (gzip or plain) into a uint8 array (N, 28, 28, 1)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"cannot read {path} ({error}); download it again") from None
    if len(raw) < 16:
        raise ValueError(f"{path} is truncated ({len(raw)} bytes); download it again")
    magic, count, rows, columns = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{path} is not an idx image file (magic number {magic}, expected "
                         f"2051); point --data-dir at the Fashion-MNIST files")
    if len(raw) != 16 + count * rows * columns:
        raise ValueError(f"{path} is truncated: its header promises {count} images of "
                         f"{rows}x{columns} but it holds {len(raw) - 16} bytes of pixels; "
                         f"download it again")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows, columns, 1)


def find_train_images(folder):
    """The train-images file in `folder`, gzipped or not; ValueError naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--data-dir {folder} does not exist; point it at a folder holding "
                         f"{', '.join(IDX_FILES)}")
    for name in (TRAIN_IMAGES + ".gz", TRAIN_IMAGES):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"--data-dir {folder} has no {TRAIN_IMAGES}.gz; it should hold the "
                     f"Fashion-MNIST files {', '.join(IDX_FILES)}")


def read_train_images(data_dir=None):
    """The 60,000 training images as uint8 (N, 28, 28, 1), and where they came from."""
    if data_dir is not None:
        path = find_train_images(data_dir)
        return read_idx_images(path), str(path)
    if Path(DEBIAN_DIR, TRAIN_IMAGES + ".gz").is_file():
        path = Path(DEBIAN_DIR, TRAIN_IMAGES + ".gz")
        return read_idx_images(path), str(path)
    try:
        (images, _), _ = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # No internet, a proxy, a broken cache: all end the same way.
        raise ValueError(
            f"found no Fashion-MNIST: no --data-dir given, {DEBIAN_DIR} is missing, and "
            f"Keras' download failed ({type(error).__name__}). Either pass --data-dir with "
            f"the four idx .gz files, or `apt-get install dataset-fashion-mnist` "
            f"(Debian/Ubuntu), or connect to the internet") from None
    return images[..., np.newaxis], "keras.datasets.fashion_mnist"


def load_dataset(images, batch_size, seed, latent_dim):
    """Shuffled (images in [-1, 1], noise) batches: uint8 stays in memory, each batch is
    scaled on the fly; the generator's noise comes with it (see common/noise.py)."""
    return (
        tf.data.Dataset.from_tensor_slices(images)
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)  # The last batch may be smaller; train_step handles it.
        .map(lambda batch: tf.cast(batch, tf.float32) / 127.5 - 1.0,
             num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()  # Endless: main() takes each epoch's batches from one iterator.
        .apply(lambda batches: with_noise(batches, sample_noise, latent_dim, seed))
        .prefetch(tf.data.AUTOTUNE)
    )


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
    """Standard-normal generator input; `seed` is a pair of integers (stateless random)."""
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
            args = merge_resumed_args(args, explicit, load_args(out_dir))
        images, source = read_train_images(args.data_dir)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{len(images)} training images from {source}")
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
    # sample grids (so the GIF shows the same 64 faces of the model throughout).
    epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    fixed_noise = tf.Variable(sample_noise(SAMPLE_COUNT, args.latent_dim, [args.seed, 0]),
                              trainable=False)
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
        load_dataset(images, args.batch_size, data_seed, args.latent_dim))
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
                    count, args.latent_dim, seed)))
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
