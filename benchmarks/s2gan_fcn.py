"""S²-GAN's FCN constraint on the procedural rooms: the Style-GAN with and without it.

    python benchmarks/s2gan_fcn.py                  # 1 seed, 500 FCN + 600 Style-GAN steps
    python benchmarks/s2gan_fcn.py --seeds 0 1 2 --style-steps 1200

Both variants train from the `s2gan-rooms` demo config under the same budget: the `fcn` phase
(identical in both: same seed, and it runs before the Style-GAN), then the `style` phase with
`model.fcn_weight` 0.1 (the code's style-gan-fcn) or 0 (style-gan-nofcn, the FCN not run). The
Structure-GAN and joint phases are left out: the measure conditions the Style-GAN on real
held-out normals.

Measures, on the 500 held-out rooms:

- normal consistency: the mean angle (degrees) between the normals an FCN predicts from the
  Style-GAN's image of a held-out normal map and that normal map (at the FCN's 16x16 output).
  Judged twice: by the model's own FCN (the one whose loss the constrained generator
  minimised) and by an *independent judge*, an FCN of the same design trained separately
  (another seed) on the training split and never seen by either generator. The same FCNs'
  error on the real images of those frames is the floor to compare with;
- image FID of those rendered images against the training split, in the feature space of
  a rooms classifier (ganstack's domain classifier trained for 4 epochs to count the visible
  boxes).

Writes benchmarks/results/s2gan_fcn.{json,md} and a figure s2gan_fcn.png (rows: held-out
normals, their real images, the renderings with and without the constraint; first seed).

    python benchmarks/s2gan_fcn.py --run runs/s2gan-rooms   # judge a trained run instead

``--run`` judges a finished run (a whole S²-GAN, e.g. `ganstack train s2gan-rooms`) with the
same independent judge (FCN seed 1000, ``--fcn-steps``): its renderings of held-out normal maps
and its full chain (Structure-GAN normals, then the Style-GAN), on ``--n`` frames; prints the
figures and writes them to RUN/judge.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CLASSIFIER_EPOCHS = 4
VARIANTS = {"with FCN constraint (0.1)": 0.1, "without (0)": 0.0}


def _common(seed: int, fcn_steps: int, style_steps: int) -> list[str]:
    return [
        f"train.seed={seed}",
        "train.num_threads=1",
        "train.progress=false",
        "train.tensorboard=false",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.phases.structure=0",
        f"train.phases.fcn={fcn_steps}",
        f"train.phases.style={style_steps}",
        "train.phases.joint=0",
    ]


def image_fid(images, train, held) -> float:  # type: ignore[no-untyped-def]
    """FID against the training split in a rooms classifier's features (a short recipe: the
    default 15-epoch one costs ~10 CPU-minutes at 64x64)."""
    from ganstack.metrics.classifier import ClassifierRecipe, get_classifier
    from ganstack.metrics.fid import frechet_distance
    from ganstack.metrics.stats import FeatureStats

    clf, _ = get_classifier(train, held, ClassifierRecipe(epochs=CLASSIFIER_EPOCHS))
    stats = []
    for x in (images, train.images):
        st = FeatureStats()
        st.append(clf.predict(x)[0])
        stats.append(st.mean_cov())
    return frechet_distance(*stats[0], *stats[1])


def train_judge(seed: int, fcn_steps: int, out: Path):  # type: ignore[no-untyped-def]
    """An FCN trained on its own (seed + 1000): the independent judge."""
    import ganstack
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    cfg = load_config("s2gan-rooms", _common(seed + 1000, fcn_steps, 0))
    if not _done(out, "fcn"):
        Trainer(cfg, out, resume=True).fit()
    return ganstack.load(out).model


def _done(out: Path, phase: str) -> bool:
    """A finished run in ``out`` (from an earlier --keep): reused, not trained again."""
    return (out / "checkpoints" / f"phase-{phase}.json").is_file()


def run_one(
    weight: float,
    seed: int,
    fcn_steps: int,
    style_steps: int,
    judge,
    n: int,  # type: ignore[no-untyped-def]
    out: Path,
) -> tuple[dict, list]:
    import ganstack
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.viz import to_uint8

    cfg = load_config(
        "s2gan-rooms", _common(seed, fcn_steps, style_steps) + [f"model.fcn_weight={weight}"]
    )
    from ganstack.train.trainer import Trainer

    if not _done(out, "style"):
        Trainer(cfg, out, resume=True).fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = rows[-1]["elapsed_s"]
    model = ganstack.load(out).model
    train, held = load_dataset(cfg.data)
    res = model.normal_consistency(held, n, seed=seed, chain=False)
    res.update(
        model.normal_consistency(held, n, seed=seed, judge=judge, prefix="judge", chain=False)
    )
    # Image FID of the rendered held-out normal maps (the same frames as above).
    import torch

    idx = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))[:n]
    images = model.render(
        held.extras["normals"][idx], generator=torch.Generator().manual_seed(seed)
    )
    res[f"fid{len(idx)}_rooms{CLASSIFIER_EPOCHS}ep"] = image_fid(to_uint8(images), train, held)
    res["train_seconds"] = round(train_s, 1)
    if weight == 0.0:  # the floor: real held-out images of the same frames
        res[f"fid{len(idx)}_rooms{CLASSIFIER_EPOCHS}ep_real_held_out"] = image_fid(
            held.images[idx], train, held
        )
    figure = [
        held.extras["normals"][idx[:10]].float() / 255,
        held.images[idx[:10]].float() / 255,
        images[:10],
    ]
    return res, figure


def judge_run(run: Path, fcn_steps: int, n: int, keep: str | None) -> dict:
    """The independent judge's normal consistency of a finished run (rendered and chain)."""
    import ganstack
    from ganstack.data import load_dataset
    from ganstack.train.trainer import load_run_config

    with tempfile.TemporaryDirectory() as tmp:
        judge = train_judge(0, fcn_steps, Path(keep or tmp) / "judge-0")
        model = ganstack.load(run).model
        _, held = load_dataset(load_run_config(run).data)
        res = model.normal_consistency(held, n, seed=0, judge=judge, prefix="judge")
    res = {k: round(v, 2) for k, v in res.items()}
    (run / "judge.json").write_text(json.dumps({"fcn_steps": fcn_steps, "n": n, **res}, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="judge this finished run instead of training the variants")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fcn-steps", type=int, default=500, help="FCN phase steps (demo: 500)")
    ap.add_argument(
        "--style-steps", type=int, default=600, help="Style-GAN phase steps (demo: 1200)"
    )
    ap.add_argument("--n", type=int, default=500, help="held-out frames measured")
    ap.add_argument(
        "--keep",
        help="keep the run directories in this folder; finished runs "
        "found there are reused (add seeds without retraining the others)",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.run:
        print(judge_run(Path(args.run), args.fcn_steps, args.n, args.keep))
        return
    rows: dict[str, list[dict]] = {k: [] for k in VARIANTS}
    figure: list = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for seed in args.seeds:
            judge = train_judge(seed, args.fcn_steps, root / f"judge-{seed}")
            for name, weight in VARIANTS.items():
                out = root / f"s{seed}-w{weight}"
                r, fig = run_one(weight, seed, args.fcn_steps, args.style_steps, judge, args.n, out)
                rows[name].append(r)
                if seed == args.seeds[0]:
                    figure = fig if not figure else figure + fig[2:]
                print(
                    f"seed {seed} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
                    flush=True,
                )
    summary = {}
    for name, rs in rows.items():
        keys = rs[0].keys()
        summary[name] = {
            k: {
                "mean": statistics.fmean(r[k] for r in rs),
                "std": statistics.pstdev([r[k] for r in rs]) if len(rs) > 1 else 0.0,
                "runs": [r[k] for r in rs],
            }
            for k in keys
        }
    protocol = {
        "config": "s2gan-rooms (32x32 normals, 64x64 images, width 0.125, small FCN)",
        "seeds": args.seeds,
        "fcn_steps": args.fcn_steps,
        "style_steps": args.style_steps,
        "batch_size": 64,
        "held_out_frames": args.n,
        "judge": "a second FCN of the same design, trained alone with seed + 1000",
        "threads": 1,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "s2gan_fcn.json").write_text(
        json.dumps({"protocol": protocol, "results": summary}, indent=1)
    )
    (RESULTS / "s2gan_fcn.md").write_text(markdown(summary, protocol))
    from ganstack.viz import save_grid

    save_grid(torch.stack(figure), RESULTS / "s2gan_fcn.png")
    print(markdown(summary, protocol))


def markdown(summary: dict, protocol: dict) -> str:
    def num(x: float) -> str:
        return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"

    def cell(d: dict) -> str:
        return f"{num(d['mean'])} ± {num(d['std'])}" if len(d["runs"]) > 1 else num(d["mean"])

    names = list(summary)
    keys = list(summary[names[0]])
    fid_key = next((k for k in keys if k.startswith("fid") and "real" not in k), None)
    cols = [
        ("own FCN: rendered", "normal_err_deg_fcn_rendered"),
        ("own FCN: real images", "normal_err_deg_fcn_real"),
        ("judge FCN: rendered", "normal_err_deg_judge_rendered"),
        ("judge FCN: real images", "normal_err_deg_judge_real"),
    ]
    if fid_key:
        cols.append((f"image FID ({fid_key})", fid_key))
    lines = [
        "Normal consistency (mean angular error in degrees, lower is better) of the Style-GAN "
        f"conditioned on {protocol['held_out_frames']} held-out room normal maps; "
        f"{protocol['fcn_steps']} FCN + {protocol['style_steps']} Style-GAN steps, batch 64, "
        f"seeds {protocol['seeds']} ({len(protocol['seeds'])} seed(s); ± is the std over "
        "seeds). 'real images': the same FCN on the real images of those frames.",
        "",
        "| Style-GAN | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(summary[name][k]) for _, k in cols) + " |")
    for name in names:
        ref = next((k for k in summary[name] if k.endswith("_real_held_out")), None)
        if ref:
            lines.append(
                "| real held-out images (reference) | "
                + " | ".join("" for _ in cols[:-1])
                + f" | {cell(summary[name][ref])} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
