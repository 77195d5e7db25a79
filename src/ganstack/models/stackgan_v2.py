"""StackGAN-v2 / StackGAN++ (Zhang et al., TPAMI 2018): a tree of generators, one
discriminator per scale, trained jointly.

Levels (the official code, ``hanzhanggit/StackGAN-v2`` code/model.py), for ``branches`` scales
base, 2 base, 4 base, ...:

- F0: [z, c] (text) or z alone (unconditional) -> Linear -> BN -> GLU -> 4x4 -> up-blocks ->
  h0 at the base size;
- F_i: [h_{i-1}, c tiled] -> conv-GLU -> ``r_num`` residual blocks -> up-block -> h_i, where c
  is the conditioning-augmentation sample (text) or z itself, re-injected at every branch
  (unconditional, as the code does);
- G_i: conv3x3 -> 3 channels -> tanh: the image at scale i.

Every generator block computes twice its channels and halves them with a GLU. D_i sees only
images of its own scale; it has an unconditional head and, for text, a conditional one on the
CA mean mu (detached in the D step, not in the G step, as the code).

Losses (code/trainer.py), per scale i, summed:

- D_i (text, ``uncond_weight`` > 0): BCE(r_c,1) + BCE(r_u,1) + BCE(w_c,0) + BCE(w_u,1) +
  BCE(f_c,0) + BCE(f_u,0): the mismatched ("wrong") real images count as real for the
  unconditional head, and there is no 1/2 factor (code). With ``uncond_weight`` = 0:
  BCE(r_c,1) + 1/2 [BCE(w_c,0) + BCE(f_c,0)]. Unconditional: BCE(r,1) + BCE(f,0).
- G: sum_i BCE(D_i^c(s_i, mu), 1) + uncond_weight * BCE(D_i^u(s_i), 1)
  + colour_weight * sum_{i>=1} [1 * MSE(mean) + 5 * MSE(cov)] (finer vs the detached coarser)
  + kl_weight * KL (text; a per-dimension mean, weight 2.0 as the code).

Training step (``joint`` is the only phase): generate every scale once, one Adam step for each
D_i on the detached fakes, then one G step. Real images of every scale come from one random
crop (76/64 resize, crop, flip) and its bilinear down-scales (code/main.py, datasets.py); the
wrong images are the batch's real images rolled by one (each paired with another sample's
caption). The official code draws wrong images at random from the dataset and redraws once when
the class matches; on a shuffled batch a roll by one is the same draw without the class check.

Names (``docs/architecture.md``): the code counts scales from the coarsest (``netsD[0]`` is the
64x64 discriminator); here scale j of L is level L - 1 - j, level 0 the finest. The outputs are
``level{L-1}`` ... ``level1``, ``image``; the optimizers ``G`` and ``D{i}``; the log keys
``d{i}`` (D_i's loss), ``g{i}_adv``, ``g_kl``, ``g_colour`` and ``g`` (G's total). Checkpoints
written with the former names (optimizers ``g``, ``d{j}``) still load.

EMA of the generator: ``train.ema: 0.999`` (the code's ``avg_param_G``), used for sampling and
evaluation. The code also copies the EMA into the live generator at every snapshot (every 2,000
steps) and never restores it; ``ema_reset_every: 2000`` reproduces that quirk (off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import nn

from ganstack import losses
from ganstack.data.augment import multiscale_batch
from ganstack.data.base import ImageDataset
from ganstack.errors import ConfigError
from ganstack.models.base import DataInfo, LogFn, StackModel, Step, Tensors
from ganstack.models.text import CaptionBankMixin, pick_captions, require_text
from ganstack.nn import frozen, to_unit
from ganstack.nn.stackgan import (
    GLU,
    CondAugment,
    CondLogits,
    ResBlock,
    conv3x3,
    d_encoder,
    glu_conv,
    glu_up,
    init_orthogonal_,
)
from ganstack.ranges import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Unit

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

MAX_BRANCHES = 8  # base_size x 128 at most


@dataclass
class StackGANv2Config:
    name: str = "stackgan_v2"
    # Tree: `branches` scales, the first at `base_size` (code: 3 branches, 64 -> 128 -> 256).
    # The dataset's resolution must be base_size * 2^(branches - 1).
    branches: Annotated[int, Range(ge=1, le=MAX_BRANCHES, note="each doubles the image size")] = 3
    base_size: int = 64
    # Text-conditional when true (the data must carry caption embeddings); false: the
    # unconditional tree (z re-injected at every branch, as the code).
    text: bool = True
    z_dim: PosInt = 100  # code Z_DIM
    ef_dim: PosInt = 128  # condition size (code EMBEDDING_DIM / TEXT.DIMENSION CA output)
    gf_dim: PosInt = 64  # code GF_DIM: channels of h0 (F0 starts at gf * 2^(up-blocks))
    df_dim: PosInt = 64  # code DF_DIM
    r_num: NonNegInt = 2  # residual blocks per branch (code R_NUM)
    kl_weight: NonNegFloat = 2.0  # code COEFF.KL (a mean over dimensions)
    uncond_weight: NonNegFloat = 1.0  # code COEFF.UNCOND_LOSS (birds yml 1.0)
    # Colour consistency (code COEFF.COLOR_LOSS): 0 for text (birds), 50 for the
    # unconditional configs (bedroom, church, dog, cat); lambda1 = 1 and lambda2 = 5 (code).
    colour_weight: NonNegFloat = 0.0
    colour_mean_weight: NonNegFloat = 1.0
    colour_cov_weight: NonNegFloat = 5.0
    # Per training sample, one of the image's captions at random (PyTorch code) or the mean of
    # 4 random ones (TF v1 code, `mean4`).
    caption_sampling: Literal["one", "mean4"] = "one"
    augment: bool = True  # 76/64 resize + random crop + flip (code); false: none
    lr: PosFloat = 2e-4  # Adam for G and every D (code)
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    init: Literal["orthogonal", "default"] = "orthogonal"  # code: orthogonal (gain 1)
    # The code's quirk: every N steps the live G is overwritten by its EMA (0: never).
    ema_reset_every: NonNegInt = 0
    # Captions kept (from the training split) to draw sampling conditions from.
    caption_bank: PosInt = 256
    sample_bn: Literal["eval", "batch"] = "eval"  # code's evaluate(): netG.eval()

    def validate(self, where: str) -> None:
        if self.base_size < 4 or self.base_size & (self.base_size - 1):
            raise ConfigError(
                f"{where}.base_size must be a power of two >= 4 (the first "
                f"branch starts at 4x4 and doubles), got {self.base_size}"
            )
        if self.gf_dim % 2 ** (self.branches - 1):
            raise ConfigError(
                f"{where}.gf_dim ({self.gf_dim}) must be divisible by "
                f"2^(branches-1) = {2 ** (self.branches - 1)}: every branch "
                f"halves the channels"
            )

    def sizes(self) -> list[int]:
        return [self.base_size * 2**i for i in range(self.branches)]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class InitStage(nn.Module):
    """F0: [c, z] -> Linear -> BN -> GLU -> (ngf, 4, 4) -> up-blocks to the base size."""

    def __init__(self, in_dim: int, gf_dim: int, base_size: int) -> None:
        super().__init__()
        ups = int(math.log2(base_size // 4))
        self.ngf = gf_dim * 2**ups
        self.fc = nn.Sequential(
            nn.Linear(in_dim, self.ngf * 16 * 2, bias=False),
            nn.BatchNorm1d(self.ngf * 16 * 2),
            GLU(),
        )
        self.ups = nn.Sequential(
            *[glu_up(self.ngf // 2**i, self.ngf // 2 ** (i + 1)) for i in range(ups)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ups(self.fc(x).view(-1, self.ngf, 4, 4))


class NextStage(nn.Module):
    """F_i: [c tiled, h] -> conv-GLU -> residual blocks -> up-block (halves the channels)."""

    def __init__(self, ngf: int, cond_dim: int, r_num: int) -> None:
        super().__init__()
        self.joint = glu_conv(ngf + cond_dim, ngf)
        self.res = nn.Sequential(*[ResBlock(ngf, glu=True) for _ in range(r_num)])
        self.up = glu_up(ngf, ngf // 2)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.up(self.res(self.joint(torch.cat([c, h], 1))))


class TreeGenerator(nn.Module):
    def __init__(self, cfg: StackGANv2Config, text_dim: int, channels: int) -> None:
        super().__init__()
        self.text = cfg.text
        self.ca = CondAugment(text_dim, cfg.ef_dim, "glu") if cfg.text else None
        cond_dim = cfg.ef_dim if cfg.text else cfg.z_dim
        self.stages = nn.ModuleList(
            [InitStage(cfg.z_dim + (cfg.ef_dim if cfg.text else 0), cfg.gf_dim, cfg.base_size)]
        )
        ngf = cfg.gf_dim
        for _ in range(1, cfg.branches):
            self.stages.append(NextStage(ngf, cond_dim, cfg.r_num))
            ngf //= 2
        self.heads = nn.ModuleList(
            [
                nn.Sequential(conv3x3(cfg.gf_dim // 2**i, channels), nn.Tanh())
                for i in range(cfg.branches)
            ]
        )

    def forward(
        self, z: torch.Tensor, emb: torch.Tensor | None, eps: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        mu = logvar = None
        if self.ca is not None:
            assert emb is not None
            c, mu, logvar = self.ca(emb, eps)
            h = self.stages[0](torch.cat([c, z], 1))
        else:
            c = z
            h = self.stages[0](z)
        images = [self.heads[0](h)]
        for stage, head in zip(self.stages[1:], self.heads[1:], strict=True):
            h = stage(h, c)
            images.append(head(h))
        return images, mu, logvar


class ScaleDiscriminator(nn.Module):
    """D_i: down-blocks to 4x4 (ndf, 2 ndf, ... channels; beyond 8 ndf, 3x3 blocks bring them
    back to 8 ndf, as the code's D128/D256), an unconditional head and, for text, a
    conditional head on [mu tiled, x]."""

    def __init__(self, size: int, channels: int, df_dim: int, ef_dim: int, text: bool) -> None:
        super().__init__()
        self.trunk, c_in = d_encoder(size, channels, df_dim)
        self.uncond = nn.Conv2d(c_in, 1, 4, 4)
        self.cond = CondLogits(c_in, ef_dim) if text else None

    def forward(
        self, x: torch.Tensor, mu: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        h = self.trunk(x)
        u = self.uncond(h).flatten()
        c = self.cond(h, mu) if self.cond is not None and mu is not None else None
        return c, u


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class StackGANv2(CaptionBankMixin, StackModel):
    name = "stackgan_v2"
    Config = StackGANv2Config
    generator_names = ("netG",)
    noise_distribution = "normal"
    retired_state = ("steps_done",)  # the ema_reset_every cadence's clock before the Step

    def __init__(self, cfg: StackGANv2Config, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        sizes = cfg.sizes()
        if h != w or h != sizes[-1]:
            raise ConfigError(
                f"stackgan_v2 with branches={cfg.branches} and base_size={cfg.base_size} "
                f"makes {sizes} images, but the data is {h}x{w}; set data.resolution="
                f"{sizes[-1]} or change model.base_size/model.branches"
            )
        if cfg.text:
            require_text(info, "stackgan_v2")
        self.sizes = sizes
        self.netG = TreeGenerator(cfg, info.text_dim, c)
        self.netDs = nn.ModuleList(
            [ScaleDiscriminator(s, c, cfg.df_dim, cfg.ef_dim, cfg.text) for s in sizes]
        )
        if cfg.init == "orthogonal":
            init_orthogonal_(self)
        self._init_bank(cfg.caption_bank if cfg.text else 1, info.text_dim)
        betas = (cfg.beta1, cfg.beta2)
        # netDs[j] (the code's netsD[j], from the coarsest) judges level L - 1 - j: D{L-1-j}.
        self.optimizers = {"G": torch.optim.Adam(self.netG.parameters(), cfg.lr, betas=betas)}
        for j, d in enumerate(self.netDs):
            self.optimizers[f"D{self.level(j)}"] = torch.optim.Adam(
                d.parameters(), cfg.lr, betas=betas
            )

    def level(self, j: int) -> int:
        """The level of scale ``j`` counted from the coarsest (the code's index)."""
        return len(self.sizes) - 1 - j

    def retired_optimizer_names(self) -> dict[str, str]:
        # Before the level vocabulary: g, and d{j} counted from the coarsest.
        return {"G": "g"} | {f"D{self.level(j)}": f"d{j}" for j in range(len(self.sizes))}

    @property
    def conditional(self) -> bool:  # never class-conditional: text or nothing
        return False

    @classmethod
    def default_phases(cls, cfg: StackGANv2Config) -> dict[str, int]:
        return {"joint": 220_000}  # birds: 600 epochs of 8,855 images at batch 24

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        if self.cfg.text:
            self.fill_bank(train)
        return {}

    # ---- sampling -------------------------------------------------------------------------

    def condition_dims(self) -> dict[str, int]:
        return {"text": self.info.text_dim} if self.cfg.text else {}

    def noise_dims(self) -> dict[str, int]:
        # "ca": the noise of the conditioning-augmentation sample c = mu + sigma * ca (text).
        return {"z": self.cfg.z_dim} | ({"ca": self.cfg.ef_dim} if self.cfg.text else {})

    def image_outputs(self) -> list[str]:
        """``level{L-1}`` (the base size) ... ``level1``, then ``image`` (level 0)."""
        return [f"level{self.level(j)}" for j in range(len(self.sizes) - 1)] + ["image"]

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, _, _ = self.net("netG")(inputs["z"], inputs.get("text"), inputs.get("ca"))
        out = {name: to_unit(x) for name, x in zip(self.image_outputs(), images, strict=True)}
        return out

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        from ganstack.viz import scales_grid

        vary = list(self.noise_dims())
        figs = {"samples": self.grid(8, 10, vary=vary, generator=generator)}
        if self.cfg.text:  # each row: one caption, the noise varies
            figs["vary_z"] = figs.pop("samples")
            figs["vary_text"] = self.grid(8, 10, vary=["text"], generator=generator)
        figs["scales"] = scales_grid(self, 8, generator)
        return figs

    # ---- training -------------------------------------------------------------------------

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        cfg = self.cfg
        reals = multiscale_batch(batch["images"], self.sizes, augment=cfg.augment)
        b = len(reals[0])
        emb = pick_captions(batch["embeddings"], cfg.caption_sampling) if cfg.text else None
        z = torch.randn(b, cfg.z_dim, device=reals[0].device)
        fakes, mu, logvar = self.netG(z, emb)
        out: dict[str, torch.Tensor] = {}
        # D steps, one per scale, on detached fakes (condition: mu, detached).
        mu_d = mu.detach() if mu is not None else None
        for i, d in enumerate(self.netDs):
            k = self.level(i)
            real, fake = reals[i], fakes[i].detach()
            rc, ru = d(real, mu_d)
            fc, fu = d(fake, mu_d)
            if cfg.text:
                wc, wu = d(real.roll(1, 0), mu_d)
                loss = losses.matching_aware_d(rc, ru, wc, wu, fc, fu, cfg.uncond_weight)
            else:
                loss = losses.bce(ru, 1) + losses.bce(fu, 0)
            self.optimize(loss, [f"D{k}"])
            out[f"d{k}"] = loss.detach()
        # G step.
        with frozen(self.netDs):
            g_total = torch.zeros((), device=z.device)
            for i, d in enumerate(self.netDs):
                fc, fu = d(fakes[i], mu)
                if cfg.text:
                    g = losses.bce(fc, 1) + cfg.uncond_weight * losses.bce(fu, 1)
                else:
                    g = losses.bce(fu, 1)
                out[f"g{self.level(i)}_adv"] = g.detach()
                g_total = g_total + g
            if cfg.colour_weight > 0 and len(fakes) > 1:
                colour = sum(
                    losses.colour_consistency(
                        fakes[i], fakes[i - 1], cfg.colour_mean_weight, cfg.colour_cov_weight
                    )
                    for i in range(1, len(fakes))
                )
                g_total = g_total + cfg.colour_weight * colour
                out["g_colour"] = colour.detach()  # type: ignore[union-attr]
            if mu is not None and logvar is not None:
                kl = losses.kl_standard_normal(mu, logvar)
                g_total = g_total + cfg.kl_weight * kl
                out["g_kl"] = kl.detach()
            self.optimize(g_total, ["G"])
        out["g"] = g_total.detach()
        self._maybe_reset_to_ema(step.global_step + 1)
        return out

    def _maybe_reset_to_ema(self, steps_done: int) -> None:
        """The official code's snapshot quirk (``ema_reset_every``): live G <- EMA."""
        every = self.cfg.ema_reset_every
        if every and self.ema is not None and steps_done % every == 0:
            with torch.no_grad():
                for p_live, p_avg in zip(
                    self.netG.parameters(), self.ema["netG"].parameters(), strict=True
                ):
                    p_live.copy_(p_avg)
