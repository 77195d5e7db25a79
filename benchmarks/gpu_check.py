"""Every GPU speed check in one run, for a session that has a GPU for a few minutes.

    bash benchmarks/gpu_check.sh                       # on the GPU machine (adds DDP, nvidia-smi)
    python benchmarks/gpu_check.py --device cpu --quick --steps 1 --repeats 1   # try it on a CPU

Each check runs in a fresh subprocess (so its peak memory is its own, and one that fails does
not stop the others) on freshly built networks, in the last phase of its config (SGAN: joint,
every level), with the config's own speed settings (``channels_last``, ``fused_optimizers``):

- ``demo``: every CPU demo for a few steps, under the precision ``auto`` picks on the device
  (bf16 on a GPU of compute capability >= 8.0) and in fp32;
- ``compile``: the same with ``torch.compile`` (inductor) of each network, for two demos;
- ``paper``: StackGAN-v2 birds at paper size (3 branches 64/128/256, batch 24, random data of
  its size and random 1,024-d captions) and SGAN-CIFAR10, bf16 and fp32 (``--quick`` skips
  them: minutes a step on a CPU).

Reports the median step time of ``--repeats`` runs of ``--steps`` steps after warm-up, the
images/s, and the peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak resident
memory). Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (default OUT:
``benchmarks/results/gpu_check``), rewritten after every check, so a run cut off at its time
limit still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

DEMOS = [
    "sgan-mnist",
    "stackgan-v1-shapes",
    "stackgan-v2-shapes",
    "hdgan-shapes",
    "lapgan-mnist",
    "lapgan-shapes",
    "s2gan-rooms",
    "dcgan-mnist",
]
COMPILED = ["sgan-mnist", "stackgan-v2-shapes"]
PAPER = ["stackgan-v2-birds", "sgan-cifar10"]


def checks(quick: bool) -> list[dict]:
    out = []
    for c in DEMOS:
        out += [{"kind": "demo", "config": c, "precision": p} for p in ("auto", "fp32")]
    out += [{"kind": "compile", "config": c, "precision": "auto"} for c in COMPILED]
    if not quick:
        for c in PAPER:
            out += [{"kind": "paper", "config": c, "precision": p} for p in ("auto", "fp32")]
    return out


def time_step(spec: dict, device_name: str, steps: int, repeats: int) -> dict:
    """Runs inside the subprocess: one check."""
    import resource
    import statistics

    import speed_ab
    import torch
    from speed import training_data

    from ganstack.config import load_config
    from ganstack.data import Batcher
    from ganstack.models import DataInfo, build_model
    from ganstack.models.base import Step
    from ganstack.train.precision import apply_levers, resolve_precision, step_autocast

    device = torch.device(device_name)
    cfg = load_config(spec["config"], ["train.precision=" + spec["precision"]])
    torch.manual_seed(0)
    train, data = training_data(cfg)
    model = build_model(cfg.model, DataInfo.of(train)).to(device)
    apply_levers(model, cfg.train.channels_last, cfg.train.fused_optimizers)
    precision = resolve_precision(cfg.train.precision, device)
    phase = [p for p, n in cfg.train.phases.items() if n > 0][-1]
    model.enter_phase(phase, fresh=True)
    model.train()
    if spec["kind"] == "compile":
        speed_ab.apply(model, "compile")  # torch.compile of each network, as speed_ab's lever
    bs = cfg.train.batch_size
    batcher = Batcher(train, bs, 0, device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    i = 0

    def run(k: int) -> None:
        nonlocal i
        with step_autocast(device.type, precision):
            for _ in range(k):
                model.train_step(batcher.batch(i), phase, Step(i, phase, i, bs, 1, len(train)))
                i += 1
        sync()

    t = time.perf_counter()
    run(3 if spec["kind"] != "paper" else 1)  # warm-up (and compilation)
    warmup_s = time.perf_counter() - t
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - t) / steps)
    step_s = statistics.median(times)
    if cuda:
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        **spec,
        "precision_used": precision,
        "phase": phase,
        "data": data,
        "batch_size": bs,
        "step_ms": round(step_s * 1000, 2),
        "images_per_s": round(bs / step_s, 1),
        "warmup_s": round(warmup_s, 1),
        "peak_memory_mib": round(memory, 1),
    }


def environment(device_name: str) -> dict:
    import torch

    from ganstack.environment import environment as env

    out = env(device_name)
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        out["capability"] = f"{cap[0]}.{cap[1]}"
        out["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return out


def table(results: dict) -> str:
    env = results["environment"]
    gpus = ", ".join(env.get("gpus", [])) or "no GPU"
    lines = [
        f"Device {results['device']} ({gpus}; CPU {env.get('cpu')}), torch {env.get('torch')}; "
        f"median of {results['repeats']} x {results['steps']} steps after warm-up "
        "(`bash benchmarks/gpu_check.sh`).",
        "",
        "| check | config | precision | step ms | images/s | warm-up s | peak memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["checks"]:
        if "error" in r:
            lines.append(
                f"| {r['kind']} | {r['config']} | {r['precision']} | failed: "
                f"{r['error'][-120:]!r} | | | |"
            )
            continue
        lines.append(
            f"| {r['kind']} | {r['config']} | {r['precision_used']} | {r['step_ms']} | "
            f"{r['images_per_s']} | {r['warmup_s']} | {r['peak_memory_mib']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", help="cuda (default where CUDA is available), cuda:N or cpu")
    ap.add_argument("--out", default="benchmarks/results/gpu_check", help="result folder")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (median kept)")
    ap.add_argument("--quick", action="store_true", help="skip the paper-size checks")
    ap.add_argument("--only", nargs="+", help="only these configs")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per check")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(time_step(json.loads(args.child), args.device, args.steps, args.repeats)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "device": args.device,
        "steps": args.steps,
        "repeats": args.repeats,
        "environment": environment(args.device),
        "checks": [],
    }
    todo = [c for c in checks(args.quick) if not args.only or c["config"] in args.only]
    for n, spec in enumerate(todo, 1):
        cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--device", args.device]
        cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            row = (
                json.loads(res.stdout.strip().splitlines()[-1])
                if res.returncode == 0
                else {**spec, "error": res.stderr.strip()[-2000:]}
            )
        except subprocess.TimeoutExpired:
            row = {**spec, "error": f"timed out after {args.timeout:.0f} s"}
        results["checks"].append(row)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "gpu_check.md").write_text(table(results))
        status = row.get("error", "")[-200:] or f"{row['step_ms']} ms a step"
        print(f"[{n}/{len(todo)}] {spec['kind']} {spec['config']} {spec['precision']}: {status}")
    print(table(results))


if __name__ == "__main__":
    main()
