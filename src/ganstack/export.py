"""Exports: a trained stack's sampling generator, alone, in a folder to hand to others.

``ganstack export RUN DIR`` writes::

    DIR/model.safetensors   the tensors sampling needs: every generator's (the EMA copy's when
                            the run kept one, under the generator's own names) and the model's
                            own buffers (caption bank, codebook, mean image, counters); no
                            discriminator, encoder or optimizer state
    DIR/config.json         the run's resolved config, the data's shape and classes, what was
                            exported (step, checkpoint, EMA), the weights' SHA-256, versions
    DIR/README.md           a model card: YAML front matter in the Hugging Face Hub's convention
                            (library_name, license, tags, datasets, metrics and model-index with
                            each figure's protocol from the run's eval.json) and a description
    DIR/samples.png         a grid drawn from the exported weights (seed 0)
    DIR/figures/, samples/  the run's figures and its phase-end sample grids
    DIR/eval.json           the run's evaluation, when it describes the exported step

:func:`from_pretrained` loads it back as a :class:`Pretrained`, which has the sampling API of
:class:`ganstack.run.Run` (``sample``, ``sample_indexed``, ``save_samples``, ``evaluate``):
for the same seed it samples bit for bit what the run samples. Before anything is written the
export checks that (:func:`check_sampling_state`): it loads the exported tensors into a fresh
model whose every other tensor is NaN and compares a few samples with the run's.

The folder is written under a temporary name beside DIR and renamed into place, so DIR is
either the complete export or absent (or, with ``--force``, the previous export).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

from ganstack.errors import GanstackError
from ganstack.fileio import (
    atomic_path,
    atomic_write_text,
    fsync_dir,
    install_folder,
    memory_budget,
    read_regular,
    umask,
)
from ganstack.run import Run

log = logging.getLogger("ganstack")

FORMAT = "ganstack-export"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
CONFIG_LIMIT = 16 << 20  # bytes: a config.json is a few KB
CHECK_SAMPLES = 4  # samples compared between the run and its export before writing

# Data names with a dataset on the Hugging Face Hub (the model card's `datasets`).
HUB_DATASETS = {
    "mnist5k": "ylecun/mnist",
    "mnist": "ylecun/mnist",
    "cifar10": "uoft-cs/cifar10",
    "svhn": "ufldl-stanford/svhn",
}
# Metric families of eval.json names (before the sample count) -> the model card's metric ids.
METRIC_IDS = {
    "acc": "accuracy",
    "is": "inception_score",
    "fid": "fid",
    "kid": "kid",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
}
_METRIC_NAME = re.compile(r"^([a-z_]*?[a-z])(\d+k?)(?:_(.*))?$")


class ExportError(GanstackError):
    """A folder is not a usable export, or an export cannot be written there."""


# --------------------------------------------------------------------------------------------
# What sampling needs
# --------------------------------------------------------------------------------------------


def sampling_state(model: Any) -> dict[str, torch.Tensor]:
    """The tensors a model samples with, by the names of a model without EMA: each generator
    (``generator_names``; its EMA copy when the model keeps one) and the model's own buffers
    and parameters (those of no sub-module: caption banks, codebooks, counters)."""
    out: dict[str, torch.Tensor] = {}
    for name in model.generator_names:
        ema = model.ema
        module = ema[name] if ema is not None and name in ema else getattr(model, name)
        for key, value in module.state_dict().items():
            out[f"{name}.{key}"] = value
    for key, value in [*model.named_parameters(recurse=False), *model.named_buffers(recurse=False)]:
        out[key] = value
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _fill_nan(model: torch.nn.Module) -> None:
    """Every floating-point tensor of ``model`` set to NaN (integers to -1): a sample that
    uses any of them is NaN, or differs."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.fill_(math.nan if t.is_floating_point() else -1)


def check_sampling_state(
    model: Any,
    state: dict[str, torch.Tensor],
    n: int = CHECK_SAMPLES,
    seeds: tuple[int, ...] = (0, 1),
) -> list[str]:
    """The outputs that differ (bit for bit) between ``model``'s samples and those of a fresh
    model of the same config holding ``state`` and NaN everywhere else: none when ``state``
    is all that sampling needs."""
    from ganstack.models import build_model

    was_training = model.training
    probe = build_model(model.cfg, model.info).to(model.device)
    _fill_nan(probe)
    probe.load_state_dict(state, strict=False)
    model.eval()
    probe.eval()
    try:
        for seed in seeds:
            outs = []
            for m in (model, probe):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # anything a model draws from torch's generator
                    outs.append(m.sample(n, generator=torch.Generator().manual_seed(seed)))
            a, b = outs
            if a.keys() != b.keys():
                return sorted(set(a) ^ set(b))
            differ = [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
            if differ:
                return differ
    finally:
        model.train(was_training)
    return []


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a folder that looks like an export (a ``config.json`` and no
    ``config.yaml``); :func:`from_pretrained` checks the rest."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and not (p / "config.yaml").exists()


def _not_an_export(folder: Path) -> ExportError:
    if not folder.exists():
        return ExportError(
            f"{folder} does not exist; give a folder written by `ganstack export RUN {folder}`"
        )
    if not folder.is_dir():
        return ExportError(
            f"{folder} is a file, not an export folder (one written by `ganstack export`)"
        )
    if (folder / "config.yaml").is_file():
        return ExportError(
            f"{folder} is a run directory, not an export: load it with "
            f"ganstack.load({str(folder)!r}), or export it with `ganstack "
            f"export {folder} DIR`"
        )
    return ExportError(
        f"{folder} is not a ganstack export (it has no {CONFIG}); `ganstack "
        f"export RUN {folder}` writes one"
    )


def read_export_config(folder: str | Path) -> dict:
    """An export's ``config.json``, checked: a clear :class:`ExportError` for a folder that is
    no export (missing, a run directory, another library's model, a newer format)."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir() or not path.exists():
        raise _not_an_export(folder)
    try:
        raw = read_regular(path, CONFIG_LIMIT, ExportError, "export config")
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ExportError(
            f"{path} is not valid JSON ({str(e)[:200]}); the export is damaged"
        ) from None
    except OSError as e:
        raise ExportError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(
            f'{path} is not a ganstack export\'s config (it has no "format": '
            f'"{FORMAT}"); is {folder} another library\'s model?'
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportError(
            f"{path}: 'format_version' must be an integer >= 1; the export is damaged or was edited"
        )
    if version > FORMAT_VERSION:
        raise ExportError(
            f"{folder} was exported by a newer ganstack (export format "
            f"{version}); upgrade ganstack to load it"
        )
    for key, kind in (("model", str), ("config", dict), ("data_info", dict), ("weights", dict)):
        if not isinstance(meta.get(key), kind):
            raise ExportError(f"{path} has no valid '{key}'; the export is damaged or was edited")
    di = meta["data_info"]
    shape = di.get("shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and 0 < d <= 1 << 16 for d in shape)
        and isinstance(di.get("num_classes"), int)
        and 0 <= di["num_classes"] <= 1 << 20
        and isinstance(di.get("text_dim", 0), int)
        and 0 <= di.get("text_dim", 0) <= 1 << 20
    ):
        raise ExportError(
            f"{path}: 'data_info' must be {{shape: [C, H, W], num_classes, "
            f"text_dim}} with sizes in range; the export is damaged or was edited"
        )
    sha = meta["weights"].get("sha256")
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise ExportError(f"{path}: 'weights.sha256' must be 64 hexadecimal digits")
    return meta


def read_weights(folder: Path, sha256: str) -> dict[str, torch.Tensor]:
    """``model.safetensors``, hashed and loaded from one open file; refused when its SHA-256
    is not the one ``config.json`` records."""
    import hashlib

    from safetensors import SafetensorError
    from safetensors.torch import load

    path = folder / WEIGHTS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ExportError(f"{path} is missing; the export is incomplete") from None
    except OSError as e:
        raise ExportError(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"{path} is not a regular file")
        if st.st_size > memory_budget():
            raise ExportError(
                f"{path} is {st.st_size:,} bytes, more than half of this machine's memory"
            )
        chunks = list(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ExportError(
            f"{path} does not match the SHA-256 recorded in {CONFIG}: the file "
            f"was altered or damaged. Refusing to load it; export the run again"
        )
    try:
        return load(data)
    except (SafetensorError, ValueError) as e:
        raise ExportError(f"{path} is corrupt: {e}") from None


class Pretrained(Run):
    """An exported sampling generator with the sampling API of :class:`ganstack.run.Run`:
    ``sample``, ``sample_indexed``, ``iter_indexed``, ``save_samples``, ``write_sample_folder``,
    ``encode_captions`` and ``evaluate`` (image metrics; the model's own measures need the
    whole run). ``run_dir`` is the export folder; ``export`` its ``config.json``."""

    full_model = False

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        folder = Path(folder)
        meta = read_export_config(folder)
        tensors = read_weights(folder, meta["weights"]["sha256"])
        self._setup(folder, meta, tensors, device)

    def _setup(
        self, folder: Path, meta: dict, tensors: dict[str, torch.Tensor], device: str
    ) -> None:
        from ganstack.config import from_dict
        from ganstack.models import DataInfo, build_model
        from ganstack.train.trainer import resolve_device

        self.run_dir = folder
        self.export = meta
        where = folder / CONFIG
        try:
            self.config = from_dict(meta["config"])
        except GanstackError as e:
            raise ExportError(f"{where}: its config is not valid for this ganstack ({e})") from None
        if self.config.model.name != meta["model"]:
            raise ExportError(
                f"{where}: 'model' is {meta['model']!r} but its config builds a "
                f"{self.config.model.name!r}; the export was edited"
            )
        di = meta["data_info"]
        self.info = DataInfo(
            tuple(di["shape"]), di["num_classes"], str(di.get("name", "")), di.get("text_dim", 0)
        )
        source = s if isinstance(s := meta.get("source"), dict) else {}
        step = source.get("step", 0)
        self.record = {
            "global_step": step if isinstance(step, int) and step >= 0 else 0,
            "model": meta["model"],
            "data_info": di,
        }
        self.checkpoint = str(source.get("checkpoint", "export"))
        self.model = build_model(self.config.model, self.info)
        own = self.model.state_dict()
        missing = sorted(set(sampling_state(self.model)) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        wrong = [k for k in tensors if k in own and own[k].shape != tensors[k].shape]
        if missing or unexpected or wrong:
            raise ExportError(
                f"{folder / WEIGHTS} does not fit the model {CONFIG} describes (missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}); the "
                f"export is damaged or its files come from different exports"
            )
        self.model.load_state_dict(tensors, strict=False)
        self.device = resolve_device(device, "--device")
        self.model.to(self.device).eval()

    @classmethod
    def from_state(
        cls, folder: Path, meta: dict, tensors: dict[str, torch.Tensor], device: str = "cpu"
    ) -> Pretrained:
        """An export not (yet) on disk: ``meta`` is its config.json, ``tensors`` its
        weights."""
        obj = cls.__new__(cls)
        obj._setup(folder, meta, tensors, device)
        return obj


def from_pretrained(folder: str | Path, device: str = "cpu") -> Pretrained:
    """Load an export written by ``ganstack export``: the same sampling API as
    :func:`ganstack.load`, and the same samples as the run for the same seed."""
    return Pretrained(folder, device)


def load_export(folder: str | Path, device: str = "cpu") -> Pretrained:
    return Pretrained(folder, device)


# --------------------------------------------------------------------------------------------
# The model card
# --------------------------------------------------------------------------------------------


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def _metric_entries(ev: dict) -> list[dict]:
    """eval.json's figures as model-index metrics, each with its protocol."""
    protocol = ev.get("protocol") or {}
    classifiers = {
        c.get("name"): c
        for c in (protocol.get("classifier"), protocol.get("classifier_alt"))
        if isinstance(c, dict)
    }
    out = []
    for name, value in (ev.get("metrics") or {}).items():
        if name.endswith(("_std", "_shuffled")) or not isinstance(value, (int, float)):
            continue
        m = _METRIC_NAME.match(name)
        family = m.group(1) if m else name
        args: dict[str, Any] = {
            "samples": protocol.get("num_samples"),
            "drawn_from": protocol.get("samples"),
        }
        rest = (m.group(3) or "") if m else ""
        parts = rest.split("_") if rest else []
        space = parts[0] if parts else None
        if space in classifiers:
            c = classifiers[space]
            args["feature_space"] = (
                f"ganstack's {space} classifier (trained on "
                f"{c.get('dataset')}, held-out accuracy "
                f"{_fmt(c.get('held_out_accuracy'))})"
            )
        elif space:
            args["feature_space"] = space
        if len(parts) > 1 and family in (
            "fid",
            "kid",
            "precision",
            "recall",
            "density",
            "coverage",
        ):
            args["reference"] = protocol.get("reference")
        std = ev["metrics"].get(f"{name}_std")
        if isinstance(std, (int, float)):
            args["std"] = _finite(std)
        cal = (protocol.get("calibration") or {}).get("rows") or {}
        generic = f"{family}_{rest}" if rest else family
        for row in ("real", "blur1", "blur2", "blind", "baseline"):
            v = (cal.get(row) or {}).get(generic)
            if isinstance(v, (int, float)):
                args.setdefault("calibration", {"n": protocol["calibration"].get("n")})
                args["calibration"][row] = _finite(v)
        out.append(
            {
                "type": METRIC_IDS.get(family, family),
                "name": name,
                "value": _finite(value),
                "args": {k: v for k, v in args.items() if v is not None},
                "verified": False,
            }
        )
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def model_card(
    meta: dict,
    ev: dict | None,
    name: str,
    license_id: str,
    datasets: list[str] | None,
    figures: list[str],
    params: int,
    eval_note: str | None,
) -> str:
    """README.md: YAML front matter (the Hub's model-card metadata) and a description."""
    import yaml

    from ganstack.metrics.report import report

    cfg = meta["config"]
    model, data = meta["model"], cfg.get("data", {})
    di, source = meta["data_info"], meta.get("source", {})
    sampling = meta.get("sampling", {})
    text = "text" in sampling.get("conditions", {})
    task = "text-to-image" if text else "unconditional-image-generation"
    kind = (
        "text-to-image" if text else "class-conditional" if di["num_classes"] else "unconditional"
    )
    if datasets is None:
        hub = HUB_DATASETS.get(str(data.get("name")))
        datasets = [hub] if hub else []
    front: dict[str, Any] = {
        "library_name": "ganstack",
        "license": license_id,
        "pipeline_tag": task,
        "tags": [
            "ganstack",
            "gan",
            "stacked-gan",
            model,
            kind,
            "image-generation",
            "pytorch",
            "safetensors",
        ],
    }
    if datasets:
        front["datasets"] = datasets
    entries = _metric_entries(ev) if ev else []
    if entries:
        front["metrics"] = sorted({e["type"] for e in entries})
        front["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": task, "name": f"{kind} image generation".capitalize()},
                        "dataset": {
                            "name": str(di.get("name") or data.get("name")),
                            "type": datasets[0] if datasets else str(data.get("name")),
                            "split": "train",
                        },
                        "metrics": entries,
                    }
                ],
            }
        ]
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100)
    c = di["shape"][0]
    shape = (
        "x".join(str(d) for d in di["shape"][1:])
        + f" images with {c} channel"
        + ("s" if c > 1 else "")
    )
    lines = [f"---\n{head}---", "", f"# {name}", ""]
    if cfg.get("description"):
        lines += [cfg["description"], ""]
    ema = " (its exponential moving average)" if source.get("ema") else ""
    lines += [
        f"A {kind} **{model}** generator trained with [ganstack](https://pypi.org/project/"
        f"ganstack/): {shape}"
        + (f", {di['num_classes']} classes" if di["num_classes"] else "")
        + ". This folder "
        f"holds the sampling generator alone{ema}, {params:,} values, from step "
        f"{source.get('step')} (checkpoint `{source.get('checkpoint')}`): no discriminator, "
        f"encoder or optimizer state.",
        "",
        "## Use",
        "",
        "```python",
        "import ganstack",
        "",
        'model = ganstack.from_pretrained("path/to/this/folder")',
        "out = model.sample(16, seed=0"
        + (', captions=["a caption"]' if text else "")
        + ')  # out["image"]: (16, C, H, W) '
        "in [0, 1]",
        "```",
        "",
        "or `ganstack sample path/to/this/folder --n 64 --out grid.png` (also `.npz` or a "
        "folder of PNGs). The same seed gives the same samples as the run it was exported "
        "from. Inputs: "
        + ", ".join(
            f"`{k}` ({v}-d)"
            for k, v in {**sampling.get("conditions", {}), **sampling.get("noise", {})}.items()
        )
        + (" and the class `y`" if di["num_classes"] else "")
        + "; `--fix` holds some of them "
        "fixed across the samples.",
        "",
        "![samples drawn from these weights, seed 0](samples.png)",
        "",
        "## Training",
        "",
        f"Data: `{data.get('name')}` ({di.get('name')}), {source.get('train_size', '?')} "
        f"training images. Phases: "
        + ", ".join(
            f"{k} {v:,} steps" for k, v in (cfg.get("train", {}).get("phases") or {}).items()
        )
        + f"; batch {cfg.get('train', {}).get('batch_size')}, seed "
        f"{cfg.get('train', {}).get('seed')}. The resolved config is in `{CONFIG}` "
        f"(`config`).",
        "",
    ]
    lines += ["## Evaluation", ""]
    if ev and entries:
        lines += [
            "From the run's `eval.json` (copied here): every figure beside its "
            "calibration (the real held-out images, the same blurred, the samples "
            "against shuffled conditions). The metric names carry their protocol: "
            "sample count, feature space and reference.",
            "",
            "```",
            report(ev),
            "```",
            "",
        ]
    else:
        lines += [eval_note or "The run was not evaluated.", ""]
    if figures:
        lines += [
            "## Figures",
            "",
            "Drawn by the run at the end of its training."
            + ("" if source.get("newest", True) else " (A later step than the exported one.)"),
            "",
        ]
        lines += [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    env = source.get("environment") or {}
    if env:
        lines += [
            "## Environment",
            "",
            f"Trained with ganstack {env.get('ganstack')}, torch {env.get('torch')}, "
            f"Python {env.get('python')} on {env.get('device')} ({env.get('cpu')})"
            + (
                f", git commit {env['git'].get('commit', '')[:12]}"
                + (" (with local changes)" if env["git"].get("dirty") else "")
                if isinstance(env.get("git"), dict)
                else ""
            )
            + ".",
            "",
        ]
    lines += [
        "## License",
        "",
        f"The weights are released under `{license_id}` (set by whoever exported "
        f"them). The terms of the training data apply as well.",
        "",
    ]
    return "\n".join(lines)


def split_front_matter(text: str) -> tuple[dict, str]:
    """A model card's YAML front matter (parsed) and its body."""
    import yaml

    if not text.startswith("---\n"):
        raise ExportError("the model card has no YAML front matter")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise ExportError("the model card's front matter is not closed by ---")
    return yaml.safe_load(text[4 : end + 1]) or {}, text[end + 5 :]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_destination(dest: Path, force: bool) -> bool:
    """Whether ``dest`` holds an export to replace; an error when it cannot be written."""
    if dest.is_symlink():
        raise ExportError(f"{dest} is a symbolic link; give the folder itself")
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise ExportError(f"{dest} is a file; give a folder for the export")
    if not any(dest.iterdir()):
        return False
    if not is_export(dest):
        raise ExportError(
            f"{dest} is not empty and is not a ganstack export; nothing was "
            f"written. Give a new or empty folder (--force replaces only an "
            f"earlier export)"
        )
    if not force:
        raise ExportError(f"{dest} already holds an export; pass --force to replace it")
    return True


def _eval_for(run: Any) -> tuple[dict | None, str | None]:
    """The run's eval.json when it describes the exported weights, else (None, why)."""
    path = Path(run.run_dir) / "eval.json"
    if not path.is_file():
        return None, (
            f"The run has no evaluation: `ganstack eval {run.run_dir}` before "
            f"exporting puts its figures here."
        )
    try:
        ev = json.loads(read_regular(path, 64 << 20, GanstackError, "eval.json"))
    except (OSError, GanstackError, ValueError) as e:
        return None, f"The run's eval.json cannot be read ({str(e)[:200]})."
    if not isinstance(ev, dict):
        return None, "The run's eval.json is not a JSON object."
    drawn = str((ev.get("protocol") or {}).get("samples", ""))
    if ev.get("step") != run.step or not re.match(r"^\S+ \(step \d+\), seed \d+$", drawn):
        return None, (
            f"The run's eval.json describes {drawn or 'other samples'} (step "
            f"{ev.get('step')}), not the exported weights (step {run.step}); "
            f"`ganstack eval` this folder to measure them."
        )
    return ev, None


def export_run(
    run_dir: str | Path,
    dest: str | Path,
    checkpoint: str | None = None,
    force: bool = False,
    license_id: str = "mit",
    datasets: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Write the export of ``run_dir`` (its newest checkpoint, or ``checkpoint``) to
    ``dest``; returns ``dest``. See the module's docstring for what it holds."""
    from safetensors.torch import save_file

    from ganstack.environment import environment
    from ganstack.fileio import sha256_file
    from ganstack.train import checkpoint as ckpt

    run_dir, dest = Path(run_dir), Path(dest)
    if is_export(run_dir):
        raise ExportError(f"{run_dir} is already an export; copy the folder to share it")
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{run_dir} is not a run directory (no config.yaml)")
    replace = _check_destination(dest, force)
    run = Run(run_dir, checkpoint)
    model = run.model
    state = sampling_state(model)
    newest = ckpt.list_checkpoints(run_dir / "checkpoints")
    run_info: dict = {}
    with contextlib.suppress(OSError, ValueError, GanstackError):
        run_info = json.loads(read_regular(run_dir / "run.json", 64 << 20, GanstackError))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "ganstack",
        "model": run.config.model.name,
        "data_info": {
            "shape": list(run.info.shape),
            "num_classes": run.info.num_classes,
            "name": run.info.name,
            "text_dim": run.info.text_dim,
        },
        "config": json.loads(json.dumps(run.config.to_dict())),
        "sampling": {
            "noise": model.noise_dims(),
            "conditions": model.condition_dims(),
            "noise_distribution": model.noise_distribution,
            "image_outputs": model.image_outputs(),
        },
        "weights": {
            "file": WEIGHTS,
            "sha256": "",
            "tensors": len(state),
            "values": sum(t.numel() for t in state.values()),
        },
        "source": {
            "checkpoint": run.checkpoint,
            "step": run.step,
            "ema": model.ema is not None,
            "newest": bool(newest) and newest[-1].stem == run.checkpoint,
            "train_size": run_info.get("train_size"),
            "environment": run_info.get("environment"),
        },
        "exported_with": environment(),
    }
    # The check: the export alone (every other tensor NaN) samples what the run samples.
    differ = check_sampling_state(model, state)
    if differ:
        raise ExportError(
            f"the {meta['model']} model samples with tensors outside its generators and its "
            f"own buffers ({', '.join(differ)} differ without them); it cannot be exported as "
            f"a sampling generator alone"
        )
    ev, eval_note = _eval_for(run)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".export"))
    try:
        with atomic_path(tmp / WEIGHTS) as part:
            save_file(state, str(part), metadata={"format": FORMAT, "model": meta["model"]})
        meta["weights"]["sha256"] = sha256_file(tmp / WEIGHTS)
        figures = _copy_figures(run_dir, tmp)
        probe = Pretrained.from_state(tmp, meta, state)
        probe.save_samples(tmp / "samples.png", _grid_size(probe), seed=0)
        if ev is not None:
            atomic_write_text(tmp / "eval.json", json.dumps(ev, indent=1))
        atomic_write_text(tmp / CONFIG, json.dumps(meta, indent=1))
        card = model_card(
            meta,
            ev,
            name or dest.name,
            license_id,
            datasets,
            figures,
            meta["weights"]["values"],
            eval_note,
        )
        atomic_write_text(tmp / CARD, card)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp made it 0700
        _install(tmp, dest, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "exported %s (%s, step %d%s) to %s",
        run_dir,
        run.checkpoint,
        run.step,
        ", EMA weights" if model.ema is not None else "",
        dest,
    )
    return dest


def _grid_size(model: Any) -> int:
    k = model.info.num_classes
    return 10 * k if 0 < k <= 10 else 64


def _copy_figures(run_dir: Path, out: Path) -> list[str]:
    """The run's figures and phase-end sample grids (PNG), as paths relative to ``out``."""
    copied = []
    for sub, pattern in (("figures", "*.png"), ("samples", "*-final.png")):
        for src in sorted((run_dir / sub).glob(pattern)):
            if not src.is_file() or src.is_symlink():
                continue
            target = out / sub / src.name
            with atomic_path(target) as part:
                part.write_bytes(read_regular(src, 256 << 20, GanstackError, "figure"))
            copied.append(f"{sub}/{src.name}")
    return copied


def _install(tmp: Path, dest: Path, replace: bool) -> None:
    """Put the finished folder ``tmp`` at ``dest`` by renaming (an empty ``dest`` is removed
    first; an export there, with ``replace``, is moved aside and deleted after)."""
    for sub in [p for p in tmp.iterdir() if p.is_dir()]:
        fsync_dir(sub)
    install_folder(tmp, dest, replace, keep="export")


__all__ = [
    "CARD",
    "CONFIG",
    "FORMAT",
    "WEIGHTS",
    "ExportError",
    "Pretrained",
    "check_sampling_state",
    "export_run",
    "from_pretrained",
    "is_export",
    "load_export",
    "model_card",
    "read_export_config",
    "sampling_state",
    "split_front_matter",
]
