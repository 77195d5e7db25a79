from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ganstack.config import load_config
from ganstack.errors import GanstackError, NonFiniteLossError
from ganstack.models.base import Step
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import Trainer

from .helpers import final_state, logged_losses


def test_training_moves_the_losses_and_writes_a_run_dir(tmp_path, tiny_overrides):
    cfg = load_config(
        "sgan-mnist",
        tiny_overrides
        + [
            "train.phases.independent=60",
            "train.phases.joint=0",
            "model.lr=1e-3",
            "model.encoder.pretrain_epochs=5",
            "model.encoder.pretrain_batch_size=25",
        ],
    )
    run = tmp_path / "run"
    Trainer(cfg, run).fit()
    rows = logged_losses(run)
    # The label loss of the top level falls from chance (ln 10 = 2.3) as G1 learns.
    first = sum(r["loss/g1_cond"] for r in rows[:3]) / 3
    last = sum(r["loss/g1_cond"] for r in rows[-3:]) / 3
    assert first > 1.8 and last < 0.6 * first, (first, last)
    for name in (
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "samples/independent-final.png",
        "checkpoints/phase-independent.json",
    ):
        assert (run / name).exists(), name
    setup = json.loads((run / "run.json").read_text())["setup"]
    assert 0.0 <= setup["encoder_accuracy_mnist-eval"] <= 1.0


def test_existing_run_needs_resume(tmp_path, tiny_overrides):
    cfg = load_config("sgan-mnist", tiny_overrides)
    Trainer(cfg, tmp_path).fit(max_steps=1)
    with pytest.raises(GanstackError, match="--resume"):
        Trainer(cfg, tmp_path)


def test_nan_loss_stops_without_writing_a_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    cfg = load_config("sgan-mnist", tiny_overrides + ["train.checkpoint_every=2"])
    trainer = Trainer(cfg, tmp_path)
    real_step = trainer.model.train_step
    calls = {"n": 0}

    def poisoned(batch, phase, step):
        calls["n"] += 1
        out = real_step(batch, phase, step)
        if calls["n"] >= 3:
            out["g0_cond"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(trainer.model, "train_step", poisoned)
    with pytest.raises(GanstackError, match=r"g0_cond became NaN/Inf by step 3"):
        trainer.fit()
    steps = [
        json.loads(p.read_text())["global_step"]
        for p in ckpt.list_checkpoints(tmp_path / "checkpoints")
    ]
    assert steps == [2]


def _poison_once(trainer, monkeypatch, at_step: int) -> dict[str, list]:
    """g0_cond is NaN the first time global step ``at_step`` runs; records the learning rate
    each optimizer step really used (the rollback scale times the model's schedule)."""
    real_step = trainer.model.train_step
    seen: dict[str, list] = {"lr": [], "poisoned": []}

    def poisoned(batch, phase, step):
        out = real_step(batch, phase, step)
        step = trainer.global_step + 1
        if step == at_step and at_step not in seen["poisoned"]:
            seen["poisoned"].append(step)
            out["g0_cond"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(trainer.model, "train_step", poisoned)
    opt = next(iter(trainer.model.optimizers.values()))
    opt.register_step_pre_hook(lambda o, *_: seen["lr"].append(o.param_groups[0]["lr"]))
    return seen


def test_nan_rollback_reloads_the_last_checkpoint_with_a_lower_lr(
    tmp_path, tiny_overrides, monkeypatch, caplog
):
    cfg = load_config(
        "sgan-mnist",
        tiny_overrides
        + ["train.checkpoint_every=2", "train.nan_policy=rollback", "train.nan_lr_factor=0.25"],
    )
    trainer = Trainer(cfg, tmp_path)
    base_lr = next(iter(trainer.model.optimizers.values())).param_groups[0]["lr"]
    seen = _poison_once(trainer, monkeypatch, at_step=3)
    with caplog.at_level("WARNING", logger="ganstack"):
        assert trainer.fit() == "done"
    assert "rolled back to step 2 with the learning rates x0.25" in caplog.text
    assert seen["poisoned"] == [3]
    rows = logged_losses(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))  # step 3 logged once
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss/"))
    # The learning rate each optimizer step used: base until the rollback, then a quarter of
    # what the model's schedule gives, and the scale is kept in the checkpoints (so --resume
    # keeps it).
    name, last_phase = next(iter(trainer.model.optimizers)), trainer.phases[-1][0]
    scheduled = trainer.model.lr(name, Step(phase=last_phase)) or base_lr  # SGAN: joint_lr
    assert seen["lr"][0] == base_lr and seen["lr"][-1] == 0.25 * scheduled
    final = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert json.loads(final.read_text())["lr_scale"] == 0.25
    resumed = Trainer(cfg, tmp_path, resume=True)
    resumed._restore_latest()
    assert resumed.lr_scale == 0.25


@pytest.mark.parametrize(
    "extra, message",
    [
        (["train.nan_retries=0"], "after 0 rollback"),
        (["train.checkpoint_every=0"], "no checkpoint written yet"),
    ],
)
def test_nan_rollback_stops_when_it_cannot_roll_back(
    tmp_path, tiny_overrides, monkeypatch, extra, message
):
    cfg = load_config(
        "sgan-mnist",
        tiny_overrides + ["train.checkpoint_every=2", "train.nan_policy=rollback", *extra],
    )
    trainer = Trainer(cfg, tmp_path)
    _poison_once(trainer, monkeypatch, at_step=3)
    with pytest.raises(NonFiniteLossError, match=f"g0_cond became NaN/Inf by step 3.*{message}"):
        trainer.fit()


def test_ctrl_c_saves_and_resume_finishes(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith("train.phases")]
    overrides += ["train.phases.independent=100000", "train.phases.joint=1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganstack", "train", "sgan-mnist", "--out", str(run), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "--resume" in out
    found = ckpt.list_checkpoints(run / "checkpoints")
    assert found, out
    step = json.loads(found[-1].read_text())["global_step"]
    assert 0 < step < 100000
    # Loading the interrupted checkpoint works and holds a consistent step.
    record, _ = ckpt.read_checkpoint(found[-1])
    assert record["phase"] == "independent"


def test_metrics_during_training_are_logged_keep_the_best_and_resume_exactly(
    tmp_path, tiny_overrides
):
    over = tiny_overrides + [
        "eval.every=3",
        "eval.during_n=40",
        "eval.during_metrics=[fid,acc]",
        "train.ema=0.9",
    ]
    cfg = load_config("sgan-mnist", over)
    straight = tmp_path / "straight"
    assert Trainer(cfg, straight).fit() == "done"
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        fids = [v for k, v in r.items() if k.startswith("eval/fid40_")]
        assert len(fids) == 2 and all(math.isfinite(v) and v >= 0 for v in fids)  # two spaces
        assert any(k.startswith("eval/acc40_") for k in r)
    best = json.loads((straight / "checkpoints" / "best-fid.json").read_text())
    key = best["best"]["metric"]
    assert best["global_step"] == best["best"]["step"] in (3, 6)
    logged = min(r[f"eval/{key}"] for r in evals if f"eval/{key}" in r)
    assert best["best"]["value"] == pytest.approx(logged, abs=1e-6)  # logged to 6 decimals

    # Evaluating during training leaves training itself untouched: the same losses and
    # weights as without it, and a run stopped and resumed in between ends the same.
    def losses(run):
        return [r for r in logged_losses(run) if len(r) > 1]  # not the eval rows

    plain = tmp_path / "plain"
    Trainer(load_config("sgan-mnist", tiny_overrides + ["train.ema=0.9"]), plain).fit()
    assert losses(plain) == losses(straight)
    split = tmp_path / "split"
    assert Trainer(cfg, split).fit(max_steps=4) == "interrupted"
    assert Trainer(cfg, split, resume=True).fit() == "done"
    assert logged_losses(split) == logged_losses(straight)
    a, b = final_state(straight), final_state(split)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_best_metric_must_be_among_those_computed(tmp_path, tiny_overrides):
    cfg = load_config(
        "sgan-mnist",
        tiny_overrides + ["eval.every=2", "eval.during_n=20", "eval.during_metrics=[acc]"],
    )
    with pytest.raises(GanstackError, match="eval.best = 'fid' is not among"):
        Trainer(cfg, tmp_path).fit()
