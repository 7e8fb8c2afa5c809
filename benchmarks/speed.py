"""Time each script's own train step against the TF tutorial's plain step on the same models.

Usage:
    python benchmarks/speed.py                         # all four scripts, default batch sizes
    python benchmarks/speed.py train_animals.py --rounds 9
    python benchmarks/speed.py train_animals.py --end-to-end ../shared/data/afhq_cat_600

Step mode (default): for each script, in one process of its own, the reference step (the
TF tutorial's pattern: one @tf.function, float32, two tapes, no XLA, batches from
`from_tensor_slices`) and the script's step (its own train_step, compiled by the run
helper's own path, common.run.Run._compile, with precision and jit as `auto` picks them
here, fed as a run feeds it: common.image_data.image_batches paired with the script's noise by
common.noise.with_noise) train the same architecture at the same batch size on the same
images. Measured without --ema (benchmarks/ema_cost.py times the average). After warm-up they take turns, --rounds times
--steps steps each; the medians are compared. It also times the script's input pipeline
alone (epochs after the first) and reports the process's peak resident memory.

End-to-end mode (--end-to-end FOLDER, 64px scripts): whole epochs on a folder of real
image files. The reference reads it with keras.utils.image_dataset_from_directory (which
decodes every file every epoch); the script decodes once (its read_images) and then trains
from memory. Epochs after the first take turns; medians are compared.

Random pixel values are used in step mode: the speed of a step does not depend on them.
Not part of the test run; see BENCHMARKS.md for the figures.
"""

import argparse
import importlib
import inspect
import itertools
import types
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPTS = ("train_fashion_mnist.py", "train_faces.py", "train_animals.py", "train_artworks.py")


def reference_step(generator, discriminator, learning_rate):
    """The TensorFlow DCGAN tutorial's train step, as it is written there."""
    import keras
    import tensorflow as tf

    cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
    generator_optimizer = keras.optimizers.Adam(learning_rate)
    discriminator_optimizer = keras.optimizers.Adam(learning_rate)
    latent_dim = generator.input_shape[-1]

    @tf.function
    def step(images):
        noise = tf.random.normal([tf.shape(images)[0], latent_dim])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated_images = generator(noise, training=True)
            real_output = discriminator(images, training=True)
            fake_output = discriminator(generated_images, training=True)
            gen_loss = cross_entropy(tf.ones_like(fake_output), fake_output)
            disc_loss = (cross_entropy(tf.ones_like(real_output), real_output)
                         + cross_entropy(tf.zeros_like(fake_output), fake_output))
        gradients_of_generator = gen_tape.gradient(gen_loss, generator.trainable_variables)
        gradients_of_discriminator = disc_tape.gradient(disc_loss,
                                                        discriminator.trainable_variables)
        generator_optimizer.apply_gradients(
            zip(gradients_of_generator, generator.trainable_variables))
        discriminator_optimizer.apply_gradients(
            zip(gradients_of_discriminator, discriminator.trainable_variables))
        return disc_loss

    return step


def script_step(script, policy, jit, args):
    """The script's compiled step, built the way its main() builds it (one device): models
    under the precision policy, both Adams with their slots built, and train_step compiled
    by Run._compile itself, so the benchmark times exactly what a run runs."""
    import tensorflow as tf

    from common.augment import parse_policy
    from common.devices import set_policy
    from common.optimizers import make_adam
    from common.run import Run

    set_policy(policy)
    generator = script.make_generator(args.latent_dim)
    discriminator = script.make_discriminator()
    generator_optimizer = make_adam(args.lr, policy)
    discriminator_optimizer = make_adam(args.lr, policy)
    generator_optimizer.build(generator.trainable_variables)
    discriminator_optimizer.build(discriminator.trainable_variables)
    # Run._compile reads only these attributes of a Run: a stand-in holding them saves
    # making an out-dir, a checkpoint and the rest of a run's set-up.
    run = types.SimpleNamespace(args=args, strategy=tf.distribute.get_strategy(), jit=jit,
                                adaptive=None, augment_policy=parse_policy(args.augment),
                                ema_generator=None)
    step = Run._compile(run, script.train_step, generator, discriminator,
                        generator_optimizer, discriminator_optimizer)
    set_policy("float32")
    return generator, discriminator, step


def script_noise(script, args):
    """noise(count, seed) as the script's main() hands it to Run.setup."""
    if "distribution" in inspect.signature(script.sample_noise).parameters:  # Faces.
        return lambda count, seed: script.sample_noise(count, args.latent_dim, seed, args.noise)
    return lambda count, seed: script.sample_noise(count, args.latent_dim, seed)


def script_dataset(script, pixels, args):
    """Endless (images, noise) batches over `pixels`, made as Run.batches makes them."""
    import tensorflow as tf

    from common.image_data import image_batches
    from common.noise import with_noise

    return with_noise(image_batches(pixels, args.batch_size, 0, getattr(args, "flip", False)),
                      script_noise(script, args), 0).prefetch(tf.data.AUTOTUNE)


def script_args(script, options):
    """The script's defaults, as its parser gives them, with the benchmark's changes."""
    args = script.build_parser().parse_args([])
    if options.batch_size:
        args.batch_size = options.batch_size
    if options.augment is not None:
        args.augment = options.augment
    args.ema = 0  # The speed table is measured without the moving average.
    return args


def images_per_second(run, steps, batch_size):
    start = time.perf_counter()
    result = None
    for _ in range(steps):
        result = run()
    result = result["d_loss"] if isinstance(result, dict) else result  # Ours name them.
    float(result if result.shape.rank == 0 else result[0])  # Wait for the device.
    return steps * batch_size / (time.perf_counter() - start)


def measure_steps(name, options):
    import numpy as np
    import tensorflow as tf

    from common.devices import choose_jit, choose_policy, portable_copy

    script = importlib.import_module(name[:-3])
    args = script_args(script, options)
    strategy = tf.distribute.get_strategy()
    policy = choose_policy(options.precision)
    jit = choose_jit(options.jit, strategy)

    generator, discriminator, ours = script_step(script, policy, jit, args)
    reference = reference_step(portable_copy(generator), portable_copy(discriminator),
                               args.lr)
    shape = discriminator.input_shape[1:]
    random = np.random.default_rng(0)
    count = 60000 if shape[0] == 28 else 10000
    pixels = random.integers(0, 256, (count, *shape), dtype=np.uint8)

    # The reference's batches: float32 in [-1, 1] from from_tensor_slices, as the tutorial.
    reference_batches = iter(
        tf.data.Dataset.from_tensor_slices(pixels[:4096].astype("float32") / 127.5 - 1)
        .shuffle(4096).batch(args.batch_size, drop_remainder=True).repeat().prefetch(2))
    our_batches = iter(script_dataset(script, pixels[:4096], args))

    def run_reference():
        return reference(next(reference_batches))

    def run_ours():
        real, noise = next(our_batches)
        return ours(real, noise)

    for _ in range(options.warmup):
        float(run_reference())
        float(run_ours()["d_loss"])
    reference_rates, our_rates = [], []
    for _ in range(options.rounds):  # Taking turns spreads slow spells over both.
        reference_rates.append(images_per_second(run_reference, options.steps,
                                                 args.batch_size))
        our_rates.append(images_per_second(run_ours, options.steps, args.batch_size))

    # The input pipeline alone, on the full-size array: epochs after the first.
    batches = iter(script_dataset(script, pixels, args))
    steps = -(-count // args.batch_size)
    pipeline_rates = []
    for epoch in range(3):
        start = time.perf_counter()
        images = sum(int(next(batches)[0].shape[0]) for _ in range(steps))
        if epoch:
            pipeline_rates.append(images / (time.perf_counter() - start))

    reference_rate = statistics.median(reference_rates)
    our_rate = statistics.median(our_rates)
    pipeline_rate = statistics.median(pipeline_rates)
    return {
        "script": name, "batch_size": args.batch_size, "policy": policy, "jit": jit,
        "augment": args.augment,
        "reference": round(reference_rate, 1), "ours": round(our_rate, 1),
        "ratio": round(our_rate / reference_rate, 3),
        "reference_rounds": [round(rate, 1) for rate in reference_rates],
        "our_rounds": [round(rate, 1) for rate in our_rates],
        "pipeline": round(pipeline_rate), "pipeline_vs_step": round(pipeline_rate / our_rate, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def measure_end_to_end(name, options):
    import keras
    import tensorflow as tf

    from common.devices import choose_jit, choose_policy, portable_copy

    script = importlib.import_module(name[:-3])
    args = script_args(script, options)
    args.data_dir, args.download, args.cache_dir = options.end_to_end, False, None
    policy = choose_policy(options.precision)
    jit = choose_jit(options.jit, tf.distribute.get_strategy())
    generator, discriminator, ours = script_step(script, policy, jit, args)
    reference = reference_step(portable_copy(generator), portable_copy(discriminator),
                               args.lr)
    size = discriminator.input_shape[1]

    start = time.perf_counter()
    reference_data = keras.utils.image_dataset_from_directory(
        options.end_to_end, labels=None, image_size=(size, size),
        batch_size=args.batch_size, shuffle=True, seed=0, verbose=False
    ).map(lambda batch: batch / 127.5 - 1.0).prefetch(tf.data.AUTOTUNE)
    reference_epoch1 = run_epoch(reference, reference_data)
    reference_first = time.perf_counter() - start

    start = time.perf_counter()
    pixels, _ = script.read_images(args)
    # The script's way: one endless iterator, an epoch is `steps` batches of it.
    our_batches = iter(script_dataset(script, pixels, args))
    steps = -(-len(pixels) // args.batch_size)
    run_epoch(lambda batch: ours(*batch), itertools.islice(our_batches, steps))
    our_first = time.perf_counter() - start

    reference_rates, our_rates = [], []
    for _ in range(options.rounds):
        reference_rates.append(run_epoch(reference, reference_data))
        our_rates.append(run_epoch(lambda batch: ours(*batch),
                                   itertools.islice(our_batches, steps)))
    reference_rate = statistics.median(reference_rates)
    our_rate = statistics.median(our_rates)
    return {
        "script": name, "mode": "end-to-end", "folder": options.end_to_end,
        "images": len(pixels), "batch_size": args.batch_size, "policy": policy, "jit": jit,
        "reference_first_epoch_s": round(reference_first, 1),
        "our_first_epoch_s": round(our_first, 1), "reference_epoch1_rate": round(reference_epoch1, 1),
        "reference": round(reference_rate, 1), "ours": round(our_rate, 1),
        "ratio": round(our_rate / reference_rate, 3),
        "reference_rounds": [round(rate, 1) for rate in reference_rates],
        "our_rounds": [round(rate, 1) for rate in our_rates],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_epoch(step, batches):
    """img/s of `step` over one epoch of `batches` (images, or (images, noise) pairs)."""
    start, images, result = time.perf_counter(), 0, None
    for batch in batches:
        result = step(batch)
        images += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
    result = result["d_loss"] if isinstance(result, dict) else result  # Ours name them.
    float(result if result.shape.rank == 0 else result[0])
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT",
                        help="which scripts (default: all four)")
    parser.add_argument("--rounds", type=int, default=7, help="turns each (default: 7)")
    parser.add_argument("--steps", type=int, default=8, help="steps per turn (default: 8)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps (default: 4)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: each script's own default")
    parser.add_argument("--precision", default="auto", help="the script's --precision")
    parser.add_argument("--jit", default="auto", help="the script's --jit")
    parser.add_argument("--augment", default=None, metavar="POLICY",
                        help="the script's --augment, at its --augment-probability (default: "
                             "its own; 'none' times the step without augmentation)")
    parser.add_argument("--end-to-end", default=None, metavar="FOLDER",
                        help="time whole epochs on this folder of images instead")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.scripts = options.scripts or list(SCRIPTS)
    for name in options.scripts:
        if name not in SCRIPTS:
            parser.error(f"unknown script {name}; choose from {', '.join(SCRIPTS)}")

    if options.one:  # The child process: measure one script, print its result as JSON.
        measure = measure_end_to_end if options.end_to_end else measure_steps
        print("RESULT " + json.dumps(measure(options.scripts[0], options)), flush=True)
        return

    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("command: python " + " ".join(sys.argv))
    for name in options.scripts:
        child = [sys.executable, __file__, name, "--one", *sys.argv[1:]]
        child = [part for index, part in enumerate(child)
                 if not (part in SCRIPTS and index > 2)]
        output = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode or not lines:
            print(f"{name}: failed\n{output.stderr[-3000:]}")
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        print(json.dumps(result))
        print(f"  {name}: batch {result['batch_size']}, reference {result['reference']} img/s, "
              f"script {result['ours']} img/s ({result['policy']}, XLA "
              f"{'on' if result['jit'] else 'off'}) = {result['ratio']:.2f}x"
              + (f"; pipeline {result['pipeline']} img/s = {result['pipeline_vs_step']}x the "
                 f"step" if "pipeline" in result else "")
              + f"; peak RSS {result['peak_rss_mb']} MB", flush=True)


if __name__ == "__main__":
    main()
