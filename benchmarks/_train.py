"""Training runs for the benchmarks: one `ganstack train` subprocess per run, reused when done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def last_phase(config: str, overrides: list[str]) -> str:
    from ganstack.config import load_config

    phases = load_config(config, overrides).train.phases
    return [name for name, steps in phases.items() if steps > 0][-1]  # 0 steps: skipped


def train_run(
    config: str,
    overrides: list[str],
    out: Path,
    seed: int,
    threads: int,
    keep_outputs: bool = False,
) -> Path:
    """Train ``config`` with ``overrides`` into ``out`` (no end-of-training evaluation, and no
    sample grids or intermediate checkpoints unless ``keep_outputs``), logging to ``out``.log
    beside it. A finished run
    in ``out`` is reused and an interrupted one resumed, so a benchmark can be re-invoked."""
    if (out / "checkpoints" / f"phase-{last_phase(config, overrides)}.json").exists():
        return out
    cmd = [
        sys.executable,
        "-m",
        "ganstack",
        "train",
        config,
        "--out",
        str(out),
        "--resume",
        "--no-eval",
        f"train.seed={seed}",
        f"train.num_threads={threads}",
        "train.progress=false",
        "train.tensorboard=false",
        *([] if keep_outputs else ["train.sample_every=0", "train.checkpoint_every=0"]),
        *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "w") as logf:
        subprocess.run(cmd, check=True, stdout=logf, stderr=subprocess.STDOUT, env=env)
    return out
