"""StackGAN-v1 vs StackGAN-v2 on the embedded captioned shapes, at an equal budget.

    OMP_NUM_THREADS=1 python benchmarks/stackgan_v1_vs_v2.py               # 2,400 G updates each
    OMP_NUM_THREADS=1 python benchmarks/stackgan_v1_vs_v2.py --steps 1200  # a shorter run
    ... --v2-run RUN   # evaluate an existing `ganstack train stackgan-v2-shapes` run instead
                       # of training v2 (its config must be the bundled one with --steps)

Both models train from their bundled shapes demos (`stackgan-v1-shapes`: Stage-I 16 -> Stage-II
64; `stackgan-v2-shapes`: a 16/32/64 tree) with the same batch (24), seed and data, and the
**same number of generator updates** (hence the same number of real images seen): v2 trains
``--steps`` joint steps; v1 trains ``--steps / 2`` Stage-I steps, then ``--steps / 2`` Stage-II
steps (its learning rate halving twice per stage, as its demo config does). Each run is then
evaluated with ganstack's metrics (`ganstack eval RUN --metrics fid fid_scales is caption`,
``--n`` samples conditioned on held-out captions): FID of the final 64x64 output and of every
coarser output bilinear-upsampled to 64x64 (domain-classifier features, against the training
split), IS, and caption consistency (the classifier's attribute predictions against the
attributes each sample's caption names; `shuffled`: against other samples' captions).

Writes benchmarks/results/stackgan_v1_vs_v2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COMMON = [
    "train.progress=false",
    "train.tensorboard=false",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.num_threads=1",
    "eval.at_end=false",
]


def overrides(model: str, steps: int, seed: int) -> list[str]:
    extra = COMMON + [f"train.seed={seed}"]
    if model == "v2":
        return extra + [f"train.phases.joint={steps}"]
    s1 = steps // 2
    s2 = steps - s1
    return extra + [
        f"train.phases.stage1={s1}",
        f"train.phases.stage2={s2}",
        f"model.lr_decay_every={max(1, s1 // 3)}",
        f"model.stage2_lr_decay_every={max(1, s2 // 3)}",
    ]


def tidy(metrics: dict[str, float]) -> dict[str, float]:
    """Drop the sample-count / classifier / reference tags from the metric names."""
    out = {}
    for k, v in metrics.items():
        k = re.sub(r"(\d+k?)_shapescnn", "", k)
        k = re.sub(r"_train\d+", "", k)
        out[k] = v
    return out


def reuse_run(run: Path, cfg) -> float:  # type: ignore[no-untyped-def]
    """Check that ``run`` was trained with ``cfg`` (up to logging and thread settings);
    returns its training time."""
    from ganstack.train.trainer import load_run_config

    got = load_run_config(run)
    if got.data.text_encoder != "sentence-transformers":  # the model name is then unused
        got.data.text_model = cfg.data.text_model
    for part in ("model", "data"):
        if getattr(got, part) != getattr(cfg, part):
            raise SystemExit(f"{run}: its {part} config differs from the bundled one")
    for key in ("phases", "batch_size", "seed", "ema"):
        if getattr(got.train, key) != getattr(cfg.train, key):
            raise SystemExit(
                f"{run}: train.{key} is {getattr(got.train, key)}, the benchmark "
                f"needs {getattr(cfg.train, key)}"
            )
    last = list(cfg.train.phases)[-1]
    if not (run / "checkpoints" / f"phase-{last}.json").exists():
        raise SystemExit(f"{run} has not finished training (no phase-{last} checkpoint)")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return float(rows[-1]["elapsed_s"])


def run_one(
    model: str,
    steps: int,
    seed: int,
    n: int,
    out: Path,
    existing: Path | None = None,
    extra: list[str] | None = None,
) -> dict:
    import ganstack
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    cfg = load_config(f"stackgan-{model}-shapes", overrides(model, steps, seed) + (extra or []))
    last = list(cfg.train.phases)[-1]
    if existing is None and (out / "checkpoints" / f"phase-{last}.json").exists():
        existing = out  # finished by an earlier call with the same --runs
    if existing is not None:
        train_s = reuse_run(existing, cfg)
        out = existing
    else:
        t0 = time.perf_counter()
        with Trainer(cfg, out) as trainer:
            trainer.fit()
            trainer.write_figures()
        train_s = time.perf_counter() - t0
    run = ganstack.load(out)
    res = run.evaluate(n=n, metrics=["fid", "fid_scales", "is", "caption"], seed=seed)
    return {
        "config": f"stackgan-{model}-shapes",
        "overrides": extra or [],
        "phases": cfg.train.phases,
        "batch_size": cfg.train.batch_size,
        "g_updates": sum(cfg.train.phases.values()),
        "images_seen": sum(cfg.train.phases.values()) * cfg.train.batch_size,
        "outputs": run.model.image_outputs(),
        "train_seconds": round(train_s, 1),
        "trained_by": "an existing run" if existing is not None else "this benchmark",
        "metrics": tidy(res["metrics"]),
        "protocol": res["protocol"],
    }


def table(results: dict[str, dict]) -> str:
    lines = [
        "| model | G updates (images) | train time | output | FID (at 64x64) | IS | "
        "caption attr | caption all | caption attr, shuffled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m = r["metrics"]
        for out in r["outputs"]:
            sfx = "" if out == "image" else f"_{out}"
            fid = m.get(f"fid{sfx}")
            label = "final 64x64" if out == "image" else f"{out}, bilinear-up"
            is_ = f"{m['is']:.2f}" if out == "image" and "is" in m else ""
            lines.append(
                f"| {name} | {r['g_updates']} ({r['images_seen']}) | {r['train_seconds']:.0f} s "
                f"| {label} | {fid:.2f} | {is_} | {m.get(f'caption_attr{sfx}', float('nan')):.3f} "
                f"| {m.get(f'caption_all{sfx}', float('nan')):.3f} "
                f"| {m.get(f'caption_attr{sfx}_shuffled', float('nan')):.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2400, help="generator updates per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2000, help="samples per evaluation")
    p.add_argument("--runs", help="keep the run directories here (default: a temporary one)")
    p.add_argument(
        "--also-tf",
        action="store_true",
        help="also train StackGAN-v1 with "
        "model.variant=tf (D conditioned on the raw text, LeakyReLU CA)",
    )
    p.add_argument(
        "--v2-run",
        type=Path,
        help="an existing stackgan-v2-shapes run to evaluate instead of training v2",
    )
    args = p.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs) if args.runs else Path(tmp)
        todo = [("StackGAN-v1", "v1", "v1", [])]
        if args.also_tf:
            todo.append(("StackGAN-v1 (variant tf)", "v1", "v1-tf", ["model.variant=tf"]))
        todo.append(("StackGAN-v2", "v2", "v2", []))
        for name, model, folder, extra in todo:
            print(f"training {name} for {args.steps} G updates ...", flush=True)
            existing = args.v2_run if model == "v2" else None
            results[name] = run_one(
                model, args.steps, args.seed, args.n, root / folder, existing, extra
            )
            print(json.dumps(results[name]["metrics"], indent=1), flush=True)
    real = next(iter(results.values()))["protocol"].get("real_data", {})
    doc = {
        "what": "StackGAN-v1 vs StackGAN-v2 shapes demos, equal generator updates and images",
        "steps": args.steps,
        "seed": args.seed,
        "samples": args.n,
        "measured_with": "1 torch thread on a shared 2-core CPU (other jobs running)",
        "real_held_out": real,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stackgan_v1_vs_v2.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [
        "# StackGAN-v1 vs StackGAN-v2 on captioned shapes (64x64)",
        "",
        f"`python benchmarks/stackgan_v1_vs_v2.py --steps {args.steps}`: both bundled shapes "
        f"demos, batch 24, seed {args.seed}, {args.steps} generator updates each (v1: "
        f"{args.steps // 2} Stage-I + {args.steps - args.steps // 2} Stage-II steps; v2: "
        f"{args.steps} joint steps), so both see {args.steps * 24} real images. "
        f"{args.n} samples per model, conditioned on held-out captions. FID and caption "
        "consistency use ganstack's shapes classifier; coarser outputs are bilinear-upsampled "
        "to 64x64 first. Train times: 1 torch thread on a shared 2-core CPU (other jobs ran).",
        "",
        table(results),
        "",
        f"Real held-out images under the same classifier: {json.dumps(real)}",
        "",
    ]
    (RESULTS / "stackgan_v1_vs_v2.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
