"""Does SGAN's entropy loss stop the bottom level ignoring its noise (the paper's Fig. 2c/d)?

    python benchmarks/sgan_entropy.py                        # 6,000 steps, seeds 0 1: about 1 h
    python benchmarks/sgan_entropy.py --steps 2000 --every 500 --seeds 0 --jobs 1

Trains `sgan-mnist-no-joint` (two levels, independent phase, the `sgan-mnist` settings) with
the entropy loss (ent_weight 10) and without it (ent_weight 0), from the same seeds, on the
embedded MNIST-5k digits. Every ``--every`` steps it measures each level's noise sensitivity
(the spread of the level's output when only its own noise varies, over the spread of real data
at that level; 0: the noise is ignored) and reads the posterior heads' error (Q MSE, 1/12 =
0.083 is chance). The paper's claim is a trend over training: without the entropy loss G0 comes
to ignore z0, with it G0 keeps using it. ``--jobs`` runs that many trainings at once, one torch
thread each. Writes benchmarks/results/sgan_entropy.{json,md} and, per variant, a grid of the
final bottom level's samples for fixed generated fc3 features (one row each, z0 varying along
the row): sgan_entropy-with.png and sgan_entropy-without.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {"with L_ent": "model.ent_weight=10", "without L_ent": "model.ent_weight=0"}


def run_one(variant: str, seed: int, steps: int, every: int, out: str) -> dict:
    import torch

    torch.set_num_threads(1)
    import ganstack
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.train import checkpoint as ckpt
    from ganstack.train.trainer import Trainer
    from ganstack.viz import save_grid

    run = Path(out)
    overrides = [
        VARIANTS[variant],
        f"train.phases.independent={steps}",
        "train.phases.joint=0",
        f"train.seed={seed}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.sample_every=0",
        f"train.checkpoint_every={every}",
        f"train.keep_checkpoints={steps // every + 1}",
        "train.num_threads=1",
        "model.encoder.pretrain_epochs=4",
        "eval.at_end=false",
        "train.ema_warmup=false",  # the EMA its stored results were measured with
    ]
    cfg = load_config("sgan-mnist-no-joint", overrides)
    Trainer(cfg, run).fit()
    train_ds, _ = load_dataset(cfg.data)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    points = []
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        r = ganstack.load(run, checkpoint=path.stem)
        if points and points[-1]["step"] == r.step:
            continue
        point = {"step": r.step, **r.model.noise_sensitivity(train_ds, seed=seed)}
        logged = [x for x in rows if x["step"] <= r.step]
        if logged and "loss/d0_ent" in logged[-1]:
            for i in range(2):
                point[f"q{i}_mse"] = logged[-1][f"loss/d{i}_ent"]
        points.append(point)
    if seed == 0:  # the Fig. 2c/d panel: a generated fc3 per row, z0 varying along it
        r = ganstack.load(run)
        grid = r.model.grid(10, 10, vary=["z0"], generator=torch.Generator().manual_seed(1))
        tag = "with" if variant == "with L_ent" else "without"
        save_grid(grid, RESULTS / f"sgan_entropy-{tag}.png")
    print(
        f"{variant} seed {seed}: "
        + "; ".join(
            f"step {p['step']} z0 {p['noise_sensitivity_z0']:.3f} "
            f"z1 {p['noise_sensitivity_z1']:.3f}"
            for p in points
        ),
        flush=True,
    )
    return {"variant": variant, "seed": seed, "points": points}


def _fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(runs: list[dict], steps: int, seeds: list[int]) -> str:
    lines = [
        f"`sgan-mnist-no-joint`, {steps} steps, seeds {seeds}, mean ± std over seeds. "
        "Noise sensitivity: output spread when only that level's noise varies, over the "
        "spread of real data at that level (0: the noise is ignored). Q MSE: the posterior "
        "head's error on z (1/12 = 0.083 is chance).",
        "",
        "| step | z0 with L_ent | z0 without | ratio | z1 with L_ent | z1 without | ratio "
        "| Q0 MSE | Q1 MSE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["variant"], p["step"]): [] for r in runs for p in r["points"]}
    for r in runs:
        for p in r["points"]:
            by[(r["variant"], p["step"])].append(p)
    for step in sorted({s for _, s in by}):
        w, wo = by.get(("with L_ent", step), []), by.get(("without L_ent", step), [])

        def col(ps: list[dict], key: str) -> list[float]:
            return [p[key] for p in ps if key in p]

        cells = [str(step)]
        for z in ("z0", "z1"):
            a, b = col(w, f"noise_sensitivity_{z}"), col(wo, f"noise_sensitivity_{z}")
            ratio = f"{statistics.mean(a) / statistics.mean(b):.2f}" if a and b else "n/a"
            cells += [_fmt(a), _fmt(b), ratio]
        cells += [_fmt(col(w, "q0_mse")), _fmt(col(w, "q1_mse"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6000, help="training steps per run")
    ap.add_argument("--every", type=int, default=1500, help="steps between measurements")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (1 thread each)")
    args = ap.parse_args()
    if args.steps < 1 or not 1 <= args.every <= args.steps:
        ap.error("--steps must be >= 1 and --every in [1, --steps]")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_one, v, s, args.steps, args.every, f"{tmp}/{i}-{s}")
            for s in args.seeds
            for i, v in enumerate(VARIANTS)
        ]
        runs = [f.result() for f in futures]
    md = table(runs, args.steps, args.seeds)
    (RESULTS / "sgan_entropy.json").write_text(
        json.dumps(
            {
                "config": "sgan-mnist-no-joint",
                "steps": args.steps,
                "every": args.every,
                "seeds": args.seeds,
                "runs": runs,
            },
            indent=1,
        )
    )
    (RESULTS / "sgan_entropy.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
