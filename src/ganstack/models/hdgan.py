"""HDGAN: "Photographic Text-to-Image Synthesis with a Hierarchically-nested Adversarial
Network" (Zhang, Xie, Yang, CVPR 2018; official code ``ypxie/HDGan``).

One single-stream generator reads images off its trunk at growing resolutions (side outputs);
one discriminator per side output (the "hierarchically-nested" discriminators), each with two
heads: a pair head (does the image match the text?) and an image head (is the image real?),
which may be an R x R map of patch scores. Least-squares adversarial loss.

Generator (``ypxie/HDGan HDGan/models/hd_networks.py``, ``Generator``):

- conditioning augmentation: Linear(text -> 2 ef) + LeakyReLU(0.2) on all outputs, mean = the
  first half, **log sigma** = the second; c = mean + exp(log sigma) * eps, eps ~ N(0, 1) (not
  truncated); KL 0.5 (mean^2 + sigma^2 - 1) - log sigma averaged over batch and dimensions
  (``HDGan/HDGan.py`` ``get_KL_Loss``), weight 4 (birds, flowers) or 2 (COCO);
- [c, z] -> Linear (with bias) -> BatchNorm1d -> (8 gf, 4, 4), no activation (``Sent2FeatMap``);
- one level per resolution 4, 8, ..., finest: nearest x2 (except at 4), a reflection-padded
  conv3x3 -> BN -> ReLU that halves the channels at the sizes in ``halve_at`` (code: 8, 32, 128,
  256; elsewhere no conv at all), then ``res_blocks`` (K = 1) residual blocks
  x + [pad, conv3x3, BN, ReLU, pad, conv3x3, BN](x), no activation after the sum;
- side outputs: reflection pad, conv3x3 (no bias) -> 3, tanh, on the trunk's features at each
  side-output size; the trunk goes on from the features, not from the images.

Discriminators (``Discriminator``, ``ImageDown``, ``DiscClassifier``), one per side output:

- an encoder down to 8 x 8: conv3x3 stride 2 (padding 1) -> BN -> LeakyReLU(0.2), the first
  without BN, widths doubling up to ``4 df`` (code: 3 -> 128 -> 256 -> 512 at 64,
  3 -> 64 -> ... -> 512 at 128, 3 -> 32 -> ... -> 512 at 256), then a conv5x5 valid ->
  BN -> LeakyReLU to 4 x 4 (the code's "large kernel_size at the end");
- a text projection per scale: Linear(text -> ef) + LeakyReLU(0.2) of the raw embedding (not
  the CA sample);
- pair head: cat[4x4 code, text code tiled] -> conv1x1 (no bias) -> BN -> LeakyReLU -> conv4x4
  valid (bias) -> one score;
- image head: conv4x4 valid (bias). With ``image_patch`` R = 1 it reads the 4 x 4 code (one
  score: the code at 64 and 128); with R > 1 it reads the 8 x 8 code before the 5x5 conv with
  a (9 - R) kernel, giving R x R scores (the code at 256: 4x4 kernel -> 5 x 5). Code: R = 1, 1,
  5; paper Fig. 3: 1, 3, 5 (the authors say Fig. 3 is an illustration and the reported models
  used 1 x 1 at 128; ypxie/HDGan issue 12).

Convolutions have no bias except the final score convolutions; linear layers have one. Init
(``HDGan/proj_utils/network_utils.py`` ``weights_init``): conv weights N(0, 0.02), BN scale
N(1, 0.02) and shift 0, linear layers PyTorch's default.

Losses (``HDGan/HDGan.py``): MSE on the raw scores (no sigmoid), target 1 real, 0 fake, summed
over scales. With P the pair score, L the image-head map (MSE averages over its elements), r the
real images, w the mismatched ("wrong") real images with the same text, f the fakes:

- ``objective: code`` (default): D = sum_s MSE(P_r,1) + 1/2 [MSE(P_w,0) + MSE(P_f,0)]
  + MSE(L_f,0) + 1/2 [MSE(L_w,1) + MSE(L_r,1)]: wrong images count as real for the image head;
- ``objective: paper`` (the paper's objective, from a second-hand transcription): unit
  weights, the image head sees real and fake only, and the mismatched pair is (real image,
  another caption):
  D = sum_s MSE(L_r,1) + MSE(P_r,1) + MSE(L_f,0) + MSE(P_f,0) + MSE(P(r, t_other),0);
- G = kl_weight * KL + sum_s MSE(P(X_s, t), 1) + MSE(L(X_s), 1).

Training step (phase ``joint``): draw z, run G once; one Adam step of the whole D (every
scale, one optimizer as the code) on the detached fakes; one G step that reuses the same fakes
(the code; ``g_resample_z: true`` draws z again and reruns G, as the first release did). Real
images at every scale come from one random crop (76/64, i.e. the code's 304 -> 256) and its
bilinear down-scales; the wrong images are the batch's real images rolled by one (the code
draws a real image of another class; on a shuffled batch a roll is the same draw without the
class check); the text per sample is the mean of 4 of its captions (``caption_sampling:
mean4``, the code's ``num_emb`` 4). Adam 2e-4, betas (0.5, 0.999), the learning rate halved
at the start of every 1-based epoch divisible by ``lr_decay_epochs`` (code: 100, COCO 50),
expressed as :meth:`HDGAN.lr`, a function of the trainer's step. The code keeps no EMA of G
and samples with eval-mode batch norm; ``train.ema`` (off in the paper configs) adds one.

The 512 variant (``super_output: true``; ``GeneratorSuperL1Loss``): the finest trunk features,
detached, go through 2 residual blocks -> nearest x2 -> conv3x3 halving the channels -> BN ->
ReLU -> side output at twice the finest size (the ``image`` output). It trains in a second phase
``super``, with the rest of G frozen, on weight ``l1_weight`` times L1(its output, the bilinear
up-scale of the detached finest output) instead of the KL. Code vs paper: the paper's Fig. 1
draws a discriminator at 512; the released code has none (its trainer then fails on the 512
output). ``super_adversarial: true`` (default) adds a discriminator at 512 trained with the
others and the G adversarial terms at 512; false trains the 512 part on the L1 term alone.
In phase ``super`` the discriminators of the side outputs keep training, as the code's 512
stage would (its D step runs over every output).

Names (``docs/architecture.md``): the code counts outputs from the coarsest; here output j of L
(the side outputs, then the super output) is level L - 1 - j, level 0 the finest. The outputs
are ``level{L-1}`` ... ``level1``, ``image``; the optimizers ``G``, ``D`` (every
discriminator) and ``G_super``; the log keys ``d{i}_pair``, ``d{i}_image``, ``g{i}_pair``,
``g{i}_image``, ``g_kl``, ``g_l1``, and ``d``, ``g`` (the totals). Checkpoints written with the
former names (optimizers ``g``, ``d``, ``g_super``) still load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ganstack.data.augment import multiscale_batch
from ganstack.data.base import ImageDataset
from ganstack.errors import ConfigError, GanstackError
from ganstack.models.base import DataInfo, LogFn, StackModel, Step
from ganstack.models.text import CaptionBankMixin, pick_captions, require_text
from ganstack.nn import frozen, init_normal_, to_unit
from ganstack.ranges import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Unit

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

MAX_SIDE_OUTPUTS = 6
PHASES = ("joint", "super")


@dataclass
class HDGANConfig:
    name: str = "hdgan"
    # Side outputs: `side_outputs` sizes, the first (coarsest) at `base_size`, each twice the
    # previous (code: 3 at 64, 128, 256). The data's resolution is the finest size (twice it
    # with `super_output`).
    side_outputs: Annotated[int, Range(ge=1, le=MAX_SIDE_OUTPUTS)] = 3
    base_size: int = 64
    z_dim: PosInt = 100  # code noise_dim
    ef_dim: PosInt = 128  # code emb_dim: the CA sample and D's text code
    gf_dim: PosInt = 128  # code G hid_dim: the 4x4 trunk has 8 gf channels
    df_dim: PosInt = 128  # code D hid_dim: the encoders end at 4 df channels
    res_blocks: NonNegInt = 1  # K, residual blocks at every trunk level (code num_resblock 1)
    # Trunk sizes at which a conv halves the channels (code reduce_dim_at).
    halve_at: list[int] = field(default_factory=lambda: [8, 32, 128, 256])
    # R of each discriminator's image head (R x R patch scores), one per side output (plus one
    # for the 512 output with super_output); null: the code's 1 everywhere but 5 at the
    # finest (and at the super output). The paper's Fig. 3: [1, 3, 5].
    image_patch: Annotated[
        list[int] | None, Range(ge=1, le=8, note="R x R scores read off an 8x8 code")
    ] = None
    kl_weight: NonNegFloat = 4.0  # code KL_COE (birds, flowers; COCO 2)
    objective: Literal["code", "paper"] = "code"  # the D loss (module docstring)
    g_resample_z: bool = False  # code: the G step reuses the D step's fakes
    caption_sampling: Literal["one", "mean4"] = "mean4"  # code num_emb 4
    augment: bool = True  # 76/64 resize + random crop + flip (code: 304 -> 256 crop, flip)
    lr: PosFloat = 2e-4  # Adam, G and D (code g_lr, d_lr)
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    # Halve the learning rate at every (1-based) epoch of the phase divisible by N, i.e. after
    # N - 1, 2N - 1, ... epochs (code epoch_decay: 100; COCO 50); 0: never.
    lr_decay_epochs: NonNegInt = 100
    init: Literal["code", "default"] = "code"  # code weights_init; default: PyTorch's
    # The 512 variant: one more output at twice the finest size, trained in phase `super`.
    super_output: bool = False
    super_res_blocks: NonNegInt = 2  # code GeneratorSuperL1Loss num_resblock
    l1_weight: NonNegFloat = 1.0  # code: the L1 term replaces the KL with weight 1
    super_adversarial: bool = True  # paper Fig. 1: a D at 512 (the code has none)
    caption_bank: PosInt = 256
    sample_bn: Literal["eval", "batch"] = "eval"  # code HDGan_test.py: netG.eval()

    def validate(self, where: str) -> None:
        if self.base_size < 16 or self.base_size & (self.base_size - 1):
            raise ConfigError(
                f"{where}.base_size must be a power of two >= 16 (each "
                f"discriminator encodes its images down to 8x8), got "
                f"{self.base_size}"
            )
        for s in self.halve_at:
            if s < 4 or s & (s - 1):
                raise ConfigError(
                    f"{where}.halve_at holds trunk sizes (powers of two >= 4), got {s}"
                )
        if self.df_dim % 4:
            raise ConfigError(f"{where}.df_dim must be a multiple of 4, got {self.df_dim}")
        enc = 4 * self.df_dim
        for size in self.disc_sizes():
            if enc % 2 ** (int(math.log2(size // 8)) - 1):
                raise ConfigError(
                    f"{where}.df_dim ({self.df_dim}) is too small for a "
                    f"{size}x{size} discriminator: its encoder halves 4 df "
                    f"{int(math.log2(size // 8)) - 1} times"
                )
        chans = self.channels()
        if min(chans.values()) < 1 or (self.super_output and chans[self.sizes()[-1]] < 2):
            at = sorted(s for s in self.halve_at if s <= self.sizes()[-1])
            raise ConfigError(
                f"{where}.gf_dim ({self.gf_dim}) is too small: the trunk halves 8 gf at {at}"
            )
        patches = self.patches()
        if len(patches) != len(self.disc_sizes()):
            raise ConfigError(
                f"{where}.image_patch needs one R per discriminator "
                f"({len(self.disc_sizes())}: sizes {self.disc_sizes()}), got "
                f"{self.image_patch}"
            )

    def sizes(self) -> list[int]:
        """The side outputs' sizes (without the super output)."""
        return [self.base_size * 2**i for i in range(self.side_outputs)]

    def out_size(self) -> int:
        return self.sizes()[-1] * (2 if self.super_output else 1)

    def disc_sizes(self) -> list[int]:
        extra = [self.out_size()] if self.super_output and self.super_adversarial else []
        return self.sizes() + extra

    def patches(self) -> list[int]:
        if self.image_patch is not None:
            return list(self.image_patch)
        n = len(self.disc_sizes())
        return [1] * (self.side_outputs - 1) + [5] * (n - self.side_outputs + 1)

    def channels(self) -> dict[int, int]:
        """Trunk channels at each size 4 .. finest side output."""
        c, out = 8 * self.gf_dim, {}
        s = 4
        while s <= self.sizes()[-1]:
            if s in self.halve_at:
                c //= 2
            out[s] = c
            s *= 2
        return out


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def pad_conv(c_in: int, c_out: int, relu: bool = True) -> nn.Sequential:
    """Generator conv: reflection pad 1, conv3x3 (no bias), BN, (ReLU) (code pad_conv_norm)."""
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(1),
        nn.Conv2d(c_in, c_out, 3, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """x + [pad, conv3x3, BN, ReLU, pad, conv3x3, BN](x); no activation after the sum."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*pad_conv(c, c), *pad_conv(c, c, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def to_image(c: int, channels: int) -> nn.Sequential:
    """A side output: reflection pad, conv3x3 (no bias) -> image channels, tanh (branch_out)."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, channels, 3, bias=False), nn.Tanh())


class CondAugment(nn.Module):
    """Linear -> LeakyReLU(0.2) -> (mean, log sigma); c = mean + exp(log sigma) * eps."""

    def __init__(self, text_dim: int, ef_dim: int) -> None:
        super().__init__()
        self.ef_dim = ef_dim
        self.fc = nn.Linear(text_dim, 2 * ef_dim)

    def forward(
        self, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.leaky_relu(self.fc(emb), 0.2)
        mu, log_sigma = h[:, : self.ef_dim], h[:, self.ef_dim :]
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + eps * log_sigma.exp(), mu, log_sigma


def kl_log_sigma(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per element, averaged: 0.5 (mu^2 + sigma^2 - 1) - log
    sigma (code get_KL_Loss, whose ``logvar`` argument holds log sigma)."""
    return (0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1) - log_sigma).mean()


def ls_loss(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss: the mean of (score - target)^2 over every element (nn.MSELoss
    on the raw scores, as the code)."""
    return (scores - target).pow(2).mean()


class Generator(nn.Module):
    def __init__(self, cfg: HDGANConfig, text_dim: int, channels: int) -> None:
        super().__init__()
        self.ca = CondAugment(text_dim, cfg.ef_dim)
        chans = cfg.channels()
        self.c0 = 8 * cfg.gf_dim
        self.fc = nn.Sequential(
            nn.Linear(cfg.ef_dim + cfg.z_dim, 16 * self.c0), nn.BatchNorm1d(16 * self.c0)
        )
        self.levels = nn.ModuleList()
        c_prev = self.c0
        for s, c in chans.items():
            layers: list[nn.Module] = (
                [] if s == 4 else [nn.Upsample(scale_factor=2, mode="nearest")]
            )
            if c != c_prev:
                layers.append(pad_conv(c_prev, c))
            layers += [ResBlock(c) for _ in range(cfg.res_blocks)]
            self.levels.append(nn.Sequential(*layers))
            c_prev = c
        self.level_sizes = list(chans)
        self.side_sizes = cfg.sizes()
        self.heads = nn.ModuleList([to_image(chans[s], channels) for s in self.side_sizes])
        self.super: nn.Sequential | None = None
        if cfg.super_output:
            c = chans[self.side_sizes[-1]]
            self.super = nn.Sequential(
                *[ResBlock(c) for _ in range(cfg.super_res_blocks)],
                nn.Upsample(scale_factor=2, mode="nearest"),
                pad_conv(c, c // 2),
                to_image(c // 2, channels),
            )

    def forward(
        self,
        z: torch.Tensor,
        emb: torch.Tensor,
        eps: torch.Tensor | None = None,
        with_super: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Images at every side size (then the super output, if any and ``with_super``),
        mean, log sigma."""
        c, mu, log_sigma = self.ca(emb, eps)
        h = self.fc(torch.cat([c, z], 1)).view(-1, self.c0, 4, 4)
        images = []
        heads = iter(self.heads)
        for s, level in zip(self.level_sizes, self.levels, strict=True):
            h = level(h)
            if s in self.side_sizes:
                images.append(next(heads)(h))
        if self.super is not None and with_super:
            images.append(self.super(h.detach()))
        return images, mu, log_sigma


class ScaleDiscriminator(nn.Module):
    """D_s: encoder to 8x8, conv5x5 valid to 4x4, pair head on the 4x4 code and the text code,
    image head on the 4x4 code (R = 1) or the 8x8 one (R > 1)."""

    def __init__(
        self, size: int, channels: int, df_dim: int, ef_dim: int, text_dim: int, patch: int
    ) -> None:
        super().__init__()
        enc = 4 * df_dim
        n = int(math.log2(size // 8))
        layers: list[nn.Module] = []
        c_in = channels
        for j in range(n):
            c_out = enc // 2 ** (n - 1 - j)
            layers.append(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False))
            if j > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
            c_in = c_out
        self.encoder = nn.Sequential(*layers)  # -> (enc, 8, 8)
        self.squeeze = nn.Sequential(
            nn.Conv2d(enc, enc, 5, bias=False), nn.BatchNorm2d(enc), nn.LeakyReLU(0.2, True)
        )  # -> (enc, 4, 4)
        self.text = nn.Sequential(nn.Linear(text_dim, ef_dim), nn.LeakyReLU(0.2, True))
        self.pair = nn.Sequential(
            nn.Conv2d(enc + ef_dim, enc, 1, bias=False),
            nn.BatchNorm2d(enc),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(enc, 1, 4),
        )
        self.patch = patch
        self.image = nn.Conv2d(enc, 1, 4 if patch == 1 else 9 - patch)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pair scores (B,), image scores (B, R, R))."""
        h8 = self.encoder(x)
        h4 = self.squeeze(h8)
        t = self.text(emb)[:, :, None, None].expand(-1, -1, 4, 4)
        pair = self.pair(torch.cat([h4, t], 1)).flatten()
        image = self.image(h4 if self.patch == 1 else h8)[:, 0]
        return pair, image

    def pair_score(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.forward(x, emb)[0]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class HDGAN(CaptionBankMixin, StackModel):
    name = "hdgan"
    Config = HDGANConfig
    generator_names = ("netG",)
    noise_distribution = "normal"

    def __init__(self, cfg: HDGANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        if h != w or h != cfg.out_size():
            extra = " plus the super output" if cfg.super_output else ""
            raise ConfigError(
                f"hdgan with side_outputs={cfg.side_outputs} and base_size={cfg.base_size}"
                f"{extra} makes {cfg.out_size()}x{cfg.out_size()} images, but the data is "
                f"{h}x{w}; set data.resolution={cfg.out_size()} or change model.base_size/"
                f"model.side_outputs"
            )
        require_text(info, "hdgan", has_unconditional=False)
        self.sizes = cfg.sizes()
        self.d_sizes = cfg.disc_sizes()
        self.netG = Generator(cfg, info.text_dim, c)
        self.netDs = nn.ModuleList(
            [
                ScaleDiscriminator(s, c, cfg.df_dim, cfg.ef_dim, info.text_dim, r)
                for s, r in zip(self.d_sizes, cfg.patches(), strict=True)
            ]
        )
        if cfg.init == "code":
            # The code's weights_init: convs N(0, 0.02) (biases kept), BN N(1, 0.02); linear
            # layers keep PyTorch's default.
            init_normal_(self, bn_std=0.02, linear=False, zero_bias=False)
        self._init_bank(cfg.caption_bank, info.text_dim)
        betas = (cfg.beta1, cfg.beta2)
        base = [p for n, p in self.netG.named_parameters() if not n.startswith("super.")]
        # One optimizer for the whole of D (code), one for G; the super output has its own
        # (phase `super`: the rest of G is frozen, as the code's 512 stage intends).
        self.optimizers = {
            "G": torch.optim.Adam(base, cfg.lr, betas=betas),
            "D": torch.optim.Adam(self.netDs.parameters(), cfg.lr, betas=betas),
        }
        if self.netG.super is not None:
            self.optimizers["G_super"] = torch.optim.Adam(
                self.netG.super.parameters(), cfg.lr, betas=betas
            )

    def level(self, j: int) -> int:
        """The level of output ``j`` counted from the coarsest (the code's index; the super
        output, if any, is the last: level 0)."""
        return len(self.sizes) + (1 if self.cfg.super_output else 0) - 1 - j

    def retired_optimizer_names(self) -> dict[str, str]:
        return {"G": "g", "D": "d", "G_super": "g_super"}  # before the level vocabulary

    @property
    def conditional(self) -> bool:  # text, not classes
        return False

    @classmethod
    def default_phases(cls, cfg: HDGANConfig) -> dict[str, int]:
        # Birds: 500 epochs of 8,855 images at batch 10 (the authors, ypxie/HDGan issue 4).
        phases = {"joint": 442_500}
        if cfg.super_output:
            phases["super"] = 70_800  # 80 epochs (test_birds.sh loads the 512 model's 80th)
        return phases

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        self.fill_bank(train)
        return {}

    def lr(self, name: str, step: Step) -> float:
        """The learning rate of every optimizer at ``step``: the code halves it at the start
        of each 1-based epoch divisible by ``lr_decay_epochs`` (``HDGan/HDGan.py``), so after
        e whole epochs of the phase it is lr / 2^((e + 1) // lr_decay_epochs). Epochs are
        counted in images (the phase's steps times the global batch over the training set);
        the code's epoch is floor(N / batch) steps, less than half a step shorter."""
        cfg = self.cfg
        if not cfg.lr_decay_epochs or step.dataset_size <= 0:
            return cfg.lr
        epochs = step.phase_step * step.batch_size * step.world_size // step.dataset_size
        return cfg.lr * 0.5 ** ((epochs + 1) // cfg.lr_decay_epochs)

    # ---- sampling -------------------------------------------------------------------------

    def condition_dims(self) -> dict[str, int]:
        return {"text": self.info.text_dim}

    def noise_dims(self) -> dict[str, int]:
        # "ca": the noise of the conditioning-augmentation sample c = mu + sigma * ca.
        return {"z": self.cfg.z_dim, "ca": self.cfg.ef_dim}

    def image_outputs(self) -> list[str]:
        """``level{L-1}`` (the base size) ... ``level1``, then ``image`` (level 0: the finest
        side output, or the super output)."""
        n = len(self.sizes) + (1 if self.cfg.super_output else 0)
        return [f"level{self.level(j)}" for j in range(n - 1)] + ["image"]

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, _, _ = self.net("netG")(inputs["z"], inputs["text"], inputs.get("ca"))
        return {name: to_unit(x) for name, x in zip(self.image_outputs(), images, strict=True)}

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        from ganstack.viz import scales_grid

        figs = {
            "vary_z": self.grid(8, 10, vary=list(self.noise_dims()), generator=generator),
            "vary_text": self.grid(8, 10, vary=["text"], generator=generator),
        }
        for name in self.image_outputs()[:-1]:  # every side output's own grid
            figs[f"vary_z_{name}"] = self.grid(
                8, 10, vary=list(self.noise_dims()), generator=generator, key=name
            )
        figs["scales"] = scales_grid(self, 8, generator)
        return figs

    # ---- training -------------------------------------------------------------------------

    def enter_phase(self, phase: str, fresh: bool) -> None:
        if phase not in PHASES or (phase == "super" and not self.cfg.super_output):
            raise GanstackError(
                f"hdgan has phases {list(self.default_phases(self.cfg))}, not '{phase}'"
            )

    def d_losses(
        self, d: ScaleDiscriminator, real: torch.Tensor, fake: torch.Tensor, emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's (pair loss, image loss) at one scale (``fake`` detached by the caller)."""
        pr, lr_ = d(real, emb)
        pf, lf = d(fake, emb)
        if self.cfg.objective == "code":
            # (mismatched real image, this text): the wrong images are the batch rolled by one.
            pw, lw = d(real.roll(1, 0), emb)
            pair = ls_loss(pr, 1) + 0.5 * (ls_loss(pw, 0) + ls_loss(pf, 0))
            image = ls_loss(lf, 0) + 0.5 * (ls_loss(lw, 1) + ls_loss(lr_, 1))
        else:
            # (real image, another sample's text).
            pw = d.pair_score(real, emb.roll(1, 0))
            pair = ls_loss(pr, 1) + ls_loss(pf, 0) + ls_loss(pw, 0)
            image = ls_loss(lr_, 1) + ls_loss(lf, 0)
        return pair, image

    def train_step(
        self, batch: dict[str, torch.Tensor], phase: str, step: Step
    ) -> dict[str, torch.Tensor]:
        if phase not in PHASES:
            raise GanstackError(f"hdgan has phases {list(PHASES)}, not '{phase}'")
        cfg = self.cfg
        super_phase = phase == "super"
        sizes = self.sizes + ([cfg.out_size()] if cfg.super_output else [])
        reals = multiscale_batch(batch["images"], sizes, augment=cfg.augment)
        b = len(reals[0])
        emb = pick_captions(batch["embeddings"], cfg.caption_sampling)
        dev = reals[0].device
        z = torch.randn(b, cfg.z_dim, device=dev)
        # Phase joint leaves the super output (and its batch-norm statistics) alone.
        fakes, mu, log_sigma = self.netG(z, emb, with_super=super_phase)
        # The scales each discriminator judges: the side outputs, and in phase `super` the
        # super output (with super_adversarial). Its D is idle in phase `joint`.
        judged = list(range(len(self.sizes)))
        if super_phase and cfg.super_adversarial:
            judged.append(len(self.sizes))
        out: dict[str, torch.Tensor] = {}
        # D step: every scale, one optimizer.
        d_total = torch.zeros((), device=dev)
        for i in judged:
            pair, image = self.d_losses(self.netDs[i], reals[i], fakes[i].detach(), emb)  # type: ignore[arg-type]
            k = self.level(i)
            out[f"d{k}_pair"], out[f"d{k}_image"] = pair.detach(), image.detach()
            d_total = d_total + pair + image
        self.optimize(d_total, ["D"])
        out["d"] = d_total.detach()
        # G step.
        if cfg.g_resample_z:
            z = torch.randn(b, cfg.z_dim, device=dev)
            fakes, mu, log_sigma = self.netG(z, emb, with_super=super_phase)
        with frozen(self.netDs):
            g_total = torch.zeros((), device=dev)
            # In phase `super` only the super output's terms reach trainable weights.
            g_scales = [len(self.sizes)] if super_phase else list(range(len(self.sizes)))
            for i in g_scales:
                if i >= len(self.netDs):
                    continue
                pair, image = self.netDs[i](fakes[i], emb)
                g_pair, g_image = ls_loss(pair, 1), ls_loss(image, 1)
                k = self.level(i)
                out[f"g{k}_pair"], out[f"g{k}_image"] = g_pair.detach(), g_image.detach()
                g_total = g_total + g_pair + g_image
            if super_phase:
                up = F.interpolate(
                    fakes[len(self.sizes) - 1].detach(),
                    size=cfg.out_size(),
                    mode="bilinear",
                    align_corners=False,
                )
                l1 = F.l1_loss(fakes[-1], up)
                g_total = g_total + cfg.l1_weight * l1
                out["g_l1"] = l1.detach()
                self.optimize(g_total, ["G_super"])
            else:
                kl = kl_log_sigma(mu, log_sigma)
                g_total = g_total + cfg.kl_weight * kl
                out["g_kl"] = kl.detach()
                self.optimize(g_total, ["G"])
        out["g"] = g_total.detach()
        return out
