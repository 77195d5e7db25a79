"""The standard DCGAN recipe, for an equal-wall-time baseline beside a ganstack demo.

    python benchmarks/baseline.py sgan-mnist --minutes 5                 # seed 0
    python benchmarks/baseline.py stackgan-v2-shapes --minutes 10 --seed 1 --threads 2 --bundle
    python benchmarks/baseline.py lapgan-mnist --equal-time --bundle     # steps from demo_time

Trains the DCGAN of pytorch/examples (dcgan/main.py) on a demo config's data for exactly
``--minutes`` of wall time, then scores it with ganstack's evaluation protocol exactly as
``ganstack eval`` scores the demo (``Run.evaluate``): the config's ``eval.metrics`` on
``eval.n`` samples, class-balanced labels (sample i has class i mod K) for a class-conditional
demo, the held-out images' captions (``caption_targets``) for a text-conditional one, with
the calibration rows when ``eval.calibrate`` is on.

The recipe, as pytorch/examples: ngf = ndf = 64, nz = 100, 4x4 stride-2 transposed
convolutions in G and convolutions in D (no biases), batch norm everywhere except D's first
layer and G's output, ReLU in G, LeakyReLU 0.2 in D, tanh output, conv weights N(0, 0.02) and
BN weights N(1, 0.02) (BN biases 0), Adam lr 2e-4 betas (0.5, 0.999) for both nets, batch 64,
z ~ N(0, 1), one D step (a real batch labelled 1, a fake batch labelled 0) then one G step
(BCE of D(G(z)) against the real label: the non-saturating loss) per training step.

Where this departs from the 64x64 original:

- Sizes: an image of size s0 * 2^k (s0 the smallest such size >= 4: 28 = 7 * 2^2,
  32 = 4 * 2^3, 64 = 4 * 2^4, 16 = 4 * 2^2) gets G = ConvTranspose(kernel s0, stride 1) from
  1x1 to s0 x s0 with ngf * 2^(k-1) maps, then k stride-2 ConvTranspose(4, 2, 1) layers, the
  last of them the output layer (so for 64x64 it is exactly the original: 512, 256, 128, 64
  maps); D mirrors it (k stride-2 convs with ndf ... ndf * 2^(k-1) maps, then a conv of
  kernel s0 to one logit). For 28x28 the first G layer and D's last conv have kernel 7, not 4,
  and there are 2 stride-2 layers instead of 4 (128 and 64 maps). Above 64 pixels (k > 4) the
  widths stop doubling at 8 * ngf (8 * ndf): the original has no rule for those sizes.
- Conditioning (the original is unconditional), like the demo: G's input is [z, one-hot y]
  (class-conditional demos) or [z, caption vector] (text-conditional ones); D's input gets
  a condition map concatenated to its image channels: the K one-hot planes, or a learned
  linear projection of the caption vector to 4 planes, broadcast to the image size.
  A fake batch is conditioned on the real batch's labels / captions (one caption per image,
  drawn at random each step). No matching-aware (wrong-image) loss and no conditioning
  augmentation: the plain conditional GAN.
- D ends in a logit and the losses use BCE-with-logits (the original's Sigmoid + BCELoss, in
  one numerically stable op).
- No data augmentation (the StackGAN demos resize/crop/flip their real batches; the baseline
  trains on the images as loaded), no EMA of G (some demos sample an EMA copy).
- Sampling for evaluation uses G in eval mode (BN running statistics), as the demos do by
  default (``--sample-bn batch``: batch statistics, as the original's train-mode samples).

Seeds: ``--seed`` sets the initialisation, the batch order (ganstack's Batcher) and the noise
and caption draws of training; the samples scored and shown come from a separate generator
with the fixed seed 0 (the default seed of ``ganstack eval``), so two seeds are compared on the
same noise, labels and captions. The clock runs over the training steps only: loading the
data before and the evaluation (which trains or loads ganstack's domain classifiers) after are
not counted. It is checked after every step, so training ends within one step of the budget.

Writes ``benchmarks/results/baseline-CONFIG-seedS.json`` (``--out`` names another path) with
a Markdown summary (``.md``) and a sample grid (``.png``) beside it: 10 rows of one class
each for class-conditional data, else 8 x 8. ``--bundle`` also writes the JSON to
``src/ganstack/configs/baselines/CONFIG.json``, the file a config's ``eval.baseline: CONFIG``
shows beside the demo's own figures. Run it on an otherwise idle machine: a busy core makes
fewer steps in the same minutes. ``--equal-time`` instead trains the number of steps that
fills the demo's minutes at this recipe's step time, both timed side by side (ideally on idle
cores) by ``benchmarks/demo_time.py``: the long training can then share the machine, since
only the step count carries over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganstack.environment import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
BUNDLE_DIR = ROOT / "src" / "ganstack" / "configs" / "baselines"

NZ = 100
NGF = NDF = 64
BATCH = 64
LR = 2e-4
BETAS = (0.5, 0.999)
TEXT_PLANES = 4  # planes of D's caption map
MAX_MULT = 8  # widths stop doubling at 8 * ngf / 8 * ndf (sizes above 64)
EVAL_SEED = 0  # the samples that are scored and shown: the same for every --seed
RECIPE = (
    "DCGAN, pytorch/examples dcgan/main.py: ngf=ndf=64, nz=100, BN, ReLU/LeakyReLU(0.2), "
    "tanh, N(0,0.02) init, Adam 2e-4 (0.5, 0.999), batch 64, non-saturating BCE"
)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def size_plan(size: int) -> tuple[int, int]:
    """(s0, k) with size = s0 * 2^k, s0 the smallest start size >= 4 and k >= 1."""
    s0, k = size, 0
    while s0 % 2 == 0 and s0 // 2 >= 4:
        s0, k = s0 // 2, k + 1
    if k == 0:
        raise ValueError(f"image size {size} is not s0 * 2^k with s0 >= 4 and k >= 1")
    return s0, k


def widths(base: int, k: int) -> list[int]:
    """Maps after each of the k stride-2 layers of D (G uses them in reverse)."""
    return [base * min(2**i, MAX_MULT) for i in range(k)]


class Generator(nn.Module):
    """[z, condition] as a 1x1 map -> s0 x s0 -> k stride-2 up-convolutions -> tanh."""

    def __init__(
        self, channels: int, size: int, cond_dim: int = 0, nz: int = NZ, ngf: int = NGF
    ) -> None:
        super().__init__()
        s0, k = size_plan(size)
        self.nz, self.cond_dim = nz, cond_dim
        maps = widths(ngf, k)[::-1]  # ngf * 2^(k-1) ... ngf
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz + cond_dim, maps[0], s0, 1, 0, bias=False),
            nn.BatchNorm2d(maps[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(maps, maps[1:]):
            layers += [
                nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(maps[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = z if cond is None else torch.cat([z, cond], 1)
        return self.main(x[:, :, None, None])


class Discriminator(nn.Module):
    """[image, condition map] -> k stride-2 convolutions -> conv of kernel s0 -> one logit.

    ``cond_dim``: the number of one-hot planes (``text=False``) or the caption vector's size,
    projected to ``TEXT_PLANES`` planes by a learned linear layer (``text=True``)."""

    def __init__(
        self, channels: int, size: int, cond_dim: int = 0, text: bool = False, ndf: int = NDF
    ) -> None:
        super().__init__()
        s0, k = size_plan(size)
        self.size = size
        self.project = nn.Linear(cond_dim, TEXT_PLANES) if text and cond_dim else None
        planes = TEXT_PLANES if self.project is not None else cond_dim
        maps = widths(ndf, k)
        layers: list[nn.Module] = [
            nn.Conv2d(channels + planes, maps[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        for a, b in zip(maps, maps[1:]):
            layers += [
                nn.Conv2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [nn.Conv2d(maps[-1], 1, s0, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            c = self.project(cond) if self.project is not None else cond
            x = torch.cat([x, c[:, :, None, None].expand(-1, -1, self.size, self.size)], 1)
        return self.main(x).flatten()


def init_weights(module: nn.Module) -> None:
    """pytorch/examples' weights_init: convolutions N(0, 0.02); BN weights N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_networks(
    shape: tuple[int, int, int], conditioning: str, cond_dim: int
) -> tuple[Generator, Discriminator]:
    """G and D for images of ``shape`` (C, H, W); ``conditioning``: none, class or text."""
    c, h, w = shape
    if h != w:
        raise ValueError(f"square images only, got {h}x{w}")
    dim = cond_dim if conditioning != "none" else 0
    g = Generator(c, h, dim)
    d = Discriminator(c, h, dim, text=conditioning == "text")
    init_weights(g)
    init_weights(d)
    return g, d


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# What the demo is conditioned on
# ---------------------------------------------------------------------------------------------


def demo_conditioning(cfg, train) -> tuple[str, int, tuple[str, ...]]:  # type: ignore[no-untyped-def]
    """How the demo model of ``cfg`` is conditioned: ("class", K), ("text", D) or ("none", 0),
    and the names of the measures only that model computes (not applicable here)."""
    from ganstack.metrics.measures import MODEL_MEASURES
    from ganstack.models import DataInfo, build_model

    demo = build_model(cfg.model, DataInfo.of(train))
    measures = tuple(MODEL_MEASURES)  # they need a ganstack model's networks
    if "text" in demo.condition_dims():
        return "text", int(demo.condition_dims()["text"]), measures
    if demo.conditional:
        return "class", int(demo.info.num_classes), measures
    return "none", 0, measures


class Conditioner:
    """The condition vectors of a batch: one-hot labels, or one caption of each image."""

    def __init__(self, kind: str, dim: int) -> None:
        self.kind, self.dim = kind, dim

    def of_batch(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor | None:
        if self.kind == "class":
            return F.one_hot(batch["labels"].long(), self.dim).float()
        if self.kind == "text":
            emb = batch["embeddings"].float()  # (B, captions, D)
            pick = torch.randint(emb.shape[1], (len(emb),), generator=gen)
            return emb[torch.arange(len(emb)), pick.to(emb.device)]
        return None


# ---------------------------------------------------------------------------------------------
# Training and sampling
# ---------------------------------------------------------------------------------------------


def step_function(
    g: Generator,
    d: Discriminator,
    cond: Conditioner,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
):  # type: ignore[no-untyped-def]
    """One training step of the recipe as a function of a batch: returns (D loss, G loss).
    ``precision``: fp32, or bf16 autocast as ganstack's ``train.precision``; the Adam steps
    are fused (one kernel per tensor), as ganstack's default."""
    from ganstack.train.precision import step_autocast

    fused = device.type in ("cpu", "cuda")
    opt_g = torch.optim.Adam(g.parameters(), lr=LR, betas=BETAS, fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=LR, betas=BETAS, fused=fused)
    autocast = step_autocast(device.type, precision)
    gen = torch.Generator().manual_seed(seed * 7919 + 1)  # noise and caption draws
    bce = nn.BCEWithLogitsLoss()
    g.train()
    d.train()

    def step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast:
            return _step(batch)

    def _step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        real = batch["images"].to(device).float() / 127.5 - 1.0
        c = cond.of_batch(batch, gen)
        c = None if c is None else c.to(device)
        b = len(real)
        ones = torch.ones(b, device=device)
        zeros = torch.zeros(b, device=device)
        z = torch.randn(b, NZ, generator=gen).to(device)
        fake = g(z, c)
        # D: real batch labelled 1, fake batch labelled 0.
        opt_d.zero_grad(set_to_none=True)
        loss_d = bce(d(real, c), ones) + bce(d(fake.detach(), c), zeros)
        loss_d.backward()
        opt_d.step()
        # G: the non-saturating loss, D(G(z)) against the real label.
        opt_g.zero_grad(set_to_none=True)
        loss_g = bce(d(fake, c), ones)
        loss_g.backward()
        opt_g.step()
        return loss_d, loss_g

    return step


def train_for(
    g: Generator,
    d: Discriminator,
    batcher,
    cond: Conditioner,  # type: ignore[no-untyped-def]
    seconds: float,
    seed: int,
    device: torch.device,
    progress: bool = True,
    max_steps: int | None = None,
    precision: str = "fp32",
) -> dict:
    """Train until ``seconds`` of wall time have passed (checked after every step), or for
    exactly ``max_steps`` steps when that is given."""
    from tqdm import tqdm

    step_fn = step_function(g, d, cond, seed, device, precision)
    by_steps = max_steps is not None
    bar = tqdm(
        total=max_steps if by_steps else round(seconds, 1),
        unit="step" if by_steps else "s",
        disable=not progress,
        leave=False,
        bar_format=None if by_steps else "{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
    )
    step, shown, t0 = 0, 0.0, time.perf_counter()
    while True:
        loss_d, loss_g = step_fn(batcher.batch(step))
        step += 1
        elapsed = time.perf_counter() - t0
        done = step >= max_steps if by_steps else elapsed >= seconds
        if progress and (elapsed - shown >= 0.5 or done):
            bar.set_postfix_str(
                f"step {step}, D {loss_d.item():.3f}, G {loss_g.item():.3f}", refresh=False
            )
            bar.update(step - bar.n if by_steps else min(elapsed, seconds) - shown)
            shown = elapsed if by_steps else min(elapsed, seconds)
        if done:
            break
    bar.close()
    return {
        "steps": step,
        "seconds": elapsed,
        "last_losses": {"d": loss_d.item(), "g": loss_g.item()},
    }


@torch.no_grad()
def generate(
    g: Generator,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    sample_bn: str,
    device: torch.device,
    batch_size: int = 500,
) -> torch.Tensor:
    """Images in [0, 1] (N, C, H, W) on the CPU, in batches. ``sample_bn``: eval (running
    statistics) or batch (each batch's own statistics; running ones left untouched)."""
    saved = []
    g.eval()
    if sample_bn == "batch":
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                saved.append((m, m.momentum))
                m.momentum = 0.0
                m.train()
    try:
        out = []
        for s in range(0, len(z), batch_size):
            c = None if cond is None else cond[s : s + batch_size].to(device)
            x = g(z[s : s + batch_size].to(device), c)
            out.append(((x.float() + 1.0) / 2.0).cpu())
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        g.train()
    return torch.cat(out)


def sample_grid(
    g: Generator,
    cond: Conditioner,
    eval_conditions: torch.Tensor | None,
    sample_bn: str,
    device: torch.device,
) -> torch.Tensor:
    """(rows, cols, C, H, W): 10 rows of one class each (classes spread over K), else 8 x 8
    (text: the first 64 evaluation captions)."""
    gen = torch.Generator().manual_seed(EVAL_SEED + 1)
    if cond.kind == "class":
        rows, cols = min(10, cond.dim), 10
        classes = torch.tensor([r * cond.dim // rows for r in range(rows)])
        c = F.one_hot(classes.repeat_interleave(cols), cond.dim).float()
    else:
        rows = cols = 8
        c = None if eval_conditions is None else eval_conditions[: rows * cols]
        if c is not None and len(c) < rows * cols:
            c = c.repeat((rows * cols + len(c) - 1) // len(c), 1)[: rows * cols]
    z = torch.randn(rows * cols, NZ, generator=gen)
    x = generate(g, z, c, sample_bn, device)
    return x.reshape(rows, cols, *x.shape[1:])


def evaluate_baseline(
    g: Generator,
    cond: Conditioner,
    cfg,
    train_ds,
    eval_ds,  # type: ignore[no-untyped-def]
    measures: tuple[str, ...],
    sample_bn: str,
    device: torch.device,
) -> tuple[dict, list[str], torch.Tensor | None]:
    """Score G as ``Run.evaluate`` scores a demo. Returns (evaluate()'s result, the metrics
    left out as properties of the demo model, the text conditions used)."""
    from ganstack.metrics.evaluate import caption_targets, evaluate
    from ganstack.viz import to_uint8

    ec = cfg.eval
    n = ec.n
    t0 = time.perf_counter()
    targets: dict[str, torch.Tensor] = {}
    labels = None
    conditions = None
    if cond.kind == "text":
        text, targets = caption_targets(eval_ds or train_ds, n, EVAL_SEED)
        conditions = text["text"].float()
    elif cond.kind == "class":
        labels = torch.arange(n) % cond.dim  # class-balanced, as StackModel.draw_inputs
        conditions = F.one_hot(labels, cond.dim).float()
    gen = torch.Generator().manual_seed(EVAL_SEED)
    z = torch.randn(n, NZ, generator=gen)
    images = to_uint8(generate(g, z, conditions, sample_bn, device))
    names = list(ec.metrics)
    skipped = [m for m in names if m in measures]  # the demo model's own
    names = [m for m in names if m not in skipped]
    res = evaluate(
        images,
        labels,
        train_ds,
        eval_ds,
        names,
        ec.inception,
        {},
        targets,
        calibrate=ec.calibrate,
        device=device,
    )
    res["protocol"]["samples"] = f"DCGAN baseline, seed {EVAL_SEED}"
    res["protocol"]["seconds"] = round(time.perf_counter() - t0, 1)
    return res, skipped, conditions if cond.kind == "text" else None


# ---------------------------------------------------------------------------------------------
# Machine, output
# ---------------------------------------------------------------------------------------------


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def summary_line(r: dict) -> str:
    mets = ", ".join(
        f"{k} {_fmt(v)}" for k, v in r["metrics"].items() if not k.endswith(("_shuffled", "_std"))
    )
    return (
        f"baseline {r['config']} seed {r['seed']}: {r['steps']} steps, "
        f"{r['images_seen']} images in {r['train_seconds']:.1f} s "
        f"({r['images_per_s']:.1f} img/s, {r['threads']} threads); {mets}"
    )


def render(r: dict) -> str:
    lines = [
        f"# DCGAN baseline on {r['config']}, seed {r['seed']}",
        "",
        f"{r['recipe']}. Conditioning: {r['conditioning']}. Image {r['image_shape']}; "
        f"G {r['parameters']['G']:,} / D {r['parameters']['D']:,} parameters.",
        "",
        f"Budget: {r.get('budget', 'wall time')}. "
        f"{r['train_seconds'] / 60:.2f} min of training: {r['steps']} steps, "
        f"{r['images_seen']} images, {r['images_per_s']:.1f} img/s on {r['cpu']} "
        f"({r['threads']} torch threads, torch {r['torch']}).",
        "",
        f"Command: `{r['command']}`",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in r["metrics"].items()]
    if r.get("skipped_metrics"):
        lines += ["", f"Not applicable to the baseline: {', '.join(r['skipped_metrics'])}."]
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Train the standard DCGAN recipe on a demo config's data for a fixed wall "
        "time and evaluate it with ganstack's protocol (see the module doc)."
    )
    ap.add_argument("config", help="bundled config name or YAML file (its data and eval)")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="training wall time")
    budget.add_argument("--steps", type=int, help="training steps (no clock)")
    budget.add_argument(
        "--equal-time",
        action="store_true",
        help="the steps that take the demo's training minutes, both timed on "
        "idle cores by benchmarks/demo_time.py (its demo_time.json); the "
        "run itself may then share the machine",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="initialisation, batch order and training noise (default 0)",
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)"
    )
    ap.add_argument(
        "--out",
        help="result JSON path (default: "
        "benchmarks/results/baseline-CONFIG-seedS.json); .md and .png go beside it",
    )
    ap.add_argument(
        "--bundle",
        action="store_true",
        help="also write the JSON to src/ganstack/configs/baselines/CONFIG.json",
    )
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. eval.n=2000 data.path=...",
    )
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="as ganstack's train.precision: auto (default) is bf16 autocast where the "
        "hardware computes in bf16 natively, else fp32",
    )
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="NHWC weights and activations (ganstack's train.channels_last)",
    )
    ap.add_argument(
        "--sample-bn",
        choices=["eval", "batch"],
        default="eval",
        help="G's batch norm when sampling: running (eval, default) or batch stats",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.minutes is not None and not args.minutes > 0:
        ap.error("--minutes must be > 0")
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    return args


def training_budget(args: argparse.Namespace, name: str) -> tuple[float | None, int | None, str]:
    """(minutes, steps, how they were chosen): a wall-clock budget has no step count, a step
    budget no clock; ``--equal-time`` converts the demo's minutes into this recipe's steps."""
    if args.minutes is not None:
        return args.minutes, None, "wall time"
    if args.steps is not None:
        return None, args.steps, "steps"
    path = RESULTS / "demo_time.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run `python benchmarks/demo_time.py {name}` on idle cores")
    timing = json.loads(path.read_text())
    rows = {r["config"]: r for r in timing["configs"]}
    row = rows.get(name)
    if row is None or "baseline_step_ms" not in row:
        sys.exit(
            f"{path} has no demo and baseline timing of {name}: run "
            f"`python benchmarks/demo_time.py {name}` on idle cores"
        )
    minutes = row["train_minutes"]
    steps = max(1, round(minutes * 60_000 / row["baseline_step_ms"]))
    return (
        minutes,
        steps,
        (
            f"equal time: the demo's {minutes} min of training steps at this "
            f"recipe's {row['baseline_step_ms']} ms per step, both timed side by side by "
            f"benchmarks/demo_time.py ({row.get('cpu', timing.get('cpu'))}, "
            f"{row.get('threads', timing.get('threads'))} thread(s))"
        ),
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from ganstack.config import load_config
    from ganstack.data import Batcher, load_dataset
    from ganstack.train.precision import resolve_precision
    from ganstack.viz import save_grid

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = Path(args.config).stem if args.config.endswith((".yaml", ".yml")) else args.config
    cfg = load_config(args.config, list(args.set))
    train_ds, eval_ds = load_dataset(cfg.data)
    kind, cond_dim, measures = demo_conditioning(cfg, train_ds)
    cond = Conditioner(kind, cond_dim)

    torch.manual_seed(args.seed)
    g, d = build_networks(train_ds.shape, kind, cond_dim)
    g.to(device)
    d.to(device)
    if args.channels_last:
        g.to(memory_format=torch.channels_last)
        d.to(memory_format=torch.channels_last)
    precision = resolve_precision(args.precision, device)
    batcher = Batcher(train_ds, BATCH, args.seed, device)
    minutes, steps, budget = training_budget(args, name)
    trained = train_for(
        g,
        d,
        batcher,
        cond,
        (minutes or 0.0) * 60.0,
        args.seed,
        device,
        progress=not args.no_progress,
        max_steps=steps,
        precision=precision,
    )
    res, skipped, text = evaluate_baseline(
        g, cond, cfg, train_ds, eval_ds, measures, args.sample_bn, device
    )

    steps = trained["steps"]
    command = " ".join(
        ["python", "benchmarks/baseline.py", *(sys.argv[1:] if argv is None else argv)]
    )
    result = {
        "config": name,
        "seed": args.seed,
        "minutes": minutes,
        "budget": budget,
        "steps": steps,
        "images_seen": steps * BATCH,
        "images_per_s": round(steps * BATCH / trained["seconds"], 1),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "channels_last": args.channels_last,
        "command": command,
        "metrics": res["metrics"],
        "protocol": res["protocol"],
        "recipe": RECIPE,
        "conditioning": kind if kind == "none" else f"{kind} ({cond_dim})",
        "image_shape": list(train_ds.shape),
        "parameters": {"G": count_parameters(g), "D": count_parameters(d)},
        "batch_size": BATCH,
        "train_seconds": round(trained["seconds"], 2),
        "last_losses": trained["last_losses"],
        "sample_bn": args.sample_bn,
        "skipped_metrics": skipped,
        "overrides": list(args.set),
        "device": str(device),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    out = Path(args.out) if args.out else RESULTS / f"baseline-{name}-seed{args.seed}.json"
    write_json(out, result)
    out.with_suffix(".md").write_text(render(result))
    grid = sample_grid(g, cond, text, args.sample_bn, device)
    save_grid(grid, out.with_suffix(".png"))
    if args.bundle:
        write_json(BUNDLE_DIR / f"{name}.json", result)
    print(summary_line(result), flush=True)
    return result


if __name__ == "__main__":
    main()
