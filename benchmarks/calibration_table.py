"""A Markdown calibration table from a run's eval.json (the README's "How we evaluate" table).

    python benchmarks/calibration_table.py runs/sgan-mnist/eval.json
    python benchmarks/calibration_table.py runs/sgan-mnist/eval.json \
        --out benchmarks/results/calibration-sgan-mnist.md

One row per calibration row of ``protocol.calibration`` (real held-out images, the same
blurred, the condition-blind control, the equal-time baseline, this run), every figure at the
held-out set's size; one column per metric, in both domain feature spaces. Metrics that a row
does not have (FID of the blind control) show as a dash.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = (
    ("real", "real held-out digits (ceiling)"),
    ("blur1", "the same, blurred σ = 1 px"),
    ("blur2", "the same, blurred σ = 2 px (floor)"),
    ("blind", "condition-blind: the run's samples vs shuffled labels"),
    ("baseline", "equal-time conditional DCGAN (pytorch/examples recipe)"),
    ("model", "this run"),
)
# (column title, generic metric name prefix, extractor suffix)
COLUMNS = (
    ("acc", "acc", "cnn"),
    ("acc alt", "acc", "alt"),
    ("FID", "fid", "cnn"),
    ("FID alt", "fid", "alt"),
    ("precision", "precision", "cnn"),
    ("recall", "recall", "cnn"),
    ("recall alt", "recall", "alt"),
    ("coverage", "coverage", "cnn"),
    ("coverage alt", "coverage", "alt"),
    ("IS", "is", "cnn"),
)


def find(row: dict, prefix: str, suffix: str) -> float | None:
    for key, value in row.items():
        head, _, rest = key.partition("_")
        if head == prefix and rest.split("_")[0].endswith(suffix):
            return value
    return None


def table(result: dict, title: str = "this run") -> str:
    cal = result["protocol"].get("calibration")
    if not cal:
        raise SystemExit("eval.json has no calibration rows (evaluate with eval.calibrate=true)")
    rows = cal["rows"]
    present = [c for c in COLUMNS if any(find(r, c[1], c[2]) is not None for r in rows.values())]
    lines = [
        f"| at n = {cal['n']} | " + " | ".join(c[0] for c in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for key, label in ROWS:
        if key not in rows:
            continue
        label = title if key == "model" else label
        cells = []
        for _, prefix, suffix in present:
            v = find(rows[key], prefix, suffix)
            cells.append("–" if v is None else f"{v:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("eval_json", help="a run's eval.json")
    p.add_argument("--title", default="this run", help="the label of the run's own row")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    text = table(json.loads(Path(args.eval_json).read_text()), args.title)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
