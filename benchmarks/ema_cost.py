"""What does --ema cost per step? A script's train step with and without the update.

Usage:
    python benchmarks/ema_cost.py train_fashion_mnist 128
    python benchmarks/ema_cost.py train_faces 128

Times `turns` interleaved rounds of `steps` steps each, with the EMA update of
common/ema.py after the step and without, on random data in the default precision, and
prints the median images per second of each. See BENCHMARKS.md.
"""

import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(module_name, batch_size, turns=7, steps=8):
    import keras
    import tensorflow as tf

    from common.devices import choose_policy, set_policy
    from common.ema import copy_weights, update_average
    from common.optimizers import make_adam

    script = importlib.import_module(module_name)
    keras.utils.set_random_seed(0)
    policy = choose_policy("auto")
    set_policy(policy)
    generator, discriminator = script.make_generator(), script.make_discriminator()
    average = script.make_generator()
    copy_weights(average, generator)
    optimizers = make_adam(2e-4, policy), make_adam(2e-4, policy)
    step = tf.function(script.train_step)

    @tf.function
    def plain(real, noise):
        return step(real, noise, generator, discriminator, *optimizers, lambda images: images)

    @tf.function
    def with_ema(real, noise):
        metrics = step(real, noise, generator, discriminator, *optimizers, lambda images: images)
        update_average(average, generator, 0.99, optimizers[0].iterations)
        return metrics

    real = tf.random.uniform((batch_size, *discriminator.input_shape[1:]), -1, 1)
    noise = tf.random.normal((batch_size, generator.input_shape[-1]))
    rates = {"plain": [], "ema": []}
    for function in (plain, with_ema):  # Trace and warm up both.
        function(real, noise)["d_loss"].numpy()
    for _ in range(turns):
        for name, function in (("plain", plain), ("ema", with_ema)):
            start = time.perf_counter()
            for _ in range(steps):
                metrics = function(real, noise)
            metrics["d_loss"].numpy()
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    plain_rate, ema_rate = (statistics.median(rates[name]) for name in ("plain", "ema"))
    print(f"{module_name}: without EMA {plain_rate:.1f} img/s, with EMA {ema_rate:.1f} img/s "
          f"({ema_rate / plain_rate:.3f}x); generator {generator.count_params():,} weights")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
