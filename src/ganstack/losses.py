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


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of logits against a constant target (1 real, 0 fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def matching_aware_d_v1(
    real: torch.Tensor,
    wrong: torch.Tensor,
    fake: torch.Tensor,
    real_uncond: torch.Tensor | None = None,
    fake_uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """StackGAN-v1's matching-aware discriminator loss (Reed et al.'s GAN-CLS) on the logits of
    (real image, matching text), (real image, mismatched text) and (fake image, its text):
    BCE(real, 1) + 1/2 [BCE(wrong, 0) + BCE(fake, 0)] (TF code, PyTorch Stage-I). With the
    PyTorch Stage-II's unconditional head (logits of real and fake images alone):
    1/2 [BCE(real, 1) + BCE(real_u, 1)] + 1/3 [BCE(fake, 0) + BCE(wrong, 0) + BCE(fake_u, 0)]."""
    if (real_uncond is None) != (fake_uncond is None):
        raise ValueError("give both unconditional logits or neither")
    if real_uncond is None or fake_uncond is None:
        return bce(real, 1) + 0.5 * (bce(wrong, 0) + bce(fake, 0))
    return (
        0.5 * (bce(real, 1) + bce(real_uncond, 1))
        + (bce(fake, 0) + bce(wrong, 0) + bce(fake_uncond, 0)) / 3
    )


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over batch *and* dimensions (StackGAN code)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()


def colour_mean_cov(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image pixel mean (B, C) and covariance (B, C, C) over the H x W pixels."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h * w)
    mu = x.mean(2)
    xc = x - mu[:, :, None]
    return mu, torch.bmm(xc, xc.transpose(1, 2)) / (h * w)


def colour_consistency(
    finer: torch.Tensor, coarser: torch.Tensor, mean_weight: float = 1.0, cov_weight: float = 5.0
) -> torch.Tensor:
    """StackGAN-v2's colour-consistency term between two scales of the same samples:
    lambda1 * MSE(mu_fine, mu_coarse) + lambda2 * MSE(cov_fine, cov_coarse), the coarser
    scale detached (code: lambda1 = 1, lambda2 = 5)."""
    mu1, cov1 = colour_mean_cov(finer)
    mu0, cov0 = colour_mean_cov(coarser.detach())
    return mean_weight * F.mse_loss(mu1, mu0) + cov_weight * F.mse_loss(cov1, cov0)


def matching_aware_d(
    real_c: torch.Tensor,
    real_u: torch.Tensor,
    wrong_c: torch.Tensor,
    wrong_u: torch.Tensor | None,
    fake_c: torch.Tensor,
    fake_u: torch.Tensor,
    uncond_weight: float,
) -> torch.Tensor:
    """StackGAN-v2's discriminator loss with text (the official code/trainer.py, ``train_Dnet``).

    With an unconditional head (``uncond_weight`` > 0): BCE(r_c,1) + BCE(r_u,1) + BCE(w_c,0)
    + BCE(w_u,1) + BCE(f_c,0) + BCE(f_u,0), no 1/2 factor, and the mismatched (wrong) real
    images are *real* for the unconditional head. Without: BCE(r_c,1) + 1/2 [BCE(w_c,0) +
    BCE(f_c,0)] (matching-aware pairs only)."""
    if uncond_weight > 0:
        assert wrong_u is not None
        return (
            bce(real_c, 1)
            + bce(real_u, 1)
            + bce(wrong_c, 0)
            + bce(wrong_u, 1)
            + bce(fake_c, 0)
            + bce(fake_u, 0)
        )
    return bce(real_c, 1) + 0.5 * (bce(wrong_c, 0) + bce(fake_c, 0))
