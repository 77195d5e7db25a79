from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganstack.config import ConfigError, load_config
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.models.dcgan import DCGAN, DCGANConfig, count_parameters, start_size
from ganstack.models.lapgan import LAPGAN

from .conftest import bar_digits

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n, shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"images": torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)}
    if classes:
        out["labels"] = torch.arange(n) % classes
    return out


def test_start_sizes():
    assert [start_size(s) for s in (4, 7, 8, 14, 28, 32, 64)] == [
        (4, 0),
        (7, 0),
        (4, 1),
        (7, 1),
        (7, 2),
        (4, 3),
        (4, 4),
    ]
    for bad in (6, 12, 30, 48):
        with pytest.raises(ConfigError, match="4 \\* 2\\^n or 7 \\* 2\\^n"):
            start_size(bad)


@pytest.mark.parametrize(
    ("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 32), 0), ((3, 8, 8), 24), ((1, 7, 7), 10)]
)
def test_shapes_train_step_and_sampling(shape, classes):
    torch.manual_seed(0)
    m = DCGAN(DCGANConfig(z_dim=8, g_dim=8, d_dim=8), DataInfo(shape, classes, "toy"))
    assert m.conditional == (classes > 0)
    assert m.input_names() == (["y"] if classes else []) + ["z"]
    logs = m.train_step(_batch(6, shape, classes), "train", Step(phase="train"))
    assert set(logs) == {"d_adv", "d_acc", "g_adv"}
    assert all(torch.isfinite(v) for v in logs.values())
    out = m.sample(5, labels=[1] if classes else None, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (5, *shape)
    assert float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1
    assert m.image_outputs() == ["image"]


def test_class_and_noise_change_the_image_and_fixing_works():
    torch.manual_seed(0)
    m = DCGAN(DCGANConfig(z_dim=8, g_dim=8, d_dim=8), DataInfo((1, 28, 28), 10, "toy"))
    gen = torch.Generator().manual_seed(0)
    out = m.sample(4, labels=[0, 1, 2, 3], fixed=["z"], generator=gen)
    assert torch.equal(out["z"], out["z"][:1].expand_as(out["z"]))
    assert float((out["image"][0] - out["image"][1]).abs().max()) > 1e-4  # the class matters
    out = m.sample(4, labels=[5], generator=gen)
    assert float((out["image"][0] - out["image"][1]).abs().max()) > 1e-4  # and the noise


def _swing(lr: float) -> dict[str, float]:
    torch.manual_seed(0)
    m = DCGAN(DCGANConfig(z_dim=8, g_dim=8, d_dim=8, lr=lr), DataInfo((1, 28, 28), 10, "toy"))
    images, labels = bar_digits(32, 0)
    batch = {"images": torch.from_numpy(images)[:, None], "labels": torch.from_numpy(labels)}
    rows = [m.train_step(batch, "train", Step(phase="train")) for _ in range(15)]
    return {k: max(abs(float(r[k]) - float(rows[0][k])) for r in rows) for k in ("d_adv", "g_adv")}


def test_training_learns_and_a_zero_lr_control_does_not():
    moved = _swing(2e-3)
    assert all(v > 0.05 for v in moved.values()), moved
    still = _swing(1e-9)
    assert all(v < 0.02 for v in still.values()), still


def test_bundled_configs_match_the_lapgan_parameter_counts():
    for dataset, info in [
        ("mnist", DataInfo((1, 28, 28), 10, "m")),
        ("shapes", DataInfo((3, 64, 64), 24, "s")),
    ]:
        dc, lc = load_config(f"dcgan-{dataset}"), load_config(f"lapgan-{dataset}")
        d, lap = build_model(dc.model, info), build_model(lc.model, info)
        assert isinstance(d, DCGAN) and isinstance(lap, LAPGAN)
        for part in ("G", "D"):
            a, b = count_parameters(getattr(d, part)), count_parameters(getattr(lap, part))
            assert abs(a - b) <= 0.05 * b, (dataset, part, a, b)
        # The same images seen: equal batch and steps.
        assert dc.train.batch_size == lc.train.batch_size
        assert sum(dc.train.phases.values()) == sum(lc.train.phases.values())


def tiny(mnist_dir: Path) -> list[str]:
    """Overrides that make dcgan-mnist train a step in milliseconds (also used by
    tests/test_reliability.py)."""
    return [
        "data.name=mnist",
        f"data.path={mnist_dir}",
        "data.eval_size=50",
        "model.z_dim=8",
        "model.g_dim=8",
        "model.d_dim=8",
        "train.batch_size=20",
        "train.phases.train=4",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
    ]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.g_dim=0", "g_dim must be > 0"),
        ("model.lr=0", "lr must be > 0"),
        ("model.beta2=1", "beta2"),
        ("model.g_loss=wgan", "expected one of"),
        ("model.gdim=3", "Did you mean 'g_dim'"),
    ],
)
def test_bad_config_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("dcgan-mnist", [override])


def test_image_size_errors_are_config_errors():
    with pytest.raises(ConfigError, match="4 \\* 2\\^n"):
        DCGAN(DCGANConfig(), DataInfo((3, 48, 48), 0, "x"))
    with pytest.raises(ConfigError, match="square"):
        DCGAN(DCGANConfig(), DataInfo((3, 32, 64), 0, "x"))
