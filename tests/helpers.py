"""Helpers shared by the tests that train through the Trainer."""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def assert_resume_is_exact(
    cfg,
    tmp_path: Path,
    stop_at: int | Sequence[int] = 3,  # type: ignore[no-untyped-def]
    straight: Path | None = None,
) -> None:
    """Train ``cfg`` straight through, and again stopped after ``stop_at`` steps (in all) and
    resumed: the logged losses and the final weights and optimizer state must be identical.

    ``stop_at`` may list several steps: the second run is stopped and resumed at each in turn.
    ``straight``: a finished run of ``cfg`` to compare with (trained here when not given)."""
    from ganstack.train.trainer import Trainer

    stops = [stop_at] if isinstance(stop_at, int) else list(stop_at)
    split = tmp_path / "b"
    if straight is None:
        straight = tmp_path / "a"
        assert Trainer(cfg, straight).fit() == "done"
    for i, step in enumerate(stops):
        assert Trainer(cfg, split, resume=i > 0).fit(max_steps=step) == "interrupted", step
        if cfg.train.log_every == 1:
            assert len(logged_losses(split)) == step, step
    assert Trainer(cfg, split, resume=True).fit() == "done"
    assert logged_losses(split) == logged_losses(straight)
    a, b = final_state(straight), final_state(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
