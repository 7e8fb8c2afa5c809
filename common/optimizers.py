"""Optimizers. Each model gets its own: Keras 3 optimizers hold per-variable state."""

import keras


def make_adam(learning_rate, policy="float32", beta_1=0.5, beta_2=0.999):
    """Adam as the DCGAN paper uses it: beta_1 0.5 damps the momentum that makes GANs oscillate.

    Under the mixed_float16 policy it is wrapped in a LossScaleOptimizer: float16 gradients
    underflow to zero without a loss scale (bfloat16 has float32's range and needs none).
    The train step calls `optimizer.scale_loss(loss)`, which is the loss itself otherwise.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def learning_rates(args):
    """(G's, D's) learning rate: --lr-g and --lr-d where given, --lr otherwise."""
    return args.lr_g or args.lr, args.lr_d or args.lr
