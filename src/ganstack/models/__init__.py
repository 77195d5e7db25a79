"""Model registry: one readable file per paper."""

from __future__ import annotations

from ganstack.models.base import DataInfo, StackModel
from ganstack.models.lapgan import LAPGAN
from ganstack.models.sgan import SGAN
from ganstack.registry import Registry

MODELS: Registry[type[StackModel]] = Registry("model")
MODELS.register(SGAN.name)(SGAN)
MODELS.register(LAPGAN.name)(LAPGAN)


def build_model(cfg, info: DataInfo) -> StackModel:  # type: ignore[no-untyped-def]
    """Instantiate the model named by ``cfg.name``."""
    return MODELS.get(cfg.name, what="model (model.name)")(cfg, info)


__all__ = ["MODELS", "DataInfo", "StackModel", "build_model"]
