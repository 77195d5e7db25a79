"""What `ganstack train` and `ganstack eval` print: every figure beside its calibration."""

from __future__ import annotations

import math

from ganstack.metrics.evaluate import strip_count

COLUMNS = (
    ("model", "this run"),
    ("real", "real"),
    ("blur1", "blur σ1"),
    ("blur2", "blur σ2"),
    ("blind", "blind"),
    ("baseline", "baseline"),
)
_HIDDEN = ("_std", "_shuffled")


def _fmt(v: object) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def report(result: dict) -> str:
    """A plain-text table of an evaluation: each metric at the evaluated sample count, and
    beside it the calibration rows at the held-out size (this run's first N samples, the real
    held-out images, the same blurred, the condition-blind control, the baseline)."""
    metrics = result.get("metrics", {})
    protocol = result.get("protocol", {})
    n = protocol.get("num_samples")
    cal = protocol.get("calibration")
    rows = cal["rows"] if cal else {}
    cols = [(key, title) for key, title in COLUMNS if key in rows]
    names = [k for k in metrics if not k.endswith(_HIDDEN)]
    head = ["metric", f"n={n}"] + [f"{title}" for _, title in cols]
    table = [head]
    for name in names:
        generic = strip_count(name)
        table.append(
            [generic, _fmt(metrics[name])] + [_fmt(rows[key].get(generic)) for key, _ in cols]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if cal:
        note = (
            f"calibration at n={cal['n']} (the held-out set's size): this run's first "
            f"{cal['n']} samples; real held-out images ({cal['held_out']}); the same "
            f"blurred (Gaussian, sigma 1 and 2 px); blind: the samples against shuffled "
            f"conditions"
        )
        base = protocol.get("baseline")
        if base and "baseline" in rows:
            note += (
                f"; baseline: {base.get('recipe') or 'conditional DCGAN'}, "
                f"{base.get('minutes')} min on {base.get('cpu')} (seed {base.get('seed')})"
            )
        lines.append(note)
    return "\n".join(lines)
