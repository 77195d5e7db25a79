"""LAPGAN against a one-level DCGAN of equal parameter count and equal budget.

    python benchmarks/lapgan_vs_dcgan.py                  # MNIST-5k and shapes, seed 0 (~15-25 min)
    python benchmarks/lapgan_vs_dcgan.py --seeds 0 1 2 --mnist-steps 1500 --shapes-steps 1000

For each dataset the LAPGAN runs from its bundled config (`lapgan-mnist`: 7 -> 14 -> 28;
`lapgan-shapes`, by default shrunk to 8 -> 16 -> 32 so that it fits the time limit, see
--shapes-resolution) and the DCGAN (`dcgan-mnist`, `dcgan-shapes`) gets the widths that match
the LAPGAN's generator and discriminator parameter counts, searched here for the resolution in
use. Budget: both train the same number of steps on the same batch size, so both see the
same number of real images (steps x batch). A LAPGAN step is one D update and one G update of
every level on that batch (each level on its own scale); a DCGAN step is one D and one G update.
Wall time is reported as well: per image seen, the LAPGAN costs more.

Measures, on class-balanced samples with ganstack's own domain classifier (trained on the
training split, cached): conditional accuracy, IS, FID against the training images, and for
LAPGAN every coarser level's FID, both against the full-resolution training images
(`fid_scales`) and against the training images at that level's scale (`fid_levels`,
"matched"). Writes benchmarks/results/lapgan_vs_dcgan.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
]


def dataset_overrides(
    dataset: str, resolution: int, num_images: int
) -> tuple[list[str], int | None]:
    """Data overrides and LAPGAN levels for a dataset (shapes: coarsest level 8x8; MNIST: the
    bundled config's levels)."""
    if dataset == "mnist":
        return [], None
    levels = {16: 2, 32: 3, 64: 4}[resolution]
    return [f"data.resolution={resolution}", f"data.num_images={num_images}"], levels


def _bisect(count, target: int, lo: int = 1, hi: int = 512) -> int:  # type: ignore[no-untyped-def]
    """The width whose parameter count (increasing in the width) is closest to ``target``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - target))


def matched_widths(lap_model, info) -> dict:  # type: ignore[no-untyped-def]
    """DCGAN g_dim / d_dim whose G and D parameter counts are closest to the LAPGAN's."""
    from ganstack.models.dcgan import Discriminator, Generator, count_parameters

    c, h, _ = info.shape
    k = info.num_classes
    z = 100
    g_target, d_target = count_parameters(lap_model.G), count_parameters(lap_model.D)
    g_dim = _bisect(lambda w: count_parameters(Generator(z, k, w, c, h)), g_target)
    d_dim = _bisect(lambda w: count_parameters(Discriminator(k, w, c, h)), d_target)
    return {
        "g_dim": g_dim,
        "d_dim": d_dim,
        "lapgan_params": {"G": g_target, "D": d_target},
        "dcgan_params": {
            "G": count_parameters(Generator(z, k, g_dim, c, h)),
            "D": count_parameters(Discriminator(k, d_dim, c, h)),
        },
    }


_DATA: dict = {}


def run_one(
    config: str, overrides: list[str], seed: int, out: Path, n: int, metrics: list[str]
) -> dict:
    import ganstack
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.train.trainer import Trainer

    cfg = load_config(config, overrides + COMMON + [f"train.seed={seed}"])
    key = repr(cfg.data)  # both models of a dataset train on the same split, made once
    if key not in _DATA:
        _DATA[key] = load_dataset(cfg.data)
    t0 = time.perf_counter()
    Trainer(cfg, out, datasets=_DATA[key]).fit()
    train_s = time.perf_counter() - t0
    res = ganstack.load(out).evaluate(n=n, metrics=metrics, seed=seed)
    row = {k: v for k, v in res["metrics"].items() if not k.endswith("_std")}
    # What real held-out images score under the same classifier (the ceiling).
    row["real_data"] = res["protocol"].get("real_data", {})
    steps = sum(cfg.train.phases.values())
    row.update(
        train_seconds=round(train_s, 1),
        images_seen=steps * cfg.train.batch_size,
        images_per_s=round(steps * cfg.train.batch_size / train_s, 1),
    )
    print(
        f"  {config} seed {seed}: "
        + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k != "real_data"
        ),
        flush=True,
    )
    return row


def short(name: str) -> str:
    """'fid2k_mnist5kcnn_train4500_level2_matched' -> 'fid_level2_matched'."""
    head = name.split("_")[0].rstrip("0123456789k")
    tail = [p for p in name.split("_")[1:] if p.startswith("level") or p == "matched"]
    return "_".join([head, *tail])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--mnist-steps", type=int, default=800)
    ap.add_argument("--shapes-steps", type=int, default=2000)
    ap.add_argument(
        "--shapes-resolution",
        type=int,
        default=32,
        choices=[16, 32, 64],
        help="64 is the bundled config's 8 -> 16 -> 32 -> 64 (slow on a CPU)",
    )
    ap.add_argument("--shapes-images", type=int, default=2400)
    ap.add_argument("--n", type=int, default=2000, help="samples per evaluation")
    ap.add_argument(
        "--datasets", nargs="+", default=["mnist", "shapes"], choices=["mnist", "shapes"]
    )
    args = ap.parse_args()

    import torch

    from ganstack.config import load_config
    from ganstack.models import DataInfo, build_model

    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    report: dict = {
        "args": vars(args),
        "machine": f"{platform.machine()}, 1 torch thread",
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets:
            steps = args.mnist_steps if ds == "mnist" else args.shapes_steps
            data, levels = dataset_overrides(ds, args.shapes_resolution, args.shapes_images)
            lap_over = data + [f"train.phases.independent={steps}"]
            lap_over += [f"model.levels={levels}"] if levels else []
            lap_cfg = load_config(f"lapgan-{ds}", lap_over)
            levels = lap_cfg.model.levels
            size = 28 if ds == "mnist" else args.shapes_resolution
            info = DataInfo((1 if ds == "mnist" else 3, size, size), 10 if ds == "mnist" else 24)
            match = matched_widths(build_model(lap_cfg.model, info), info)
            dc_over = data + [
                f"model.g_dim={match['g_dim']}",
                f"model.d_dim={match['d_dim']}",
                f"train.phases.train={steps}",
            ]
            print(
                f"{ds}: {steps} steps x batch {lap_cfg.train.batch_size}; widths {match}",
                flush=True,
            )
            entry = {
                "steps": steps,
                "batch_size": lap_cfg.train.batch_size,
                "resolution": size,
                "levels": levels,
                "widths": match,
                "runs": {},
            }
            lap_metrics = ["acc", "is", "fid", "fid_scales", "fid_levels"]
            for model, config, over, mets in [
                ("LAPGAN", f"lapgan-{ds}", lap_over, lap_metrics),
                ("DCGAN", f"dcgan-{ds}", dc_over, ["acc", "is", "fid"]),
            ]:
                rows = []
                for seed in args.seeds:
                    out = Path(tmp) / f"{ds}-{model}-{seed}"
                    rows.append(run_one(config, over, seed, out, args.n, mets))
                entry["runs"][model] = rows
            report["datasets"][ds] = entry
    report["total_seconds"] = round(time.perf_counter() - t_all, 1)
    (RESULTS / "lapgan_vs_dcgan.json").write_text(json.dumps(report, indent=1))
    md = render(report)
    (RESULTS / "lapgan_vs_dcgan.md").write_text(md)
    print(md)


def _cell(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}" if abs(vals[0]) < 100 else f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def render(report: dict) -> str:
    a = report["args"]
    lines = [
        f"LAPGAN vs a one-level DCGAN of matched parameter count, equal budget (same steps x "
        f"batch = same real images seen). Seeds {a['seeds']} (mean ± std when more than one); "
        f"{a['n']} class-balanced samples per evaluation; ganstack's domain classifiers; FID "
        f"against the training split. Trained with 1 torch thread on a shared 2-core CPU "
        f"while other jobs ran, so the wall times are only comparable with each other. Total "
        f"{report['total_seconds'] / 60:.1f} min.",
        "",
    ]
    for ds, e in report["datasets"].items():
        w = e["widths"]
        lp, dp = w["lapgan_params"], w["dcgan_params"]
        lines += [
            f"### {ds}, {e['resolution']}x{e['resolution']}"
            f"{' (LAPGAN ' + str(e['levels']) + ' levels)' if e['levels'] else ''}: "
            f"{e['steps']} steps x batch {e['batch_size']}",
            "",
            f"Parameters: LAPGAN G {lp['G']:,} / D {lp['D']:,}; DCGAN (g_dim {w['g_dim']}, "
            f"d_dim {w['d_dim']}) G {dp['G']:,} / D {dp['D']:,}.",
            "",
        ]
        lap = e["runs"]["LAPGAN"]
        level_keys = sorted(
            {k for r in lap for k in r if "_level" in k}, key=lambda k: (k.endswith("matched"), k)
        )
        head = [
            "model",
            "acc",
            "IS",
            "FID",
            *[short(k) for k in level_keys],
            "images seen",
            "train s",
            "img/s",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, rows in e["runs"].items():
            keys = {short(k): k for r in rows for k in r}
            cells = [model]
            for metric in ("acc", "is", "fid"):
                cells.append(_cell(rows, keys[metric]) if metric in keys else "n/a")
            cells += [_cell(rows, k) for k in level_keys]
            cells += [
                str(rows[0]["images_seen"]),
                _cell(rows, "train_seconds"),
                _cell(rows, "images_per_s"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        real = lap[0].get("real_data", {})
        if real:  # the same measures on the held-out real images
            by = {k.rsplit("_", 1)[-1] if "_fid_" not in k else "fid": v for k, v in real.items()}
            cells = ["real held-out images"] + [
                f"{by[m]:.3f}" if m in by else "n/a" for m in ("acc", "is", "fid")
            ]
            cells += ["" for _ in level_keys] + ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "`fid_levelK`: level K's samples enlarged to full size against the "
        "full-resolution training images; `fid_levelK_matched`: against the training "
        "images brought to level K's scale (0 = as good as real data at that scale)."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
