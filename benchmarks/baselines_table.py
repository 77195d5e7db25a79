"""The bundled equal-time DCGAN baselines, one row per demo (docs/evaluation.md's table).

    python benchmarks/baselines_table.py        # writes benchmarks/results/baselines.md

Reads every ``src/ganstack/configs/baselines/CONFIG.json`` (written by ``python
benchmarks/baseline.py CONFIG --equal-time --bundle``) and shows how long each baseline
trained and the figures its demo's bars name, from the calibration rows at the held-out set's
size: the baseline's samples and the same samples against shuffled conditions (``blind``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_DIR = ROOT / "src" / "ganstack" / "configs" / "baselines"
OUT = Path(__file__).parent / "results" / "baselines.md"
# (label, calibration row, metric name pattern without its sample count)
FIGURES = [
    ("acc", "model", r"acc_\w+cnn"),
    ("acc blind", "blind", r"acc_\w+cnn"),
    ("shape", "model", r"caption_shape_\w+cnn"),
    ("colour", "model", r"caption_colour_\w+cnn"),
    ("background", "model", r"caption_background_\w+cnn"),
    ("all attributes", "model", r"caption_attr_\w+cnn"),
    ("all attributes blind", "blind", r"caption_attr_\w+cnn"),
    ("FID", "model", r"fid_\w+cnn_train\d+"),
    ("FID alt", "model", r"fid_\w+alt_train\d+"),
    ("recall", "model", r"recall_\w+cnn_train\d+_k3"),
]


def figures(base: dict) -> str:
    rows = base["protocol"].get("calibration", {}).get("rows", {})
    out = []
    for label, row, pattern in FIGURES:
        hits = [v for k, v in rows.get(row, {}).items() if re.fullmatch(pattern, k)]
        if hits:
            out.append(f"{label} {hits[0]:.3g}")
    return ", ".join(out)


def main() -> None:
    lines = [
        "Equal-time conditional DCGAN baselines (pytorch/examples recipe) bundled with the "
        "demos; figures at the held-out set's size (`blind`: against shuffled conditions). "
        "Reproduce a row: its command; the table: `python benchmarks/baselines_table.py`.",
        "",
        "| demo | training | figures | command |",
        "|---|---|---|---|",
    ]
    for path in sorted(BUNDLE_DIR.glob("*.json")):
        b = json.loads(path.read_text())
        how = (
            f"{b['steps']:,} steps ({b['images_seen']:,} images); "
            f"{b.get('budget', 'wall time')}; {b['cpu']}, {b['threads']} thread(s)"
        )
        lines.append(f"| `{b['config']}` | {how} | {figures(b)} | `{b['command']}` |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
