"""Reliability of every model, not only SGAN: SIGKILL then exact resume, tamper detection, and
fuzzing of each model's own config section.

Counts quoted in docs/reliability.md come from the constants below.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from ganstack.config import load_config
from ganstack.errors import CheckpointError
from ganstack.run import load
from ganstack.train.trainer import Trainer, load_run_config

from . import test_dcgan, test_lapgan, test_s2gan, test_stackgan_v1, test_stackgan_v2
from .killing import KilledRun, run_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL_KILLS = 2  # SIGKILLs per model: one at a random moment, one during a checkpoint write

# model: (bundled config, its test module's tiny overrides, phase lengths for the kill test).
# Each run is long enough to outlast both kills: a fast model gets more steps.
RUNS = {
    "lapgan": ("lapgan-mnist", test_lapgan.tiny, {"independent": 60}),
    "dcgan": ("dcgan-mnist", test_dcgan.tiny, {"train": 60}),
    "stackgan_v1": ("stackgan-v1-shapes", lambda _: test_stackgan_v1.TINY,
                    {"stage1": 10, "stage2": 10}),
    "stackgan_v2": ("stackgan-v2-shapes", lambda _: test_stackgan_v2.TINY, {"joint": 40}),
    "s2gan": ("s2gan-rooms", lambda _: test_s2gan.TINY,
              {"structure": 4, "fcn": 4, "style": 4, "joint": 4}),
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
    assert Trainer(load_config(config, run_overrides(tiny(mnist_dir), phases, 0)),
                   straight).fit() == "done"
    killed.check_same_as(straight, phases)


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory, mnist_dir) -> dict[str, Path]:
    """A run directory of each model (sgan too) holding one checkpoint of its initial state
    (training adds nothing to what this test checks)."""
    from .conftest import tiny_config_overrides

    out = {}
    for model, (config, tiny, _) in {**RUNS, "sgan": ("sgan-mnist", tiny_config_overrides,
                                                      None)}.items():
        cfg = load_config(config, tiny(mnist_dir))
        out[model] = tmp_path_factory.mktemp(model)
        (out[model] / "config.yaml").write_text(cfg.to_yaml())
        Trainer(cfg, out[model]).save()
    return out


@pytest.mark.parametrize("model", ["sgan", *RUNS])
@pytest.mark.parametrize("where", ["first", "middle", "last"])  # byte of the weights file
def test_an_altered_byte_in_any_models_checkpoint_is_refused(saved_runs, model, where,
                                                              tmp_path):
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
