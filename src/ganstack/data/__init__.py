"""Datasets: a registry of loaders that return in-memory :class:`ImageDataset` objects."""

from __future__ import annotations

from collections.abc import Callable

from ganstack.config import DataConfig
from ganstack.data.base import Batcher, ImageDataset, train_eval_split
from ganstack.errors import DataError
from ganstack.registry import Registry

DATASETS: Registry[Callable[[DataConfig], ImageDataset]] = Registry("dataset")


@DATASETS.register("mnist5k")
def _mnist5k(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.embedded import load_mnist5k

    return load_mnist5k()


@DATASETS.register("mnist")
def _mnist(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.formats import load_mnist_idx

    if not cfg.path:
        raise DataError("dataset 'mnist' reads the standard IDX files: set data.path=FOLDER")
    return load_mnist_idx(cfg.path, "train")


def load_dataset(cfg: DataConfig) -> tuple[ImageDataset, ImageDataset | None]:
    """Load the configured dataset and split off its evaluation images."""
    full = DATASETS.get(cfg.name, what="dataset (data.name)")(cfg)
    return train_eval_split(full, cfg.eval_size, cfg.split_seed)


__all__ = ["DATASETS", "Batcher", "ImageDataset", "load_dataset", "train_eval_split"]
