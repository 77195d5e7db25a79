"""Side-by-side speed of CPU levers on one config's training step, in one process.

    python benchmarks/speed_ab.py stackgan-v2-shapes
    python benchmarks/speed_ab.py sgan-mnist --phase independent --variants base bf16+fused
    python benchmarks/speed_ab.py demos          # every CPU demo: fp32 against the defaults

Each variant is a freshly built model (same seed) with its levers applied, whatever the
config's own ``train:`` speed settings say:

- ``base``: fp32, NCHW weights, the optimizers' for-each step (what every demo trained with
  before the speed defaults);
- ``channels_last``: every weight (and so every conv activation) in NHWC memory layout
  (``train.channels_last``);
- ``fused``: the optimizers' fused (single-kernel) step (``train.fused_optimizers``);
- ``bf16``: the step under bfloat16 autocast (``train.precision=bf16``; on a CPU with
  AVX512-BF16 or AMX, oneDNN runs convolutions and matmuls in bf16). Lower precision: a
  speed figure, not a claim that training quality is unchanged;
- ``compile``: ``torch.compile`` of each network (every module in one of the model's
  ModuleLists);
- levers joined by ``+`` combine, e.g. ``channels_last+bf16+fused``.

The timed runs interleave the variants (base, A, B, base, A, B, ...), so a load that comes and
goes on the machine slows them alike, and the ratios stay meaningful where absolute figures do
not. Prints and writes ``benchmarks/results/speed_ab-CONFIG.json`` with the median step time of
each variant and its ratio to ``base`` (below 1: faster), and the CPU. Paper configs whose
files are absent train on random data of their size, as in ``speed.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results"
LEVERS = ("channels_last", "fused", "bf16", "compile")
DEFAULT_VARIANTS = ["base", "channels_last", "fused", "channels_last+fused"]


def variant_name(text: str) -> str:
    """``base`` or levers joined by ``+`` (e.g. ``channels_last+bf16+fused``)."""
    parts = text.split("+")
    if text != "base" and not all(p in LEVERS for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 'base' or levers joined by '+' from {', '.join(LEVERS)}"
        )
    return text


def apply(model, variant: str) -> None:  # type: ignore[no-untyped-def]
    """The levers as the trainer applies them (train.channels_last, train.fused_optimizers)."""
    import torch

    from ganstack.train.precision import fuse_optimizers

    if "channels_last" in variant:
        model.to(memory_format=torch.channels_last)
    if "fused" in variant:
        fuse_optimizers(model.optimizers.values())
    if "compile" in variant:
        for m in model.modules():
            if m is not model and isinstance(m, torch.nn.ModuleList):
                for sub in m:
                    sub.compile()


def build(  # type: ignore[no-untyped-def]
    name: str, variant: str, phase: str | None = None, overrides: list[str] | None = None
):
    import torch
    from speed import training_data

    from ganstack.config import load_config
    from ganstack.data import Batcher
    from ganstack.models import DataInfo, build_model

    torch.manual_seed(0)
    cfg = load_config(name, overrides)
    train, _ = training_data(cfg)
    model = build_model(cfg.model, DataInfo.of(train))
    apply(model, variant)
    phases = [p for p, s in cfg.train.phases.items() if s > 0]
    if phase is None:
        phase = phases[-1]
    elif phase not in phases:
        raise SystemExit(f"{name} has no phase {phase!r} with steps; it has {', '.join(phases)}")
    model.enter_phase(phase, fresh=True)
    model.train()
    return model, Batcher(train, cfg.train.batch_size, 0), phase, cfg.train.batch_size


# `python benchmarks/speed_ab.py demos`: every CPU demo's phases that take its time, with the
# speed defaults against the fp32 NCHW for-each-Adam step that every demo trained with before.
DEMO_PHASES = [
    ("sgan-mnist", "independent"),
    ("sgan-mnist", "joint"),
    ("stackgan-v1-shapes", "stage1"),
    ("stackgan-v1-shapes", "stage2"),
    ("stackgan-v2-shapes", "joint"),
    ("s2gan-rooms", "structure"),
    ("s2gan-rooms", "style"),
    ("lapgan-mnist", "independent"),
    ("lapgan-shapes", "independent"),
    ("hdgan-shapes", "joint"),
    ("dcgan-mnist", "train"),
    ("dcgan-shapes", "train"),
]
DEMO_VARIANTS = ["base", "bf16+fused", "channels_last+bf16+fused"]


def demos_table() -> str:
    """The Markdown table of the ``demos`` sweep's result files."""
    lines = [
        "| config | phase | fp32 step ms | bf16 + fused Adam | + NHWC (channels_last) | CPU |",
        "|---|---|---|---|---|---|",
    ]
    for config, phase in DEMO_PHASES:
        path = RESULTS / f"speed_ab_default-{config}-{phase}.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        v = d["variants"]
        ratios = [f"{v[k]['ratio_to_base']:.2f}" if k in v else "–" for k in DEMO_VARIANTS[1:]]
        lines.append(
            f"| {config} | {phase} | {v['base']['step_ms']:.0f} | {' | '.join(ratios)} "
            f"| {d.get('cpu', '?')} |"
        )
    return "\n".join(lines) + "\n"


def run_demos(steps: int, repeats: int) -> None:
    import subprocess

    for config, phase in DEMO_PHASES:
        cmd = [sys.executable, __file__, config, "--phase", phase, "--variants", *DEMO_VARIANTS]
        cmd += ["--steps", str(steps), "--repeats", str(repeats)]
        subprocess.run([*cmd, "--out", f"speed_ab_default-{config}-{phase}"], check=True)
    (RESULTS / "speed_ab_default.md").write_text(demos_table())
    print(demos_table())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "config",
        help="a config, or 'demos': every CPU demo's main phases, base against the speed "
        "defaults (writes speed_ab_default-CONFIG-PHASE.json and speed_ab_default.md)",
    )
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, type=variant_name)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    ap.add_argument("--phase", help="the training phase to time (default: the last one)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--out", help="result file name, without .json (default: speed_ab-CONFIG)")
    args = ap.parse_args()
    if args.config == "demos":
        run_demos(args.steps, args.repeats)
        return
    import torch

    from ganstack.environment import cpu_name
    from ganstack.models.base import Step
    from ganstack.train.precision import step_autocast

    if "base" not in args.variants:
        args.variants = ["base", *args.variants]
    runs = {v: build(args.config, v, args.phase, args.set) for v in args.variants}
    steps = dict.fromkeys(args.variants, 0)

    def run(v: str, k: int) -> None:
        model, batcher, phase, _ = runs[v]
        for _ in range(k):
            with step_autocast("cpu", "bf16" if "bf16" in v else "fp32"):
                model.train_step(batcher.batch(steps[v]), phase, Step(steps[v], phase, steps[v]))
            steps[v] += 1

    for v in args.variants:
        run(v, 2)  # warm-up
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    faults: dict[str, list[int]] = {v: [] for v in args.variants}  # minor page faults
    for _ in range(args.repeats):
        for v in args.variants:
            f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            run(v, args.steps)
            times[v].append((time.perf_counter() - t) / args.steps)
            faults[v].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    base = statistics.median(times["base"])
    rows = {
        v: {
            "step_ms": round(statistics.median(t) * 1000, 2),
            "ratio_to_base": round(statistics.median(t) / base, 3),
            "minor_faults_per_step": round(statistics.median(faults[v]) / args.steps),
            "runs_ms": [round(x * 1000, 1) for x in t],
        }
        for v, t in times.items()
    }
    out = {
        "config": args.config,
        "phase": runs["base"][2],
        "overrides": args.set,
        "batch_size": runs["base"][3],
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "variants": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out or 'speed_ab-' + args.config}.json").write_text(
        json.dumps(out, indent=1)
    )
    for v, r in rows.items():
        print(
            f"{args.config} {v}: {r['step_ms']} ms a step, {r['ratio_to_base']:.3f} x base, "
            f"{r['minor_faults_per_step']:,} minor page faults a step"
        )


if __name__ == "__main__":
    main()
