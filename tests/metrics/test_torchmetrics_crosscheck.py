"""ganstack's FID and KID against torchmetrics' implementations on the same random features.

torchmetrics is a test-only dependency (the ``dev`` extra). Its FID / KID accept a custom
feature extractor module; an identity module that declares its ``num_features`` makes the
"images" we update with the feature vectors themselves, so both libraries see identical
features and only the statistics and distances are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

# Imported from their modules: torchmetrics.image exports FID only with torch-fidelity, which
# its default Inception needs but a custom feature module does not.
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402
from torchmetrics.image.kid import KernelInceptionDistance  # noqa: E402

from ganstack.metrics.fid import frechet_distance, kernel_inception_distance  # noqa: E402
from ganstack.metrics.stats import FeatureStats  # noqa: E402

# torchmetrics warns that KID keeps every feature in memory: expected for these tiny sets.
pytestmark = pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")


class Features(torch.nn.Module):
    """The identity: its inputs are already the (N, D) feature vectors."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _feature_sets(dim: int, n1: int, n2: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated Gaussian feature sets with different means and covariances."""
    rng = np.random.default_rng(seed)
    mix1 = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    mix2 = mix1 + 0.3 * rng.normal(size=(dim, dim)) / np.sqrt(dim)
    f1 = rng.normal(size=(n1, dim)) @ mix1 + 0.5
    f2 = 1.2 * rng.normal(size=(n2, dim)) @ mix2 + 0.5 + 0.2 * rng.normal(size=dim)
    return f1, f2


def _ganstack_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    s1, s2 = FeatureStats(), FeatureStats()
    # In several batches, as during evaluation (exercises the streaming sums).
    for part in np.array_split(f1, 3):
        s1.append(part)
    for part in np.array_split(f2, 4):
        s2.append(part)
    return frechet_distance(*s1.mean_cov(), *s2.mean_cov())


def _torchmetrics_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    fid = FrechetInceptionDistance(feature=Features(f1.shape[1]))
    fid.set_dtype(torch.float64)
    for part in np.array_split(f1, 2):
        fid.update(torch.from_numpy(part), real=True)
    for part in np.array_split(f2, 2):
        fid.update(torch.from_numpy(part), real=False)
    return float(fid.compute())


@pytest.mark.parametrize("dim, n1, n2", [(16, 500, 400), (64, 300, 600), (8, 50, 50)])
def test_fid_matches_torchmetrics(dim, n1, n2):
    f1, f2 = _feature_sets(dim, n1, n2, seed=dim)
    ours, theirs = _ganstack_fid(f1, f2), _torchmetrics_fid(f1, f2)
    assert theirs > 0.1  # a real distance, not two copies of the same set
    assert ours == pytest.approx(theirs, rel=1e-4)


def test_fid_of_nearly_identical_sets_matches_torchmetrics():
    """Small distances are where a wrong trace term (e.g. a missing factor 2) shows most."""
    f1, _ = _feature_sets(16, 800, 10, seed=5)
    f2 = f1 + 0.01 * np.random.default_rng(6).normal(size=f1.shape)
    ours, theirs = _ganstack_fid(f1, f2), _torchmetrics_fid(f1, f2)
    assert ours < 0.05
    assert ours == pytest.approx(theirs, rel=1e-3, abs=1e-6)


def _torchmetrics_kid(
    f1: np.ndarray, f2: np.ndarray, subsets: int, subset_size: int
) -> tuple[float, float]:
    kid = KernelInceptionDistance(
        feature=Features(f1.shape[1]), subsets=subsets, subset_size=subset_size
    )
    kid.update(torch.from_numpy(f1), real=True)
    kid.update(torch.from_numpy(f2), real=False)
    mean, std = kid.compute()
    return float(mean), float(std)


def test_kid_on_whole_sets_matches_torchmetrics_exactly():
    """With one subset the size of both sets, both compute the same unbiased MMD² (the
    subsets are permutations of the whole sets), so they agree to rounding."""
    f1, f2 = _feature_sets(32, 300, 300, seed=1)
    ours, ours_std = kernel_inception_distance(f1, f2, num_subsets=1, subset_size=300)
    torch.manual_seed(0)
    theirs, _ = _torchmetrics_kid(f1, f2, subsets=1, subset_size=300)
    assert ours > 1e-3 and ours_std == 0.0
    assert ours == pytest.approx(theirs, rel=1e-6)
    # The unbiased estimator: near 0 (possibly negative) for two sets of one distribution.
    g1, _ = _feature_sets(32, 300, 10, seed=2)
    g2, _ = _feature_sets(32, 300, 10, seed=2)
    g2 = g2[::-1].copy()
    same, _ = kernel_inception_distance(g1, g2, num_subsets=1, subset_size=300)
    torch.manual_seed(0)
    same_tm, _ = _torchmetrics_kid(g1, g2, subsets=1, subset_size=300)
    assert same == pytest.approx(same_tm, rel=1e-6, abs=1e-12)


def test_kid_with_subsets_agrees_with_torchmetrics_within_its_spread():
    """Random subsets differ between the libraries; the means agree within a few standard
    errors, and far more closely than a factor-2 error in any term would allow."""
    f1, f2 = _feature_sets(32, 2000, 1500, seed=3)
    ours, ours_std = kernel_inception_distance(f1, f2, num_subsets=100, subset_size=200)
    torch.manual_seed(0)
    theirs, theirs_std = _torchmetrics_kid(f1, f2, subsets=100, subset_size=200)
    assert ours > 0 and theirs > 0
    assert ours_std == pytest.approx(theirs_std, rel=0.5)  # the same spread (both ddof=0)
    stderr = np.hypot(ours_std, theirs_std) / np.sqrt(100)
    assert abs(ours - theirs) < 5 * stderr
    assert abs(ours - theirs) < 0.25 * theirs
