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
