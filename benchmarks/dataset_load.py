"""Data loading of a converted dataset (`ganstack dataset`) against the image folder it came from.

    python benchmarks/dataset_load.py                 # 10,000 PNGs of 64x64, 10 classes
    python benchmarks/dataset_load.py --n 2000 --size 32 --repeats 5

Generates a folder of N PNG images (one sub-folder per class, smooth colour fields with noise,
so they compress as photos do rather than as pure noise) in a temporary folder, converts it once
with ``ganstack dataset`` (timed, all CPU cores), then times building the training data as a run
does, ``load_dataset`` with the default ``data.eval_size`` (500, class-balanced), from the
folder (``data.name=folder``: every PNG decoded) and from the converted folder
(``data.name=prepared``: images.u8 mapped, the training split copied into RAM because it fits).
The timed runs interleave the two (folder, prepared, folder, prepared, ...), so a load that
comes and goes on the machine slows them alike; each figure is the median of ``--repeats``.
Both read from a warm page cache (the files were just written): a cold disk adds the read of
the PNG files to the one and of images.u8 to the other.

Writes ``benchmarks/results/dataset_load.json`` and ``.md`` with the CPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def make_folder(root: Path, n: int, size: int, classes: int = 10) -> int:
    """N PNGs in ``classes`` sub-folders; returns their total size in bytes."""
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = torch.from_numpy(rng.integers(0, 256, (1, 3, 4, 4)).astype(np.float32))
        field = torch.nn.functional.interpolate(
            coarse, size=(size, size), mode="bicubic", align_corners=False
        )[0]
        img = field.permute(1, 2, 0).numpy() + rng.normal(0, 6, (size, size, 3))
        path = root / f"class{i % 10}" / f"{i:06d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        total += path.stat().st_size
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images (default 10,000)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed loads of each (default 3)")
    ap.add_argument(
        "--out", default=str(RESULTS / "dataset_load"), help="results path without extension"
    )
    args = ap.parse_args()

    import logging

    from ganstack.config import DataConfig
    from ganstack.data import load_dataset
    from ganstack.data.prepared import convert
    from ganstack.environment import environment

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ganstack-bench-") as tmp:
        src, dest = Path(tmp) / "images", Path(tmp) / "prepared"
        t0 = time.perf_counter()
        png_bytes = make_folder(src, args.n, args.size)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = convert(src, dest, progress=False)
        convert_s = time.perf_counter() - t0
        u8_bytes = (dest / "images.u8").stat().st_size
        print(
            f"{args.n} PNGs ({png_bytes / 2**20:.1f} MiB) generated in {gen_s:.1f} s; "
            f"converted in {convert_s:.2f} s ({os.cpu_count()} workers) to images.u8 "
            f"({u8_bytes / 2**20:.1f} MiB)",
            flush=True,
        )

        configs = {
            "folder": DataConfig(name="folder", path=str(src)),
            "prepared": DataConfig(name="prepared", path=str(dest)),
        }
        times: dict[str, list[float]] = {k: [] for k in configs}
        check = {}
        for r in range(args.repeats):
            for name, cfg in configs.items():
                t0 = time.perf_counter()
                train, held = load_dataset(cfg)
                times[name].append(time.perf_counter() - t0)
                check[name] = (train.fingerprint(), held.fingerprint() if held else None)
                print(f"  repeat {r + 1}: {name:<8} {times[name][-1]:.3f} s", flush=True)
                del train, held
        same = check["folder"] == check["prepared"]
        # The mapped dataset alone (data.eval_size=0: nothing is read until a batch needs it).
        t0 = time.perf_counter()
        load_dataset(DataConfig(name="prepared", path=str(dest), eval_size=0))
        mapped_s = time.perf_counter() - t0

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["folder"] / med["prepared"]
    env = environment()
    result = {
        "benchmark": "dataset_load",
        "images": args.n,
        "size": args.size,
        "classes": 10,
        "png_mib": round(png_bytes / 2**20, 2),
        "images_u8_mib": round(u8_bytes / 2**20, 2),
        "convert_s": round(convert_s, 3),
        "convert_workers": os.cpu_count(),
        "load_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "speedup": round(ratio, 1),
        "mapped_only_s": round(mapped_s, 4),
        "identical_splits": same,
        "note": (
            f"median of {args.repeats} interleaved loads each, in one process, warm page "
            f"cache; the machine was shared with training jobs and other work during the "
            f"run, so the absolute times are noisy, the ratio less so"
        ),
        "shape": meta["images"]["shape"],
        "environment": env,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    runs = {k: ", ".join(f"{t:.3f}" for t in v) for k, v in times.items()}
    md = f"""# Data loading: converted dataset vs image folder

`python benchmarks/dataset_load.py --n {args.n} --size {args.size}` on {env["cpu"]}
({env["cpu_count"]} logical CPUs; **shared with training jobs and other work during the run**:
absolute times are noisy, the side-by-side ratio less so), Python {env["python"]}, torch
{env["torch"]}.

{args.n:,} PNGs of {args.size}x{args.size}x3 in 10 class sub-folders ({png_bytes / 2**20:.1f} MiB),
converted once by `ganstack dataset` in {convert_s:.2f} s ({os.cpu_count()} decoding processes)
into images.u8 ({u8_bytes / 2**20:.1f} MiB). Time to build a run's data (`load_dataset`, the
default data.eval_size=500 held out class-balanced), median of {args.repeats} interleaved loads,
warm page cache:

| source | median (s) | loads (s) |
|---|---:|---|
| `data.name=folder` (decode every PNG) | {med["folder"]:.3f} | {runs["folder"]} |
| `data.name=prepared` (map images.u8, copy the training split) | {med["prepared"]:.3f} \
| {runs["prepared"]} |

**{ratio:.1f}x faster** from the converted folder (the bar: 5x). Both give the same training and
held-out splits (fingerprints {"equal" if same else "**differ**"}). With data.eval_size=0 the
dataset is the mapping alone and loads in {mapped_s * 1000:.1f} ms: nothing is read until a
batch needs it.
"""
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
