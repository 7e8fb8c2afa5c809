"""The DCGAN losses: binary cross-entropy on discriminator logits.

The discriminators end in a Dense(1) without a sigmoid. Working on logits is the
numerically safe form of the seeds' sigmoid + BinaryCrossentropy: a confident
discriminator never produces log(0).

Each function sums over the examples it is given and divides by the number of images in
the whole step (counted from the logits when not given). On one device that is the plain mean; when
several devices share a batch (tf.distribute), each computes its share, and the shares
(and their gradients) add up to the whole batch's mean.
"""

import tensorflow as tf


def _bce_sum(logits, label):
    """Summed binary cross-entropy of `logits` against a constant `label` (0 or 1)."""
    logits = tf.cast(logits, tf.float32)  # Losses stay float32 under mixed precision.
    labels = tf.fill(tf.shape(logits), tf.constant(label, tf.float32))
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def discriminator_loss(real_logits, fake_logits, global_batch_size=None):
    """D is rewarded for calling real images real (1) and generated images fake (0)."""
    batch_size = _global_count(real_logits) if global_batch_size is None else global_batch_size
    return (_bce_sum(real_logits, 1.0) + _bce_sum(fake_logits, 0.0)) / batch_size


def generator_loss(fake_logits, global_batch_size=None):
    """G is rewarded when D calls its images real: the non-saturating GAN loss."""
    batch_size = _global_count(fake_logits) if global_batch_size is None else global_batch_size
    return _bce_sum(fake_logits, 1.0) / batch_size


def mean_probability(logits, global_batch_size=None):
    """Mean sigmoid of the logits: the D(x) and D(G(z)) that the progress line shows."""
    batch_size = _global_count(logits) if global_batch_size is None else global_batch_size
    return tf.reduce_sum(tf.sigmoid(tf.cast(logits, tf.float32))) / batch_size


METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake", "real_sign", "images")


def step_metrics(d_loss, g_loss, real_logits, fake_logits):
    """What a train step reports, by name: d_loss, g_loss, d_real and d_fake (D(x) and
    D(G(z))), real_sign (the mean sign of D's real logits: how sure D is on real images,
    which adaptive augmentation steers by) and images (this device's image count). Every
    value but the count is this device's share of a whole-batch mean, so the devices'
    metrics add up."""
    batch_size = _global_count(real_logits)
    real_sign = tf.reduce_sum(tf.sign(tf.cast(real_logits, tf.float32))) / batch_size
    values = (tf.cast(d_loss, tf.float32), tf.cast(g_loss, tf.float32),
              mean_probability(real_logits, batch_size),
              mean_probability(fake_logits, batch_size), real_sign,
              tf.cast(tf.shape(real_logits)[0], tf.float32))
    return dict(zip(METRIC_NAMES, values))


def _global_count(batch):
    """Images in the whole step: this device's `batch` plus every other device's share."""
    local = tf.cast(tf.shape(batch)[0], tf.float32)
    return tf.distribute.get_replica_context().all_reduce("SUM", local)
