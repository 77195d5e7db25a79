"""The CPU speed levers (train.channels_last, train.fused_optimizers) change speed, not results."""

from __future__ import annotations

import json

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
        [
            *TINY,
            "train.ema=0",
            "train.phases.independent=3",
            "train.phases.joint=1",
            "train.precision=fp32",  # the layout and fused step alone
            *extra,
        ],
    )
    t = Trainer(cfg, tmp_path / name, datasets=_tiny_mnist_like())
    assert t.fit() == "done"
    return t


def test_levers_keep_the_losses_and_weights(tmp_path):
    base = _train(tmp_path, "base", "train.fused_optimizers=false", "train.channels_last=false")
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
    assert not any(g["fused"] for o in base.model.optimizers.values() for g in o.param_groups)


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
    assert t.precision == "bf16"
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
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == "bf16"


@pytest.mark.parametrize(
    ("native", "capability", "want_cpu", "want_cuda"),
    [(True, (8, 0), "bf16", "bf16"), (False, (7, 5), "fp32", "fp32")],
)
def test_auto_precision_follows_the_hardware(monkeypatch, native, capability, want_cpu, want_cuda):
    """auto: bf16 only where the hardware computes in it natively (a CPU with AVX512-BF16 or
    AMX; a GPU of compute capability >= 8.0, not a T4 or V100 that would emulate it)."""
    from ganstack.train import precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision.resolve_precision("auto", torch.device("cpu")) == want_cpu
    assert precision.resolve_precision("auto", torch.device("cuda")) == want_cuda
    for fixed in ("fp32", "bf16"):  # an explicit choice is kept on any hardware
        assert precision.resolve_precision(fixed, torch.device("cpu")) == fixed


def test_a_step_sees_its_own_updates_under_bf16():
    """Within one step's autocast, a forward after an optimizer update runs on the updated
    weights (autocast's cast cache would serve the bf16 copy made before the update)."""
    from ganstack.train.precision import step_autocast

    torch.manual_seed(0)
    lin, x = torch.nn.Linear(8, 8), torch.randn(4, 8)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    with step_autocast("cpu", "bf16"):
        before = lin(x)
        assert before.dtype == torch.bfloat16
        before.float().square().sum().backward()
        opt.step()
        after = lin(x)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, lin.weight, lin.bias)
        scale = float(expected.abs().max())
        assert float((after.float() - expected).abs().max()) < 0.02 * scale  # bf16 rounding
        assert float((after.float() - before.float()).abs().max()) > 0.2 * scale


def test_cpu_native_bf16_reads_the_cpu_flags(monkeypatch):
    from ganstack.environment import cpu_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_native_bf16() is True


def test_gpu_check_times_a_demo_on_the_cpu():
    """benchmarks/gpu_check.py (the prepared script for a session with a GPU) runs its checks
    on a CPU too: a demo's step is timed under the precision asked for, and a failed check
    is reported in the table instead of stopping the run."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("ganstack_benchmark_gpu_check", path)
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu_check
    spec.loader.exec_module(gpu_check)
    assert not any(c["kind"] == "paper" for c in gpu_check.checks(quick=True))
    assert {c["config"] for c in gpu_check.checks(quick=False)} >= {"stackgan-v2-birds"}
    row = gpu_check.time_step(
        {"kind": "demo", "config": "dcgan-mnist", "precision": "fp32"}, "cpu", 1, 1
    )
    assert row["precision_used"] == "fp32" and row["step_ms"] > 0 and row["peak_memory_mib"] > 0
    failed = {"kind": "paper", "config": "stackgan-v2-birds", "precision": "auto", "error": "OOM"}
    text = gpu_check.table(
        {"device": "cpu", "steps": 1, "repeats": 1, "environment": {}, "checks": [row, failed]}
    )
    assert "| demo | dcgan-mnist | fp32 |" in text and "failed: 'OOM'" in text
