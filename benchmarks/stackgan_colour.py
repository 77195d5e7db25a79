"""StackGAN-v2's colour-consistency term, on and off, measured on the embedded shapes.

    python benchmarks/stackgan_colour.py                  # alpha 50 vs 0, seeds 0 1, 1,200 steps
    python benchmarks/stackgan_colour.py --steps 2400 --seeds 0 1 2

Trains the unconditional shapes demo (`stackgan-v2-shapes-uncond`: 16 -> 32 -> 64) with the
colour-consistency weight alpha = 50 (the code's unconditional setting) and alpha = 0, every
other setting and the budget equal, and measures on 2,000 samples (EMA generator):

- colour distance between neighbouring scales of the same sample: mean over samples of
  ||mu_fine - mu_coarse||^2 (pixel means) and ||Sigma_fine - Sigma_coarse||_F^2 (3x3 pixel
  covariances), pixels in [-1, 1] (the quantities the term penalises);
- FID of every scale (coarser ones enlarged bilinearly to 64) with ganstack's shapes classifier.

Writes benchmarks/results/stackgan_colour.{json,md}; the same distances of real images (their
bilinear down-scales) are given for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run_one(alpha: float, steps: int, seed: int, out: Path) -> dict:
    import ganstack
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    cfg = load_config(
        "stackgan-v2-shapes-uncond",
        [
            f"model.colour_weight={alpha}",
            f"train.phases.joint={steps}",
            f"train.seed={seed}",
            "train.progress=false",
            "train.tensorboard=false",
            "train.sample_every=0",
            "train.checkpoint_every=0",
            "eval.n=2000",
        ],
    )
    t0 = time.perf_counter()
    with Trainer(cfg, out) as t:
        t.fit()
    res = ganstack.load(out).evaluate(metrics=["colour", "fid", "fid_scales"], seed=seed)
    m = {
        k.replace("_shapescnn", "").replace("_train5520", ""): v for k, v in res["metrics"].items()
    }
    m["seconds"] = time.perf_counter() - t0
    print(
        f"alpha {alpha} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()), flush=True
    )
    return m


def real_distances() -> dict:
    """The same colour distances for real images and their bilinear down-scales."""
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.data.augment import multiscale_batch
    from ganstack.losses import colour_mean_cov

    cfg = load_config("stackgan-v2-shapes-uncond")
    train, _ = load_dataset(cfg.data)
    scales = multiscale_batch(train.images[:2000], [16, 32, 64], augment=False)
    out = {}
    names = ["level2", "level1", "image"]  # the model's outputs, coarse to fine
    for lo, hi, a, b in zip(names, names[1:], scales, scales[1:]):
        (m0, c0), (m1, c1) = colour_mean_cov(a.double()), colour_mean_cov(b.double())
        out[f"colour_mean2k_{lo}_{hi}"] = float((m1 - m0).pow(2).sum(1).mean())
        out[f"colour_cov2k_{lo}_{hi}"] = float((c1 - c0).pow(2).sum((1, 2)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200, help="training steps per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--alphas", type=float, nargs="+", default=[50.0, 0.0])
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in args.alphas:
            for seed in args.seeds:
                out = Path(tmp) / f"alpha{alpha:g}-{seed}"
                runs.setdefault(f"{alpha:g}", []).append(run_one(alpha, args.steps, seed, out))
    # Outputs named by level (docs/architecture.md). Results stored before the rename name
    # level2 and level1 scale0 and scale1; this script writes its results afresh.
    keys = [
        "colour_mean2k_level2_level1",
        "colour_mean2k_level1_image",
        "colour_cov2k_level2_level1",
        "colour_cov2k_level1_image",
        "fid2k_level2",
        "fid2k_level1",
        "fid2k",
    ]
    table = {}
    for alpha, rows in runs.items():
        table[alpha] = {}
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                table[alpha][k] = {"mean": statistics.mean(vals), "std": sd, "n": len(vals)}
    real = real_distances()
    (RESULTS / "stackgan_colour.json").write_text(
        json.dumps(
            {"steps": args.steps, "seeds": args.seeds, "runs": runs, "table": table, "real": real},
            indent=1,
        )
    )
    head = (
        "| alpha | mean dist 16->32 | mean dist 32->64 | cov dist 16->32 | cov dist 32->64 "
        "| FID 16 | FID 32 | FID 64 |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for alpha, t in table.items():
        cells = [
            f"{t[k]['mean']:.4f} ± {t[k]['std']:.4f}"
            if k.startswith("colour")
            else f"{t[k]['mean']:.1f} ± {t[k]['std']:.1f}"
            for k in keys
            if k in t
        ]
        lines.append(f"| {alpha} | " + " | ".join(cells) + " |")
    lines.append(
        "| real images (down-scales) | "
        + " | ".join(f"{real[k]:.4f}" for k in keys[:4])
        + " | | | |"
    )
    md = (
        f"StackGAN-v2 unconditional shapes demo, {args.steps} steps per run, seeds "
        f"{args.seeds}, mean ± std over seeds; 2,000 samples; colour distances between "
        f"neighbouring scales of the same sample (pixels in [-1, 1]); FID with the shapes "
        f"classifier against the training split, coarser scales enlarged to 64.\n\n"
        + head
        + "\n".join(lines)
        + "\n"
    )
    (RESULTS / "stackgan_colour.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
