"""The SGAN paper's ablation (Table 1) on the embedded MNIST-5k digits, under one equal budget.

    python benchmarks/sgan_ablation.py                   # 6 variants x 3 seeds, 400 steps each
    python benchmarks/sgan_ablation.py --steps 1000 --seeds 0 1 2 3

Variants (paper Sec. 4), the bundled sgan-mnist-* configs: four one-level "DCGAN" baselines
with SGAN's bottom architecture, {adv}, {adv+ent} (no labels), {adv+cond}, {adv+cond+ent}
(conditioned on y, cond loss = the encoder's cross-entropy); SGAN-no-joint (two levels,
independent phase only), the same without the entropy loss (the paper's Fig. 2 pair), and SGAN
(independent then joint, 3:1). Every variant trains the same number of steps from the
`sgan-mnist` config (width 0.5, lr 5e-4, Glorot D, EMA 0.99 so a short run's average is recent).
Measures: conditional accuracy, IS and FID with ganstack's MNIST classifier (2,000 samples),
and each level's noise sensitivity (output spread when only that level's noise varies, over the
spread of real data at that level). Writes benchmarks/results/sgan_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# name -> (bundled config, extra overrides); the configs are the paper's variants (Sec. 4).
VARIANTS = {
    "DCGAN (adv)": ("sgan-mnist-dcgan-adv", []),
    "DCGAN (adv+ent)": ("sgan-mnist-dcgan-adv-ent", []),
    "DCGAN (adv+cond)": ("sgan-mnist-dcgan-adv-cond", []),
    "DCGAN (adv+cond+ent)": ("sgan-mnist-dcgan-adv-cond-ent", []),
    "SGAN-no-joint": ("sgan-mnist-no-joint", []),
    # The paper's Fig. 2 pair: the same stack without the entropy loss.
    "SGAN-no-joint, no L_ent": ("sgan-mnist-no-joint", ["model.ent_weight=0"]),
    "SGAN": ("sgan-mnist", []),  # independent then joint, 3:1
}


def run_one(name: str, variant: tuple[str, list[str]], steps: int, seed: int, out: Path) -> dict:
    import ganstack
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    config, extra = variant
    if config == "sgan-mnist":
        phases = [
            f"train.phases.independent={steps * 3 // 4}",
            f"train.phases.joint={steps - steps * 3 // 4}",
        ]
    else:
        phases = [f"train.phases.independent={steps}", "train.phases.joint=0"]
    overrides = (
        extra
        + phases
        + [
            f"train.seed={seed}",
            "train.ema=0.99",
            "train.ema_warmup=false",
            "train.progress=false",
            "train.tensorboard=false",
            "train.sample_every=0",
            "train.checkpoint_every=0",
            "model.encoder.pretrain_epochs=4",
            "eval.n=2000",
            # the settings the stored table was trained with (before the speed defaults)
            "train.precision=fp32",
            "train.channels_last=false",
            "train.fused_optimizers=false",
        ]
    )
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    Trainer(cfg, out).fit()
    res = ganstack.load(out).evaluate(metrics=["acc", "is", "fid", "noise"], seed=seed)
    metrics = {
        k.replace("_mnist5kcnn", ""): v for k, v in res["metrics"].items() if not k.endswith("_std")
    }
    metrics["seconds"] = time.perf_counter() - t0
    # Did the Q heads learn? Their MSE in the last logged interval (1/12 = 0.083: chance).
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    if cfg.model.ent_weight > 0:
        for i in range(len(cfg.model.z_dims)):
            metrics[f"q{i}_mse"] = last[f"loss/d{i}_ent"]
    print(
        f"{name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True
    )
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="training steps per variant")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in the results file (same steps) and run the rest",
    )
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    partial = RESULTS / "sgan_ablation.partial.json"  # every finished run, as it finishes
    done: dict[str, dict] = {}
    if args.resume and partial.is_file():
        saved = json.loads(partial.read_text())
        if saved.get("steps") == args.steps:
            done = saved["runs"]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in VARIANTS.items():
            for seed in args.seeds:
                key = f"{name} | seed {seed}"
                if key not in done:
                    out = Path(tmp) / f"{name.replace(' ', '_')}-{seed}"
                    done[key] = run_one(name, extra, args.steps, seed, out)
                    partial.write_text(json.dumps({"steps": args.steps, "runs": done}, indent=1))
                runs.setdefault(name, []).append(done[key])
    partial.unlink(missing_ok=True)
    keys = [
        "acc2k",
        "is2k",
        "fid2k_train4500",
        "noise_sensitivity_z0",
        "noise_sensitivity_z1",
        "q0_mse",
        "q1_mse",
    ]
    table = {}
    for name, rows in runs.items():
        table[name] = {}
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                table[name][k] = {"mean": statistics.mean(vals), "std": sd, "n": len(vals)}
    (RESULTS / "sgan_ablation.json").write_text(
        json.dumps(
            {"steps": args.steps, "seeds": args.seeds, "runs": runs, "table": table}, indent=1
        )
    )
    head = (
        "| variant | cond. accuracy | IS | FID | noise sensitivity z0 | z1 "
        "| Q0 MSE | Q1 MSE |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, t in table.items():
        cells = [f"{t[k]['mean']:.3f} ± {t[k]['std']:.3f}" if k in t else "n/a" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    md = (
        f"{args.steps} steps per variant, seeds {args.seeds}, mean ± std over seeds; "
        f"2,000 samples, classifier mnist5kcnn, FID against the 4,500 training digits; "
        f"Q MSE: the posterior heads' error on z in the last 50 steps (1/12 = 0.083 is "
        f"chance, n/a: no entropy loss).\n\n" + head + "\n".join(lines) + "\n"
    )
    (RESULTS / "sgan_ablation.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
