"""Readers for standard dataset files a user may have on disk."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} looks gzipped but cannot be decompressed: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header incomplete)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or corrupt: header says shape {tuple(dims)} "
            f"({expected} bytes) but the file holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(folder: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                return cand
    return None


def load_mnist_idx(folder: str | Path, split: str = "train", name: str = "mnist") -> ImageDataset:
    """The standard MNIST files (``train-images-idx3-ubyte[.gz]`` etc.) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"MNIST folder {folder} does not exist; set data.path to the folder holding "
            f"train-images-idx3-ubyte(.gz) and train-labels-idx1-ubyte(.gz)"
        )
    prefix = "train" if split == "train" else "t10k"
    img_path = _find(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lab_path = _find(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if img_path is None or lab_path is None:
        raise DataError(
            f"MNIST folder {folder} has no {prefix}-images-idx3-ubyte(.gz) / "
            f"{prefix}-labels-idx1-ubyte(.gz) files"
        )
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{img_path} should hold uint8 images (N, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lab_path} holds {labels.shape} labels for {len(images)} images")
    return ImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        num_classes=10,
        name=name,
    )
