"""Small operations every model needs: pixel conventions, resizing, and the training-time
state of batch norm and of discriminators."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_unit(x: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (float32), clamped with ``clamp``."""
    x = (x.float() + 1.0) / 2.0
    return x.clamp(0.0, 1.0) if clamp else x


def resize(x: torch.Tensor, size: int, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to ``size`` x ``size`` (half-pixel centres). Without
    ``antialias`` it samples as Torch's image.scale does; with it, shrinking averages over the
    footprint as PIL's does."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(
        x,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=antialias and size < x.shape[-1],
    )


def batch_norms(*modules: nn.Module) -> list[_BatchNorm]:
    return [m for module in modules for m in module.modules() if isinstance(m, _BatchNorm)]


@contextlib.contextmanager
def bn_state(
    modules: Iterable[nn.Module], momentum: float | None = 0.0, keep_counts: bool = True
) -> Iterator[list[_BatchNorm]]:
    """Every batch norm in ``modules`` normalises with batch statistics (training mode) and
    updates its running averages with ``momentum`` (0: not at all; None: a cumulative average)
    inside the block. On exit the momenta are put back and, with ``keep_counts``, the batch
    counters too, so that the block leaves the state a checkpoint holds as it found it. Yields
    the batch norms. Training mode is left to the caller to restore."""
    bns = batch_norms(*modules)
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in bns
    ]
    for m in bns:
        m.momentum = momentum
        m.train()
    try:
        yield bns
    finally:
        for m, (mom, count) in zip(bns, saved, strict=True):
            m.momentum = mom
            if keep_counts and count is not None:
                m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``modules`` inside the block (a D during the G step); they
    are required again after it."""
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in modules:
            m.requires_grad_(True)
