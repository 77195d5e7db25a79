"""S²-GAN measures of the demo's quality bars: structure diversity and realism, style-noise
sensitivity, and the normalisation they rest on."""

from __future__ import annotations

import pytest
import torch

from ganstack.data.base import ImageDataset
from ganstack.data.rooms import load_rooms
from ganstack.errors import GanstackError
from ganstack.metrics import METRICS
from ganstack.metrics.evaluate import EvalContext
from ganstack.metrics.measures import MODEL_MEASURES
from ganstack.models import DataInfo
from ganstack.models.s2gan import (
    S2GAN,
    S2GANConfig,
    decode_normals,
    map_angles_deg,
    nearest_angle_deg,
    normalize,
    pairwise_angle_deg,
    pool_normals,
)

from .test_s2gan import TINY

INFO = DataInfo((3, 32, 32), 4, "rooms")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split() -> tuple[ImageDataset, ImageDataset]:
    ds = load_rooms(160, 32, seed=5)
    return ds.subset(torch.arange(120), "rooms-train"), ds.subset(
        torch.arange(120, 160), "rooms-eval"
    )


def _model(seed: int = 0) -> S2GAN:
    torch.manual_seed(seed)
    cfg = S2GANConfig(
        normal_size=16,
        z_struct=8,
        z_style=8,
        width=1 / 16,
        fcn_arch="small",
        fcn_width=0.25,
        fcn_upsample=1,
        fcn_batch_size=0,
        classes=12,
    )
    return S2GAN(cfg, INFO)


def _random_maps(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return pool_normals(torch.randn(n, 3, 16, 16, generator=g))


# ---- normalize ------------------------------------------------------------------------------


def test_normalize_matches_the_norm_form_and_gives_unit_vectors():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(8, 3, 20, 20, generator=g) * torch.rand(8, 1, 20, 20, generator=g) * 5
    n[0, :, 0, 0] = 0.0  # a zero vector stays zero, as with the clamped norm
    ref = n / n.norm(dim=1, keepdim=True).clamp_min(1e-10)
    out = normalize(n)
    assert float((out - ref).abs().max()) < 1e-6
    length = out.norm(dim=1)
    length[0, 0, 0] = 1.0
    assert float((length - 1).abs().max()) < 1e-6
    assert float(out[0, :, 0, 0].abs().max()) == 0.0
    # The gradients agree too (training runs through it).
    a = n.clone().requires_grad_(True)
    b = n.clone().requires_grad_(True)
    w = torch.randn(n.shape, generator=g)
    (normalize(a) * w).sum().backward()
    (b / b.norm(dim=1, keepdim=True).clamp_min(1e-10) * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-5)  # 1e10 at the zero vector


# ---- the angle helpers ----------------------------------------------------------------------


def test_pairwise_angle_is_zero_for_identical_maps_and_large_for_random_ones():
    one = _random_maps(1)
    assert pairwise_angle_deg(one.repeat(6, 1, 1, 1)) < 1e-4
    assert pairwise_angle_deg(_random_maps(30)) > 80  # random directions: about 90 degrees
    # A known angle: every pixel of map b is map a's rotated by 30 degrees.
    a = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    a[:, 2] = 1.0
    b = torch.zeros_like(a)
    b[:, 0], b[:, 2] = 0.5, 3**0.5 / 2
    assert abs(float(map_angles_deg(a, b)) - 30.0) < 1e-6
    with pytest.raises(GanstackError, match="at least 2"):
        pairwise_angle_deg(one)


def test_nearest_angle_of_the_reference_maps_themselves_is_zero(split):
    train, _ = split
    ref = pool_normals(decode_normals(train.extras["normals"]))
    assert float(nearest_angle_deg(ref[:40], ref).max()) < 1e-4
    # Other maps are not at 0; random ones are far.
    assert float(nearest_angle_deg(_random_maps(10), ref).min()) > 40


# ---- the structure measure ------------------------------------------------------------------


def test_structure_measure_keys_ranges_and_calibration(split):
    train, held = split
    m = _model()
    res = m.structure_measures(train, held, n=40)
    keys = {
        "struct_pairwise_deg40_pool16",
        "struct_nn_deg40_pool16_train120",
        "struct_real_pairwise_deg40_pool16",
        "struct_real_nn_deg40_pool16_train120",
    }
    assert set(res) == keys
    assert all(0 <= v <= 180 for v in res.values()), res
    # Held-out rooms are close to some training room; an untrained G's maps are not.
    assert res["struct_real_nn_deg40_pool16_train120"] < 25
    assert res["struct_nn_deg40_pool16_train120"] > 2 * res["struct_real_nn_deg40_pool16_train120"]
    assert res["struct_real_pairwise_deg40_pool16"] > 20  # real rooms differ
    assert m.structure_measures(train, held, n=40) == res  # seeded
    # Nothing held out: only the generated maps' figures.
    assert set(m.structure_measures(train, None, n=40)) == {
        "struct_pairwise_deg40_pool16",
        "struct_nn_deg40_pool16_train120",
    }


def test_structure_diversity_is_zero_for_a_collapsed_generator(split):
    train, held = split
    m = _model()
    before = m.structure_measures(train, None, n=30)["struct_pairwise_deg30_pool16"]
    assert before > 5
    # Collapse: the first layer ignores z (its batch norm then outputs its shift), so every
    # sample is the same (non-zero) map.
    conv, bn = m.G_struct.net[0], m.G_struct.net[1]
    with torch.no_grad():
        conv.weight.zero_()
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=torch.Generator().manual_seed(1)))
    after = m.structure_measures(train, None, n=30)["struct_pairwise_deg30_pool16"]
    assert after < 1e-3, after
    unit = m.sample(2)["normals_struct"] * 2 - 1  # real unit maps, not zero vectors
    assert float((unit.norm(dim=1) - 1).abs().max()) < 1e-4


# ---- the style-noise measure ----------------------------------------------------------------


def test_style_noise_measure_keys_and_ranges(split):
    train, held = split
    res = _model().style_noise_sensitivity(train, held, maps=6, noises=4)
    assert set(res) == {
        "style_noise_std6_z4_rendered",
        "style_noise_std6_z4_chain",
        "style_scene_std24_train",
    }
    assert all(0 <= v <= 2 for v in res.values()), res
    assert res["style_noise_std6_z4_rendered"] > 1e-3  # an untrained G_style uses its noise
    assert res["style_scene_std24_train"] > 0.05  # real rooms differ
    # The reference is the spread across scenes: 0 for a training set of one scene repeated.
    same = train.subset(torch.zeros(len(train), dtype=torch.long))
    assert (
        _model().style_noise_sensitivity(same, held, maps=6, noises=4)["style_scene_std24_train"]
        == 0.0
    )


def test_style_noise_is_zero_when_the_style_gan_ignores_its_noise(split):
    train, held = split
    m = _model()
    with torch.no_grad():
        m.G_style.noise_branch[0].weight.zero_()  # z0 no longer reaches the image
    res = m.style_noise_sensitivity(train, held, maps=5, noises=4)
    assert res["style_noise_std5_z4_rendered"] < 1e-6
    assert res["style_noise_std5_z4_chain"] < 1e-6
    assert res["style_scene_std20_train"] > 0.05


# ---- reaching them through `ganstack eval` --------------------------------------------------


def test_measures_are_listed_and_dispatched(split):
    train, held = split
    for name in ("structure", "style_noise"):
        assert MODEL_MEASURES[name] == "S²-GAN"
        ctx = EvalContext(train.images[:4], None, train, held)
        with pytest.raises(GanstackError, match=f"one of the S²-GAN measures.*--metrics {name}"):
            METRICS.get(name)(ctx)
    ctx = EvalContext(train.images[:20], None, train, held, model=_model())
    res = METRICS.get("structure")(ctx) | METRICS.get("style_noise")(ctx)
    assert "struct_pairwise_deg20_pool16" in res and "style_noise_std25_z8_chain" in res
    assert "style_scene_std120_train" in res  # 25 x 8 scenes asked, 120 in the split


def test_structure_and_style_noise_through_ganstack_eval(tmp_path):
    import ganstack
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    # The S²-GAN tests' tiny rooms, one structure and one style step (later overrides win).
    phases = ["structure=1", "fcn=0", "style=1", "joint=0"]
    over = [*TINY, *(f"train.phases.{p}" for p in phases)]
    Trainer(load_config("s2gan-rooms", over), tmp_path / "run").fit()
    res = ganstack.load(tmp_path / "run").evaluate(n=30, metrics=["structure", "style_noise"])
    m = res["metrics"]
    assert set(m) == {
        "struct_pairwise_deg30_pool16",
        "struct_nn_deg30_pool16_train80",
        "struct_real_pairwise_deg16_pool16",
        "struct_real_nn_deg16_pool16_train80",
        "style_noise_std16_z8_rendered",
        "style_noise_std16_z8_chain",
        "style_scene_std80_train",
    }, m
