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


def write_with_former_optimizer_names(ckdir: Path, former: dict[str, str]) -> None:
    """Rewrite the newest checkpoint in ``ckdir`` as a version before a rename wrote it: every
    optimizer's state under its former name (``former``: current name -> former name)."""
    from safetensors.torch import load_file, save_file

    record = ckpt.list_checkpoints(ckdir)[-1]
    rec = json.loads(record.read_text())
    assert set(rec["optimizers"]) == set(former), sorted(rec["optimizers"])
    weights = ckdir / rec["weights"]
    tensors = load_file(str(weights))
    renamed = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            name, rest = k[len("optim/") :].split("/", 1)
            k = f"optim/{former[name]}/{rest}"
        renamed[k] = v
    save_file(
        renamed, str(weights), metadata={"format": "ganstack", "version": str(ckpt.FORMAT_VERSION)}
    )
    rec["optimizers"] = {former[k]: v for k, v in rec["optimizers"].items()}
    rec["sha256"] = ckpt.sha256_file(weights)
    rec["record_sha256"] = ckpt._record_digest(rec)
    record.write_text(json.dumps(rec))


def assert_resume_is_exact_from_former_names(
    cfg,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    stop_at: int,
    former: dict[str, str],
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """Stopped after ``stop_at`` steps, its checkpoint rewritten with the optimizers' former
    names (:func:`write_with_former_optimizer_names`) and resumed, a run logs the same losses
    and ends with the same weights and optimizer state as one trained straight through."""
    from ganstack.train.trainer import Trainer

    straight, split = tmp_path / "a", tmp_path / "b"
    assert Trainer(cfg, straight).fit() == "done"
    assert Trainer(cfg, split).fit(max_steps=stop_at) == "interrupted"
    write_with_former_optimizer_names(split / "checkpoints", former)
    with caplog.at_level("DEBUG", logger="ganstack"):
        assert Trainer(cfg, split, resume=True).fit() == "done"
    for name, old in former.items():
        assert f"optimizer '{name}' read from its former name '{old}'" in caplog.text
    assert logged_losses(split) == logged_losses(straight)
    a, b = final_state(straight), final_state(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
