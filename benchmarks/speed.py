"""Training and sampling speed of every bundled config, against this machine's own matmul peak.

    python benchmarks/speed.py                 # all bundled configs
    python benchmarks/speed.py sgan-mnist      # some of them
    python benchmarks/speed.py stackgan-v2-birds --steps 1 --repeats 3 --out speed-birds
    python benchmarks/speed.py stackgan-v2-birds --steps 1 --repeats 3 --set train.precision=bf16 \
        --tag bf16 --out speed-stackgan-v2-birds-bf16

For each config, in a fresh subprocess (so peak memory is its own): training images/s (median
of several timed runs of a few steps, after warm-up), sampling images/s, peak resident memory,
FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``) and the achieved
FLOP/s as a fraction of the fp32 matmul peak measured in the same run. Models are freshly
initialised (speed does not depend on the weights) and trained on the config's real dataset;
a paper config whose files are not here (CUB, LSUN, NYU, ...) trains on random images of the
right size instead (and random 1,024-d caption embeddings for text models), as the official
code's own speed runs did ("random inputs, no data loading"). By default the configs on
embedded data are measured; name paper configs to add them.
Writes ``benchmarks/results/speed.json``, ``speed.md`` (``--out`` names them) and a profile
of the top operators of a training step of each config (``profile-CONFIG.txt``). Run it on an
otherwise idle machine: another process on the same cores changes every figure.

``--set KEY=VALUE`` overrides each config (as on the command line of ``ganstack train``).
Each config trains with its own speed settings as the trainer applies them on this CPU
(``train.precision``, where ``auto`` means bf16 on a CPU with native bf16; ``channels_last``;
``fused_optimizers``), and the row records the precision used. A bf16 step runs under
bfloat16 autocast, and the bf16 matmul peak is measured too: its fraction is the one that
matches the precision. ``--tag`` names the profile files (``profile-CONFIG-TAG.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def matmul_peak(n: int = 2048, repeats: int = 7, dtype: str = "float32") -> float:
    """Median GFLOP/s of an n x n matrix product (fp32 unless ``dtype`` says otherwise)."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


FLOP_OPS = ("conv", "mm", "addmm", "bmm", "baddbmm", "linear", "matmul")


def _flop_op(key: str) -> bool:
    name = key.removeprefix("aten::")
    return (
        any(
            name == k or name.startswith(k) or name.endswith(k) or f"{k}_" in name for k in FLOP_OPS
        )
        or "convolution" in name
    )


def training_data(cfg):  # type: ignore[no-untyped-def]
    """The config's training set, or random data of its size when its files are absent."""
    import torch

    from ganstack.data import ImageDataset, load_dataset
    from ganstack.errors import GanstackError

    try:
        return load_dataset(cfg.data)[0], "real"
    except GanstackError:  # the paper's files are not here: random data of the same shape
        labelled = cfg.data.name in ("cifar10", "svhn")  # 32x32, 10 classes
        res = cfg.data.resolution or (32 if labelled else 256)
        n = 4 * cfg.train.batch_size
        g = torch.Generator().manual_seed(0)
        extras = {}
        if getattr(cfg.model, "text", False):
            extras["embeddings"] = torch.randn(n, 10, 1024, generator=g)
        images = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=g)
        if labelled:
            train = ImageDataset(images, torch.arange(n) % 10, 10, name="random")
        else:
            train = ImageDataset(images, extras=extras, name="random")
        return train, "random"


def measure(name: str, steps: int, repeats: int, overrides: list[str], tag: str = "") -> dict:
    """Runs inside the subprocess: one config's figures."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ganstack.config import load_config
    from ganstack.data import Batcher
    from ganstack.models import DataInfo, build_model
    from ganstack.models.base import Step
    from ganstack.train.precision import apply_levers, resolve_precision, step_autocast

    torch.manual_seed(0)
    cfg = load_config(name, overrides)
    train, data = training_data(cfg)
    model = build_model(cfg.model, DataInfo.of(train))
    # the speed settings, as the trainer applies them (precision auto: as this CPU decides)
    precision = resolve_precision(cfg.train.precision, torch.device("cpu"))
    apply_levers(model, cfg.train.channels_last, cfg.train.fused_optimizers)
    batcher = Batcher(train, cfg.train.batch_size, 0)
    phases = [p for p, s in cfg.train.phases.items() if s > 0]
    phase = phases[-1]  # the last phase (SGAN: joint) exercises every level
    model.enter_phase(phase, fresh=True)
    model.train()
    step = 0

    def run(k: int) -> None:
        nonlocal step
        for _ in range(k):
            with step_autocast("cpu", precision):
                model.train_step(
                    batcher.batch(step),
                    phase,
                    Step(step, phase, step, cfg.train.batch_size, 1, len(train)),
                )
            step += 1

    run(3)  # warm-up
    with FlopCounterMode(display=False) as fc:
        run(1)
    flops = fc.get_total_flops()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times) / steps
    with torch.profiler.profile() as prof:
        run(2)
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=12)
    (RESULTS / f"profile-{name}{'-' + tag if tag else ''}.txt").write_text(table)
    # Where the time goes: kernels that do the FLOPs (convolutions and matrix products) against
    # everything else (normalisation, activations, copies, optimizer updates, dispatch).
    aten = [e for e in averages if e.key.startswith("aten::")]
    total_us = sum(e.self_cpu_time_total for e in aten) or 1.0
    flop_us = sum(e.self_cpu_time_total for e in aten if _flop_op(e.key))
    ops_per_step = sum(e.count for e in aten) / 2
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before sampling
    n_sample = 1000
    # Sampling batches of about 500 images at 64x64 and fewer at larger sizes: memory then
    # stays near the training step's instead of growing with the image size.
    side = max(model.info.shape[-1], 1)
    sample_batch = max(10, min(500, 500 * 64 * 64 // (side * side)))
    with step_autocast("cpu", precision):
        model.sample(100, batch_size=sample_batch)
        t = time.perf_counter()
        model.sample(n_sample, batch_size=sample_batch)
        sample_s = time.perf_counter() - t
    peak = matmul_peak()
    achieved = flops / step_s / 1e9
    extra = {}
    if precision == "bf16":
        bf16_peak = matmul_peak(dtype="bfloat16")
        extra = {
            "bf16_matmul_peak_gflop_s": round(bf16_peak, 1),
            "fraction_of_bf16_peak": round(achieved / bf16_peak, 3),
        }
    return {
        "overrides": overrides,
        "config": name,
        "model": cfg.model.name,
        "phase_timed": phase,
        "precision": precision,
        "data": data,
        "batch_size": cfg.train.batch_size,
        "train_images_per_s": round(cfg.train.batch_size / step_s, 1),
        "train_step_ms": round(step_s * 1000, 2),
        "sample_images_per_s": round(n_sample / sample_s, 1),
        "gflop_per_step": round(flops / 1e9, 3),
        "achieved_gflop_s": round(achieved, 1),
        "matmul_peak_gflop_s": round(peak, 1),
        "fraction_of_peak": round(achieved / peak, 3),
        "train_peak_rss_mib": round(train_rss, 1),
        "sample_batch": sample_batch,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "conv_matmul_time_share": round(flop_us / total_us, 3),
        "conv_matmul_gflop_s": round(flops / (step_s * flop_us / total_us) / 1e9, 1),
        "aten_ops_per_step": int(ops_per_step),
        "timed_runs": repeats,
        "steps_per_run": steps,
        "threads": torch.get_num_threads(),
        **extra,
    }


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Speed of the bundled configs (see module doc).")
    ap.add_argument("configs", nargs="*", help="bundled config names (default: all)")
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (the median is kept)")
    ap.add_argument(
        "--out",
        default="speed",
        help="file stem of the results in benchmarks/results (default: speed)",
    )
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every config, e.g. train.precision=bf16",
    )
    ap.add_argument("--tag", default="", help="suffix of the profile files (profile-CONFIG-TAG)")
    ap.add_argument(
        "--table", action="store_true", help="only rewrite OUT.md from OUT.json (no measurement)"
    )
    ap.add_argument("--_one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.table:
        result = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(
            table(result, result["rows"][0].get("overrides", []))
        )
        print((RESULTS / f"{args.out}.md").read_text())
        return
    if args._one:
        print(json.dumps(measure(args._one, args.steps, args.repeats, args.set, args.tag)))
        return
    from ganstack.config import bundled_configs

    if args.configs:
        names = list(args.configs)
    else:  # the configs on embedded data: CPU demos first, then the paper-width ones
        from ganstack.config import load_config

        embedded = [
            n
            for n in bundled_configs()
            if load_config(n).data.name in ("mnist5k", "shapes", "rooms")
        ]
        names = [n for n in embedded if not n.endswith("-paper")]
        names += [n for n in embedded if n.endswith("-paper")]
    rows = []
    for name in names:
        extra = ["--tag", args.tag] + (["--set", *args.set] if args.set else [])
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_one",
                name,
                "--steps",
                str(args.steps),
                "--repeats",
                str(args.repeats),
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{name}: {row['train_images_per_s']} img/s training, "
            f"{row['fraction_of_peak']:.0%} of peak",
            flush=True,
        )
    result = {"machine": machine(), "rows": rows}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    md = table(result, args.set)
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)


def table(result: dict, overrides: list[str]) -> str:
    """The Markdown table of a result. One matmul measurement can land on a busy moment (a
    peak half the others), so every row's fraction is taken against the median peak of the run;
    each row's own measurement stays in the JSON."""
    rows = [dict(r) for r in result["rows"]]
    peak = statistics.median(r["matmul_peak_gflop_s"] for r in rows)
    for r in rows:
        r["fraction_of_peak"] = r["achieved_gflop_s"] / peak
        r["matmul_peak_gflop_s"] = round(peak, 1)
    head = (
        "| config | train img/s | step ms | sample img/s | GFLOP/step | GFLOP/s | "
        "matmul peak | of peak | time in conv/matmul | their GFLOP/s | ops/step | "
        "train peak RSS MiB | peak RSS MiB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['config']} | {r['train_images_per_s']} | {r['train_step_ms']} | "
        f"{r['sample_images_per_s']} | {r['gflop_per_step']} | {r['achieved_gflop_s']} | "
        f"{r['matmul_peak_gflop_s']} | {r['fraction_of_peak']:.0%} | "
        f"{r.get('conv_matmul_time_share', 0):.0%} | {r.get('conv_matmul_gflop_s', 'n/a')} | "
        f"{r.get('aten_ops_per_step', 'n/a')} | "
        f"{r.get('train_peak_rss_mib', 'n/a')} | {r['peak_rss_mib']} |"
        for r in rows
    ]
    if any("fraction_of_bf16_peak" in r for r in rows):  # bf16 runs: their own peak too
        head = head.replace("| of peak |", "| of peak | bf16 peak | of bf16 peak |", 1).replace(
            "|---|---|\n", "|---|---|---|---|\n", 1
        )
        lines = [
            x.replace(
                f"| {r['fraction_of_peak']:.0%} |",
                f"| {r['fraction_of_peak']:.0%} | {r.get('bf16_matmul_peak_gflop_s')} | "
                f"{r.get('fraction_of_bf16_peak', 0):.0%} |",
                1,
            )
            for x, r in zip(lines, rows, strict=True)
        ]
    m = result["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} "
        f"threads); fp32 matmul peak {peak:.1f} GFLOP/s (median of the run)."
        + (f" Overrides: {' '.join(overrides)}." if overrides else "")
        + f"\n\n{head}"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
