"""Layers and initialisers in the conventions of the papers' official code.

Batch norm follows the Lasagne code of SGAN: the preceding layer has no bias, eps = 1e-6,
running averages with momentum 0.1, and the nonlinearity comes after the normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-6


def lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def init_normal_(
    module: nn.Module,
    std: float = 0.02,
    bn_std: float = 0.0,
    linear: bool = True,
    zero_bias: bool = True,
) -> nn.Module:
    """The DCGAN family's init, in every submodule: convolution, transposed-convolution and
    (with ``linear``) linear weights ~ N(0, std), their biases 0 (left as they are without
    ``zero_bias``); batch-norm scale ~ N(1, bn_std) (exactly 1 when bn_std is 0), shift 0.
    Layers it does not name keep PyTorch's default init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or (linear and isinstance(m, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn_std:
                nn.init.normal_(m.weight, 1.0, bn_std)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def init_glorot_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights (Lasagne's default), biases 0 (every submodule)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def linear_act(n_in: int, n_out: int, act: nn.Module | None, bn: bool = True) -> nn.Sequential:
    """Linear (no bias when followed by BN) -> optional BN -> activation."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(n_out, eps=BN_EPS, momentum=0.1))
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def conv_act(
    c_in: int, c_out: int, k: int, stride: int, pad: int, act: nn.Module | None, bn: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, pad, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.1))
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def deconv5(
    c_in: int, c_out: int, mode: str, act: nn.Module | None, bn: bool = True
) -> nn.Sequential:
    """The official code's 5x5 'Deconv' layer.

    ``mode='half'``: stride 2, doubles H and W. ``mode='valid'``: stride 1, adds 4 to H and W.
    """
    if mode == "half":
        conv = nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=1, bias=not bn)
    elif mode == "valid":
        conv = nn.ConvTranspose2d(c_in, c_out, 5, 1, 0, bias=not bn)
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown deconv mode {mode!r}")
    layers: list[nn.Module] = [conv]
    if bn:
        layers.append(nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.1))
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode only (Lasagne's GaussianNoiseLayer).

    ``std`` is a plain attribute, not a parameter: a training phase may change it.
    """

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std}"


class MinibatchStd(nn.Module):
    """Appends one feature to each (N, C) row: the standard deviation of every input feature
    across the batch, averaged (Karras et al., ICLR 2018, section 3). A discriminator that sees
    it can tell a batch of near-identical fakes from a varied real batch, which is what pushes
    its generator away from collapse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.std(0, unbiased=False).mean() if len(x) > 1 else x.new_zeros(())
        return torch.cat([x, std.expand(len(x), 1)], 1)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward gradient multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, with the gradient that flows back through it multiplied by ``scale``."""
    return _ScaleGrad.apply(x, scale)
