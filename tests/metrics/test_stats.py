from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from ganstack.errors import GanstackError
from ganstack.metrics.stats import FeatureStats


def _data(n: int = 97, d: int = 6, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a + offset + rng.normal(size=d)


def _fill(x: np.ndarray, chunks: list[int], keep: bool = False) -> FeatureStats:
    stats = FeatureStats(keep_features=keep)
    start = 0
    for c in chunks:
        stats.append(torch.from_numpy(x[start : start + c]))
        start += c
    assert start == len(x)
    return stats


def test_matches_numpy_uneven_chunks() -> None:
    x = _data()
    stats = _fill(x, [1, 30, 0, 7, 59])
    mu, cov = stats.mean_cov()
    assert stats.num_items == 97
    assert stats.dim == 6
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False, ddof=1), rtol=1e-10, atol=1e-12)


def test_float32_tensor_input_and_large_offset() -> None:
    # float32 input is promoted to float64; a large mean must not destroy the covariance.
    x = _data(offset=1e4).astype(np.float32)
    stats = FeatureStats()
    for chunk in np.array_split(x, 5):
        stats.append(torch.from_numpy(chunk))
    mu, cov = stats.mean_cov()
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x64, rowvar=False), rtol=1e-8, atol=1e-8)


def test_numpy_input_is_copied_when_keeping_features() -> None:
    x = _data(n=10)
    stats = FeatureStats(keep_features=True)
    stats.append(x)
    stats.append(torch.from_numpy(x))
    x[:] = 0.0
    assert np.abs(stats.features()).sum() > 0


def test_merge_two_halves_equals_whole() -> None:
    x = _data(n=120)
    whole = _fill(x, [120], keep=True)
    a = _fill(x[:50], [20, 30], keep=True)
    b = _fill(x[50:], [70], keep=True)
    a.merge(b)
    assert a.num_items == 120
    mu_w, cov_w = whole.mean_cov()
    mu_m, cov_m = a.mean_cov()
    np.testing.assert_allclose(mu_m, mu_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov_m, cov_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(a.features(), x)


def test_merge_into_empty_and_with_empty() -> None:
    x = _data(n=40)
    empty = FeatureStats()
    empty.merge(_fill(x, [40]))
    empty.merge(FeatureStats())
    np.testing.assert_allclose(empty.mean_cov()[1], np.cov(x, rowvar=False), rtol=1e-10)


def test_merge_dimension_mismatch() -> None:
    a = _fill(_data(d=3), [97])
    b = _fill(_data(d=4), [97])
    with pytest.raises(GanstackError, match="dimension"):
        a.merge(b)


def test_merge_requires_features_when_kept() -> None:
    a = _fill(_data(), [97], keep=True)
    b = _fill(_data(seed=1), [97], keep=False)
    with pytest.raises(GanstackError, match="keep_features"):
        a.merge(b)


def test_save_load_round_trip(tmp_path) -> None:
    x = _data(n=33)
    stats = _fill(x, [10, 23], keep=True)
    path = tmp_path / "ref.stats"  # no .npz suffix: saved exactly here
    stats.save(path, metadata={"dataset": "x", "n": 33})
    assert path.is_file() and not (tmp_path / "ref.stats.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ref.stats"]  # no temp files left

    # Plain arrays only: no object dtype anywhere.
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
        assert json.loads(str(data["metadata"][0])) == {"dataset": "x", "n": 33}

    loaded = FeatureStats.load(path)
    assert loaded.num_items == 33 and loaded.dim == 6 and loaded.keep_features
    assert loaded.metadata == {"dataset": "x", "n": 33}
    for got, want in zip(loaded.mean_cov(), stats.mean_cov(), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.features(), x)

    # A loaded object keeps accumulating correctly.
    extra = _data(n=5, seed=3)
    loaded.append(torch.from_numpy(extra))
    np.testing.assert_allclose(
        loaded.mean_cov()[1], np.cov(np.concatenate([x, extra]), rowvar=False), rtol=1e-10
    )


def test_save_load_without_features(tmp_path) -> None:
    stats = _fill(_data(), [97])
    stats.metadata = {"k": [1, 2]}
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert not loaded.keep_features and loaded.metadata == {"k": [1, 2]}
    np.testing.assert_array_equal(loaded.mean_cov()[0], stats.mean_cov()[0])


def test_load_errors(tmp_path) -> None:
    with pytest.raises(GanstackError, match="not found"):
        FeatureStats.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(GanstackError, match="garbage.npz"):
        FeatureStats.load(garbage)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(GanstackError, match="not a ganstack feature statistics file"):
        FeatureStats.load(other)
    # Truncated file.
    good = tmp_path / "good.npz"
    _fill(_data(), [97]).save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(GanstackError):
        FeatureStats.load(truncated)
    assert zipfile.is_zipfile(good)


def test_save_metadata_not_json(tmp_path) -> None:
    with pytest.raises(GanstackError, match="JSON"):
        _fill(_data(), [97]).save(tmp_path / "s.npz", metadata={"x": object()})


def test_too_few_samples() -> None:
    stats = FeatureStats()
    with pytest.raises(GanstackError, match="at least 2"):
        stats.mean_cov()
    stats.append(torch.ones(1, 4))
    with pytest.raises(GanstackError, match="at least 2"):
        stats.mean_cov()
    stats.append(torch.zeros(1, 4))
    mu, cov = stats.mean_cov()
    np.testing.assert_allclose(mu, 0.5)
    np.testing.assert_allclose(cov, np.full((4, 4), 0.5))


def test_bad_input() -> None:
    stats = FeatureStats()
    with pytest.raises(GanstackError, match="2-D"):
        stats.append(torch.zeros(3))
    stats.append(torch.zeros(2, 3))
    with pytest.raises(GanstackError, match="dimension"):
        stats.append(torch.zeros(2, 4))
    with pytest.raises(GanstackError, match="NaN"):
        stats.append(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(GanstackError, match="keep_features"):
        stats.features()
    assert stats.num_items == 2
