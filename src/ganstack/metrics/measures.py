"""Measures of a model's networks rather than of a set of images, as ordinary metrics.

A metric here receives the model through :attr:`EvalContext.model` (stylegan2-ada's
``MetricOptions(G=...)``: a metric that needs the generator gets it), and names the capability
it needs as a :class:`typing.Protocol`; a model that lacks it, or a context without a model (an
export, images alone), gets an error that says where the measure applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import GanstackError
from ganstack.metrics.classifier import get_classifier
from ganstack.metrics.evaluate import DOMAIN_EXTRACTORS, METRICS, EvalContext, MetricFn
from ganstack.metrics.fid import frechet_distance
from ganstack.metrics.stats import FeatureStats
from ganstack.registry import count_tag
from ganstack.viz import to_uint8


@runtime_checkable
class NoiseLevels(Protocol):
    """A model whose levels each take their own noise (SGAN)."""

    def noise_sensitivity(self, train: ImageDataset) -> dict[str, float]: ...


@runtime_checkable
class NormalMaps(Protocol):
    """A model that generates surface normals and renders images from them (S²-GAN)."""

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]: ...

    def normal_consistency(self, ds: ImageDataset, n: int = 1000) -> dict[str, float]: ...

    def structure_measures(
        self, train: ImageDataset, evaluation: ImageDataset | None, n: int = 200
    ) -> dict[str, float]: ...

    def style_noise_sensitivity(
        self, train: ImageDataset, evaluation: ImageDataset | None
    ) -> dict[str, float]: ...


@runtime_checkable
class LevelChains(Protocol):
    """A model whose finer levels can be run from a real coarse image (LAPGAN)."""

    def level_accuracy(
        self, held: ImageDataset, classifiers: dict, n: int = 1000
    ) -> dict[str, float]: ...


#: The metrics of this module, which need the model itself: an export cannot give them.
MODEL_MEASURES: dict[str, str] = {}


def _measure(name: str, capability: type, system: str) -> Callable[[Callable], MetricFn]:
    """Register ``fn(model, ctx)`` as metric ``name``, for models with ``capability``."""

    def deco(fn: Callable) -> MetricFn:
        def metric(ctx: EvalContext) -> dict[str, float]:
            if not isinstance(ctx.model, capability):
                raise GanstackError(
                    f"'{name}' is one of the {system} measures, computed from the model's "
                    f"networks, not from images: use `ganstack eval RUN --metrics {name}` on "
                    f"a {system} run"
                )
            return fn(ctx.model, ctx)

        metric.__doc__, metric.__name__ = fn.__doc__, f"measure_{name}"
        MODEL_MEASURES[name] = system
        return METRICS.register(name)(metric)

    return deco


@_measure("noise", NoiseLevels, "SGAN")
def noise(model: NoiseLevels, ctx: EvalContext) -> dict[str, float]:
    """SGAN: how much each level's output moves with its own noise, against the spread of
    real features at that level (0: the level ignores it)."""
    return model.noise_sensitivity(ctx.reference)


@_measure("normal_consistency", NormalMaps, "S²-GAN")
def normal_consistency(model: NormalMaps, ctx: EvalContext) -> dict[str, float]:
    """S²-GAN: mean angle (degrees) between the normals an FCN predicts from generated images
    and the normals they were rendered from."""
    return model.normal_consistency(ctx.held_out or ctx.reference, ctx.n)


@_measure("fid_normals", NormalMaps, "S²-GAN")
def fid_normals(model: NormalMaps, ctx: EvalContext, seed: int = 0) -> dict[str, float]:
    """S²-GAN: FID of generated normal maps in the features of a classifier trained on the
    training normals."""
    train, held = ctx.reference, ctx.held_out

    def as_normals(ds: ImageDataset, suffix: str) -> ImageDataset:
        base = ds.name.removesuffix(f"-{suffix}")
        return ImageDataset(
            ds.extras["normals"], ds.labels, ds.num_classes, f"{base}-normals-{suffix}"
        )

    if "normals" not in train.extras or train.labels is None:
        lack = "no labels" if train.labels is None else "no normals"
        raise GanstackError(
            f"fid_normals needs a labelled dataset with normals (e.g. "
            f"rooms); '{train.name}' has {lack}"
        )
    ref = as_normals(train, "train")
    held_normals = (
        as_normals(held, "eval") if held is not None and "normals" in held.extras else None
    )
    clf, meta = get_classifier(ref, held_normals)
    fake = model.sample(ctx.n, generator=torch.Generator().manual_seed(seed))["normals"]
    stats = []
    for imgs in (to_uint8(fake), ref.images):
        s = FeatureStats()
        s.append(clf.predict(imgs)[0])
        stats.append(s.mean_cov())
    name = f"fid{count_tag(ctx.n)}_normals_{meta['name']}_train{len(ref)}"
    return {name: frechet_distance(*stats[0], *stats[1])}


@_measure("structure", NormalMaps, "S²-GAN")
def structure(model: NormalMaps, ctx: EvalContext) -> dict[str, float]:
    """S²-GAN: diversity (mean pairwise angle) and realism (mean angle to the nearest training
    map) of generated normal maps, 16x16, degrees; real held-out maps as calibration."""
    return model.structure_measures(ctx.reference, ctx.held_out, ctx.n)


@_measure("style_noise", NormalMaps, "S²-GAN")
def style_noise(model: NormalMaps, ctx: EvalContext) -> dict[str, float]:
    """S²-GAN: per-pixel std of the Style-GAN's renderings of fixed normals across style
    noises ([-1, 1]), beside the std across real scenes."""
    return model.style_noise_sensitivity(ctx.reference, ctx.held_out)


@_measure("level_acc", LevelChains, "LAPGAN")
def level_acc(model: LevelChains, ctx: EvalContext) -> dict[str, float]:
    """LAPGAN: class accuracy of the chain started from real coarse images at each level,
    beside the enlarged coarse images and the real images."""
    held = ctx.held_out if ctx.held_out is not None and len(ctx.held_out) else ctx.reference
    return model.level_accuracy(held, {w: ctx.classifier(w) for w in DOMAIN_EXTRACTORS}, ctx.n)
