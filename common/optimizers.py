"""Optimizers. Each model gets its own: Keras 3 optimizers hold per-variable state."""

import keras


def make_adam(learning_rate, beta_1=0.5):
    """Adam as the DCGAN paper uses it: beta_1 0.5 damps the momentum that makes GANs oscillate."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1)
