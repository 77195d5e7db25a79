"""Checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint named ``NAME`` is two files in the run's ``checkpoints/`` folder:

- ``NAME.safetensors``: model weights (``model/...``), optimizer tensors (``optim/...``) and the
  torch RNG states (``rng/...``; under distributed training also every rank's, ``rng/rankR/...``);
- ``NAME.json``: step, phase, optimizer hyper-parameters, Python/NumPy RNG states, the config hash
  and the SHA-256 of the safetensors file.

Both are written to a temporary file, flushed, fsynced and renamed, the JSON last: a checkpoint
exists only once its JSON does, and a kill at any moment leaves the previous one intact. Loading
never unpickles anything, and a safetensors file whose hash differs from its JSON is refused.

The JSON record is checked too: it carries the SHA-256 of its own content (``record_sha256``,
format 2; format-1 records from older versions have none), and every field the trainer uses is
checked for type and range before anything trusts it. Only regular files are read, and a record
is never larger than :data:`RECORD_LIMIT`.

The trainer writes (and prunes) under an exclusive ``flock`` on ``checkpoints/.writing.lock``;
:func:`read_newest`, for readers of a run that may be training, reads under a shared one, so it
always sees complete checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from ganstack.errors import CheckpointError
from ganstack.fileio import atomic_path, atomic_write_text, flock_file, read_regular, sha256_file

log = logging.getLogger("ganstack")

__all__ = [
    "atomic_write_text",
    "has_rank_rng",
    "list_checkpoints",
    "read_checkpoint",
    "read_newest",
    "restore",
    "restore_rank_rng",
    "rng_state",
    "save_checkpoint",
    "scan_checkpoints",
    "sha256_file",
    "validate_record",
    "write_lock",
]

# 2: the record carries its own SHA-256 (record_sha256). Format-1 records are still read.
FORMAT_VERSION = 2
RECORD_LIMIT = 64 << 20  # bytes; a record is a few KB plus ~15 KB of RNG state per rank
WRITE_LOCK = ".writing.lock"  # in the checkpoints folder
_MAX_STEP = 2**53  # steps are counted exactly as JSON numbers up to here


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
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],  # type: ignore[attr-defined]
    }
    return tensors, meta


def _set_rng_state(
    tensors: dict[str, torch.Tensor],
    meta: dict,
    prefix: str = "rng/",
    device: torch.device | None = None,
) -> None:
    torch.set_rng_state(tensors[f"{prefix}torch"])
    if f"{prefix}cuda" in tensors:  # one process per GPU: its own device's state
        if device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"{prefix}cuda"], device)
    else:
        cuda = sorted(
            (k for k in tensors if k.startswith(f"{prefix}cuda")),
            key=lambda k: int(k[len(prefix) + 4 :]),
        )
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


def restore_rank_rng(
    record: dict, tensors: dict[str, torch.Tensor], rank: int, device: torch.device | None = None
) -> None:
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
    with atomic_path(st_path) as tmp:  # fsynced and renamed once written and hashed
        save_file(
            tensors, str(tmp), metadata={"format": "ganstack", "version": str(FORMAT_VERSION)}
        )
        digest = sha256_file(tmp)
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
    record = json.loads(json.dumps(record))  # what a reader will see (tuples become lists)
    record["record_sha256"] = _record_digest(record)
    json_path = folder / f"{name}.json"
    atomic_write_text(json_path, json.dumps(record, indent=1))
    return json_path


def _record_digest(record: dict) -> str:
    """The SHA-256 of a record's content without its ``record_sha256`` (key order and
    whitespace do not matter)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def write_lock(folder: Path) -> Any:
    """The writer's exclusive lock on ``folder``'s checkpoints, held while it writes or prunes
    (readers in :func:`read_newest` take it shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    return flock_file(folder / WRITE_LOCK, shared=False)


# --------------------------------------------------------------------------------------------
# The record: schema
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# field: (check, what it must be); a field may be absent (old or foreign writers omit some),
# except those the loaders always need, listed in _REQUIRED.
_FIELDS: dict[str, tuple[Any, str]] = {
    "format_version": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "weights": (
        lambda v: isinstance(v, str) and v == Path(v).name and v.endswith(".safetensors"),
        "the name of a .safetensors file in the same folder",
    ),
    "sha256": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
        "64 hexadecimal digits",
    ),
    "record_sha256": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
        "64 hexadecimal digits",
    ),
    "global_step": (lambda v: _is_int(v) and 0 <= v <= _MAX_STEP, f"an integer in 0..{_MAX_STEP}"),
    "phase_index": (lambda v: _is_int(v) and 0 <= v <= 10_000, "an integer in 0..10000"),
    "phase_step": (lambda v: _is_int(v) and 0 <= v <= _MAX_STEP, f"an integer in 0..{_MAX_STEP}"),
    "phase": (lambda v: v is None or isinstance(v, str), "a phase name or null"),
    "elapsed_s": (lambda v: _is_num(v) and math.isfinite(v) and v >= 0, "a number >= 0"),
    "lr_scale": (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "best": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and isinstance(v.get("metric"), str)
                and _is_num(v.get("value"))
                and _is_int(v.get("step"))
                and v["step"] >= 0
            )
        ),
        "null or {metric, value, step}",
    ),
    "config_hash": (lambda v: isinstance(v, str), "a string"),
    "config": (lambda v: isinstance(v, dict), "a mapping"),
    "model": (lambda v: isinstance(v, str), "a model name"),
    "data_info": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("shape"), list)
            and len(v["shape"]) == 3
            and all(_is_int(d) and 0 < d <= 1 << 16 for d in v["shape"])
            and _is_int(v.get("num_classes"))
            and 0 <= v["num_classes"] <= 1 << 20
            and _is_int(v.get("text_dim", 0))
            and 0 <= v.get("text_dim", 0) <= 1 << 20
            and isinstance(v.get("name", ""), str)
        ),
        "{shape: [C, H, W], num_classes, name, text_dim} with sizes in range",
    ),
    "optimizers": (
        lambda v: (
            isinstance(v, dict)
            and all(
                isinstance(o, dict)
                and isinstance(o.get("param_groups"), list)
                and isinstance(o.get("scalars"), dict)
                for o in v.values()
            )
        ),
        "a mapping of optimizer states",
    ),
    "rng": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("python"), list)
            and isinstance(v.get("numpy"), list)
        ),
        "{python, numpy} RNG states",
    ),
    "rng_ranks": (
        lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
        "a list of RNG states",
    ),
    "log_pending": (
        lambda v: (
            isinstance(v, dict)
            and _is_int(v.get("count"))
            and 0 <= v["count"] <= _MAX_STEP
            and isinstance(v.get("sums"), dict)
            and all(isinstance(k, str) and _is_num(x) for k, x in v["sums"].items())
        ),
        "{count, sums} of the losses not yet logged",
    ),
}
_REQUIRED = ("weights", "sha256", "global_step")


def validate_record(record: Any, where: Path | str) -> dict:
    """Check a parsed record (see :data:`_FIELDS`) and its own hash; returns it, or raises a
    :class:`CheckpointError` that names the first bad field."""
    if not isinstance(record, dict) or "weights" not in record or "sha256" not in record:
        raise CheckpointError(f"{where} is not a ganstack checkpoint record")
    version = record.get("format_version", 1)
    if _is_int(version) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by a newer ganstack (format {version}); upgrade ganstack to "
            f"read it"
        )
    for key in _REQUIRED:
        if key not in record:
            raise CheckpointError(
                f"checkpoint record {where} has no '{key}'; it is damaged or "
                f"not a ganstack checkpoint"
            )
    for key, (check, expected) in _FIELDS.items():
        if key in record and not check(record[key]):
            raise CheckpointError(
                f"checkpoint record {where}: '{key}' must be {expected}; the record is "
                f"damaged or was edited. Resume from an earlier checkpoint (move this one "
                f"away) or retrain"
            )
    if "phase_step" in record and record["phase_step"] > record["global_step"]:
        raise CheckpointError(
            f"checkpoint record {where}: phase_step {record['phase_step']} "
            f"exceeds global_step {record['global_step']}; the record is "
            f"damaged or was edited"
        )
    if version >= 2 or "record_sha256" in record:
        if record.get("record_sha256") != _record_digest(record):
            raise CheckpointError(
                f"checkpoint record {where} does not match its own SHA-256 (record_sha256): "
                f"it was altered or damaged. Refusing to load it; resume from an earlier "
                f"checkpoint (move this one away) or retrain"
            )
    return record


def _read_record(json_path: Path) -> dict:
    try:
        raw = read_regular(Path(json_path), RECORD_LIMIT, CheckpointError, "checkpoint record")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {json_path} is unreadable: {e.strerror or e}") from None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "it is empty" if not raw.strip() else str(e)[:200]
        raise CheckpointError(
            f"checkpoint {json_path} is unreadable or corrupt: {reason}"
        ) from None
    return validate_record(record, json_path)


def read_checkpoint(json_path: Path, verify: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and check a checkpoint; returns (JSON record, tensors).

    The weights are hashed and loaded from one open file, so the tensors are exactly the bytes
    that were hashed, even if the file is replaced meanwhile."""
    record = _read_record(Path(json_path))
    st_path = Path(json_path).parent / record["weights"]
    try:
        fd = os.open(st_path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint weights {st_path} are missing") from None
    except OSError as e:
        raise CheckpointError(
            f"checkpoint weights {st_path} are unreadable: {e.strerror}"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"checkpoint weights {st_path} are not a regular file")
        if verify:
            h = hashlib.sha256()
            for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
                h.update(chunk)
            if h.hexdigest() != record["sha256"]:
                raise CheckpointError(
                    f"checkpoint {st_path} does not match the SHA-256 recorded in "
                    f"{Path(json_path).name}: the file was altered or damaged. Refusing to load "
                    f"it; resume from an earlier checkpoint or retrain."
                )
        try:
            tensors = _load_fd(fd)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {st_path} is corrupt: {e}") from None
    finally:
        os.close(fd)
    return record, tensors


def _load_fd(fd: int) -> dict[str, torch.Tensor]:
    """The safetensors file open as ``fd`` (this very file, not whatever its name now holds)."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        return load_file(proc)
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = list(iter(lambda: os.read(fd, 1 << 20), b""))
    return load(b"".join(chunks))


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each loaded optimizer state tensor its parameter's memory layout. A checkpoint
    stores them contiguous; with NHWC weights (train.channels_last) the states of an
    uninterrupted run are NHWC, and the fused Adam step rounds differently on the two
    layouts, so a resumed run would drift from the uninterrupted one in the last bits."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


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
    retired = sorted(set(getattr(model, "retired_state", ())) & set(sd) - set(own))
    if retired:  # an older version's step counters: the trainer's Step replaced them
        log.debug("checkpoint: dropped %s (no longer kept by the model)", ", ".join(retired))
        sd = {k: v for k, v in sd.items() if k not in retired}
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
    try:
        if optimizers is not None:
            saved = record.get("optimizers", {})
            former: dict[str, str] = getattr(model, "retired_optimizer_names", dict)()
            for name, opt in optimizers.items():
                key = name
                if name not in saved and former.get(name) in saved:
                    key = former[name]  # written before the optimizer was renamed
                    log.debug(
                        "checkpoint: optimizer '%s' read from its former name '%s'", name, key
                    )
                if key not in saved:
                    raise CheckpointError(f"checkpoint has no state for optimizer '{name}'")
                opt.load_state_dict(_join_optimizer(key, saved[key], tensors))
                _match_layouts(opt)
        if rng:
            _set_rng_state(tensors, record["rng"])
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        RuntimeError,
        OverflowError,
    ) as e:
        raise CheckpointError(
            f"checkpoint holds a malformed optimizer or RNG state "
            f"({type(e).__name__}: {str(e)[:200]}); it is damaged or was "
            f"edited"
        ) from None


def scan_checkpoints(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Complete checkpoints in ``folder`` (oldest step first), and the records that cannot be
    used with the reason each (unreadable, not a regular file, invalid, altered)."""
    if not folder.is_dir():
        return [], []
    found, bad = [], []
    for p in folder.glob("*.json"):
        try:
            rec = _read_record(p)
            found.append((rec["global_step"], p.stat().st_mtime, p))
        except CheckpointError as e:
            if p.exists():  # one deleted meanwhile (pruned) is neither
                bad.append((p, str(e)))
        except OSError:
            continue
    return [p for _, _, p in sorted(found)], sorted(bad)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (valid JSON records) in ``folder``, oldest step first."""
    return scan_checkpoints(folder)[0]


def read_newest(
    folder: Path, name: str | None = None, attempts: int = 8
) -> tuple[Path, dict, dict[str, torch.Tensor]] | None:
    """For readers of a run that may be training: the newest complete checkpoint in
    ``folder`` (or the one named ``name``) as (path, record, tensors); None if there is none.

    It reads under the shared side of the writer's lock, so a checkpoint is never pruned or
    replaced while it is read. Where that lock cannot be taken (a read-only copy, a file system
    without flock) a checkpoint that vanishes or changes under the reader is retried. A
    checkpoint that stays broken raises :class:`CheckpointError`."""
    error: CheckpointError | None = None
    for attempt in range(attempts):
        with flock_file(folder / WRITE_LOCK, shared=True):
            if name is not None:
                path = folder / f"{Path(name).stem}.json"
            else:
                found = list_checkpoints(folder)
                if not found:
                    return None
                path = found[-1]
            before = _identity(path)
            try:
                record, tensors = read_checkpoint(path)
                return path, record, tensors
            except CheckpointError as e:
                error = e
            after = _identity(path)
            if after is None and before is None and name is not None:
                break  # no such checkpoint
            if (
                after is not None
                and after == before
                and (name is not None or list_checkpoints(folder)[-1:] == [path])
            ):
                break  # nothing moved: the checkpoint itself is broken
        time.sleep(min(0.5, 0.01 * 2**attempt))
    assert error is not None
    raise error


def _identity(path: Path) -> tuple | None:
    """What changes when a checkpoint is rewritten: its record's and its weights' identities."""
    try:
        st = path.stat()
        ws = path.with_suffix(".safetensors").stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, ws.st_ino, ws.st_mtime_ns, ws.st_size)


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
