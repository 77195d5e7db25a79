"""Image grids and training curves as PNG files."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganstack.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounding to nearest."""
    return (images.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def grid_array(images: torch.Tensor, pad: int = 2, scale: int = 0) -> np.ndarray:
    """(rows, cols, C, H, W) or (N, C, H, W) in [0, 1] -> (H', W', 3) uint8 with white gaps."""
    if images.dim() == 4:
        n = images.shape[0]
        cols = int(np.ceil(np.sqrt(n)))
        rows = (n + cols - 1) // cols
        filler = images.new_ones((rows * cols - n, *images.shape[1:]))
        images = torch.cat([images, filler]).reshape(rows, cols, *images.shape[1:])
    rows, cols, c, h, w = images.shape
    if scale <= 0:
        scale = max(1, 64 // max(h, w))
    x = to_uint8(images).cpu()
    if c == 1:
        x = x.expand(rows, cols, 3, h, w)
    x = x.repeat_interleave(scale, 3).repeat_interleave(scale, 4)
    h, w = h * scale, w * scale
    out = torch.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=torch.uint8)
    for r in range(rows):
        for col in range(cols):
            y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
            out[y0 : y0 + h, x0 : x0 + w] = x[r, col].permute(1, 2, 0)
    return out.numpy()


def save_png(array: np.ndarray, path: str | Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())


def save_grid(images: torch.Tensor, path: str | Path, pad: int = 2, scale: int = 0) -> None:
    save_png(grid_array(images, pad, scale), path)


def plot_curves(metrics_jsonl: Path, out: Path) -> bool:
    """Plot every loss in ``metrics.jsonl`` against the step; False when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: skipping the training-curve plot")
        return False
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r]
    keys = sorted({k for r in rows for k in r if k.startswith("loss/")})
    if not keys:
        return False
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/")[1].split("_")[0], []).append(k)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, (group, ks) in zip(axes[0], sorted(groups.items()), strict=True):
        for k in ks:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k.split("/", 1)[1], lw=1)
        ax.set_title(group)
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.legend(fontsize=7)
    phase_starts: dict[str, int] = {}
    for r in rows:
        phase_starts.setdefault(r.get("phase"), r["step"])
    for ax in axes[0]:
        for s in list(phase_starts.values())[1:]:
            ax.axvline(s, color="grey", ls=":", lw=1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return True


def side_by_side(scales: list[torch.Tensor], per_row: int = 4) -> torch.Tensor:
    """Every scale of each sample side by side: (rows, per_row * scales, C, H, W), coarser
    scales enlarged (nearest-neighbour) to the finest size; ``per_row`` samples a row."""
    final = scales[-1].float().cpu()
    up = [
        torch.nn.functional.interpolate(x.float().cpu(), size=final.shape[-2:], mode="nearest")
        for x in scales
    ]
    cells = torch.stack(up, 1)  # (N, S, C, H, W)
    n, s = cells.shape[:2]
    rows = (n + per_row - 1) // per_row
    pad = rows * per_row - n
    if pad:
        cells = torch.cat([cells, cells.new_ones((pad, *cells.shape[1:]))])
    return cells.reshape(rows, per_row * s, *cells.shape[2:])


@torch.no_grad()
def scales_grid(model, rows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, scales, C, H, W): each row one sample, every scale of it side by side (coarser
    scales enlarged to the finest size with nearest-neighbour, so their pixels show)."""
    inputs = model.draw_inputs(rows, generator=generator)
    with model.sampling_mode():
        out = model.generate(inputs)
    final = out["image"].float().cpu()
    cols = []
    for key in model.image_outputs():
        x = out[key].float().cpu()
        if x.shape[-1] != final.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=final.shape[-2:], mode="nearest")
        cols.append(x)
    return torch.stack(cols, 1)
