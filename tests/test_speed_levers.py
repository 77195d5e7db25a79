"""The CPU speed levers (train.channels_last, train.fused_optimizers) change speed, not results."""

from __future__ import annotations

import pytest
import torch

from ganstack.config import load_config
from ganstack.train.trainer import Trainer

from .helpers import final_state, logged_losses
from .test_sgan_recipe import TINY, _tiny_mnist_like

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp_path, name: str, *extra: str) -> Trainer:
    cfg = load_config(
        "sgan-mnist",
        [*TINY, "train.ema=0", "train.phases.independent=3", "train.phases.joint=1", *extra],
    )
    t = Trainer(cfg, tmp_path / name, datasets=_tiny_mnist_like())
    assert t.fit() == "done"
    return t


def test_levers_keep_the_losses_and_weights(tmp_path):
    base = _train(tmp_path, "base")
    fast = _train(tmp_path, "fast", "train.channels_last=true", "train.fused_optimizers=true")
    conv = fast.model.D[0].trunk[1][0].weight  # (the first has 1 input channel)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(g["fused"] for o in fast.model.optimizers.values() for g in o.param_groups)
    a, b = logged_losses(tmp_path / "base"), logged_losses(tmp_path / "fast")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-3, abs=1e-5), k
    # Adam divides each gradient by its running size, so a rounding difference in a near-zero
    # gradient can move a weight by up to lr (5e-4) per step: 4 steps, at most 2e-3.
    wa, wb = final_state(tmp_path / "base"), final_state(tmp_path / "fast")
    for k in wa:
        if k.startswith("model/"):
            assert float((wa[k] - wb[k]).abs().max()) <= 2.5e-3, k
    assert base.cfg.train.channels_last is False


def test_bf16_autocast_on_a_cpu_trains(tmp_path, tiny_overrides):
    """train.precision=bf16 on a CPU (the lever that halves the StackGAN-v2 birds step on CPUs
    with AVX512-BF16): the step runs under bfloat16 autocast, checkpoints stay fp32, and the
    top level still learns its labels (its label loss falls from chance)."""
    cfg = load_config(
        "sgan-mnist",
        tiny_overrides
        + [
            "train.phases.independent=60",
            "train.phases.joint=0",
            "model.lr=1e-3",
            "model.encoder.pretrain_epochs=5",
            "model.encoder.pretrain_batch_size=25",
            "train.precision=bf16",
        ],
    )
    t = Trainer(cfg, tmp_path / "run")
    assert t.amp_dtype == torch.bfloat16
    seen = []
    hook = t.model.G[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert t.fit() == "done"
    hook.remove()
    assert torch.bfloat16 in seen
    rows = logged_losses(tmp_path / "run")
    first = sum(r["loss/g1_cond"] for r in rows[:3]) / 3
    last = sum(r["loss/g1_cond"] for r in rows[-3:]) / 3
    assert first > 1.8 and last < 0.6 * first, (first, last)
    state = final_state(tmp_path / "run")
    assert all(v.dtype != torch.bfloat16 for v in state.values())
