"""Blocks of the StackGAN family (v1 and v2), in the official PyTorch code's conventions.

Convolutions have no bias (batch norm follows them) except the final logit convolutions;
batch norm has PyTorch's defaults; the discriminators use LeakyReLU(0.2). In StackGAN-v2's
generator every block computes twice the channels it keeps and halves them with a gated linear
unit, GLU(x) = x[:C] * sigmoid(x[C:]) (``F.glu`` along channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


def conv3x3(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)


def glu_conv(c_in: int, c_out: int) -> nn.Sequential:
    """conv3x3 -> 2 c_out, BN, GLU -> c_out (v2's ``Block3x3_relu``)."""
    return nn.Sequential(conv3x3(c_in, 2 * c_out), nn.BatchNorm2d(2 * c_out), GLU())


def glu_up(c_in: int, c_out: int) -> nn.Sequential:
    """Nearest-neighbour x2, then :func:`glu_conv` (v2's ``upBlock``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *glu_conv(c_in, c_out))


def relu_up(c_in: int, c_out: int) -> nn.Sequential:
    """Nearest-neighbour x2, conv3x3, BN, ReLU (v1's ``upBlock``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(c_in, c_out),
                         nn.BatchNorm2d(c_out), nn.ReLU(True))


class ResBlock(nn.Module):
    """x + [conv3x3, BN, act, conv3x3, BN](x), with no activation after the sum (v1 and v2
    PyTorch code; v1's TF code adds a ReLU after it: ``relu_after``)."""

    def __init__(self, c: int, glu: bool, relu_after: bool = False) -> None:
        super().__init__()
        first = [conv3x3(c, 2 * c), nn.BatchNorm2d(2 * c), GLU()] if glu else \
            [conv3x3(c, c), nn.BatchNorm2d(c), nn.ReLU(True)]
        self.body = nn.Sequential(*first, conv3x3(c, c), nn.BatchNorm2d(c))
        self.relu_after = relu_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.body(x)
        return F.relu(y) if self.relu_after else y


def down_block(c_in: int, c_out: int, bn: bool = True) -> nn.Sequential:
    """conv4x4 stride 2, (BN), LeakyReLU(0.2): halves H and W."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*layers)


def lrelu_conv(c_in: int, c_out: int) -> nn.Sequential:
    """conv3x3, BN, LeakyReLU(0.2) (v2's ``Block3x3_leakRelu``)."""
    return nn.Sequential(conv3x3(c_in, c_out), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True))


class CondAugment(nn.Module):
    """Conditioning augmentation: text embedding -> (c, mu, logvar), c = mu + sigma * eps.

    ``variant``:
      - ``glu`` (StackGAN-v2): Linear(D -> 4 ef) + GLU -> mu, logvar;
      - ``relu`` (StackGAN-v1 PyTorch): Linear(D -> 2 ef) + ReLU -> mu, logvar (so sigma >= 1,
        an artefact of that code);
      - ``lrelu`` (StackGAN-v1 TF): Linear(D -> 2 ef) + LeakyReLU(0.2) -> mu, log sigma
        (returned as logvar = 2 log sigma), eps from a truncated normal (|eps| <= 2).
      - ``linear``: no activation (the paper's "fully connected layer"), eps ~ N(0, 1).
    ``enabled=False`` (the v1 ablation "no CA"): c = a linear projection of the embedding, no
    noise, and KL = 0.
    """

    def __init__(self, text_dim: int, ef_dim: int, variant: str = "glu",
                 enabled: bool = True) -> None:
        super().__init__()
        self.variant, self.enabled, self.ef_dim = variant, enabled, ef_dim
        if not enabled:
            self.fc = nn.Linear(text_dim, ef_dim)
        elif variant == "glu":
            self.fc = nn.Linear(text_dim, 4 * ef_dim)
        else:
            self.fc = nn.Linear(text_dim, 2 * ef_dim)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.fc(emb)
        if not self.enabled:
            return h, h, torch.zeros_like(h)
        if self.variant == "glu":
            h = F.glu(h, dim=1)
        elif self.variant == "relu":
            h = F.relu(h)
        elif self.variant == "lrelu":
            h = F.leaky_relu(h, 0.2)
        mu, second = h[:, : self.ef_dim], h[:, self.ef_dim :]
        logvar = 2 * second if self.variant == "lrelu" else second
        if self.variant == "lrelu":
            eps = torch.randn_like(mu)
            eps = torch.where(eps.abs() > 2, torch.randn_like(mu).clamp(-2, 2), eps)
        else:
            eps = torch.randn_like(mu)
        return mu + eps * torch.exp(0.5 * logvar), mu, logvar


class CondLogits(nn.Module):
    """The conditional head: cat(c tiled 4x4, x) -> conv3x3, BN, LReLU -> conv4x4/4 -> logit."""

    def __init__(self, c: int, ef_dim: int) -> None:
        super().__init__()
        self.joint = lrelu_conv(c + ef_dim, c)
        self.out = nn.Conv2d(c, 1, 4, 4)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.out(self.joint(torch.cat([c, x], 1))).flatten()


def init_orthogonal_(module: nn.Module) -> nn.Module:
    """StackGAN-v2's init: orthogonal conv/linear weights (gain 1), zero linear biases, BN
    scale ~ N(1, 0.02) and shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, 1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def init_normal_stackgan_(module: nn.Module) -> nn.Module:
    """StackGAN-v1's init: conv/linear weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
