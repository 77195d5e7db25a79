"""Building blocks shared by the models."""

from ganstack.nn.layers import (
    GaussianNoise,
    conv_act,
    deconv5,
    init_glorot_,
    init_normal_,
    linear_act,
    lrelu,
    scale_grad,
)

__all__ = [
    "GaussianNoise", "conv_act", "deconv5", "init_glorot_", "init_normal_", "linear_act",
    "lrelu", "scale_grad",
]
