"""Loss terms as small pure functions.

Discriminators return logits. A discriminator with one output is an ordinary real/fake
classifier; one with K outputs is a K-class "Improved-GAN" discriminator whose real/fake logit is
the log-sum-exp of its class logits (an implicit fake class with logit 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def realness(logits: torch.Tensor) -> torch.Tensor:
    """The real/fake logit of a discriminator output of shape (B,) , (B, 1) or (B, K)."""
    if logits.dim() == 1:
        return logits
    if logits.shape[1] == 1:
        return logits[:, 0]
    return torch.logsumexp(logits, dim=1)


def d_adversarial(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * (-log D(real)) + 0.5 * (-log(1 - D(fake))), as the SGAN code writes it."""
    real = F.softplus(-realness(real_logits)).mean()
    fake = F.softplus(realness(fake_logits)).mean()
    return 0.5 * (real + fake)


def g_adversarial(fake_logits: torch.Tensor, kind: str = "ns") -> torch.Tensor:
    """Generator adversarial loss: ``ns`` = -log D(G(z)); ``saturating`` = log(1 - D(G(z)))."""
    r = realness(fake_logits)
    if kind == "ns":
        return F.softplus(-r).mean()
    if kind == "saturating":
        return -F.softplus(r).mean()
    raise ValueError(f"unknown generator loss {kind!r}")


def entropy(q_pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SGAN's entropy term: -log Q(z | h) for a fixed-variance Gaussian Q, i.e. the MSE."""
    return F.mse_loss(q_pred, z)


def conditional_feature(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Conditional loss on intermediate features: mean squared error."""
    return F.mse_loss(pred, target)


def conditional_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Conditional loss on labels: cross-entropy."""
    return F.cross_entropy(logits, labels)

