"""What makes a CPU demo work: one lever at a time, two seeds, scored by `ganstack eval`.

    python benchmarks/levers.py --levers v2-base v2-all --seeds 0 1
    python benchmarks/levers.py --family lapgan --seeds 0 1     # every LAPGAN lever
    python benchmarks/levers.py --table                         # re-render the stored JSON

Each lever is a bundled demo (`stackgan-v2-shapes`, `stackgan-v1-shapes`, `lapgan-mnist`,
`lapgan-shapes`, `s2gan-rooms`) with a few overrides, trained for that demo's schedule without
the end-of-training evaluation, in `--work/LEVER-sSEED` (a finished run there is reused, so an
interrupted benchmark continues where it stopped). Each lever spells out every setting it
departs from the demo *as it was before these studies* with, so the table stays true when the
bundled configs move (`base` levers pin the old settings that the demos have since changed).

Each run is scored with the evaluation protocol of `ganstack eval` (sampling seed 0): the
calibration rows at the held-out set's size (the model's samples, the same against shuffled
conditions, real held-out images, real images blurred by 1 and 2 px) and the model's own
measures (LAPGAN's per-level class fidelity, S²-GAN's structure and style measures). The table
shows the figures each issue's bars name; the JSON keeps every figure.

Quality does not depend on wall time here (each run is a fixed number of steps), so two
1-thread runs at a time are the fastest way through the levers (`--jobs 2`); the demos' own
times are measured separately, on idle cores.

Writes benchmarks/results/levers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from _train import train_run

from ganstack.environment import cpu_name

RESULTS = Path(__file__).parent / "results"

EASY = ["data.shapes_counts=[1]", "data.shapes_patterns=[plain]"]
FLIP = ["model.augment=false", "data.flip=true"]
WARM = ["train.ema_warmup=true"]
V1_OLD = [
    "data.shapes_counts=[1,2]",
    "data.shapes_patterns=[plain,stripes,dots,gradient]",
    "model.augment=true",
    "data.flip=false",
]
# The S²-GAN demo's settings since its lever study, spelled out (s2-nodrop32)
S2_NOW = [
    "model.d_dropout=0",
    "model.d_spatial_dropout=0",
    "data.resolution=32",
    "train.phases.structure=3000",
    "train.phases.fcn=300",
    "train.phases.style=2500",
    "train.phases.joint=50",
    # what the demo has changed since (the anti-collapse study, s2-wide-ms), pinned back
    "model.width=0.125",
    "model.style_width=0",
    "model.skip_rule=true",
    "model.struct_mode_seeking=0",
    "train.precision=fp32",
]
# The S²-GAN demo since the anti-collapse study (docs/s2gan.md, "Study 2")
S2_WIDE_MS = [
    *S2_NOW[:5],
    "train.phases.style=1500",
    "train.phases.joint=50",
    "model.width=0.25",
    "model.style_width=0.5",
    "model.skip_rule=false",
    "model.struct_mode_seeking=0.2",
    "model.style_mode_seeking=0.2",
    "train.precision=auto",
]
# The demos as bundled, under the speed defaults of issue 19 (bf16 autocast on CPUs with
# native bf16, NHWC where benchmarks/speed_ab.py found it faster): their quality at bf16
AUTO = ["train.precision=auto"]
NHWC = [*AUTO, "train.channels_last=true"]
V2_OLD = [*V1_OLD, "train.ema_warmup=false"]
# name -> (config, overrides, what the lever is)
LEVERS: dict[str, tuple[str, list[str], str]] = {
    # StackGAN (issue 16)
    "v2-base": ("stackgan-v2-shapes", V2_OLD, "the v2 demo before the study"),
    "v2-all": (
        "stackgan-v2-shapes",
        [*EASY, *FLIP, *WARM],
        "easy data, caption-true flips without the zoom crop, EMA warm-up",
    ),
    "v2-all-32": (
        "stackgan-v2-shapes",
        [*EASY, *FLIP, *WARM, "data.resolution=32", "model.base_size=8", "train.phases.joint=6400"],
        "as v2-all at 8 -> 16 -> 32 pixels (a step costs about a quarter), 4x the steps",
    ),
    "v2-all-32-4400": (
        "stackgan-v2-shapes",
        [*EASY, *FLIP, *WARM, "data.resolution=32", "model.base_size=8", "train.phases.joint=4400"],
        "as v2-all-32 with 4,400 steps, which fit 10 minutes",
    ),
    "hd-all": (
        "hdgan-shapes",
        [
            "data.shapes_counts=[1]",
            "data.shapes_patterns=[plain]",
            "model.augment=false",
            "data.flip=true",
            "train.ema_warmup=true",
        ],
        "HDGAN's demo with v2-all's data, flips and EMA warm-up (16 -> 32 -> 64)",
    ),
    "v1-base": ("stackgan-v1-shapes", V1_OLD, "the v1 demo before the study"),
    "v1-easyflip": (
        "stackgan-v1-shapes",
        [*EASY, *FLIP],
        "easy data, caption-true flips without the zoom crop",
    ),
    "v1-easyflip-tfcond": (
        "stackgan-v1-shapes",
        [*EASY, *FLIP, "model.ca=lrelu", "model.d_condition=embedding"],
        "easy data, caption-true flips, the TF code's conditioning: "
        "LeakyReLU CA (sigma free to shrink) and D reading the raw text",
    ),
    "v1-easyflip-kl0.1": (
        "stackgan-v1-shapes",
        [*EASY, *FLIP, "model.kl_weight=0.1"],
        "easy data, caption-true flips, KL weight 0.1 (code 2.0)",
    ),
    # LAPGAN (issue 17)
    "lm-base": (
        "lapgan-mnist",
        ["model.levels=3", "model.class_planes=plane"],
        "the MNIST demo before the study: 7 -> 14 -> 28, the class as one learned plane",
    ),
    "lm-onehot": (
        "lapgan-mnist",
        ["model.levels=3", "model.class_planes=onehot"],
        "one one-hot plane per class in every G and D (7 -> 14 -> 28)",
    ),
    "lm-onehot2": (
        "lapgan-mnist",
        ["model.levels=2", "model.class_planes=onehot"],
        "one-hot class planes, two levels: 14 -> 28",
    ),
    "lm-onehot2-concat": (
        "lapgan-mnist",
        ["model.levels=2", "model.class_planes=onehot", "model.d_input=concat"],
        "one-hot class planes, 14 -> 28, D sees the low-pass image and the "
        "residual as separate channels",
    ),
    "lm-onehot2-3k": (
        "lapgan-mnist",
        ["model.levels=2", "model.class_planes=onehot", "train.phases.independent=3000"],
        "one-hot class planes, 14 -> 28, twice the steps (3,000)",
    ),
    "lm-onehot2-proj": (
        "lapgan-mnist",
        ["model.levels=2", "model.class_planes=onehot", "model.coarse_d_condition=projection"],
        "one-hot class planes, 14 -> 28, the coarsest D conditioned by "
        "projection (Miyato & Koyama 2018) instead of input planes",
    ),
    "lm-onehot2-proj-3k": (
        "lapgan-mnist",
        [
            "model.levels=2",
            "model.class_planes=onehot",
            "model.coarse_d_condition=projection",
            "train.phases.independent=3000",
        ],
        "as lm-onehot2-proj, twice the steps (3,000)",
    ),
    "ls-base": (
        "lapgan-shapes",
        ["model.levels=4", "model.class_planes=plane"],
        "the shapes demo before the study: 8 -> 16 -> 32 -> 64, one class plane",
    ),
    "ls-onehot3": (
        "lapgan-shapes",
        ["model.levels=3", "model.class_planes=onehot"],
        "one-hot class planes, three levels: 16 -> 32 -> 64",
    ),
    "ls-onehot3-proj": (
        "lapgan-shapes",
        ["model.levels=3", "model.class_planes=onehot", "model.coarse_d_condition=projection"],
        "one-hot class planes, 16 -> 32 -> 64, the coarsest D conditioned by projection",
    ),
    "ls-easy-onehot3-proj": (
        "lapgan-shapes",
        [
            *EASY,
            "model.levels=3",
            "model.class_planes=onehot",
            "model.coarse_d_condition=projection",
        ],
        "as ls-onehot3-proj on the easy shapes (one shape, plain background)",
    ),
    # S²-GAN (issue 17)
    "s2-base": (
        "s2gan-rooms",
        [
            "model.d_dropout=0.5",
            "model.d_spatial_dropout=0.2",
            "data.resolution=64",
            "train.phases.structure=600",
            "train.phases.fcn=500",
            "train.phases.style=1200",
            "train.phases.joint=200",
        ],
        "the rooms demo before the study",
    ),
    "s2-nodrop32": (
        "s2gan-rooms",
        S2_NOW,
        "no dropout in the D's, 32x32 images, the steps moved to the "
        "Structure-GAN and Style-GAN (3,000 / 300 / 2,500 / 50)",
    ),
    "s2-nodrop32-ms": (
        "s2gan-rooms",
        [*S2_NOW, "model.style_mode_seeking=1"],
        "as s2-nodrop32, with the mode-seeking term (Mao et al. 2019, weight 1) "
        "on the Style-GAN's G (runs before 08081cd lost the term to the FCN "
        "term)",
    ),
    "s2-nodrop32-ms5": (
        "s2gan-rooms",
        [*S2_NOW, "model.style_mode_seeking=5"],
        "as s2-nodrop32-ms at weight 5",
    ),
    "s2-wide-ms": (
        "s2gan-rooms",
        S2_WIDE_MS,
        "as s2-nodrop32 with the Structure-GAN's networks at width 1/4 and the Style-GAN's "
        "at 1/2, mode-seeking terms (weight 0.2) on both generators, no skip rule, bf16 "
        "where native; 1,500 Style-GAN steps to stay within 10 minutes",
    ),
    # the bundled demos under the speed defaults (issue 19)
    "v2-demo-bf16": ("stackgan-v2-shapes", AUTO, "the v2 demo in bf16 (NCHW: faster here)"),
    "v1-demo-bf16": ("stackgan-v1-shapes", NHWC, "the v1 demo in bf16, NHWC"),
    "hd-demo-bf16": ("hdgan-shapes", NHWC, "the HDGAN demo in bf16, NHWC"),
    "lm-demo-bf16": ("lapgan-mnist", NHWC, "the LAPGAN MNIST demo in bf16, NHWC"),
    "ls-demo-bf16": ("lapgan-shapes", NHWC, "the LAPGAN shapes demo in bf16, NHWC"),
}

# Every lever before the speed defaults (issue 19) ran in fp32, as the demo configs then did;
# those configs that have since moved to `train.precision: auto` must not change what the
# older levers mean, so each of them pins fp32 unless it names a precision itself.
SINCE_AUTO = {"s2-wide-ms", *(name for name in LEVERS if name.endswith("-bf16"))}
for _name, (_config, _over, _what) in list(LEVERS.items()):
    if _name not in SINCE_AUTO and not any(o.startswith("train.precision=") for o in _over):
        LEVERS[_name] = (_config, [*_over, "train.precision=fp32"], _what)

# What each family's table shows: (column, calibration row or "measures", key pattern).
CAPTION = [
    (a, "model", rf"caption_{a}_shapescnn")
    for a in ("shape", "colour", "background", "position", "size")
]
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "stackgan": [
        *CAPTION,
        *[
            (f"{a} blind", "blind", rf"caption_{a}_shapescnn")
            for a in ("shape", "colour", "background")
        ],
        ("attr", "model", r"caption_attr_shapescnn"),
        ("attr blind", "blind", r"caption_attr_shapescnn"),
        ("FID", "model", r"fid_shapescnn_train\d+"),
        ("FID blur2", "blur2", r"fid_shapescnn_train\d+"),
    ],
    "lapgan": [
        ("acc", "model", r"acc_mnist5kcnn|acc_shapescnn"),
        ("acc alt", "model", r"acc_mnist5kalt|acc_shapesalt"),
        ("acc blind", "blind", r"acc_mnist5kcnn|acc_shapescnn"),
        ("min class share", "model", r"class_share_min_(mnist5k|shapes)cnn"),
        ("FID", "model", r"fid_(mnist5k|shapes)cnn_train\d+"),
        ("FID alt", "model", r"fid_(mnist5k|shapes)alt_train\d+"),
        ("FID alt blur2", "blur2", r"fid_(mnist5k|shapes)alt_train\d+"),
        ("recall", "model", r"recall_(mnist5k|shapes)cnn.*"),
        ("from real coarsest", "measures", r"level_acc_(mnist5k|shapes)cnn_from_level\d+"),
    ],
    "s2gan": [
        ("normals pairwise deg", "measures", r"struct_pairwise.*"),
        ("normals to nearest real deg", "measures", r"struct_nn.*"),
        ("rendered err deg (own FCN)", "measures", r"normal_err_deg_fcn_rendered"),
        ("chain err deg (own FCN)", "measures", r"normal_err_deg_fcn_chain"),
        ("style std", "measures", r"style_noise.*_chain"),
        ("FID", "model", r"fid_roomscnn.*"),
        ("FID blur2", "blur2", r"fid_roomscnn.*"),
    ],
}
METRICS = {
    "stackgan": ["fid", "caption"],
    "lapgan": ["acc", "fid", "prdc", "level_acc"],
    "s2gan": ["fid", "structure", "style_noise", "normal_consistency"],
}


def family(config: str) -> str:
    name = config.split("-")[0]
    return "stackgan" if name == "hdgan" else name  # HDGAN: the same captioned shapes


def train(lever: str, seed: int, work: Path, threads: int) -> Path:
    config, overrides, _ = LEVERS[lever]
    return train_run(config, overrides, work / f"{lever}-s{seed}", seed, threads)


def score(run_dir: Path, fam: str) -> dict:
    """The calibration rows and the model's own measures, sample counts dropped."""
    import ganstack
    from ganstack.metrics.evaluate import strip_count

    run = ganstack.load(run_dir)
    res = run.evaluate(metrics=METRICS.get(fam), seed=0, calibrate=True)
    cal = res["protocol"].get("calibration") or {"rows": {}, "n": None}
    out = {name: {k: round(v, 4) for k, v in row.items()} for name, row in cal["rows"].items()}
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    out["measures"] = {strip_count(k): round(v, 4) for k, v in res["metrics"].items()}
    out["n"] = cal["n"]
    out["train_s"] = rows[-1]["elapsed_s"] if rows else None
    return out


def cell(rows: dict, where: str, pattern: str) -> str:
    # The last match in name order: for "from_level\d+", the coarsest level.
    keys = sorted(k for k in rows.get(where, {}) if re.fullmatch(pattern, k))
    return f"{rows[where][keys[-1]]:.3g}" if keys else "–"


def table(results: dict) -> str:
    lines = [
        f"Machine: {results.get('cpu', '?')} (the last run; each run records its CPU; the "
        "figures depend on the steps, not the machine). Sampling seed 0; calibration rows "
        "at n = the "
        "held-out size. `blind`: the same samples against shuffled conditions; `blur2`: "
        "real held-out images blurred by 2 px.",
        "",
    ]
    for fam, cols in COLUMNS.items():
        keys = [k for k in results["runs"] if family(LEVERS[k.rsplit("-s", 1)[0]][0]) == fam]
        if not keys:
            continue
        lines += [
            f"## {fam}",
            "",
            "| lever | seed | " + " | ".join(c for c, _, _ in cols) + " |",
            "|---|---|" + "---|" * len(cols),
        ]
        for key in keys:
            lever, seed = key.rsplit("-s", 1)
            rows = results["runs"][key]
            lines.append(
                f"| {lever} | {seed} | " + " | ".join(cell(rows, w, p) for _, w, p in cols) + " |"
            )
        lines.append("")
        real = results["runs"][keys[0]].get("real", {})
        if real:
            lines += [
                "Real held-out images (first lever's data): "
                + ", ".join(
                    f"{c} {cell({'real': real}, 'real', p)}" for c, w, p in cols if w == "model"
                ),
                "",
            ]
    lines += ["Levers:", ""]
    lines += [
        f"- `{k}`: {desc} (`{cfg}` {' '.join(o) or 'as bundled'})"
        for k, (cfg, o, desc) in LEVERS.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levers", nargs="+", choices=list(LEVERS))
    ap.add_argument(
        "--family",
        choices=sorted({family(c) for c, _, _ in LEVERS.values()}),
        help="every lever of one demo family",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--work", default="runs/levers", help="where the runs are kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--table", action="store_true", help="only re-render the stored JSON")
    args = ap.parse_args()
    path = RESULTS / "levers.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if not args.table:
        levers = args.levers or [
            k for k, (c, _, _) in LEVERS.items() if args.family in (None, family(c))
        ]
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        todo = [(lever, seed) for lever in levers for seed in args.seeds]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            dirs = list(pool.map(lambda t: train(*t, work, args.threads), todo))
        import torch

        torch.set_num_threads(max(args.threads, 1))
        for (lever, seed), run_dir in zip(todo, dirs, strict=True):
            key = f"{lever}-s{seed}"
            row = score(run_dir, family(LEVERS[lever][0]))
            print(f"{key}: {json.dumps(row)}", flush=True)
            # Re-read before writing: other invocations may have scored other levers meanwhile.
            results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
            results["cpu"] = f"{cpu_name()}, {os.cpu_count()} cores"
            results["runs"][key] = row | {"cpu": cpu_name()}
            RESULTS.mkdir(exist_ok=True)
            path.write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "levers.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
