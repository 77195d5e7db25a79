"""S²-GAN: Style and Structure GANs (Wang & Gupta, ECCV 2016).

Two levels (paper Fig. 1; the official Torch code, ``xiaolonw/ss-gan``):

- the **Structure-GAN** maps z1 (``z_struct`` = 100, uniform) to a unit surface-normal map at
  ``normal_size`` (72 in the code): transposed convs, tanh, then per-pixel L2 normalisation;
- the **Style-GAN** maps (normals C at the image size, z0 (``z_style`` = 100)) to an RGB image:
  a normal branch and a noise branch fused by channel concatenation at a quarter of the image
  size, then an encoder-decoder, tanh. Its discriminator sees the 6-channel (image, normals)
  pair (both in style-gan-nofcn/train.lua); fake pairs use the normals of *another* real frame.

A surface-normal predictor, the **FCN**, classifies every pixel of an image into ``classes``
(40) clustered normals (train_fcn.lua). The codebook is k-means on training normals (the official
``codebook_40.txt`` is not available), computed in :meth:`S2GAN.setup` and kept as a buffer so
checkpoints hold it. Inside the Style-GAN objective the frozen FCN judges generated images:

    L_G_style = BCE(D(G(z0, C), C), 1) + fcn_weight * CE(FCN(up(G(z0, C))), q(C))

with q(C) the codebook class of each pixel of C downscaled to the FCN's output size.

Phases, in order: ``structure`` (Structure-GAN), ``fcn`` (FCN on real pairs), ``style``
(Style-GAN on real normals, with the FCN constraint when ``fcn_weight`` > 0), ``joint`` (the
levels chained: the Style-GAN is conditioned on Ĉ = normalize(bilinear(G_struct(z1))); G_struct
gets 0.1 x the Style-GAN's gradient plus 1.0 x its own adversarial gradient; lr 1e-6 / 1e-7;
the FCN is not used, as in the code). One official script each: structure-gan/train.lua,
style-gan-fcn/train_fcn.lua, style-gan-fcn/train_gan.lua (style-gan-nofcn/train.lua without the
FCN), joint-ssgan/train.lua.

Defaults follow the official code (``xiaolonw/ss-gan``): its layer tables (``width`` and
``fcn_width`` scale every channel count; 1 = official), BCE with half-real/half-fake D batches
and the non-saturating G loss, Adam(2e-4, 0.5) with the code's warm-up (lr/50 for 10 calls,
lr/5 until call 30), the skip rule with margins 0.3/0.7, N(0, 0.02) conv init and
N(1, 0.02) BN scales (FCN: N(0, 0.01)), Linear layers left at the framework default, SGD for the
FCN (lr 0.01, momentum 0.9, weight decay 5e-4, 10 images a step), batch-norm statistics of the
batch when sampling (the code never calls ``evaluate()``), 128x128 conditioning normals not
re-normalised. Warm-up and skip rule: the code's adversarial_ct.lua and
conditional_adversarial_rgb.lua; init: ``weights_init`` in each train.lua.

Deviations (all documented here and in the configs):

- each step's G update conditions the Style-GAN on the normals of the whole current batch (the
  code draws a second, independent batch); the D step's fakes use the second half's normals as
  in the code;
- the FCN is trained on the dataset's images upsampled by ``fcn_upsample`` (nearest), the same
  path generated images take; the code reads its 512x512 input from the full-size frame;
- the frozen FCN inside the Style-GAN objective uses batch statistics (as the code) but does
  not update its running averages (the code's are never used, ours are used for evaluation);
- ``fcn_arch: small`` is a compact FCN (not in the code) for CPU demos; the AlexNet FCN's output
  is resized (bilinearly, logits) to a quarter of the image size when the sizes do not match;
- in the joint phase the skip rule is applied to each GAN with its own discriminator's errors
  (how the official joint script balances the two GANs was not determined).

``generate`` returns ``image`` in [0, 1], ``normals`` (Ĉ, the image-size conditioning normals)
and ``normals_struct`` (the Structure-GAN's output), both encoded as (n + 1) / 2.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ganstack.data.base import ImageDataset
from ganstack.data.rooms import decode_normals
from ganstack.errors import ConfigError, GanstackError
from ganstack.models.base import DataInfo, LogFn, StackModel, Step, Tensors
from ganstack.nn import (
    MinibatchStd,
    bn_state,
    frozen,
    init_normal_,
    resize,
    scale_grad,
    to_signed,
    to_unit,
)
from ganstack.ranges import NonNegFloat, PosFloat, PosInt, Range, Unit
from ganstack.registry import count_tag

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

MAX_WIDTH = 64.0  # the largest width / fcn_width multiplier accepted
# A channel multiplier: larger would ask for more channels than torch has.
Width = Annotated[float, Range(gt=0, le=MAX_WIDTH)]


@dataclass
class S2GANConfig:
    name: str = "s2gan"
    # Structure-GAN output size (code: 72); a multiple of 8. The image size is the dataset's
    # (code: 128), a multiple of 16.
    normal_size: int = 72
    z_struct: PosInt = 100  # Structure-GAN noise (code: 100, U(-1, 1))
    z_style: PosInt = 100  # Style-GAN noise (code: 100, U(-1, 1))
    width: Width = 1.0  # channel multiplier of the four GAN networks (1 = the official tables)
    # channel multiplier of the Style-GAN's G and D alone (0: model.width); a ganstack option
    # for CPU demos, whose small Structure-GAN renders cheaply but whose Style-GAN needs room
    style_width: Annotated[float, Range(ge=0, le=MAX_WIDTH, note="0: model.width")] = 0.0
    # Conv init N(0, init_std) (code: 0.02). With width < 1 the std is divided by sqrt(width),
    # so narrow networks keep the official activation scale (std x sqrt(fan-in)); at width 1
    # this is the code's init. Without it a width-0.125 D starts with vanishing gradients.
    init_std: PosFloat = 0.02
    d_dropout: Unit = 0.5  # dropout before the discriminators' linear layer (code: 0.5)
    d_spatial_dropout: Unit = 0.2  # SpatialDropout after D's 3rd and 4th convs (code: 0.2)
    # ---- the FCN normal predictor (style-gan-fcn/train_fcn.lua)
    fcn_arch: Literal["alexnet", "small"] = "alexnet"  # small: a compact FCN for CPU demos
    fcn_width: Width = 1.0  # channel multiplier of the FCN (1 = the official train_fcn.lua)
    fcn_upsample: PosInt = 4  # nearest upsampling of the image before the FCN (code: 4, 128->512)
    classes: Annotated[int, Range(ge=2)] = 40  # codebook size k (code: 40)
    codebook_samples: PosInt = 100_000  # training-normal pixels the k-means runs on
    codebook_iters: PosInt = 25  # spherical k-means iterations
    codebook_seed: int = 0
    # images of each batch the FCN trains on (code: 10; 0: all)
    fcn_batch_size: Annotated[int, Range(ge=0, note="0: the whole batch")] = 10
    fcn_lr: PosFloat = 0.01  # SGD (code: 0.01, momentum 0.9, weight decay 5e-4)
    fcn_momentum: Unit = 0.9
    fcn_weight_decay: NonNegFloat = 5e-4
    # ---- losses
    fcn_weight: NonNegFloat = 0.1  # lambda of the FCN constraint in the style phase (0: "nofcn")
    joint_fcn_weight: NonNegFloat = 0.0  # the FCN constraint in the joint phase (code: not used)
    # Mode-seeking term of the Style-GAN's G in the style phase (Mao et al., "Mode Seeking
    # GANs", CVPR 2019, Eq. 3): weight / (mean |G(z1, C) - G(z2, C)| / mean |z1 - z2| + 1e-5)
    # on a second rendering of the batch's normals with other noise, so that the style noise
    # changes the image. 0 = off (code and paper; a ganstack option, one more G pass a step).
    style_mode_seeking: NonNegFloat = 0.0
    # The same term for the Structure-GAN in the structure phase: weight / (mean |G(z1) -
    # G(z2)| / mean |z1 - z2| + 1e-5), so that different noise gives different normal maps.
    # 0 = off (code and paper; a ganstack option against collapse of small Structure-GANs).
    struct_mode_seeking: NonNegFloat = 0.0
    # A minibatch-stddev feature before D_struct's linear layer (Karras et al., ICLR 2018):
    # a batch of near-identical fake maps becomes easy to tell from a varied real batch.
    # Off in the code and paper; a ganstack option against collapse of small Structure-GANs.
    struct_minibatch_std: bool = False
    # BN of the frozen FCN inside the Style-GAN loss: "batch" statistics (code) or "eval".
    fcn_bn: Literal["batch", "eval"] = "batch"
    # share of the Style-GAN gradient G_struct gets (lamda0)
    joint_style_to_struct: NonNegFloat = 0.1
    joint_struct_adv: NonNegFloat = 1.0  # weight of G_struct's own adversarial loss (lamda)
    # ---- optimisation (the code's adversarial_ct.lua and train scripts)
    lr: PosFloat = 2e-4  # Adam, structure and style phases (code: 2e-4)
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    joint_lr_style: PosFloat = 1e-6  # joint phase: G_style and D_style (code: 1e-6)
    joint_lr_struct: PosFloat = 1e-7  # joint phase: G_struct and D_struct (code: 1e-7)
    # L2 weight decay of the Style-GAN's G and D (style-gan-nofcn: 1e-5; style-gan-fcn: 0)
    style_weight_decay: NonNegFloat = 0.0
    adam_warmup: bool = True  # the code's Adam: lr/50 for 10 calls, lr/5 until call 30
    skip_rule: bool = True  # the code's balancing: skip D or G by the margins below
    # skip D if an error < m, G if an error > 1 - m (code: 0.3)
    skip_margin: Annotated[float, Range(gt=0, lt=0.5)] = 0.3
    reset_optimizers: bool = True  # each official stage is its own script: fresh optimizers
    # Batch-norm statistics used when sampling: "batch" (code) or "eval" (running averages).
    sample_bn: Literal["eval", "batch"] = "batch"
    renormalize_style_normals: bool = False  # re-normalise real conditioning normals (code: no)

    def validate(self, where: str) -> None:
        if self.normal_size < 8 or self.normal_size % 8:
            raise ConfigError(
                f"{where}.normal_size must be a positive multiple of 8 (the "
                f"Structure-GAN doubles its size 3 times), got {self.normal_size}"
            )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def normalize(n: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 normalisation over the channels (Torch's nn.Normalize(2)); a vector
    shorter than 1e-10 is divided by 1e-10.

    The square root of a clamped sum of squares gives the same values as ``n.norm(dim=1)``
    clamped at 1e-10, and its forward and backward passes are several times faster on a CPU
    (``torch.linalg.vector_norm`` and its backward dominate otherwise)."""
    return n / (n * n).sum(1, keepdim=True).clamp_min(1e-20).sqrt()


def mode_seeking_ratio(
    fake: torch.Tensor, fake2: torch.Tensor, z: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """Mao et al. (CVPR 2019), Eq. 3: mean |G(z) - G(z2)| / mean |z - z2|; its generator term
    is weight / (ratio + 1e-5)."""
    return (fake - fake2).abs().mean() / (z - z2).abs().mean()


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel angle (degrees) between two normal maps (N, 3, H, W), normalised first."""
    cos = (normalize(pred) * normalize(target)).sum(1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


# The structure measures compare normal maps area-pooled to this size (S x S pixels).
STRUCT_POOL = 16


def pool_normals(n: torch.Tensor, size: int = STRUCT_POOL) -> torch.Tensor:
    """Normal maps (N, 3, H, W) area-averaged to ``size`` x ``size`` and re-normalised per
    pixel, in float64 (so that the angle between a map and itself is 0 to 1e-6 degrees)."""
    return normalize(F.adaptive_avg_pool2d(n.double(), size))


@torch.no_grad()
def map_angles_deg(a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """(len(a), len(b)): the angle (degrees) between unit normal maps a[i] and b[j], per pixel,
    averaged over the pixels. The maps must have the same size."""
    bf = b.flatten(2)  # (Nb, 3, P)
    rows = []
    for s in range(0, len(a), chunk):
        cos = torch.einsum("icp,jcp->ijp", a[s : s + chunk].flatten(2), bf).clamp(-1.0, 1.0)
        rows.append(torch.rad2deg(torch.acos(cos)).mean(2))
    return torch.cat(rows)


@torch.no_grad()
def pairwise_angle_deg(maps: torch.Tensor) -> float:
    """Diversity: the mean over all pairs i < j of :func:`map_angles_deg` (0 for identical
    maps, about 90 for independent random directions)."""
    if len(maps) < 2:
        raise GanstackError("the mean pairwise angle needs at least 2 normal maps")
    ang = map_angles_deg(maps, maps)
    i, j = torch.triu_indices(len(maps), len(maps), offset=1)
    return float(ang[i, j].mean())


@torch.no_grad()
def nearest_angle_deg(queries: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Realism: for each query map, the :func:`map_angles_deg` to its nearest reference map."""
    return map_angles_deg(queries, reference).min(1).values


def fibonacci_sphere(k: int) -> torch.Tensor:
    """k roughly uniform unit vectors: the codebook before :meth:`S2GAN.setup` fits one."""
    i = torch.arange(k, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / k
    r = (1 - y * y).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * phi.cos(), y, r * phi.sin()], 1).float()


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """k unit centroids of unit vectors ``x`` (M, 3) under cosine similarity; deterministic.

    k-means++ seeding (distance 1 - cos) from a seeded generator, then Lloyd iterations with
    normalised means; an empty cluster is re-seeded with the point worst served.
    """
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    centres = [x[torch.randint(len(x), (1,), generator=g)][0]]
    dist = 1 - x @ centres[0]
    for _ in range(1, k):
        w = dist.clamp_min(0) + 1e-12
        idx = torch.multinomial(w, 1, generator=g)[0]
        centres.append(x[idx])
        dist = torch.minimum(dist, 1 - x @ x[idx])
    c = torch.stack(centres)
    for _ in range(iters):
        sim = x @ c.T
        assign = sim.argmax(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        for j in (counts == 0).nonzero().flatten().tolist():
            worst = sim.max(1).values.argmin()
            sums[j] = x[worst]
            sim[worst] = 2.0  # not chosen twice
        c = sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return c.float()


# --------------------------------------------------------------------------------------------
# Networks (the official layer tables; channel counts scaled by the width multiplier)
# --------------------------------------------------------------------------------------------


def _init(module: nn.Module, std: float = 0.02) -> nn.Module:
    """The code's init (``weights_init`` in its train.lua scripts): (transposed) convolutions
    N(0, std), bias 0; BN scale N(1, 0.02); Linear layers keep Torch's default, which PyTorch's
    equals (U(+-1/sqrt(fan_in)))."""
    return init_normal_(module, std, bn_std=0.02, linear=False)


def _ch(c: int, width: float) -> int:
    return max(1, round(c * width))


def _conv(ci: int, co: int, k: int, s: int, p: int, act: str, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(ci, co, k, s, p, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(co))
    layers.append(nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2))
    return layers


def _deconv(ci: int, co: int, k: int, s: int, p: int, act: str) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(ci, co, k, s, p, bias=False),
        nn.BatchNorm2d(co),
        nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2),
    ]


class StructureGenerator(nn.Module):
    """G_struct (structure-gan/train.lua): z -> unit normals at ``size`` (size / 8 after the
    first layer)."""

    def __init__(self, z_dim: int, size: int, width: float) -> None:
        super().__init__()
        c = [_ch(n, width) for n in (128, 128, 128, 256, 512, 512, 256, 128, 64)]
        self.net = nn.Sequential(
            *_deconv(z_dim, c[0], size // 8, 1, 0, "relu"),  # acts as FC to size/8
            *_deconv(c[0], c[1], 4, 2, 1, "relu"),
            *_conv(c[1], c[2], 3, 1, 1, "relu"),
            *_conv(c[2], c[3], 3, 1, 1, "relu"),
            *_conv(c[3], c[4], 3, 1, 1, "relu"),
            *_conv(c[4], c[5], 3, 1, 1, "lrelu"),
            *_deconv(c[5], c[6], 4, 2, 1, "lrelu"),
            *_conv(c[6], c[7], 3, 1, 1, "lrelu"),
            *_deconv(c[7], c[8], 4, 2, 1, "lrelu"),
            nn.Conv2d(c[8], 3, 5, 1, 2),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return normalize(self.net(z[:, :, None, None]))


def _disc_trunk(
    c_in: int, width: float, strides: tuple[int, int, int, int], spatial_dropout: float
) -> nn.Sequential:
    c = [_ch(n, width) for n in (64, 128, 256, 512, 128)]
    return nn.Sequential(
        nn.Conv2d(c_in, c[0], 5, strides[0], 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c[0], c[1], 5, strides[1], 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c[1], c[2], 3, strides[2], 1),
        nn.LeakyReLU(0.2),
        nn.Dropout2d(spatial_dropout),
        nn.Conv2d(c[2], c[3], 3, strides[3], 1),
        nn.LeakyReLU(0.2),
        nn.Dropout2d(spatial_dropout),
        nn.Conv2d(c[3], c[4], 3, 1, 1),
        nn.LeakyReLU(0.2),
    )


class StructureDiscriminator(nn.Module):
    """D_struct (structure-gan/train.lua): normals at ``size`` -> one logit. No batch norm."""

    def __init__(
        self,
        size: int,
        width: float,
        dropout: float,
        spatial_dropout: float,
        minibatch_std: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = _disc_trunk(3, width, (2, 1, 2, 2), spatial_dropout)
        features = _ch(128, width) * (size // 8) ** 2
        self.head = nn.Sequential(
            nn.Flatten(),
            *([MinibatchStd()] if minibatch_std else []),
            nn.Dropout(dropout),
            nn.Linear(features + int(minibatch_std), 1),
        )

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(n))[:, 0]


class StyleGenerator(nn.Module):
    """G_style (style-gan-nofcn/train.lua): (normals, z) -> image; the branches meet at size / 4."""

    def __init__(self, z_dim: int, size: int, width: float) -> None:
        super().__init__()
        w = width
        self.normal_branch = nn.Sequential(
            *_conv(3, _ch(64, w), 5, 2, 2, "relu"), *_conv(_ch(64, w), _ch(128, w), 5, 2, 2, "relu")
        )
        self.noise_branch = nn.Sequential(
            *_deconv(z_dim, _ch(64, w), size // 16, 1, 0, "relu"),
            *_deconv(_ch(64, w), _ch(64, w), 4, 2, 1, "relu"),
            *_deconv(_ch(64, w), _ch(64, w), 4, 2, 1, "relu"),
        )
        c = [_ch(n, w) for n in (256, 512, 512, 256, 128, 64)]
        self.net = nn.Sequential(
            *_conv(_ch(128, w) + _ch(64, w), c[0], 3, 1, 1, "relu"),
            *_conv(c[0], c[1], 3, 2, 1, "relu"),
            *_conv(c[1], c[2], 3, 1, 1, "lrelu"),
            *_deconv(c[2], c[3], 4, 2, 1, "lrelu"),
            *_deconv(c[3], c[4], 4, 2, 1, "lrelu"),
            *_deconv(c[4], c[5], 4, 2, 1, "lrelu"),
            nn.Conv2d(c[5], 3, 5, 1, 2),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.normal_branch(normals), self.noise_branch(z[:, :, None, None])], 1)
        return self.net(h)


class StyleDiscriminator(nn.Module):
    """D_style (style-gan-nofcn/train.lua): the (image, normals) pair, concatenated to 6
    channels -> one logit."""

    def __init__(self, size: int, width: float, dropout: float, spatial_dropout: float) -> None:
        super().__init__()
        self.trunk = _disc_trunk(6, width, (2, 2, 2, 2), spatial_dropout)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(_ch(128, width) * (size // 16) ** 2, 1)
        )

    def forward(self, image: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(torch.cat([image, normals], 1)))[:, 0]


class FCN(nn.Module):
    """The normal predictor: image -> per-pixel logits over the codebook at image size / 4.

    ``alexnet`` is the code's FCN (style-gan-fcn/train_fcn.lua; input upsampled by ``upsample``:
    the code's 128 -> 512); ``small`` is a compact encoder-decoder for CPU demos (not in the
    code).
    """

    def __init__(self, arch: str, classes: int, width: float, upsample: int, out_size: int) -> None:
        super().__init__()
        self.upsample, self.out_size = upsample, out_size
        w = width
        if arch == "alexnet":
            c = [_ch(n, w) for n in (96, 256, 384, 384, 256, 1024, 512)]
            self.net = nn.Sequential(
                *_conv(3, c[0], 11, 4, 68, "lrelu"),
                nn.MaxPool2d(3, 2),
                *_conv(c[0], c[1], 5, 1, 2, "relu"),
                nn.MaxPool2d(3, 2),
                *_conv(c[1], c[2], 3, 1, 1, "relu"),
                *_conv(c[2], c[3], 3, 1, 1, "relu"),
                *_conv(c[3], c[4], 3, 1, 1, "relu"),
                nn.MaxPool2d(3, 2),
                *_conv(c[4], c[5], 6, 1, 1, "relu"),
                *_deconv(c[5], c[6], 4, 2, 1, "relu"),
                nn.Conv2d(c[6], classes, 3, 1, 1),
            )
        else:
            c = [_ch(n, w) for n in (32, 64, 128, 128, 64)]
            self.net = nn.Sequential(
                *_conv(3, c[0], 5, 2, 2, "relu"),
                *_conv(c[0], c[1], 3, 2, 1, "relu"),
                *_conv(c[1], c[2], 3, 2, 1, "relu"),
                *_conv(c[2], c[3], 3, 1, 1, "relu"),
                *_deconv(c[3], c[4], 4, 2, 1, "relu"),
                nn.Conv2d(c[4], classes, 3, 1, 1),
            )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (N, 3, S, S) -> logits (N, classes, S/4, S/4)."""
        if self.upsample > 1:
            image = F.interpolate(image, scale_factor=self.upsample, mode="nearest")
        logits = self.net(image)
        if logits.shape[-1] != self.out_size or logits.shape[-2] != self.out_size:
            logits = resize(logits, self.out_size)
        return logits


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

NETS = ("G_struct", "D_struct", "G_style", "D_style")


class S2GAN(StackModel):
    """Structure-GAN (z1 -> normals) stacked on a Style-GAN ((normals, z0) -> image)."""

    name = "s2gan"
    Config = S2GANConfig
    noise_distribution = "uniform"  # U[0, 1), mapped to the code's U(-1, 1) by 2z - 1
    generator_names = ("G_struct", "G_style")
    retired_state = ("adam_calls",)  # the warm-up's clock before the Step
    codebook: torch.Tensor  # buffer (k, 3): the FCN's classes, unit normals

    def __init__(self, cfg: S2GANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        if c != 3 or h != w or h % 16:
            raise ConfigError(
                f"S²-GAN takes square RGB images whose size is a multiple of 16 (the Style-GAN "
                f"halves it 4 times); the dataset '{info.name}' has {c}x{h}x{w}. Set "
                f"data.resolution (e.g. 64 or 128)."
            )
        self.image_size = h
        self.fcn_size = h // 4  # the FCN's output and its targets (code: 32 for 128)
        ns, wd = cfg.normal_size, cfg.width
        std = cfg.init_std / math.sqrt(min(wd, 1.0))
        self.G_struct = _init(StructureGenerator(cfg.z_struct, ns, wd), std)
        self.D_struct = _init(
            StructureDiscriminator(
                ns, wd, cfg.d_dropout, cfg.d_spatial_dropout, cfg.struct_minibatch_std
            ),
            std,
        )
        sw = cfg.style_width or wd
        style_std = cfg.init_std / math.sqrt(min(sw, 1.0))
        self.G_style = _init(StyleGenerator(cfg.z_style, h, sw), style_std)
        self.D_style = _init(
            StyleDiscriminator(h, sw, cfg.d_dropout, cfg.d_spatial_dropout), style_std
        )
        # The code's FCN init is N(0, 0.01), scaled the same way.
        self.fcn = _init(
            FCN(cfg.fcn_arch, cfg.classes, cfg.fcn_width, cfg.fcn_upsample, self.fcn_size),
            0.01 / math.sqrt(min(cfg.fcn_width, 1.0)),
        )
        self.register_buffer("codebook", fibonacci_sphere(cfg.classes))
        self.optimizers = {}
        for n in NETS:
            decay = cfg.style_weight_decay if n.endswith("style") else 0.0
            self.optimizers[n] = torch.optim.Adam(
                getattr(self, n).parameters(),
                lr=cfg.lr,
                betas=(cfg.beta1, cfg.beta2),
                weight_decay=decay,
            )
        self.optimizers["fcn"] = torch.optim.SGD(
            self.fcn.parameters(),
            lr=cfg.fcn_lr,
            momentum=cfg.fcn_momentum,
            weight_decay=cfg.fcn_weight_decay,
        )

    @property
    def conditional(self) -> bool:
        return False  # labels (if any) are for the domain classifiers, not the model

    @classmethod
    def default_phases(cls, cfg: S2GANConfig) -> dict[str, int]:
        # Code: Structure-GAN ~24k iterations, FCN ~160k, Style-GAN and joint not recorded.
        return {"structure": 24000, "fcn": 20000, "style": 20000, "joint": 2000}

    # ---- setup: the codebook ------------------------------------------------------------------

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        if "normals" not in train.extras:
            raise ConfigError(
                f"S²-GAN trains on (image, normals) pairs; the dataset "
                f"'{train.name}' has no normals (use rooms or nyu_normals)"
            )
        n = decode_normals(train.extras["normals"][:4000])
        n = resize(n, self.fcn_size).permute(0, 2, 3, 1).reshape(-1, 3)
        n = n[n.norm(dim=1) > 0.5]
        if len(n) < self.cfg.classes:
            raise GanstackError(
                f"too few valid normals ({len(n)}) for a {self.cfg.classes}-entry codebook"
            )
        g = torch.Generator().manual_seed(self.cfg.codebook_seed)
        pick = torch.randperm(len(n), generator=g)[: self.cfg.codebook_samples]
        cb = spherical_kmeans(
            normalize(n[pick][:, :, None, None])[:, :, 0, 0],
            self.cfg.classes,
            self.cfg.codebook_iters,
            self.cfg.codebook_seed,
        )
        self.codebook.copy_(cb.to(self.codebook.device))
        q = self.quantise_error(n[pick])
        log(
            f"codebook: {self.cfg.classes} normals by k-means on {len(pick)} training pixels; "
            f"quantisation error {q:.2f} degrees"
        )
        return {"codebook_size": self.cfg.classes, "codebook_quantisation_deg": q}

    @torch.no_grad()
    def quantise_error(self, n: torch.Tensor) -> float:
        """Mean angle (degrees) between normals (M, 3) and their codebook entries."""
        n = normalize(n[:, :, None, None].to(self.codebook.device))[:, :, 0, 0]
        best = (n @ self.codebook.T).max(1).values.clamp(-1, 1)
        return float(torch.rad2deg(torch.acos(best)).mean())

    # ---- data conventions ------------------------------------------------------------------

    preprocess = staticmethod(to_signed)  # uint8 -> [-1, 1]
    to_unit = staticmethod(partial(to_unit, clamp=True))  # [-1, 1] -> [0, 1], clamped

    def _real_normals(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "normals" not in batch:
            raise GanstackError(
                "S²-GAN needs batches with 'normals' (datasets rooms or nyu_normals)"
            )
        return decode_normals(batch["normals"])

    def struct_normals(self, n: torch.Tensor) -> torch.Tensor:
        """Real normals at the Structure-GAN size, re-normalised (the code's ``makeData``)."""
        return normalize(resize(n, self.cfg.normal_size))

    def style_normals(self, n: torch.Tensor) -> torch.Tensor:
        """Real conditioning normals at the image size (not re-normalised in the code)."""
        n = resize(n, self.image_size)
        return normalize(n) if self.cfg.renormalize_style_normals else n

    def chain_normals(self, n_struct: torch.Tensor) -> torch.Tensor:
        """Ĉ: generated normals resampled to the image size and re-normalised (the code's
        joint-ssgan/train.lua and test.lua)."""
        return normalize(resize(n_struct, self.image_size))

    def targets(self, normals: torch.Tensor) -> torch.Tensor:
        """The FCN's per-pixel classes: the nearest codebook entry (max dot product) of the
        normals downscaled bilinearly to the FCN's output size."""
        small = resize(normals, self.fcn_size)
        return torch.einsum("nchw,kc->nkhw", small, self.codebook).argmax(1)

    def decode_fcn(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> unit normals: the probability-weighted sum of the codebook (the code's
        style-gan-fcn/test_fcn.lua)."""
        p = logits.float().softmax(1)
        return normalize(torch.einsum("nkhw,kc->nchw", p, self.codebook))

    @contextlib.contextmanager
    def _frozen_fcn(self) -> Iterator[None]:
        """The FCN as a fixed judge: no parameter gradients; BN on batch statistics (code)
        without touching the running averages, or in eval mode."""
        fcn, was = self.fcn, self.fcn.training
        fcn.train(self.cfg.fcn_bn == "batch")
        try:
            with frozen(fcn), bn_state([fcn] if fcn.training else [], momentum=0.0):
                yield
        finally:
            fcn.train(was)

    def _fcn_loss(self, image: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        with self._frozen_fcn():
            return F.cross_entropy(self.fcn(image), self.targets(normals.detach()))

    # ---- optimisation helpers ---------------------------------------------------------------

    def enter_phase(self, phase: str, fresh: bool) -> None:
        if fresh and self.cfg.reset_optimizers:
            for opt in self.optimizers.values():
                opt.state.clear()

    def lr(self, name: str, step: Step) -> float | None:
        """The phase's rate with the code's Adam warm-up: lr/50 for a network's first 10 calls
        of the phase, lr/5 until call 30. The code counts a call whether the skip rule lets it
        update or not (``numUpdates`` in adversarial_ct.lua), one per step: the phase's step."""
        cfg = self.cfg
        if name not in NETS:
            return None  # the FCN's SGD: constant
        lr = cfg.lr
        if step.phase == "joint":
            lr = cfg.joint_lr_struct if name.endswith("struct") else cfg.joint_lr_style
        t = step.phase_step
        factor = 1 / 50 if t < 10 else 1 / 5 if t < 30 else 1.0
        return lr * factor if cfg.adam_warmup else lr

    def _balance(self, err_real: torch.Tensor, err_fake: torch.Tensor) -> tuple[bool, bool]:
        """The code's skip rule: (update D, update G) from D's errors on this batch."""
        if not self.cfg.skip_rule:
            return True, True
        m = self.cfg.skip_margin
        r, f = float(err_real.detach()), float(err_fake.detach())
        update_d = not (f < m or r < m)
        update_g = not (f > 1 - m or r > 1 - m)
        if not update_d and not update_g:
            return True, True
        return update_d, update_g

    @staticmethod
    def _d_errors(
        real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean BCE on the real half and on the fake half."""
        return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()

    def _z(self, b: int, dim: int) -> torch.Tensor:
        return torch.rand(b, dim, device=self.device) * 2 - 1

    # ---- training --------------------------------------------------------------------------

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        if phase == "structure":
            return self._structure_step(batch)
        if phase == "fcn":
            return self._fcn_step(batch)
        if phase == "style":
            return self._style_step(batch)
        if phase == "joint":
            return self._joint_step(batch)
        raise GanstackError(f"S²-GAN has no phase '{phase}'")

    def _half(self, b: int) -> int:
        if b < 2:
            raise GanstackError("S²-GAN needs train.batch_size >= 2 (half real, half fake)")
        return b // 2

    def _structure_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real = self.struct_normals(self._real_normals(batch))
        b = len(real)
        h = self._half(b)
        # ---- D: half real, half fake
        with torch.no_grad():
            fake = self.G_struct(self._z(h, cfg.z_struct))
        err_r, err_f = self._d_errors(self.D_struct(real[:h]), self.D_struct(fake))
        upd_d, upd_g = self._balance(err_r, err_f)
        d_loss = 0.5 * (err_r + err_f)
        if upd_d:
            self.optimize(d_loss, ["D_struct"])
        # ---- G: a whole batch of fresh fakes
        logs = {"d_struct_real": err_r.detach(), "d_struct_fake": err_f.detach()}
        with frozen(self.D_struct):
            z = self._z(b, cfg.z_struct)
            fake = self.G_struct(z)
            g_loss = F.softplus(-self.D_struct(fake)).mean()
            logs["g_struct_adv"] = g_loss.detach()
            if cfg.struct_mode_seeking > 0:
                z2 = self._z(b, cfg.z_struct)
                ratio = mode_seeking_ratio(fake, self.G_struct(z2), z, z2)
                g_loss = g_loss + cfg.struct_mode_seeking / (ratio + 1e-5)
                logs["g_struct_ms_ratio"] = ratio.detach()
            if upd_g:
                self.optimize(g_loss, ["G_struct"])
        logs["skip_d"] = torch.tensor(float(not upd_d))
        logs["skip_g"] = torch.tensor(float(not upd_g))
        return logs

    def _fcn_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.cfg.fcn_batch_size or len(batch["images"])
        x = self.preprocess(batch["images"][:n])
        target = self.targets(self._real_normals(batch)[:n])
        self.fcn.train()
        logits = self.fcn(x)
        loss = F.cross_entropy(logits, target)
        self.optimize(loss, ["fcn"])
        acc = (logits.detach().argmax(1) == target).float().mean()
        return {"fcn_ce": loss.detach(), "fcn_acc": acc}

    def _style_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x = self.preprocess(batch["images"])
        c = self.style_normals(self._real_normals(batch))
        b = len(x)
        h = self._half(b)
        # ---- D: real pairs (first half) and fakes on the normals of other frames (second half)
        c_fake = c[h : 2 * h]
        with torch.no_grad():
            fake = self.G_style(self._z(h, cfg.z_style), c_fake)
        err_r, err_f = self._d_errors(self.D_style(x[:h], c[:h]), self.D_style(fake, c_fake))
        upd_d, upd_g = self._balance(err_r, err_f)
        if upd_d:
            self.optimize(0.5 * (err_r + err_f), ["D_style"])
        # ---- G: fresh noise on every normal map of the batch
        with frozen(self.D_style):
            z = self._z(b, cfg.z_style)
            fake = self.G_style(z, c)
            adv = F.softplus(-self.D_style(fake, c)).mean()
            logs = {
                "d_style_real": err_r.detach(),
                "d_style_fake": err_f.detach(),
                "g_style_adv": adv.detach(),
            }
            loss = adv
            if cfg.style_mode_seeking > 0:
                z2 = self._z(b, cfg.z_style)
                ratio = mode_seeking_ratio(fake, self.G_style(z2, c), z, z2)
                loss = loss + cfg.style_mode_seeking / (ratio + 1e-5)
                logs["g_style_ms_ratio"] = ratio.detach()
            if cfg.fcn_weight > 0:  # weight 0: the FCN is not even run (no gradient, no cost)
                ce = self._fcn_loss(fake, c)
                loss = loss + cfg.fcn_weight * ce
                logs["g_style_fcn"] = ce.detach()
            if upd_g:
                self.optimize(loss, ["G_style"])
        logs["skip_d"] = torch.tensor(float(not upd_d))
        logs["skip_g"] = torch.tensor(float(not upd_g))
        return logs

    def _joint_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x = self.preprocess(batch["images"])
        real = self._real_normals(batch)
        c_real, n_real = self.style_normals(real), self.struct_normals(real)
        b = len(x)
        h = self._half(b)
        # ---- both discriminators: real halves, fakes from the chained generators
        with torch.no_grad():
            n_fake = self.G_struct(self._z(h, cfg.z_struct))
            c_hat = self.chain_normals(n_fake)
            img_fake = self.G_style(self._z(h, cfg.z_style), c_hat)
        sr, sf = self._d_errors(self.D_struct(n_real[:h]), self.D_struct(n_fake))
        tr, tf = self._d_errors(self.D_style(x[:h], c_real[:h]), self.D_style(img_fake, c_hat))
        upd_ds, upd_gs = self._balance(sr, sf)
        upd_dt, upd_gt = self._balance(tr, tf)
        d_names = [n for n, u in (("D_struct", upd_ds), ("D_style", upd_dt)) if u]
        d_loss = 0.5 * (sr + sf) * upd_ds + 0.5 * (tr + tf) * upd_dt
        self.optimize(d_loss, d_names)
        # ---- generators: L_style + lamda * L_struct, the style gradient into G_struct scaled
        with frozen(self.D_struct, self.D_style):
            n_fake = self.G_struct(self._z(b, cfg.z_struct))
            c_hat = scale_grad(self.chain_normals(n_fake), cfg.joint_style_to_struct)
            img = self.G_style(self._z(b, cfg.z_style), c_hat)
            l_style = F.softplus(-self.D_style(img, c_hat)).mean()
            l_struct = F.softplus(-self.D_struct(n_fake)).mean()
            loss = l_style + cfg.joint_struct_adv * l_struct
            logs = {
                "d_struct_real": sr.detach(),
                "d_struct_fake": sf.detach(),
                "d_style_real": tr.detach(),
                "d_style_fake": tf.detach(),
                "g_struct_adv": l_struct.detach(),
                "g_style_adv": l_style.detach(),
            }
            if cfg.joint_fcn_weight > 0:
                ce = self._fcn_loss(img, c_hat)
                loss = loss + cfg.joint_fcn_weight * ce
                logs["g_style_fcn"] = ce.detach()
            g_names = [n for n, u in (("G_struct", upd_gs), ("G_style", upd_gt)) if u]
            self.optimize(loss, g_names)
        logs["skip_d"] = torch.tensor(float(len(d_names) < 2))
        logs["skip_g"] = torch.tensor(float(len(g_names) < 2))
        return logs

    def optimize(self, loss: torch.Tensor, names) -> None:
        """As the base, but every generator's gradient is cleared first (a G update may be
        skipped while the other's happens; no stale gradient may linger). No names: nothing
        (every update skipped)."""
        if not names:
            return
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for n in names:
            self.optimizers[n].step()

    # ---- sampling --------------------------------------------------------------------------

    def noise_dims(self) -> dict[str, int]:
        """``z1``: the Structure-GAN's noise; ``z0``: the Style-GAN's."""
        return {"z1": self.cfg.z_struct, "z0": self.cfg.z_style}

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n_struct = self.net("G_struct")(inputs["z1"] * 2 - 1)
        c_hat = self.chain_normals(n_struct)
        img = self.net("G_style")(inputs["z0"] * 2 - 1, c_hat)
        return {
            "image": self.to_unit(img),
            "normals": self.to_unit(c_hat),
            "normals_struct": self.to_unit(n_struct),
        }

    @torch.no_grad()
    def render(
        self,
        normals: torch.Tensor,
        z0: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 250,
    ) -> torch.Tensor:
        """The Style-GAN as a renderer: images in [0, 1] for given normals (uint8 encoded
        maps, or floats in [-1, 1]), at the image size; z0 in [0, 1) (drawn when not given)."""
        n = decode_normals(normals) if normals.dtype == torch.uint8 else normals.float()
        if z0 is None:
            z0 = self._noise(len(n), self.cfg.z_style, generator)
        out = []
        with self.sampling_mode():
            g = self.net("G_style")
            for s in range(0, len(n), batch_size):
                c = self.style_normals(n[s : s + batch_size].to(self.device))
                out.append(self.to_unit(g(z0[s : s + batch_size].to(self.device) * 2 - 1, c)))
        return torch.cat(out).cpu()

    @torch.no_grad()
    def predict_normals(self, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
        """Unit normals (N, 3, S/4, S/4) the FCN (eval mode) predicts for images in [0, 1]."""
        fcn = self.fcn
        was = fcn.training
        fcn.eval()
        out = []
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size].to(self.device).float() * 2 - 1
            out.append(self.decode_fcn(fcn(x)).cpu())
        fcn.train(was)
        return torch.cat(out)

    @torch.no_grad()
    def grid(
        self,
        rows: int,
        cols: int,
        vary,
        generator: torch.Generator | None = None,
        key: str = "image",
    ) -> torch.Tensor:
        """As the base; for ``image`` (the trainer's sample grids) each row of images comes
        below a row of the normals they were rendered from (2 x ``rows`` rows)."""
        if key != "image" or generator is None:
            return super().grid(rows, cols, vary, generator, key)
        state = generator.get_state()
        images = super().grid(rows, cols, vary, generator, "image")
        normals = super().grid(rows, cols, vary, torch.Generator().set_state(state), "normals")
        return torch.stack([normals, images], 1).reshape(2 * rows, cols, *images.shape[2:])

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``structure_image``: generated normals beside the image rendered from them;
        ``vary_style``: each row one normal map (first column) under several style noises;
        ``same_style``: each row one style noise across the structures of the first row."""
        gen = generator
        zs = self.draw_inputs(40, generator=gen)
        with self.sampling_mode():
            out = self.generate(zs)
        pairs = torch.stack([out["normals"], out["image"]], 1)  # (40, 2, C, H, W)
        figs = {"structure_image": pairs.reshape(8, 10, *pairs.shape[2:]).cpu()}
        rows, cols = 6, 9
        z1 = self.draw_inputs(rows, generator=gen)["z1"]
        z0 = self.draw_inputs(cols, generator=gen)["z0"]
        with self.sampling_mode():
            grid = self.generate({"z1": z1.repeat_interleave(cols, 0), "z0": z0.repeat(rows, 1)})
        imgs = grid["image"].reshape(rows, cols, *grid["image"].shape[1:]).cpu()
        normals = grid["normals"].reshape(rows, cols, *grid["normals"].shape[1:])[:, :1].cpu()
        figs["vary_style"] = torch.cat([normals, imgs], 1)
        # transposed: columns are structures, rows style noises; the first row the normals
        figs["same_style"] = torch.cat([normals.transpose(0, 1), imgs.transpose(0, 1)], 0)
        return figs

    # ---- measures -------------------------------------------------------------------------

    @torch.no_grad()
    def normal_consistency(
        self,
        ds: ImageDataset,
        n: int = 1000,
        seed: int = 0,
        judge: S2GAN | None = None,
        prefix: str = "fcn",
        chain: bool = True,
    ) -> dict[str, float]:
        """Mean angular error (degrees) between the normals an FCN predicts from images and
        the normals those images were made from, at the FCN's output size:

        - ``rendered``: Style-GAN images of ``n`` real normal maps of ``ds``;
        - ``chain``: ``n`` full samples (Structure-GAN normals Ĉ, then the Style-GAN);
        - ``real``: the real images of the same frames (what the FCN achieves on real data).

        ``judge``: another S²-GAN whose FCN (and codebook) predicts the normals instead, e.g.
        one trained separately, so that the measure is not the generator's own training
        signal. ``chain=False`` leaves out the full samples (for a model without a trained
        Structure-GAN).
        """
        predictor = judge if judge is not None else self
        if "normals" not in ds.extras:
            raise GanstackError(f"dataset '{ds.name}' has no normals to condition on")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=gen)[: min(n, len(ds))]
        normals = decode_normals(ds.extras["normals"][idx])
        target = resize(normals, self.fcn_size)
        rendered = self.render(normals, generator=gen)
        real = ds.images[idx].float() / 255.0
        res = {}
        for tag, images in (("rendered", rendered), ("real", real)):
            pred = predictor.predict_normals(images)
            res[f"normal_err_deg_{prefix}_{tag}"] = float(angular_error_deg(pred, target).mean())
        if not chain:
            return res
        sample = self.sample(len(idx), generator=gen)
        pred = predictor.predict_normals(sample["image"])
        chain_target = resize(sample["normals"] * 2 - 1, self.fcn_size)
        res[f"normal_err_deg_{prefix}_chain"] = float(angular_error_deg(pred, chain_target).mean())
        return res

    @torch.no_grad()
    def structure_measures(
        self,
        train: ImageDataset,
        evaluation: ImageDataset | None,
        n: int = 200,
        reference: int = 1000,
        seed: int = 0,
    ) -> dict[str, float]:
        """Diversity and realism of the Structure-GAN's normal maps, in degrees.

        Protocol: min(``n``, 200) maps of G_struct (fresh noise, one sampling batch) and as
        many real held-out maps; every map area-pooled to 16x16 and re-normalised
        (:func:`pool_normals`); the angle between two maps is the per-pixel angle averaged
        over the pixels (:func:`map_angles_deg`). Keys (N maps, T reference maps):

        - ``struct_pairwise_degN_pool16``: the mean angle over all pairs of generated maps
          (diversity: 0 when every sample is the same map);
        - ``struct_nn_degN_pool16_trainT``: the mean angle from each generated map to its
          nearest map among a fixed random subset of ``reference`` (1,000) training maps
          (realism: 0 when every sample copies a training map);
        - ``struct_real_pairwise_degN_pool16`` and ``struct_real_nn_degN_pool16_trainT``: the
          same for real held-out maps (the calibration: what real data scores; absent when
          nothing is held out).

        A collapsed Structure-GAN has a small pairwise angle; a noisy one a large angle to
        its nearest real map. Only the G_struct is run (no image is rendered)."""
        if "normals" not in train.extras:
            raise GanstackError(
                f"the structure measures need a dataset with normals (rooms or "
                f"nyu_normals); '{train.name}' has none"
            )
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(train), generator=gen)[:reference]
        ref = pool_normals(decode_normals(train.extras["normals"][pick]))
        count = max(2, min(n, 200))
        z1 = self._noise(count, self.cfg.z_struct, gen)
        with self.sampling_mode():
            fake = pool_normals(self.net("G_struct")(z1 * 2 - 1).cpu())
        tag = f"{count_tag(count)}_pool{STRUCT_POOL}"
        out = {
            f"struct_pairwise_deg{tag}": pairwise_angle_deg(fake),
            f"struct_nn_deg{tag}_train{len(ref)}": float(nearest_angle_deg(fake, ref).mean()),
        }
        if evaluation is not None and "normals" in evaluation.extras and len(evaluation) >= 2:
            idx = torch.randperm(len(evaluation), generator=gen)[:count]
            real = pool_normals(decode_normals(evaluation.extras["normals"][idx]))
            rtag = f"{count_tag(len(real))}_pool{STRUCT_POOL}"
            out[f"struct_real_pairwise_deg{rtag}"] = pairwise_angle_deg(real)
            out[f"struct_real_nn_deg{rtag}_train{len(ref)}"] = float(
                nearest_angle_deg(real, ref).mean()
            )
        return out

    @torch.no_grad()
    def style_noise_sensitivity(
        self,
        train: ImageDataset,
        evaluation: ImageDataset | None,
        maps: int = 25,
        noises: int = 8,
        seed: int = 0,
    ) -> dict[str, float]:
        """How much the Style-GAN's rendering of fixed normals moves with its style noise z0.

        Each of ``maps`` normal maps is rendered under the same ``noises`` style noises; the
        figure is the per-pixel standard deviation (Bessel-corrected) over the noises, pixels
        in [-1, 1], averaged over pixels, channels and maps (0: G_style ignores z0). A map's
        renderings share one sampling batch. Keys (M maps, K noises):

        - ``style_noise_stdM_zK_rendered``: real normal maps (held out, else training);
        - ``style_noise_stdM_zK_chain``: the Structure-GAN's maps (Ĉ, as in full samples);
        - ``style_scene_stdMK_train``: the per-pixel standard deviation across M x K
          different real training images (how much real scenes differ), the reference.
        """
        ds = evaluation if evaluation is not None and "normals" in evaluation.extras else train
        if "normals" not in ds.extras:
            raise GanstackError(
                f"the style-noise measure needs a dataset with normals (rooms or "
                f"nyu_normals); '{ds.name}' has none"
            )
        if maps < 1 or noises < 2:
            raise GanstackError("the style-noise measure needs at least 1 map and 2 noises")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=gen)[:maps]
        real_normals = decode_normals(ds.extras["normals"][idx])
        z1 = self._noise(len(idx), self.cfg.z_struct, gen)
        with self.sampling_mode():
            chain = self.chain_normals(self.net("G_struct")(z1 * 2 - 1)).cpu()
        z0 = self._noise(noises, self.cfg.z_style, gen)  # the same noises for every map
        tag = f"{count_tag(len(idx))}_z{noises}"
        out = {
            f"style_noise_std{tag}_rendered": self._noise_spread(real_normals, z0),
            f"style_noise_std{tag}_chain": self._noise_spread(chain, z0),
        }
        scenes = torch.randperm(len(train), generator=gen)[: len(idx) * noises]
        x = self.preprocess(train.images[scenes])
        out[f"style_scene_std{count_tag(len(scenes))}_train"] = float(x.std(0).mean())
        return out

    def _noise_spread(self, normals: torch.Tensor, z0: torch.Tensor, batch: int = 256) -> float:
        """Mean per-pixel std ([-1, 1]) of the renderings of each map under every noise of
        ``z0`` (U[0, 1) rows); whole groups of a map's renderings go into one batch."""
        k = len(z0)
        per = max(1, batch // k)
        stds = []
        for s in range(0, len(normals), per):
            c = normals[s : s + per]
            img = (
                self.render(c.repeat_interleave(k, 0), z0.repeat(len(c), 1), batch_size=len(c) * k)
                * 2
                - 1
            )
            stds.append(img.view(len(c), k, *img.shape[1:]).std(1).mean((1, 2, 3)))
        return float(torch.cat(stds).mean())
