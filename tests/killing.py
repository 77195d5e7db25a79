"""SIGKILL a real ``python -m ganstack train`` process at chosen moments and resume it.

Shared by the SGAN kill test and the per-model ones in ``tests/test_reliability.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ganstack.train import checkpoint as ckpt

# One thread in every process the tests start; unbuffered so the logs are complete at a kill.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_overrides(
    tiny_overrides: list[str], phases: dict[str, int], checkpoint_every: int
) -> list[str]:
    """A model's tiny overrides with these phase lengths, one thread, no EMA, no evaluation."""
    drop = ("train.phases", "train.checkpoint_every")
    return [o for o in tiny_overrides if not o.startswith(drop)] + [
        *(f"train.phases.{name}={steps}" for name, steps in phases.items()),
        f"train.checkpoint_every={checkpoint_every}",
        "train.num_threads=1",
        # The EMA's batch-norm recalibration costs ~1 s per checkpoint on CPU; without it a
        # checkpoint every step is affordable.
        "train.ema=0",
        "eval.at_end=false",
    ]


def step_of(json_path: Path) -> int:
    return int(json.loads(json_path.read_text())["global_step"])


def metric_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line cut short by the kill
    return steps


def leftovers(ckdir: Path) -> list[str]:
    """Evidence of a write cut short: temporaries, or weights without their JSON record."""
    names = set(os.listdir(ckdir)) if ckdir.is_dir() else set()
    tmp = [n for n in names if n.startswith(".") and n.endswith(".tmp")]
    orphans = [
        n
        for n in names
        if n.endswith(".safetensors") and n.replace(".safetensors", ".json") not in names
    ]
    return sorted(tmp + orphans)


def _wait_for(
    cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60.0, poll: float = 0.02
) -> bool:
    """True once ``cond()`` holds; False if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("the training process made no progress")


@dataclass
class KillStats:
    kills: int = 0
    in_write: int = 0  # kills that left a temporary file or weights without their record
    half_pruned: int = 0  # old rolling checkpoints seen half-way through their deletion
    step: int = 0  # the newest checkpoint's step after the last kill


class KilledRun:
    """``ganstack train CONFIG --out tmp/run OVERRIDES``, started again with ``--resume``
    after each kill."""

    def __init__(self, tmp_path: Path, config: str, overrides: list[str], seed: int) -> None:
        self.tmp, self.config, self.overrides = tmp_path, config, overrides
        self.run = tmp_path / "run"
        self.ckdir = self.run / "checkpoints"
        self.rng = random.Random(seed)
        self.stats = KillStats()

    def start(self, i: int) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"log{i}.txt"
        cmd = [
            sys.executable,
            "-m",
            "ganstack",
            "train",
            self.config,
            "--out",
            str(self.run),
            "--no-eval",
            *(["--resume"] if i else []),
            *self.overrides,
        ]
        with open(log, "w") as f:
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV), log

    def newest(self) -> int:
        found = ckpt.list_checkpoints(self.ckdir)
        return step_of(found[-1]) if found else 0

    def kill_repeatedly(self, kills: int, max_delay: float = 0.25) -> KillStats:
        """Start, then SIGKILL, ``kills`` processes in a row.

        Each process is killed once it has resumed and written a checkpoint of its own: the
        even-numbered ones at a seeded random moment 0 to ``max_delay`` s later, the odd ones
        while a checkpoint is being written (as soon as a temporary file shows, after letting
        0-2 writes pass). After every kill the newest checkpoint must verify, the older ones
        load, the step never go backwards, and the resumed process must have logged that it
        continued from exactly the step of the checkpoint before.
        """
        s, ckdir = self.stats, self.ckdir
        for i in range(s.kills, s.kills + kills):
            proc, log = self.start(i)
            assert _wait_for(lambda last=s.step: self.newest() > last, proc), log.read_text()
            if i % 2:  # while a checkpoint is being written: as soon as a temporary file shows
                skip = self.rng.randrange(3)  # let 0-2 checkpoint writes pass first
                for j in range(skip + 1):
                    seen = _wait_for(
                        lambda: any(n.endswith(".tmp") for n in os.listdir(ckdir)),
                        proc,
                        poll=0.0005,
                    )
                    if j < skip:
                        time.sleep(0.03)
            else:  # at a random moment
                time.sleep(self.rng.uniform(0.0, max_delay))
                seen = True
            assert seen and proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
            s.kills += 1
            s.in_write += bool(leftovers(ckdir))
            if i:
                text = log.read_text()
                assert f"(step {s.step})" in text, text  # --resume continued from it

            # The newest visible checkpoint is complete and verifies, and so is every other
            # one except an old rolling checkpoint caught half-way through its deletion (see
            # test_a_kill_while_pruning_leaves_only_complete_checkpoints).
            found = ckpt.list_checkpoints(ckdir)
            assert found
            _, tensors = ckpt.read_checkpoint(found[-1])  # checks the SHA-256
            assert any(k.startswith("model/") for k in tensors)
            for path in found[:-1]:
                if not (ckdir / f"{path.stem}.safetensors").exists() and path.stem.startswith(
                    "step-"
                ):
                    s.half_pruned += 1
                    continue
                ckpt.read_checkpoint(path)
            step = step_of(found[-1])
            assert step >= s.step
            s.step = step
        return s

    def finish(self, timeout: float = 120) -> None:
        """One last process, not killed, completes the run from the newest checkpoint."""
        proc, log = self.start(self.stats.kills)
        assert proc.wait(timeout=timeout) == 0, log.read_text()
        assert f"(step {self.stats.step})" in log.read_text()

    def check_complete(self, phases: dict[str, int]) -> None:
        """The run completed: last checkpoint at the last step, each step logged once, no
        temporary files or stray weights left."""
        total = sum(phases.values())
        last = [name for name, steps in phases.items() if steps][-1]
        found = ckpt.list_checkpoints(self.ckdir)
        assert step_of(found[-1]) == total and (self.ckdir / f"phase-{last}.json").is_file()
        assert metric_steps(self.run) == list(range(1, total + 1))
        assert leftovers(self.ckdir) == []

    def check_same_as(self, straight: Path, phases: dict[str, int]) -> None:
        """Same losses, and bit for bit the same final weights and optimizer state, as
        ``straight``, a run that was never killed."""
        last = [name for name, steps in phases.items() if steps][-1]

        def losses(r: Path) -> list[dict]:
            rows = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
            return [{k: v for k, v in row.items() if k.startswith("loss/")} for row in rows]

        assert losses(self.run) == losses(straight)
        _, a = ckpt.read_checkpoint(self.ckdir / f"phase-{last}.json")
        _, b = ckpt.read_checkpoint(straight / "checkpoints" / f"phase-{last}.json")
        keys = [k for k in a if k.startswith(("model/", "optim/"))]
        assert keys and a.keys() == b.keys()
        for k in keys:
            assert torch.equal(a[k], b[k]), (k, a[k], b[k])
