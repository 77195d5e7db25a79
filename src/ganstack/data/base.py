"""In-memory image datasets and the batcher.

A dataset is a uint8 tensor of images (N, C, H, W) with optional int64 labels. Batches are built
by indexing that tensor; there is no per-sample Python and no DataLoader. The batch for step ``t``
depends only on (seed, t), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ganstack.data.augment import mirror_batch
from ganstack.errors import DataError


@dataclass
class ImageDataset:
    """Images as uint8 (N, C, H, W), optional int64 labels (N,) and per-image extras.

    ``extras`` holds further per-image tensors whose first dimension is N, e.g. ``normals``
    (uint8 (N, 3, H, W)), ``embeddings`` (float (N, captions, D)) or ``attributes`` (int64
    (N, A)). The batcher indexes them with the images, so a batch carries them under the same
    names. ``captions`` (one list of strings per image) and ``meta`` are not batched.
    ``meta["flip"]`` (``data.flip``) asks the batcher to flip half of each batch left-right,
    with the ``X_mirror`` extras standing in for a flipped image's ``X`` (its conditions).
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    num_classes: int = 0
    name: str = "dataset"
    class_names: list[str] | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    captions: list[list[str]] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(
                f"dataset '{self.name}': images must be a uint8 tensor of shape (N, C, H, W); "
                f"got {getattr(x, 'dtype', type(x))} with shape {tuple(getattr(x, 'shape', ()))}"
            )
        if x.shape[1] not in (1, 3):
            raise DataError(
                f"dataset '{self.name}': images must have 1 or 3 channels, got {x.shape[1]}"
            )
        if len(x) == 0:
            raise DataError(f"dataset '{self.name}' is empty")
        if self.labels is not None:
            y = self.labels
            if y.dim() != 1 or len(y) != len(x):
                raise DataError(
                    f"dataset '{self.name}': {len(x)} images but labels of shape {tuple(y.shape)}"
                )
            self.labels = y = y.long()
            if self.num_classes <= 0:
                self.num_classes = int(y.max()) + 1
            if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
                raise DataError(
                    f"dataset '{self.name}': labels must lie in [0, {self.num_classes - 1}], "
                    f"found [{int(y.min())}, {int(y.max())}]"
                )
        for key, t in self.extras.items():
            if key in ("images", "labels"):
                raise DataError(f"dataset '{self.name}': extra '{key}' shadows a batch field")
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or len(t) != len(x):
                raise DataError(
                    f"dataset '{self.name}': extra '{key}' must be a tensor with one entry per "
                    f"image ({len(x)}), got shape {tuple(getattr(t, 'shape', ()))}"
                )
        if self.captions is not None and len(self.captions) != len(x):
            raise DataError(
                f"dataset '{self.name}': {len(x)} images but {len(self.captions)} caption lists"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def conditional(self) -> bool:
        return self.labels is not None

    def subset(self, index: torch.Tensor, name: str | None = None) -> ImageDataset:
        mapped = self.meta.get("mapped")  # images mapped from a file (data.name: prepared)
        if mapped is not None:
            part = mapped.subset(self, index, name)  # stays mapped when a copy would not fit
            if part is not None:
                return part
        return ImageDataset(
            self.images[index],
            None if self.labels is None else self.labels[index],
            self.num_classes,
            name or self.name,
            self.class_names,
            {k: v[index] for k, v in self.extras.items()},
            None if self.captions is None else [self.captions[int(i)] for i in index],
            dict(self.meta),
        )

    def fingerprint(self, floats: bool = True) -> str:
        """A content hash of images, labels and extras (used to key caches). The ``X_mirror``
        extras are left out: they follow from the rest, and the same data with or without
        ``data.flip`` shares its caches (its domain classifier). ``floats=False`` leaves out
        the floating-point extras too (caption embeddings, whose last bits differ between
        CPUs): what the domain classifiers train on, the same on every machine."""
        import hashlib

        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy())  # type: ignore[arg-type]  # no copy: the images may be mapped
        if self.labels is not None:
            h.update(self.labels.contiguous().numpy().tobytes())
        for key in sorted(k for k in self.extras if not k.endswith("_mirror")):
            if not floats and self.extras[key].is_floating_point():
                continue
            h.update(key.encode())
            h.update(self.extras[key].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def train_eval_split(
    ds: ImageDataset, eval_size: int, seed: int = 0
) -> tuple[ImageDataset, ImageDataset | None]:
    """Hold out ``eval_size`` images, an equal number per class when the data is labelled."""
    if eval_size <= 0:
        return ds, None
    if eval_size >= len(ds):
        raise DataError(
            f"dataset '{ds.name}' has {len(ds)} images; cannot hold out {eval_size} for "
            f"evaluation. Lower data.eval_size."
        )
    g = torch.Generator().manual_seed(seed)
    if ds.labels is None:
        perm = torch.randperm(len(ds), generator=g)
        ev, tr = perm[:eval_size], perm[eval_size:]
    else:
        k = ds.num_classes
        per_class = eval_size // k
        if per_class == 0 or eval_size % k:
            raise DataError(
                f"data.eval_size={eval_size} must be a positive multiple of the {k} classes "
                f"so the evaluation split is class-balanced"
            )
        ev_parts = []
        for c in range(k):
            idx = (ds.labels == c).nonzero().flatten()
            if len(idx) <= per_class:
                raise DataError(
                    f"dataset '{ds.name}': class {c} has {len(idx)} images, too few to hold "
                    f"out {per_class} for evaluation"
                )
            ev_parts.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
        ev = torch.cat(ev_parts).sort().values
        mask = torch.ones(len(ds), dtype=torch.bool)
        mask[ev] = False
        tr = mask.nonzero().flatten()
    return ds.subset(tr, f"{ds.name}-train"), ds.subset(ev, f"{ds.name}-eval")


class Batcher:
    """Shuffled minibatches by indexing an in-memory dataset.

    Epoch ``e`` uses a permutation drawn from ``seed`` and ``e``; step ``t`` takes the ``t``-th
    slice. With ``world > 1`` every rank draws the same permutation and takes its own part of a
    global batch of ``batch_size * world``, so the ranks together cover each epoch once.
    """

    def __init__(
        self,
        ds: ImageDataset,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.global_batch = batch_size * world
        if self.global_batch > len(ds):
            raise DataError(
                f"batch size {batch_size} x {world} process(es) is larger than the "
                f"{len(ds)} training images; lower train.batch_size"
            )
        self.ds = ds
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.device = torch.device(device)
        self.steps_per_epoch = len(ds) // self.global_batch
        # Small datasets live on the device; batches are then pure device-side indexing.
        on_device = self.device.type == "cpu" or ds.images.numel() < 2**31
        self.images = ds.images.to(self.device) if on_device else ds.images
        self.labels = None if ds.labels is None else ds.labels.to(self.device)
        self.extras = {k: v.to(self.device) if on_device else v for k, v in ds.extras.items()}
        self._epoch = -1
        self._perm: torch.Tensor | None = None
        self.flip = bool(ds.meta.get("flip"))

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.ds), generator=g).to(self.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        start = pos * self.global_batch + self.rank * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        idx = self.indices(step)
        images = self.images[idx]
        if images.device != self.device:
            images = images.to(self.device, non_blocking=True)
        out = {"images": images}
        if self.labels is not None:
            out["labels"] = self.labels[idx]
        for key, t in self.extras.items():
            v = t[idx.to(t.device)]
            out[key] = v.to(self.device, non_blocking=True) if v.device != self.device else v
        if self.flip:
            out = mirror_batch(out, self.flip_mask(step))
        return out

    def flip_mask(self, step: int) -> torch.Tensor:
        """Which samples of step ``step``'s batch are flipped (``meta["flip"]``): a function of
        (seed, step) and of the sample's place in the global batch, as the batch itself."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 2 + 2**40)
        start = self.rank * self.batch_size
        return (torch.rand(self.global_batch, generator=g) < 0.5)[start : start + self.batch_size]
