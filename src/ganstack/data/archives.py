"""Readers for dataset files that come as Python pickles or MATLAB files.

Pickles from the internet can run code when unpickled. :func:`safe_unpickle` reads them with an
unpickler that admits only plain containers, numbers, strings and NumPy arrays; anything else
(a function, a class, ``os.system``) stops the load with a :class:`DataError` before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError
from ganstack.fileio import read_regular

# (module, name) pairs a data pickle may reference: NumPy's array reconstruction and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; runs no code
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load '{module}.{name}'")


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle a data file (Python 2 or 3) admitting only containers, scalars and arrays."""
    path = Path(path)
    try:
        raw = read_regular(path, None, DataError, "data file")  # never a FIFO or a device
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    try:
        obj = _DataUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise DataError(
            f"{path} is not a plain data pickle ({e}); ganstack does not load pickles that "
            f"reference code. Re-create the file from the original dataset."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as e:
        raise DataError(f"{path} is truncated or corrupt: {e}") from None
    return obj


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def load_cifar10(folder: str | Path, split: str = "train") -> ImageDataset:
    """CIFAR-10, python version: ``data_batch_1..5`` (train) or ``test_batch`` in ``folder``."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 folder {folder} lacks {', '.join(missing)}; set data.path to the "
            f"extracted cifar-10-batches-py folder (the python version of CIFAR-10)"
        )
    images, labels = [], []
    for n in names:
        batch = safe_unpickle(folder / n)
        try:
            data, lab = _get(batch, "data"), _get(batch, "labels")
        except (KeyError, TypeError):
            raise DataError(f"{folder / n} is not a CIFAR-10 batch (no data/labels)") from None
        # Only an array and a flat list: a pickle can nest one shared list in another so that
        # a few hundred bytes stand for billions of items, which np.asarray would expand.
        if not isinstance(data, np.ndarray):
            raise DataError(f"{folder / n}: data should be a uint8 array (N, 3072), got a "
                            f"{type(data).__name__}")
        if isinstance(lab, list) and not all(isinstance(v, int) for v in lab):
            raise DataError(f"{folder / n}: labels should be a list of integers")
        try:
            lab = np.asarray(lab, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{folder / n}: labels should be a list of integers") from None
        if lab.ndim != 1:
            raise DataError(f"{folder / n}: labels should be one integer per image")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{folder / n}: data should be uint8 (N, 3072), got "
                            f"{data.dtype} {data.shape}")
        if len(lab) != len(data):
            raise DataError(f"{folder / n}: {len(lab)} labels for {len(data)} images")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    class_names = None
    if (folder / "batches.meta").is_file():
        meta = safe_unpickle(folder / "batches.meta")
        try:
            class_names = [s.decode() if isinstance(s, bytes) else str(s)
                           for s in _get(meta, "label_names")]
        except (KeyError, TypeError):
            class_names = None
    return ImageDataset(torch.from_numpy(np.concatenate(images)),
                        torch.from_numpy(np.concatenate(labels)), 10, "cifar10", class_names)


def load_svhn(path: str | Path) -> ImageDataset:
    """SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (label 10 means digit 0)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    if path.is_dir():
        path = path / "train_32x32.mat"
    if not path.is_file():
        raise DataError(f"SVHN file {path} does not exist; set data.path to train_32x32.mat")
    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DataError(f"{path} is not a readable MATLAB file: {e}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} has no X/y arrays: is it an SVHN *_32x32.mat file?")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X should be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: {len(y)} labels for {x.shape[3]} images")
    y[y == 10] = 0
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return ImageDataset(images, torch.from_numpy(y), 10, "svhn")
