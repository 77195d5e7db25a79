"""Building blocks shared by the models."""

from ganstack.nn.layers import (
    GaussianNoise,
    MinibatchStd,
    conv_act,
    deconv5,
    init_glorot_,
    init_normal_,
    linear_act,
    lrelu,
    scale_grad,
)
from ganstack.nn.ops import batch_norms, bn_state, frozen, resize, to_signed, to_unit

__all__ = [
    "GaussianNoise",
    "MinibatchStd",
    "conv_act",
    "deconv5",
    "init_glorot_",
    "init_normal_",
    "linear_act",
    "lrelu",
    "scale_grad",
    "batch_norms",
    "bn_state",
    "frozen",
    "resize",
    "to_signed",
    "to_unit",
]
