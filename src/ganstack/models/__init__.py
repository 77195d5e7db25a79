"""Model registry: one readable file per paper."""

from __future__ import annotations

from ganstack.models.base import DataInfo, StackModel
from ganstack.models.dcgan import DCGAN
from ganstack.models.hdgan import HDGAN
from ganstack.models.lapgan import LAPGAN
from ganstack.models.s2gan import S2GAN
from ganstack.models.sgan import SGAN
from ganstack.models.stackgan_v1 import StackGANv1
from ganstack.models.stackgan_v2 import StackGANv2
from ganstack.registry import Registry

MODELS: Registry[type[StackModel]] = Registry("model")
MODELS.register(SGAN.name)(SGAN)
MODELS.register(LAPGAN.name)(LAPGAN)
MODELS.register(S2GAN.name)(S2GAN)
MODELS.register(StackGANv2.name)(StackGANv2)
MODELS.register(StackGANv1.name)(StackGANv1)
MODELS.register(DCGAN.name)(DCGAN)
MODELS.register(HDGAN.name)(HDGAN)


def build_model(cfg, info: DataInfo) -> StackModel:
    """Instantiate the model named by ``cfg.name``.

    The model is first built on the meta device (no memory for its weights), so that widths
    that would need more than half the machine's memory are a ConfigError, not an allocation
    that fails deep inside torch or the out-of-memory killer."""
    import warnings

    import torch

    from ganstack.errors import ConfigError
    from ganstack.fileio import memory_budget

    cls = MODELS.get(cfg.name, what="model (model.name)")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        probe = cls(cfg, info)
    size = sum(t.numel() * t.element_size() for t in (*probe.parameters(), *probe.buffers()))
    budget = memory_budget()
    if size > budget:
        raise ConfigError(
            f"the model's settings (model.*) make a {cfg.name} of {size / 2**30:,.1f} GiB of "
            f"weights, more than the {budget / 2**30:,.1f} GiB (half of this machine's memory) "
            f"ganstack allows; reduce its widths"
        )
    return cls(cfg, info)


__all__ = ["MODELS", "DataInfo", "StackModel", "build_model"]
