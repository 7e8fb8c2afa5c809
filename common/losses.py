"""The DCGAN losses: binary cross-entropy on discriminator logits.

The discriminators end in a Dense(1) without a sigmoid. Working on logits is the
numerically safe form of the seeds' sigmoid + BinaryCrossentropy: a confident
discriminator never produces log(0).

Each function sums over the examples it is given and divides by `global_batch_size`,
the number of images in the whole step. On one device that is the plain mean; when
several devices share a batch (tf.distribute), each computes its share, and the shares
(and their gradients) add up to the whole batch's mean.
"""

import tensorflow as tf


def _bce_sum(logits, label):
    """Summed binary cross-entropy of `logits` against a constant `label` (0 or 1)."""
    logits = tf.cast(logits, tf.float32)  # Losses stay float32 under mixed precision.
    labels = tf.fill(tf.shape(logits), tf.constant(label, tf.float32))
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def discriminator_loss(real_logits, fake_logits, global_batch_size):
    """D is rewarded for calling real images real (1) and generated images fake (0)."""
    return (_bce_sum(real_logits, 1.0) + _bce_sum(fake_logits, 0.0)) / global_batch_size


def generator_loss(fake_logits, global_batch_size):
    """G is rewarded when D calls its images real: the non-saturating GAN loss."""
    return _bce_sum(fake_logits, 1.0) / global_batch_size


def mean_probability(logits, global_batch_size):
    """Mean sigmoid of the logits: the D(x) and D(G(z)) that the progress line shows."""
    return tf.reduce_sum(tf.sigmoid(tf.cast(logits, tf.float32))) / global_batch_size


def global_batch_size(batch):
    """Images in the whole step: this device's `batch` plus every other device's share."""
    local = tf.cast(tf.shape(batch)[0], tf.float32)
    return tf.distribute.get_replica_context().all_reduce("SUM", local)
