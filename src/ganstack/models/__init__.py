"""Model registry: one readable file per paper."""

from __future__ import annotations

from ganstack.models.base import DataInfo, StackModel
from ganstack.models.dcgan import DCGAN
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


def build_model(cfg, info: DataInfo) -> StackModel:  # type: ignore[no-untyped-def]
    """Instantiate the model named by ``cfg.name``."""
    return MODELS.get(cfg.name, what="model (model.name)")(cfg, info)


__all__ = ["MODELS", "DataInfo", "StackModel", "build_model"]
