"""The generic training loop.

The trainer runs the phases a model declares, one ``model.train_step`` per step, and owns
everything around it: device and precision, seeding, the batcher, logging (``metrics.jsonl``,
TensorBoard, a progress bar), sample grids, checkpoints, exact resume and Ctrl-C handling.
It never branches on the model's name.

Run directory layout::

    config.yaml        the fully resolved config
    run.json           data shape/classes and the setup results (e.g. encoder accuracy)
    metrics.jsonl      one JSON line per logging interval
    tb/                TensorBoard events
    samples/           sample grids during training
    figures/           the model's figures and training curves after training
    checkpoints/       step-NNNNNNN.{safetensors,json} (rolling), phase-NAME.{...} (kept) and
                       keep-step-NNNNNNN.{...} (the steps named by train.phase_init)
    eval.json          metrics written by evaluation

Under ``torchrun`` (``WORLD_SIZE > 1``) the same loop runs data-parallel (see
:mod:`ganstack.train.distributed`): each rank trains on its shard of every global batch with its
own noise (seed + rank), optimizers average gradients over the ranks before they step, and only
rank 0 writes the run directory. Every rank loads the checkpoint on resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.config import ExperimentConfig, from_dict
from ganstack.data import Batcher, ImageDataset, load_dataset
from ganstack.environment import environment
from ganstack.errors import CheckpointError, ConfigError, GanstackError, NonFiniteLossError
from ganstack.fileio import LOCK_NAME, lock_folder, read_regular, unlock_folder
from ganstack.models import DataInfo, StackModel, build_model
from ganstack.models.base import Step
from ganstack.train import checkpoint as ckpt
from ganstack.train import distributed, init_from
from ganstack.train.precision import apply_levers, resolve_precision, step_autocast
from ganstack.viz import plot_curves, save_grid

log = logging.getLogger("ganstack")

SCHEDULED = ("lr", "momentum")  # the optimizer settings a model's schedule may set per step


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N an existing GPU) as a torch device; any
    other name is a :class:`GanstackError` that says what is accepted."""
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and re.fullmatch(r"cuda(:\d{1,4})?", name) is None:
        raise GanstackError(f"{what}={name!r} is not a device: use auto, cpu, cuda or cuda:N")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GanstackError(f"{what}={name} but CUDA is not available; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GanstackError(
            f"{what}={name} but this machine has {torch.cuda.device_count()} "
            f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def _is_rank0() -> bool:
    """Whether this process is rank 0 of its job (torchrun sets RANK; a single process is)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0").strip() in ("", "0")


def config_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """The dotted keys whose values differ between two config mappings (leaves, or a whole
    value where the types differ)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{where}.{k}" if where else str(k)
            if k not in old or k not in new:
                out.append(sub)
            else:
                out += config_differences(old[k], new[k], sub)
        return out
    return [] if old == new else [where]


_MISSING = object()


def _quiet_writer_thread(previous: Any) -> Any:
    """A ``threading.excepthook`` that leaves out the traceback of an I/O error in
    TensorBoard's writer thread (the writer raises it again in the training thread)."""

    def hook(args: Any) -> None:
        if (
            type(args.thread).__name__ == "_AsyncWriterThread"
            and args.exc_type is not None
            and issubclass(args.exc_type, OSError)
        ):
            return
        previous(args)

    return hook


def _dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train ``cfg`` into ``run_dir``; with ``resume`` continue from its last checkpoint."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        resume: bool = False,
        datasets: tuple[ImageDataset, ImageDataset | None] | None = None,
        config_changes: Collection[str] = (),
    ) -> None:
        """``config_changes``: with ``resume``, the dotted keys (or sections) in which ``cfg``
        may differ from the config the checkpoint was written with (the overrides given on
        the command line); any other difference is an error."""
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.config_changes = tuple(config_changes)
        # One writer per run directory: rank 0 holds its lock until close() (or exit).
        self._lock_key: str | None = None
        created = not self.run_dir.exists()
        if _is_rank0():
            self._lock_key = lock_folder(self.run_dir, "ganstack train")
        self._unlock = weakref.finalize(self, unlock_folder, self._lock_key)
        try:
            self._init(cfg, resume, datasets)
        except BaseException:
            self._unlock()
            if created and self._lock_key is not None:  # no empty run directory left behind
                with contextlib.suppress(OSError):
                    (self.run_dir / LOCK_NAME).unlink()
                    self.run_dir.rmdir()
            raise

    def _init(
        self,
        cfg: ExperimentConfig,
        resume: bool,
        datasets: tuple[ImageDataset, ImageDataset | None] | None,
    ) -> None:
        existing, unusable = ckpt.scan_checkpoints(self.ckpt_dir)
        stray = sorted(self.ckpt_dir.glob("*.safetensors")) if self.ckpt_dir.is_dir() else []
        holds_run = bool(existing or unusable or stray)
        if holds_run and not resume:
            raise GanstackError(
                f"{self.run_dir} already holds a run (checkpoints/); pass --resume to continue "
                f"it, or choose another --out"
            )
        if resume and holds_run and not existing:
            # Never start over a run whose checkpoints cannot be read: that would overwrite
            # its weights and its metrics.
            why = "; ".join(reason for _, reason in unusable[:3]) or (
                f"weights without a record ({', '.join(p.name for p in stray[:3])})"
            )
            raise CheckpointError(
                f"--resume: {self.run_dir} holds a run but none of its checkpoints can be read "
                f"({why}). Nothing was changed. Restore a good checkpoint into {self.ckpt_dir}, "
                f"or, to start over, delete {self.ckpt_dir} (or choose another --out)"
            )
        if resume and unusable:
            log.warning(
                "%d checkpoint record(s) in %s cannot be read and are passed over: %s",
                len(unusable),
                self.ckpt_dir,
                unusable[-1][1],
            )
        self.resuming = bool(existing) and resume
        if resume and not existing:
            log.info("no checkpoint in %s: starting a new run", self.run_dir)
        self.cfg = cfg
        tc = cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        # After the check above: no rank writes anything before every rank has joined here.
        self.dist, self.device = distributed.init_distributed(self.device)
        self.precision = resolve_precision(tc.precision, self.device)
        # train.init_from: a fresh run starts from another run's weights (a resumed run has
        # them in its own checkpoints). Read first: a wrong path fails before the data loads.
        source = init_from.read_source(tc.init_from) if tc.init_from and not self.resuming else None
        seed_everything(tc.seed)
        self.train_ds, self.eval_ds = datasets if datasets is not None else load_dataset(cfg.data)
        self.info = DataInfo.of(self.train_ds)
        self.model: StackModel = build_for_data(cfg, self.info).to(self.device)
        if tc.ema > 0:
            self.model.enable_ema(tc.ema)
        # What was and was not loaded goes to run.json (init_from).
        self.init_report: dict[str, Any] | None = None
        if source is not None:
            self.init_report = init_from.apply(self.model, source)
            del source
            if self.dist.is_main:
                log.info("%s", init_from.summary(self.init_report))
        apply_levers(self.model, tc.channels_last, tc.fused_optimizers)
        # The rates each parameter group was built with: what a model's schedule (lr,
        # momentum) returning None means. Recorded before a checkpoint overwrites them.
        self._base_hyper = {
            name: [{k: g[k] for k in SCHEDULED if k in g} for g in opt.param_groups]
            for name, opt in self.model.optimizers.items()
        }
        # Learning-rate scale after NaN rollbacks (train.nan_policy): multiplies every rate
        # the schedule sets (see _apply_schedule).
        self.lr_scale = 1.0
        self.model.reference = self.eval_ds if self.eval_ds is not None else self.train_ds
        self._hooks: list[Any] = []
        if self.dist.enabled:
            if tc.sync_bn:
                distributed.convert_sync_batchnorm(self.model, self.device)
            self._hooks = distributed.register_gradient_hooks(
                self.model.optimizers.values(), self.dist
            )
        elif tc.sync_bn:
            log.info("train.sync_bn has no effect in a single process")
        # The permutation seed is the same on every rank; each rank takes its part of a batch.
        self.batcher = Batcher(
            self.train_ds, tc.batch_size, tc.seed, self.device, self.dist.rank, self.dist.world
        )
        self.global_step = 0
        self.phase_index = 0
        self.phase_step = 0
        self.elapsed = 0.0
        self._stop_requested = False  # set by the signal handler
        self._stop_agreed = False  # under distributed training: any rank asked to stop
        self._stop_time = 0.0
        self.max_steps: int | None = None
        # Loss sums since the last logged row: live ones (saved in checkpoints), and those a
        # resumed checkpoint carried (the next phase run continues them).
        self._live: tuple[dict[str, torch.Tensor], int] = ({}, 0)
        self._pending: dict[str, float] = {}
        self._pending_count = 0
        self._tb: Any = None
        self._excepthook: Any = None
        # The best value of cfg.eval.best seen by the metrics during training: {metric, value,
        # step}; kept in checkpoints so that a resumed run keeps comparing with it.
        self.best: dict[str, Any] | None = None

    # ---- state -------------------------------------------------------------------------------

    @property
    def phases(self) -> list[tuple[str, int]]:
        return list(self.cfg.train.phases.items())

    def _meta(self) -> dict[str, Any]:
        phases = self.phases
        return {
            "global_step": self.global_step,
            "phase_index": self.phase_index,
            "phase": phases[self.phase_index][0] if self.phase_index < len(phases) else None,
            "phase_step": self.phase_step,
            "elapsed_s": round(self.elapsed, 3),
            "lr_scale": self.lr_scale,
            "best": self.best,
            "config_hash": self.cfg.hash(),
            "config": json.loads(json.dumps(self.cfg.to_dict())),
            # Losses of the steps since the last logged row (float32 sums, exact in JSON).
            "log_pending": {
                "count": self._live[1],
                "sums": {k: float(v) for k, v in self._live[0].items()},
            },
            "data_info": {
                "shape": list(self.info.shape),
                "num_classes": self.info.num_classes,
                "name": self.info.name,
                "text_dim": self.info.text_dim,
            },
            "model": self.cfg.model.name,
        }

    def save(self, name: str | None = None) -> Path:
        """Write a checkpoint (rank 0 writes it; under distributed training every rank calls)."""
        name = name or f"step-{self.global_step:07d}"
        # On every rank (same inputs, so the ranks stay identical; SyncBatchNorm needs them all).
        self.model.recalibrate_ema_bn()
        rank_rng = None
        if self.dist.enabled:
            local = ckpt.rng_state(self.device if self.device.type == "cuda" else None)
            rank_rng = distributed.gather_rng_states(local, self.dist)
        if not self.dist.is_main:
            return self.ckpt_dir / f"{name}.json"
        with ckpt.write_lock(self.ckpt_dir):  # readers (ckpt.read_newest) wait for it
            path = ckpt.save_checkpoint(
                self.ckpt_dir, name, self.model, self.model.optimizers, self._meta(), rank_rng
            )
            self._prune()
        return path

    def _prune(self) -> None:
        rolling = [p for p in ckpt.list_checkpoints(self.ckpt_dir) if p.stem.startswith("step-")]
        for p in rolling[: -self.cfg.train.keep_checkpoints]:
            p.unlink(missing_ok=True)  # the record first: weights without one are invisible
            (p.parent / f"{p.stem}.safetensors").unlink(missing_ok=True)

    def _restore_latest(self) -> None:
        if self.dist.is_main:
            ckpt.remove_leftovers(self.ckpt_dir)
        latest = ckpt.list_checkpoints(self.ckpt_dir)[-1]
        record, tensors = ckpt.read_checkpoint(latest)
        if record.get("model") != self.cfg.model.name:
            raise CheckpointError(
                f"{latest} holds a '{record.get('model')}' model, the config a "
                f"'{self.cfg.model.name}'"
            )
        self._check_record(latest, record)
        rank, world = self.dist.rank, self.dist.world
        per_rank = self.dist.enabled and ckpt.has_rank_rng(record, rank)
        ckpt.restore(record, tensors, self.model, self.model.optimizers, rng=not per_rank)
        self.global_step = record["global_step"]
        self.phase_index = record["phase_index"]
        self.phase_step = record["phase_step"]
        self.elapsed = float(record.get("elapsed_s", 0.0))
        self.lr_scale = float(record.get("lr_scale", 1.0))
        pending = record.get("log_pending") or {"count": 0, "sums": {}}
        self._pending_count = pending["count"]
        self._pending = dict(pending["sums"]) if self._pending_count else {}
        best = record.get("best")
        self.best = best if isinstance(best, dict) else None
        if per_rank:  # each rank continues its own noise stream
            ckpt.restore_rank_rng(
                record, tensors, rank, self.device if self.device.type == "cuda" else None
            )
        elif rank > 0:  # saved by fewer processes: a fresh stream per rank
            seed_everything(self.cfg.train.seed + rank + 1_000_003 * self.global_step)
        saved_world = len(record.get("rng_ranks") or []) or 1
        if saved_world != world and self.dist.is_main:
            log.warning(
                "%s was written by %d process(es), resumed with %d: training goes on, "
                "but not as the original run would have",
                latest.name,
                saved_world,
                world,
            )
        if self.dist.is_main:
            self._truncate_metrics(self.global_step)
            log.info("resumed from %s (step %d)", latest.name, self.global_step)

    def _check_record(self, path: Path, record: dict) -> None:
        """What a resume takes from a record must fit this config: the phase it names, and the
        config itself, which may differ only in ``self.config_changes``."""
        for key in ("phase_index", "phase_step"):
            if key not in record:
                raise CheckpointError(f"{path} has no '{key}': it is not a training checkpoint")
        phases = self.phases
        pi = record["phase_index"]
        if pi > len(phases) or (
            pi < len(phases) and record.get("phase", phases[pi][0]) != phases[pi][0]
        ):
            raise CheckpointError(
                f"{path} is in phase {record.get('phase')!r} (number {pi}), which the config's "
                f"phases ({', '.join(n for n, _ in phases)}) do not have there; was the "
                f"config changed?"
            )
        saved = record.get("config")
        current = json.loads(json.dumps(self.cfg.to_dict()))
        if isinstance(saved, dict):
            changed = [
                k
                for k in config_differences(saved, current)
                if not any(k == c or k.startswith(f"{c}.") for c in self.config_changes)
                and not self._version_skew(k, saved, current)
            ]
        elif record.get("config_hash") not in (None, self.cfg.hash()) and not self.config_changes:
            changed = ["(the checkpoint, from an older ganstack, records only its hash)"]
        else:
            changed = []
        if changed:
            shown = ", ".join(changed[:8]) + (
                f" and {len(changed) - 8} more" if len(changed) > 8 else ""
            )
            raise CheckpointError(
                f"the config differs from the one {path.name} was trained with, in: {shown}. "
                f"Was {self.run_dir / 'config.yaml'} edited? Undo the edit; or, to change "
                f"these on purpose, give them as key=value overrides on the --resume command "
                f"line"
            )

    def _version_skew(self, key: str, saved: dict, current: dict) -> bool:
        """Whether ``key`` differs only because the checkpoint was written by another version
        of ganstack: a key this version no longer has, or a new key at its default value."""
        old, new = _dotted(saved, key), _dotted(current, key)
        if new is _MISSING:
            return True
        if old is not _MISSING:
            return False
        try:
            defaults = from_dict({"model": {"name": self.cfg.model.name}}).to_dict()
        except GanstackError:
            return False
        default = _dotted(defaults, key)
        return default is not _MISSING and json.loads(json.dumps(default)) == new

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        text = read_regular(path, None, GanstackError, "metrics file").decode("utf-8", "replace")
        for line in text.splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        ckpt.atomic_write_text(path, "".join(k + "\n" for k in keep))

    # ---- logging -----------------------------------------------------------------------------

    def _open_tensorboard(self) -> None:
        if not self.cfg.train.tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning(
                "TensorBoard is not installed; scalars go to metrics.jsonl only "
                "(pip install 'ganstack[tensorboard]' to get event files)"
            )
            return
        # TensorBoard writes from a thread. When a write fails there (a full disk) the thread
        # stores the error, which the next add_scalar or close raises here (and the CLI reports
        # in one line); the thread's own traceback on stderr is left out.
        self._excepthook = threading.excepthook
        threading.excepthook = _quiet_writer_thread(self._excepthook)
        self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.global_step or None)

    def _write_metrics(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "phase_step"):
                    self._tb.add_scalar(k, v, row["step"])

    def write_samples(self, tag: str) -> None:
        """A fixed-noise sample grid (same inputs every time, so grids are comparable).

        Under distributed training every rank computes it (so batch-norm layers that synchronise
        see every rank) and rank 0 writes it.
        """
        gen = torch.Generator().manual_seed(self.cfg.train.seed + 12345)
        rows = self.info.num_classes if self.model.conditional else 8
        grid = self.model.grid(rows, 10, vary=self.model.noise_dims(), generator=gen)
        if not self.dist.is_main:
            return
        save_grid(grid, self.run_dir / "samples" / f"{tag}.png")
        if self._tb is not None:
            from ganstack.viz import grid_array

            self._tb.add_image("samples", grid_array(grid), self.global_step, dataformats="HWC")

    # ---- the loop ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._stop_requested:  # a second Ctrl-C stops at once
            # torchrun passes the signal it receives on to every worker, so a Ctrl-C in a
            # terminal reaches each rank twice within moments: only a later one aborts.
            if self.dist.enabled and now - self._stop_time < 5.0:
                return
            raise KeyboardInterrupt
        self._stop_requested = True
        self._stop_time = now
        if self.dist.is_main:
            log.warning("stopping: saving a checkpoint after this step (Ctrl-C again to abort)")

    def _should_stop(self) -> bool:
        # Under distributed training only the flag the ranks agreed on counts (a signal may
        # reach the ranks at different steps; they must all stop after the same one).
        stop = self._stop_agreed if self.dist.enabled else self._stop_requested
        return stop or (self.max_steps is not None and self.global_step >= self.max_steps)

    def fit(self, max_steps: int | None = None) -> str:
        """Run all remaining phases. Returns ``"done"`` or ``"interrupted"``.

        ``max_steps`` stops (with a checkpoint) once that many steps in all have run.
        """
        self.max_steps = max_steps
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resuming:
            self._restore_latest()  # on every rank
            # Overrides given with --resume become the run's config (the evaluation at the
            # end, `ganstack eval` and later resumes read config.yaml).
            saved = self.run_dir / "config.yaml"
            text = self.cfg.to_yaml()
            try:
                same = read_regular(saved, 1 << 20) == text.encode()
            except OSError:  # missing, or not a regular file: replaced by the config
                same = False
            if main and not same:
                ckpt.atomic_write_text(saved, text)
            if main:
                self._record_resume()
        else:
            if main:
                ckpt.atomic_write_text(self.run_dir / "config.yaml", self.cfg.to_yaml())
            # Every rank runs the setup from the same seed (cheap next to training, and any
            # state the model keeps outside tensors is set everywhere); the broadcast below
            # then makes the tensors bit-identical even where kernels are not deterministic.
            setup = self.model.setup(
                self.train_ds, self.eval_ds, log.info if main else lambda _msg: None
            )
            if main:
                run_info = {
                    "data": self._meta()["data_info"],
                    "setup": setup,
                    "train_size": len(self.train_ds),
                    "eval_size": 0 if self.eval_ds is None else len(self.eval_ds),
                    "environment": environment(self.device),
                    "precision": self.precision,
                }
                if self.init_report is not None:
                    run_info["init_from"] = self.init_report
                ckpt.atomic_write_text(self.run_dir / "run.json", json.dumps(run_info, indent=1))
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        if self.dist.enabled:
            # Rank 0's weights and buffers everywhere (this also waits for every rank's setup).
            distributed.broadcast_tensors(self._state_tensors())
            if not self.resuming:  # per-rank noise and dropout; resume restored each rank's
                seed_everything(self.cfg.train.seed + self.dist.rank)
            if main:
                log.info(
                    "distributed: %d processes (%s), %d images per step in all",
                    self.dist.world,
                    self.dist.backend,
                    self.cfg.train.batch_size * self.dist.world,
                )
        if main:
            self._open_tensorboard()
        handlers = {}
        with contextlib.suppress(ValueError):  # not in the main thread: no signal handling
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            status = self._run_phases()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            try:
                if self._tb is not None:
                    self._tb.close()
            finally:
                if self._excepthook is not None:
                    threading.excepthook, self._excepthook = self._excepthook, None
        return status

    def _record_resume(self) -> None:
        """Add this process's environment (versions, machine, command, git state) to
        ``run.json``'s ``resumes``: a run may be continued elsewhere, with other versions."""
        path = self.run_dir / "run.json"
        try:
            info = json.loads(read_regular(path, 64 << 20, GanstackError, "run record"))
        except FileNotFoundError:
            info = {}
        except (OSError, GanstackError, ValueError) as e:
            log.warning("cannot record this resume in %s (%s)", path, e)
            return
        if not isinstance(info, dict):
            log.warning("cannot record this resume in %s (not a JSON object)", path)
            return
        resumes = info.get("resumes")
        resumes = resumes if isinstance(resumes, list) else []
        resumes.append(
            {
                "step": self.global_step,
                "environment": environment(self.device),
                "precision": self.precision,
            }
        )
        info["resumes"] = resumes
        ckpt.atomic_write_text(path, json.dumps(info, indent=1))

    def _state_tensors(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def close(self, barrier: bool = True) -> None:
        """Remove the gradient hooks and leave the process group (if this trainer joined it).

        ``barrier``: wait for every rank first (pass False on an error path: a rank that failed
        alone would otherwise wait for the others forever).
        """
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._unlock()  # the run directory's lock
        if self.dist.owned:
            if barrier:
                self.dist.barrier()
            self.dist.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close(barrier=exc_type is None)

    def _run_phases(self) -> str:
        tc = self.cfg.train
        total = sum(s for _, s in self.phases)
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            tty = sys.stderr.isatty()  # in logs (CI, nohup) redraw rarely
            bar = tqdm(
                total=total,
                initial=self.global_step,
                unit="step",
                dynamic_ncols=True,
                mininterval=0.2 if tty else 30.0,
            )
        rollbacks = 0
        try:
            while True:
                try:
                    if self._run_all_phases(bar) == "interrupted":
                        return "interrupted"
                    break
                except NonFiniteLossError as e:
                    self._roll_back(e, rollbacks)
                    rollbacks += 1
                    if bar is not None:
                        bar.n = self.global_step
                        bar.refresh()
            self.phase_index = len(self.phases)
        finally:
            if bar is not None:
                bar.close()
        return "done"

    def _run_all_phases(self, bar: Any) -> str:
        for pi, (phase, steps) in enumerate(self.phases):
            if pi < self.phase_index:
                continue
            if pi > self.phase_index:
                self.phase_index, self.phase_step = pi, 0
            if self.phase_step >= steps:
                continue
            if self._should_stop() or not self._run_phase(phase, steps, bar):
                self.save()
                if self.dist.is_main:
                    log.warning("interrupted at step %d; resume with --resume", self.global_step)
                return "interrupted"
            self.save(f"phase-{phase}")
            self.write_samples(f"{phase}-final")
        return "done"

    def _run_phase(self, phase: str, steps: int, bar: Any) -> bool:
        tc = self.cfg.train
        # Losses summed since the last logged row; a resumed run continues the sums its
        # checkpoint saved, so every row is the one an uninterrupted run logs.
        sums: dict[str, torch.Tensor] = {
            k: torch.tensor(v, dtype=torch.float32, device=self.device)
            for k, v in self._pending.items()
        }
        count = self._pending_count
        self._pending, self._pending_count = {}, 0
        self._live = (sums, count)
        t0 = time.perf_counter()
        autocast = step_autocast(self.device.type, self.precision)
        if self.phase_step == 0 and phase in tc.phase_init:
            self._init_phase_from(phase, tc.phase_init[phase])
        self.model.enter_phase(phase, fresh=self.phase_step == 0)
        self.model.train()
        while self.phase_step < steps:
            batch = self.batcher.batch(self.global_step)
            step = Step(
                self.global_step,
                phase,
                self.phase_step,
                tc.batch_size,
                self.dist.world,
                len(self.train_ds),
            )
            self._apply_schedule(step)
            with autocast:
                losses = self.model.train_step(batch, phase, step)
            if self.dist.enabled:
                # Batch-norm running statistics follow rank 0 (as DDP's broadcast_buffers).
                distributed.broadcast_tensors(list(self.model.buffers()))
                self._stop_agreed = distributed.any_rank(self._stop_requested, self.dist)
            self.model.update_ema(self.global_step if self.cfg.train.ema_warmup else None)
            self.global_step += 1
            self.phase_step += 1
            for k, v in losses.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float()
            count += 1
            self._live = (sums, count)  # saved with a checkpoint of this step
            if self.global_step in self._keep_steps:
                self.save(self._keep_name(self.global_step))
            if bar is not None:
                bar.update(1)
            end = self.phase_step == steps
            if (tc.log_every and self.global_step % tc.log_every == 0) or end:
                dt = time.perf_counter() - t0
                self.elapsed += dt
                names = list(sums)
                values = self._mean_losses(sums, count)
                # images/s counts every rank's images.
                images = count * tc.batch_size * self.dist.world
                row = {
                    "step": self.global_step,
                    "phase": phase,
                    "phase_step": self.phase_step,
                    "images_per_s": round(images / max(dt, 1e-9), 1),
                    "elapsed_s": round(self.elapsed, 2),
                }
                row.update({f"loss/{k}": round(v, 6) for k, v in zip(names, values, strict=True)})
                self._check_finite(dict(zip(names, values, strict=True)), phase)
                if self.dist.is_main:
                    self._write_metrics(row)
                if bar is not None:
                    short = {
                        k: f"{v:.3g}"
                        for k, v in zip(names, values, strict=True)
                        if k.endswith(("adv", "cond")) or "_" not in k
                    }
                    bar.set_description(f"{phase} {self.phase_step}/{steps}", refresh=False)
                    bar.set_postfix(short | {"img/s": row["images_per_s"]}, refresh=False)
                sums, count, t0 = {}, 0, time.perf_counter()
                self._live = (sums, count)
            if tc.sample_every and self.global_step % tc.sample_every == 0 and not end:
                self.write_samples(f"step-{self.global_step:07d}")
            if tc.checkpoint_every and self.global_step % tc.checkpoint_every == 0 and not end:
                if sums:  # never write a checkpoint after a non-finite loss
                    values = self._mean_losses(sums, count)
                    self._check_finite(dict(zip(sums, values, strict=True)), phase)
                self.save()
            if self.cfg.eval.every and self.global_step % self.cfg.eval.every == 0:
                self.evaluate_during()
            if self._should_stop() and not end:
                return False
        return True

    def evaluate_during(self) -> dict[str, float]:
        """The cheap metric set (``eval.during_metrics`` on ``eval.during_n`` samples of the
        sampling generator, fixed seed) logged as ``eval/<name>``; keeps the best checkpoint.

        Every rank computes it (the same weights give the same figures, and the checkpoint
        write is collective); the random streams of training are left untouched."""
        from ganstack.metrics.evaluate import caption_targets, evaluate
        from ganstack.viz import to_uint8

        ec = self.cfg.eval
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.model.recalibrate_ema_bn()
            conditions, targets = None, dict[str, torch.Tensor]()
            if "text" in self.model.condition_dims():
                conditions, targets = caption_targets(self.eval_ds or self.train_ds, ec.during_n, 0)
            out = self.model.sample(
                ec.during_n, generator=torch.Generator().manual_seed(0), conditions=conditions
            )
            res = evaluate(
                to_uint8(out["image"]),
                out.get("y"),
                self.train_ds,
                self.eval_ds,
                list(ec.during_metrics),
                targets=targets,
                device=self.device,
                calibrate=False,
            )["metrics"]
        self.model.train()
        values = {k: v for k, v in res.items() if not k.endswith(("_std", "_shuffled"))}
        if self.dist.is_main:
            row: dict[str, Any] = {
                "step": self.global_step,
                "eval_s": round(time.perf_counter() - t0, 1),
            }
            row.update({f"eval/{k}": round(v, 6) for k, v in values.items()})
            self._write_metrics(row)
            log.info(
                "step %d: %s",
                self.global_step,
                ", ".join(f"{k} {v:.4g}" for k, v in values.items()),
            )
        if ec.best:
            key = next((k for k in values if k.startswith(ec.best)), None)
            if key is None:
                raise GanstackError(
                    f"eval.best = {ec.best!r} is not among the metrics during "
                    f"training ({', '.join(values) or 'none'}); choose one of "
                    f"them or set eval.best to null"
                )
            lower = ec.best.startswith(("fid", "kid"))
            value = values[key]
            old = self.best["value"] if self.best and self.best.get("metric") == key else None
            if old is None or (value < old if lower else value > old):
                self.best = {"metric": key, "value": value, "step": self.global_step}
                self.save(f"best-{ec.best}")
        return values

    @property
    def _keep_steps(self) -> set[int]:
        tc = self.cfg.train
        return {step for phase, step in tc.phase_init.items() if tc.phases.get(phase, 0) > 0}

    @staticmethod
    def _keep_name(step: int) -> str:
        return f"keep-step-{step:07d}"

    def _init_phase_from(self, phase: str, step: int) -> None:
        """Load the model's weights (not the optimizer or RNG states) kept at ``step``."""
        path = self.ckpt_dir / f"{self._keep_name(step)}.json"
        if not self.dist.is_main:  # rank 0 (which wrote it) reads it and sends the weights
            distributed.broadcast_tensors(self._state_tensors())
            return
        if not path.exists():
            raise CheckpointError(
                f"train.phase_init.{phase}={step}: {path} is missing; it is written at step "
                f"{step} of this run, so the run must have passed that step with this setting "
                f"(or remove the setting to start '{phase}' from the last step)"
            )
        record, tensors = ckpt.read_checkpoint(path)
        ckpt.restore(record, tensors, self.model, rng=False)
        if self.dist.enabled:
            distributed.broadcast_tensors(self._state_tensors())
        log.info("phase %s starts from the weights of step %d (%s)", phase, step, path.name)

    def _mean_losses(self, sums: dict[str, torch.Tensor], count: int) -> list[float]:
        """Mean of each loss over the steps summed (and over the ranks: logs show the whole
        batch, and a non-finite loss on any rank stops every rank)."""
        means = torch.stack(list(sums.values())).div(count)
        if self.dist.enabled:
            means = distributed.mean_over_ranks(means)
        return means.tolist()

    def _check_finite(self, values: dict[str, float], phase: str) -> None:
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"loss {', '.join(bad)} became NaN/Inf by step {self.global_step} (phase "
                f"{phase}); stopped without writing a checkpoint. Lower the learning rate, "
                f"resume from the last good checkpoint with --resume, or set "
                f"train.nan_policy=rollback to do both automatically."
            )

    def _apply_schedule(self, step: Step) -> None:
        """Set every optimizer's learning rate and momentum for ``step``: the model's schedule
        (:meth:`StackModel.lr`, :meth:`StackModel.momentum`), or the rates it was built with;
        learning rates times the NaN-rollback scale."""
        for name, opt in self.model.optimizers.items():
            for key in SCHEDULED:
                value = getattr(self.model, key)(name, step)
                for group, base in zip(opt.param_groups, self._base_hyper[name], strict=True):
                    if key in base:
                        group[key] = base[key] if value is None else value
                        if key == "lr" and self.lr_scale != 1.0:
                            group[key] = group[key] * self.lr_scale

    def _roll_back(self, error: NonFiniteLossError, rollbacks: int) -> None:
        """train.nan_policy=rollback: the newest checkpoint again, every learning rate scaled
        by nan_lr_factor; re-raises ``error`` when that is not possible or allowed."""
        tc = self.cfg.train
        if tc.nan_policy != "rollback":
            raise error
        if rollbacks >= tc.nan_retries:
            raise NonFiniteLossError(
                f"{error} (after {rollbacks} rollback(s) with the learning "
                f"rate x{self.lr_scale:g}: train.nan_retries="
                f"{tc.nan_retries})"
            ) from error
        if not ckpt.list_checkpoints(self.ckpt_dir):
            raise NonFiniteLossError(
                f"{error} (train.nan_policy=rollback: no checkpoint "
                f"written yet to roll back to; lower "
                f"train.checkpoint_every)"
            ) from error
        scale = self.lr_scale * tc.nan_lr_factor
        self._restore_latest()
        self.lr_scale = scale
        if self.dist.is_main:
            log.warning(
                "%s -> rolled back to step %d with the learning rates x%g (rollback %d "
                "of at most %d)",
                str(error).split(";")[0],
                self.global_step,
                scale,
                rollbacks + 1,
                tc.nan_retries,
            )

    # ---- after training ----------------------------------------------------------------------

    def write_figures(self) -> list[Path]:
        """The model's figures and the training curves, into ``figures/``.

        Under distributed training every rank computes the figures and rank 0 writes them
        (the other ranks return an empty list).
        """
        out: list[Path] = []
        gen = torch.Generator().manual_seed(self.cfg.train.seed + 777)
        figures = self.model.figures(gen)
        if not self.dist.is_main:
            return out
        for name, grid in figures.items():
            path = self.run_dir / "figures" / f"{name}.png"
            save_grid(grid, path)
            out.append(path)
        curves = self.run_dir / "figures" / "curves.png"
        if plot_curves(self.run_dir / "metrics.jsonl", curves):
            out.append(curves)
        return out


PROBE_SIZES = (8, 14, 16, 28, 32, 56, 64, 128, 256)  # data.resolution values tried by shape_fix


def shape_fix(cfg: ExperimentConfig, info: DataInfo) -> list[str] | None:
    """The data overrides (``data.channels=1``, ``data.resolution=28``, ...) that make images
    of the shape the model takes, found by building the model (on the meta device: no
    memory) for other data shapes; None when no setting of the dataset's shape keys does."""
    import warnings

    from ganstack.data import SHAPE_KEYS
    from ganstack.models import MODELS

    keys = SHAPE_KEYS.get(cfg.data.name, ())
    c, h, w = info.shape
    channels = [{1: 3, 3: 1}[c]] if "channels" in keys and c in (1, 3) else []
    sizes = sorted(
        (s for s in PROBE_SIZES if "resolution" in keys and (s, s) != (h, w)),
        key=lambda s: (abs(np.log(s / max(h, w))), s),
    )
    candidates = (
        [{"channels": k} for k in channels]
        + [{"resolution": s} for s in sizes]
        + [{"channels": k, "resolution": s} for k in channels for s in sizes]
    )
    try:
        cls = MODELS.get(cfg.model.name)
    except GanstackError:
        return None
    # The shape alone is judged: were the data also unlabelled, uncaptioned or of another
    # number of classes (another error, reported once the shape is right), a shape the model
    # takes with (ten) labels and captions is the fix for this one.
    text_dim = info.text_dim or cfg.data.text_dim
    infos = list(
        dict.fromkeys(
            [(info.num_classes, info.text_dim), (info.num_classes or 10, text_dim), (10, text_dim)]
        )
    )

    def builds(shape: tuple[int, int, int]) -> bool:
        for classes, text_dim in infos:
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cls(cfg.model, DataInfo(shape, classes, info.name, text_dim))
                return True
            except Exception:  # any failure: not with this shape
                continue
        return False

    if builds((c, h, w)):  # the shape is not what is wrong
        return None
    for change in candidates:
        size = change.get("resolution")
        if builds((change.get("channels", c), size or h, size or w)):
            return [f"data.{k}={v}" for k, v in change.items()]
    return None


def build_for_data(cfg: ExperimentConfig, info: DataInfo) -> StackModel:
    """:func:`build_model`; when the model cannot take the data and another setting of the
    data's shape keys would give data it takes, the error says which."""
    try:
        return build_model(cfg.model, info)
    except ConfigError as e:
        fix = shape_fix(cfg, info)
        if not fix:
            raise
        raise ConfigError(
            f"{str(e).rstrip('.')}. Set {' '.join(fix)} to load the "
            f"{cfg.data.name} data in a shape this model takes"
        ) from None


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The resolved config saved in a run directory, with optional overrides applied."""
    from ganstack.config import _read_yaml, apply_overrides

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise GanstackError(f"{run_dir} is not a ganstack run directory (no config.yaml)")
    return from_dict(apply_overrides(_read_yaml(path), list(overrides or [])))
