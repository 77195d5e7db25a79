"""Reliability of every model, not only SGAN: SIGKILL then exact resume, tamper detection, and
fuzzing of each model's own config section.

Counts quoted in docs/reliability.md come from the constants below.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import shutil
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ganstack.config import (
    apply_overrides,
    from_dict,
    load_config,
    read_config_tree,
    resolve_config_path,
)
from ganstack.errors import CheckpointError, ConfigError
from ganstack.models import MODELS, DataInfo, build_model
from ganstack.run import load
from ganstack.train.trainer import Trainer, load_run_config

from . import test_dcgan, test_hdgan, test_lapgan, test_s2gan, test_stackgan_v1, test_stackgan_v2
from .killing import KilledRun, run_overrides
from .test_reliability import FUZZ, YAML_SCALARS

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL_KILLS = 2  # SIGKILLs per model: one at a random moment, one during a checkpoint write

# model: (bundled config, its test module's tiny overrides, phase lengths for the kill test).
# Each run is long enough to outlast both kills: a fast model gets more steps.
RUNS = {
    "lapgan": ("lapgan-mnist", test_lapgan.tiny, {"independent": 60}),
    "dcgan": ("dcgan-mnist", test_dcgan.tiny, {"train": 60}),
    "stackgan_v1": (
        "stackgan-v1-shapes",
        lambda _: test_stackgan_v1.TINY,
        {"stage1": 10, "stage2": 10},
    ),
    "stackgan_v2": ("stackgan-v2-shapes", lambda _: test_stackgan_v2.TINY, {"joint": 40}),
    "hdgan": ("hdgan-shapes", lambda _: test_hdgan.TINY, {"joint": 40}),
    "s2gan": (
        "s2gan-rooms",
        lambda _: test_s2gan.TINY,
        {"structure": 4, "fcn": 4, "style": 4, "joint": 4},
    ),
}


@pytest.mark.parametrize("model", list(RUNS))
def test_sigkill_then_resume_is_exact_for_every_model(model, tmp_path, mnist_dir, caplog):
    """Two SIGKILLs of a real `python -m ganstack train` process (see tests/killing.py), then
    an in-process --resume completes the run; it must equal a run never killed, bit for bit."""
    config, tiny, phases = RUNS[model]
    overrides = run_overrides(tiny(mnist_dir), phases, checkpoint_every=1)
    killed = KilledRun(tmp_path, config, overrides, seed=sum(map(ord, model)))
    stats = killed.kill_repeatedly(MODEL_KILLS, max_delay=0.1)
    assert stats.kills == MODEL_KILLS
    print(f"{model}: {stats}")  # how many kills cut a write short (shown with -s)

    # The last start runs in this process (a third interpreter start would cost ~4 s a model).
    caplog.set_level(logging.INFO, logger="ganstack")
    cfg = load_run_config(killed.run, overrides)
    assert Trainer(cfg, killed.run, resume=True).fit() == "done"
    assert f"(step {stats.step})" in caplog.text  # continued from the newest checkpoint
    killed.check_complete(phases)

    straight = tmp_path / "straight"
    assert (
        Trainer(load_config(config, run_overrides(tiny(mnist_dir), phases, 0)), straight).fit()
        == "done"
    )
    killed.check_same_as(straight, phases)


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory, mnist_dir) -> dict[str, Path]:
    """A run directory of each model (sgan too) holding one checkpoint of its initial state
    (training adds nothing to what this test checks)."""
    from .conftest import tiny_config_overrides

    out = {}
    for model, (config, tiny, _) in {
        **RUNS,
        "sgan": ("sgan-mnist", tiny_config_overrides, None),
    }.items():
        cfg = load_config(config, tiny(mnist_dir))
        out[model] = tmp_path_factory.mktemp(model)
        (out[model] / "config.yaml").write_text(cfg.to_yaml())
        Trainer(cfg, out[model]).save()
    return out


@pytest.mark.parametrize("model", ["sgan", *RUNS])
@pytest.mark.parametrize("where", ["first", "middle", "last"])  # byte of the weights file
def test_an_altered_byte_in_any_models_checkpoint_is_refused(saved_runs, model, where, tmp_path):
    """`ganstack.load` (behind `sample` and `eval`) and `--resume` refuse it."""
    run = tmp_path / "run"
    shutil.copytree(saved_runs[model], run)
    assert load(run).model.name == model  # intact: verifies and loads
    (weights,) = (run / "checkpoints").glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[{"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load(run)
    if where == "middle":  # and so does --resume
        with pytest.raises(CheckpointError, match="does not match the SHA-256"):
            Trainer(load_run_config(run), run, resume=True).fit()


# ---- fuzzing: each model's own config section ---------------------------------------------------

MODEL_CONFIG_EXAMPLES = 150  # per registered model
# The smallest bundled config of each model, and the data it describes (what build_model sees).
MODEL_CONFIGS = {
    "sgan": ("sgan-mnist", DataInfo((1, 28, 28), 10, "mnist")),
    "lapgan": ("lapgan-mnist", DataInfo((1, 28, 28), 10, "mnist")),
    "dcgan": ("dcgan-mnist", DataInfo((1, 28, 28), 10, "mnist")),
    "stackgan_v1": ("stackgan-v1-shapes", DataInfo((3, 64, 64), 0, "shapes", 256)),
    "stackgan_v2": ("stackgan-v2-shapes", DataInfo((3, 64, 64), 0, "shapes", 256)),
    "hdgan": ("hdgan-shapes", DataInfo((3, 64, 64), 0, "shapes", 256)),
    "s2gan": ("s2gan-rooms", DataInfo((3, 64, 64), 4, "rooms")),
}
BUILD_LIMIT = 512  # integers above this are only loaded, not built: `r_num=10**9` is a legal
# request for a billion residual blocks, and building it would take that long


def _fields(cls: type, prefix: str = "model") -> dict[str, Any]:
    """Every key of a config dataclass, nested ones dotted, with its annotated type."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out |= _fields(tp, f"{prefix}.{f.name}")
        else:
            out[f"{prefix}.{f.name}"] = tp
    return out


def _yaml(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return ".nan" if math.isnan(v) else ("-.inf" if v < 0 else ".inf")
    if isinstance(v, list):
        return "[" + ", ".join(_yaml(x) for x in v) + "]"
    return json.dumps(v)


small_ints = st.integers(-3, 40) | st.sampled_from([0, 64, 100, 300, 2**31, 2**63, 10**30])
any_floats = st.floats() | st.sampled_from([0.0, -0.0, 1.0, 1e-3, 0.999, 1.5, -1.0, 1e300])


def _typed_values(tp: Any) -> st.SearchStrategy[str]:
    """YAML text of values of roughly the right type, so values get past the type check and
    reach each model's own range checks and constructor."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return st.sampled_from([_yaml(a) for a in args])
    if origin in (Union, types.UnionType):
        return st.one_of(
            [_typed_values(a) for a in args if a is not type(None)] + [st.just("null")]
        )
    if origin is list:
        return st.lists(_typed_values(args[0]).map(yaml.safe_load), max_size=5).map(
            lambda xs: "[" + ", ".join(_yaml(x) for x in xs) + "]"
        )
    if tp is bool:
        return st.sampled_from(["true", "false"])
    if tp is int:
        return small_ints.map(_yaml)
    if tp is float:
        return any_floats.map(_yaml)
    if tp is str:
        return st.sampled_from(["mnist", "fc3", "pool2", "conv", "''", "x"])
    return st.just("null")


def _model_overrides(model: str) -> st.SearchStrategy[list[str]]:
    fields = {k: tp for k, tp in _fields(MODELS.get(model).Config).items() if k != "model.name"}
    scalars = st.sampled_from([s for s in YAML_SCALARS if len(s) < 100]) | st.text(max_size=8)
    own = st.sampled_from(sorted(fields)).flatmap(
        lambda k: st.builds(
            lambda v: f"{k}={v}", st.one_of(*[_typed_values(fields[k])] * 4, scalars)
        )
    )
    stray = st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(
            st.builds(lambda s: f"model.{s}", st.text(alphabet="abcz._-09 ", max_size=10)),
            st.builds(lambda k, s: f"{k}{s}", st.sampled_from(sorted(fields)), st.text(max_size=4)),
        ),
        scalars,
    )
    return st.lists(st.one_of(*[own] * 5, stray), min_size=1, max_size=3)


@functools.cache
def _bundled(config: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config's YAML tree, and the leaves of its model section."""
    raw = read_config_tree(resolve_config_path(config))
    return raw, _leaves(dataclasses.asdict(from_dict(copy.deepcopy(raw)).model))


def _builds_or_config_error(model: str, items: list[str]) -> str:
    """Load the model's bundled config with ``items`` (as `load_config` does), then build the
    model; anything but a ConfigError propagates."""
    config, info = MODEL_CONFIGS[model]
    raw, default = _bundled(config)
    try:
        cfg = from_dict(apply_overrides(copy.deepcopy(raw), items))
    except ConfigError:
        return "ConfigError at load"
    assert cfg.model.name == model
    again = from_dict(yaml.safe_load(cfg.to_yaml()))  # what config.yaml holds loads the same
    assert again.hash() == cfg.hash()
    if any(
        isinstance(v, int) and abs(v) > BUILD_LIMIT and default.get(k) != v
        for k, v in _leaves(dataclasses.asdict(cfg.model)).items()
    ):
        return "loaded (too large to build)"
    try:
        with torch.device("meta"), warnings.catch_warnings():  # no memory for the weights
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            build_model(cfg.model, info)
    except ConfigError:
        return "ConfigError at build"
    return "built"


def _leaves(tree: Any, key: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: x for n, v in tree.items() for k, x in _leaves(v, f"{key}.{n}").items()}
    if isinstance(tree, list):
        return {k: x for i, v in enumerate(tree) for k, x in _leaves(v, f"{key}.{i}").items()}
    return {key: tree}


@pytest.fixture()
def memory_cap():
    """At most 3 GiB more address space while a test runs: a config that asks for an
    astronomic size then fails with MemoryError instead of taking the machine's memory (one
    did: `model.branches=2**63` of stackgan_v2 computed 2 ** (branches - 1), 23 GB and counting,
    before the OOM killer stopped it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    vm_kib = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:"))
    )
    cap = vm_kib * 1024 + (3 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.usefixtures("memory_cap")
@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_fuzz_each_models_config_section_raises_only_config_errors(model):
    """Random keys and values for model.*: loading the config, and building the model from
    it, either work or raise ConfigError (never a TypeError, ValueError, ... from inside)."""
    assert set(MODEL_CONFIGS) == set(MODELS.names())  # every registered model is fuzzed

    @settings(FUZZ, max_examples=MODEL_CONFIG_EXAMPLES)
    @given(_model_overrides(model))
    def fuzz(items):
        event(_builds_or_config_error(model, items))

    fuzz()


EDGE_VALUES = [
    ".nan",
    ".inf",
    "-.inf",
    "1e300",
    "-1",
    "0",
    "1",
    "1.5",
    "3",
    str(2**63),
    "[]",
    "[-1]",
    "[1, 2, 3, 4]",
    "null",
    "''",
    "true",
]


@pytest.mark.usefixtures("memory_cap")
@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_every_model_key_with_each_edge_value_is_a_config_error_or_builds(model):
    """The deterministic complement of the fuzz: each key of the model's section alone, set
    to each of EDGE_VALUES (NaN, infinities, huge, negative, zero, empty lists, ...)."""
    keys = [k for k in _fields(MODELS.get(model).Config) if k != "model.name"]
    errors = []
    for key in keys:
        for value in EDGE_VALUES:
            try:
                _builds_or_config_error(model, [f"{key}={value}"])
            except Exception as e:  # noqa: BLE001 - collected, then reported together
                errors.append(f"{key}={value}: {type(e).__name__}: {str(e).splitlines()[0]}")
    assert not errors, "\n".join(errors)


@pytest.mark.usefixtures("memory_cap")
@pytest.mark.parametrize(
    ("config", "override", "info"),
    [
        (
            "stackgan-v2-shapes",
            "model.branches=9223372036854775808",
            MODEL_CONFIGS["stackgan_v2"][1],
        ),
        ("lapgan-mnist", "model.levels=9223372036854775808", MODEL_CONFIGS["lapgan"][1]),
    ],
)
def test_a_huge_count_is_a_config_error_not_all_the_memory(config, override, info):
    """Found by the fuzz test: each computed 2 ** (count - 1) before checking it."""
    with pytest.raises(ConfigError, match="branches|levels"):
        build_model(load_config(config, [override]).model, info)
