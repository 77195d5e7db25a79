"""HDGAN against StackGAN-v2 on the captioned shapes: equal wall time, one protocol, two seeds.

    python benchmarks/demo_time.py hdgan-shapes stackgan-v2-shapes --threads 1   # step times
    python benchmarks/hdgan_vs_stackgan.py --seeds 0 1                           # then this
    python benchmarks/hdgan_vs_stackgan.py --table                               # re-render

Both demos (`hdgan-shapes`: 16 -> 32 -> 64; `stackgan-v2-shapes`: 8 -> 16 -> 32, each on the
easy captioned shapes with caption-true flips and the EMA warm-up) get the same minutes of
training steps: ``--minutes`` (default: the StackGAN-v2 demo's own minutes) divided by each
model's step time, both timed side by side on idle cores by ``benchmarks/demo_time.py``
(its ``demo_time.json``, at the thread count given there). The training itself then counts
steps, not time, so the runs may share the machine (``--jobs``).

Each run is scored as ``ganstack eval`` scores it (sampling seed 0, the 480 held-out captions):
per-attribute caption consistency at the final scale beside its condition-blind control (the
same samples against shuffled captions), FID at every scale, and the VS similarity (ganstack's
joint embedding, calibrated by real pairs and shuffled pairs), with the real-image and
blurred-real calibration rows. FIDs at different resolutions are not comparable between the
two models (HDGAN ends at 64x64, StackGAN-v2 at 32x32); caption consistency and VS are, since
the judge and the embedding resize every image to their own input size.

The published numbers are put beside ours, marked as published and not reproduced: they are
Inception scores and VS similarities on CUB, Oxford-102 and COCO at 256x256, with other
encoders and judges, so they say how the papers rank the two models, not what ours should
score.

Writes benchmarks/results/hdgan_vs_stackgan.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _train import train_run

from ganstack.environment import cpu_name

RESULTS = Path(__file__).parent / "results"
MODELS = {"HDGAN": "hdgan-shapes", "StackGAN-v2": "stackgan-v2-shapes"}
METRICS = ["caption", "fid_scales", "vs"]
# Second-hand published figures (Inception score / VS similarity; the HDGAN paper's Tables 1
# and 2 and the StackGAN++ paper's Table 2, as quoted in later papers): not reproduced here.
PUBLISHED = [
    ("Inception score, CUB", "4.15 ± .05", "4.04 ± .05"),
    ("Inception score, Oxford-102", "3.45 ± .07", "3.26"),
    ("Inception score, COCO", "11.86 ± .18", "8.30"),
    ("VS similarity, CUB (ground truth .302)", ".246 ± .157", "StackGAN-v1: .228 ± .162"),
    ("VS similarity, Oxford-102 (ground truth .336)", ".296 ± .131", "StackGAN-v1: .278 ± .134"),
]
ATTRS = ("shape", "colour", "background", "position", "size")


def budget(minutes: float | None) -> dict[str, dict]:
    """Steps per model for ``minutes`` of training at the step times of demo_time.json."""
    path = RESULTS / "demo_time.json"
    timing = json.loads(path.read_text()) if path.exists() else {"configs": []}
    rows = {r["config"]: r for r in timing["configs"]}
    missing = [c for c in MODELS.values() if c not in rows]
    if missing:
        raise SystemExit(
            f"{path} has no timing of {' '.join(missing)}: run "
            f"`python benchmarks/demo_time.py {' '.join(MODELS.values())} "
            "--threads 1` on idle cores first"
        )
    if not minutes:  # the StackGAN-v2 demo's own steps, unrounded
        (v2,) = rows["stackgan-v2-shapes"]["phases"].values()
        minutes = v2["steps"] * v2["step_ms"] / 60_000
    out = {}
    for name, config in MODELS.items():
        ((phase, ph),) = rows[config]["phases"].items()  # both demos train one phase
        out[name] = {
            "config": config,
            "phase": phase,
            "step_ms": ph["step_ms"],
            "steps": max(1, round(minutes * 60_000 / ph["step_ms"])),
            "images_per_s": round(rows[config]["batch_size"] * 1000 / ph["step_ms"], 1),
        }
    return {
        "minutes": minutes,
        # every row of demo_time.json names its machine (older files: the file does)
        "cpu": rows["stackgan-v2-shapes"].get("cpu", timing.get("cpu")),
        "threads": rows["stackgan-v2-shapes"].get("threads", timing.get("threads")),
        "models": out,
    }


def score(run_dir: Path) -> dict:
    """The calibration rows and every metric, sample counts dropped from the names."""
    import ganstack
    from ganstack.metrics.evaluate import strip_count

    run = ganstack.load(run_dir)
    res = run.evaluate(metrics=METRICS, seed=0, calibrate=True)
    cal = res["protocol"].get("calibration") or {"rows": {}}
    rows = {name: {k: round(v, 4) for k, v in row.items()} for name, row in cal["rows"].items()}
    return {
        "rows": rows,
        "metrics": {strip_count(k): round(v, 4) for k, v in res["metrics"].items()},
    }


def pick(d: dict, pattern: str) -> float | None:
    keys = sorted(k for k in d if re.fullmatch(pattern, k))
    return d[keys[-1]] if keys else None


def fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def coarse_first(m: re.Match) -> int:
    """Sort key, coarse to fine, of a per-output suffix: ``level{i}`` counts from the finest
    (docs/architecture.md); results stored before the rename end with ``scale{j}``, j from the
    coarsest."""
    return int(m[2]) if m[1] == "scale" else -int(m[2])


def table(res: dict) -> str:
    b = res["budget"]
    lines = [
        f"Equal training time: {b['minutes']:.2f} min of training steps per run at the step times "
        f"of `benchmarks/demo_time.py` ({b['cpu']}, {b['threads']} torch thread(s)): "
        + ", ".join(
            f"{n} {m['steps']:,} steps ({m['step_ms']:.0f} ms, {m['images_per_s']} img/s)"
            for n, m in b["models"].items()
        )
        + ". Sampling seed 0, the 480 held-out captions; `blind`: the same samples against "
        "shuffled captions. Reproduce: `python benchmarks/hdgan_vs_stackgan.py --seeds "
        + " ".join(str(s) for s in res["seeds"])
        + "`.",
        "",
        "| model | seed | "
        + " | ".join(f"{a} (blind)" for a in ATTRS)
        + " | all attributes (shuffled) | VS (shuffled pairs) | FID per scale, coarse to fine |",
        "|---|---|" + "---|" * (len(ATTRS) + 3),
    ]
    for key, r in res["runs"].items():
        name, seed = key.rsplit("-s", 1)
        m, blind = r["rows"].get("model", {}), r["rows"].get("blind", {})
        cells = [
            f"{fmt(pick(m, f'caption_{a}_shapescnn'))} "
            f"({fmt(pick(blind, f'caption_{a}_shapescnn'))})"
            for a in ATTRS
        ]
        cells.append(
            f"{fmt(pick(m, 'caption_attr_shapescnn'))} "
            f"({fmt(pick(blind, 'caption_attr_shapescnn'))})"
        )
        vs = pick(r["metrics"], r"vs_[a-z0-9]+")
        vs_blind = pick(r["metrics"], r"vs_[a-z0-9]+_shuffled")
        cells.append(f"{fmt(vs, 3)} ({fmt(vs_blind, 3)})")
        per_output = r"fid_shapescnn_train\d+_(scale|level)(\d+)"
        scales = sorted(
            (k for k in r["metrics"] if re.fullmatch(per_output, k)),
            key=lambda k: coarse_first(re.fullmatch(per_output, k)),  # type: ignore[arg-type]
        )
        cells.append(" / ".join(f"{r['metrics'][k]:.0f}" for k in scales) or "–")
        lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    real = next(iter(res["runs"].values()), {}).get("rows", {}).get("real", {})
    if real:
        lines += [
            "",
            "Real held-out images: all attributes "
            f"{fmt(pick(real, 'caption_attr_shapescnn'))}, VS "
            f"{fmt(pick(real, r'vs_[a-z0-9]+'), 3)}.",
        ]
    lines += [
        "",
        "Published (second-hand, at 256x256 on the papers' data; **not reproduced**):",
        "",
        "| figure | HDGAN | StackGAN-v2 |",
        "|---|---|---|",
    ]
    lines += [f"| {f} | {h} | {s} |" for f, h, s in PUBLISHED]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--minutes",
        type=float,
        help="training minutes per run (default: the StackGAN-v2 demo's, from demo_time.json)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--work", default="runs/hdgan_vs_stackgan", help="where the runs are kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--table", action="store_true", help="only re-render the stored JSON")
    args = ap.parse_args()
    path = RESULTS / "hdgan_vs_stackgan.json"
    if args.table:
        res = json.loads(path.read_text())
    else:
        plan = budget(args.minutes)
        work = Path(args.work)
        todo = [(name, seed) for seed in args.seeds for name in MODELS]

        def run(item: tuple[str, int]) -> Path:
            name, seed = item
            m = plan["models"][name]
            return train_run(
                m["config"],
                [f"train.phases.{m['phase']}={m['steps']}"],
                work / f"{m['config']}-{m['steps']}-s{seed}",
                seed,
                args.threads,
            )

        with ThreadPoolExecutor(args.jobs) as pool:
            dirs = list(pool.map(run, todo))
        import torch

        torch.set_num_threads(max(args.threads, 1))
        res = {
            "budget": plan,
            "seeds": args.seeds,
            "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
            "runs": {},
        }
        for (name, seed), run_dir in zip(todo, dirs, strict=True):
            res["runs"][f"{name}-s{seed}"] = score(run_dir)
            print(
                f"{name} seed {seed}: {json.dumps(res['runs'][f'{name}-s{seed}']['rows'])}",
                flush=True,
            )
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / "hdgan_vs_stackgan.md").write_text(table(res))
    print(table(res))


if __name__ == "__main__":
    main()
