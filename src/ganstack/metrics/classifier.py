"""Domain classifiers that ganstack trains itself, so FID/IS-style metrics exist on any CPU.

A :class:`DomainClassifier` is a small CNN trained on a dataset's *training split* (never on
generated images, and with a different architecture and seed from any model's encoder, so it is
an independent judge). Its penultimate 128-d activations are the features for FID/KID, its
softmax the class posterior for IS and conditional accuracy. Trained weights are cached under
:func:`cache_dir` (``$GANSTACK_CACHE``, else ``$XDG_CACHE_HOME/ganstack``, else
``~/.cache/ganstack``) keyed by the dataset's content hash and the training recipe, with the
held-out accuracy stored beside them. A file lock beside each entry lets one process at a time
train it; the others wait and read its result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.fileio import atomic_path, atomic_write_text, flock_file
from ganstack.nn import to_signed

log = logging.getLogger("ganstack")


@dataclass(frozen=True)
class ClassifierRecipe:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    max_shift: int = 2  # random translation (pixels) as augmentation
    seed: int = 1234
    version: int = 1  # bump when the architecture or training changes
    # Spatial pooling before the features: 1 = global average (position-blind); P > 1 keeps a
    # P x P grid, for domains where position matters (the shapes' captions name it).
    pool: int = 1
    # Extra heads, one per attribute (sizes), trained beside the label head: caption
    # consistency reads them. Empty for single-label domains.
    attribute_sizes: tuple[int, ...] = ()
    flip: bool = False  # random left-right flips as augmentation (off where left/right matter)
    # "cnn": DomainClassifier; "alt": AltClassifier, the second, independent feature space.
    arch: str = "cnn"

    def key(self) -> str:
        d = dataclasses.asdict(self)
        for k, default in (("pool", 1), ("attribute_sizes", ()), ("flip", False), ("arch", "cnn")):
            if d[k] == default:
                d.pop(k)  # recipes from before these options keep their cache keys
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class DomainClassifier(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-global-average -> 128-d features -> K logits."""

    feature_dim = 128

    def __init__(
        self, channels: int, num_classes: int, pool: int = 1, attribute_sizes: tuple[int, ...] = ()
    ) -> None:
        super().__init__()

        def block(ci: int, co: int) -> list[nn.Module]:
            return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]

        if pool == 1:
            tail: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        else:
            tail = [
                nn.AdaptiveAvgPool2d(pool),
                nn.Flatten(),
                nn.Linear(128 * pool * pool, 128),
                nn.ReLU(),
            ]
        self.trunk = nn.Sequential(
            *block(channels, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            *tail,
        )
        self.head = nn.Linear(128, num_classes)
        self.attribute_heads = nn.ModuleList([nn.Linear(128, k) for k in attribute_sizes])

    preprocess = staticmethod(to_signed)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 or [0,255] float images -> (features, logits)."""
        f = self.trunk(self.preprocess(images))
        return f, self.head(f)

    @torch.no_grad()
    def predict_attributes(self, images: torch.Tensor, bs: int = 1000) -> torch.Tensor:
        """(N, A) int64: the most likely value of every attribute head."""
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for s in range(0, len(images), bs):
            f = self.trunk(self.preprocess(images[s : s + bs].to(dev)))
            out.append(torch.stack([h(f).argmax(1) for h in self.attribute_heads], 1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, bs: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, probabilities) for uint8 images, in batches, on CPU."""
        self.eval()
        dev = next(self.parameters()).device
        feats, probs = [], []
        for s in range(0, len(images), bs):
            f, logits = self(images[s : s + bs].to(dev))
            feats.append(f.float().cpu())
            probs.append(logits.float().softmax(1).cpu())
        return torch.cat(feats), torch.cat(probs)


class AltClassifier(DomainClassifier):
    """The second judge: a different architecture from :class:`DomainClassifier` (strided 5x5
    and 3x3 convolutions, group norm, GELU, no max pooling, mean+max pooled 192-d features),
    trained from another seed, so that a model tuned against one classifier's features is
    checked in a space it has never been measured in."""

    feature_dim = 192

    def __init__(
        self, channels: int, num_classes: int, pool: int = 1, attribute_sizes: tuple[int, ...] = ()
    ) -> None:
        nn.Module.__init__(self)
        self.pool = pool
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 48, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv2d(48, 96, 3, stride=2, padding=1),
            nn.GroupNorm(8, 96),
            nn.GELU(),
            nn.Conv2d(96, 96, 3, padding=1),
            nn.GroupNorm(8, 96),
            nn.GELU(),
        )
        grid = 2 * 96 * pool * pool
        self.proj = nn.Sequential(nn.Linear(grid, self.feature_dim), nn.GELU())
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.attribute_heads = nn.ModuleList(
            [nn.Linear(self.feature_dim, k) for k in attribute_sizes]
        )

    def trunk(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self.convs(x)
        pooled = torch.cat(
            [F.adaptive_avg_pool2d(h, self.pool), F.adaptive_max_pool2d(h, self.pool)], 1
        )
        return self.proj(pooled.flatten(1))


ARCHITECTURES: dict[str, type[DomainClassifier]] = {"cnn": DomainClassifier, "alt": AltClassifier}


def build_classifier(channels: int, num_classes: int, recipe: ClassifierRecipe) -> DomainClassifier:
    if recipe.arch not in ARCHITECTURES:
        raise GanstackError(
            f"unknown classifier architecture {recipe.arch!r}; known: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[recipe.arch](channels, num_classes, recipe.pool, recipe.attribute_sizes)


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Random integer translation of each image by up to ``max_shift`` pixels (zero fill)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def train_classifier(
    train: ImageDataset, held_out: ImageDataset | None, recipe: ClassifierRecipe, log_fn=log.info
) -> tuple[DomainClassifier, float | None]:
    """Train a classifier on ``train``; returns it and its accuracy on ``held_out``."""
    if train.labels is None:
        raise GanstackError(f"dataset '{train.name}' has no labels: cannot train a classifier")
    g = torch.Generator().manual_seed(recipe.seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(recipe.seed)  # parameter init; the global state is restored below
    model = build_classifier(train.shape[0], train.num_classes, recipe)
    torch.set_rng_state(torch_state)
    attrs = train.extras.get("attributes") if recipe.attribute_sizes else None
    steps_per_epoch = max(1, len(train) // recipe.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    model.train()
    for epoch in range(recipe.epochs):
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * recipe.batch_size : (s + 1) * recipe.batch_size]
            x = _shift(train.images[idx].float(), recipe.max_shift, g)
            if recipe.flip:
                mirror = torch.rand(len(x), generator=g) < 0.5
                x = torch.where(mirror[:, None, None, None], x.flip(3), x)
            f, logits = model(x)
            loss = F.cross_entropy(logits, train.labels[idx])
            if attrs is not None:
                for a, head in enumerate(model.attribute_heads):
                    loss = loss + F.cross_entropy(head(f), attrs[idx, a])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log_fn(f"classifier: epoch {epoch + 1}/{recipe.epochs} loss {total / steps_per_epoch:.4f}")
    acc = None
    if held_out is not None and held_out.labels is not None:
        _, probs = model.predict(held_out.images)
        acc = float((probs.argmax(1) == held_out.labels).float().mean())
    model.eval()
    return model, acc


def recipe_for(ds: ImageDataset, arch: str = "cnn") -> ClassifierRecipe:
    """The classifier recipe for a dataset: attribute heads (and a spatial grid, since the
    attributes include positions) when it carries attributes, the plain recipe otherwise.
    ``arch="alt"``: the second judge, another architecture trained from another seed."""
    sizes = ds.meta.get("attribute_sizes")
    extra: dict = {} if arch == "cnn" else {"arch": arch, "seed": 98765, "lr": 2e-3}
    if sizes and "attributes" in ds.extras:
        return ClassifierRecipe(epochs=10, pool=4, attribute_sizes=tuple(sizes), **extra)
    return ClassifierRecipe(**extra)


def cache_dir() -> Path:
    """ganstack's cache: ``$GANSTACK_CACHE``; else ``$XDG_CACHE_HOME/ganstack`` (the XDG base
    directory rule: an absolute path, a relative one is ignored); else
    ``~/.cache/ganstack``."""
    own = os.environ.get("GANSTACK_CACHE")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ganstack"
    return Path.home() / ".cache" / "ganstack"


def read_cached(
    model: nn.Module, weights: Path, meta_path: Path, warn: bool = True, what: str = "classifier"
) -> dict | None:
    """The record of a cached network (a classifier, the VS embedding), its weights loaded
    into ``model``; None when there is none, or it is unusable (a warning then says why, and
    it is trained again)."""
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        model.load_state_dict(load_file(str(weights)))
        model.eval()
        return meta
    except (OSError, ValueError, SafetensorError, RuntimeError) as e:
        if warn:
            log.warning("cached %s %s is unusable (%s); retraining", what, weights, e)
        return None


def get_classifier(
    train: ImageDataset, held_out: ImageDataset | None, recipe: ClassifierRecipe | None = None
) -> tuple[DomainClassifier, dict]:
    """A trained classifier for ``train``'s domain, from the cache or trained now.

    Returns the classifier and its record (name, held-out accuracy, dataset hash, recipe).
    """
    recipe = recipe or recipe_for(train)
    suffix = "cnn" if recipe.arch == "cnn" else recipe.arch
    base = train.name.removesuffix("-train")
    held = held_out.fingerprint() if held_out is not None else "none"
    key = f"{base}-{train.fingerprint()}-{held[:8]}-{recipe.key()}"
    folder = cache_dir() / "classifiers"
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    model = build_classifier(train.shape[0], train.num_classes, recipe)
    meta = read_cached(model, weights, meta_path)
    if meta is not None:
        return model, meta
    # One process trains a given classifier at a time: the others wait for it on the lock
    # file beside the cache entry, then read what it wrote.
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{key}.lock"
    with flock_file(
        lock,
        shared=False,
        on_wait=lambda: log.info(
            "another process is training the %s%s domain classifier (it holds %s); waiting for it",
            base,
            suffix,
            lock,
        ),
    ):
        meta = read_cached(model, weights, meta_path, warn=False)  # written meanwhile?
        if meta is not None:
            return model, meta
        return _train_and_cache(train, held_out, recipe, base, suffix, weights, meta_path)


def _train_and_cache(
    train: ImageDataset,
    held_out: ImageDataset | None,
    recipe: ClassifierRecipe,
    base: str,
    suffix: str,
    weights: Path,
    meta_path: Path,
) -> tuple[DomainClassifier, dict]:
    log.info(
        "training the %s%s domain classifier (cached afterwards in %s)",
        base,
        suffix,
        weights.parent,
    )
    model, acc = train_classifier(train, held_out, recipe)
    attr_acc = None
    if recipe.attribute_sizes and held_out is not None and "attributes" in held_out.extras:
        pred = model.predict_attributes(held_out.images)
        attr_acc = (pred == held_out.extras["attributes"]).double().mean(0).tolist()
    meta = {
        "name": f"{base}{suffix}",
        "dataset": base,
        "dataset_hash": train.fingerprint(),
        "train_size": len(train),
        "held_out_size": 0 if held_out is None else len(held_out),
        "held_out_accuracy": acc,
        "recipe": dataclasses.asdict(recipe),
    }
    if attr_acc is not None:
        names = train.meta.get("attributes") or [str(i) for i in range(len(attr_acc))]
        meta["held_out_attribute_accuracy"] = dict(zip(names, attr_acc, strict=True))
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    return model, meta
