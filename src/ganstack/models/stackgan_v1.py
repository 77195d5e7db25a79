"""StackGAN-v1 (Zhang et al., ICCV 2017): text -> conditioning augmentation -> a Stage-I
image -> a Stage-II image, trained stage by stage with matching-aware discriminators.

Levels (paper Sec. 3.2-3.5; official code: ``hanzhanggit/StackGAN-Pytorch`` code/model.py,
classes ``CA_NET``, ``STAGE1_G``, ``STAGE1_D``, ``STAGE2_G``, ``STAGE2_D``, and the TF code
``hanzhanggit/StackGAN`` stageI/model.py, stageII/model.py), for sizes ``s1`` (paper 64) and
``s2`` (paper 256):

- CA: FC of the text embedding to (mu, log sigma^2) [PyTorch code: ReLU on the FC
  output, ``ca: relu``] or (mu, log sigma) [TF code: LeakyReLU(0.2) and a truncated-normal
  eps, ``ca: lrelu``]; c = mu + sigma * eps. Stage-II has its own CA. ``use_ca: false`` is the
  paper's "no CA" ablation: c is a linear projection of the text, no noise, no KL term.
- Stage-I G: [z, c] -> FC -> 4x4 x 8 gf -> up-blocks (nearest x2, conv3x3, BN, ReLU),
  halving the channels, to s1 -> conv3x3 -> tanh. The TF variant has the code's bottleneck
  residual blocks at 4x4 and 8x8 and no ReLU after the FC and the first up-block.
- Stage-I D: conv4x4/2 down-blocks to 4x4, then the conditional head: [image code,
  condition tiled 4x4] -> conv (3x3 PyTorch, 1x1 TF), BN, LReLU -> conv4x4/4 -> logit. The
  condition is the G-side CA mean mu, detached (PyTorch code) or the raw text through D's own
  FC + LReLU (TF code and the paper; ``d_condition``).
- Stage-II G: the Stage-I image (the frozen Stage-I generator's output for the same z,
  detached) -> encoder (conv3x3 ReLU, then two conv4x4/2 BN ReLU blocks: gf, 2 gf, 4 gf) ->
  join with its own CA sample tiled (conv3x3, BN, ReLU) -> ``r_num`` residual blocks
  (relu(x + [conv3x3, BN, ReLU, conv3x3, BN](x)), a ReLU after the sum in both codes) ->
  up-blocks to s2 -> conv3x3 -> tanh. ``stage2_text: false`` is the paper's "text only to
  Stage-I" ablation: no Stage-II CA, the join sees the image code alone (Stage-II's D is
  still matching-aware; in the PyTorch variant it is conditioned on Stage-I's mu).
- Stage-II D: as Stage-I's with more down-blocks; beyond 8 df channels the PyTorch code
  brings them back with 3x3 blocks, the TF code with 1x1 convolutions and a bottleneck
  residual block. The PyTorch code also gives it an unconditional head (``stage2_uncond``).

Sizes: the paper joins the condition at 16x16, which is both s1 / 4 and s2 / 16. Here the join
is at **s1 / 4** (the encoder keeps the code's two stride-2 blocks) and the decoder has
log2(4 s2 / s1) up-blocks (4 for 64 -> 256, with 2 gf, gf, gf/2, gf/4 channels). So the 128²
ablation (64 -> 128) is the 256² model without its last up-block, and the 16 -> 64 demo joins
at 4x4 and up-samples four times. Discriminators down-sample log2(size / 4) times.

Losses (code/miscc/utils.py; TF stageI/trainer.py, stageII/trainer.py), r/w/f = (real,
matching text), (real, mismatched text), (fake, its text):

- D (both stages): BCE(r,1) + 1/2 [BCE(w,0) + BCE(f,0)]; the PyTorch Stage-II with its
  unconditional head: 1/2 [BCE(r_c,1) + BCE(r_u,1)] + 1/3 [BCE(f_c,0) + BCE(w_c,0) + BCE(f_u,0)].
- G: BCE(f,1) (+ BCE(f_u,1) with the unconditional head) + kl_weight * KL, the KL a
  per-dimension mean (code: weight 2.0; the paper's lambda = 1 is ``kl_weight: 1.0``).

Wrong pairs: as in stackgan_v2.py, the batch's real images rolled by one, each paired with
another sample's text (the PyTorch code pairs ``real[:B-1]`` with ``cond[1:]``; the TF code
draws random images of another class).

Schedule (paper Sec. 3.5; the codes' trainer.py and cfg ymls): phase ``stage1`` trains Stage-I
G and D; phase ``stage2`` trains Stage-II G and D with Stage-I fixed: its parameters are never
stepped and its output is detached, but, as in both codebases, Stage-I G runs in BN training
mode (batch statistics, running statistics updated); ``stage1_bn: eval`` uses its running
statistics instead. Each network has its own Adam optimizer. The learning rate of a stage's
networks halves every ``lr_decay_every`` steps of that stage (``stage2_lr_decay_every`` for
Stage-II when set), counted by buffers that are saved in checkpoints, so a resumed run decays at
the same steps. One D step, then one G step, on the same generated batch. Real images: the data
is at s2; each stage's real images are a random 76/64 crop + flip at its own size, taken from
bilinear down-scales (as in the codes' datasets.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, cast

import torch
from torch import nn

from ganstack import losses
from ganstack.data.augment import multiscale_batch
from ganstack.data.base import ImageDataset
from ganstack.errors import ConfigError, GanstackError
from ganstack.models.base import DataInfo, LogFn, StackModel, Step, Tensors
from ganstack.models.text import CaptionBankMixin, pick_captions, require_text
from ganstack.nn import frozen, init_normal_, to_unit
from ganstack.nn.stackgan import (
    BottleneckResBlock,
    CondAugment,
    CondLogits,
    ResBlock,
    conv3x3,
    d_encoder,
    relu_up,
)
from ganstack.ranges import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Unit

PHASES = ("stage1", "stage2")

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class StackGANv1Config:
    name: str = "stackgan_v1"
    # Which official code to follow where the two differ (CA, networks, losses): "pytorch"
    # (StackGAN-Pytorch, the COCO reproduction code; the default) or "tf" (the original
    # TensorFlow code of the paper's CUB/Oxford results). The "auto" options below follow it.
    variant: Literal["pytorch", "tf"] = "pytorch"
    stage1_size: int = 64  # paper 64
    stage2_size: int = 256  # paper 256 (128: the paper's 128x128 ablation); = data.resolution
    z_dim: PosInt = 100  # Nz
    ef_dim: PosInt = 128  # Ng = Nd: the CA output (code CONDITION_DIM / EMBEDDING_DIM)
    gf_dim: PosInt = 128  # code GF_DIM: Stage-I G starts at 8 gf x 4x4; Stage-II's encoder at gf
    df_dim: PosInt = 64  # code DF_DIM
    r_num: NonNegInt = 4  # Stage-II residual blocks (code default 4; COCO yml 2; paper: 2 at 128²)
    # CA activation: relu (PyTorch: log sigma^2, sigma >= 1), lrelu (TF: log sigma,
    # truncated eps), linear (the paper's plain FC); auto = the variant's.
    ca: Literal["auto", "relu", "lrelu", "linear"] = "auto"
    use_ca: bool = True  # false: the paper's "no CA" ablation
    stage2_text: bool = True  # false: the paper's "text only to Stage-I" ablation
    # What D is conditioned on: mu (PyTorch: the G-side CA mean, detached) or embedding (TF
    # and the paper: the raw text through D's own FC + LReLU); auto = the variant's.
    d_condition: Literal["auto", "mu", "embedding"] = "auto"
    # The PyTorch Stage-II D's extra unconditional head (null: pytorch yes, tf no).
    stage2_uncond: bool | None = None
    # Text per training sample: one caption at random (PyTorch) or the mean of 4 (TF).
    caption_sampling: Literal["auto", "one", "mean4"] = "auto"
    kl_weight: NonNegFloat = 2.0  # code COEFF.KL (paper lambda = 1)
    # Stage-I G during stage2: "train" (batch statistics, as both codebases) or "eval".
    stage1_bn: Literal["train", "eval"] = "train"
    augment: bool = True  # 76/64 resize + random crop + flip (code); false: none
    lr: PosFloat = 2e-4  # Adam for every G and D (code)
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    # Halve the learning rate every N steps of a stage (0: never). Paper: every 100 epochs
    # (CUB at batch 64: 138 steps an epoch, so 13,800); TF code: 50 epochs in Stage-I,
    # 100 in Stage-II; PyTorch COCO code: 20 epochs.
    lr_decay_every: Annotated[int, Range(ge=0, note="0: never")] = 13_800
    # null: lr_decay_every
    stage2_lr_decay_every: Annotated[int | None, Range(ge=0, note="0: never")] = None
    caption_bank: PosInt = 256  # training captions kept to draw sampling conditions from
    sample_bn: Literal["eval", "batch"] = "eval"  # code's sampling: netG.eval()

    def validate(self, where: str) -> None:
        s1, s2 = self.stage1_size, self.stage2_size
        if s1 < 16 or s1 & (s1 - 1):
            raise ConfigError(
                f"{where}.stage1_size must be a power of two >= 16 (Stage-II "
                f"joins the text at stage1_size / 4), got {s1}"
            )
        if s2 <= s1 or s2 % s1 or (s2 // s1) & (s2 // s1 - 1):
            raise ConfigError(
                f"{where}.stage2_size must be stage1_size ({s1}) times a power "
                f"of two >= 2 (paper: 4x), got {s2}"
            )
        ups1 = int(math.log2(s1 // 4))
        if (8 * self.gf_dim) % 2**ups1:
            raise ConfigError(
                f"{where}.gf_dim ({self.gf_dim}): Stage-I G halves 8 gf = "
                f"{8 * self.gf_dim} channels {ups1} times; use a multiple of "
                f"{max(1, 2**ups1 // 8)}"
            )
        ups2 = int(math.log2(4 * s2 // s1))
        if (4 * self.gf_dim) % 2**ups2:
            raise ConfigError(
                f"{where}.gf_dim ({self.gf_dim}): Stage-II G halves 4 gf = "
                f"{4 * self.gf_dim} channels {ups2} times; use a multiple of "
                f"{max(1, 2**ups2 // 4)}"
            )
        if self.variant == "tf" and self.df_dim % 2:
            raise ConfigError(
                f"{where}.df_dim must be even in the tf variant (its residual "
                f"blocks narrow the channels 4x), got {self.df_dim}"
            )

    # The variant's choices where an option says "auto".
    @property
    def ca_kind(self) -> str:
        if self.ca != "auto":
            return self.ca
        return "relu" if self.variant == "pytorch" else "lrelu"

    @property
    def d_cond(self) -> str:
        if self.d_condition != "auto":
            return self.d_condition
        return "mu" if self.variant == "pytorch" else "embedding"

    @property
    def uncond_head(self) -> bool:
        return self.variant == "pytorch" if self.stage2_uncond is None else self.stage2_uncond

    @property
    def captions(self) -> str:
        if self.caption_sampling != "auto":
            return self.caption_sampling
        return "one" if self.variant == "pytorch" else "mean4"

    def decay_every(self, stage: int) -> int:
        if stage == 2 and self.stage2_lr_decay_every is not None:
            return self.stage2_lr_decay_every
        return self.lr_decay_every


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    """Nearest x2, conv3x3, BN: an up-block without its ReLU (TF Stage-I G's first one)."""
    return [
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(c_in, c_out),
        nn.BatchNorm2d(c_out),
    ]


class Stage1Generator(nn.Module):
    """Stage-I G: CA, then [z, c] -> 4x4 -> up-blocks -> the s1 x s1 image."""

    def __init__(self, cfg: StackGANv1Config, text_dim: int, channels: int) -> None:
        super().__init__()
        self.tf = cfg.variant == "tf"
        self.ca = CondAugment(text_dim, cfg.ef_dim, cfg.ca_kind, enabled=cfg.use_ca)
        self.ngf = ngf = 8 * cfg.gf_dim
        ups = int(math.log2(cfg.stage1_size // 4))
        layers: list[nn.Module] = []
        if self.tf:  # FC, BN (no ReLU); the TF FC's bias is dropped: the BN cancels it
            self.fc = nn.Sequential(
                nn.Linear(cfg.z_dim + cfg.ef_dim, ngf * 16, bias=False), nn.BatchNorm1d(ngf * 16)
            )
            layers += [
                BottleneckResBlock(ngf, ngf // 4),
                *_up(ngf, ngf // 2),
                BottleneckResBlock(ngf // 2, ngf // 8),
            ]
            c = ngf // 2
            for _ in range(ups - 2):
                layers.append(relu_up(c, c // 2))
                c //= 2
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(c, channels)]
        else:
            self.fc = nn.Sequential(
                nn.Linear(cfg.z_dim + cfg.ef_dim, ngf * 16, bias=False),
                nn.BatchNorm1d(ngf * 16),
                nn.ReLU(True),
            )
            layers += [relu_up(ngf // 2**i, ngf // 2 ** (i + 1)) for i in range(ups)]
            layers.append(conv3x3(ngf // 2**ups, channels))
        self.body = nn.Sequential(*layers, nn.Tanh())

    def forward(
        self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, mu, logvar = self.ca(emb, eps)
        x = torch.cat([c, z] if self.tf else [z, c], 1)  # TF concat([c, z]); PyTorch cat(z, c)
        return self.body(self.fc(x).view(-1, self.ngf, 4, 4)), mu, logvar


class Stage2Generator(nn.Module):
    """Stage-II G: Stage-I image -> encoder -> [code, c tiled] -> residual blocks -> decoder."""

    def __init__(self, cfg: StackGANv1Config, text_dim: int, channels: int) -> None:
        super().__init__()
        gf = cfg.gf_dim
        self.ca = (
            CondAugment(text_dim, cfg.ef_dim, cfg.ca_kind, enabled=cfg.use_ca)
            if cfg.stage2_text
            else None
        )
        self.encoder = nn.Sequential(
            conv3x3(channels, gf),
            nn.ReLU(True),
            nn.Conv2d(gf, 2 * gf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * gf),
            nn.ReLU(True),
            nn.Conv2d(2 * gf, 4 * gf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * gf),
            nn.ReLU(True),
        )
        cond = cfg.ef_dim if cfg.stage2_text else 0
        self.joint = nn.Sequential(
            conv3x3(4 * gf + cond, 4 * gf), nn.BatchNorm2d(4 * gf), nn.ReLU(True)
        )
        # Both codebases apply a ReLU after each residual sum (unlike StackGAN-v2).
        self.res = nn.Sequential(
            *[ResBlock(4 * gf, glu=False, relu_after=True) for _ in range(cfg.r_num)]
        )
        ups = int(math.log2(4 * cfg.stage2_size // cfg.stage1_size))
        c = 4 * gf
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers.append(relu_up(c, c // 2))
            c //= 2
        self.decoder = nn.Sequential(*layers, conv3x3(c, channels), nn.Tanh())

    def forward(
        self, stage1: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h = self.encoder(stage1)
        mu = logvar = None
        if self.ca is not None:
            c, mu, logvar = self.ca(emb, eps)
            h = torch.cat([h, c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], 1)
        return self.decoder(self.res(self.joint(h))), mu, logvar


def _tf_d_encoder(size: int, channels: int, df: int, stage2: bool) -> tuple[nn.Sequential, int]:
    """The TF code's image encoders (``d_encode_image``, ``hr_d_encode_image``) generalised
    to any size: down-blocks ndf, 2 ndf, ... to 4x4 (the first without BN; in Stage-I the
    last two without an activation, as the code); Stage-II then brings the channels back to
    8 ndf with 1x1 convolutions (BN, LReLU; the last without LReLU); then a bottleneck
    residual block (LReLU after the sum). Returns the encoder and its output channels."""
    n = int(math.log2(size // 4))
    layers: list[nn.Module] = []
    c_in = channels
    for j in range(n):
        c_out = df * 2**j
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
        if j > 0:
            layers.append(nn.BatchNorm2d(c_out))
        if stage2 or j == 0 or j < n - 2:
            layers.append(nn.LeakyReLU(0.2, True))
        c_in = c_out
    while stage2 and c_in > 8 * df:
        c_out = c_in // 2
        layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        if c_out > 8 * df:
            layers.append(nn.LeakyReLU(0.2, True))
        c_in = c_out
    layers.append(BottleneckResBlock(c_in, c_in // 4, leaky=True))
    return nn.Sequential(*layers), c_in


class Discriminator(nn.Module):
    """A matching-aware D: image encoder to 4x4, conditional head, optional unconditional
    head. ``encode`` and the heads are separate so the real images are encoded once for the
    matching and the mismatched pairs (as the PyTorch code)."""

    def __init__(
        self,
        cfg: StackGANv1Config,
        size: int,
        channels: int,
        text_dim: int,
        stage2: bool,
        uncond: bool,
    ) -> None:
        super().__init__()
        tf = cfg.variant == "tf"
        if tf:
            self.encoder, c = _tf_d_encoder(size, channels, cfg.df_dim, stage2)
        else:
            self.encoder, c = d_encoder(size, channels, cfg.df_dim)
        # TF: D's own FC of the raw text, LReLU (the paper's "compressed to Nd").
        self.text_fc = (
            nn.Sequential(nn.Linear(text_dim, cfg.ef_dim), nn.LeakyReLU(0.2, True))
            if cfg.d_cond == "embedding"
            else None
        )
        self.cond = CondLogits(c, cfg.ef_dim, kernel=1 if tf else 3)
        self.uncond = nn.Conv2d(c, 1, 4, 4) if uncond else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def cond_logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.text_fc is not None:
            cond = self.text_fc(cond)
        return self.cond(h, cond)

    def uncond_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        return None if self.uncond is None else self.uncond(h).flatten()


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class StackGANv1(CaptionBankMixin, StackModel):
    name = "stackgan_v1"
    Config = StackGANv1Config
    generator_names = ("netG1", "netG2")
    noise_distribution = "normal"
    retired_state = ("stage1_steps", "stage2_steps")  # the lr schedule's clock before the Step

    def __init__(self, cfg: StackGANv1Config, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        if h != w or h != cfg.stage2_size:
            raise ConfigError(
                f"stackgan_v1 makes {cfg.stage1_size}x{cfg.stage1_size} then "
                f"{cfg.stage2_size}x{cfg.stage2_size} images, but the data is {h}x{w}; set "
                f"data.resolution={cfg.stage2_size} or change model.stage2_size"
            )
        require_text(info, "stackgan_v1", has_unconditional=False)
        d = info.text_dim
        self.netG1 = Stage1Generator(cfg, d, c)
        self.netD1 = Discriminator(cfg, cfg.stage1_size, c, d, stage2=False, uncond=False)
        self.netG2 = Stage2Generator(cfg, d, c)
        self.netD2 = Discriminator(cfg, cfg.stage2_size, c, d, stage2=True, uncond=cfg.uncond_head)
        init_normal_(self, bn_std=0.02)
        self._init_bank(cfg.caption_bank, d)
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {
            name: torch.optim.Adam(getattr(self, net).parameters(), cfg.lr, betas=betas)
            for name, net in (("g1", "netG1"), ("d1", "netD1"), ("g2", "netG2"), ("d2", "netD2"))
        }

    @property
    def conditional(self) -> bool:  # conditioned on text, not on class labels
        return False

    @classmethod
    def default_phases(cls, cfg: StackGANv1Config) -> dict[str, int]:
        # Paper/TF birds: 600 epochs per stage, 8,855 images at batch 64 = 138 steps an epoch.
        return {"stage1": 82_800, "stage2": 82_800}

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        self.fill_bank(train)
        return {}

    # ---- sampling -------------------------------------------------------------------------

    def condition_dims(self) -> dict[str, int]:
        return {"text": self.info.text_dim}

    def noise_dims(self) -> dict[str, int]:
        # "ca1", "ca2": the noise of Stage-I's and Stage-II's CA samples c = mu + sigma * ca.
        cfg = self.cfg
        out = {"z": cfg.z_dim}
        if cfg.use_ca:
            out["ca1"] = cfg.ef_dim
            if cfg.stage2_text:
                out["ca2"] = cfg.ef_dim
        return out

    def image_outputs(self) -> list[str]:
        return ["stage1", "image"]

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        text = inputs["text"]
        stage1, _, _ = self.net("netG1")(inputs["z"], text, inputs.get("ca1"))
        image, _, _ = self.net("netG2")(stage1, text, inputs.get("ca2"))
        return {"stage1": to_unit(stage1), "image": to_unit(image)}

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        from ganstack.viz import scales_grid

        noise = list(self.noise_dims())  # a row: one text, the noise (z and CA) varies
        return {
            "vary_z": self.grid(8, 10, vary=noise, generator=generator),
            "vary_text": self.grid(8, 10, vary=["text"], generator=generator),
            "stage1": self.grid(8, 10, vary=noise, generator=generator, key="stage1"),
            "scales": scales_grid(self, 8, generator),
        }

    # ---- training -------------------------------------------------------------------------

    def enter_phase(self, phase: str, fresh: bool) -> None:
        if phase not in PHASES:
            raise GanstackError(f"stackgan_v1 has phases {list(PHASES)}, not '{phase}'")

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        if phase == "stage1":
            return self._stage1_step(batch)
        if phase == "stage2":
            return self._stage2_step(batch)
        raise GanstackError(f"stackgan_v1 has phases {list(PHASES)}, not '{phase}'")

    def lr_at(self, stage: int, steps: int) -> float:
        """The learning rate of a stage's networks at its ``steps``-th step (0-based)."""
        every = self.cfg.decay_every(stage)
        return self.cfg.lr * 0.5 ** (steps // every) if every else self.cfg.lr

    def lr(self, name: str, step: Step) -> float | None:
        """A stage's networks (``g1``, ``d1``: stage 1) in their own phase: halved every
        ``decay_every`` steps of it."""
        stage = int(name[1])
        return self.lr_at(stage, step.phase_step) if step.phase == f"stage{stage}" else None

    def d_condition(self, mu: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """What the discriminators are conditioned on: the CA mean (detached) or the text."""
        return mu.detach() if self.cfg.d_cond == "mu" else emb

    @staticmethod
    def d_logits(
        netD: Discriminator, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """D's logits on the (real, matching), (real, mismatched) and (fake, matching) pairs,
        plus the unconditional ones on real and fake images when D has that head. The
        mismatched pairs are the real images rolled by one within the batch."""
        hr, hf = netD.encode(real), netD.encode(fake)
        return {
            "real": netD.cond_logits(hr, cond),
            "wrong": netD.cond_logits(hr.roll(1, 0), cond),
            "fake": netD.cond_logits(hf, cond),
            "real_u": netD.uncond_logits(hr),
            "fake_u": netD.uncond_logits(hf),
        }

    def _adversarial(
        self,
        stage: int,
        real: torch.Tensor,
        fake: torch.Tensor,
        cond: torch.Tensor,
        extra: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """One D step, then one G step (G's loss: adversarial + ``extra``)."""
        netD = self.netD1 if stage == 1 else self.netD2
        lg = self.d_logits(netD, real, fake.detach(), cond)
        pairs = cast(dict[str, torch.Tensor], lg)  # only the unconditional logits may be None
        d_loss = losses.matching_aware_d_v1(
            pairs["real"], pairs["wrong"], pairs["fake"], lg["real_u"], lg["fake_u"]
        )
        self.optimize(d_loss, [f"d{stage}"])
        with frozen(netD):
            h = netD.encode(fake)
            adv = losses.bce(netD.cond_logits(h, cond), 1)
            u = netD.uncond_logits(h)
            if u is not None:
                adv = adv + losses.bce(u, 1)
            g_loss = adv if extra is None else adv + self.cfg.kl_weight * extra
            self.optimize(g_loss, [f"g{stage}"])
        out = {
            f"d{stage}": d_loss.detach(),
            f"g{stage}": g_loss.detach(),
            f"g{stage}_adv": adv.detach(),
        }
        if extra is not None:
            out[f"g{stage}_kl"] = extra.detach()
        return out

    def _kl(self, mu: torch.Tensor | None, logvar: torch.Tensor | None) -> torch.Tensor | None:
        if mu is None or logvar is None or not self.cfg.use_ca:
            return None
        return losses.kl_standard_normal(mu, logvar)

    def _stage1_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real = multiscale_batch(batch["images"], [cfg.stage1_size], augment=cfg.augment)[0]
        emb = pick_captions(batch["embeddings"], cfg.captions)
        z = torch.randn(len(real), cfg.z_dim, device=real.device)
        fake, mu, logvar = self.netG1(z, emb)
        return self._adversarial(1, real, fake, self.d_condition(mu, emb), self._kl(mu, logvar))

    def _stage2_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real = multiscale_batch(batch["images"], [cfg.stage2_size], augment=cfg.augment)[0]
        emb = pick_captions(batch["embeddings"], cfg.captions)
        z = torch.randn(len(real), cfg.z_dim, device=real.device)
        self.netG1.train(cfg.stage1_bn == "train")
        with torch.no_grad():  # Stage-I is fixed: never stepped, its output detached
            stage1, mu1, _ = self.netG1(z, emb)
        fake, mu2, logvar2 = self.netG2(stage1, emb)
        mu = mu2 if mu2 is not None else mu1  # "text only to Stage-I": D sees Stage-I's mu
        return self._adversarial(2, real, fake, self.d_condition(mu, emb), self._kl(mu2, logvar2))
