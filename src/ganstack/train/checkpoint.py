"""Checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint named ``NAME`` is two files in the run's ``checkpoints/`` folder:

- ``NAME.safetensors``: model weights (``model/...``), optimizer tensors (``optim/...``) and the
  torch RNG states (``rng/...``; under distributed training also every rank's, ``rng/rankR/...``);
- ``NAME.json``: step, phase, optimizer hyper-parameters, Python/NumPy RNG states, the config hash
  and the SHA-256 of the safetensors file.

Both are written to a temporary file, flushed, fsynced and renamed, the JSON last: a checkpoint
exists only once its JSON does, and a kill at any moment leaves the previous one intact. Loading
never unpickles anything, and a safetensors file whose hash differs from its JSON is refused.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganstack.errors import CheckpointError
from ganstack.fileio import atomic_write_text, sha256_file

__all__ = ["atomic_write_text", "has_rank_rng", "list_checkpoints", "read_checkpoint", "restore",
           "restore_rank_rng", "rng_state", "save_checkpoint", "sha256_file"]

FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Flattening optimizer state into tensors + JSON
# --------------------------------------------------------------------------------------------


def _split_optimizer(name: str, sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, val in state.items():
            if torch.is_tensor(val):
                tensors[f"optim/{name}/{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(name: str, meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, val in tensors.items():
        if key.startswith(prefix):
            idx, sub = key[len(prefix) :].split("/", 1)
            state.setdefault(int(idx), {})[sub] = val
    for idx, vals in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(vals)
    # JSON turns tuples (Adam's betas) into lists; give the optimizer back what it saved.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def rng_state(device: torch.device | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's RNG states: (tensors, JSON-able Python/NumPy states).

    Without ``device``: the CPU generator and every initialised CUDA device's (``rng/cudaN``).
    With a CUDA ``device`` (one process per GPU): only that device's, as ``rng/cuda``.
    """
    tensors = {"rng/torch": torch.get_rng_state()}
    if device is not None:
        if device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "rng/",
                   device: torch.device | None = None) -> None:
    torch.set_rng_state(tensors[f"{prefix}torch"])
    if f"{prefix}cuda" in tensors:  # one process per GPU: its own device's state
        if device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"{prefix}cuda"], device)
    else:
        cuda = sorted((k for k in tensors if k.startswith(f"{prefix}cuda")),
                      key=lambda k: int(k[len(prefix) + 4 :]))
        if cuda and torch.cuda.is_available():
            states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(states)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npm = meta["numpy"]
    np.random.set_state((npm[0], np.array(npm[1], dtype=np.uint32), *npm[2:]))


def has_rank_rng(record: dict, rank: int) -> bool:
    """Whether a checkpoint written by distributed training holds ``rank``'s RNG states."""
    return rank < len(record.get("rng_ranks") or [])


def restore_rank_rng(record: dict, tensors: dict[str, torch.Tensor], rank: int,
                     device: torch.device | None = None) -> None:
    """Set this process's RNGs to those rank ``rank`` saved (see ``save_checkpoint``)."""
    if not has_rank_rng(record, rank) or f"rng/rank{rank}/torch" not in tensors:
        raise CheckpointError(f"checkpoint holds no RNG state for rank {rank}")
    _set_rng_state(tensors, record["rng_ranks"][rank], f"rng/rank{rank}/", device)


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    folder: Path,
    name: str,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    meta: dict[str, Any],
    rank_rng: list[tuple[dict[str, torch.Tensor], dict]] | None = None,
) -> Path:
    """Write checkpoint ``name`` atomically; returns the JSON path.

    ``rank_rng``: under distributed training, every rank's RNG states (as ``rng_state`` gives
    them, indexed by rank), stored as ``rng/rankR/...`` tensors and the record's ``rng_ranks``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model/{k}": v.detach() for k, v in model.state_dict().items()
    }
    opt_meta = {}
    for oname, opt in optimizers.items():
        t, m = _split_optimizer(oname, opt.state_dict())
        tensors.update(t)
        opt_meta[oname] = m
    rng_t, rng_meta = rng_state()
    tensors.update(rng_t)
    for r, (t, _) in enumerate(rank_rng or []):
        tensors.update({f"rng/rank{r}/{k.removeprefix('rng/')}": v for k, v in t.items()})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    st_path = folder / f"{name}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{st_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "ganstack", "version": str(FORMAT_VERSION)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, st_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record = dict(meta)
    record.update(
        {
            "format_version": FORMAT_VERSION,
            "weights": st_path.name,
            "sha256": digest,
            "optimizers": opt_meta,
            "rng": rng_meta,
        }
    )
    if rank_rng is not None:
        record["rng_ranks"] = [m for _, m in rank_rng]
    json_path = folder / f"{name}.json"
    atomic_write_text(json_path, json.dumps(record, indent=1))
    return json_path


def read_checkpoint(json_path: Path, verify: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and check a checkpoint; returns (JSON record, tensors)."""
    try:
        record = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {json_path} is unreadable or corrupt: {e}") from None
    if not isinstance(record, dict) or "weights" not in record or "sha256" not in record:
        raise CheckpointError(f"{json_path} is not a ganstack checkpoint record")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} was written by a newer ganstack (format {record['format_version']}); "
            f"upgrade ganstack to read it"
        )
    st_path = Path(json_path).parent / Path(record["weights"]).name
    if not st_path.is_file():
        raise CheckpointError(f"checkpoint weights {st_path} are missing")
    if verify:
        digest = sha256_file(st_path)
        if digest != record["sha256"]:
            raise CheckpointError(
                f"checkpoint {st_path} does not match the SHA-256 recorded in {json_path.name}: "
                f"the file was altered or damaged. Refusing to load it; resume from an earlier "
                f"checkpoint or retrain."
            )
    try:
        tensors = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {st_path} is corrupt: {e}") from None
    return record, tensors


def restore(
    record: dict,
    tensors: dict[str, torch.Tensor],
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: bool = True,
) -> None:
    """Load weights (and optionally optimizer and RNG states) into live objects."""
    sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            "checkpoint does not match the model built from the config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was the config changed?"
        )
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint tensor '{k}' has shape {tuple(v.shape)}, the model expects "
                f"{tuple(own[k].shape)}; was the config changed?"
            )
    model.load_state_dict(sd)
    if optimizers is not None:
        for name, opt in optimizers.items():
            if name not in record["optimizers"]:
                raise CheckpointError(f"checkpoint has no state for optimizer '{name}'")
            opt.load_state_dict(_join_optimizer(name, record["optimizers"][name], tensors))
    if rng:
        _set_rng_state(tensors, record["rng"])


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (JSON records) in ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob("*.json"):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
            found.append((int(rec["global_step"]), p.stat().st_mtime, p))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [p for _, _, p in sorted(found)]


def remove_leftovers(folder: Path) -> int:
    """Delete what a killed process left behind; returns how many files.

    That is temporary files, and weights whose JSON record is missing. Such weights come from a
    kill between the two renames of a write, or between the two deletions of a prune. Without
    its record (which holds the hash) a weights file is invisible and can never be loaded.
    Call it only while no checkpoint is being written to ``folder``.
    """
    n = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        for p in folder.glob("*.safetensors"):
            if not p.with_suffix(".json").exists():
                p.unlink(missing_ok=True)
                n += 1
    return n
