"""An exponential moving average (EMA) of the generator's weights (--ema DECAY).

GAN weights keep circling around a good solution instead of settling in it; their running
average sits closer to it, so its samples are usually cleaner than the last step's
(Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"). The
average is a second copy of the generator that never trains; after each step every weight
moves a (1 - decay) share of the way towards the trained generator's. BatchNorm's moving
statistics are averaged with the weights, so the copy's statistics match its weights.
"""

import math

import tensorflow as tf


def average_decay(decay, step, rampup=0.0):
    """The decay of step number `step` (1 for the first): `decay`, lowered early in a run
    so that the average forgets the random initial weights.

    With `rampup` 0 it is lowered to (1 + step) / (10 + step), as
    tf.train.ExponentialMovingAverage does: a half-life of about 0.077 x the steps taken.
    With `rampup` R (--ema-rampup; StyleGAN2 uses 0.05) the half-life is at most R x the
    steps taken, as StyleGAN2 ramps it with the images seen: a smaller R follows G closer
    for longer. Either way `decay`'s own half-life is the limit.
    """
    step = tf.cast(step, tf.float32)
    decay = tf.cast(decay, tf.float32)
    if not rampup:
        return tf.minimum(decay, (1.0 + step) / (10.0 + step))
    half_life = tf.minimum(math.log(0.5) / tf.math.log(decay), rampup * step)
    return tf.pow(0.5, 1.0 / tf.maximum(half_life, 1e-6))  # 0 at a half-life of 0: a copy.


def update_average(average, model, decay, step, rampup=0.0):
    """Move each weight of `average` towards `model`'s: w_avg = d * w_avg + (1 - d) * w,
    with d = average_decay(decay, step, rampup); `step` counts the steps taken so far."""
    decay = average_decay(decay, step, rampup)
    for average_weight, weight in zip(average.weights, model.weights):
        average_weight.assign_sub((1.0 - decay) * (average_weight.value - weight.value))


def copy_weights(target, source):
    """Set every weight of `target` to `source`'s (the two models have the same layers)."""
    for target_weight, source_weight in zip(target.weights, source.weights):
        target_weight.assign(source_weight.value)


def restore(checkpoint, path, average, model):
    """checkpoint.restore(path), checking that every model and optimizer found its values.

    `average` is the checkpoint's "ema_generator" (None without --ema). A run that trained
    without --ema until now has none saved: its average starts from `model`'s restored
    weights. A saved average that --ema 0 no longer wants is left unread.
    """
    status = checkpoint.restore(path)
    saved = any(name.startswith("ema_generator/") for name, _ in tf.train.list_variables(path))
    if average is not None and not saved:
        copy_weights(average, model)
        status.expect_partial()
    else:
        status.assert_existing_objects_matched()
