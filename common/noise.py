"""The generator's noise, drawn in the input pipeline beside each batch of images."""

import tensorflow as tf


def with_noise(batches, sample_noise, seed):
    """Pair each batch of images with a batch of noise: elements become (images, noise).

    Drawing the noise here rather than in the train step means several devices split
    noise and images alike (tf.distribute gives each its share of both), so a run's numbers
    do not depend on how many devices train it. `sample_noise(count, seed)` must be
    stateless; each batch gets its own seed, and every epoch draws new ones.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(batches, seeds).map(
        lambda images, pair: (images, sample_noise(tf.shape(images)[0], pair)))
