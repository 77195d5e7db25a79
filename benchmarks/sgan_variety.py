"""Where the SGAN demo loses the variety of real digits: one lever at a time.

    python benchmarks/sgan_variety.py                          # every lever, seed 0
    python benchmarks/sgan_variety.py --levers base warmup --seeds 0 1
    python benchmarks/sgan_variety.py --table                  # re-render the stored JSON

Each lever is the `sgan-mnist` config with a few overrides, trained for the demo's full
schedule (1,500 independent + 300 joint steps unless the lever changes it) without the
end-of-training evaluation, in `--work/LEVER-sSEED` (a finished run there is reused, so an
interrupted benchmark continues where it stopped). Each run is then scored at n = 500 (the
held-out set's size, so the rows compare with the calibration table of the README) with
ganstack's two MNIST classifiers (`cnn` and `alt`):

- the whole stack (label -> G1 -> fc3 features -> G0 -> image), with the sampling weights
  (the EMA copy where the lever keeps one) and with the live weights;
- the bottom level alone, G0 given the real fc3 features of the 500 held-out digits: the
  variety the image level can show when its condition is real, an upper bound for the stack;
- the same at the end of the independent phase (the `phase-independent` checkpoint), which
  shows what the joint phase did.

Writes benchmarks/results/sgan_variety.{json,md}. Runs can share the 2 cores: quality does
not depend on wall time here (each run is a fixed number of steps), so two 1-thread runs at
a time are the fastest way through the levers (`--jobs 2`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _train import train_run

RESULTS = Path(__file__).parent / "results"
N = 500  # the held-out set's size

# name -> (overrides on sgan-mnist, what the lever is). Each lever spells out the settings it
# was run with, so that the table stays true when the bundled config moves.
OLD = ["train.ema_warmup=false", "train.phases.independent=1500", "train.phases.joint=300"]
WARM = ["train.ema_warmup=true", "train.phases.independent=1500", "train.phases.joint=300"]
NOW = ["train.ema_warmup=true", "train.phases.independent=1200", "train.phases.joint=600"]
# the demo's schedule since its fc3-level rounds (study 2): 200 fewer independent steps
SHORT = ["train.ema_warmup=true", "train.phases.independent=1000", "train.phases.joint=600"]
LEVERS: dict[str, tuple[list[str], str]] = {
    "base": (OLD, "sgan-mnist before this study: EMA 0.999 from the first step, 1,500 + 300"),
    "warmup": (WARM, "EMA warm-up: decay min(0.999, (1+t)/(10+t)), 0.995 at the end"),
    "ema0.99": (
        ["train.ema=0.99", *OLD[1:], "train.ema_warmup=false"],
        "a short constant EMA, decay 0.99",
    ),
    "warmup+ent50": (
        [*WARM, "model.ent_weights=[10,50]"],
        "warm-up, entropy weight 50 at the top level (10 at the bottom)",
    ),
    "warmup+cond0.1": (
        [*WARM, "model.cond_weights=[1,0.1]"],
        "warm-up, conditional weight 0.1 at the top level",
    ),
    "warmup+joint600": (NOW, "warm-up, 1,200 independent + 600 joint steps (the demo now)"),
    "demo+dnoise": (
        [*NOW, "model.d_input_noise=[0,0.2]"],
        "the demo now, Gaussian noise of std 0.2 on D1's fc3 input (the CIFAR code's)",
    ),
    "demo+coupling": (
        [*NOW, "model.joint_coupling=0.01"],
        "the demo now, G1 gets 0.01 x G0's loss gradient in the joint phase "
        "(the CIFAR code's coupling)",
    ),
    "demo+cond0.1bottom": (
        [*NOW, "model.cond_weights=[0.1,1]"],
        "the demo now, conditional weight 0.1 at the bottom level (G0's fc3 reconstruction)",
    ),
    "demo+mbstd1": (
        [*NOW, "model.minibatch_std=[1]"],
        "the demo now, a minibatch-stddev feature in D1 (the fc3 discriminator)",
    ),
    "demo+mbstd01": (
        [*NOW, "model.minibatch_std=[0,1]"],
        "the demo now, a minibatch-stddev feature in D0 and D1",
    ),
    "demo+rounds5": (
        [*NOW, "model.feature_rounds=5"],
        "the demo now, 5 update rounds of the fc3 level per independent step",
    ),
    "demo+rounds10": (
        [*NOW, "model.feature_rounds=10"],
        "the demo now, 10 update rounds of the fc3 level per independent step",
    ),
    "demo+rounds10+mbstd1": (
        [*NOW, "model.feature_rounds=10", "model.minibatch_std=[1]"],
        "the demo now, 10 fc3-level rounds and a minibatch-stddev feature in D1",
    ),
    "rounds10-1000+600": (
        [*SHORT, "model.feature_rounds=10"],
        "10 fc3-level rounds, 1,000 independent + 600 joint steps (fits the time of the demo)",
    ),
    "rounds20-h256-1000+600": (
        [*SHORT, "model.feature_rounds=20", "model.feature_hidden=256"],
        "20 fc3-level rounds with G1's hidden width 256 instead of 512 (about the cost of 10 "
        "rounds at 512), 1,000 + 600 steps",
    ),
    "rounds10-ent30bottom": (
        [*SHORT, "model.feature_rounds=10", "model.ent_weights=[30,10]"],
        "10 fc3-level rounds, 1,000 + 600 steps, entropy weight 30 at the bottom level",
    ),
    "rounds10-z0-16": (
        [*SHORT, "model.feature_rounds=10", "model.z_dims=[16,50]"],
        "10 fc3-level rounds, 1,000 + 600 steps, 16 bottom noise dimensions (the CIFAR code's)",
    ),
    "rounds10-2000+1200": (
        ["train.ema_warmup=true", "train.phases.independent=2000", "train.phases.joint=1200"]
        + ["model.feature_rounds=10"],
        "the demo's settings for twice its steps, 2,000 + 1,200 (where a longer run goes)",
    ),
    "rounds10-nojoint": (
        ["train.ema_warmup=true", "train.phases.independent=1600", "train.phases.joint=0"]
        + ["model.feature_rounds=10"],
        "10 fc3-level rounds, 1,600 independent steps and no joint phase (SGAN-no-joint)",
    ),
    "warmup+nojoint": (
        ["train.ema_warmup=true", "train.phases.independent=1800", "train.phases.joint=0"],
        "warm-up, 1,800 independent steps and no joint phase (SGAN-no-joint)",
    ),
}
# Every lever above was trained in fp32 with NCHW weights and for-each Adam steps, the
# defaults of its day; the speed defaults (study 3) are levers of their own below.
FP32 = ["train.precision=fp32", "train.channels_last=false", "train.fused_optimizers=false"]
LEVERS = {k: ([*FP32, *o], desc) for k, (o, desc) in LEVERS.items()}
FAST = ["train.precision=bf16", "train.channels_last=true", "train.fused_optimizers=true"]
LEVERS |= {
    "fast-1000+600": (
        [*SHORT, "model.feature_rounds=10", *FAST],
        "the demo's schedule (10 fc3-level rounds, 1,000 + 600 steps) under the speed "
        "defaults: bf16 autocast, NHWC weights, fused Adam",
    ),
    "fast-2000+1200": (
        ["train.ema_warmup=true", "train.phases.independent=2000", "train.phases.joint=1200"]
        + ["model.feature_rounds=10", *FAST],
        "twice the demo's steps under the speed defaults (about the old demo's minutes)",
    ),
    "fast-1800+1100": (
        ["train.ema_warmup=true", "train.phases.independent=1800", "train.phases.joint=1100"]
        + ["model.feature_rounds=10", *FAST],
        "1,800 + 1,100 steps under the speed defaults (what fits the old demo's minutes)",
    ),
    "fast-nojoint-2900": (
        ["train.ema_warmup=true", "train.phases.independent=2900", "train.phases.joint=0"]
        + ["model.feature_rounds=10", *FAST],
        "the demo's 2,900 steps all in the independent phase (SGAN-no-joint), speed defaults",
    ),
}

METRICS = ["acc", "fid", "prdc"]


def train(lever: str, seed: int, work: Path, threads: int) -> Path:
    out = work / f"{lever}-s{seed}"
    return train_run("sgan-mnist", LEVERS[lever][0], out, seed, threads, keep_outputs=True)


def _short(name: str) -> str:
    """'recall500_mnist5kalt_train4500_k3' -> 'recall_alt'."""
    head = name.split("_")[0].rstrip("0123456789")
    return head + ("_alt" if "alt" in name else "")


def score(run_dir: Path, checkpoint: str | None = None) -> dict[str, dict[str, float]]:
    import torch

    import ganstack
    from ganstack.data import load_dataset
    from ganstack.metrics.evaluate import evaluate
    from ganstack.viz import to_uint8

    run = ganstack.load(run_dir, checkpoint)
    m = run.model
    train_ds, held = load_dataset(run.config.data)

    def measure(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        res = evaluate(images, labels, train_ds, held, METRICS, calibrate=False)
        return {
            _short(k): round(v, 4)
            for k, v in res["metrics"].items()
            if not k.endswith(("_std", "_shuffled")) and not k.startswith("class")
        }

    from ganstack.metrics.prdc import prdc

    out: dict[str, dict[str, float]] = {}
    labels = torch.arange(N) % 10
    keep = m.ema
    with torch.no_grad():  # the top level's own space: fc3 features of the training digits
        fc3_train = m.encoder.segment(0, m.preprocess(train_ds.images)).flatten(1)
        fc3_held = m.encoder.segment(0, m.preprocess(held.images)).flatten(1)

    def in_fc3(h: torch.Tensor) -> dict[str, float]:
        r = prdc(fc3_train, h)
        return {"precision": round(r["precision"], 4), "recall": round(r["recall"], 4)}

    out["real held-out fc3 (fc3 space)"] = in_fc3(fc3_held)
    for weights in ["sampling", "live"] if keep is not None else ["live"]:
        m.ema = keep if weights == "sampling" else None
        with torch.no_grad():
            inputs = m.draw_inputs(N, labels.tolist(), generator=torch.Generator().manual_seed(1))
            with m.sampling_mode():
                gen = m.generate(inputs)
                stack = gen["image"]
                out[f"G1 fc3 (fc3 space), {weights}"] = in_fc3(gen["h1"])
                h1 = m.encoder.segment(0, m.preprocess(held.images)).flatten(1)
                g2 = torch.Generator().manual_seed(2)
                z0 = torch.rand(len(h1), m.cfg.z_dims[0], generator=g2)
                bottom = m.net("G")[0](h1, z0)
        out[f"stack, {weights}"] = measure(to_uint8(stack), labels)
        out[f"G0 on real fc3, {weights}"] = measure(to_uint8(bottom), held.labels)
    m.ema = keep
    if checkpoint is None:  # the same weights sampled with batch statistics (sample_bn=batch)
        mode = m.cfg.sample_bn
        m.cfg.sample_bn = "batch"
        with torch.no_grad(), m.sampling_mode():
            inputs = m.draw_inputs(N, labels.tolist(), generator=torch.Generator().manual_seed(1))
            stack = m.generate(inputs)["image"]
        m.cfg.sample_bn = mode
        out["stack, sampling, batch BN"] = measure(to_uint8(stack), labels)
    return out


COLUMNS = ["acc", "fid", "fid_alt", "precision", "recall", "recall_alt", "coverage", "coverage_alt"]


def table(results: dict) -> str:
    lines = [
        f"The `sgan-mnist` demo, one lever at a time; n = {N} samples against the 4,500 training "
        "digits, classifiers mnist5kcnn / mnist5kalt (`_alt`); each lever trained the demo's "
        "full schedule. `stack`: label -> image; `G0 on real fc3`: the bottom level given the "
        "real features of the 500 held-out digits; `fc3 space`: precision and recall of "
        "fc3 feature vectors against the training digits' fc3 (the top level's own output); "
        "`sampling`: the EMA weights the demo samples with; `live`: the trained weights; "
        "`batch BN`: sampled with batch statistics; `indep.`: at the end of the independent "
        "phase.",
        "",
        "| lever | seed | scored | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for key, rows in results["runs"].items():
        lever, seed = key.rsplit("-s", 1)
        for what, vals in rows.items():
            cells = [f"{vals[c]:.3g}" if c in vals else "–" for c in COLUMNS]
            lines.append(f"| {lever} | {seed} | {what} | " + " | ".join(cells) + " |")
    lines += ["", "Levers:", ""]
    lines += [
        f"- `{k}`: {desc} ({' '.join(o) or 'no overrides'})" for k, (o, desc) in LEVERS.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--work", default="runs/sgan_variety", help="where the runs are kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--table", action="store_true", help="only re-render the stored JSON")
    args = ap.parse_args()
    path = RESULTS / "sgan_variety.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if not args.table:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        todo = [(lever, seed) for lever in args.levers for seed in args.seeds]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            dirs = list(pool.map(lambda t: train(*t, work, args.threads), todo))
        import torch

        torch.set_num_threads(max(args.threads, 1))
        for (lever, seed), run_dir in zip(todo, dirs, strict=True):
            rows = score(run_dir)
            if "train.phases.joint=0" not in LEVERS[lever][0]:
                indep = score(run_dir, "phase-independent")
                rows.update({f"{k}, indep.": v for k, v in indep.items() if k.startswith("stack")})
            print(f"{lever} seed {seed}: {json.dumps(rows['stack, sampling'])}", flush=True)
            RESULTS.mkdir(exist_ok=True)
            # read again before writing: another invocation may have added rows meanwhile
            results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
            results["runs"][f"{lever}-s{seed}"] = rows
            path.write_text(json.dumps(results, indent=1))
    (RESULTS / "sgan_variety.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
