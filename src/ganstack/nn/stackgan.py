"""Blocks of the StackGAN family (v1 and v2), in the official PyTorch code's conventions.

Convolutions have no bias (batch norm follows them) except the final logit convolutions;
batch norm has PyTorch's defaults; the discriminators use LeakyReLU(0.2). In StackGAN-v2's
generator every block computes twice the channels it keeps and halves them with a gated linear
unit, GLU(x) = x[:C] * sigmoid(x[C:]) (``F.glu`` along channels).
"""

from __future__ import annotations

import math

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
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(c_in, c_out),
        nn.BatchNorm2d(c_out),
        nn.ReLU(True),
    )


class ResBlock(nn.Module):
    """x + [conv3x3, BN, act, conv3x3, BN](x). StackGAN-v2's code (``glu=True``) has no
    activation after the sum; StackGAN-v1's code, PyTorch (StackGAN-Pytorch ``code/model.py``
    ``ResBlock``) and TF (``hr_get_generator``) alike, applies a ReLU after it: ``relu_after``."""

    def __init__(self, c: int, glu: bool, relu_after: bool = False) -> None:
        super().__init__()
        first = (
            [conv3x3(c, 2 * c), nn.BatchNorm2d(2 * c), GLU()]
            if glu
            else [conv3x3(c, c), nn.BatchNorm2d(c), nn.ReLU(True)]
        )
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


def d_encoder(size: int, channels: int, df_dim: int) -> tuple[nn.Sequential, int]:
    """A discriminator's image encoder, ``size`` x ``size`` -> 4 x 4: down-blocks with ndf,
    2 ndf, 4 ndf, ... channels (the first without BN); beyond 8 ndf, 3x3 blocks bring the
    channels back to 8 ndf. This is v1's PyTorch ``STAGE1_D``/``STAGE2_D`` encoder and v2's
    D64/D128/D256 one. Returns the encoder and its output channels."""
    layers: list[nn.Module] = []
    c_in = channels
    for j in range(int(math.log2(size // 4))):
        c_out = df_dim * 2**j
        layers.append(down_block(c_in, c_out, bn=j > 0))
        c_in = c_out
    while c_in > 8 * df_dim:
        layers.append(lrelu_conv(c_in, c_in // 2))
        c_in //= 2
    return nn.Sequential(*layers), c_in


class BottleneckResBlock(nn.Module):
    """StackGAN-v1 TF code's residual block: act(x + [conv1x1 -> inner, BN, act, conv3x3
    inner, BN, act, conv3x3 -> c, BN](x)), with ``act`` ReLU (generator) or LeakyReLU(0.2)
    (discriminators)."""

    def __init__(self, c: int, inner: int, leaky: bool = False) -> None:
        super().__init__()

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2, True) if leaky else nn.ReLU(True)

        self.body = nn.Sequential(
            nn.Conv2d(c, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            act(),
            conv3x3(inner, inner),
            nn.BatchNorm2d(inner),
            act(),
            conv3x3(inner, c),
            nn.BatchNorm2d(c),
        )
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.body(x)
        return F.leaky_relu(y, 0.2) if self.leaky else F.relu(y)


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

    def __init__(
        self, text_dim: int, ef_dim: int, variant: str = "glu", enabled: bool = True
    ) -> None:
        super().__init__()
        self.variant, self.enabled, self.ef_dim = variant, enabled, ef_dim
        if not enabled:
            self.fc = nn.Linear(text_dim, ef_dim)
        elif variant == "glu":
            self.fc = nn.Linear(text_dim, 4 * ef_dim)
        else:
            self.fc = nn.Linear(text_dim, 2 * ef_dim)

    def forward(
        self, emb: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``eps``: the standard-normal noise of the sample (drawn here when not given; the
        models pass it when sampling so that a seed fixes the result)."""
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
        if eps is not None:
            eps = eps.clamp(-2, 2) if self.variant == "lrelu" else eps
        elif self.variant == "lrelu":
            eps = torch.randn_like(mu)
            eps = torch.where(eps.abs() > 2, torch.randn_like(mu).clamp(-2, 2), eps)
        else:
            eps = torch.randn_like(mu)
        return mu + eps * torch.exp(0.5 * logvar), mu, logvar


class CondLogits(nn.Module):
    """The conditional head: cat(c tiled 4x4, x) -> conv3x3, BN, LReLU -> conv4x4/4 -> logit.

    ``kernel=1``: the joining convolution is 1x1 (StackGAN-v1's TF code)."""

    def __init__(self, c: int, ef_dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.joint = nn.Sequential(
            nn.Conv2d(c + ef_dim, c, kernel, 1, kernel // 2, bias=False),
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2, True),
        )
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
