"""The speed settings of a run: what ``train.precision=auto`` picks, the autocast context every
step (and the speed benchmarks) run under, and the memory-layout and fused-optimizer levers."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ganstack.environment import cpu_native_bf16


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` for ``device``: ``auto`` becomes bf16 where the hardware computes in
    it natively (CUDA compute capability >= 8.0, where a T4 or V100 would only emulate it; a
    CPU with AVX512-BF16 or AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    return "bf16" if device.type == "cpu" and cpu_native_bf16() else "fp32"


def step_autocast(device_type: str, precision: str) -> Any:
    """The context a training step runs in: bf16 autocast, or nothing for fp32.

    Autocast's weight-cast cache is off. A step holds several updates (a D step, then G steps
    that run D again; SGAN's extra rounds of one level), and the cache keeps a weight's bf16
    copy from its first use in the context: every later forward would run on the weights from
    before the step's optimizer updates."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)


def fuse_optimizers(optimizers: Any) -> None:
    """Switch optimizers that have a fused implementation (Adam, AdamW, SGD) to it."""
    for opt in optimizers:
        if "fused" not in opt.defaults:
            continue
        for group in opt.param_groups:
            group["fused"], group["foreach"] = True, False


def apply_levers(model: torch.nn.Module, channels_last: bool, fused: bool) -> None:
    """``train.channels_last`` and ``train.fused_optimizers`` on a built model (whose
    ``optimizers`` hold its optimizers), as the trainer applies them."""
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if fused:
        fuse_optimizers(model.optimizers.values())  # type: ignore[operator]
