"""benchmarks/baseline.py: the equal-wall-time DCGAN baseline (networks, a tiny run, bundling)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ganstack.config import load_config
from ganstack.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline.py"
# As tests/test_stackgan_v2.py: 16x16 shapes, with the demo's tree shrunk to match (the demo
# model is built to learn how it is conditioned).
TINY_SHAPES = [
    "data.resolution=16",
    "data.num_images=96",
    "data.eval_size=48",
    "data.text_dim=32",
    "model.base_size=4",
    "model.branches=3",
]


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("ganstack_benchmark_baseline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_size_plan(baseline):
    assert baseline.size_plan(28) == (7, 2)
    assert baseline.size_plan(32) == (4, 3)
    assert baseline.size_plan(64) == (4, 4)
    assert baseline.size_plan(16) == (4, 2)
    with pytest.raises(ValueError):
        baseline.size_plan(7)


def test_networks_mnist_class_conditional(baseline):
    g, d = baseline.build_networks((1, 28, 28), "class", 10)
    convs = [m for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (110, 128, 7, 1),
        (128, 64, 4, 2),
        (64, 1, 4, 2),
    ]
    assert d.main[0].in_channels == 1 + 10
    z, y = torch.randn(5, 100), torch.nn.functional.one_hot(torch.arange(5), 10).float()
    x = g(z, y)
    assert x.shape == (5, 1, 28, 28) and float(x.detach().abs().max()) <= 1
    assert d(x, y).shape == (5,)


def test_networks_64_rgb_is_the_original(baseline):
    g, d = baseline.build_networks((3, 64, 64), "class", 24)
    maps = [m.out_channels for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)]
    assert maps == [512, 256, 128, 64, 3]
    dmaps = [m.out_channels for m in d.main if isinstance(m, torch.nn.Conv2d)]
    assert dmaps == [64, 128, 256, 512, 1]
    # No BN on D's first layer, none after G's output; N(1, 0.02) BN weights.
    assert isinstance(d.main[1], torch.nn.LeakyReLU)
    assert isinstance(g.main[-1], torch.nn.Tanh)
    bn = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert abs(float(torch.cat([m.weight.detach() for m in bn]).mean()) - 1) < 0.01
    y = torch.nn.functional.one_hot(torch.tensor([0, 23]), 24).float()
    x = g(torch.randn(2, 100), y)
    assert x.shape == (2, 3, 64, 64)
    assert d(x, y).shape == (2,)


def test_text_conditional_config_builds_caption_conditioned_nets(baseline):
    cfg = load_config("stackgan-v2-shapes", TINY_SHAPES)
    train, ev = load_dataset(cfg.data)
    kind, dim, _ = baseline.demo_conditioning(cfg, train)
    assert (kind, dim) == ("text", 32)
    g, d = baseline.build_networks(train.shape, kind, dim)
    assert g.main[0].in_channels == 100 + 32
    assert d.project is not None and d.project.in_features == 32
    assert d.main[0].in_channels == 3 + baseline.TEXT_PLANES
    cond = baseline.Conditioner(kind, dim)
    batch = {"images": train.images[:6], "embeddings": train.extras["embeddings"][:6]}
    c = cond.of_batch(batch, torch.Generator().manual_seed(0))
    assert c.shape == (6, 32)
    x = g(torch.randn(6, 100), c)
    assert x.shape == (6, 3, 16, 16)
    assert d(x, c).shape == (6,)
    grid = baseline.sample_grid(g, cond, c, "eval", torch.device("cpu"))
    assert grid.shape == (8, 8, 3, 16, 16)


def _quick_classifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-epoch domain classifiers (a separate cache entry): the protocol's 15 epochs of two
    classifiers take ~10 s on one thread, and this test checks the plumbing, not the judge."""
    import dataclasses

    # (``import ganstack.metrics.evaluate as ev`` would give the function the package exports)
    ev = importlib.import_module("ganstack.metrics.evaluate")
    original = getattr(ev, "recipe_for", None)
    if original is not None:
        monkeypatch.setattr(
            ev,
            "recipe_for",
            lambda ds, arch="cnn": dataclasses.replace(original(ds, arch), epochs=1),
        )


def test_tiny_mnist_run_writes_result(baseline, mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(baseline, "BUNDLE_DIR", tmp_path / "bundled")
    _quick_classifiers(monkeypatch)
    out = tmp_path / "res" / "baseline.json"
    sets = ["data.name=mnist", f"data.path={mnist_dir}", "data.eval_size=50", "eval.n=100"]
    result = baseline.main(
        [
            "sgan-mnist",
            "--steps",
            "3",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
            "--bundle",
            "--no-progress",
            "--set",
            *sets,
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["steps"] == result["steps"] == 3 and saved["budget"] == "steps"
    for key in (
        "config",
        "seed",
        "minutes",
        "steps",
        "images_seen",
        "images_per_s",
        "cpu",
        "torch",
        "threads",
        "command",
        "metrics",
        "protocol",
    ):
        assert key in saved, key
    assert saved["config"] == "sgan-mnist" and saved["seed"] == 3 and saved["threads"] == 1
    assert saved["images_seen"] == 64 * saved["steps"]
    assert saved["conditioning"] == "class (10)"
    metrics = saved["metrics"]
    assert any(k.startswith("acc") for k in metrics)
    assert any(k.startswith("fid") for k in metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert saved["protocol"]["num_samples"] == 100
    assert out.with_suffix(".png").is_file() and out.with_suffix(".md").is_file()
    assert json.loads((tmp_path / "bundled" / "sgan-mnist.json").read_text()) == saved
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("baseline sgan-mnist")


def test_budgets_wall_time_steps_and_equal_time(baseline, tmp_path, monkeypatch):
    def budget(*argv: str) -> tuple:
        return baseline.training_budget(
            baseline.parse_args(["lapgan-mnist", *argv]), "lapgan-mnist"
        )

    monkeypatch.setattr(baseline, "RESULTS", tmp_path)
    assert budget("--minutes", "2.5") == (2.5, None, "wall time")
    assert budget("--steps", "7") == (None, 7, "steps")
    with pytest.raises(SystemExit, match="demo_time.py lapgan-mnist"):
        budget("--equal-time")  # no timing yet: says which command makes it
    timing = {
        "configs": [{"config": "lapgan-mnist", "train_minutes": 9.8, "baseline_step_ms": 105.0}]
    }
    (tmp_path / "demo_time.json").write_text(json.dumps(timing))
    minutes, steps, how = budget("--equal-time")
    assert (minutes, steps) == (9.8, round(9.8 * 60_000 / 105.0)) and "105.0 ms" in how
    with pytest.raises(SystemExit):
        baseline.parse_args(["lapgan-mnist", "--minutes", "1", "--steps", "2"])  # one budget


def test_model_measures_are_skipped_not_asked_of_images(baseline):
    # LAPGAN's and S²-GAN's measures need a ganstack model's networks: the baseline has none.
    cfg = load_config("stackgan-v2-shapes", TINY_SHAPES)
    train, _ = load_dataset(cfg.data)
    _, _, measures = baseline.demo_conditioning(cfg, train)
    assert {"level_acc", "structure", "style_noise", "noise"} <= set(measures)
    assert not {"fid", "caption", "acc"} & set(measures)
