"""Evaluation: a registry of metrics computed on generated samples.

Every metric's name carries its protocol: sample count, feature extractor and reference split,
e.g. ``fid5k_mnist5kcnn_train4500`` is the FID of 5,000 samples against the 4,500 training
images in the feature space of ganstack's own MNIST-5k classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.metrics.classifier import DomainClassifier, get_classifier
from ganstack.metrics.fid import frechet_distance, inception_score, kernel_inception_distance
from ganstack.metrics.stats import FeatureStats
from ganstack.registry import Registry

log = logging.getLogger("ganstack")


def count_tag(n: int) -> str:
    """5000 -> '5k', 50000 -> '50k', 1234 -> '1234'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


@dataclass
class EvalContext:
    """Generated images plus what metrics compare them with, with lazily computed features."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor | None  # the class each sample was conditioned on
    reference: ImageDataset  # real images the generated ones are compared with (train split)
    held_out: ImageDataset | None = None
    inception_path: str | None = None
    # Coarser image outputs of a multi-scale model (uint8, their own sizes), by name.
    extra_images: dict[str, torch.Tensor] = field(default_factory=dict)
    # What each sample was conditioned on beyond the class: for captions, ``attributes``
    # (N, A) and ``mentions`` (N, A) (which attributes its caption names).
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    _classifier: tuple[DomainClassifier, dict] | None = None
    _inception: object | None = None
    _cache: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def ref_tag(self) -> str:
        return f"train{len(self.reference)}"

    def classifier(self) -> tuple[DomainClassifier, dict]:
        if self._classifier is None:
            self._classifier = get_classifier(self.reference, self.held_out)
        return self._classifier

    def inception(self):  # type: ignore[no-untyped-def]
        if self._inception is None:
            from ganstack.metrics.inception import InceptionExtractor

            self._inception = InceptionExtractor(self.inception_path)
        return self._inception

    def scaled(self, name: str) -> torch.Tensor:
        """A coarser output enlarged (bilinear) to the reference size, as uint8."""
        key = ("scaled", name)
        if key not in self._cache:
            x = self.extra_images[name].float()
            size = self.reference.shape[1:]
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear",
                                                align_corners=False)
            self._cache[key] = x.round().clamp(0, 255).to(torch.uint8)
        return self._cache[key]

    def real_at(self, name: str) -> torch.Tensor:
        """The reference images brought to the scale of coarser output ``name``: shrunk to its
        size (area averaging) and enlarged back (bilinear), as uint8."""
        key = ("real_at", name)
        if key not in self._cache:
            size = tuple(self.extra_images[name].shape[-2:])
            x = torch.nn.functional.interpolate(self.reference.images.float(), size=size,
                                                mode="area")
            x = torch.nn.functional.interpolate(x, size=self.reference.shape[1:],
                                                mode="bilinear", align_corners=False)
            self._cache[key] = x.round().clamp(0, 255).to(torch.uint8)
        return self._cache[key]

    def outputs(self, extractor: str, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, probabilities) of the generated (``fake``), reference (``real``) images
        or a coarser output enlarged to the final size (``scale:NAME``)."""
        key = (extractor, which)
        if key not in self._cache:
            if which.startswith("scale:"):
                images = self.scaled(which.split(":", 1)[1])
            elif which.startswith("real_at:"):
                images = self.real_at(which.split(":", 1)[1])
            else:
                images = self.images if which == "fake" else self.reference.images
            if extractor == "classifier":
                self._cache[key] = self.classifier()[0].predict(images)
            else:
                net = self.inception()
                feats, probs = [], []
                for s in range(0, len(images), 200):
                    f, p = net(images[s : s + 200])
                    feats.append(f.float().cpu())
                    probs.append(p.float().cpu())
                self._cache[key] = (torch.cat(feats), torch.cat(probs))
        return self._cache[key]

    def extractor_tag(self, extractor: str) -> str:
        return self.classifier()[1]["name"] if extractor == "classifier" else "inception"


MetricFn = Callable[[EvalContext], dict[str, float]]
METRICS: Registry[MetricFn] = Registry("metric")


def _fid(ctx: EvalContext, extractor: str, fake: str = "fake", suffix: str = "",
         real: str = "real") -> dict[str, float]:
    stats = []
    for which in (fake, real):
        s = FeatureStats()
        s.append(ctx.outputs(extractor, which)[0])
        stats.append(s.mean_cov())
    (m1, s1), (m2, s2) = stats
    name = f"fid{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}_{ctx.ref_tag}{suffix}"
    return {name: frechet_distance(m1, s1, m2, s2)}


def _kid(ctx: EvalContext, extractor: str) -> dict[str, float]:
    f1 = ctx.outputs(extractor, "fake")[0].double().numpy()
    f2 = ctx.outputs(extractor, "real")[0].double().numpy()
    mean, std = kernel_inception_distance(f1, f2)
    name = f"kid{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}_{ctx.ref_tag}"
    return {name: mean, f"{name}_std": std}


def shuffled_inception_score(probs: torch.Tensor) -> tuple[float, float]:
    """IS over 10 splits of a fixed random order (sample files may be sorted by class)."""
    order = torch.randperm(len(probs), generator=torch.Generator().manual_seed(0))
    return inception_score(probs[order].double().numpy(), splits=10)


def _is(ctx: EvalContext, extractor: str) -> dict[str, float]:
    mean, std = shuffled_inception_score(ctx.outputs(extractor, "fake")[1])
    name = f"is{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}"
    return {name: mean, f"{name}_std": std}


@METRICS.register("fid")
def fid_classifier(ctx: EvalContext) -> dict[str, float]:
    """FID in the domain classifier's feature space against the training split."""
    return _fid(ctx, "classifier")


@METRICS.register("kid")
def kid_classifier(ctx: EvalContext) -> dict[str, float]:
    """KID (cubic kernel, 100 subsets) in the domain classifier's feature space."""
    return _kid(ctx, "classifier")


@METRICS.register("is")
def is_classifier(ctx: EvalContext) -> dict[str, float]:
    """Inception-style score with the domain classifier's posterior, 10 splits."""
    return _is(ctx, "classifier")


@METRICS.register("fid_scales")
def fid_scales(ctx: EvalContext) -> dict[str, float]:
    """FID of every coarser output of a multi-scale model, enlarged (bilinear) to the final
    size, against the training split (suffix: the output's name); the final size is `fid`."""
    out: dict[str, float] = {}
    for name in ctx.extra_images:
        out.update(_fid(ctx, "classifier", f"scale:{name}", f"_{name}"))
    return out


@METRICS.register("fid_levels")
def fid_levels(ctx: EvalContext) -> dict[str, float]:
    """FID of every coarser output of a multi-scale model against the training images at the
    same scale (shrunk to the output's size by area averaging, then both enlarged bilinearly
    to the final size), so the blur of a low resolution is not counted against the output;
    suffix ``_NAME_matched``. Unlike `fid_scales`, 0 means the level matches real data at
    that scale."""
    out: dict[str, float] = {}
    for name in ctx.extra_images:
        out.update(_fid(ctx, "classifier", f"scale:{name}", f"_{name}_matched",
                        real=f"real_at:{name}"))
    return out


@METRICS.register("colour")
def colour_consistency(ctx: EvalContext) -> dict[str, float]:
    """Colour consistency between neighbouring scales of the same samples: the mean over
    samples of the squared distance between their pixel means, and the squared Frobenius
    distance between their 3x3 pixel covariances (pixels in [-1, 1], StackGAN-v2's terms)."""
    from ganstack.losses import colour_mean_cov

    names = list(ctx.extra_images) + ["image"]
    if len(names) < 2:
        return {}
    stats = []
    for name in names:
        x = ctx.extra_images[name] if name != "image" else ctx.images
        stats.append(colour_mean_cov(x.double() / 127.5 - 1.0))
    out: dict[str, float] = {}
    for (mu0, cov0), (mu1, cov1), lo, hi in zip(stats, stats[1:], names, names[1:]):
        tag = f"{count_tag(ctx.n)}_{lo}_{hi}"
        out[f"colour_mean{tag}"] = float((mu1 - mu0).pow(2).sum(1).mean())
        out[f"colour_cov{tag}"] = float((cov1 - cov0).pow(2).sum((1, 2)).mean())
    return out


def caption_consistency(pred: torch.Tensor, target: torch.Tensor, mentioned: torch.Tensor,
                        names: list[str]) -> dict[str, float]:
    """How well predicted attributes match those a caption names: ``attr``, the share of
    (sample, named attribute) pairs predicted right; ``all``, the share of samples with every
    named attribute right; and the share right per attribute."""
    right = (pred == target) & mentioned
    out = {"attr": float(right.sum() / mentioned.sum().clamp(min=1)),
           "all": float((right == mentioned).all(1).double().mean())}
    for a, name in enumerate(names):
        m = mentioned[:, a]
        if m.any():
            out[name] = float(right[m, a].double().mean())
    return out


@METRICS.register("caption")
def caption_metric(ctx: EvalContext) -> dict[str, float]:
    """Caption consistency: predicted attributes (the domain classifier's attribute heads) of
    each sample against those its caption names, for every output scale; `_shuffled`: the same
    against other samples' captions (what an image that ignores its caption scores)."""
    if "attributes" not in ctx.targets:
        return {}
    clf, meta = ctx.classifier()
    if not len(clf.attribute_heads):
        raise GanstackError("the domain classifier has no attribute heads: caption consistency "
                            "needs a dataset with attributes (e.g. shapes)")
    target, mentioned = ctx.targets["attributes"], ctx.targets["mentions"].bool()
    names = ctx.reference.meta.get("attributes") or [str(i) for i in range(target.shape[1])]
    perm = torch.randperm(len(target), generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {}
    tag = f"{count_tag(ctx.n)}_{meta['name']}"
    sources = {"": ctx.images} | {f"_{k}": ctx.scaled(k) for k in ctx.extra_images}
    for suffix, images in sources.items():
        pred = clf.predict_attributes(images)
        for kind, (t, m) in {"": (target, mentioned),
                             "_shuffled": (target[perm], mentioned[perm])}.items():
            res = caption_consistency(pred, t, m, names)
            out[f"caption_attr{tag}{suffix}{kind}"] = res["attr"]
            out[f"caption_all{tag}{suffix}{kind}"] = res["all"]
            if not suffix and not kind:
                out.update({f"caption_{n}{tag}": v for n, v in res.items()
                            if n not in ("attr", "all")})
    return out


def caption_targets(ds: ImageDataset, n: int, seed: int = 0
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``n`` captions of ``ds`` (every image in turn, in a seeded order, one random caption
    each): the ``text`` conditions to sample with, and the attributes they name."""
    emb = ds.extras.get("embeddings")
    if emb is None:
        raise GanstackError(f"dataset '{ds.name}' has no caption embeddings to condition on")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=g)
    idx = order.repeat((n + len(ds) - 1) // len(ds))[:n]
    cap = torch.randint(emb.shape[1], (n,), generator=g)
    targets = {}
    if "attributes" in ds.extras and "mentions" in ds.extras:
        targets = {"attributes": ds.extras["attributes"][idx],
                   "mentions": ds.extras["mentions"][idx, cap]}
    return {"text": emb[idx, cap]}, targets


@METRICS.register("acc")
def conditional_accuracy(ctx: EvalContext) -> dict[str, float]:
    """Share of samples the domain classifier assigns to the class they were conditioned on,
    and the smallest share of samples predicted as any one class (mode-dropping check)."""
    if ctx.labels is None:
        return {}
    probs = ctx.outputs("classifier", "fake")[1]
    pred = probs.argmax(1)
    tag = f"{count_tag(ctx.n)}_{ctx.extractor_tag('classifier')}"
    k = probs.shape[1]
    share = torch.bincount(pred, minlength=k).double() / len(pred)
    return {
        f"acc{tag}": float((pred == ctx.labels).double().mean()),
        f"class_share_min{tag}": float(share.min()),
    }


@METRICS.register("fid_inception")
def fid_inception(ctx: EvalContext) -> dict[str, float]:
    """FID with NVIDIA's TorchScript Inception (file supplied by the user)."""
    return _fid(ctx, "inception")


@METRICS.register("kid_inception")
def kid_inception(ctx: EvalContext) -> dict[str, float]:
    """KID with NVIDIA's TorchScript Inception (file supplied by the user)."""
    return _kid(ctx, "inception")


@METRICS.register("is_inception")
def is_inception(ctx: EvalContext) -> dict[str, float]:
    """Inception Score (1008-way softmax of the TorchScript Inception), 10 splits."""
    return _is(ctx, "inception")


def evaluate(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    reference: ImageDataset,
    held_out: ImageDataset | None,
    metrics: list[str],
    inception_path: str | None = None,
    extra_images: dict[str, torch.Tensor] | None = None,
    targets: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Compute ``metrics`` for uint8 ``images``; returns {"metrics": ..., "protocol": ...}.

    ``extra_images``: a multi-scale model's coarser outputs (uint8), for ``fid_scales`` and
    the per-scale caption consistency. ``targets``: what each sample was conditioned on (see
    :func:`caption_targets`)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise GanstackError("evaluate() takes uint8 images of shape (N, C, H, W)")
    if tuple(images.shape[1:]) != reference.shape:
        raise GanstackError(
            f"generated images have shape {tuple(images.shape[1:])}, the reference data "
            f"{reference.shape}"
        )
    ctx = EvalContext(images, labels, reference, held_out, inception_path,
                      dict(extra_images or {}), dict(targets or {}))
    results: dict[str, float] = {}
    for name in metrics:
        results.update(METRICS.get(name, what="metric")(ctx))
    protocol: dict = {"num_samples": ctx.n, "reference": f"{reference.name} ({len(reference)})"}
    if ctx._classifier is not None:
        meta = ctx._classifier[1]
        protocol["classifier"] = meta
        # What real held-out images score under the same classifier: the ceiling to compare with.
        if held_out is not None and held_out.labels is not None:
            clf = ctx._classifier[0]
            f, p = clf.predict(held_out.images)
            acc = float((p.argmax(1) == held_out.labels).double().mean())
            real = {f"real_{held_out.name}_acc": acc}
            if len(held_out) >= 10:
                real[f"real_{held_out.name}_is"] = shuffled_inception_score(p)[0]
            fake_stats = FeatureStats()
            fake_stats.append(f)
            ref_stats = FeatureStats()
            ref_stats.append(ctx.outputs("classifier", "real")[0])
            real[f"real_{held_out.name}_fid_vs_{ctx.ref_tag}"] = frechet_distance(
                *fake_stats.mean_cov(), *ref_stats.mean_cov()
            )
            if "attributes" in held_out.extras and len(clf.attribute_heads):
                # Each real held-out image against one of its own captions: the ceiling.
                mentions = held_out.extras["mentions"]
                cap = torch.randint(mentions.shape[1], (len(held_out),),
                                    generator=torch.Generator().manual_seed(0))
                res = caption_consistency(clf.predict_attributes(held_out.images),
                                          held_out.extras["attributes"],
                                          mentions[torch.arange(len(held_out)), cap].bool(),
                                          held_out.meta.get("attributes") or [])
                real[f"real_{held_out.name}_caption_attr"] = res["attr"]
                real[f"real_{held_out.name}_caption_all"] = res["all"]
            protocol["real_data"] = real
    if ctx._inception is not None:
        protocol["inception_sha256"] = getattr(ctx._inception, "sha256", None)
    return {"metrics": results, "protocol": protocol}


def images_from_npz(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a sample file in ganstack's npz format: ``images`` uint8 (N, H, W, C), ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            images = f["images"]
            labels = f["labels"] if "labels" in f.files else None
    except (OSError, ValueError, KeyError) as e:
        raise GanstackError(f"{path} is not a sample file with an 'images' array: {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise GanstackError(f"{path}: 'images' must be uint8 (N, H, W, C), got {images.dtype} "
                            f"{images.shape}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return x, y
