"""How long each CPU demo's training steps take on this machine, phase by phase.

    python benchmarks/demo_time.py                          # every demo on embedded data
    python benchmarks/demo_time.py stackgan-v2-shapes lapgan-mnist --threads 2

For each config, in a fresh subprocess with ``--threads`` torch threads: every phase with steps
is entered on a freshly built model, a few warm-up steps are run, then ``--repeats`` timed runs
of ``--steps`` steps; the median step time times the phase's steps, summed over the phases,
estimates the training time of ``ganstack train CONFIG``. The same is timed for the equal-time
DCGAN baseline of ``benchmarks/baseline.py`` on the config's data, so that ``baseline.py CONFIG
--equal-time`` trains the steps that fill the demo's minutes. Not counted: loading the data,
the model's one-off setup (e.g. an encoder's pretraining, S²-GAN's k-means codebook),
checkpoints, sample grids, figures and the end-of-training evaluation, which together add about
a minute to a demo (more the first time, when the evaluation's classifiers are trained and
cached). Steps on fresh weights cost what steps on trained ones do (the same operations on the
same shapes). Run it on an otherwise idle machine.

Writes ``benchmarks/results/demo_time.json`` and ``demo_time.md``: the configs measured replace
their rows, the other rows are kept; each row records the CPU and thread count it was timed on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEMOS = [
    "sgan-mnist",
    "stackgan-v2-shapes",
    "stackgan-v1-shapes",
    "hdgan-shapes",
    "lapgan-mnist",
    "lapgan-shapes",
    "s2gan-rooms",
]


def measure(name: str, steps: int, repeats: int) -> dict:
    """Runs inside the subprocess: one config's phases."""
    import torch

    from ganstack.config import load_config
    from ganstack.data import Batcher, load_dataset
    from ganstack.models import DataInfo, build_model
    from ganstack.models.base import Step
    from ganstack.train.precision import apply_levers, resolve_precision, step_autocast

    cfg = load_config(name)
    train, _ = load_dataset(cfg.data)
    tc = cfg.train
    # the config's speed settings, as the trainer applies them on this CPU
    precision = resolve_precision(tc.precision, torch.device("cpu"))
    phases = {}
    for phase, n in cfg.train.phases.items():
        if n <= 0:
            continue
        torch.manual_seed(0)
        model = build_model(cfg.model, DataInfo.of(train))
        apply_levers(model, tc.channels_last, tc.fused_optimizers)
        model.train()
        model.enter_phase(phase, fresh=True)
        batcher = Batcher(train, cfg.train.batch_size, 0)
        bs = cfg.train.batch_size
        with step_autocast("cpu", precision):
            for i in range(3):  # warm-up
                model.train_step(batcher.batch(i), phase, Step(i, phase, i, bs, 1, len(train)))
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            with step_autocast("cpu", precision):
                for i in range(3 + r * steps, 3 + (r + 1) * steps):
                    step = Step(i, phase, i, bs, 1, len(train))
                    model.train_step(batcher.batch(i), phase, step)
            times.append(time.perf_counter() - t)
        step_s = statistics.median(times) / steps
        phases[phase] = {
            "steps": n,
            "step_ms": round(step_s * 1000, 2),
            "minutes": round(n * step_s / 60, 2),
        }
    return {
        "config": name,
        "batch_size": cfg.train.batch_size,
        "phases": phases,
        "train_minutes": round(sum(p["minutes"] for p in phases.values()), 2),
        "precision": precision,
        "channels_last": tc.channels_last,
        "baseline_step_ms": round(baseline_step_s(cfg, train, steps, repeats, precision) * 1000, 2),
    }


def baseline_step_s(cfg, train, steps: int, repeats: int, precision: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds per step of the equal-time DCGAN baseline (benchmarks/baseline.py) on the same
    data, timed the same way and in the demo's precision and memory layout, so that
    ``baseline.py --equal-time`` can turn the demo's minutes into the baseline's steps."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import baseline

    from ganstack.data import Batcher

    kind, dim, _ = baseline.demo_conditioning(cfg, train)
    torch.manual_seed(0)
    g, d = baseline.build_networks(train.shape, kind, dim)
    if cfg.train.channels_last:
        g.to(memory_format=torch.channels_last)
        d.to(memory_format=torch.channels_last)
    cond = baseline.Conditioner(kind, dim)
    step = baseline.step_function(g, d, cond, 0, torch.device("cpu"), precision)
    batcher = Batcher(train, baseline.BATCH, 0)
    for i in range(3):  # warm-up
        step(batcher.batch(i))
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(3 + r * steps, 3 + (r + 1) * steps):
            step(batcher.batch(i))
        times.append(time.perf_counter() - t)
    return statistics.median(times) / steps


def merge(old: dict | None, rows: list[dict]) -> dict:
    """The stored results with ``rows`` in place of the rows of their configs (rows from
    before rows carried their CPU take the file's)."""
    kept = []
    for r in (old or {}).get("configs", []):
        r.setdefault("cpu", old.get("cpu"))
        r.setdefault("threads", old.get("threads"))
        kept.append(r)
    new = {r["config"]: r for r in rows}
    merged = [new.pop(r["config"], r) for r in kept] + list(new.values())
    return {"configs": merged}


def table(results: dict) -> str:
    lines = [
        "Median of `--repeats` timed runs of `--steps` steps per phase (3 x 10 unless a row "
        "says otherwise). Estimated minutes of the training steps alone (`python "
        "benchmarks/demo_time.py CONFIG`); each row on its own machine and thread count.",
        "",
        "| config | phases (steps x ms) | training minutes | DCGAN baseline ms/step "
        "| baseline steps in the same minutes | machine |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["configs"]:
        ph = ", ".join(f"{p} {v['steps']:,} x {v['step_ms']:.0f}" for p, v in r["phases"].items())
        ms = r.get("baseline_step_ms")
        base = f"{ms:.0f} | {round(r['train_minutes'] * 60_000 / ms):,}" if ms else "- | -"
        where = f"{r.get('cpu')}, {r.get('threads')} thread(s), {r.get('precision', 'fp32')}"
        if (r.get("repeats", 3), r.get("steps", 10)) != (3, 10):
            where += f", {r['repeats']} x {r['steps']} steps"
        lines.append(f"| `{r['config']}` | {ph} | {r['train_minutes']:.1f} | {base} | {where} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("configs", nargs="*", help=f"bundled configs (default: {' '.join(DEMOS)})")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per phase (median kept)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.child, args.steps, args.repeats)))
        return
    from ganstack.environment import cpu_name

    out = []
    for name in args.configs or DEMOS:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--steps",
                str(args.steps),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if res.returncode:
            sys.exit(f"{name} failed:\n{res.stderr[-2000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{name}: {row['train_minutes']:.1f} min {row['phases']}", flush=True)
        timing = {"steps": args.steps, "repeats": args.repeats}
        out.append({**row, "cpu": cpu_name(), "threads": args.threads, **timing})
    path = RESULTS / "demo_time.json"
    results = merge(json.loads(path.read_text()) if path.exists() else None, out)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_time.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "demo_time.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
