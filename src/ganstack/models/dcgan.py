"""DCGAN (Radford et al., 2016): the one-level baseline of the stacked-GAN papers.

One generator maps [z, one-hot class] straight to the image; one discriminator judges it. It is
generic in resolution: an image of size ``b * 2^n`` with a start size ``b`` of 4 (8, 16, 32, 64,
...) or 7 (14, 28 for MNIST) has

- G: Linear([z, one-hot] -> top x b x b) -> BN -> ReLU, then n - 1 blocks ConvTranspose(4, 2, 1)
  -> BN -> ReLU that halve the channels, then ConvTranspose(4, 2, 1) -> C channels -> tanh; the
  last hidden layer has ``g_dim`` maps and ``top = g_dim * 2^(n-1)``;
- D: [image, the one-hot class as K constant planes] -> Conv(4, 2, 1) -> LeakyReLU(0.2) with
  ``d_dim`` maps, then n - 1 blocks Conv(4, 2, 1) -> BN -> LeakyReLU that double them, then a
  linear layer to one logit;
- with n = 0 (a 4x4 or 7x7 image) G ends in a 3x3 conv and D has one 3x3 conv.

``g_dim`` and ``d_dim`` set the widths, so the parameter count can be matched to another model
(``ganstack.models.dcgan.count_parameters``). Losses: BCE with the non-saturating G loss, one D
step on half real / half fake then one G step per training step (phase ``train``), Adam(2e-4,
0.5, 0.999) and N(0, 0.02) weights, as the DCGAN paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ganstack import losses
from ganstack.errors import ConfigError
from ganstack.models.base import DataInfo, StackModel, Step, Tensors
from ganstack.nn import frozen, init_normal_, to_signed, to_unit
from ganstack.ranges import NonNegFloat, PosFloat, PosInt, Unit


@dataclass
class DCGANConfig:
    name: str = "dcgan"
    # Class-conditional when the data has labels (one-hot into G's input and as D's input
    # planes); false: unconditional.
    conditional: bool = True
    z_dim: PosInt = 100
    g_dim: PosInt = 64  # maps of G's last hidden layer (doubling towards the start size)
    d_dim: PosInt = 64  # maps of D's first conv (doubling with every halving)
    # Generator adversarial loss: "ns" = -log D(G(z)); "saturating" = log(1 - D(G(z))).
    g_loss: Literal["ns", "saturating"] = "ns"
    lr: PosFloat = 2e-4
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    init_std: NonNegFloat = 0.02  # N(0, std) conv/linear weights (DCGAN paper); 0: PyTorch default


def start_size(size: int) -> tuple[int, int]:
    """(b, n) with size = b * 2^n and b in {4, 7}, or a ConfigError."""
    b, n = size, 0
    while b > 7 and b % 2 == 0:
        b, n = b // 2, n + 1
    if b not in (4, 7):
        raise ConfigError(
            f"dcgan needs a square image of size 4 * 2^n or 7 * 2^n (4, 7, 8, 14, 16, 28, 32, "
            f"64, ...), got {size}; set data.resolution to such a size"
        )
    return b, n


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Generator(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, g_dim: int, channels: int, size: int) -> None:
        super().__init__()
        b, n = start_size(size)
        top = g_dim * 2 ** max(n - 1, 0)
        self.start = (top, b, b)
        self.fc = nn.Sequential(
            nn.Linear(z_dim + num_classes, top * b * b, bias=False),
            nn.BatchNorm1d(top * b * b),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        ch = top
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(),
            ]
            ch //= 2
        if n == 0:
            layers.append(nn.Conv2d(ch, channels, 3, padding=1))
        else:
            layers.append(nn.ConvTranspose2d(ch, channels, 4, 2, 1))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        inp = z if onehot is None else torch.cat([z, onehot], 1)
        return self.net(self.fc(inp).view(-1, *self.start))


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, d_dim: int, channels: int, size: int) -> None:
        super().__init__()
        b, n = start_size(size)
        in_ch = channels + num_classes
        if n == 0:
            layers: list[nn.Module] = [nn.Conv2d(in_ch, d_dim, 3, padding=1), nn.LeakyReLU(0.2)]
            ch = d_dim
        else:
            layers = [nn.Conv2d(in_ch, d_dim, 4, 2, 1), nn.LeakyReLU(0.2)]
            ch = d_dim
            for _ in range(n - 1):
                layers += [
                    nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(ch * 2),
                    nn.LeakyReLU(0.2),
                ]
                ch *= 2
        layers += [nn.Flatten(), nn.Linear(ch * b * b, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        if onehot is not None:
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)
        return self.net(x)


def _init(module: nn.Module, std: float) -> nn.Module:
    """N(0, std) weights and N(1, std) BN scales (std <= 0: PyTorch's default init)."""
    return init_normal_(module, std, bn_std=std) if std > 0 else module


class DCGAN(StackModel):
    """A one-level (class-conditional) DCGAN at the dataset's resolution."""

    name = "dcgan"
    Config = DCGANConfig
    generator_names = ("G",)

    def __init__(self, cfg: DCGANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        c, h, w = info.shape
        if h != w:
            raise ConfigError(
                f"dcgan needs square images; the dataset '{info.name}' has "
                f"{h}x{w} (set data.resolution)"
            )
        k = info.num_classes if self.conditional else 0
        self.G = _init(Generator(cfg.z_dim, k, cfg.g_dim, c, h), cfg.init_std)
        self.D = _init(Discriminator(k, cfg.d_dim, c, h), cfg.init_std)
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {
            "G": torch.optim.Adam(self.G.parameters(), cfg.lr, betas=betas),
            "D": torch.optim.Adam(self.D.parameters(), cfg.lr, betas=betas),
        }

    @property
    def conditional(self) -> bool:
        return bool(self.cfg.conditional) and self.info.num_classes > 0

    @classmethod
    def default_phases(cls, cfg: DCGANConfig) -> dict[str, int]:
        return {"train": 10000}

    def _onehot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ValueError("a class-conditional DCGAN needs labels")
        return F.one_hot(y.long(), self.info.num_classes).float()

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        x = to_signed(batch["images"])
        onehot = self._onehot(batch.get("labels"))
        b = len(x)
        with torch.no_grad():
            fake = self.G(torch.randn(b, self.cfg.z_dim, device=x.device), onehot)
        real_logit, fake_logit = self.D(x, onehot), self.D(fake, onehot)
        d_loss = losses.d_adversarial(real_logit, fake_logit)
        self.optimize(d_loss, ["D"])
        with frozen(self.D):
            fake = self.G(torch.randn(b, self.cfg.z_dim, device=x.device), onehot)
            g_loss = losses.g_adversarial(self.D(fake, onehot), self.cfg.g_loss)
            self.optimize(g_loss, ["G"])
        acc = 0.5 * (
            (real_logit.detach() > 0).float().mean() + (fake_logit.detach() < 0).float().mean()
        )
        return {"d_adv": d_loss.detach(), "d_acc": acc, "g_adv": g_loss.detach()}

    def noise_dims(self) -> dict[str, int]:
        return {"z": self.cfg.z_dim}

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img = self.net("G")(inputs["z"], self._onehot(inputs.get("y")))
        return {"image": to_unit(img, clamp=True)}
