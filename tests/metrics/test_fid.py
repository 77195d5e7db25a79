from __future__ import annotations

import logging

import numpy as np
import pytest

from ganstack.errors import GanstackError
from ganstack.metrics.fid import (
    check_enough_samples,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _random_cov(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------- FID


def test_fid_identical_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(200, 16))
    mu, sigma = _stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_equal_covariances_is_mean_distance() -> None:
    sigma = _random_cov(8, seed=1)
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-8)


def test_fid_diagonal_closed_form() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 3.0, size=10), rng.uniform(0.1, 3.0, size=10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9)
    # Symmetric in its arguments.
    assert frechet_distance(mu2, np.diag(b), mu1, np.diag(a)) == pytest.approx(got, rel=1e-9)


def test_fid_general_against_symmetric_formula() -> None:
    # Tr sqrtm(s1 s2) == Tr sqrtm(s1^1/2 s2 s1^1/2) (the latter is symmetric PSD).
    s1, s2 = _random_cov(12, seed=4), _random_cov(12, seed=5)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(w2, 0, None)))
    mu = np.zeros(12)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_singular_covariance_is_finite() -> None:
    # Fewer samples than dimensions: rank-deficient covariances.
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 20)), rng.normal(size=(5, 20)) + 1.0
    value = frechet_distance(*_stats(x), *_stats(y))
    assert np.isfinite(value) and value > 0
    # Zero-variance feature in both sets.
    z = np.zeros((20, 20))
    z[:10, :10] = np.eye(10)
    value = frechet_distance(np.zeros(20), z, np.ones(20), z)
    assert value == pytest.approx(20.0, rel=1e-8)


def test_fid_falls_back_to_offset_when_sqrtm_fails(caplog) -> None:
    # The product [[0, 1], [0, 0]] has no square root, so the eps offset is needed.
    s1 = np.array([[0.0, 1.0], [0.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="ganstack.metrics.fid"):
        value = frechet_distance(np.zeros(2), s1, np.zeros(2), np.eye(2), eps=1e-6)
    assert np.isfinite(value)
    assert "retrying" in caplog.text


def test_fid_rejects_complex_result() -> None:
    with pytest.raises(GanstackError, match="imaginary"):
        frechet_distance(np.zeros(3), -np.eye(3), np.zeros(3), np.eye(3))


def test_fid_order_invariant() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) * 1.5 + 0.3
    base = frechet_distance(*_stats(x), *_stats(y))
    perm = frechet_distance(*_stats(x[rng.permutation(300)]), *_stats(y[rng.permutation(300)]))
    assert perm == pytest.approx(base, rel=1e-9)


def test_fid_same_distribution_much_smaller_than_shifted() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    shifted = rng.normal(size=(2000, 8)) + 1.0
    same = frechet_distance(*_stats(a), *_stats(b))
    diff = frechet_distance(*_stats(a), *_stats(shifted))
    assert diff == pytest.approx(8.0, rel=0.1)
    assert same < 0.05 * diff


@pytest.mark.parametrize(
    ("mu2", "sigma2"),
    [(np.zeros(4), np.eye(3)), (np.zeros(3), np.eye(4)), (np.zeros((3, 1)), np.eye(3))],
)
def test_fid_shape_mismatch(mu2: np.ndarray, sigma2: np.ndarray) -> None:
    with pytest.raises(GanstackError):
        frechet_distance(np.zeros(3), np.eye(3), mu2, sigma2)


def test_fid_rejects_nan() -> None:
    with pytest.raises(GanstackError, match="NaN"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))


# ---------------------------------------------------------------------------- KID


def test_kid_same_vs_different() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    c = rng.normal(size=(300, 16)) + 0.5
    same_mean, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    diff_mean, _ = kernel_inception_distance(a, c, num_subsets=20, subset_size=200)
    assert same_std >= 0
    assert abs(same_mean) < 0.1 * diff_mean
    assert diff_mean > 0.1


def test_kid_matches_direct_formula_and_is_deterministic() -> None:
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1.0
    # subset_size clipped to 6 = all samples, so every subset is a permutation of the data.
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=1000)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / 3 + 1) ** 3

    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)
    assert kernel_inception_distance(x, y, num_subsets=3, seed=1) == pytest.approx((mean, std))


def test_kid_errors() -> None:
    with pytest.raises(GanstackError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 4)), np.zeros((10, 4)))
    with pytest.raises(GanstackError):
        kernel_inception_distance(np.zeros((10, 4)), np.zeros((10, 5)))


# ---------------------------------------------------------------------------- IS


def test_is_one_hot_balanced_is_k() -> None:
    k, splits = 7, 5
    probs = np.eye(k)[np.arange(k * splits * 3) % k]
    mean, std = inception_score(probs, splits=splits)
    assert mean == pytest.approx(k, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_is_identical_predictions_is_one() -> None:
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(10))
    mean, std = inception_score(np.tile(p, (50, 1)), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    uniform = np.full((40, 10), 0.1)
    assert inception_score(uniform, splits=4)[0] == pytest.approx(1.0, abs=1e-9)


def test_is_between_one_and_k() -> None:
    probs = np.random.default_rng(12).dirichlet(np.full(10, 0.3), size=100).astype(np.float32)
    mean, _ = inception_score(probs, splits=10)
    assert 1.0 < mean < 10.0


def test_is_errors() -> None:
    with pytest.raises(GanstackError, match="splits"):
        inception_score(np.full((5, 2), 0.5), splits=10)
    with pytest.raises(GanstackError, match="sum"):
        inception_score(np.ones((20, 3)), splits=2)


# ---------------------------------------------------------------------------- samples


def test_check_enough_samples(caplog) -> None:
    with pytest.raises(GanstackError, match="at least 2"):
        check_enough_samples(1, 2048, "generated images")
    with caplog.at_level(logging.WARNING, logger="ganstack.metrics.fid"):
        check_enough_samples(100, 2048, "generated images")
    assert "generated images" in caplog.text and "100" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ganstack.metrics.fid"):
        check_enough_samples(5000, 2048, "real images")
    assert caplog.text == ""
