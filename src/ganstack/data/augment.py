"""Batch-level augmentation in torch: no per-sample Python, no DataLoader workers."""

from __future__ import annotations

import torch

from ganstack.nn.ops import resize, to_signed


def random_crop_flip(
    x: torch.Tensor, size: int, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of each image (own offset each), flipped left-right
    with probability 1/2 when ``flip``. Offsets come from ``generator`` (default: torch's
    global RNG, so a resumed run draws the same crops)."""
    b, _, h, w = x.shape
    dy = torch.randint(0, h - size + 1, (b,), generator=generator)
    dx = torch.randint(0, w - size + 1, (b,), generator=generator)
    cols = dx[:, None] + torch.arange(size)[None]  # (b, size)
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    rows = dy[:, None] + torch.arange(size)[None]
    dev = x.device
    bi = torch.arange(b, device=dev)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bi, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def mirror_batch(batch: dict[str, torch.Tensor], mirror: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flip left-right the ``images`` of the samples where ``mirror`` (bool (B,)) is set, and
    give them the conditions of the mirrored image: every entry ``X`` that has an
    ``X_mirror`` entry (e.g. ``embeddings``: those of the captions with left and right
    swapped) takes that entry's value there. The ``*_mirror`` entries are left out."""
    out = {k: v for k, v in batch.items() if not k.endswith("_mirror")}
    m = mirror.to(batch["images"].device)
    out["images"] = torch.where(m[:, None, None, None], batch["images"].flip(3), batch["images"])
    for key, value in out.items():
        other = batch.get(f"{key}_mirror")
        if other is not None:
            out[key] = torch.where(m.view(-1, *[1] * (value.dim() - 1)), other, value)
    return out


def multiscale_batch(
    images: torch.Tensor,
    sizes: list[int],
    crop_ratio: float = 76 / 64,
    flip: bool = True,
    augment: bool = True,
) -> list[torch.Tensor]:
    """StackGAN-v2's real images at every scale from *one* crop (the official code/main.py and
    datasets.py ``get_imgs``):
    resize the largest scale by ``crop_ratio``, random crop, random flip, then bilinear
    down-scales of that crop for the smaller ``sizes``. ``augment=False``: no crop or flip.
    Returns float images in [-1, 1], one per size, in the order of ``sizes``."""
    x = to_signed(images)
    top = max(sizes)
    if augment and crop_ratio > 1:
        x = random_crop_flip(resize(x, int(round(top * crop_ratio)), antialias=True), top, flip)
    else:
        x = resize(x, top, antialias=True)
        if augment and flip:
            mirror = torch.rand(len(x)) < 0.5
            x = torch.where(mirror.to(x.device)[:, None, None, None], x.flip(3), x)
    return [resize(x, s, antialias=True) for s in sizes]
