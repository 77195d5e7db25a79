"""LAPGAN per-level class fidelity (``level_acc``): the chain started from real coarse images."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ganstack.config import load_config
from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.metrics import METRICS
from ganstack.metrics.evaluate import EvalContext
from ganstack.models import DataInfo
from ganstack.models.lapgan import LAPGAN, LAPGANConfig
from ganstack.train.trainer import Trainer

from .conftest import bar_digits

INFO = DataInfo((1, 28, 28), 10, "toy")

pytestmark = pytest.mark.usefixtures("one_thread")


class BarClassifier:
    """A judge whose rule is known: class k is the brightest of ten column bands (the bar of
    conftest's 'bar digits'); a blank image is class 0 (the first of equal scores)."""

    def predict(self, images: torch.Tensor, bs: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()[:, 0, 4:24] / 255  # (N, 20, 28)
        scores = torch.stack([x[:, :, 2 + 2 * k : 4 + 2 * k].mean((1, 2)) for k in range(10)], 1)
        return scores, (scores * 50).softmax(1)

    def to(self, device: object) -> BarClassifier:
        return self


JUDGE = {"classifier": (BarClassifier(), {"name": "bars"})}


def _held(n: int = 60, seed: int = 7) -> ImageDataset:
    images, labels = bar_digits(n, seed)
    return ImageDataset(
        torch.from_numpy(images)[:, None],
        torch.from_numpy(labels).long(),
        num_classes=10,
        name="bars-eval",
    )


def _model(**kw) -> LAPGAN:
    torch.manual_seed(0)
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
    return LAPGAN(cfg, INFO)


def _accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((BarClassifier().predict(images)[1].argmax(1) == labels).double().mean())


def _upsampled(images: torch.Tensor, level: int) -> torch.Tensor:
    """Real images shrunk 2^level times by averaging and enlarged back by repeated bilinear
    doubling, as uint8: written out here, not with the model's pyramid functions."""
    x = images.double() / 127.5 - 1
    x = F.avg_pool2d(x, 2**level)
    for _ in range(level):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return ((x + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def _set_residual(model: LAPGAN, bias: float) -> None:
    """Every finer generator outputs the constant residual ``bias``, whatever its input."""
    with torch.no_grad():
        for g in model.G[:-1]:
            g.net[-1].weight.zero_()
            g.net[-1].bias.fill_(bias)


def test_keys_ranges_and_the_real_and_upsampled_figures():
    held = _held()
    res = _model().level_accuracy(held, JUDGE, n=1000)  # n above the held-out size: all 60
    tags = ["real", "from_level1", "from_level2", "upsampled_level1", "upsampled_level2"]
    assert set(res) == {f"level_acc60_bars_{t}" for t in tags}
    assert all(0 <= v <= 1 for v in res.values()), res
    # The ceiling and the enlarged coarse images, computed independently.
    assert res["level_acc60_bars_real"] == _accuracy(held.images, held.labels) == 1.0
    for j in (1, 2):
        expect = _accuracy(_upsampled(held.images, j), held.labels)
        assert abs(res[f"level_acc60_bars_upsampled_level{j}"] - expect) < 1e-9, j
    assert _model().level_accuracy(held, JUDGE) == res  # seeded


def test_zero_residual_chain_equals_the_enlarged_coarse_images():
    held = _held()
    x = LAPGAN.preprocess(held.images)
    coarse = F.avg_pool2d(x, 4)
    m = _model()
    # Untrained generators change the image ...
    out = m.chain_from(coarse, 2, held.labels, torch.Generator().manual_seed(0))
    up = F.interpolate(
        F.interpolate(coarse, scale_factor=2, mode="bilinear"), scale_factor=2, mode="bilinear"
    )
    assert out.shape == (60, 1, 28, 28) and float((out - up).abs().max()) > 1e-3
    # ... generators with a zero residual do not, so the fidelity is the coarse image's.
    _set_residual(m, 0.0)
    out = m.chain_from(coarse, 2, held.labels, torch.Generator().manual_seed(0))
    assert float((out - up).abs().max()) < 1e-6
    res = m.level_accuracy(held, JUDGE)
    for j in (1, 2):
        assert res[f"level_acc60_bars_from_level{j}"] == res[f"level_acc60_bars_upsampled_level{j}"]


def test_a_chain_that_erases_the_image_keeps_no_class():
    """Residuals of -3 (clamped to a black image): the judge reads class 0 for every image,
    so the accuracy is the share of class 0 among the labels, while the real images and the
    enlarged coarse ones keep theirs."""
    held = _held(57)  # classes not all equally frequent
    m = _model()
    _set_residual(m, -3.0)
    res = m.level_accuracy(held, JUDGE)
    share0 = float((held.labels == 0).double().mean())
    for j in (1, 2):
        assert abs(res[f"level_acc57_bars_from_level{j}"] - share0) < 1e-9
    assert res["level_acc57_bars_real"] == 1.0
    assert res["level_acc57_bars_upsampled_level1"] > 0.5


def test_unconditional_model_and_unlabelled_data():
    held = _held()
    m = _model(conditional=False)
    res = m.level_accuracy(held, JUDGE)
    assert 0 <= res["level_acc60_bars_from_level2"] <= 1
    with pytest.raises(GanstackError, match="labelled"):
        m.level_accuracy(ImageDataset(held.images), JUDGE)
    with pytest.raises(GanstackError, match="level 2 of 3 needs images of size"):
        m.chain_from(torch.zeros(2, 1, 14, 14), 2)


@pytest.fixture()
def bar_judges(monkeypatch):
    """Both domain classifiers replaced by the bar rule (training them takes too long here)."""
    ev = importlib.import_module("ganstack.metrics.evaluate")
    monkeypatch.setattr(
        ev,
        "get_classifier",
        lambda ref, held=None, recipe=None: (
            BarClassifier(),
            {"name": "bars" if recipe is None or recipe.arch == "cnn" else "barsalt"},
        ),
    )


def test_level_acc_through_ganstack_eval(tmp_path: Path, mnist_dir: Path, bar_judges):
    import ganstack

    over = [
        "data.name=mnist",
        f"data.path={mnist_dir}",
        "data.eval_size=50",
        "model.z_dim=8",
        "model.g_hidden=8",
        "model.d_hidden=8",
        "model.coarse_g_maps=8",
        "model.coarse_d_maps=8",
        "train.batch_size=20",
        "train.phases.independent=2",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
        "train.num_threads=1",
        "model.levels=3",
    ]
    Trainer(load_config("lapgan-mnist", over), tmp_path / "run").fit()
    res = ganstack.load(tmp_path / "run").evaluate(n=40, metrics=["level_acc"])["metrics"]
    for judge in ("bars", "barsalt"):
        for tag in ("real", "from_level1", "from_level2", "upsampled_level2"):
            assert 0 <= res[f"level_acc40_{judge}_{tag}"] <= 1, (judge, tag, res)
    assert res["level_acc40_bars_real"] == 1.0  # the held-out bar digits
    # Images alone (another model, a sample file) cannot give it: the registered entry says so.
    held = _held()
    with pytest.raises(GanstackError, match="one of the LAPGAN measures.*--metrics level_acc"):
        METRICS.get("level_acc")(EvalContext(held.images, held.labels, held, held))
