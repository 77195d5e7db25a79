"""The contract between a stacked model and the generic trainer.

A :class:`StackModel` owns its networks, its optimizers and its training step; the trainer owns
the loop, devices, logging and checkpoints and never branches on the model's name.

Sampling is split in two: :meth:`StackModel.draw_inputs` draws every level's input (the label
``y`` and one noise vector per level, named ``z0``, ``z1``, ...), and :meth:`generate` runs the
levels top to bottom on given inputs. Any input can be held fixed across a batch while the
others vary, which is how the papers' "fix y and z1, vary z0" figures are made.

Time belongs to the loop (issue 21 item 2). The trainer counts the steps and hands each
:meth:`StackModel.train_step` a :class:`Step` (global step, step within the phase, images seen
across every process); a model keeps no step counter of its own. A model with a schedule
declares it as pure functions of (optimizer name, step): :meth:`StackModel.lr` (and, for SGD,
:meth:`StackModel.momentum`), which the trainer applies to every parameter group of that
optimizer before each ``train_step``. A model never writes ``param_groups`` itself. State
that depends on what happened (optimizer moments, Adam's own step counts) stays optimizer state;
a counter a model used to keep is listed in ``retired_state``, and a renamed optimizer in
:meth:`StackModel.retired_optimizer_names`, so older checkpoints still load.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.nn import batch_norms, bn_state

LogFn = Callable[[str], None]
Tensors = dict[str, torch.Tensor]  # a batch, or the losses a step returns


@dataclass(frozen=True)
class Step:
    """Where the loop is when it calls :meth:`StackModel.train_step`: the clock a model reads
    instead of counting steps itself (counts of *steps done before this one*)."""

    global_step: int = 0  # steps done in all phases before this one
    phase: str = ""
    phase_step: int = 0  # steps of ``phase`` done before this one
    batch_size: int = 0  # images in each process's batch
    world_size: int = 1  # processes taking part (each with its own part of a global batch)
    dataset_size: int = 0  # training images

    @property
    def images(self) -> int:
        """Real images seen before this step, by every process together."""
        return self.global_step * self.batch_size * self.world_size

    @property
    def epoch(self) -> int:
        """Whole passes over the training set before this step, counted in images (0 when
        the dataset size is unknown)."""
        return self.images // self.dataset_size if self.dataset_size > 0 else 0


@dataclass
class DataInfo:
    """What a model needs to know about its data to build itself."""

    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # 0 when unlabelled
    name: str = ""
    text_dim: int = 0  # size of the caption embeddings (0: no captions)

    @classmethod
    def of(cls, ds: ImageDataset) -> DataInfo:
        emb = ds.extras.get("embeddings")
        text_dim = int(emb.shape[-1]) if emb is not None else 0
        return cls(ds.shape, ds.num_classes if ds.conditional else 0, ds.name, text_dim)


class StackModel(nn.Module):
    """Base class of every model: a stack of levels trained in named phases."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: Names of the modules an EMA copy is kept of when ``train.ema > 0``.
    generator_names: ClassVar[tuple[str, ...]] = ()
    #: Distribution of the noise inputs: "uniform" (U[0,1)) or "normal".
    noise_distribution: ClassVar[str] = "normal"
    #: Tensors that checkpoints of older versions hold and this model no longer keeps (step
    #: counters the :class:`Step` replaced): dropped when such a checkpoint is loaded.
    retired_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.ema: nn.ModuleDict | None = None
        self._sampling = 0  # open sampling blocks: net() gives the EMA copies while > 0
        self.ema_decay = 0.0
        #: Real images a figure may show beside samples (set by the trainer; None elsewhere).
        self.reference: ImageDataset | None = None

    # ---- phases ---------------------------------------------------------------------------

    @classmethod
    def default_phases(cls, cfg: Any) -> dict[str, int]:
        """Phase names in the order they run, with their default number of steps."""
        raise NotImplementedError

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        """One-off work before the first phase of a fresh run (e.g. pretraining an encoder).

        Returns figures worth recording (they go to ``setup.json`` in the run directory).
        """
        return {}

    def enter_phase(self, phase: str, fresh: bool) -> None:
        """Called when ``phase`` starts (``fresh``) or is resumed mid-way (not ``fresh``)."""

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        """One optimisation step on ``batch``; returns detached scalar losses.

        ``step`` says where the loop is (``step.phase == phase``); whatever depends on time
        (a warm-up, a cadence) is a function of it: the model keeps no step counter, so its
        state is the same whoever counts and however many processes train.
        """
        raise NotImplementedError

    # ---- schedules: pure functions of (optimizer name, step), applied by the trainer -------

    def lr(self, name: str, step: Step) -> float | None:
        """The learning rate of every parameter group of optimizer ``name`` for the step
        ``step``, or None: the rate the optimizer was built with. The trainer sets it before
        each :meth:`train_step` (times its NaN-rollback scale)."""
        return None

    def momentum(self, name: str, step: Step) -> float | None:
        """As :meth:`lr`, for the ``momentum`` of an SGD optimizer's groups."""
        return None

    # ---- sampling -------------------------------------------------------------------------

    @property
    def conditional(self) -> bool:
        return self.info.num_classes > 0

    def noise_dims(self) -> dict[str, int]:
        """The noise inputs, named by level (``z0`` is the bottom level's)."""
        raise NotImplementedError

    def condition_dims(self) -> dict[str, int]:
        """Conditions other than the class, e.g. ``text`` (a caption embedding): inputs that
        are not noise. :meth:`draw_condition` draws them when they are not given."""
        return {}

    def draw_condition(self, name: str, n: int, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def input_names(self) -> list[str]:
        return (
            (["y"] if self.conditional else [])
            + list(self.condition_dims())
            + list(self.noise_dims())
        )

    def _noise(self, n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
        dev = self.device
        if self.noise_distribution == "uniform":
            return torch.rand(n, dim, generator=generator, device="cpu").to(dev)
        return torch.randn(n, dim, generator=generator, device="cpu").to(dev)

    def draw_inputs(
        self,
        n: int,
        labels: torch.Tensor | Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        generator: torch.Generator | None = None,
        conditions: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw every level's input for ``n`` samples.

        ``labels``: the class of each sample (cycled when shorter than ``n``); by default
        class-balanced (sample ``i`` has class ``i mod K``). ``conditions``: given values of
        the :meth:`condition_dims` inputs (e.g. ``text``: caption embeddings), cycled when
        shorter than ``n``; the others are drawn. Inputs named in ``fixed`` are drawn once and
        shared by all samples.
        """
        fixed = set(fixed)
        unknown = fixed - set(self.input_names())
        if unknown:
            raise GanstackError(
                f"cannot fix {sorted(unknown)}: this model's inputs are {self.input_names()}"
            )
        out: dict[str, torch.Tensor] = {}
        if self.conditional:
            k = self.info.num_classes
            if labels is None:
                if "y" in fixed:
                    y = torch.randint(k, (1,), generator=generator).repeat(n)
                else:
                    y = torch.arange(n) % k
            else:
                y = torch.as_tensor(list(labels) if not torch.is_tensor(labels) else labels)
                y = y.long().flatten()
                if len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= k:
                    raise GanstackError(f"labels must lie in [0, {k - 1}], got {y.tolist()}")
                y = y.repeat((n + len(y) - 1) // len(y))[:n]
            out["y"] = y.to(self.device)
        elif labels is not None:
            raise GanstackError("this model is unconditional: it takes no labels")
        conditions = dict(conditions or {})
        unknown = set(conditions) - set(self.condition_dims())
        if unknown:
            raise GanstackError(
                f"this model takes no {sorted(unknown)} condition; its "
                f"conditions are {sorted(self.condition_dims()) or 'none'}"
            )
        for name, dim in self.condition_dims().items():
            if name in conditions:
                c = torch.as_tensor(conditions[name]).float()
                if c.dim() != 2 or c.shape[1] != dim or len(c) == 0:
                    raise GanstackError(
                        f"condition '{name}' must have shape (N, {dim}), got {tuple(c.shape)}"
                    )
                c = c[:1] if name in fixed else c
                c = c.repeat((n + len(c) - 1) // len(c), 1)[:n]
            else:
                c = self.draw_condition(name, 1 if name in fixed else n, generator)
            out[name] = c.expand(n, dim).contiguous().to(self.device)
        for name, dim in self.noise_dims().items():
            z = self._noise(1 if name in fixed else n, dim, generator)
            out[name] = z.expand(n, dim).contiguous() if name in fixed else z
        return out

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the levels top to bottom. Returns at least ``image`` in [0, 1], (N, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: torch.Tensor | Iterable[int] | None = None,
        fixed: Iterable[str] = (),
        generator: torch.Generator | None = None,
        batch_size: int = 500,
        conditions: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw inputs and generate, in batches; returns CPU tensors (``image``, ``y``, ...)."""
        inputs = self.draw_inputs(n, labels, fixed, generator, conditions)
        parts: list[dict[str, torch.Tensor]] = []
        with self.sampling_mode():
            for s in range(0, n, batch_size):
                chunk = {k: v[s : s + batch_size] for k, v in inputs.items()}
                out = self.generate(chunk)
                out.update(chunk)
                parts.append({k: v.detach().float().cpu() for k, v in out.items()})
        res = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if "y" in res:
            res["y"] = res["y"].long()
        return res

    @contextlib.contextmanager
    def sampling_mode(self) -> Iterator[StackModel]:
        """The generators as sampling runs them: EMA copies selected, eval mode, or batch
        statistics with ``cfg.sample_bn: batch`` (as during training; the running averages and
        batch counters are left untouched, so sampling never changes the state a checkpoint
        holds, and a resumed run stays equal to an unbroken one)."""
        was_training = self.training
        self.eval()
        with self._using_ema():
            batch = getattr(self.cfg, "sample_bn", "eval") == "batch"  # not every model has it
            nets = [self.net(n) for n in self.generator_names] if batch else []
            with bn_state(nets, momentum=0.0):
                try:
                    yield self
                finally:
                    self.train(was_training)

    def retired_optimizer_names(self) -> dict[str, str]:
        """Names an older version gave this model's optimizers: current name -> former name.
        A checkpoint with no state under an optimizer's name is read under its former one
        (a rename to the level vocabulary of ``docs/architecture.md``)."""
        return {}

    def image_outputs(self) -> list[str]:
        """The image outputs of :meth:`generate`, coarsest first, ``image`` (the finest) last.
        Multi-scale models list every scale; their figures and grids show them side by side."""
        return ["image"]

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Named image grids (each (rows, cols, C, H, W) in [0, 1]) shown after training."""
        rows = self.info.num_classes if self.conditional else 8
        return {"samples": self.grid(rows, 10, vary=self.noise_dims(), generator=generator)}

    @torch.no_grad()
    def grid(
        self,
        rows: int,
        cols: int,
        vary: Iterable[str],
        generator: torch.Generator | None = None,
        key: str = "image",
    ) -> torch.Tensor:
        """A (rows, cols, C, H, W) grid: each row holds every input fixed except ``vary``.

        For a conditional model, row ``r`` has class ``r mod K`` unless ``y`` is varied.
        """
        vary = set(vary)
        names = self.input_names()
        per_row: list[dict[str, torch.Tensor]] = []
        for r in range(rows):
            base = self.draw_inputs(
                1, [r % self.info.num_classes] if self.conditional else None, generator=generator
            )
            varied = self.draw_inputs(cols, None, generator=generator)
            per_row.append(
                {k: (varied[k] if k in vary else base[k].expand_as(varied[k])) for k in names}
            )
        inputs = {k: torch.cat([row[k] for row in per_row]) for k in names}
        with self.sampling_mode():
            img = self.generate(inputs)[key].float().cpu()
        return img.reshape(rows, cols, *img.shape[1:])

    # ---- EMA of the generators --------------------------------------------------------------

    def enable_ema(self, decay: float) -> None:
        if not self.generator_names:
            raise GanstackError(f"model '{self.name}' declares no generators to keep an EMA of")
        self.ema_decay = decay
        self.ema = nn.ModuleDict(
            {n: copy.deepcopy(getattr(self, n)).requires_grad_(False) for n in self.generator_names}
        )

    @torch.no_grad()
    def update_ema(self, step: int | None = None) -> None:
        """Move the EMA copies towards the live generators. ``step`` (the number of steps
        done before this one) warms the decay up, ``min(decay, (1 + step) / (10 + step))``;
        None keeps the constant decay."""
        if self.ema is None:
            return
        decay = self.ema_decay if step is None else min(self.ema_decay, (1 + step) / (10 + step))
        for name in self.generator_names:
            live, avg = getattr(self, name), self.ema[name]
            torch._foreach_lerp_(list(avg.parameters()), list(live.parameters()), 1.0 - decay)
            for b_avg, b_live in zip(avg.buffers(), live.buffers(), strict=True):
                b_avg.copy_(b_live)

    @torch.no_grad()
    def recalibrate_ema_bn(self, batches: int = 20, batch_size: int = 250, seed: int = 0) -> None:
        """Give the EMA generators batch-norm statistics of their own.

        Averaged weights do not match the live generators' running statistics, so sampling in
        eval mode would be off. This recomputes them (a cumulative average) by running the EMA
        generators on freshly drawn inputs. It uses its own random generator: training is
        unaffected, and each EMA update copies the live statistics back anyway.
        """
        if self.ema is None or not batch_norms(self.ema):
            return
        was_training = self.training
        self.eval()
        dev = self.device
        # momentum None: a cumulative average over the batches below; the counters count them.
        with bn_state([self.ema], momentum=None, keep_counts=False) as bns, self._using_ema():
            for m in bns:
                m.reset_running_stats()
            # The global RNG is left as it was (a generator may draw from it), so that a run
            # that writes a checkpoint trains on exactly as one that does not.
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                gen = torch.Generator().manual_seed(seed)
                for _ in range(batches):
                    self.generate(self.draw_inputs(batch_size, generator=gen))
        self.train(was_training)

    @contextlib.contextmanager
    def _using_ema(self) -> Iterator[None]:
        """:meth:`net` gives the EMA copies inside the block (nested blocks count)."""
        self._sampling += 1
        try:
            yield
        finally:
            self._sampling -= 1

    def net(self, name: str) -> Any:
        """The module used for sampling: the EMA copy while sampling when EMA is on."""
        if self.ema is not None and self._sampling and name in self.ema:
            return self.ema[name]
        return getattr(self, name)

    # ---- helpers --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def optimize(self, loss: torch.Tensor, names: Iterable[str]) -> None:
        """Zero the named optimizers' gradients, back-propagate ``loss``, step them."""
        opts = [self.optimizers[n] for n in names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
