from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganstack.config import ConfigError, load_config
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.models.lapgan import (
    LAPGAN,
    ConvCoarseDiscriminator,
    LAPGANConfig,
    downsample,
    gaussian_pyramid,
    laplacian_pyramid,
    reconstruct,
    upsample,
)
from ganstack.train.trainer import Trainer

from .conftest import bar_digits
from .helpers import final_state, logged_losses

INFO = DataInfo((1, 28, 28), 10, "toy")


def _small(**kw) -> LAPGANConfig:
    cfg = LAPGANConfig(
        z_dim=8,
        coarse_g_hidden=32,
        coarse_d_hidden=32,
        g_hidden=8,
        d_hidden=8,
        g_kernels=[3, 3, 3],
        d_kernels=[3, 3],
        coarse_g_maps=8,
        coarse_d_maps=8,
        optimizer="adam",
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _batch(n=16, shape=(1, 28, 28), labels=True, seed=0):
    if shape == (1, 28, 28):  # the easy 'bar digits' of conftest
        images, _ = bar_digits(n, seed)
        out = {"images": torch.from_numpy(images)[:, None]}
    else:
        g = torch.Generator().manual_seed(seed)
        out = {"images": torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)}
    if labels:
        out["labels"] = torch.arange(n) % 10
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(mnist_dir: Path) -> list[str]:
    """Overrides that make lapgan-mnist train a step in milliseconds (also used by
    tests/test_reliability.py)."""
    return [
        "data.name=mnist",
        f"data.path={mnist_dir}",
        "data.eval_size=50",
        "model.z_dim=8",
        "model.coarse_g_hidden=32",
        "model.coarse_d_hidden=32",
        "model.g_hidden=8",
        "model.d_hidden=8",
        "model.g_kernels=[3,3,3]",
        "model.d_kernels=[3,3]",
        "model.coarse_g_maps=8",
        "model.coarse_d_maps=8",
        "train.batch_size=20",
        "train.phases.independent=5",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
        "eval.n=100",
        # The three-level pyramid these tests were written for (the demo now has two levels).
        "model.levels=3",
        "model.class_planes=plane",
        "model.coarse_d_condition=planes",
    ]


@pytest.fixture()
def lap_overrides(mnist_dir: Path) -> list[str]:
    return tiny(mnist_dir)


class ToyClassifier:
    """A fixed random projection of the pixels, standing in for the trained domain classifier
    (training it takes longer than these tests may)."""

    def __init__(self, pixels: int, classes: int = 10) -> None:
        self.w = torch.randn(pixels, 16, generator=torch.Generator().manual_seed(0))
        self.classes = classes

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # logits
        return images.flatten(1).float() / 255 @ self.w[:, : self.classes]

    def to(self, device: object) -> ToyClassifier:
        return self

    def predict(self, images: torch.Tensor, bs: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.flatten(1).float() / 255
        return x @ self.w, (x @ self.w[:, : self.classes]).softmax(1)


@pytest.fixture()
def toy_classifier(monkeypatch):
    import importlib

    ev = importlib.import_module("ganstack.metrics.evaluate")
    monkeypatch.setattr(
        ev,
        "get_classifier",
        lambda ref, held=None, recipe=None: (
            ToyClassifier(28 * 28),
            {"name": "toy" if recipe is None or recipe.arch == "cnn" else "toyalt"},
        ),
    )


# ---- the pyramid ----------------------------------------------------------------------------


def test_pyramid_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    x = LAPGAN.preprocess(u8)
    for levels in (1, 2, 4, 6):
        coeffs = laplacian_pyramid(x, levels)
        assert len(coeffs) == levels
        back = reconstruct(coeffs)
        assert float((back - x).abs().max()) < 1e-5
        # Back to bytes it is bit-for-bit the input.
        assert torch.equal(((back + 1) * 127.5).round().to(torch.uint8), u8)


def test_pyramid_shapes_and_operators():
    x = torch.randn(2, 1, 28, 28)
    pyr = gaussian_pyramid(x, 3)
    assert [tuple(p.shape[-2:]) for p in pyr] == [(28, 28), (14, 14), (7, 7)]
    lap = laplacian_pyramid(x, 3)
    assert [tuple(p.shape[-2:]) for p in lap] == [(28, 28), (14, 14), (7, 7)]
    assert torch.equal(lap[-1], pyr[-1])
    # d is 2x2 averaging, which equals a bilinear downscale by 2.
    assert torch.allclose(
        downsample(x), F.interpolate(x, scale_factor=0.5, mode="bilinear"), atol=1e-6
    )
    assert float(downsample(x)[0, 0, 0, 0]) == pytest.approx(float(x[0, 0, :2, :2].mean()))
    # u keeps constants constant, and a residual of a constant image is zero.
    c = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(upsample(c), torch.full((1, 1, 16, 16), 0.3))
    assert float(laplacian_pyramid(torch.full((1, 1, 16, 16), 0.3), 3)[0].abs().max()) < 1e-6


# ---- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "levels", "classes", "kw"),
    [
        ((1, 28, 28), 3, 10, {}),
        ((1, 28, 28), 3, 10, {"class_planes": "onehot", "d_input": "concat"}),
        ((3, 32, 32), 4, 0, {}),  # the 8x8 level's D needs padded convs
        ((3, 16, 24), 2, 10, {"conditional": False, "optimizer": "sgd", "lr": 0.02}),
        ((1, 28, 28), 1, 10, {"coarse_output": "tanh"}),
        ((1, 28, 28), 3, 10, {"coarse_arch": "conv", "coarse_output": "tanh"}),  # 7x7: odd
        ((3, 32, 32), 3, 24, {"coarse_arch": "conv", "class_planes": "onehot"}),  # 8x8: even
        ((3, 16, 24), 2, 0, {"coarse_arch": "conv", "optimizer": "sgd"}),  # 8x12
    ],
)
def test_every_level_has_the_right_shapes(shape, levels, classes, kw):
    torch.manual_seed(0)
    m = LAPGAN(_small(levels=levels, **kw), DataInfo(shape, classes, "toy"))
    c, h, w = shape
    dims = m.noise_dims()
    assert list(dims) == [f"z{k}" for k in reversed(range(levels))]
    assert dims[f"z{levels - 1}"] == 8
    for k in range(levels - 1):
        assert dims[f"z{k}"] == (h >> k) * (w >> k)
    assert m.conditional == (classes > 0 and kw.get("conditional", True))
    logs = m.train_step(
        _batch(12, shape, labels=classes > 0), "independent", Step(phase="independent")
    )
    assert set(logs) == (
        {f"{n}{k}_adv" for n in "dg" for k in range(levels)} | {f"d{k}_acc" for k in range(levels)}
    )
    assert all(0 <= float(logs[f"d{k}_acc"]) <= 1 for k in range(levels))
    assert m.image_outputs() == [f"level{k}" for k in reversed(range(1, levels))] + ["image"]
    assert all(torch.isfinite(v) for v in logs.values())
    out = m.sample(5, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (5, c, h, w)
    for k in range(levels):
        lv = out[f"level{k}"]
        assert lv.shape == (5, c, h >> k, w >> k)
        assert float(lv.min()) >= 0 and float(lv.max()) <= 1
    assert torch.equal(out["image"], out["level0"])


def test_generate_chains_coarse_to_fine():
    """With the residual generators switched off, each level is the upsampled coarser one."""
    torch.manual_seed(0)
    m = LAPGAN(_small(), INFO)
    inputs = m.draw_inputs(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for k in range(2):
            last = m.G[k].net[-1]
            last.weight.zero_()
            last.bias.zero_()
        out = m.generate(inputs)
    coarse = out["level2"] * 2 - 1
    assert torch.allclose(out["level1"], LAPGAN.to_unit(upsample(coarse)), atol=1e-6)
    assert torch.allclose(out["level0"], LAPGAN.to_unit(upsample(upsample(coarse))), atol=1e-6)
    # A nonzero residual bias shifts the finest level by exactly that much.
    with torch.no_grad():
        m.G[0].net[-1].bias.fill_(0.1)
        shifted = m.generate(inputs)["level0"]
    assert torch.allclose(shifted, (out["level0"] + 0.05).clamp(0, 1), atol=1e-6)


def test_fixed_and_varied_noise():
    torch.manual_seed(0)
    m = LAPGAN(_small(), INFO)
    for _ in range(3):  # make G0 depend on its noise
        m.train_step(_batch(), "independent", Step(phase="independent"))
    gen = torch.Generator().manual_seed(1)
    out = m.sample(6, labels=[3], fixed=["z2", "z1"], generator=gen)
    assert out["y"].tolist() == [3] * 6
    assert torch.equal(out["z2"], out["z2"][:1].expand(6, -1))
    assert float(out["z0"].min()) >= 0 and float(out["z0"].max()) < 1
    # Coarse levels shared, the finest one varies with z0.
    # (allclose: a BLAS may round identical rows of a batch differently)
    for k in (2, 1):
        assert torch.allclose(
            out[f"level{k}"], out[f"level{k}"][:1].expand_as(out[f"level{k}"]), atol=1e-5
        )
    assert float((out["level0"][0] - out["level0"][1]).abs().max()) > 1e-3
    # Varying z2 changes the coarsest image.
    out = m.sample(6, labels=[3], fixed=["z1", "z0"], generator=gen)
    assert float((out["level2"][0] - out["level2"][1]).abs().max()) > 1e-3
    figs = m.figures(torch.Generator().manual_seed(2))
    assert set(figs) == {"level0", "level1", "level2", "pyramid", "vary_z0", "vary_z1", "vary_z2"}
    assert figs["level2"].shape == (10, 10, 1, 7, 7)
    assert figs["vary_z0"].shape == figs["level0"].shape == (10, 10, 1, 28, 28)
    assert figs["pyramid"].shape == (3, 10, 1, 28, 28)
    # The level grids show the same samples: the finest grid's coarse version is level 1's.
    assert torch.allclose(downsample(figs["pyramid"][2]), downsample(figs["level0"][0]))
    with pytest.raises(Exception, match="cannot fix"):
        m.draw_inputs(2, fixed=["z3"])


def test_unconditional_model_takes_no_labels():
    m = LAPGAN(_small(conditional=False), INFO)
    assert m.input_names() == ["z2", "z1", "z0"]
    m.train_step(_batch(labels=False), "independent", Step(phase="independent"))
    with pytest.raises(Exception, match="unconditional"):
        m.draw_inputs(2, labels=[1])


def _loss_swing(lr: float) -> dict[str, float]:
    """Largest distance of each loss from its first value over 12 steps on one batch (no
    dropout, so only the noise and the updates move the losses)."""
    torch.manual_seed(0)
    m = LAPGAN(_small(lr=lr, coarse_d_init_std=0.05, d_dropout=0.0), INFO)
    batch = _batch()
    rows = [m.train_step(batch, "independent", Step(phase="independent")) for _ in range(12)]
    return {
        k: max(abs(float(r[k]) - float(rows[0][k])) for r in rows)
        for k in rows[0]
        if k.endswith("_adv")
    }


def test_training_moves_the_losses_and_updates_every_network():
    swing = _loss_swing(2e-3)
    assert all(swing[f"{n}{k}_adv"] > 0.02 for n in "dg" for k in range(3)), swing
    # Control: with a vanishing learning rate nothing moves, so the check above can fail.
    still = _loss_swing(1e-9)
    assert all(v < 0.005 for v in still.values()), still
    torch.manual_seed(0)
    m = LAPGAN(_small(), INFO)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train_step(_batch(), "independent", Step(phase="independent"))
    after = m.state_dict()
    for name in ("G.0", "G.1", "G.2", "D.0", "D.1", "D.2"):
        ks = [k for k in before if k.startswith(name + ".")]
        assert ks and any(not torch.equal(before[k], after[k]) for k in ks), name


# ---- through the trainer ----------------------------------------------------------------------


def test_bundled_config_builds_the_mnist_pyramid():
    cfg = load_config("lapgan-mnist")
    assert cfg.model.name == "lapgan" and cfg.train.phases == {"independent": 3000}
    m = build_model(cfg.model, INFO)
    assert isinstance(m, LAPGAN) and m.sizes == [(28, 28), (14, 14)]
    assert m.D[-1].projection and m.D[-1].classes.channels == 0  # the projection coarsest D
    cfg = load_config("lapgan-shapes")
    m = build_model(cfg.model, DataInfo((3, 64, 64), 24, "shapes"))
    assert m.sizes == [(64, 64), (32, 32), (16, 16), (8, 8)] and m.conditional
    cfg = load_config("lapgan-cifar10")  # the official code's settings
    assert cfg.model.optimizer == "sgd" and cfg.model.coarse_arch == "mlp"
    m = build_model(cfg.model, DataInfo((3, 32, 32), 10, "cifar10"))
    assert m.sizes == [(32, 32), (16, 16), (8, 8)] and m.base_lrs["G0"] == 0.02


def test_sgd_schedule_follows_the_code():
    """Per epoch: momentum + 0.0008 up to 0.7, lr / 1.000004 (code); Adam is left alone."""
    torch.manual_seed(0)
    m = LAPGAN(_small(optimizer="sgd", lr=0.0, momentum_step=0.1, lr_decay=2.0), INFO)
    assert m.base_lrs == {f"{n}{k}": 0.02 for n in "GD" for k in range(3)}
    # 16 images a step, 32 in an epoch: the epoch is the real images seen // 32.
    for t, (epoch, momentum) in enumerate(
        [(0, 0.5), (0, 0.5), (1, 0.6), (1, 0.6), (2, 0.7), (2, 0.7), (3, 0.7)]
    ):
        step = Step(t, "independent", t, batch_size=16, world_size=1, dataset_size=32)
        assert step.epoch == epoch
        assert m.momentum("D2", step) == pytest.approx(momentum)
        assert m.lr("D2", step) == pytest.approx(0.02 / 2.0**epoch)
    # Under torchrun every process counts the images of all: 2 processes of 8 images a step
    # reach an epoch in as many steps as 1 process of 16 (the per-rank count ran 2x slow).
    assert m.lr("G0", Step(2, "independent", 2, 8, 2, 32)) == pytest.approx(0.02 / 2)
    assert m.lr("G0", Step(2, "independent", 2, 8, 1, 32)) == pytest.approx(0.02)
    assert "images_seen" not in m.state_dict() and "epoch_size" not in m.state_dict()
    m = LAPGAN(_small(level_lr=[1e-3, 2e-3, 3e-3], coarse_d_lr_mult=2.0), INFO)
    assert [m.optimizers[f"G{k}"].param_groups[0]["lr"] for k in range(3)] == [1e-3, 2e-3, 3e-3]
    assert m.optimizers["D2"].param_groups[0]["lr"] == pytest.approx(6e-3)
    assert isinstance(m.optimizers["G0"], torch.optim.Adam)
    assert m.lr("G0", Step(10**6, "independent", 10**6, 16, 1, 32)) is None  # Adam: constant
    assert m.momentum("G0", Step(10**6, "independent", 10**6, 16, 1, 32)) is None


def _as_written_before_the_step(ckdir: Path) -> None:
    """Give the newest checkpoint the clock buffers LAPGAN kept before the trainer's Step."""
    import json

    from safetensors.torch import load_file, save_file

    from ganstack.train import checkpoint as ckpt

    record = ckpt.list_checkpoints(ckdir)[-1]
    rec = json.loads(record.read_text())
    weights = ckdir / rec["weights"]
    tensors = load_file(str(weights))
    tensors["model/images_seen"] = torch.tensor(rec["global_step"] * 40)
    tensors["model/epoch_size"] = torch.tensor(10**6)  # wrong on purpose: it is not read
    save_file(
        tensors, str(weights), metadata={"format": "ganstack", "version": str(ckpt.FORMAT_VERSION)}
    )
    rec["sha256"] = ckpt.sha256_file(weights)
    rec["record_sha256"] = ckpt._record_digest(rec)
    record.write_text(json.dumps(rec))


def test_resume_is_exact_with_the_sgd_schedule(tmp_path, lap_overrides, caplog):
    """The SGD schedule (its clock, images seen, crosses an epoch after the split), resumed
    from a checkpoint of an older version that still holds the model's own clock buffers;
    Adam's resume is checked by tests/test_contract.py."""
    extra = [
        "model.optimizer=sgd",
        "model.momentum_step=0.1",
        "data.eval_size=200",
        "train.batch_size=40",
    ]
    cfg = load_config("lapgan-mnist", lap_overrides + extra)
    straight = tmp_path / "straight"
    trainer = Trainer(cfg, straight)
    assert trainer.fit() == "done"
    # The trainer set the rates of the last step from the model's schedule: past an epoch.
    last = Step(4, "independent", 4, 40, 1, len(trainer.train_ds))
    assert last.epoch >= 1
    group = trainer.model.optimizers["D2"].param_groups[0]
    assert (
        group["momentum"]
        == trainer.model.momentum("D2", last)
        == pytest.approx(0.5 + 0.1 * last.epoch)
    )
    assert group["lr"] == trainer.model.lr("D2", last)
    split = tmp_path / "split"
    assert Trainer(cfg, split).fit(max_steps=2) == "interrupted"
    assert len(logged_losses(split)) == 2
    _as_written_before_the_step(split / "checkpoints")
    with caplog.at_level("DEBUG", logger="ganstack"):
        assert Trainer(cfg, split, resume=True).fit() == "done"
    assert "dropped epoch_size, images_seen" in caplog.text
    assert logged_losses(split) == logged_losses(straight)
    assert len(logged_losses(straight)) == 5
    a, b = final_state(straight), final_state(split)
    assert a.keys() == b.keys() and any(k.startswith("optim/D2") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in ("samples/independent-final.png", "checkpoints/phase-independent.json"):
        assert (straight / name).exists(), name


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.levels=0", "levels must be >= 1"),
        ("model.z_dim=0", "z_dim must be > 0"),
        ("model.g_hidden=-1", "g_hidden must be > 0"),
        ("model.g_kernels=[4,3,3]", "g_kernels"),
        ("model.g_kernels=[3,3]", "g_kernels"),
        ("model.d_kernels=[3,3,3]", "d_kernels"),
        ("model.d_dropout=1.0", "d_dropout"),
        ("model.lr=-1", "lr must be >= 0"),
        ("model.level_lr=[1e-4]", "one lr per level"),
        ("model.level_lr=[1e-4,0]", "must be > 0"),
        ("model.lr_decay=0.5", "lr_decay"),
        ("model.coarse_arch=bogus", "expected one of"),
        ("model.beta1=1.5", "beta1"),
        ("model.class_planes=bogus", "expected one of"),
        ("model.coarse_d_condition=bogus", "expected one of"),
        ("model.levels_=3", "Did you mean 'levels'"),
    ],
)
def test_bad_config_values_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("lapgan-mnist", [override])


def test_image_size_must_suit_the_pyramid(tmp_path, lap_overrides):
    with pytest.raises(ConfigError, match="divisible by 8"):
        LAPGAN(_small(levels=4), DataInfo((1, 28, 28), 10, "toy"))
    cfg = load_config("lapgan-mnist", lap_overrides + ["model.levels=4"])
    with pytest.raises(ConfigError, match="divisible by 8"):
        Trainer(cfg, tmp_path / "run")


def test_levels_reach_eval_and_sample_files(tmp_path, lap_overrides, toy_classifier):
    """fid_scales/fid_levels get every coarser level; the PNG shows the levels side by side;
    --fix still works through the Run API."""
    import ganstack

    cfg = load_config("lapgan-mnist", lap_overrides)
    run = tmp_path / "run"
    Trainer(cfg, run).fit()
    r = ganstack.load(run)
    res = r.evaluate(n=100, metrics=["fid", "fid_scales", "fid_levels"])["metrics"]
    for k in ("level2", "level1"):
        assert any(name.endswith(f"_{k}") for name in res), res
        assert any(name.endswith(f"_{k}_matched") for name in res), res
    png = r.save_samples(tmp_path / "s.png", 4, labels=[2], fixed=["z2"])
    from PIL import Image

    w, h = Image.open(png).size
    assert w > 3 * 28 and h >= 28  # three levels of each sample side by side
    out = r.sample(4, labels=[2], fixed=["z2", "z1"])
    assert torch.allclose(out["level2"], out["level2"][:1].expand_as(out["level2"]), atol=1e-5)
    npz = np.load(r.save_samples(tmp_path / "s.npz", 4))
    assert npz["images"].shape == (4, 28, 28, 1) and npz["level2"].shape == (4, 7, 7, 1)


def test_fid_levels_is_zero_for_the_real_pyramid():
    """The matched reference: a coarser output equal to the real images at that scale has FID
    ~0 against it, while fid_scales (against full-resolution images) does not."""
    from ganstack.data.base import ImageDataset
    from ganstack.metrics.evaluate import METRICS, EvalContext

    images, labels = bar_digits(400, 3)
    ds = ImageDataset(
        torch.from_numpy(images)[:, None],
        torch.from_numpy(labels).long(),
        name="bars",
        num_classes=10,
    )
    coarse = F.avg_pool2d(ds.images.float(), 4).round().to(torch.uint8)
    ctx = EvalContext(
        ds.images,
        ds.labels,
        ds,
        ds,
        extra_images={"level2": coarse},
        _classifiers={"classifier": (ToyClassifier(28 * 28), {"name": "toy"})},
    )
    matched = METRICS.get("fid_levels")(ctx)
    plain = METRICS.get("fid_scales")(ctx)
    (m,), (p,) = matched.values(), plain.values()
    assert m < 0.05 * p and p > 0, (m, p)


def test_projection_coarse_d_reads_the_class_by_projection_only():
    torch.manual_seed(0)
    d = ConvCoarseDiscriminator(10, 8, (1, 14, 14), 0.0, "onehot", "projection")
    assert d.classes.channels == 0  # no class planes at the input
    assert d.net[0].in_channels == 1
    x = torch.randn(4, 1, 14, 14)
    eye = torch.eye(10)
    a, b = d(x, eye[[0, 1, 2, 3]]), d(x, eye[[5, 6, 7, 8]])
    assert not torch.allclose(a, b)  # the class changes the logit
    feats = d.net[:-1](x)
    want = d.net[-1](feats) + (feats * d.embed.weight.t()[[0, 1, 2, 3]]).sum(1, keepdim=True)
    torch.testing.assert_close(a, want)
    # The planes mode keeps its parameter names (checkpoints of earlier runs still load).
    planes = ConvCoarseDiscriminator(10, 8, (1, 14, 14), 0.0, "onehot")
    assert set(planes.state_dict()) == {k for k in d.state_dict() if not k.startswith("embed")}
