"""``train.init_from``: a new run that starts from another run's (or an export's) weights.

The source is a run directory (its newest checkpoint, or ``RUN:NAME`` for
``checkpoints/NAME``) or an export folder (``ganstack export``). Its tensors are matched to the
new model's state dict by name and shape: a match is loaded, anything else keeps its fresh
initialisation. The generators come from the source's sampling weights: the EMA copy where the
source kept one (an export holds only those), and the new run's own EMA copy, when it keeps
one, starts equal to its generators. Never taken: optimizer states, step counters and the
model's own tensors (those of no sub-module: counters, and data statistics such as the mean
image, codebook or caption bank, which the model's setup computes from the new data).

:func:`read_source` reads and checks the source (hashes included; nothing is unpickled),
:func:`apply` loads it into a model and returns the report that ``run.json`` records under
``init_from``; :func:`summary` is that report in one log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganstack.errors import ConfigError, GanstackError
from ganstack.train import checkpoint as ckpt

SHOWN = 4  # names shown in the log line per list (run.json holds them all)
USAGE = (
    "give a run directory (RUN, or RUN:CHECKPOINT for RUN/checkpoints/CHECKPOINT) or an "
    "export folder (`ganstack export RUN DIR`)"
)


@dataclass
class Source:
    """What ``train.init_from`` names, read: its tensors under the names of a model without
    EMA (the generators' holding the EMA weights where the source kept them)."""

    spec: str
    path: Path
    kind: str  # "run" or "export"
    checkpoint: str | None
    step: int | None
    model: str | None
    ema: bool  # the generators' tensors are the source's EMA weights
    sha256: str | None
    tensors: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # e.g. a name too long for the file system
        return False


def read_source(spec: str) -> Source:
    """Read the run or export ``spec`` names; a one-line :class:`GanstackError` that says what
    to do when it is missing, not a run or export, has no checkpoint, or is damaged."""
    from ganstack.export import is_export, read_export_config, read_weights

    where = f"train.init_from={spec}"
    path, name = Path(spec).expanduser(), None
    if not _exists(path) and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if head and tail and Path(head).expanduser().is_dir():
            path, name = Path(head).expanduser(), tail
    if not _exists(path):
        raise ConfigError(f"{where}: {path} does not exist; {USAGE}")
    if not path.is_dir():
        raise ConfigError(f"{where}: {path} is a file; {USAGE}")
    try:
        if is_export(path):
            if name is not None:
                raise ConfigError(
                    f"{where}: {path} is an export, which holds one set of weights; drop ':{name}'"
                )
            meta = read_export_config(path)
            tensors = read_weights(path, meta["weights"]["sha256"])
            source = s if isinstance(s := meta.get("source"), dict) else {}
            step = source.get("step")
            return Source(
                spec,
                path.resolve(),
                "export",
                source.get("checkpoint"),
                step if isinstance(step, int) else None,
                meta["model"],
                bool(source.get("ema")),
                meta["weights"]["sha256"],
                tensors,
            )
        if not (path / "config.yaml").is_file() and not (path / "checkpoints").is_dir():
            raise ConfigError(
                f"{where}: {path} is neither a run directory (it has no "
                f"config.yaml) nor an export (no config.json); {USAGE}"
            )
        return _read_run(spec, path, name, where)
    except ConfigError:
        raise
    except GanstackError as e:  # a damaged checkpoint or export: say which setting read it
        raise type(e)(f"{where}: {e}") from None


def _read_run(spec: str, path: Path, name: str | None, where: str) -> Source:
    folder = path / "checkpoints"
    found, unusable = ckpt.scan_checkpoints(folder)
    names = [p.stem for p in found]
    if name is not None and name.removesuffix(".json") not in names:
        have = f"it has {', '.join(names)}" if names else "it has none"
        raise ConfigError(
            f"{where}: {path} has no usable checkpoint '{name}' ({have}); name "
            f"one of checkpoints/NAME.json, or give the run alone for its newest"
        )
    if not found:
        why = f" ({unusable[-1][1]})" if unusable else ""
        raise ConfigError(
            f"{where}: {path} has no checkpoint{why}; train it first (or let it "
            f"reach its first checkpoint), or start from another run"
        )
    got = ckpt.read_newest(folder, name.removesuffix(".json") if name else None)
    if got is None:  # pruned between the scan and the read
        raise ConfigError(f"{where}: {path} has no checkpoint any more; try again")
    json_path, record, tensors = got
    sd = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    if not sd:
        raise ConfigError(f"{where}: {json_path} holds no model weights")
    view = {k: v for k, v in sd.items() if not k.startswith("ema.")}
    ema = {k[len("ema.") :]: v for k, v in sd.items() if k.startswith("ema.")}
    view.update(ema)  # the EMA copy replaces the raw generator it averages
    model = record.get("model")
    return Source(
        spec,
        path.resolve(),
        "run",
        json_path.stem,
        record["global_step"],
        model if isinstance(model, str) else None,
        bool(ema),
        record["sha256"],
        view,
    )


def _shape(t: torch.Tensor) -> list[int]:
    return [int(d) for d in t.shape]


def apply(model: Any, source: Source) -> dict[str, Any]:
    """Load ``source`` into ``model`` (a :class:`~ganstack.models.StackModel`, EMA enabled or
    not) by name and shape; returns the report. Raises :class:`ConfigError` when no parameter
    of the model matches (the source is probably another model family)."""
    own = {n for n, _ in model.named_parameters(recurse=False)} | {
        n for n, _ in model.named_buffers(recurse=False)
    }
    target = {k: v for k, v in model.state_dict().items() if not k.startswith("ema.")}
    src = source.tensors
    load: dict[str, torch.Tensor] = {}
    loaded, mismatch, missing, not_taken = [], [], [], []
    for name, t in target.items():
        if name in own:
            not_taken.append(name)
        elif name not in src:
            missing.append(name)
        elif tuple(src[name].shape) != tuple(t.shape):
            mismatch.append({"name": name, "source": _shape(src[name]), "model": _shape(t)})
        else:
            load[name] = src[name]
            loaded.append(name)
    unused = [k for k in src if k not in target]
    params = {n for n, _ in model.named_parameters()}
    if not any(n in params for n in loaded):
        close = (
            f"; {len(mismatch)} share a name but not the shape (e.g. "
            f"{_mismatch_text(mismatch[:2])})"
            if mismatch
            else ""
        )
        family = f"a '{source.model}' model" if source.model else "the source"
        raise ConfigError(
            f"train.init_from={source.spec}: no weight of {family} matches this "
            f"'{model.name}' model by name and shape{close}. Is it another model family or "
            f"data shape? Start from a run of the same model, or remove train.init_from"
        )
    result = model.load_state_dict(load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if getattr(model, "ema", None) is not None:
        with torch.no_grad():  # the EMA copies start as the (partly loaded) generators
            for name in model.ema:
                model.ema[name].load_state_dict(getattr(model, name).state_dict())
    return {
        "source": str(source.path),
        "spec": source.spec,
        "kind": source.kind,
        "checkpoint": source.checkpoint,
        "step": source.step,
        "model": source.model,
        "sha256": source.sha256,
        "generators": "ema" if source.ema else "raw",
        "loaded": loaded,
        "shape_mismatch": mismatch,
        "missing": missing,
        "unused": unused,
        "not_taken": not_taken,
    }


def _names(names: list[str]) -> str:
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _mismatch_text(items: list[dict]) -> str:
    return ", ".join(f"{m['name']} {m['source']} -> {m['model']}" for m in items)


def summary(report: dict[str, Any]) -> str:
    """The report in one line: counts, and the first few names of each list."""
    where = f"{report['kind']} {report['spec']}"
    if report["checkpoint"] and report["kind"] == "run":
        where += f" (checkpoint {report['checkpoint']}, step {report['step']})"
    elif report["step"] is not None:
        where += f" (step {report['step']})"
    gen = "; generators from its EMA weights" if report["generators"] == "ema" else ""
    parts = [f"{len(report['loaded'])} tensors loaded"]
    mm = report["shape_mismatch"]
    if mm:
        more = f" (+{len(mm) - SHOWN} more)" if len(mm) > SHOWN else ""
        parts.append(f"{len(mm)} skipped for shape: {_mismatch_text(mm[:SHOWN])}{more}")
    if report["missing"]:
        parts.append(
            f"{len(report['missing'])} not in the source, kept fresh: {_names(report['missing'])}"
        )
    if report["unused"]:
        parts.append(f"{len(report['unused'])} source tensors unused: {_names(report['unused'])}")
    if report["not_taken"]:
        parts.append(
            f"the model's own state not taken (counters, data statistics): "
            f"{_names(report['not_taken'])}"
        )
    return f"init_from {where}{gen}: " + "; ".join(parts) + " (run.json lists them all)"
