"""LAPGAN: a Laplacian pyramid of adversarial networks (Denton et al., NIPS 2015).

The image I_0 is turned into a Gaussian pyramid I_{k+1} = d(I_k), k = 0 .. L-2, and a Laplacian
pyramid h_k = I_k - u(I_{k+1}) with I_{L-1} (the coarsest image) as its last entry. Level k has
its own GAN (paper Sec. 3, Figs. 1-2):

- the coarsest level L-1 is an ordinary (class-conditional) GAN on the small image I_{L-1};
- every finer level k has G_k(z_k, u(I_{k+1})) -> a residual h~_k and a discriminator D_k that
  gets the low-pass image l_k = u(I_{k+1}) with the real h_k or the generated h~_k.

Sampling chains the levels coarse to fine: I~_{L-1} = G_{L-1}(z_{L-1}), then
I~_k = u(I~_{k+1}) + G_k(z_k, u(I~_{k+1})).

Pyramid operators (the paper's exact blur and upsampling filters are not known):

- d = 2x2 average pooling. This is exactly a bilinear, half-pixel-centred downscale by 2 (what
  the official code's ``image.scale`` does), and it is a box blur followed by subsampling (the
  paper's "blur, then downsample").
- u = bilinear upsampling by 2 (``align_corners=False``), as the official code's ``image.scale``.

With any d and u the pyramid is invertible: I_k = u(I_{k+1}) + h_k.

Phase ``independent`` (the paper's and the code's only training mode): every level is trained on
real coarse images; one D step then one G step for every level in each training step, each
network with its own optimizer.

Defaults follow the official code (``facebook/eyescream``, its cifar/ scripts) where it sets
them:

- coarsest level: MLPs, G: [z (100), one-hot] -> 1200 ReLU -> 1200 sigmoid -> linear pixels;
  D: [pixels, one-hot] -> 600 ReLU dropout -> 600 ReLU dropout -> 1 (``train_cifar.lua``,
  ``train_cifar_classcond.lua``; the 1200/600 sizes are the paper's per secondary sources);
- finer levels: G = conv 7 -> ReLU -> conv 7 -> ReLU -> conv 5 (linear), 64 maps, "same"
  padding, input [noise plane, class plane, u(I_{k+1})]; D = conv 5 -> ReLU -> conv 5 stride 2
  -> ReLU -> dropout 0.5 -> linear, valid padding, input [l_k + h_k, class plane]
  (``train_cifar_coarse_to_fine[_classcond].lua``);
- the class enters a conv level as one plane, Linear(K -> H*W) -> ReLU (code); ``class_planes:
  onehot`` broadcasts the one-hot vector as K constant planes instead;
- z ~ U(-1, 1): the trainer's inputs are U[0, 1) and are mapped by 2z - 1 inside the model;
- BCE with half-real/half-fake D batches and the non-saturating G loss.

Optimiser: the code's plain SGD by default (lr 0.02, momentum 0.5 rising by 0.0008 per epoch
up to 0.7, lr divided by 1.000004 per epoch, floor 1e-6; the clock is the number of training
images seen by all processes together, from the trainer's step); ``optimizer: adam`` is a
modern option.

Options that are not the official code's (the bundled MNIST and shapes configs use some of
them, each config says which and why): ``coarse_arch: conv`` (a small DCGAN-like coarsest
level instead of the MLPs: with the MLPs the coarsest D sat at chance, loss ln 2, in short
runs), ``level_lr`` (one lr per level), ``coarse_d_lr_mult``, ``d_input: concat``,
``class_planes: onehot``, ``coarse_output: tanh``, ``d_dropout`` other than 0.5.

Other deviations: images scaled to [-1, 1] instead of per-pixel standardisation; the fakes of
the D step and the G step are conditioned on the current batch's coarse images (the code draws
other examples); the D of a conv level pads its convolutions ("same") when the level is too
small for valid ones (fewer than 9 pixels a side), so any pyramid depth works; all levels train
side by side in one process (the code trains each level with its own script).

Each training step logs, per level k, ``d{k}_adv``, ``g{k}_adv`` and ``d{k}_acc``, the D's
accuracy on that step's real and fake halves (0.5: chance).

``generate`` returns ``image`` (= ``level0``) and ``level{k}`` for every level, each at its
native size (H / 2^k), in [0, 1]; :meth:`LAPGAN.image_outputs` lists them coarsest first, so
``ganstack eval --metrics fid_scales fid_levels`` scores every level and ``ganstack sample``
PNGs show the levels of each sample side by side. ``ganstack eval --metrics level_acc``
(:meth:`LAPGAN.level_accuracy`) starts the chain from real coarse images at each level and
reports how often the domain classifier still reads the true class in the final image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ganstack import losses
from ganstack.data.base import ImageDataset
from ganstack.errors import ConfigError, GanstackError
from ganstack.models.base import DataInfo, StackModel, Step, Tensors
from ganstack.nn import frozen, init_normal_, to_signed, to_unit
from ganstack.ranges import NonNegFloat, PosFloat, PosInt, Range, Unit
from ganstack.registry import count_tag

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class LAPGANConfig:
    name: str = "lapgan"
    # Pyramid levels, the dataset's image size being the finest (MNIST 28 -> 14 -> 7: 3). The
    # paper picks the depth so that the coarsest level is at most 8x8 pixels.
    levels: Annotated[int, Range(ge=1)] = 3
    # Class-conditional (the paper's CC-LAPGAN) when the data has labels; false: unconditional.
    conditional: bool = True
    # How the class enters a conv level: "plane" = Linear(K -> H*W) -> ReLU as one extra plane
    # (official classcond code); "onehot" = the one-hot vector broadcast as K constant planes.
    class_planes: Literal["plane", "onehot"] = "plane"
    z_dim: PosInt = 100  # noise size of the coarsest level (code and paper: 100)
    coarse_g_hidden: PosInt = 1200  # hidden units of the coarsest G's two layers (paper: 1200)
    coarse_d_hidden: PosInt = 600  # hidden units of the coarsest D's two layers (paper: 600)
    # Coarsest G's output: "linear" (code; its data was standardised) or "tanh" (fits [-1, 1]).
    coarse_output: Literal["linear", "tanh"] = "linear"
    g_hidden: PosInt = 64  # feature maps of a conv level's G (CIFAR code: 64)
    d_hidden: PosInt = 64  # feature maps of a conv level's D (CIFAR code: 64)
    g_kernels: list[int] = field(default_factory=lambda: [7, 7, 5])  # G's 3 convs (code 7,7,5)
    d_kernels: list[int] = field(default_factory=lambda: [5, 5])  # D's 2 convs (code 5, 5)
    d_dropout: Unit = 0.5  # dropout in every D (code: 0.5)
    # What a conv level's D sees: "sum" = l_k + h_k (code and paper: D adds them first);
    # "concat" = l_k and h_k as separate channels.
    d_input: Literal["sum", "concat"] = "sum"
    # Generator adversarial loss: "ns" = -log D(G(z)) (code); "saturating" = log(1 - D(G(z))).
    g_loss: Literal["ns", "saturating"] = "ns"
    # Coarsest level's networks: "mlp" = the code's fully connected GAN (sizes above);
    # "conv" = a small DCGAN-like level (NOT the official code's; a ganstack option): G =
    # Linear -> BN -> ReLU at half size -> ConvTranspose up -> BN -> ReLU -> conv3 -> pixels;
    # D = conv3 -> LReLU -> conv4 s2 -> LReLU -> linear, the class as input planes.
    coarse_arch: Literal["mlp", "conv"] = "mlp"
    coarse_g_maps: PosInt = 64  # "conv" coarse G: maps after the upsampling (first layer: 2x)
    coarse_d_maps: PosInt = 64  # "conv" coarse D: maps of the first conv (second: 2x)
    # How the class enters the "conv" coarse D: "planes" = input planes (`class_planes`);
    # "projection" = the inner product of a class embedding with D's last features, added to
    # its logit (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018), with no
    # class planes (a ganstack option, not the code's).
    coarse_d_condition: Literal["planes", "projection"] = "planes"
    # "sgd" = the official code's plain SGD with its per-epoch schedule: momentum starts at
    # `momentum` and grows by `momentum_step` per epoch up to `momentum_max`, the lr is divided
    # by `lr_decay` per epoch down to 1e-6 (an epoch = one pass over the training split).
    # "adam" = Adam(lr, beta1, beta2), not the code's (a modern option; faster in short runs).
    optimizer: Literal["adam", "sgd"] = "sgd"
    # Learning rate; 0 = the optimizer's default (sgd: the code's CIFAR 0.02; adam: 2e-4).
    lr: Annotated[float, Range(ge=0, note="0: the optimizer's default")] = 0.0
    # One learning rate per level, finest (level 0) first, for G and D of that level (not the
    # code's, which uses one lr); empty = `lr` everywhere.
    level_lr: Annotated[list[float], Range(gt=0)] = field(default_factory=list)
    # The coarsest D's lr is multiplied by this (a ganstack option; code: 1).
    coarse_d_lr_mult: PosFloat = 1.0
    beta1: Unit = 0.5  # Adam
    beta2: Unit = 0.999  # Adam
    momentum: Unit = 0.5  # SGD, start (code: coarse-to-fine 0.5; classcond/FC scripts 0)
    momentum_step: NonNegFloat = 0.0008  # SGD, per epoch (code)
    momentum_max: Unit = 0.7  # SGD (code 0.7; the paper reportedly 0.8)
    # SGD, lr /= this per epoch (code; classcond c2f: 1.00004)
    lr_decay: Annotated[float, Range(ge=1)] = 1.000004
    # Initial weights of the coarsest level's MLPs: N(0, std) (code: G 0.05, D 0.005). Conv
    # levels keep PyTorch's default init, which matches Torch's U(+-1/sqrt(fan_in)).
    coarse_g_init_std: PosFloat = 0.05
    coarse_d_init_std: PosFloat = 0.005

    def validate(self, where: str) -> None:
        if len(self.g_kernels) != 3 or any(k <= 0 or k % 2 == 0 for k in self.g_kernels):
            raise ConfigError(
                f"{where}.g_kernels must be 3 odd positive sizes (the G's 3 'same' convs), got "
                f"{self.g_kernels}"
            )
        if len(self.d_kernels) != 2 or any(k <= 0 or k % 2 == 0 for k in self.d_kernels):
            raise ConfigError(
                f"{where}.d_kernels must be 2 odd positive sizes, got {self.d_kernels}"
            )
        if self.level_lr and len(self.level_lr) != self.levels:
            raise ConfigError(
                f"{where}.level_lr needs one lr per level ({self.levels}, finest "
                f"first) or none, got {self.level_lr}"
            )

    def base_lr(self) -> float:
        return self.lr or (0.02 if self.optimizer == "sgd" else 2e-4)


# --------------------------------------------------------------------------------------------
# The pyramid
# --------------------------------------------------------------------------------------------


def downsample(x: torch.Tensor) -> torch.Tensor:
    """d: halve H and W by 2x2 averaging (= bilinear, half-pixel-centred downscaling by 2)."""
    return F.avg_pool2d(x, 2)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """u: double H and W by bilinear interpolation."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[I_0 = x, I_1 = d(I_0), ..., I_{L-1}]."""
    out = [x]
    for _ in range(levels - 1):
        out.append(downsample(out[-1]))
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[h_0, ..., h_{L-2}, I_{L-1}] with h_k = I_k - u(I_{k+1})."""
    g = gaussian_pyramid(x, levels)
    return [g[k] - upsample(g[k + 1]) for k in range(levels - 1)] + [g[-1]]


def reconstruct(coeffs: list[torch.Tensor]) -> torch.Tensor:
    """Invert :func:`laplacian_pyramid`: I_k = u(I_{k+1}) + h_k, coarse to fine."""
    img = coeffs[-1]
    for h in reversed(coeffs[:-1]):
        img = upsample(img) + h
    return img


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class ClassPlanes(nn.Module):
    """The class as planes of a conv level: one learned plane, or K one-hot planes."""

    def __init__(self, num_classes: int, size: tuple[int, int], mode: str) -> None:
        super().__init__()
        self.num_classes, self.size, self.mode = num_classes, size, mode
        if num_classes == 0:
            self.channels = 0
        elif mode == "plane":
            self.channels = 1
            self.embed = nn.Sequential(nn.Linear(num_classes, size[0] * size[1]), nn.ReLU())
        else:
            self.channels = num_classes

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        if self.mode == "plane":
            return self.embed(onehot).view(-1, 1, h, w)
        return onehot[:, :, None, None].expand(-1, -1, h, w)


class CoarseGenerator(nn.Module):
    """G_{L-1}: [z, one-hot] -> h ReLU -> h sigmoid -> pixels (linear or tanh)."""

    def __init__(
        self, z_dim: int, num_classes: int, hidden: int, shape: tuple[int, int, int], output: str
    ) -> None:
        super().__init__()
        self.shape = shape
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(z_dim + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.Sigmoid(),
            nn.Linear(hidden, c * h * w),
            *([nn.Tanh()] if output == "tanh" else []),
        )

    def forward(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        inp = z if onehot is None else torch.cat([z, onehot], 1)
        return self.net(inp).view(-1, *self.shape)


class CoarseDiscriminator(nn.Module):
    """D_{L-1}: [pixels, one-hot] -> h ReLU dropout -> h ReLU dropout -> 1 logit."""

    def __init__(
        self, num_classes: int, hidden: int, shape: tuple[int, int, int], dropout: float
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Linear(c * h * w + num_classes, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        inp = x.flatten(1) if onehot is None else torch.cat([x.flatten(1), onehot], 1)
        return self.net(inp)


class ConvCoarseGenerator(nn.Module):
    """G_{L-1}, option ``coarse_arch: conv`` (DCGAN-like, not the code's): [z, one-hot] ->
    Linear -> BN -> ReLU at half size -> ConvTranspose to full size -> BN -> ReLU -> conv3."""

    def __init__(
        self, z_dim: int, num_classes: int, maps: int, shape: tuple[int, int, int], output: str
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.start = (2 * maps, (h + 1) // 2, (w + 1) // 2)
        n0 = self.start[0] * self.start[1] * self.start[2]
        # Kernel 4 doubles an even size, kernel 3 gives 2n - 1 for an odd one (stride 2, pad 1).
        kernel = (4 if h % 2 == 0 else 3, 4 if w % 2 == 0 else 3)
        self.fc = nn.Sequential(
            nn.Linear(z_dim + num_classes, n0, bias=False), nn.BatchNorm1d(n0), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * maps, maps, kernel, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(maps),
            nn.ReLU(),
            nn.Conv2d(maps, c, 3, padding=1),
            *([nn.Tanh()] if output == "tanh" else []),
        )

    def forward(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        inp = z if onehot is None else torch.cat([z, onehot], 1)
        return self.net(self.fc(inp).view(-1, *self.start))


class ConvCoarseDiscriminator(nn.Module):
    """D_{L-1}, option ``coarse_arch: conv``: [pixels, class planes] -> conv3 -> LReLU ->
    conv4 s2 -> LReLU -> dropout -> linear; with ``condition="projection"`` no class planes,
    and <embed(class), features> added to the logit."""

    def __init__(
        self,
        num_classes: int,
        maps: int,
        shape: tuple[int, int, int],
        dropout: float,
        class_mode: str,
        condition: str = "planes",
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.projection = condition == "projection" and num_classes > 0
        self.classes = ClassPlanes(0 if self.projection else num_classes, (h, w), class_mode)
        features = 2 * maps * (h // 2) * (w // 2)
        self.net = nn.Sequential(
            nn.Conv2d(c + self.classes.channels, maps, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(maps, 2 * maps, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(features, 1),
        )
        if self.projection:
            self.embed = nn.Linear(num_classes, features, bias=False)

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        if onehot is not None and not self.projection:
            x = torch.cat([x, self.classes(onehot)], 1)
        feats = self.net[:-1](x)
        logit = self.net[-1](feats)
        if self.projection and onehot is not None:
            logit = logit + (self.embed(onehot) * feats).sum(1, keepdim=True)
        return logit


class ResidualGenerator(nn.Module):
    """G_k: [noise plane, class planes, u(I_{k+1})] -> 3 'same' convs -> residual (linear)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        size: tuple[int, int],
        hidden: int,
        kernels: list[int],
        class_mode: str,
    ) -> None:
        super().__init__()
        self.classes = ClassPlanes(num_classes, size, class_mode)
        k1, k2, k3 = kernels
        self.net = nn.Sequential(
            nn.Conv2d(1 + self.classes.channels + channels, hidden, k1, padding=k1 // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, k2, padding=k2 // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, k3, padding=k3 // 2),
        )

    def forward(
        self, low: torch.Tensor, z: torch.Tensor, onehot: torch.Tensor | None
    ) -> torch.Tensor:
        parts = [z]
        if onehot is not None:
            parts.append(self.classes(onehot))
        parts.append(low)
        return self.net(torch.cat(parts, 1))


class ResidualDiscriminator(nn.Module):
    """D_k: [l_k + h_k (or both), class planes] -> conv -> ReLU -> conv s2 -> ReLU -> linear."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        size: tuple[int, int],
        hidden: int,
        kernels: list[int],
        class_mode: str,
        dropout: float,
        d_input: str,
    ) -> None:
        super().__init__()
        self.d_input = d_input
        self.classes = ClassPlanes(num_classes, size, class_mode)
        k1, k2 = kernels
        in_ch = (2 if d_input == "concat" else 1) * channels + self.classes.channels

        def out_size(n: int, pad: int) -> int:
            return (n + 2 * pad - k1 + 1 + 2 * pad - k2) // 2 + 1

        # Valid convolutions as in the code; 'same' padding when the level is too small.
        pad = 0 if min(out_size(s, 0) for s in size) >= 1 else 1
        p1, p2 = (k1 // 2, k2 // 2) if pad else (0, 0)
        h = (size[0] + 2 * p1 - k1 + 1 + 2 * p2 - k2) // 2 + 1
        w = (size[1] + 2 * p1 - k1 + 1 + 2 * p2 - k2) // 2 + 1
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, hidden, k1, padding=p1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, k2, stride=2, padding=p2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(hidden * h * w, 1),
        )

    def forward(
        self, low: torch.Tensor, resid: torch.Tensor, onehot: torch.Tensor | None
    ) -> torch.Tensor:
        parts = [low + resid] if self.d_input == "sum" else [low, resid]
        if onehot is not None:
            parts.append(self.classes(onehot))
        return self.net(torch.cat(parts, 1))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class LAPGAN(StackModel):
    """LAPGAN with ``cfg.levels`` levels; level 0 is the dataset's image size."""

    name = "lapgan"
    Config = LAPGANConfig
    noise_distribution = "uniform"  # U[0, 1), mapped to the code's U(-1, 1) by 2z - 1
    generator_names = ("G",)
    retired_state = ("images_seen", "epoch_size")  # the schedule's clock before the Step

    def __init__(self, cfg: LAPGANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        n = cfg.levels
        # More halvings than the image has bits can never divide it (and 2 ** (n - 1) of a huge
        # n would take all memory to compute).
        f = 2 ** (n - 1) if n - 1 < min(h, w).bit_length() else 0
        if not f or h % f or w % f:
            raise ConfigError(
                f"model.levels={n} halves the image {n - 1} times, so its size must be divisible "
                f"by {f or f'2^{n - 1}'}; the dataset '{info.name}' has {h}x{w}. Choose fewer "
                f"levels."
            )
        self.levels = n
        self.sizes = [(h >> k, w >> k) for k in range(n)]
        k_cls = info.num_classes if self.conditional else 0
        gens: list[nn.Module] = []
        discs: list[nn.Module] = []
        for k in range(n - 1):
            gens.append(
                ResidualGenerator(
                    c, k_cls, self.sizes[k], cfg.g_hidden, cfg.g_kernels, cfg.class_planes
                )
            )
            discs.append(
                ResidualDiscriminator(
                    c,
                    k_cls,
                    self.sizes[k],
                    cfg.d_hidden,
                    cfg.d_kernels,
                    cfg.class_planes,
                    cfg.d_dropout,
                    cfg.d_input,
                )
            )
        top_shape = (c, *self.sizes[-1])
        if cfg.coarse_arch == "conv":
            gens.append(
                ConvCoarseGenerator(
                    cfg.z_dim, k_cls, cfg.coarse_g_maps, top_shape, cfg.coarse_output
                )
            )
            discs.append(
                ConvCoarseDiscriminator(
                    k_cls,
                    cfg.coarse_d_maps,
                    top_shape,
                    cfg.d_dropout,
                    cfg.class_planes,
                    cfg.coarse_d_condition,
                )
            )
        else:
            gens.append(
                init_normal_(
                    CoarseGenerator(
                        cfg.z_dim, k_cls, cfg.coarse_g_hidden, top_shape, cfg.coarse_output
                    ),
                    cfg.coarse_g_init_std,
                )
            )
            discs.append(
                init_normal_(
                    CoarseDiscriminator(k_cls, cfg.coarse_d_hidden, top_shape, cfg.d_dropout),
                    cfg.coarse_d_init_std,
                )
            )
        self.G = nn.ModuleList(gens)
        self.D = nn.ModuleList(discs)
        self.base_lrs: dict[str, float] = {}
        self.optimizers = {}
        for k in range(n):
            lr = cfg.level_lr[k] if cfg.level_lr else cfg.base_lr()
            self.base_lrs[f"G{k}"] = lr
            self.base_lrs[f"D{k}"] = lr * (cfg.coarse_d_lr_mult if k == n - 1 else 1.0)
            self.optimizers[f"G{k}"] = self._optimizer(self.G[k].parameters(), lr)
            self.optimizers[f"D{k}"] = self._optimizer(
                self.D[k].parameters(), self.base_lrs[f"D{k}"]
            )

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))

    # The code's per-epoch SGD schedule (epochs counted in the real images every process saw):
    # lr / decay^epoch (>= 1e-6), momentum + step * epoch (capped). Adam: constant.

    def lr(self, name: str, step: Step) -> float | None:
        if self.cfg.optimizer != "sgd":
            return None
        return max(self.base_lrs[name] / self.cfg.lr_decay**step.epoch, 1e-6)

    def momentum(self, name: str, step: Step) -> float | None:
        cfg = self.cfg
        if cfg.optimizer != "sgd":
            return None
        return min(
            cfg.momentum + cfg.momentum_step * step.epoch, max(cfg.momentum_max, cfg.momentum)
        )

    @property
    def conditional(self) -> bool:
        return bool(self.cfg.conditional) and self.info.num_classes > 0

    @classmethod
    def default_phases(cls, cfg: LAPGANConfig) -> dict[str, int]:
        return {"independent": 10000}

    # ---- data conventions ------------------------------------------------------------------

    preprocess = staticmethod(to_signed)  # uint8 -> [-1, 1]
    to_unit = staticmethod(partial(to_unit, clamp=True))  # [-1, 1] -> [0, 1], clamped

    def _onehot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ValueError("a class-conditional LAPGAN needs labels")
        return F.one_hot(y.long(), self.info.num_classes).float()

    def _noise_plane(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return z.view(-1, 1, *self.sizes[k])

    def _draw_z(self, b: int) -> list[torch.Tensor]:
        """Training noise U(-1, 1), one entry per level (planes for the conv levels)."""
        out = []
        for k in range(self.levels):
            shape = (b, self.cfg.z_dim) if k == self.levels - 1 else (b, 1, *self.sizes[k])
            out.append(torch.rand(shape, device=self.device) * 2 - 1)
        return out

    # ---- training --------------------------------------------------------------------------

    def _fake(
        self, k: int, low: torch.Tensor | None, z: torch.Tensor, onehot: torch.Tensor | None
    ) -> torch.Tensor:
        """Level k's fake: the coarsest image, or a residual on top of ``low``."""
        if k == self.levels - 1:
            return self.G[k](z, onehot)
        return self.G[k](low, z, onehot)

    def _disc(
        self, k: int, low: torch.Tensor | None, x: torch.Tensor, onehot: torch.Tensor | None
    ) -> torch.Tensor:
        if k == self.levels - 1:
            return self.D[k](x, onehot)
        return self.D[k](low, x, onehot)

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        cfg, n = self.cfg, self.levels
        x = self.preprocess(batch["images"])
        onehot = self._onehot(batch.get("labels"))
        b = len(x)
        g = gaussian_pyramid(x, n)
        # Real inputs of each level: the low-pass image l_k and the target (h_k, or I_{L-1}).
        lows: list[torch.Tensor | None] = [upsample(g[k + 1]) for k in range(n - 1)] + [None]
        targets = [g[k] - lows[k] for k in range(n - 1)] + [g[-1]]  # type: ignore[operator]
        logs: dict[str, torch.Tensor] = {}

        # ---- discriminator step, every level
        zs = self._draw_z(b)
        d_total = x.new_zeros(())
        for k in range(n):
            with torch.no_grad():
                fake = self._fake(k, lows[k], zs[k], onehot)
            real_logit = self._disc(k, lows[k], targets[k], onehot)
            fake_logit = self._disc(k, lows[k], fake, onehot)
            loss = losses.d_adversarial(real_logit, fake_logit)
            d_total = d_total + loss
            logs[f"d{k}_adv"] = loss.detach()
            # D's accuracy on this step's real and fake halves (0.5: it tells them apart no
            # better than chance).
            logs[f"d{k}_acc"] = 0.5 * (
                (real_logit.detach() > 0).float().mean() + (fake_logit.detach() < 0).float().mean()
            )
        self.optimize(d_total, [f"D{k}" for k in range(n)])

        # ---- generator step, every level (fresh noise; D gets no gradient)
        with frozen(self.D):
            zs = self._draw_z(b)
            g_total = x.new_zeros(())
            for k in range(n):
                fake = self._fake(k, lows[k], zs[k], onehot)
                loss = losses.g_adversarial(self._disc(k, lows[k], fake, onehot), cfg.g_loss)
                g_total = g_total + loss
                logs[f"g{k}_adv"] = loss.detach()
            self.optimize(g_total, [f"G{k}" for k in range(n)])
        return logs

    # ---- sampling --------------------------------------------------------------------------

    def noise_dims(self) -> dict[str, int]:
        """``z{L-1}`` (coarsest, ``z_dim``) first; ``z{k}`` of a conv level is one H_k x W_k
        plane."""
        dims = {f"z{self.levels - 1}": self.cfg.z_dim}
        for k in reversed(range(self.levels - 1)):
            h, w = self.sizes[k]
            dims[f"z{k}"] = h * w
        return dims

    def image_outputs(self) -> list[str]:
        """Every level, coarsest first; the finest (``level0``) is ``image``."""
        return [f"level{k}" for k in reversed(range(1, self.levels))] + ["image"]

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gens = self.net("G")
        n = self.levels
        onehot = self._onehot(inputs.get("y"))
        out: dict[str, torch.Tensor] = {}
        z = inputs[f"z{n - 1}"] * 2 - 1
        # Intermediate images are clamped to [-1, 1], the range the finer levels trained on.
        img = gens[n - 1](z, onehot).clamp(-1, 1)
        out[f"level{n - 1}"] = self.to_unit(img)
        for k in reversed(range(n - 1)):
            low = upsample(img)
            z = self._noise_plane(inputs[f"z{k}"] * 2 - 1, k)
            img = (low + gens[k](low, z, onehot)).clamp(-1, 1)
            out[f"level{k}"] = self.to_unit(img)
        out["image"] = out["level0"]
        return out

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``level{k}``: the same samples at every level (native size); ``pyramid``: ten
        samples, coarsest level on top, upsampled (nearest) to full size; ``vary_z{k}``: rows
        that vary only that level's noise."""
        rows = self.info.num_classes if self.conditional else 8
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        state = generator.get_state()
        figs: dict[str, torch.Tensor] = {}
        for k in reversed(range(self.levels)):
            gen = torch.Generator().set_state(state)  # the same inputs for every level
            figs[f"level{k}"] = self.grid(
                rows, 10, vary=self.noise_dims(), generator=gen, key=f"level{k}"
            )
        size = self.sizes[0]
        figs["pyramid"] = torch.stack(
            [
                F.interpolate(figs[f"level{k}"][0], size=size, mode="nearest")
                for k in reversed(range(self.levels))
            ]
        )
        generator.set_state(state)
        for name in self.noise_dims():
            figs[f"vary_{name}"] = self.grid(rows, 10, vary=[name], generator=generator)
        return figs

    # ---- measures -------------------------------------------------------------------------

    @torch.no_grad()
    def chain_from(
        self,
        img: torch.Tensor,
        level: int,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images ``img`` in [-1, 1] at ``level``'s size through the finer generators
        G_{level-1} .. G_0, as sampling runs them (fresh U(-1, 1) noise planes from
        ``generator``, class ``y``, every level clamped to [-1, 1]); full size, [-1, 1]."""
        if not 0 <= level < self.levels or tuple(img.shape[-2:]) != self.sizes[level]:
            raise GanstackError(
                f"chain_from: level {level} of {self.levels} needs images of "
                f"size {self.sizes[min(max(level, 0), self.levels - 1)]}, got "
                f"{tuple(img.shape[-2:])}"
            )
        onehot = self._onehot(None if y is None else y.to(self.device))
        img = img.to(self.device)
        with self.sampling_mode():
            gens = self.net("G")
            for k in reversed(range(level)):
                low = upsample(img)
                z = torch.rand(len(img), 1, *self.sizes[k], generator=generator)
                img = (low + gens[k](low, (z * 2 - 1).to(self.device), onehot)).clamp(-1, 1)
        return img

    @torch.no_grad()
    def level_accuracy(
        self,
        held: ImageDataset,
        classifiers: dict,
        n: int = 1000,
        seed: int = 0,
        batch_size: int = 250,
    ) -> dict[str, float]:
        """Per-level class fidelity: where along the chain the class is lost.

        For min(``n``, len(``held``)) labelled real images (a seeded random subset), the
        Gaussian pyramid is built; for every level j >= 1 the chain starts from the *real*
        image at level j, conditioned on its true class, and runs the finer generators to
        full size (:meth:`chain_from`). Each domain classifier (``classifiers``: name ->
        (classifier, record), as :meth:`ganstack.metrics.evaluate.EvalContext.classifier` gives
        them) scores the outputs against the true class. Keys (N images, C the classifier):

        - ``level_accN_C_from_level{j}``: the chain from real level j (the class kept by the
          generated levels below j; j = L-1 is the whole chain below the coarsest level);
        - ``level_accN_C_upsampled_level{j}``: the real level-j image only enlarged (u applied
          j times, no residual): what the coarse image alone carries to this judge;
        - ``level_accN_C_real``: the real images themselves (the ceiling).

        Each level is trained on real coarse images (phase ``independent``, as in the paper
        and the code), so ``from_level1`` measures the finest G on the inputs it trained on
        and ``from_level{L-1}`` every residual level on real coarsest images; a drop from
        ``from_level{j-1}`` to ``from_level{j}`` is class identity lost at level j-1."""
        from ganstack.viz import to_uint8

        if held.labels is None:
            raise GanstackError(
                f"the per-level class fidelity needs labelled images; '{held.name}' has no labels"
            )
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(held), generator=gen)[: min(n, len(held))]
        y = held.labels[idx].long()
        sets: dict[str, list[torch.Tensor]] = {"real": [held.images[idx]]}
        for s in range(0, len(idx), batch_size):
            x = self.preprocess(held.images[idx[s : s + batch_size]])
            yb = y[s : s + batch_size] if self.conditional else None
            pyr = gaussian_pyramid(x, self.levels)
            for j in range(1, self.levels):
                out = self.chain_from(pyr[j], j, yb, gen)
                sets.setdefault(f"from_level{j}", []).append(to_uint8(self.to_unit(out)).cpu())
                up = pyr[j]
                for _ in range(j):
                    up = upsample(up)
                sets.setdefault(f"upsampled_level{j}", []).append(to_uint8(self.to_unit(up)).cpu())
        res: dict[str, float] = {}
        for clf, meta in classifiers.values():
            tag = f"{count_tag(len(idx))}_{meta['name']}"
            for name, parts in sets.items():
                probs = clf.predict(torch.cat(parts))[1]
                res[f"level_acc{tag}_{name}"] = float((probs.argmax(1) == y).double().mean())
        return res
