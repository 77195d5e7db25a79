"""Distances between feature distributions: FID, KID and the Inception Score.

Pure numpy / scipy functions on float64 arrays; they know nothing about images or models.

* :func:`frechet_distance` -- the Fréchet distance between two Gaussians (FID when the
  Gaussians are fitted to Inception pool features).
* :func:`kernel_inception_distance` -- the unbiased MMD² with a cubic polynomial kernel (KID).
* :func:`inception_score` -- exp(E_x KL(p(y|x) || p(y))) over class probabilities (IS).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.linalg

from ganstack.errors import GanstackError

__all__ = [
    "check_enough_samples",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
]

logger = logging.getLogger(__name__)

# Relative tolerance on the imaginary part of sqrtm(sigma1 @ sigma2), and on the residual
# ||sqrtm(A)^2 - A|| / ||A|| above which the square root is considered failed.
_IMAG_RTOL = 1e-3
_RESIDUAL_RTOL = 1e-3


def check_enough_samples(n: int, dim: int, what: str) -> None:
    """Check that ``n`` feature vectors of dimension ``dim`` are enough for statistics.

    At least 2 samples are needed to estimate a covariance. Fewer samples than feature
    dimensions is allowed (FID is still defined, the covariance is merely rank-deficient), but
    the estimate is then strongly biased and noisy, so a warning is logged.

    Args:
        n: Number of samples.
        dim: Feature dimension.
        what: What the samples are, for the messages (e.g. ``"generated images"``).

    Raises:
        GanstackError: When ``n < 2``.
    """
    if n < 2:
        raise GanstackError(
            f"{what}: at least 2 samples are needed to estimate feature statistics, got {n}"
        )
    if n < dim:
        logger.warning(
            "%s: only %d samples for %d-dimensional features; the covariance is rank-deficient "
            "and the metric is strongly biased and noisy (published FIDs use 50000 samples), so "
            "only compare it with values computed with the same number of samples",
            what,
            n,
            dim,
        )


def _as_float64(a: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise GanstackError(f"{name} is not a numeric array: {e}") from e
    if not np.isfinite(arr).all():
        raise GanstackError(f"{name} contains NaN or infinite values")
    return arr


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return (sqrtm(a), ok) where ok says the root is finite and accurate."""
    with warnings.catch_warnings():
        # scipy warns about singular matrices; the residual check below decides instead.
        warnings.simplefilter("ignore")
        try:
            root = scipy.linalg.sqrtm(a)
        except (ValueError, np.linalg.LinAlgError):
            return np.full_like(a, np.nan), False
    root = np.asarray(root)
    if not np.isfinite(root).all():
        return root, False
    scale = max(np.linalg.norm(a), np.finfo(np.float64).tiny)
    residual = np.linalg.norm(root @ root - a) / scale
    return root, bool(residual <= _RESIDUAL_RTOL)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 @ sigma2))``, computed in float64.
    When the matrix square root fails (not finite or inaccurate, typically because a covariance
    is singular), it is retried with ``eps * I`` added to both covariances and a warning is
    logged. Tiny negative results caused by rounding are clamped to 0.

    Args:
        mu1, sigma1: Mean ``(D,)`` and covariance ``(D, D)`` of the first distribution.
        mu2, sigma2: Mean and covariance of the second distribution.
        eps: Diagonal offset used for the retry.

    Returns:
        The distance as a Python float.

    Raises:
        GanstackError: On shape mismatches, non-finite input, when the square root fails even
            with the offset, or when it has a significant imaginary component.
    """
    m1 = np.atleast_1d(_as_float64(mu1, "mu1"))
    m2 = np.atleast_1d(_as_float64(mu2, "mu2"))
    s1 = np.atleast_2d(_as_float64(sigma1, "sigma1"))
    s2 = np.atleast_2d(_as_float64(sigma2, "sigma2"))
    if m1.ndim != 1 or m2.ndim != 1 or m1.shape != m2.shape:
        raise GanstackError(
            f"frechet_distance: the means must be vectors of the same length, got shapes "
            f"{m1.shape} and {m2.shape}"
        )
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise GanstackError(
            f"frechet_distance: the covariances must have shape ({d}, {d}) to match the means, "
            f"got {s1.shape} and {s2.shape}"
        )

    diff = m1 - m2
    covmean, ok = _sqrtm(s1 @ s2)
    if not ok:
        logger.warning(
            "frechet_distance: sqrtm(sigma1 @ sigma2) failed (singular covariance, usually "
            "because there are fewer samples than feature dimensions); retrying with %g added "
            "to the covariance diagonals",
            eps,
        )
        offset = np.eye(d) * eps
        covmean, ok = _sqrtm((s1 + offset) @ (s2 + offset))
        if not ok:
            raise GanstackError(
                "frechet_distance: could not compute the matrix square root of the covariance "
                "product even with a diagonal offset; the feature statistics are degenerate "
                "(use more samples, or check that the features are not constant)"
            )

    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        scale = max(1.0, float(np.abs(diag.real).max(initial=0.0)))
        max_imag = float(np.abs(diag.imag).max(initial=0.0))
        if max_imag > _IMAG_RTOL * scale:
            raise GanstackError(
                f"frechet_distance: the matrix square root has a significant imaginary "
                f"component ({max_imag:.3g}); the covariance matrices are not valid "
                f"(not positive semi-definite?)"
            )
        covmean = covmean.real

    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def kernel_inception_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with the kernel ``(x·y / d + 1)³``.

    The MMD² is estimated on ``num_subsets`` random subsets (drawn without replacement within
    each subset) of ``subset_size`` samples from each set, clipped to the smaller set size.

    Args:
        feats1: ``(N1, D)`` features of the first set.
        feats2: ``(N2, D)`` features of the second set.
        num_subsets: Number of random subsets.
        subset_size: Samples per subset and per set.
        seed: Seed of the subset sampling (the result is deterministic given the seed).

    Returns:
        ``(mean, std)`` of the per-subset MMD² estimates. The mean can be slightly negative
        because the estimator is unbiased.

    Raises:
        GanstackError: On shape mismatches, non-finite input, fewer than 2 samples in either
            set, or non-positive ``num_subsets`` / ``subset_size``.
    """
    f1 = _as_float64(feats1, "feats1")
    f2 = _as_float64(feats2, "feats2")
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise GanstackError(
            f"kernel_inception_distance: expected two (N, D) feature arrays with the same D, "
            f"got shapes {f1.shape} and {f2.shape}"
        )
    n1, n2 = f1.shape[0], f2.shape[0]
    if n1 < 2 or n2 < 2:
        raise GanstackError(
            f"kernel_inception_distance: each set needs at least 2 samples, got {n1} and {n2}"
        )
    if num_subsets < 1 or subset_size < 2:
        raise GanstackError(
            f"kernel_inception_distance: num_subsets must be >= 1 and subset_size >= 2, got "
            f"{num_subsets} and {subset_size}"
        )
    m = min(subset_size, n1, n2)
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = f1[rng.choice(n1, m, replace=False)]
        y = f2[rng.choice(n2, m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        estimates[i] = within - 2.0 * kxy.mean()
    return float(estimates.mean()), float(estimates.std())


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))``, over ``splits`` consecutive splits.

    Args:
        probs: ``(N, K)`` class probabilities, each row summing to 1.
        splits: Number of splits; ``p(y)`` is the mean prediction within a split.

    Returns:
        ``(mean, std)`` of the per-split scores. Values range from 1 to K.

    Raises:
        GanstackError: When ``probs`` is not a valid ``(N, K)`` probability array or
            ``N < splits``.
    """
    p = _as_float64(probs, "probs")
    if p.ndim != 2 or p.shape[1] < 1:
        raise GanstackError(f"inception_score: expected an (N, K) array, got shape {p.shape}")
    if splits < 1:
        raise GanstackError(f"inception_score: splits must be >= 1, got {splits}")
    n = p.shape[0]
    if n < splits:
        raise GanstackError(
            f"inception_score: {n} samples are not enough for {splits} splits; use more "
            f"samples or fewer splits"
        )
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise GanstackError(
            "inception_score: probs must be non-negative with rows summing to 1 "
            "(pass softmax probabilities, not logits)"
        )
    tiny = np.finfo(np.float64).tiny  # guards log(0); 0 * log(tiny) is 0
    scores = np.empty(splits, dtype=np.float64)
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.maximum(part, tiny)) - np.log(np.maximum(py, tiny)))
        scores[k] = np.exp(kl.sum(axis=1).mean())
    return float(scores.mean()), float(scores.std())
