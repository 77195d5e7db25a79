"""Visual-semantic (VS) similarity, HDGAN's text-image consistency measure (Zhang, Xie, Yang,
CVPR 2018, Sec. 5; ``ypxie/HDGan HDGan/neuralDist/``): images and captions are embedded in a
joint space, and VS is the cosine of a generated image and the caption it was generated from
there (higher: the image says more of what its caption says).

The joint space is learned, as the paper's, with a bidirectional ranking loss:

    sum over in-batch negatives t', v' of
        max(0, m - c(v, t) + c(v, t')) + max(0, m - c(t, v) + c(t, v'))

(c the cosine, m = 0.2; ``trainNeuralDist.py``: all in-batch negatives, both directions,
summed). Differences from the official model, and why:

- images: the official model projects frozen ImageNet Inception-ResNet-v2 pool features
  (1536-d); here a small CNN is trained with the projection from scratch (no ImageNet weights
  are needed, and the shapes are far from ImageNet), on images resized to 32 x 32 (the code:
  299 x 299); text: a linear projection of the caption
  embedding, as the code (Linear(1024 -> 512)); both L2-normalised; a 128-d space (code 512);
- trained on the **training split only**, one random caption per image per step (the code's
  ``num_emb`` 1); the code also draws from the test split, which leaks test data;
- Adam 1e-3 with a one-cycle schedule, 10 epochs, batch 64 (code: 2e-4 halved every 100
  epochs, up to 600 epochs, batch 32).

Trained weights are cached like the domain classifiers (:func:`ganstack.metrics.classifier.
cache_dir`, ``vs/``), keyed by the dataset's content and the recipe, with the held-out
ceiling (real images with their own captions) and floor (with shuffled captions) recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.fileio import atomic_path, atomic_write_text, flock_file
from ganstack.metrics.classifier import _shift, cache_dir, read_cached
from ganstack.nn import to_signed

log = logging.getLogger("ganstack")


@dataclass(frozen=True)
class VSRecipe:
    epochs: int = 10
    batch_size: int = 64
    size: int = 32  # images are resized (area) to size x size first: a cheap judge on a CPU
    lr: float = 1e-3
    margin: float = 0.2  # code: 0.2
    dim: int = 128  # the joint space (code: 512)
    max_shift: int = 2  # random translation (pixels) as augmentation; no flips (captions
    # may name left and right)
    seed: int = 4321
    version: int = 1  # bump when the architecture or training changes

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class JointEmbedding(nn.Module):
    """Image CNN and text projection into one L2-normalised space."""

    def __init__(self, channels: int, text_dim: int, dim: int, size: int = 32) -> None:
        super().__init__()
        self.size = size

        def block(ci: int, co: int) -> list[nn.Module]:
            return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

        self.image = nn.Sequential(
            *block(channels, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128 * 16, 256),
            nn.ReLU(),
            nn.Linear(256, dim),
        )
        self.text = nn.Linear(text_dim, dim)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 255] float) images -> unit vectors."""
        x = to_signed(images)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return F.normalize(self.image(x), dim=1)

    def embed_text(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(emb.float()), dim=1)

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, text: torch.Tensor, bs: int = 500) -> torch.Tensor:
        """(N,) cosine of each image and its caption embedding, on CPU."""
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for s in range(0, len(images), bs):
            v = self.embed_images(images[s : s + bs].to(dev))
            t = self.embed_text(text[s : s + bs].to(dev))
            out.append((v * t).sum(1).float().cpu())
        return torch.cat(out)


def ranking_loss(v: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """The bidirectional hinge over in-batch negatives, summed (unit vectors ``v``, ``t``;
    row i of each is a matching pair)."""
    scores = v @ t.T  # (B, B): image i against caption j
    pos = scores.diag()
    off = ~torch.eye(len(v), dtype=torch.bool, device=v.device)
    cost_t = (margin - pos[:, None] + scores).clamp(min=0)  # image i, wrong captions j
    cost_v = (margin - pos[None, :] + scores).clamp(min=0)  # caption j, wrong images i
    return (cost_t * off).sum() + (cost_v * off).sum()


def _captions(ds: ImageDataset) -> torch.Tensor:
    emb = ds.extras.get("embeddings")
    if emb is None:
        raise GanstackError(
            f"dataset '{ds.name}' has no caption embeddings: VS similarity needs captioned data"
        )
    return emb


def own_captions(ds: ImageDataset, seed: int = 0) -> torch.Tensor:
    """One of each image's own caption embeddings (seeded): (N, D)."""
    emb = _captions(ds)
    cap = torch.randint(emb.shape[1], (len(ds),), generator=torch.Generator().manual_seed(seed))
    return emb[torch.arange(len(ds)), cap]


def train_vs(train: ImageDataset, recipe: VSRecipe, log_fn=log.info) -> JointEmbedding:
    emb = _captions(train)
    g = torch.Generator().manual_seed(recipe.seed)
    state = torch.get_rng_state()
    torch.manual_seed(recipe.seed)
    model = JointEmbedding(train.shape[0], emb.shape[-1], recipe.dim, recipe.size)
    torch.set_rng_state(state)
    steps = max(1, len(train) // recipe.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.epochs * steps)
    model.train()
    for epoch in range(recipe.epochs):
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for s in range(steps):
            idx = perm[s * recipe.batch_size : (s + 1) * recipe.batch_size]
            x = _shift(train.images[idx].float(), recipe.max_shift, g)
            cap = torch.randint(emb.shape[1], (len(idx),), generator=g)
            loss = ranking_loss(
                model.embed_images(x), model.embed_text(emb[idx, cap]), recipe.margin
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log_fn(f"VS embedding: epoch {epoch + 1}/{recipe.epochs} loss {total / steps:.4f}")
    model.eval()
    return model


def bounds(model: JointEmbedding, ds: ImageDataset) -> dict[str, float]:
    """VS of real images with one of their own captions (the ceiling) and with another image's
    caption (the floor), mean and std over the images."""
    text = own_captions(ds)
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    real = model.similarity(ds.images, text)
    shuffled = model.similarity(ds.images, text[perm])
    return {
        "real": float(real.mean()),
        "real_std": float(real.std()),
        "shuffled": float(shuffled.mean()),
        "shuffled_std": float(shuffled.std()),
    }


def get_vs_model(
    train: ImageDataset, held_out: ImageDataset | None, recipe: VSRecipe | None = None
) -> tuple[JointEmbedding, dict]:
    """The joint embedding of ``train``'s images and captions, from the cache or trained now;
    and its record (name, dataset hash, recipe, held-out ceiling and floor)."""
    recipe = recipe or VSRecipe()
    emb = _captions(train)
    base = train.name.removesuffix("-train")
    held = held_out.fingerprint() if held_out is not None else "none"
    key = f"{base}-{train.fingerprint()}-{held[:8]}-{recipe.key()}"
    folder = cache_dir() / "vs"
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    model = JointEmbedding(train.shape[0], emb.shape[-1], recipe.dim, recipe.size)
    meta = read_cached(model, weights, meta_path, what="VS embedding")
    if meta is not None:
        return model, meta
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{key}.lock"
    with flock_file(
        lock,
        shared=False,
        on_wait=lambda: log.info(
            "another process is training the %s VS embedding (it holds %s); waiting", base, lock
        ),
    ):
        meta = read_cached(model, weights, meta_path, warn=False)
        if meta is not None:
            return model, meta
        log.info("training the %s VS embedding (cached afterwards in %s)", base, folder)
        model = train_vs(train, recipe)
        meta = {
            "name": f"{base}vs",
            "dataset": base,
            "dataset_hash": train.fingerprint(),
            "train_size": len(train),
            "recipe": dataclasses.asdict(recipe),
        }
        if held_out is not None and len(held_out) > 1 and "embeddings" in held_out.extras:
            meta["held_out"] = bounds(model, held_out) | {"size": len(held_out)}
        with atomic_path(weights) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return model, meta
