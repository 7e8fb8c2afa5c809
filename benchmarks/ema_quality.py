"""Does an EMA of the generator's weights give better Fashion-MNIST samples? (--ema)

Usage:
    python benchmarks/ema_quality.py --epochs 3 --decays 0.99 0.999 0.9999

Trains train_fashion_mnist.py's models with its own train_step on the real 60,000 training
images (default precision, seed 0) and keeps one moving average of the generator per
decay, side by side, so every average sees the very same training run. Several times per
epoch it scores the trained generator and each average on 10,000 generated images
against the 10,000 real test images with two statistics that need no download:

- classifier-FID: the Frechet distance of the penultimate-layer features of a small CNN
  trained here on the Fashion-MNIST training labels (two epochs, 88% test accuracy),
  the way MNIST GAN papers replace Inception with a LeNet. Lower is better.
- pixel-FID: common/metrics.py, the Frechet distance on the top 20 principal components
  of pixels. Lower is better.

Writes one JSON line per evaluation to --log and prints a table. Not part of the tests; the
figures are in BENCHMARKS.md.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read_fashion(folder, split):
    from train_fashion_mnist import read_idx_images
    import gzip
    images = read_idx_images(Path(folder) / f"{split}-images-idx3-ubyte.gz")
    raw = gzip.decompress((Path(folder) / f"{split}-labels-idx1-ubyte.gz").read_bytes())
    return images, np.frombuffer(raw, np.uint8, offset=8)


def train_classifier(folder, path):
    """A small CNN on Fashion-MNIST; returns a model mapping [-1, 1] images to features."""
    import keras
    from keras import layers
    if not Path(path).exists():
        train_images, train_labels = read_fashion(folder, "train")
        test_images, test_labels = read_fashion(folder, "t10k")
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Flatten(), layers.Dense(128, activation="relu", name="features"),
            layers.Dense(10),
        ])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        scale = lambda images: images.astype(np.float32) / 127.5 - 1  # noqa: E731
        model.fit(scale(train_images), train_labels, batch_size=128, epochs=2, verbose=2)
        _, accuracy = model.evaluate(scale(test_images), test_labels, verbose=0)
        print(f"classifier test accuracy {accuracy:.4f}")
        model.save(path)
    model = keras.saving.load_model(path)
    return keras.Model(model.inputs, model.get_layer("features").output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--decays", type=float, nargs="+", default=[0.99, 0.999, 0.9999])
    parser.add_argument("--classifier", default="/tmp/fashion_classifier.keras")
    parser.add_argument("--log", default="/tmp/ema_quality.jsonl")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from common.devices import choose_policy, set_policy
    from common.ema import copy_weights, update_average
    from common.metrics import frechet_distance, pixel_fid
    from common.optimizers import make_adam
    from common.progress import steps_per_epoch
    import train_fashion_mnist as script

    features = train_classifier(args.data_dir, args.classifier)  # float32, before the policy.
    test_images, _ = read_fashion(args.data_dir, "t10k")
    test = test_images.astype(np.float32) / 127.5 - 1
    test_features = features.predict(test, batch_size=500, verbose=0)
    train_images, _ = read_fashion(args.data_dir, "train")

    keras.utils.set_random_seed(0)
    policy = choose_policy("auto")
    set_policy(policy)
    print(f"precision {policy}")
    generator, discriminator = script.make_generator(), script.make_discriminator()
    averages = {decay: script.make_generator() for decay in args.decays}
    for average in averages.values():
        copy_weights(average, generator)
    generator_optimizer, discriminator_optimizer = make_adam(2e-4, policy), make_adam(2e-4, policy)
    step_function = tf.function(script.train_step)

    @tf.function
    def step(real, noise):
        metrics = step_function(real, noise, generator, discriminator, generator_optimizer,
                                discriminator_optimizer)
        for decay, average in averages.items():
            update_average(average, generator, decay, generator_optimizer.iterations)
        return metrics

    eval_noise = np.random.default_rng(1).normal(size=(10000, 128)).astype(np.float32)

    def score(model):
        generated = np.concatenate([np.asarray(model(eval_noise[i:i + 500], training=False),
                                               np.float32) for i in range(0, 10000, 500)])
        generated_features = features.predict(generated, batch_size=500, verbose=0)
        classifier = frechet_distance(test_features.mean(0), np.cov(test_features, rowvar=False),
                                      generated_features.mean(0),
                                      np.cov(generated_features, rowvar=False))
        return round(classifier, 3), round(pixel_fid(test, generated), 3)

    batches = iter(script.load_dataset(train_images, 128, 0, 128))
    steps = steps_per_epoch(len(train_images), 128)
    marks = {round(steps * (i + 1) / args.evals_per_epoch) for i in range(args.evals_per_epoch)}
    log = open(args.log, "a")
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        for index in range(1, steps + 1):
            real, noise = next(batches)
            metrics = step(real, noise)
            if index in marks:
                row = {"epoch": round(epoch - 1 + index / steps, 3),
                       "step": int(generator_optimizer.iterations.numpy()),
                       "d_loss": float(metrics["d_loss"]), "g_loss": float(metrics["g_loss"]),
                       "seconds": round(time.time() - start),
                       "trained": score(generator)}
                for decay, average in averages.items():
                    row[f"ema {decay}"] = score(average)
                print(json.dumps(row), flush=True)
                log.write(json.dumps(row) + "\n")
                log.flush()


if __name__ == "__main__":
    main()
