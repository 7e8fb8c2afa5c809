"""The run helper: everything around a training loop that is not the GAN itself.

A script keeps its data, its models, its `train_step` and its loop, and calls `Run` at a
few points whose names say what they do (in the spirit of Lightning Fabric and Hugging
Face Accelerate):

    run = Run(build_parser(), argv)           # flags, devices, precision, the out-dir
    images = run.load_images(read_images, args)
    with run.scope():                         # models on the chosen devices and precision
        generator, discriminator = make_generator(...), make_discriminator()
    step = run.setup(train_step, generator, discriminator, noise)   # optimizers, resume
    for epoch in run.epochs():
        for real, noise in run.batches(images):
            run.log(step(real, noise))
        run.end_epoch()                       # samples, GIF, history, plots, checkpoint

What it owns: the tf.distribute strategy, mixed precision and XLA (common/devices.py);
the out-dir and its lock, --resume, --resume-from and --overwrite (common/rundir.py,
common/files.py, common/checkpoints.py);
the checkpoint (both models, both optimizers, the generator's moving average, the
augmentation strength, finished epochs, the fixed noise behind the sample grids); Ctrl-C
and NaN stops; what is written as an epoch closes; and the health check that warns when
training goes wrong (common/health.py). Every user error ends in one line
`error: ...` and a non-zero exit, before anything of an earlier run is changed.
"""

import itertools
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from common.augment import AdaptiveProbability, augment, parse_policy, step_seed
from common.checkpoints import (disk_errors_exit, epochs_of_checkpoints, prune_checkpoints,
                                relist_checkpoints, resume_point, roll_back)
from common.devices import (choose_jit, choose_policy, choose_strategy, describe, is_chief,
                            portable_copy, set_policy)
from common.ema import copy_weights, restore, update_average
from common.errors import exit_with, user_errors
from common.files import (SAMPLE_PATTERN, atomic_write, load_args, read_history, sample_path,
                          sample_paths, save_args, write_history)
from common.flags import FIXED, add_common_arguments, merge_resumed_args, parse_args
from common.gif import ProgressGif
from common.health import advice, check, diversity, onsets, past_warnings, real_spread
from common.image_data import image_batches
from common.initialization import dcgan_init
from common.losses import METRIC_NAMES
from common.noise import with_noise
from common.optimizers import learning_rates, make_adam
from common.plotting import plot_d_probs, plot_losses, plot_quality, save_image_grid
from common.progress import EpochLog, steps_per_epoch, write_tensorboard
from common.quality import make_meter
from common.rundir import clear_run, first_missing, prepare_out_dir, remove_new_out_dir

SAMPLE_COUNT = 64  # Images in each sample grid (8x8), drawn from one fixed noise batch.
# The GIF and the plots are for watching a run: redrawn at each checkpoint and otherwise at
# most this often, so a short epoch does not spend its time re-encoding pictures.
VIEW_SECONDS = 60


class Run:
    """One training run. See the module's docstring for the calls a script makes."""

    # The flags every script shares, with the script's defaults (common/flags.py).
    add_arguments = staticmethod(add_common_arguments)

    def __init__(self, parser, argv=None, fixed=FIXED):
        args, explicit = parse_args(parser, argv)
        self.out_dir = Path(args.out_dir)
        with user_errors():
            parse_policy(args.augment)  # Every flag is checked before anything is touched.
            _one_augment_strength(args, explicit)
            _refuse_out_dir_inside_data_dir(args)
            # The strategy comes first: a multi-worker one must exist before TensorFlow starts.
            self.strategy = choose_strategy(args.strategy)
            self.chief = is_chief(self.strategy)  # Only the chief writes the run's files.
            self.policy = choose_policy(args.precision)
            self.jit = choose_jit(args.jit, self.strategy)
            resume = args.resume or bool(args.resume_from)
            self.created = first_missing(self.out_dir)  # Removed again if the data is refused.
            self.resuming = prepare_out_dir(self.out_dir, resume, args.overwrite,
                                            writer=self.chief)
            self.checkpoint_path, done = None, 0
            if self.resuming:
                args = merge_resumed_args(args, explicit, load_args(self.out_dir), fixed,
                                          parser)
                # Read-only; every worker of a multi-worker run restores the same checkpoint.
                self.checkpoint_path, done = resume_point(self.out_dir, args.resume_from)
                _refuse_checkpoint_without_args(self.out_dir, self.checkpoint_path)
            self.augment_policy = parse_policy(args.augment)
            _one_augment_strength(args, explicit, self.resuming)  # A resumed run may be adaptive.
        if done >= args.epochs:
            print(f"{self.out_dir} has already finished epoch {done} of --epochs "
                  f"{args.epochs}; nothing to train (pass a larger --epochs to go on)")
            raise SystemExit(0)
        self.args = args
        keras.utils.set_random_seed(args.seed)
        set_policy(self.policy)  # The models built after this compute in this precision.

    # --- Set-up -------------------------------------------------------------------------

    def load_images(self, read, *arguments):
        """`read(*arguments)` -> (uint8 images, source record): the script's own reader,
        with its errors turned into one line. The record goes into args.json."""
        try:
            with user_errors(cleanup=lambda: remove_new_out_dir(self.out_dir, self.created)):
                images, source = read(*arguments)
                _refuse_out_dir_inside(self.out_dir, source)
        except KeyboardInterrupt as interrupt:
            remove_new_out_dir(self.out_dir, self.created)
            print(f"\nCtrl-C while getting the images; {interrupt or 'nothing was changed'}",
                  file=sys.stderr)
            raise SystemExit(130) from None
        print(source["description"])  # Where the data came from: the run's first line.
        print(f"{len(images)} training images" + (f" from {source['images']}"
                                                  if "images" in source else ""))
        self.images, self.args.data_source = images, source
        return images

    def scope(self):
        """Where to build the models: their variables go on every device of the strategy."""
        return self.strategy.scope()

    def setup(self, train_step, generator, discriminator, noise):
        """Make both optimizers (Adam), the generator's moving average and the checkpoint,
        restore them on --resume, and return `train_step` compiled for the chosen devices:
        `step(real, noise) -> metrics`. `noise(count, seed)` draws the generator's input."""
        args, out_dir = self.args, self.out_dir
        with user_errors():
            if args.overwrite and self.chief:
                clear_run(out_dir)  # Only now: every flag and the data have been checked.
            if args.resume_from and self.chief:
                roll_back(out_dir, args.resume_from)
            if self.checkpoint_path and self.chief and not (
                    out_dir / "checkpoints" / "checkpoint").exists():
                relist_checkpoints(out_dir / "checkpoints")  # The list was lost: write it again.
                print(f"{out_dir / 'checkpoints' / 'checkpoint'} was missing; listed the "
                      f"checkpoints found there again")
        print(describe(self.strategy, self.policy, self.jit))
        self.generator, self.noise = generator, noise
        with self.strategy.scope():
            # --ema: a moving average of G's weights that never trains (common/ema.py). It
            # draws the samples and is the generator.keras a run leaves.
            if args.init == "dcgan" and not self.checkpoint_path:  # A resume restores them.
                dcgan_init(generator, [args.seed, 1])
                dcgan_init(discriminator, [args.seed, 2])
            self.ema_generator = keras.models.clone_model(generator) if args.ema else None
            rates = learning_rates(args)
            optimizers = [make_adam(rate, self.policy, args.beta_1, args.beta_2)
                          for rate in rates]
            # Build the optimizers' slots now, inside the scope: a checkpoint can restore into
            # them, and tf.distribute needs them made before the first step.
            for optimizer, model in zip(optimizers, (generator, discriminator)):
                optimizer.build(model.trainable_variables)
            self.adaptive = (AdaptiveProbability()
                             if args.augment_adaptive and self.augment_policy else None)
        self.generator_optimizer = optimizers[0]
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.fixed_noise = tf.Variable(noise(SAMPLE_COUNT, [args.seed, 0]), trainable=False)
        parts = dict(generator=generator, discriminator=discriminator,
                     generator_optimizer=optimizers[0], discriminator_optimizer=optimizers[1],
                     epochs_done=self.epochs_done, fixed_noise=self.fixed_noise)
        if self.ema_generator is not None:
            copy_weights(self.ema_generator, generator)  # The average starts where G starts.
            parts["ema_generator"] = self.ema_generator
        if self.adaptive:
            parts["augment_probability"] = self.adaptive
        self.checkpoint = tf.train.Checkpoint(**parts)
        self.sampler = self.ema_generator or generator  # Draws every sample a user sees.
        # Every worker takes part in a save; the chief's is the run's, the others' scratch.
        self.checkpoint_dir = out_dir / "checkpoints" if self.chief else Path(tempfile.mkdtemp())
        # Which checkpoints stay is prune_checkpoints' call, after each save (a Ctrl-C save
        # is not an epoch's), so the manager itself keeps all.
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                  max_to_keep=None)
        if self.checkpoint_path:
            with user_errors():
                restore(tf.train.Checkpoint(**_as_saved(parts, self.checkpoint_path)),
                        self.checkpoint_path, self.ema_generator, generator)
            for optimizer, rate in zip(optimizers, rates):
                optimizer.learning_rate.assign(rate)  # A resumed run may lower --lr.
            print(f"resuming {out_dir} after epoch {int(self.epochs_done)}")
        self._prepare_outputs()
        return self._compile(train_step, generator, discriminator, *optimizers)

    def _prepare_outputs(self):
        args, out_dir, done = self.args, self.out_dir, int(self.epochs_done)
        with user_errors():
            saved_history = read_history(out_dir, float("inf"))
        # Rows past the checkpoint belong to epochs that run again.
        self.history = [row for row in saved_history if row["epoch"] <= done]
        self.gif = ProgressGif(out_dir / "progress.gif", args.gif_frames)
        if self.chief:
            # Samples of epochs after the checkpoint were never kept: those epochs run again.
            later = [path for path in sample_paths(out_dir, 10**9)
                     if int(SAMPLE_PATTERN.match(path.name).group(1)) > done]
            for path in later:
                path.unlink()
            kept = sample_paths(out_dir, done)
            frames = [path for path in kept if _readable_image(path)]
            for path in sorted(set(kept) - set(frames)):
                print(f"warning: {path} cannot be read; progress.gif leaves it out")
            self.gif.rebuild_from(frames)
            with disk_errors_exit(out_dir, self.manager):
                save_args(out_dir, args)
                if self.resuming:
                    # The files now describe the checkpoint's epochs, as at its save: a
                    # stop before this run's first epoch closes leaves a consistent run.
                    if later or args.resume_from:
                        self.gif.write()
                    if len(saved_history) > len(self.history):
                        write_history(out_dir, self.history)
                    if done and not (out_dir / "generator.keras").exists():
                        atomic_write(out_dir / "generator.keras",
                                     portable_copy(self.sampler).save)
        # --eval-every: FID and KID of the samples against the real images, FCD for 28px
        # grayscale ones, SWD instead of FID/KID when InceptionV3's weights cannot be had.
        self.meter = (make_meter(self.images, args.eval_count, out_dir,
                                 args.inception_weights, args.seed)
                      if args.eval_every and self.chief else None)
        self.board = (tf.summary.create_file_writer(str(out_dir / "tensorboard"))
                      if args.tensorboard and self.chief else None)
        # The health check's yardstick: how varied 64 real images are (common/health.py).
        self.real_spread = real_spread(self.images, seed=args.seed)
        # Troubles the resumed epochs warned of: said again once here, never stopped at again.
        self.warned_before, self.warned = past_warnings(self.history), set()
        # The checkpoints those warnings, and troubles not yet warned of, name: kept from
        # pruning from now on (a Ctrl-C in the first epoch prunes too).
        self.way_back = set(self._ways_back(onsets(self.history)).values()) - {None}
        self.steps_taken, self.stopped = 0, False
        self.last_save = self.last_view = time.monotonic()
        self.first_epoch = done + 1
        self._batches = None

    def _compile(self, train_step, generator, discriminator, generator_optimizer,
                 discriminator_optimizer):
        """One compiled call per step: each device runs train_step on its share of the batch
        (compiled by XLA when jit is on), the metrics, each device's share of the batch
        means, are summed, and the moving average and augmentation strength follow."""
        args, strategy, adaptive = self.args, self.strategy, self.adaptive
        python_step = getattr(train_step, "python_function", train_step)

        @tf.function(jit_compile=self.jit, reduce_retracing=True)
        def replica_step(*arguments):
            # The step's named metrics as one vector: one sum over the devices for all of
            # them (MultiWorkerMirroredStrategy's reduce also refuses a dict in a graph).
            metrics = python_step(*arguments)
            return tf.stack([metrics[name] for name in METRIC_NAMES])

        policy = self.augment_policy
        probability = adaptive.probability if adaptive else args.augment_probability
        calls = itertools.count()  # Each place D looks gets its own draws (fixed in tracing).

        def augment_images(images):  # What D sees of every image, real or generated.
            if not policy:
                return images
            seed = step_seed(args.seed, generator_optimizer.iterations, next(calls))
            return augment(images, policy, probability, seed)

        @tf.function(reduce_retracing=True)
        def distributed_step(real, noise):
            summed = strategy.reduce("SUM", strategy.run(replica_step, args=(
                real, noise, generator, discriminator, generator_optimizer,
                discriminator_optimizer, augment_images)), axis=None)
            metrics = dict(zip(METRIC_NAMES, tf.unstack(summed)))
            if args.ema:  # Fixed when traced: without an average the step has no extra work.
                update_average(self.ema_generator, generator, args.ema,
                               generator_optimizer.iterations, args.ema_rampup)
            if adaptive:
                images = metrics["images"]
                adaptive.update(metrics["real_sign"] * images, images)
            return metrics

        return distributed_step

    # --- The loop -----------------------------------------------------------------------

    def epochs(self):
        """The epochs still to train, after the last finished one; Ctrl-C is caught while
        they run (the step finishes, then end_epoch saves and exits)."""
        args = self.args
        with StopOnInterrupt() as self.interrupt:
            for epoch in range(self.first_epoch, args.epochs + 1):
                self.epoch_log = EpochLog(epoch, args.epochs, self.steps,
                                    int(self.generator_optimizer.iterations.numpy()) + 1)
                yield epoch
                if self.stopped:
                    break
        if not self.chief:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        print(f"done: {self.out_dir}")

    @property
    def steps(self):
        return steps_per_epoch(len(self.images), self.args.batch_size)

    def batches(self, images, flip=False):
        """This epoch's (real images, noise) batches; ends early at Ctrl-C or --max-steps.

        One data set and iterator serve the whole run (no epoch waits for a new one); its
        shuffles and noise are seeded by the finished epochs too, so a resumed run goes on
        with new batches instead of replaying epoch 1's.
        """
        if self._batches is None:
            seed = self.args.seed + 7919 * int(self.epochs_done)
            # The noise is drawn in the input pipeline beside each batch (common/noise.py),
            # so several devices split noise and images alike.
            dataset = image_batches(images, self.args.batch_size, seed, flip).apply(
                lambda batches: with_noise(batches, self.noise, seed)).prefetch(tf.data.AUTOTUNE)
            self._batches = iter(self.strategy.experimental_distribute_dataset(dataset))
        for _ in range(self.steps):
            yield next(self._batches)
            self.steps_taken += 1
            if self.interrupt.requested or self.steps_taken == self.args.max_steps:
                break

    def log(self, metrics):
        """Record one step's metrics (read back from the device only when the bar redraws,
        which is also where a non-finite loss may first be seen)."""
        try:
            self.epoch_log.add(metrics)
        except FloatingPointError as error:
            self._stop_at_nan(error)

    def _stop_at_nan(self, error):
        """One line naming the step, and nothing saved: the last checkpoint stays good."""
        exit_with(f"{error}. Kept the last good checkpoint "
                  f"({self.manager.latest_checkpoint or 'none yet'}); continue from it with "
                  f"--resume, perhaps with a lower --lr")

    # --- The close of an epoch ----------------------------------------------------------

    def end_epoch(self):
        """Close the epoch: its history row and progress line, its sample grid, and on their
        own clocks the GIF and plots (VIEW_SECONDS) and the checkpoint with generator.keras
        (--checkpoint-every). Stops the run with one line at a non-finite loss, and saves
        and exits at Ctrl-C."""
        args, epoch = self.args, self.epoch_log.epoch
        try:
            # Raises at a non-finite loss before anything is saved.
            row = self.epoch_log.summary(**({"augment_p": round(float(
                self.adaptive.probability.numpy()), 4)} if self.adaptive else {}))
        except FloatingPointError as error:
            self._stop_at_nan(error)
        # The fixed noise's samples: their variety goes in the row, the grid below.
        samples = self.sampler(self.fixed_noise, training=False)
        variety = diversity(samples, self.real_spread)
        if variety is not None:  # None: the training images give no yardstick.
            row["diversity"] = variety
        images_before = self.history[-1].get("images", 0) if self.history else 0
        row["images"] = images_before + self.epoch_log.images
        problems = check(self.history + [row])
        self.epoch_log.print_row(row, "; ".join(f"{kind.replace('_', ' ')} since epoch {since}"
                                                for kind, since, _ in problems))
        if self.interrupt.requested:
            # Mid-epoch: epochs_done still counts finished epochs, so --resume runs this
            # epoch again from these weights.
            self._save(view=True)
            print(f"saved {self.manager.latest_checkpoint}; continue with --resume "
                  f"--out-dir {self.out_dir}")
            raise SystemExit(130)
        stopping = epoch == args.epochs or self.steps_taken == args.max_steps
        if self.meter and (epoch % args.eval_every == 0 or stopping):
            row.update(self.meter.score(self.sampler, self.noise))
        self.history.append(row)
        self.epochs_done.assign(epoch)
        # A full disk or a lost folder stops the run with one line; every file is written
        # atomically, so the last good epoch's files are kept.
        with disk_errors_exit(self.out_dir, self.manager):
            grid = None
            if self.chief and (epoch % args.sample_every == 0 or stopping):
                grid = save_image_grid(samples, sample_path(self.out_dir, epoch))
                self.gif.add(epoch, grid)
            if self.chief:
                write_history(self.out_dir, self.history)
                if self.board:
                    write_tensorboard(self.board, row, grid)
            halt = self._warn(problems, onsets(self.history))
            if stopping or halt or epoch == self.first_epoch or self._save_due(epoch):
                self._save(view=True)
            elif self.chief and time.monotonic() - self.last_view >= VIEW_SECONDS:
                self._draw()
        if halt:
            if not self.chief:
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)  # Its scratch saves.
            exit_with(f"{halt}; stopped (--on-collapse stop) after saving epoch {epoch}")
        if self.steps_taken == args.max_steps:
            print(f"stopped after --max-steps {args.max_steps}")
            self.stopped = True

    def _ways_back(self, starting):
        """{(kind, since): the newest kept checkpoint's epoch from before `since`, or None}
        for the troubles `starting` ({kind: first epoch}: health.onsets) and every trouble
        this run has warned of. Read from the chief's folder, the one a user resumes from
        (a non-chief worker's own folder is scratch)."""
        troubles = self.warned_before | self.warned | set(starting.items())
        kept = epochs_of_checkpoints(self.out_dir / "checkpoints").values() if troubles else ()
        return {trouble: max([done for done in kept if 0 < done < trouble[1]], default=None)
                for trouble in troubles}

    def _warn(self, problems, starting):
        """One `warning:` line for each new trouble the health check found, naming the way
        back: the newest checkpoint from before it. That checkpoint is kept from pruning
        from the trouble's first epoch (`starting`: health.onsets) to the end of the run, so
        it still exists when the warning comes and after. With --on-collapse stop, returns
        the first new trouble's line to stop with instead of printing it."""
        backs = self._ways_back(starting)
        halt = None
        for kind, since, seen in problems:
            back = backs[(kind, since)]
            if back is not None:
                way = (f"go back with --resume-from {back} --out-dir {self.out_dir} and other "
                       f"settings")
            else:
                way = f"no checkpoint from before epoch {since} is kept to go back to"
            line = f"{seen} since epoch {since}: {advice(kind, len(self.images))}; {way}"
            if (kind, since) in self.warned:
                continue
            self.warned.add((kind, since))
            # A trouble the run had already stopped or warned at before --resume is said
            # again, and training goes on: the user chose to continue past it.
            if (self.args.on_collapse == "stop" and halt is None
                    and (kind, since) not in self.warned_before):
                halt = line
            elif self.chief:
                print(f"warning: {line}")
        self.way_back = set(backs.values()) - {None}
        return halt

    def _save_due(self, epoch):
        number, unit = self.args.checkpoint_every
        if unit == "epochs":
            return epoch % number == 0
        return time.monotonic() - self.last_save >= number * 60

    def _draw(self):
        """Redraw the pictures for watching: the GIF and the curves."""
        self.gif.write()
        plot_losses(self.history, self.out_dir / "losses.png")
        plot_d_probs(self.history, self.out_dir / "d_probs.png")
        if self.meter:
            plot_quality(self.history, self.out_dir / "quality.png")
        self.last_view = time.monotonic()

    def _save(self, view):
        """generator.keras, then the checkpoint: the checkpoint comes last, so it always
        describes an epoch whose files are all on disk (a kill before it repeats epochs)."""
        with disk_errors_exit(self.out_dir, self.manager):
            if self.chief:
                if view:
                    self._draw()
                atomic_write(self.out_dir / "generator.keras", portable_copy(self.sampler).save)
            self.manager.save(
                checkpoint_number=int(self.generator_optimizer.iterations.numpy()))
            # Every worker prunes its own folder (the others' are scratch, but fill a disk).
            prune_checkpoints(self.checkpoint_dir, self.args.keep_checkpoints, self.way_back)
            # The manager lists what it saved; it reads the pruned list again.
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                      max_to_keep=None)
        self.last_save = time.monotonic()


def _as_saved(parts, path):
    """The checkpoint's parts shaped as the run saved them in `path`, to restore from it.

    A run may come back on other hardware or with other flags: a float16 run's optimizers
    wrap Adam in a loss scale (restored into the plain Adam of a float32 or bfloat16 run,
    and the other way round, the scale starting afresh), and --augment-adaptive turned on
    at --resume finds no p saved (it starts at 0, as in a new run).
    """
    saved = {name for name, _ in tf.train.list_variables(path)}
    parts = dict(parts)
    if not any(name.startswith("augment_probability/") for name in saved):
        parts.pop("augment_probability", None)
    for key in ("generator_optimizer", "discriminator_optimizer"):
        scaled_then = f"{key}/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE" in saved
        scaled_now = isinstance(parts[key], keras.optimizers.LossScaleOptimizer)
        if scaled_then and not scaled_now:
            parts[key] = tf.train.Checkpoint(inner_optimizer=parts[key])
        elif scaled_now and not scaled_then:
            parts[key] = parts[key].inner_optimizer
    return parts


def _readable_image(path):
    """Whether a sample grid on disk decodes (a 0-byte or cut-off PNG does not)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):  # Pillow's errors at a damaged file.
        return False


def _one_augment_strength(args, explicit, resuming=False):
    """A typed --augment-probability is a fixed chance, so it turns off a script's default
    --augment-adaptive; beside a typed one, or on an adaptive run being resumed, it is refused."""
    if "augment_probability" not in explicit:
        return
    if "augment_adaptive" not in explicit and not resuming:
        args.augment_adaptive = False
    if args.augment_adaptive:
        raise ValueError("--augment-probability is a fixed chance and --augment-adaptive "
                         "tunes it; give one of them")


def _refuse_checkpoint_without_args(out_dir, checkpoint_path):
    """Without args.json a checkpoint cannot say which script made it or with which flags:
    resumed with today's defaults, or by another script, it would train another model."""
    if checkpoint_path and not (Path(out_dir) / "args.json").exists():
        raise ValueError(f"{out_dir} has a checkpoint but no args.json (the run's script and "
                         f"flags); put back the args.json of the run it came from, or pass "
                         f"--overwrite to start over")


def _refuse_out_dir_inside_data_dir(args):
    """A run inside its own data folder would train on its own sample grids."""
    if args.data_dir is not None and _inside(args.out_dir, args.data_dir):
        raise ValueError(f"--out-dir {args.out_dir} is inside --data-dir {args.data_dir}: the "
                         f"run would train on its own samples; choose an --out-dir outside it")


def _refuse_out_dir_inside(out_dir, source):
    """The same for the folders the data came from without --data-dir (the script's default
    folder, or the download's): known only once the reader has found them."""
    folders = source.get("folders", []) + [source.get("folder")] + [
        str(Path(source["idx"]).parent) if "idx" in source else None]
    for folder in filter(None, folders):
        if _inside(out_dir, folder):
            raise ValueError(f"--out-dir {out_dir} is inside {folder}, where the training "
                             f"images are read from: the run would train on its own "
                             f"samples; choose an --out-dir outside it")


def _inside(path, folder):
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


class StopOnInterrupt:
    """Turn Ctrl-C into a request the training loop answers at the end of a step.

    The loop then checkpoints and exits cleanly instead of dying mid-write. A second
    Ctrl-C interrupts at once. Works in scripts and notebook kernels (main thread).
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # Not the main thread: leave Ctrl-C as it is.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        print("\nCtrl-C: stopping after this step and saving a checkpoint "
              "(press again to quit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
