"""Precision, recall, density and coverage of generated samples in a feature space.

* Precision and recall: Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing
  Generative Models", NeurIPS 2019. Each set's manifold is the union of balls around its points
  with radius the distance to the point's k-th nearest neighbour in the same set; precision is
  the share of generated samples inside the real manifold, recall the share of real samples
  inside the generated one. stylegan2-ada's ``pr50k3`` uses k = 3.
* Density and coverage: Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative
  Models", ICML 2020 (k = 5 there). Density counts how many real balls hold each generated
  sample (divided by k, so real data scores about 1); coverage is the share of real balls that
  hold at least one generated sample. Both use only the real set's balls, so a few outliers
  among the generated samples cannot inflate them.

A generator that repeats a handful of images keeps a high precision but gets a low recall and
coverage: these are the metrics that show a lack of variety.
"""

from __future__ import annotations

import torch

from ganstack.errors import GanstackError

__all__ = ["kth_neighbour_radii", "prdc"]


def _as_features(x: torch.Tensor | object, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.dim() != 2 or len(t) < 2:
        raise GanstackError(
            f"{name}: expected an (N, D) feature array with N >= 2, got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise GanstackError(f"{name} contains NaN or infinite values")
    return t


def kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row (float64, (N,))."""
    if not 1 <= k < len(x):
        raise GanstackError(f"k = {k} nearest neighbours need more than {k} samples, got {len(x)}")
    out = []
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s : s + chunk], x)
        # The row's own distance (0) is the smallest: the k-th neighbour is the (k+1)-th value.
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def prdc(
    real: torch.Tensor, fake: torch.Tensor, k_pr: int = 3, k_dc: int = 5, chunk: int = 1024
) -> dict[str, float]:
    """Precision and recall (k = ``k_pr``), density and coverage (k = ``k_dc``) of ``fake``
    feature vectors against ``real`` ones, both (N, D); computed exactly, in float64."""
    real = _as_features(real, "real features")
    fake = _as_features(fake, "generated features")
    if real.shape[1] != fake.shape[1]:
        raise GanstackError(
            f"real and generated features differ in dimension: {real.shape[1]} and {fake.shape[1]}"
        )
    # Distances come from matrix products (fast, float64): a point exactly on a ball's edge
    # (a neighbour that defines the radius) may come out a few ulps outside it, so the radii
    # get a relative margin far below any real difference between distances.
    margin = 1.0 + 1e-9
    r_pr = kth_neighbour_radii(real, k_pr, chunk) * margin
    f_pr = kth_neighbour_radii(fake, k_pr, chunk) * margin
    r_dc = kth_neighbour_radii(real, k_dc, chunk) * margin
    in_real = torch.zeros(len(fake), dtype=torch.bool)  # precision: fake inside a real ball
    density_hits = torch.zeros(len(fake), dtype=torch.float64)
    covered = torch.zeros(len(real), dtype=torch.bool)  # coverage: real ball holds a fake
    recalled = torch.zeros(len(real), dtype=torch.bool)  # recall: real inside a fake ball
    for s in range(0, len(fake), chunk):
        d = torch.cdist(fake[s : s + chunk], real)  # (chunk, N_real)
        in_real[s : s + chunk] = (d <= r_pr[None]).any(1)
        inside_dc = d <= r_dc[None]
        density_hits[s : s + chunk] = inside_dc.sum(1, dtype=torch.float64)
        covered |= inside_dc.any(0)
        recalled |= (d <= f_pr[s : s + chunk, None]).any(0)
    return {
        "precision": float(in_real.double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(density_hits.sum() / (k_dc * len(fake))),
        "coverage": float(covered.double().mean()),
    }
