"""Helpers shared by the tests that train through the Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ganstack.train import checkpoint as ckpt


def logged_losses(run: Path) -> list[dict]:
    """The step and every ``loss/...`` value of each line of ``metrics.jsonl``."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("loss/") or k == "step"} for r in rows]


def final_state(run: Path) -> dict[str, torch.Tensor]:
    """Model and optimizer tensors of the newest checkpoint of ``run``."""
    _, tensors = ckpt.read_checkpoint(ckpt.list_checkpoints(run / "checkpoints")[-1])
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "optim/"))}


def assert_resume_is_exact(cfg, tmp_path: Path, stop_at: int = 3) -> None:  # type: ignore[no-untyped-def]
    """Train ``cfg`` straight through, and again stopped after ``stop_at`` steps and resumed:
    the logged losses and the final weights and optimizer state must be identical."""
    from ganstack.train.trainer import Trainer

    straight, split = tmp_path / "a", tmp_path / "b"
    Trainer(cfg, straight).fit()
    assert Trainer(cfg, split).fit(max_steps=stop_at) == "interrupted"
    Trainer(cfg, split, resume=True).fit()
    assert logged_losses(split) == logged_losses(straight)
    a, b = final_state(straight), final_state(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
