"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``).

A model calls its own optimizers inside ``train_step``, so there is no DDP wrapper: instead every
optimizer gets a *step pre-hook* that averages the gradients of its parameters over all
processes just before it steps. With identical weights at the start (broadcast from rank 0) and
identical averaged gradients, every rank takes the same optimizer step and the weights stay
bit-identical; buffers (batch-norm running statistics) are broadcast from rank 0 after each step,
as DDP does with ``broadcast_buffers``.

The process group is initialised from the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) only when ``WORLD_SIZE > 1``: gloo on CPU,
NCCL on CUDA with one GPU per process (``cuda:LOCAL_RANK``). A process group the caller already
initialised is used as it is (and left to the caller to destroy).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from ganstack.errors import GanstackError

__all__ = [
    "DistContext",
    "all_reduce_gradients",
    "any_rank",
    "broadcast_tensors",
    "convert_sync_batchnorm",
    "gather_rng_states",
    "init_distributed",
    "mean_over_ranks",
    "register_gradient_hooks",
]


@dataclass
class DistContext:
    """Where this process stands in the job (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # this process group was initialised here (and is destroyed by close)
    cpu_group: Any = None  # a gloo group for small control messages (None: the default group)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.cpu_group)

    def close(self) -> None:
        """Destroy the process group if it was initialised here."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
        self.owned = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise GanstackError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the ``torchrun`` job this process belongs to, if any.

    Returns the context and the device to train on: under distributed CUDA training each process
    takes ``cuda:LOCAL_RANK``, whatever CUDA device ``device`` named.
    """
    already = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if already else _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    if not dist.is_available():
        raise GanstackError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if not already and local_rank >= torch.cuda.device_count():
            raise GanstackError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} "
                f"CUDA device(s); start at most that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    owned = False
    if not already:
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise GanstackError(
                f"WORLD_SIZE={world} but {', '.join(missing)} is not set: launch distributed "
                f"training with torchrun (e.g. torchrun --nproc_per_node 2 -m ganstack train ...)"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        owned = True
    backend = str(dist.get_backend())
    # Control messages (stop flags, RNG states) travel as CPU tensors over gloo, so they never
    # force a GPU synchronisation; with a gloo default group that group serves.
    cpu_group = None if backend == "gloo" else dist.new_group(backend="gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, owned, cpu_group)
    return ctx, device


# --------------------------------------------------------------------------------------------
# Gradients, parameters and buffers
# --------------------------------------------------------------------------------------------


def _grouped(tensors: Iterable[torch.Tensor]) -> dict[tuple, list[torch.Tensor]]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


@torch.no_grad()
def all_reduce_gradients(params: Iterable[nn.Parameter], world: int, group: Any = None) -> None:
    """Average the gradients of ``params`` over all ranks, in one all-reduce per dtype.

    A gradient that is ``None`` counts as zeros; a parameter whose gradient is ``None`` on every
    rank keeps ``None`` (so optimizers still skip it). The same rule runs on every rank, so all
    ranks end with the same gradients.
    """
    for (device, dtype), ps in _grouped(p for p in params).items():
        if any(p.grad is not None and p.grad.is_sparse for p in ps):
            raise GanstackError("distributed training does not support sparse gradients")
        n = len(ps)
        flags = torch.tensor([p.grad is not None for p in ps], dtype=dtype, device=device)
        parts = [flags] + [
            p.grad.reshape(-1)
            if p.grad is not None
            else torch.zeros(p.numel(), dtype=dtype, device=device)
            for p in ps
        ]
        buf = torch.cat(parts)
        dist.all_reduce(buf, group=group)
        buf[n:].div_(world)
        offset = n
        for p, count in zip(ps, buf[:n].tolist(), strict=True):
            numel = p.numel()
            if count > 0:
                avg = buf[offset : offset + numel].view_as(p)
                if p.grad is None:
                    p.grad = avg.clone()
                else:
                    p.grad.copy_(avg)
            offset += numel


def register_gradient_hooks(
    optimizers: Iterable[torch.optim.Optimizer], ctx: DistContext
) -> list[RemovableHandle]:
    """Make every optimizer average its parameters' gradients over the ranks before it steps."""

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for g in opt.param_groups for p in g["params"]]
        all_reduce_gradients(params, ctx.world)

    return [opt.register_step_pre_hook(hook) for opt in optimizers]


@torch.no_grad()
def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0, group: Any = None) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (one broadcast per dtype)."""
    for ts in _grouped(tensors).values():
        buf = torch.cat([t.detach().reshape(-1) for t in ts])
        dist.broadcast(buf, src, group=group)
        offset = 0
        for t in ts:
            t.copy_(buf[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=ctx.cpu_group)
    return bool(t.item())


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all ranks (a new tensor)."""
    out = values.detach().clone()
    dist.all_reduce(out)
    return out.div_(dist.get_world_size())


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace the model's batch-norm layers by ``SyncBatchNorm`` (in place; same parameters).

    torch's ``SyncBatchNorm`` synchronises GPU tensors only: on a CPU it raises in training
    mode once a process group exists, so CPU training refuses the option up front.
    """
    if device.type != "cuda":
        raise GanstackError(
            "train.sync_bn=true needs CUDA: torch's SyncBatchNorm only synchronises GPU tensors "
            "(on CPU it raises 'SyncBatchNorm expected input tensor to be on GPU'). Leave "
            "train.sync_bn off for CPU training; each process then normalises with the "
            "statistics of its own part of the batch."
        )
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if converted is not model:  # only when the model itself is a batch-norm layer
        raise GanstackError("train.sync_bn: cannot convert a model that is a single BN layer")
    return model


# --------------------------------------------------------------------------------------------
# Per-rank RNG states for checkpoints
# --------------------------------------------------------------------------------------------


def _encode_rng(tensors: dict[str, torch.Tensor], meta: dict) -> torch.Tensor:
    payload = {
        "meta": meta,
        "tensors": {
            k: [
                str(v.dtype).removeprefix("torch."),
                list(v.shape),
                base64.b64encode(v.cpu().contiguous().numpy().tobytes()).decode(),
            ]
            for k, v in tensors.items()
        },
    }
    return torch.frombuffer(bytearray(json.dumps(payload).encode()), dtype=torch.uint8)


def _decode_rng(data: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    payload = json.loads(bytes(data.numpy()).decode())
    tensors = {}
    for k, (dtype, shape, b64) in payload["tensors"].items():
        raw = bytearray(base64.b64decode(b64))
        tensors[k] = torch.frombuffer(raw, dtype=getattr(torch, dtype)).reshape(shape).clone()
    return tensors, payload["meta"]


def gather_rng_states(
    local: tuple[dict[str, torch.Tensor], dict], ctx: DistContext
) -> list[tuple[dict[str, torch.Tensor], dict]]:
    """Every rank's RNG state (tensors, JSON meta), indexed by rank, on every rank."""
    data = _encode_rng(*local)
    size = torch.tensor([data.numel()], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world)]
    dist.all_gather(sizes, size, group=ctx.cpu_group)
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: data.numel()] = data
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded, group=ctx.cpu_group)
    return [_decode_rng(p[: int(s)]) for p, s in zip(parts, sizes, strict=True)]
