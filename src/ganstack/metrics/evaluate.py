"""Evaluation: a registry of metrics computed on generated samples, and their calibration.

Every metric's name carries its protocol: sample count, feature extractor and reference split,
e.g. ``fid5k_mnist5kcnn_train4500`` is the FID of 5,000 samples against the 4,500 training
images in the feature space of ganstack's own MNIST-5k classifier. Every domain metric is
computed in two independent feature spaces (``...cnn`` and ``...alt``: two classifiers of
different architectures and seeds), so a model tuned against one judge is checked by another.

A figure means something only beside its calibration: :func:`evaluate` also scores, with the
same metrics at the held-out set's size, the real held-out images (the ceiling), the same
images Gaussian-blurred with sigma 1 and 2 px (floors), and the model's samples against
shuffled conditions (the condition-blind control); see :func:`calibration_rows`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.fileio import check_npz
from ganstack.metrics.classifier import DomainClassifier, cache_dir, get_classifier, recipe_for
from ganstack.metrics.fid import frechet_distance, inception_score, kernel_inception_distance
from ganstack.metrics.prdc import prdc
from ganstack.metrics.stats import FeatureStats
from ganstack.registry import Registry, count_tag

log = logging.getLogger("ganstack")


_COUNT = re.compile(r"^([a-z_]*?[a-z])(\d+k?)(_.*)?$")


def strip_count(name: str) -> str:
    """A metric name without its sample count, to line up figures computed at different
    counts: 'fid5k_mnist5kcnn_train4500' -> 'fid_mnist5kcnn_train4500'."""
    m = _COUNT.match(name)
    return name if m is None else m.group(1) + (m.group(3) or "")


# The feature spaces every domain metric is computed in: ganstack's two classifiers.
DOMAIN_EXTRACTORS = ("classifier", "alt")


def reference_cache_dir() -> Path:
    """Where reference features are cached, keyed by dataset content, size and extractor."""
    return cache_dir() / "refstats"


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
    device: str | torch.device = "cpu"  # where the feature extractors run
    # Reference statistics from a file (``--ref FILE.npz``), by extractor: FID uses them
    # instead of the reference images' features.
    ref_stats: dict[str, FeatureStats] = field(default_factory=dict)
    # A label for the reference in metric names (default: train<N>).
    ref_label: str | None = None
    # Other real images to compare with (``--ref eval``); the classifiers still train on
    # ``reference``.
    ref_images: ImageDataset | None = None
    # The model that made the images, for the metrics that measure its networks
    # (``ganstack.metrics.measures``); None for images alone.
    model: object | None = None
    _classifiers: dict[str, tuple[DomainClassifier, dict]] = field(default_factory=dict)
    _inception: object | None = None
    _cache: dict = field(default_factory=dict)
    # Features of the reference images, shared with the calibration's sub-contexts.
    _shared: dict = field(default_factory=dict)

    @property
    def _classifier(self) -> tuple[DomainClassifier, dict] | None:
        return self._classifiers.get("classifier")

    def derived(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        targets: dict[str, torch.Tensor] | None = None,
    ) -> EvalContext:
        """A context for other images (a calibration row) that shares this one's
        extractors and reference features."""
        return EvalContext(
            images,
            labels,
            self.reference,
            self.held_out,
            self.inception_path,
            {},
            dict(targets or {}),
            self.device,
            self.ref_stats,
            self.ref_label,
            self.ref_images,
            None,
            self._classifiers,
            self._inception,
            {},
            self._shared,
        )

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def ref_tag(self) -> str:
        return self.ref_label or f"train{len(self.reference)}"

    def tag_for(self, extractor: str) -> str:
        """The reference's name in a metric of ``extractor`` (a statistics file serves only
        the extractors it holds; the others compare with the training split)."""
        if self.ref_stats and extractor not in self.ref_stats:
            return f"train{len(self.reference)}"
        return self.ref_tag

    @property
    def compared(self) -> ImageDataset:
        """The real images FID, KID and precision/recall compare with."""
        return self.ref_images if self.ref_images is not None else self.reference

    def classifier(self, which: str = "classifier") -> tuple[DomainClassifier, dict]:
        """A domain classifier (``classifier`` or ``alt``) and its record, trained on the
        reference split (cached on disk)."""
        if which not in self._classifiers:
            recipe = recipe_for(self.reference, "cnn" if which == "classifier" else which)
            clf, meta = get_classifier(self.reference, self.held_out, recipe)
            self._classifiers[which] = (clf.to(self.device), meta)
        return self._classifiers[which]

    def vs_model(self):
        """The joint image-caption embedding of VS similarity and its record, trained on the
        reference split (cached on disk)."""
        if "vs" not in self._shared:
            from ganstack.metrics.vs import get_vs_model

            model, meta = get_vs_model(self.reference, self.held_out)
            self._shared["vs"] = (model.to(self.device), meta)
        return self._shared["vs"]

    def inception(self):
        if self._inception is None:
            from ganstack.metrics.inception import InceptionExtractor

            self._inception = InceptionExtractor(self.inception_path, self.device)
        return self._inception

    def extractor_id(self, extractor: str) -> str:
        """What identifies an extractor's weights, for the reference-statistics cache."""
        if extractor == "inception":
            return "inception-" + str(getattr(self.inception(), "sha256", ""))[:16]
        meta = self.classifier(extractor)[1]
        blob = json.dumps([meta.get("recipe"), meta.get("dataset_hash")], sort_keys=True)
        return f"{meta['name']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def _extract(self, extractor: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if extractor != "inception":
            return self.classifier(extractor)[0].predict(images)
        net = self.inception()
        feats, probs = [], []
        for s in range(0, len(images), 200):
            f, p = net(images[s : s + 200])
            feats.append(f.float().cpu())
            probs.append(p.float().cpu())
        return torch.cat(feats), torch.cat(probs)

    def reference_features(self, extractor: str) -> FeatureStats:
        """Features of the reference images (with their raw values), from the on-disk cache
        when an earlier evaluation computed them. The cache key holds everything that changes
        them: the dataset's content hash, its size, and the extractor's weights."""
        key = ("ref", extractor)
        if key in self._shared:
            return self._shared[key]
        ref = self.compared
        name = f"{ref.name}-{ref.fingerprint()[:16]}-n{len(ref)}-{self.extractor_id(extractor)}"
        path = reference_cache_dir() / f"{name}.npz"
        stats = None
        if path.is_file():
            try:
                stats = FeatureStats.load(path)
                if stats.num_items != len(ref) or not stats.keep_features:
                    stats = None
            except GanstackError as e:
                log.warning("ignoring the reference statistics cache %s: %s", path, e)
                stats = None
        if stats is None:
            stats = FeatureStats(keep_features=True)
            stats.append(self._extract(extractor, ref.images)[0])
            try:
                stats.save(
                    path,
                    {
                        "dataset": ref.name,
                        "fingerprint": ref.fingerprint(),
                        "extractor": self.extractor_id(extractor),
                    },
                )
            except GanstackError as e:  # a read-only cache folder is no reason to fail
                log.warning("%s", e)
        else:
            log.info("reference features from the cache: %s", path)
        self._shared[key] = stats
        return stats

    def scaled(self, name: str) -> torch.Tensor:
        """A coarser output enlarged (bilinear) to the reference size, as uint8."""
        key = ("scaled", name)
        if key not in self._cache:
            x = self.extra_images[name].float()
            size = self.reference.shape[1:]
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            self._cache[key] = x.round().clamp(0, 255).to(torch.uint8)
        return self._cache[key]

    def real_at(self, name: str) -> torch.Tensor:
        """The reference images brought to the scale of coarser output ``name``: shrunk to its
        size (area averaging) and enlarged back (bilinear), as uint8."""
        key = ("real_at", name)
        if key not in self._cache:
            size = tuple(self.extra_images[name].shape[-2:])
            x = torch.nn.functional.interpolate(
                self.reference.images.float(), size=size, mode="area"
            )
            x = torch.nn.functional.interpolate(
                x, size=self.reference.shape[1:], mode="bilinear", align_corners=False
            )
            self._cache[key] = x.round().clamp(0, 255).to(torch.uint8)
        return self._cache[key]

    def outputs(self, extractor: str, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, probabilities) of the generated (``fake``), reference (``real``: no
        probabilities) images or a coarser output enlarged to the final size (``scale:NAME``)."""
        if which == "real":
            return torch.from_numpy(self.reference_features(extractor).features()), None
        cache = self._shared if which.startswith("real_at:") else self._cache
        key = (extractor, which)
        if key not in cache:
            if which.startswith("scale:"):
                images = self.scaled(which.split(":", 1)[1])
            elif which.startswith("real_at:"):
                images = self.real_at(which.split(":", 1)[1])
            else:
                images = self.images
            cache[key] = self._extract(extractor, images)
        return cache[key]

    def reference_stats(self, extractor: str, real: str = "real") -> tuple[np.ndarray, np.ndarray]:
        if real == "real" and extractor in self.ref_stats:
            return self.ref_stats[extractor].mean_cov()
        if real == "real":
            return self.reference_features(extractor).mean_cov()
        s = FeatureStats()
        s.append(self.outputs(extractor, real)[0])
        return s.mean_cov()

    def extractor_tag(self, extractor: str) -> str:
        return "inception" if extractor == "inception" else self.classifier(extractor)[1]["name"]


MetricFn = Callable[[EvalContext], dict[str, float]]
METRICS: Registry[MetricFn] = Registry("metric")


def _fid(
    ctx: EvalContext, extractor: str, fake: str = "fake", suffix: str = "", real: str = "real"
) -> dict[str, float]:
    s = FeatureStats()
    s.append(ctx.outputs(extractor, fake)[0])
    m1, s1 = s.mean_cov()
    m2, s2 = ctx.reference_stats(extractor, real)
    name = f"fid{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}_{ctx.tag_for(extractor)}{suffix}"
    return {name: frechet_distance(m1, s1, m2, s2)}


def _each_domain(
    fn: Callable[[EvalContext, str], dict[str, float]],
) -> Callable[[EvalContext], dict[str, float]]:
    def run(ctx: EvalContext) -> dict[str, float]:
        out: dict[str, float] = {}
        for extractor in DOMAIN_EXTRACTORS:
            out.update(fn(ctx, extractor))
        return out

    return run


def _no_stats_file(ctx: EvalContext, extractor: str, what: str) -> None:
    if extractor in ctx.ref_stats:
        raise GanstackError(
            f"{what} needs the reference images' features, not only their "
            f"statistics: a --ref statistics file serves FID alone"
        )


def _kid(ctx: EvalContext, extractor: str) -> dict[str, float]:
    _no_stats_file(ctx, extractor, "KID")
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
    mean, std = shuffled_inception_score(ctx.outputs(extractor, "fake")[1])  # type: ignore[arg-type]
    name = f"is{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}"
    return {name: mean, f"{name}_std": std}


def _prdc(ctx: EvalContext, extractor: str) -> dict[str, float]:
    _no_stats_file(ctx, extractor, "precision and recall")
    res = prdc(ctx.outputs(extractor, "real")[0], ctx.outputs(extractor, "fake")[0], k_pr=3, k_dc=5)
    tag = f"{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}_{ctx.ref_tag}"
    return {
        f"precision{tag}_k3": res["precision"],
        f"recall{tag}_k3": res["recall"],
        f"density{tag}_k5": res["density"],
        f"coverage{tag}_k5": res["coverage"],
    }


@METRICS.register("fid")
def fid_classifier(ctx: EvalContext) -> dict[str, float]:
    """FID in both domain classifiers' feature spaces against the training split."""
    return _each_domain(_fid)(ctx)


@METRICS.register("kid")
def kid_classifier(ctx: EvalContext) -> dict[str, float]:
    """KID (cubic kernel, 100 subsets) in both domain classifiers' feature spaces."""
    return _each_domain(_kid)(ctx)


@METRICS.register("is")
def is_classifier(ctx: EvalContext) -> dict[str, float]:
    """Inception-style score with each domain classifier's posterior, 10 splits."""
    return _each_domain(_is)(ctx)


@METRICS.register("prdc")
def prdc_classifier(ctx: EvalContext) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019, k=3) and density and coverage (Naeem
    et al. 2020, k=5) in both domain classifiers' feature spaces: low recall and coverage
    show a lack of variety."""
    return _each_domain(_prdc)(ctx)


@METRICS.register("prdc_inception")
def prdc_inception(ctx: EvalContext) -> dict[str, float]:
    """Precision, recall (k=3), density and coverage (k=5) in the Inception feature space."""
    return _prdc(ctx, "inception")


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
        out.update(
            _fid(ctx, "classifier", f"scale:{name}", f"_{name}_matched", real=f"real_at:{name}")
        )
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


def caption_consistency(
    pred: torch.Tensor, target: torch.Tensor, mentioned: torch.Tensor, names: list[str]
) -> dict[str, float]:
    """How well predicted attributes match those a caption names: ``attr``, the share of
    (sample, named attribute) pairs predicted right; ``all``, the share of samples with every
    named attribute right; and the share right per attribute."""
    right = (pred == target) & mentioned
    out = {
        "attr": float(right.sum() / mentioned.sum().clamp(min=1)),
        "all": float((right == mentioned).all(1).double().mean()),
    }
    for a, name in enumerate(names):
        m = mentioned[:, a]
        if m.any():
            out[name] = float(right[m, a].double().mean())
    return out


@METRICS.register("caption")
def caption_metric(ctx: EvalContext) -> dict[str, float]:
    """Caption consistency: predicted attributes (the domain classifier's attribute heads) of
    each sample against those its caption names, for every output scale and per attribute;
    `_shuffled`: the same against other samples' captions (the condition-blind control: what
    an image that ignores its caption scores)."""
    if "attributes" not in ctx.targets:
        return {}
    clf, meta = ctx.classifier()
    if not len(clf.attribute_heads):
        raise GanstackError(
            "the domain classifier has no attribute heads: caption consistency "
            "needs a dataset with attributes (e.g. shapes)"
        )
    target, mentioned = ctx.targets["attributes"], ctx.targets["mentions"].bool()
    names = ctx.reference.meta.get("attributes") or [str(i) for i in range(target.shape[1])]
    perm = torch.randperm(len(target), generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {}
    tag = f"{count_tag(ctx.n)}_{meta['name']}"
    sources = {"": ctx.images} | {f"_{k}": ctx.scaled(k) for k in ctx.extra_images}
    for suffix, images in sources.items():
        pred = clf.predict_attributes(images)
        for kind, (t, m) in {
            "": (target, mentioned),
            "_shuffled": (target[perm], mentioned[perm]),
        }.items():
            res = caption_consistency(pred, t, m, names)
            out[f"caption_attr{tag}{suffix}{kind}"] = res["attr"]
            out[f"caption_all{tag}{suffix}{kind}"] = res["all"]
            if not suffix:  # per attribute, and the condition-blind control of each
                out.update(
                    {
                        f"caption_{n}{tag}{kind}": v
                        for n, v in res.items()
                        if n not in ("attr", "all")
                    }
                )
    return out


def caption_targets(
    ds: ImageDataset, n: int, seed: int = 0
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
    targets = {"text": emb[idx, cap]}  # for VS similarity
    if "attributes" in ds.extras and "mentions" in ds.extras:
        targets |= {
            "attributes": ds.extras["attributes"][idx],
            "mentions": ds.extras["mentions"][idx, cap],
        }
    return {"text": emb[idx, cap]}, targets


@METRICS.register("vs")
def vs_similarity(ctx: EvalContext) -> dict[str, float]:
    """Visual-semantic similarity (HDGAN, Zhang et al., CVPR 2018): the mean cosine of each
    sample and the caption it was generated from in a joint image-caption embedding trained on
    the reference split (:mod:`ganstack.metrics.vs`), with its std over samples, for every
    output scale; `_shuffled`: against other samples' captions (the floor). Real held-out
    images with their own captions (the ceiling) are the calibration's `real` row."""
    if "text" not in ctx.targets:
        return {}
    model, meta = ctx.vs_model()
    text = ctx.targets["text"]
    perm = torch.randperm(len(text), generator=torch.Generator().manual_seed(0))
    tag = f"{count_tag(ctx.n)}_{meta['name']}"
    out: dict[str, float] = {}
    sources = {"": ctx.images} | {f"_{k}": ctx.scaled(k) for k in ctx.extra_images}
    for suffix, images in sources.items():
        for kind, t in {"": text, "_shuffled": text[perm]}.items():
            sim = model.similarity(images, t)
            out[f"vs{tag}{suffix}{kind}"] = float(sim.mean())
            out[f"vs_std{tag}{suffix}{kind}"] = float(sim.std()) if len(sim) > 1 else 0.0
    return out


def _acc(ctx: EvalContext, extractor: str) -> dict[str, float]:
    if ctx.labels is None:
        return {}
    probs = ctx.outputs(extractor, "fake")[1]
    assert probs is not None
    pred = probs.argmax(1)
    tag = f"{count_tag(ctx.n)}_{ctx.extractor_tag(extractor)}"
    k = probs.shape[1]
    share = torch.bincount(pred, minlength=k).double() / len(pred)
    perm = torch.randperm(len(pred), generator=torch.Generator().manual_seed(0))
    return {
        f"acc{tag}": float((pred == ctx.labels).double().mean()),
        f"acc{tag}_shuffled": float((pred == ctx.labels[perm]).double().mean()),
        f"class_share_min{tag}": float(share.min()),
    }


@METRICS.register("acc")
def conditional_accuracy(ctx: EvalContext) -> dict[str, float]:
    """Share of samples each domain classifier assigns to the class they were conditioned on;
    `_shuffled`: against shuffled labels (the condition-blind control); and the smallest
    share of samples predicted as any one class (mode-dropping check)."""
    return _each_domain(_acc)(ctx)


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


# Metrics whose figures are calibrated (scored on real, blurred-real and blind sets too).
CALIBRATED = (
    "acc",
    "is",
    "fid",
    "kid",
    "prdc",
    "caption",
    "vs",
    "fid_inception",
    "kid_inception",
    "is_inception",
    "prdc_inception",
)
BLUR_SIGMAS = (1.0, 2.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 (N, C, H, W) images blurred by a Gaussian of ``sigma`` px (kernel radius
    ceil(3 sigma), reflected borders), as uint8."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = images.shape
    x = images.float().reshape(n * c, 1, h, w)
    pad = (min(radius, w - 1), min(radius, w - 1), min(radius, h - 1), min(radius, h - 1))
    x = torch.nn.functional.pad(x, pad, mode="reflect") if min(h, w) > 1 else x
    kh = k[radius - pad[2] : radius + pad[3] + 1].view(1, 1, -1, 1)
    kw = k[radius - pad[0] : radius + pad[1] + 1].view(1, 1, 1, -1)
    x = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, kh / kh.sum()), kw / kw.sum())
    return x.reshape(n, c, h, w).round().clamp(0, 255).to(torch.uint8)


def held_out_targets(held_out: ImageDataset) -> dict[str, torch.Tensor]:
    """Each held-out image's attributes and the attributes named by one of its own captions
    (seeded), for caption consistency of real images; and that caption's embedding (``text``),
    for VS similarity."""
    emb = held_out.extras.get("embeddings")
    has_attributes = "attributes" in held_out.extras and "mentions" in held_out.extras
    if emb is None and not has_attributes:
        return {}
    count = emb.shape[1] if emb is not None else held_out.extras["mentions"].shape[1]
    cap = torch.randint(count, (len(held_out),), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(held_out))
    out = {} if emb is None else {"text": emb[rows, cap]}
    if has_attributes:
        out |= {
            "attributes": held_out.extras["attributes"],
            "mentions": held_out.extras["mentions"][rows, cap],
        }
    return out


def calibration_rows(ctx: EvalContext, metrics: list[str]) -> dict | None:
    """The calibration of ``metrics``, every row at the held-out set's size N:

    * ``model``: the first N generated samples (so that count-biased figures such as FID are
      compared at equal N);
    * ``real``: the real held-out images (the ceiling);
    * ``blur1``, ``blur2``: the same images Gaussian-blurred, sigma 1 and 2 px (floors);
    * ``blind``: the model's samples scored against shuffled labels or captions (the
      condition-blind control; conditional metrics only).

    Row keys are metric names without their sample count (:func:`strip_count`). None when
    there is no labelled held-out set."""
    held = ctx.held_out
    names = [m for m in metrics if m in CALIBRATED]
    if held is None or not names or len(held) < 10:
        return None
    n = min(len(held), ctx.n)

    def score(sub: EvalContext) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in names:
            out.update(METRICS.get(name, what="metric")(sub))
        return {strip_count(k): v for k, v in out.items()}

    model_labels = None if ctx.labels is None else ctx.labels[:n]
    model = score(
        ctx.derived(ctx.images[:n], model_labels, {k: v[:n] for k, v in ctx.targets.items()})
    )
    rows: dict[str, dict[str, float]] = {
        "model": {k: v for k, v in model.items() if not k.endswith("_shuffled")},
        "blind": {
            k.removesuffix("_shuffled"): v for k, v in model.items() if k.endswith("_shuffled")
        },
    }
    labels = held.labels if ctx.labels is not None else None
    targets = held_out_targets(held) if ctx.targets else {}
    real = score(
        ctx.derived(
            held.images[:n],
            None if labels is None else labels[:n],
            {k: v[:n] for k, v in targets.items()},
        )
    )
    rows["real"] = {k: v for k, v in real.items() if not k.endswith("_shuffled")}
    for sigma in BLUR_SIGMAS:
        blurred = score(
            ctx.derived(
                gaussian_blur(held.images[:n], sigma),
                None if labels is None else labels[:n],
                {k: v[:n] for k, v in targets.items()},
            )
        )
        rows[f"blur{sigma:g}"] = {k: v for k, v in blurred.items() if not k.endswith("_shuffled")}
    if not rows["blind"]:
        del rows["blind"]
    return {"n": n, "held_out": held.name, "blur_sigmas": list(BLUR_SIGMAS), "rows": rows}


def evaluate(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    reference: ImageDataset,
    held_out: ImageDataset | None,
    metrics: list[str],
    inception_path: str | None = None,
    extra_images: dict[str, torch.Tensor] | None = None,
    targets: dict[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    calibrate: bool = True,
    ref_stats: dict[str, FeatureStats] | None = None,
    ref_label: str | None = None,
    ref_images: ImageDataset | None = None,
    model: object | None = None,
) -> dict:
    """Compute ``metrics`` for uint8 ``images``; returns {"metrics": ..., "protocol": ...}.

    ``extra_images``: a multi-scale model's coarser outputs (uint8), for ``fid_scales`` and
    the per-scale caption consistency. ``targets``: what each sample was conditioned on (see
    :func:`caption_targets`). ``calibrate``: add ``protocol["calibration"]``
    (:func:`calibration_rows`). ``ref_stats``: reference statistics by extractor (a
    ``--ref FILE.npz``) that FID uses instead of ``reference``'s features; ``ref_label``
    names the reference in metric names; ``ref_images``: other real images to compare with
    (the classifiers still train on ``reference``); ``model``: the model that made the images,
    for the measures of its networks (:mod:`ganstack.metrics.measures`)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise GanstackError("evaluate() takes uint8 images of shape (N, C, H, W)")
    if tuple(images.shape[1:]) != reference.shape:
        raise GanstackError(
            f"generated images have shape {tuple(images.shape[1:])}, the reference data "
            f"{reference.shape}"
        )
    ctx = EvalContext(
        images,
        labels,
        reference,
        held_out,
        inception_path,
        dict(extra_images or {}),
        dict(targets or {}),
        device,
        dict(ref_stats or {}),
        ref_label,
        ref_images,
        model,
    )
    results: dict[str, float] = {}
    for name in metrics:
        results.update(METRICS.get(name, what="metric")(ctx))
    protocol: dict = {
        "num_samples": ctx.n,
        "reference": f"{ctx.compared.name} ({len(ctx.compared)})",
    }
    if ref_stats:
        protocol["reference_stats"] = {k: getattr(v, "metadata", {}) for k, v in ref_stats.items()}
    if calibrate and not ref_stats and ref_images is None:
        calibration = calibration_rows(ctx, list(metrics))
        if calibration is not None:
            protocol["calibration"] = calibration
    if ctx._classifier is not None:
        protocol["classifier"] = ctx._classifier[1]
        # The classifiers' training data, without the float extras: a baseline scored on
        # another CPU by classifiers trained on the same data is comparable (attach_baseline).
        protocol["judge_data"] = ctx.reference.fingerprint(floats=False)
        if "alt" in ctx._classifiers:
            protocol["classifier_alt"] = ctx._classifiers["alt"][1]
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
            real[f"real_{held_out.name}_fid_vs_{ctx.ref_tag}"] = frechet_distance(
                *fake_stats.mean_cov(), *ctx.reference_stats("classifier")
            )
            targets_real = held_out_targets(held_out)
            if "attributes" in targets_real and len(clf.attribute_heads):
                # Each real held-out image against one of its own captions: the ceiling.
                res = caption_consistency(
                    clf.predict_attributes(held_out.images),
                    targets_real["attributes"],
                    targets_real["mentions"].bool(),
                    held_out.meta.get("attributes") or [],
                )
                real[f"real_{held_out.name}_caption_attr"] = res["attr"]
                real[f"real_{held_out.name}_caption_all"] = res["all"]
            protocol["real_data"] = real
    if ctx._inception is not None:
        protocol["inception_sha256"] = getattr(ctx._inception, "sha256", None)
    return {"metrics": results, "protocol": protocol}


class MeanCov:
    """Reference statistics known only by their mean and covariance (a pytorch-fid npz)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, metadata: dict | None = None) -> None:
        self.mu, self.sigma, self.metadata = mu, sigma, dict(metadata or {})

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mu, self.sigma


def reference_option(
    ref: str, train: ImageDataset, held_out: ImageDataset | None
) -> tuple[ImageDataset | None, dict, str | None]:
    """What ``--ref`` names: ``train`` (default), ``eval`` (the held-out split) or a
    statistics file for the Inception metrics. Returns (ref_images, ref_stats, ref_label)."""
    if ref in ("", "train"):
        return None, {}, None
    if ref == "eval":
        if held_out is None or not len(held_out):
            raise GanstackError(
                "--ref eval: this config holds no images out (data.eval_size is 0); use --ref train"
            )
        return held_out, {}, f"eval{len(held_out)}"
    from ganstack.metrics.compare import read_stats_file

    path = Path(ref)
    if path.suffix != ".npz":
        raise GanstackError(f"--ref must be train, eval or a statistics .npz file, got {ref!r}")
    stats = read_stats_file(path)
    if stats is None:
        raise GanstackError(
            f"--ref {ref}: the file holds images, not statistics; use "
            f"`ganstack fid` to compare image sets"
        )
    mu, sigma = stats
    if mu.shape != (2048,):
        raise GanstackError(
            f"--ref {ref}: {mu.shape[0]}-d statistics; a statistics file is "
            f"for the Inception metrics (2048-d pool features)"
        )
    label = "ref-" + re.sub(r"[^A-Za-z0-9]+", "-", path.stem)[:40]
    return None, {"inception": MeanCov(mu, sigma, {"file": str(path)})}, label


def baseline_path(name: str) -> Path:
    """A bundled baseline by name (ganstack/configs/baselines/NAME.json), or a .json path."""
    if name.endswith(".json"):
        return Path(name).expanduser()
    return Path(__file__).resolve().parents[1] / "configs" / "baselines" / f"{name}.json"


def attach_baseline(result: dict, name: str) -> None:
    """Add the bundled baseline ``name`` (benchmarks/baseline.py --bundle) to ``result``: its
    metrics under ``protocol.baseline`` and, when it was scored at the same calibration size
    with the same classifiers, its row ``baseline`` among the calibration rows."""
    path = baseline_path(name)
    if not path.is_file():
        log.info("no bundled baseline %s (run benchmarks/baseline.py %s --bundle)", path, name)
        return
    try:
        base = json.loads(path.read_text())
        metrics, protocol = base["metrics"], base["protocol"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the bundled baseline %s: %s", path, e)
        return
    info = {
        k: base.get(k) for k in ("recipe", "minutes", "budget", "seed", "steps", "cpu", "command")
    }
    result["protocol"]["baseline"] = info | {"metrics": metrics}
    ours, theirs = result["protocol"].get("calibration"), protocol.get("calibration")
    same_judge = _judge_data(protocol) == _judge_data(result["protocol"])
    if ours and theirs and theirs.get("n") == ours.get("n") and same_judge:
        ours["rows"]["baseline"] = theirs["rows"]["model"]


def _judge_data(protocol: dict) -> str | None:
    """What the domain classifiers of a result were trained on (older results: the training
    split's whole fingerprint, float extras included)."""
    return protocol.get("judge_data") or protocol.get("classifier", {}).get("dataset_hash")


def images_from_npz(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a sample file in ganstack's npz format: ``images`` uint8 (N, H, W, C), ``labels``."""
    try:
        check_npz(Path(path), GanstackError)
        with np.load(path, allow_pickle=False) as f:
            images = f["images"]
            labels = f["labels"] if "labels" in f.files else None
    except (OSError, ValueError, KeyError) as e:
        raise GanstackError(f"{path} is not a sample file with an 'images' array: {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise GanstackError(
            f"{path}: 'images' must be uint8 (N, H, W, C), got {images.dtype} {images.shape}"
        )
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return x, y
