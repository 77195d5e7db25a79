from __future__ import annotations

import copy
import math

import pytest
import torch

import ganstack
from ganstack.config import ConfigError, load_config
from ganstack.data.base import ImageDataset
from ganstack.data.rooms import load_rooms
from ganstack.errors import GanstackError
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.models.s2gan import (
    FCN,
    S2GAN,
    S2GANConfig,
    angular_error_deg,
    decode_normals,
    resize,
    spherical_kmeans,
)
from ganstack.train.trainer import Trainer

from .helpers import final_state, logged_losses

INFO = DataInfo((3, 32, 32), 4, "rooms")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rooms() -> ImageDataset:
    return load_rooms(160, 32, seed=5)


def _small(**kw) -> S2GANConfig:
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
        codebook_samples=5000,
        codebook_iters=5,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _batch(ds: ImageDataset, n: int = 16, start: int = 0) -> dict[str, torch.Tensor]:
    return {
        "images": ds.images[start : start + n],
        "normals": ds.extras["normals"][start : start + n],
    }


TINY = [
    "data.name=rooms",
    "data.num_images=96",
    "data.resolution=32",
    "data.eval_size=16",
    "model.normal_size=16",
    "model.z_struct=8",
    "model.z_style=8",
    "model.width=0.0625",
    "model.fcn_width=0.25",
    "model.classes=12",
    "model.codebook_samples=5000",
    "model.codebook_iters=5",
    "train.batch_size=16",
    "train.phases.structure=2",
    "train.phases.fcn=2",
    "train.phases.style=2",
    "train.phases.joint=2",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "train.num_threads=1",
    "eval.n=40",
]


# ---- pieces ---------------------------------------------------------------------------------


def test_network_shapes_and_unit_normals(rooms):
    torch.manual_seed(0)
    m = S2GAN(_small(), INFO)
    z1, z0 = torch.rand(5, 8) * 2 - 1, torch.rand(5, 8) * 2 - 1
    n = m.G_struct(z1).detach()
    assert n.shape == (5, 3, 16, 16)
    assert float((n.norm(dim=1) - 1).abs().max()) < 1e-5
    c = m.chain_normals(n)
    assert c.shape == (5, 3, 32, 32) and float((c.norm(dim=1) - 1).abs().max()) < 1e-5
    img = m.G_style(z0, c)
    assert img.shape == (5, 3, 32, 32) and float(img.detach().abs().max()) <= 1
    assert m.D_struct(n).shape == (5,) and m.D_style(img, c).shape == (5,)
    assert m.fcn(img).shape == (5, 12, 8, 8)
    out = m.sample(6, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (6, 3, 32, 32) and out["normals_struct"].shape == (6, 3, 16, 16)
    for key in ("normals", "normals_struct"):
        unit = (out[key] * 2 - 1).norm(dim=1)
        assert float((unit - 1).abs().max()) < 1e-4, key
    # The official AlexNet FCN: 128 -> (x4) 512 -> 32x32 and 64 -> 256 -> 16x16.
    for size in (128, 64):
        fcn = FCN("alexnet", 40, 1 / 32, 4, size // 4)
        assert fcn(torch.zeros(1, 3, size, size)).shape == (1, 40, size // 4, size // 4)
    # Paper sizes build (72 -> normals, 128 -> images) and run at a small width.
    big = S2GAN(S2GANConfig(width=1 / 16, fcn_width=1 / 32), DataInfo((3, 128, 128), 0, "x"))
    assert big.G_struct(torch.zeros(2, 100)).shape == (2, 3, 72, 72)
    assert big.G_style(torch.zeros(2, 100), torch.zeros(2, 3, 128, 128)).shape == (2, 3, 128, 128)


def test_codebook_kmeans_is_deterministic_and_stored(rooms):
    g = torch.Generator().manual_seed(0)
    dirs = torch.eye(3)
    pts = dirs.repeat(200, 1) + 0.05 * torch.randn(600, 3, generator=g)
    pts = pts / pts.norm(dim=1, keepdim=True)
    c1, c2 = spherical_kmeans(pts, 3, 10, seed=1), spherical_kmeans(pts, 3, 10, seed=1)
    assert torch.equal(c1, c2)
    assert float((c1 @ dirs.T).max(0).values.min()) > 0.99  # each axis found
    m = S2GAN(_small(), INFO)
    before = m.codebook.clone()
    info = m.setup(rooms, None, lambda _: None)
    assert not torch.equal(before, m.codebook) and "codebook" in m.state_dict()
    assert float((m.codebook.norm(dim=1) - 1).abs().max()) < 1e-5
    assert 0 < info["codebook_quantisation_deg"] < 15
    m2 = S2GAN(_small(), INFO)
    m2.setup(rooms, None, lambda _: None)
    assert torch.equal(m.codebook, m2.codebook)
    # Targets: the nearest codebook entry of each (downscaled) pixel.
    t = m.targets(decode_normals(rooms.extras["normals"][:2]))
    assert t.shape == (2, 8, 8) and int(t.max()) < 12
    with pytest.raises(ConfigError, match="no normals"):
        m.setup(ImageDataset(rooms.images[:4]), None, lambda _: None)


def test_skip_rule_and_warmup():
    m = S2GAN(_small(), INFO)
    t = torch.tensor
    assert m._balance(t(0.5), t(0.5)) == (True, True)
    assert m._balance(t(0.2), t(0.5)) == (False, True)  # D too good on reals: skip D
    assert m._balance(t(0.5), t(0.8)) == (True, False)  # D losing: skip G
    assert m._balance(t(0.2), t(0.8)) == (True, True)  # both skipped -> update both
    m.cfg.skip_rule = False
    assert m._balance(t(0.2), t(0.8)) == (True, True)
    # The code's warm-up: lr/50 for a network's first 10 calls of a phase, lr/5 until call 30,
    # one call a step whether the skip rule lets it update or not: a function of the step.
    lrs = [m.lr("G_struct", Step(100 + t, "structure", t)) for t in range(35)]
    assert lrs == pytest.approx([2e-4 / 50] * 10 + [2e-4 / 5] * 20 + [2e-4] * 5)
    assert m.lr("D_style", Step(0, "joint", 40)) == pytest.approx(1e-6)
    assert m.lr("G_struct", Step(0, "joint", 40)) == pytest.approx(1e-7)
    assert m.lr("G_struct", Step(0, "joint", 0)) == pytest.approx(1e-7 / 50)
    assert m.lr("fcn", Step(0, "fcn", 0)) is None  # the FCN's SGD: constant
    m.cfg.adam_warmup = False
    assert m.lr("G_style", Step(0, "style", 0)) == 2e-4


def _style_step(rooms, fcn_weight: float, perturb_fcn: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    m = S2GAN(_small(fcn_weight=fcn_weight, skip_rule=False, adam_warmup=False), INFO)
    if perturb_fcn:
        with torch.no_grad():
            for p in m.fcn.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    m.enter_phase("style", fresh=True)
    torch.manual_seed(1)
    m.train_step(_batch(rooms), "style", Step(phase="style"))
    return {k: v.clone() for k, v in m.G_style.state_dict().items()}


def test_batch_statistics_sampling_leaves_every_buffer_alone():
    # sample_bn="batch" (the code's sampling) runs BN in training mode; sampling must still leave
    # the running averages and the batch counters as they were, or a checkpoint written before a
    # sample grid would differ from the state after it (and a resumed run from an unbroken one).
    torch.manual_seed(0)
    m = S2GAN(_small(sample_bn="batch"), INFO)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.grid(2, 3, vary=m.noise_dims(), generator=torch.Generator().manual_seed(0))
    assert m.training
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == []


def test_fcn_weight_zero_removes_its_gradient(rooms):
    # With weight 0 the FCN has no influence at all: changing it leaves G's update unchanged.
    a, b = _style_step(rooms, 0.0, False), _style_step(rooms, 0.0, True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Control: with the constraint on, the FCN's weights change G's update.
    c, d = _style_step(rooms, 0.1, False), _style_step(rooms, 0.1, True)
    assert any(not torch.equal(c[k], d[k]) for k in c)
    # ... and the frozen FCN itself is not trained by the style phase.
    torch.manual_seed(0)
    m = S2GAN(_small(), INFO)
    fcn_before = copy.deepcopy(m.fcn.state_dict())
    m.enter_phase("style", True)
    logs = m.train_step(_batch(rooms), "style", Step(phase="style"))
    assert "g_style_fcn" in logs and math.isfinite(float(logs["g_style_fcn"]))
    assert all(torch.equal(fcn_before[k], v) for k, v in m.fcn.state_dict().items())


@pytest.mark.parametrize("fcn_weight", [0.0, 0.1])  # with the FCN term too: it once replaced it
def test_style_mode_seeking_term_is_the_papers_ratio_and_moves_g(rooms, fcn_weight):
    def step(weight: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        m = S2GAN(
            _small(
                fcn_weight=fcn_weight, skip_rule=False, adam_warmup=False, style_mode_seeking=weight
            ),
            INFO,
        )
        m.enter_phase("style", fresh=True)
        torch.manual_seed(1)
        logs = m.train_step(_batch(rooms), "style", Step(phase="style"))
        return logs, {k: v.clone() for k, v in m.G_style.state_dict().items()}

    off_logs, off = step(0.0)
    on_logs, on = step(1.0)
    assert "g_style_ms_ratio" not in off_logs  # off: no second rendering at all
    ratio = float(on_logs["g_style_ms_ratio"])
    assert 0 < ratio < 10 and math.isfinite(ratio)
    # The D step and the adversarial term see the same noise; only the term differs.
    assert torch.equal(off_logs["d_style_real"], on_logs["d_style_real"])
    assert torch.equal(off_logs["g_style_adv"], on_logs["g_style_adv"])
    assert any(not torch.equal(off[k], on[k]) for k in off if k.endswith("weight"))


def test_structure_anti_collapse_options(rooms):
    """The mode-seeking term adds a ratio and changes only G_struct's update; the minibatch-std
    feature makes D_struct's score depend on the batch's spread (a collapsed batch of one map
    repeated scores otherwise than that map alone would among varied maps)."""

    def step(**kw) -> tuple[S2GAN, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        m = S2GAN(_small(skip_rule=False, adam_warmup=False, **kw), INFO)
        m.enter_phase("structure", fresh=True)
        torch.manual_seed(1)
        return m, m.train_step(_batch(rooms), "structure", Step(phase="structure"))

    off, off_logs = step()
    on, on_logs = step(struct_mode_seeking=1.0)
    assert "g_struct_ms_ratio" not in off_logs
    assert 0 < float(on_logs["g_struct_ms_ratio"]) < 10
    assert torch.equal(off_logs["d_struct_real"], on_logs["d_struct_real"])
    assert torch.equal(off_logs["g_struct_adv"], on_logs["g_struct_adv"])
    g_off, g_on = off.G_struct.state_dict(), on.G_struct.state_dict()
    assert any(not torch.equal(g_off[k], g_on[k]) for k in g_off if k.endswith("weight"))

    mb, _ = step(struct_minibatch_std=True)
    d = mb.D_struct.eval()
    varied = torch.nn.functional.normalize(torch.randn(8, 3, 16, 16), dim=1)
    same = varied[:1].expand(8, -1, -1, -1)
    with torch.no_grad():
        alone = d(varied)[0]  # map 0 among varied maps
        repeated = d(same)[0]  # map 0 in a batch of copies of itself
    assert not torch.allclose(alone, repeated)
    with torch.no_grad():  # without the feature, a map's score does not depend on its batch
        assert torch.allclose(off.D_struct.eval()(varied)[0], off.D_struct(same)[0])


def test_joint_phase_couples_the_structure_gan(rooms):
    def struct_after(**kw) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        m = S2GAN(_small(skip_rule=False, adam_warmup=False, joint_lr_struct=1e-3, **kw), INFO)
        before = {k: v.clone() for k, v in m.G_struct.state_dict().items()}
        m.enter_phase("joint", True)
        logs = m.train_step(_batch(rooms), "joint", Step(phase="joint"))
        assert {"g_struct_adv", "g_style_adv", "d_style_real"} <= set(logs)
        after = m.G_struct.state_dict()
        return {k: after[k] - before[k] for k in before if after[k].is_floating_point()}

    moved = struct_after()
    assert any(float(v.abs().max()) > 0 for v in moved.values())
    # Neither the style gradient (lamda0 = 0) nor its own loss (lamda = 0): G_struct stays.
    still = struct_after(joint_style_to_struct=0.0, joint_struct_adv=0.0)
    weights = [k for k in still if "running" not in k and "num_batches" not in k]
    assert all(float(still[k].abs().max()) == 0 for k in weights)


def test_fcn_beats_the_trivial_predictor():
    """A real bound: after 150 steps on rooms the FCN's normals are clearly better than the
    best input-independent guess (each pixel's mean training normal)."""
    train, test = load_rooms(400, 32, seed=11), load_rooms(100, 32, seed=12)
    torch.manual_seed(0)
    m = S2GAN(_small(classes=20, fcn_width=0.5), INFO)
    m.setup(train, None, lambda _: None)
    m.enter_phase("fcn", True)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(len(train), (32,), generator=g)
        logs = m.train_step(
            {"images": train.images[idx], "normals": train.extras["normals"][idx]},
            "fcn",
            Step(phase="fcn"),
        )
    target = resize(decode_normals(test.extras["normals"]), 8)
    pred = m.predict_normals(test.images.float() / 255)
    err = float(angular_error_deg(pred, target).mean())
    prior = resize(decode_normals(train.extras["normals"]), 8).mean(0, keepdim=True)
    trivial = float(angular_error_deg(prior.expand_as(target), target).mean())
    assert err < 0.75 * trivial, (err, trivial, logs)


# ---- through the trainer ----------------------------------------------------------------------


def test_bundled_configs():
    demo = load_config("s2gan-rooms")
    assert demo.model.name == "s2gan" and list(demo.train.phases) == [
        "structure",
        "fcn",
        "style",
        "joint",
    ]
    assert demo.data.name == "rooms" and demo.model.fcn_weight == pytest.approx(0.1)
    paper = load_config("s2gan-nyu-paper")
    assert paper.model.normal_size == 72 and paper.data.resolution == 128
    assert paper.model.width == 1.0 and paper.model.fcn_arch == "alexnet"
    assert paper.model.joint_lr_style == pytest.approx(1e-6)
    m = build_model(demo.model, DataInfo((3, 64, 64), 4, "rooms"))
    assert isinstance(m, S2GAN) and m.fcn_size == 16


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.normal_size=12", "multiple of 8"),
        ("model.width=0", "width must be"),
        ("model.fcn_weight=-1", "fcn_weight"),
        ("model.skip_margin=0.6", "skip_margin"),
        ("model.fcn_arch=vgg", "expected one of"),
        ("model.clases=3", "Did you mean 'classes'"),
    ],
)
def test_bad_config_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("s2gan-rooms", [override])


def test_image_size_and_data_checks(rooms):
    with pytest.raises(ConfigError, match="multiple of 16"):
        S2GAN(_small(), DataInfo((3, 40, 40), 0, "x"))
    m = S2GAN(_small(), INFO)
    with pytest.raises(GanstackError, match="normals"):
        m.train_step({"images": rooms.images[:4]}, "style", Step(phase="style"))
    with pytest.raises(GanstackError, match="no phase"):
        m.train_step(_batch(rooms), "bogus", Step(phase="bogus"))


def test_every_phase_trains_and_the_run_loads_with_its_figures_and_measures(tmp_path):
    """(Exact resume, for every model: tests/test_contract.py.)"""
    cfg = load_config("s2gan-rooms", TINY)
    straight = tmp_path / "straight"
    assert Trainer(cfg, straight).fit() == "done"
    rows = logged_losses(straight)
    assert len(rows) == 8
    assert "loss/g_struct_adv" in rows[0] and "loss/fcn_ce" in rows[2]
    assert "loss/g_style_fcn" in rows[4] and "loss/g_style_adv" in rows[6]
    a = final_state(straight)
    assert "model/codebook" in a and "model/adam_calls" not in a  # the Step is the clock
    for name in ("samples/joint-final.png", "checkpoints/phase-style.json"):
        assert (straight / name).exists(), name
    # Loading the run: figures, and the model's own measures through `ganstack eval`.
    run = ganstack.load(straight)
    figs = run.model.figures(torch.Generator().manual_seed(0))
    assert figs["structure_image"].shape == (8, 10, 3, 32, 32)
    assert figs["vary_style"].shape == (6, 10, 3, 32, 32)
    assert figs["same_style"].shape == (10, 6, 3, 32, 32)
    res = run.evaluate(n=40, metrics=["normal_consistency", "fid_normals", "fid"])
    metrics = res["metrics"]
    for key in (
        "normal_err_deg_fcn_rendered",
        "normal_err_deg_fcn_chain",
        "normal_err_deg_fcn_real",
    ):
        assert 0 <= metrics[key] <= 180, key
    assert any(k.startswith("fid40_normals_") for k in metrics)
    assert any(k.startswith("fid40_rooms") for k in metrics)
