"""Streaming statistics of feature vectors (for FID, KID and reference-statistics caches).

:class:`FeatureStats` accumulates the count, the sum and the sum of outer products of feature
vectors in float64 on the CPU, so that the mean and covariance of an arbitrarily large set of
features can be computed without keeping the features in memory. For numerical stability the
sums are taken over features *shifted* by the mean of the first batch (the covariance is
shift-invariant, and shifting avoids the cancellation that raw moments suffer when the mean is
large compared with the spread).

Statistics can be merged (one object per process, then combined) and saved to / loaded from a
plain ``.npz`` file that contains no pickled objects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.errors import GanstackError
from ganstack.fileio import atomic_path, check_npz

__all__ = ["FeatureStats"]

_FORMAT = "ganstack.feature_stats"
_VERSION = 1


class FeatureStats:
    """Streaming float64 mean / covariance of feature vectors of a fixed dimension.

    Args:
        keep_features: Also keep the raw features (in float64, on the CPU), which
            :meth:`features` returns; KID needs them. Costs ``8 * N * D`` bytes.
        dim: Expected feature dimension; when ``None`` it is taken from the first batch.

    Attributes:
        metadata: A small JSON-serialisable dict saved with :meth:`save` (for example the
            dataset path and the feature extractor's hash) and restored by :meth:`load`.
    """

    def __init__(self, keep_features: bool = False, dim: int | None = None) -> None:
        if dim is not None and (int(dim) != dim or dim < 1):
            raise GanstackError(f"FeatureStats: dim must be a positive integer, got {dim!r}")
        self.keep_features = bool(keep_features)
        self.metadata: dict[str, Any] = {}
        self._dim: int | None = None if dim is None else int(dim)
        self._n = 0
        self._shift: np.ndarray | None = None  # (D,)
        self._sum: np.ndarray | None = None  # (D,)  sum of (x - shift)
        self._outer: np.ndarray | None = None  # (D, D)  sum of (x - shift)(x - shift)^T
        self._chunks: list[np.ndarray] = []
        if self._dim is not None:
            self._init_buffers(self._dim, np.zeros(self._dim))

    # ------------------------------------------------------------------ properties
    @property
    def num_items(self) -> int:
        """Number of feature vectors accumulated so far."""
        return self._n

    @property
    def dim(self) -> int | None:
        """Feature dimension, or ``None`` before the first batch when not given."""
        return self._dim

    # ------------------------------------------------------------------ accumulation
    def _init_buffers(self, dim: int, shift: np.ndarray) -> None:
        self._dim = dim
        self._shift = np.array(shift, dtype=np.float64)
        self._sum = np.zeros(dim, dtype=np.float64)
        self._outer = np.zeros((dim, dim), dtype=np.float64)

    def append(self, x: torch.Tensor | np.ndarray) -> None:
        """Add a batch of feature vectors.

        Args:
            x: A ``(N, D)`` tensor of any floating dtype on any device (a numpy array is also
                accepted). It is copied to the CPU and converted to float64.

        Raises:
            GanstackError: When ``x`` is not 2-D, its dimension differs from earlier batches,
                or it contains NaN or infinite values.
        """
        if isinstance(x, torch.Tensor):
            arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
        else:
            arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2:
            raise GanstackError(
                f"FeatureStats.append expects a 2-D (N, D) batch of features, got shape "
                f"{tuple(arr.shape)}"
            )
        n, d = arr.shape
        if self._dim is not None and d != self._dim:
            raise GanstackError(
                f"FeatureStats.append: feature dimension {d} does not match the dimension "
                f"{self._dim} of the features accumulated so far"
            )
        if n == 0:
            if self._dim is None:
                self._init_buffers(d, np.zeros(d))
            return
        if not np.isfinite(arr).all():
            raise GanstackError(
                "FeatureStats.append: the features contain NaN or infinite values "
                "(the feature extractor or the generator produced invalid output)"
            )
        if self._n == 0:
            # Shift all sums by the first batch's mean (any shift gives the same result
            # mathematically; one close to the mean avoids cancellation).
            self._init_buffers(d, arr.mean(axis=0))
        assert self._shift is not None and self._sum is not None and self._outer is not None
        centered = arr - self._shift
        self._sum += centered.sum(axis=0)
        self._outer += centered.T @ centered
        self._n += n
        if self.keep_features:
            self._chunks.append(np.array(arr, dtype=np.float64, copy=True))

    def merge(self, other: FeatureStats) -> None:
        """Add the statistics accumulated in ``other`` to this object (in place).

        Used to combine the statistics of several processes. When this object keeps raw
        features, ``other`` must keep them too.

        Raises:
            GanstackError: When the dimensions differ or ``other`` lacks raw features that this
                object needs.
        """
        if not isinstance(other, FeatureStats):
            raise GanstackError(f"FeatureStats.merge expects a FeatureStats, got {type(other)}")
        if other._dim is None or other._n == 0:
            if other._dim is not None and self._dim is not None and other._dim != self._dim:
                raise GanstackError(
                    f"FeatureStats.merge: dimension {other._dim} does not match {self._dim}"
                )
            return
        if self.keep_features and not other.keep_features:
            raise GanstackError(
                "FeatureStats.merge: this object keeps raw features (keep_features=True) but "
                "the other one does not; create both with the same keep_features setting"
            )
        if self._dim is not None and other._dim != self._dim:
            raise GanstackError(
                f"FeatureStats.merge: dimension {other._dim} does not match {self._dim}"
            )
        assert other._shift is not None and other._sum is not None and other._outer is not None
        if self._n == 0:
            self._init_buffers(other._dim, other._shift)
        assert self._shift is not None and self._sum is not None and self._outer is not None
        # Re-express the other's sums relative to this object's shift:
        # x - s_self = (x - s_other) + delta, delta = s_other - s_self.
        delta = other._shift - self._shift
        s_o = other._sum
        self._sum += s_o + other._n * delta
        self._outer += (
            other._outer
            + np.outer(delta, s_o)
            + np.outer(s_o, delta)
            + other._n * np.outer(delta, delta)
        )
        self._n += other._n
        if self.keep_features:
            self._chunks.extend([c.copy() for c in other._chunks])

    # ------------------------------------------------------------------ results
    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the float64 mean ``(D,)`` and unbiased covariance ``(D, D)`` (ddof=1).

        Raises:
            GanstackError: With fewer than 2 accumulated samples.
        """
        if self._n < 2:
            raise GanstackError(
                f"need at least 2 feature vectors to estimate a mean and covariance, got "
                f"{self._n}; use more images"
            )
        assert self._shift is not None and self._sum is not None and self._outer is not None
        n = self._n
        m = self._sum / n
        cov = (self._outer - n * np.outer(m, m)) / (n - 1)
        cov = (cov + cov.T) / 2.0  # remove rounding asymmetry
        return self._shift + m, cov

    def features(self) -> np.ndarray:
        """Return all accumulated features as one float64 ``(N, D)`` array.

        Raises:
            GanstackError: When the object was not created with ``keep_features=True``.
        """
        if not self.keep_features:
            raise GanstackError(
                "these feature statistics do not keep raw features; create them with "
                "FeatureStats(keep_features=True) (needed for KID)"
            )
        if not self._chunks:
            return np.zeros((0, self._dim or 0), dtype=np.float64)
        return np.concatenate(self._chunks, axis=0)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> None:
        """Save the statistics to an ``.npz`` file (plain arrays only, no pickles).

        The file is written atomically (to a temporary file, fsynced, then renamed:
        :func:`ganstack.fileio.atomic_path`) and exactly at ``path`` (no ``.npz`` suffix is
        appended).

        Args:
            path: Destination file.
            metadata: A JSON-serialisable dict stored with the statistics; when ``None``,
                :attr:`metadata` is stored.

        Raises:
            GanstackError: When there is nothing to save, the metadata is not JSON-serialisable
                or the file cannot be written.
        """
        if self._dim is None:
            raise GanstackError("FeatureStats.save: no features have been accumulated")
        assert self._shift is not None and self._sum is not None and self._outer is not None
        meta = self.metadata if metadata is None else metadata
        try:
            meta_json = json.dumps(meta, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise GanstackError(f"FeatureStats.save: metadata is not JSON-serialisable: {e}") from e
        arrays: dict[str, np.ndarray] = {
            "format": np.array([_FORMAT]),
            "version": np.array(_VERSION, dtype=np.int64),
            "num_items": np.array(self._n, dtype=np.int64),
            "shift": self._shift,
            "sum": self._sum,
            "outer": self._outer,
            "metadata": np.array([meta_json]),
        }
        if self.keep_features:
            arrays["features"] = self.features()
        path = Path(path)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
        except OSError as e:
            raise GanstackError(f"could not write feature statistics to {path}: {e}") from e
        if metadata is not None:
            self.metadata = dict(metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStats:
        """Load statistics written by :meth:`save` (with ``allow_pickle=False``).

        Raises:
            GanstackError: When the file is missing, not a ganstack statistics file, or corrupt.
        """
        path = Path(path)
        if not path.is_file():
            raise GanstackError(f"feature statistics file not found: {path}")
        check_npz(path, GanstackError)
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"][0]) != _FORMAT:
                    raise GanstackError(
                        f"{path} is not a ganstack feature statistics file; delete it and "
                        f"recompute the statistics"
                    )
                version = int(data["version"])
                if version != _VERSION:
                    raise GanstackError(
                        f"{path} has feature statistics format version {version}, this version "
                        f"of ganstack reads version {_VERSION}; recompute the statistics"
                    )
                n = int(data["num_items"])
                shift = np.asarray(data["shift"], dtype=np.float64)
                sum_ = np.asarray(data["sum"], dtype=np.float64)
                outer = np.asarray(data["outer"], dtype=np.float64)
                meta = json.loads(str(data["metadata"][0]))
                feats = (
                    np.asarray(data["features"], dtype=np.float64)
                    if "features" in data.files
                    else None
                )
        except GanstackError:
            raise
        except Exception as e:
            # zipfile, ValueError, KeyError, JSON errors...: a corrupt or truncated file
            raise GanstackError(
                f"could not read feature statistics from {path} (corrupt or truncated file?): "
                f"{e}; delete it and recompute the statistics"
            ) from e
        d = shift.shape[0] if shift.ndim == 1 else -1
        if (
            d < 1
            or n < 0
            or sum_.shape != (d,)
            or outer.shape != (d, d)
            or (feats is not None and feats.shape != (n, d))
            or not isinstance(meta, dict)
        ):
            raise GanstackError(
                f"{path} contains inconsistent feature statistics; delete it and recompute them"
            )
        stats = cls(keep_features=feats is not None, dim=d)
        stats._init_buffers(d, shift)
        stats._sum = sum_.copy()
        stats._outer = outer.copy()
        stats._n = n
        if feats is not None and n > 0:
            stats._chunks = [feats]
        stats.metadata = meta
        return stats

    def __repr__(self) -> str:
        return (
            f"FeatureStats(num_items={self._n}, dim={self._dim}, "
            f"keep_features={self.keep_features})"
        )
