"""An exponential moving average (EMA) of the generator's weights (--ema DECAY).

GAN weights keep circling around a good solution instead of settling in it; their running
average sits closer to it, so its samples are usually cleaner than the last step's
(Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"). The
average is a second copy of the generator that never trains; after each step every weight
moves a (1 - decay) share of the way towards the trained generator's. BatchNorm's moving
statistics are averaged with the weights, so the copy's statistics match its weights.
"""

import tensorflow as tf


def update_average(average, model, decay, step):
    """Move each weight of `average` towards `model`'s: w_avg = d * w_avg + (1 - d) * w.

    `step` is the number of steps taken so far. Early on the decay is lowered to
    (1 + step) / (10 + step), as tf.train.ExponentialMovingAverage does, so the average
    forgets the random initial weights within a few hundred steps instead of thousands.
    """
    step = tf.cast(step, tf.float32)
    decay = tf.minimum(tf.cast(decay, tf.float32), (1.0 + step) / (10.0 + step))
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
