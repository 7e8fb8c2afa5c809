"""The DCGAN losses: binary cross-entropy on discriminator logits.

The discriminators end in a Dense(1) without a sigmoid. Working on logits is the
numerically safe form of the seeds' sigmoid + BinaryCrossentropy: a confident
discriminator never produces log(0).
"""

import tensorflow as tf


def _bce(logits, label):
    """Mean binary cross-entropy of `logits` against a constant `label` (0 or 1)."""
    logits = tf.cast(logits, tf.float32)  # Losses stay float32 under mixed precision.
    labels = tf.fill(tf.shape(logits), tf.constant(label, tf.float32))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def discriminator_loss(real_logits, fake_logits):
    """D is rewarded for calling real images real (1) and generated images fake (0)."""
    return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)


def generator_loss(fake_logits):
    """G is rewarded when D calls its images real: the non-saturating GAN loss."""
    return _bce(fake_logits, 1.0)


def mean_probability(logits):
    """Mean sigmoid of the logits: the D(x) and D(G(z)) that the progress line shows."""
    return tf.reduce_mean(tf.sigmoid(tf.cast(logits, tf.float32)))
