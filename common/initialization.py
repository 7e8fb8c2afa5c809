"""DCGAN's initial weights (Radford et al. 2015), as an alternative to Keras' defaults."""

import keras
import numpy as np

STDDEV = 0.02  # "All weights were initialized from a zero-centered Normal distribution
#                 with standard deviation 0.02."


def dcgan_init(model, seed):
    """Set every Dense and convolution kernel of `model` from N(0, 0.02) and each
    BatchNormalization's scale from N(1, 0.02), biases and shifts at 0 (as pytorch/examples'
    DCGAN does). `seed` (a list of ints) makes the draws repeatable."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.scale:
                layer.gamma.assign(rng.normal(1.0, STDDEV, layer.gamma.shape))
            if layer.center:
                layer.beta.assign(np.zeros(layer.beta.shape))
        elif getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(rng.normal(0.0, STDDEV, layer.kernel.shape))
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(np.zeros(layer.bias.shape))
