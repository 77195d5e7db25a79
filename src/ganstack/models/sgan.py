"""SGAN: Stacked Generative Adversarial Networks (Huang et al., CVPR 2017).

A pretrained classifier E is cut into levels, h_{i+1} = E_i(h_i), with h_0 the image and h_N the
label. Level i has a generator G_i(h_{i+1}, z_i) -> h_i, a discriminator D_i on h_i and a
posterior head Q_i(z_i | h_i) sharing D_i's trunk. Each generator minimises

    L_Gi = adv_weight * L_adv + cond_weight * L_cond + ent_weight * L_ent

with L_cond = || E_i(G_i(h_{i+1}, z_i)) - h_{i+1} ||^2 (cross-entropy against y at the top) and
L_ent = || Q_i(G_i(h_{i+1}, z_i)) - z_i ||^2 (a Gaussian posterior with fixed variance).

Phases (the official MNIST code, xunhuang1995/SGAN mnist/train_independent.py and
mnist/train_joint.py):

- ``independent``: every level is conditioned on the *real* encoder features of the level above;
  one D step for all levels, then one G step for all levels.
- ``joint``: levels are chained, G_i is fed the *generated* h_{i+1}, which is also its cond
  target. ``joint_coupling`` = c sends c * grad(L_G_i) into the level above (0 in the MNIST code,
  0.01 in the CIFAR code).

Defaults follow the official MNIST code: sigmoid (one-logit) D, non-saturating G loss,
z ~ U(0, 1), Adam(1e-4, 0.5, 0.999), weights adv 1 / cond 1 / ent 10. The CIFAR-10 code's recipe
(cifar/train_gan0.py, train_gan1.py, train_joint.py) is a set of options, all on in
``sgan-cifar10``:
``encoder.arch=cifar`` (its networks), ``mean_image`` (per-pixel mean subtraction),
``disc=kclass`` (K class logits, real/fake = sigmoid(logsumexp), label loss on real data),
``g_loss=saturating``, ``g_steps=adaptive`` (1/3/5/7 G steps), ``d_input_noise``,
``d_dropout``/``joint_d_dropout``, ``joint_feature_noise``, ``joint_coupling=0.01`` and
``train.phase_init`` (the joint phase starts from a chosen independent-phase step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganstack import losses
from ganstack.data.base import ImageDataset
from ganstack.errors import CheckpointError, ConfigError
from ganstack.fileio import check_npz
from ganstack.models.base import DataInfo, LogFn, StackModel, Step, Tensors
from ganstack.nn import (
    GaussianNoise,
    MinibatchStd,
    conv_act,
    deconv5,
    frozen,
    init_glorot_,
    init_normal_,
    linear_act,
    lrelu,
    scale_grad,
)
from ganstack.ranges import NonNegFloat, NonNegInt, PosFloat, Range, Unit

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class SGANEncoderConfig:
    # The encoder and the networks of every level: "mnist" (mnist/train_independent.py; 1x28x28
    # images) or "cifar" (cifar/train_gan0.py, train_gan1.py; 3x32x32 images: CIFAR-10, SVHN, a
    # 32x32 image folder).
    arch: Literal["mnist", "cifar"] = "mnist"
    # Encoder layers after which the stack is cut: each gives one intermediate representation.
    # ["fc3"] is the paper's two-level stack (y -> fc3 -> image); ["pool2", "fc3"] gives three.
    split: list[str] = field(default_factory=lambda: ["fc3"])
    # Released weights in the official Lasagne .npz layout; when unset ganstack pretrains the
    # encoder on the training split (the official repo ships no training recipe).
    weights: str | None = None
    pretrain_epochs: NonNegInt = 8
    pretrain_lr: PosFloat = 1e-3
    pretrain_batch_size: Annotated[int, Range(ge=1)] = 100
    # Random horizontal flips while pretraining (reportedly how the paper trained its CIFAR-10
    # encoder, not confirmed in the paper's text; the official repo has no encoder training
    # script; not for digits).
    pretrain_flip: bool = False


@dataclass
class SGANConfig:
    name: str = "sgan"
    encoder: SGANEncoderConfig = field(default_factory=SGANEncoderConfig)
    # Noise size per level, bottom level first: [z0, z1, ...]. MNIST code: 50 and 50.
    z_dims: Annotated[list[int], Range(ge=1, le=1 << 16)] = field(default_factory=lambda: [50, 50])
    # False: the top generator gets no label and has no conditional loss (the paper's
    # unconditional one-level baselines, "DCGAN (L_adv)" and "DCGAN (L_adv + L_ent)").
    use_labels: bool = True
    # channel multiplier of the image generator/discriminator (1 = official)
    width: Annotated[float, Range(gt=0, le=64)] = 1.0
    # hidden width of feature-level generators (official: 512)
    feature_hidden: Annotated[int, Range(ge=1, le=1 << 16)] = 512
    # Hidden width of feature-level discriminators (unset: the official 256 for mnist, 512 cifar).
    feature_disc_hidden: Annotated[int | None, Range(ge=1, le=1 << 16)] = None
    adv_weight: NonNegFloat = 1.0  # lambda_1; 0 switches the generator's adversarial term off
    cond_weight: NonNegFloat = 1.0  # lambda_2; 0 switches the conditional loss off
    ent_weight: NonNegFloat = 10.0  # lambda_3; 0 switches the entropy loss (and Q training) off
    # Per-level weights, bottom level first ([]: cond_weight / ent_weight at every level). The
    # paper and both official codes use one lambda_2 and one lambda_3 for all levels.
    cond_weights: Annotated[list[float], Range(ge=0)] = field(default_factory=list)
    ent_weights: Annotated[list[float], Range(ge=0)] = field(default_factory=list)
    # Generator adversarial loss: "ns" = -log D(G(z)) (MNIST code and the paper);
    # "saturating" = log(1 - D(G(z))) (the CIFAR code).
    g_loss: Literal["ns", "saturating"] = "ns"
    # Independent phase: update rounds per training step for the feature levels (D_i and G_i,
    # i >= 1: small MLPs, about a hundredth of the image level's cost), each with fresh noise
    # on the step's batch; the image level takes one. 1 = both official codes.
    feature_rounds: Annotated[int, Range(ge=1, le=1000)] = 1
    joint_coupling: NonNegFloat = 0.0  # weight of L_G(i) in G(i+1)'s update in the joint phase
    # Discriminator/Q initialisation: "normal" = N(0, 0.02) (train_independent.py);
    # "glorot" = Glorot-uniform weights (the D/Q definitions left in the MNIST train_joint.py).
    disc_init: Literal["normal", "glorot"] = "normal"
    lr: NonNegFloat = 1e-4
    # learning rate of the joint phase (unset: lr)
    joint_lr: Annotated[float | None, Range(gt=0)] = None
    beta1: Unit = 0.5
    beta2: Unit = 0.999
    # The official stages are separate scripts, so Adam's state starts afresh in each phase.
    reset_optimizers: bool = True
    # Batch-norm statistics used when sampling: "eval" = running averages, "batch" = batch stats.
    sample_bn: Literal["eval", "batch"] = "eval"
    # ---- the CIFAR-10 code's recipe (cifar/train_gan0.py, train_gan1.py, train_joint.py); the
    # defaults are the MNIST code's.
    # Discriminator output: "sigmoid" = one real/fake logit (MNIST code; the paper's L_D);
    # "kclass" = one logit per class, real/fake = sigmoid(logsumexp(logits)), and a cross-entropy
    # loss on the real data's labels (CIFAR code; label-free when use_labels is false).
    disc: Literal["sigmoid", "kclass"] = "sigmoid"
    label_weight: NonNegFloat = 1.0  # weight of the kclass discriminator's label loss (code: 1)
    # Generator steps per discriminator step: "one" (MNIST code) or "adaptive": 1, 3, 5 or 7
    # while D's adversarial loss is above 0.65, 0.5, 0.3 or not (CIFAR code; each level by its
    # own D in the independent phase, every level by D0's loss in the joint phase).
    g_steps: Literal["one", "adaptive"] = "one"
    # Std of the Gaussian noise on each discriminator's input, bottom level first ([]: none, the
    # MNIST code; CIFAR code: [0.05, 0.2], images mean-subtracted, fc3 features).
    d_input_noise: Annotated[list[float], Range(ge=0)] = field(default_factory=list)
    d_dropout: Unit = 0.0  # dropout in the cifar image discriminator (CIFAR code: 0.1)
    # in the joint phase (code: 0.3; unset: d_dropout)
    joint_d_dropout: Annotated[float | None, Range(ge=0, lt=1)] = None
    # Levels whose discriminator also sees a minibatch-standard-deviation feature (Karras et
    # al. 2018), bottom level first ([]: none, as both official codes). In a feature-level D it
    # is appended to the input; in the image D, to the flattened conv features.
    minibatch_std: Annotated[list[int], Range(ge=0)] = field(default_factory=list)
    # Std of the two noise layers the CIFAR code adds inside feature discriminators in the joint
    # phase (code: 0.2; 0: none).
    joint_feature_noise: NonNegFloat = 0.0
    # Subtract the training set's per-pixel mean image from every image the encoder and the
    # image discriminator see; G0's sigmoid output minus the same mean is the fake (CIFAR code).
    mean_image: bool = False

    def validate(self, where: str) -> None:
        if len(self.z_dims) != len(self.encoder.split) + 1:
            raise ConfigError(
                f"{where}.z_dims has {len(self.z_dims)} entries but encoder.split "
                f"{self.encoder.split} makes {len(self.encoder.split) + 1} levels: give one "
                f"noise size per level"
            )
        SGANEncoder(self.encoder.arch, self.encoder.split)  # checks the split names
        if self.d_input_noise and len(self.d_input_noise) != len(self.z_dims):
            raise ConfigError(
                f"{where}.d_input_noise has {len(self.d_input_noise)} entries for "
                f"{len(self.z_dims)} levels: give one std per level, bottom first (or [] for none)"
            )
        if self.encoder.arch == "mnist" and (self.d_dropout or self.joint_d_dropout):
            raise ConfigError(
                f"{where}.d_dropout: the 'mnist' image discriminator has no dropout layers (as "
                f"in the official MNIST code); set it to 0 or use encoder.arch=cifar"
            )
        if self.encoder.arch == "cifar" and 0 in self.minibatch_std:
            raise ConfigError(
                f"{where}.minibatch_std: the 'cifar' image discriminator has no minibatch-std "
                f"feature; name feature levels only (1 and up)"
            )
        bad = [i for i in self.minibatch_std if i >= len(self.z_dims)]
        if bad:
            raise ConfigError(
                f"{where}.minibatch_std names levels {bad}, but there are {len(self.z_dims)} "
                f"levels (0 = the image level, {len(self.z_dims) - 1} = the top)"
            )
        for k in ("cond_weights", "ent_weights"):
            v = getattr(self, k)
            if v and len(v) != len(self.z_dims):
                raise ConfigError(
                    f"{where}.{k} has {len(v)} entries for {len(self.z_dims)} levels: give one "
                    f"weight per level, bottom first (or [] for {k[:-1]} at every level)"
                )


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def _mnist_encoder_layers() -> list[tuple[str, nn.Module]]:
    """mnist/train_independent.py: conv1-pool1-conv2-pool2-fc3-fc4, valid 5x5 convs, ReLU,
    inputs in [0, 1]."""
    return [
        ("conv1", nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU())),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Sequential(nn.Conv2d(32, 32, 5), nn.ReLU())),
        ("pool2", nn.MaxPool2d(2)),
        ("fc3", nn.Sequential(nn.Flatten(), nn.Linear(512, 256), nn.ReLU())),
        ("fc4", nn.Linear(256, 10)),  # logits; softmax lives in the losses
    ]


def _cifar_encoder_layers() -> list[tuple[str, nn.Module]]:
    """cifar/train_gan0.py: the same pattern, wider: 64 and 128 channels, fc3 3200 -> 256, on
    3x32x32."""
    return [
        ("conv1", nn.Sequential(nn.Conv2d(3, 64, 5), nn.ReLU())),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Sequential(nn.Conv2d(64, 128, 5), nn.ReLU())),
        ("pool2", nn.MaxPool2d(2)),
        ("fc3", nn.Sequential(nn.Flatten(), nn.Linear(3200, 256), nn.ReLU())),
        ("fc4", nn.Linear(256, 10)),
    ]


ENCODER_ARCHS = {"mnist": _mnist_encoder_layers, "cifar": _cifar_encoder_layers}


class SGANEncoder(nn.Module):
    """A classifier whose layers are grouped into the stack's levels E_0 .. E_{N-1}."""

    def __init__(self, arch: str, split: list[str]) -> None:
        super().__init__()
        layers = ENCODER_ARCHS[arch]()
        self.layers = nn.ModuleDict(dict(layers))
        names = [n for n, _ in layers]
        cut_points = names[:-1]
        positions = []
        for s in split:
            if s not in cut_points:
                raise ConfigError(
                    f"model.encoder.split: '{s}' is not a layer the '{arch}' encoder can be cut "
                    f"after; choose from {cut_points}"
                )
            positions.append(names.index(s))
        if positions != sorted(set(positions)):
            raise ConfigError(
                f"model.encoder.split {split} must list layers bottom to top, without repeats"
            )
        bounds = [0] + [p + 1 for p in positions] + [len(names)]
        self.segments = [names[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    @property
    def num_levels(self) -> int:
        return len(self.segments)

    def segment(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """E_i: representation h_i -> h_{i+1} (the top segment returns class logits)."""
        for name in self.segments[i]:
            h = self.layers[name](h)
        return h

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[h_1, ..., h_{N-1}, logits] for images x."""
        out, h = [], x
        for i in range(self.num_levels):
            h = self.segment(i, h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]

    def load_lasagne_npz(self, path: str | Path) -> None:
        """Load the official SGAN encoder weights (``arr_0`` ... in Lasagne layout)."""
        path = Path(path)
        try:
            check_npz(path, CheckpointError)
            with np.load(path, allow_pickle=False) as f:
                arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot read encoder weights {path}: {e}") from None
        params: list[tuple[Any, bool]] = []  # (tensor, transposed); a missing bias is None
        for name in self.layers:
            for m in self.layers[name].modules():
                if isinstance(m, nn.Conv2d):
                    params += [(m.weight, False), (m.bias, False)]
                elif isinstance(m, nn.Linear):
                    params += [(m.weight, True), (m.bias, False)]  # Lasagne dense W is (in, out)
        if len(arrays) != len(params):
            raise CheckpointError(
                f"{path} holds {len(arrays)} arrays; the encoder has {len(params)} tensors"
            )
        with torch.no_grad():
            for arr, (p, transpose) in zip(arrays, params, strict=True):
                t = torch.from_numpy(np.ascontiguousarray(arr.T if transpose else arr))
                if t.shape != p.shape:
                    raise CheckpointError(
                        f"{path}: array of shape {tuple(t.shape)} does not fit a tensor of "
                        f"shape {tuple(p.shape)}"
                    )
                p.copy_(t.float())


# --------------------------------------------------------------------------------------------
# Generators and discriminators (MNIST: mnist/train_independent.py)
# --------------------------------------------------------------------------------------------


class FeatureGenerator(nn.Module):
    """G for a feature level: concat[z, condition] -> 2 x (Linear, BN, ReLU) -> Linear, ReLU."""

    def __init__(self, cond_dim: int, z_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            linear_act(z_dim + cond_dim, hidden, nn.ReLU()),
            linear_act(hidden, hidden, nn.ReLU()),
            nn.Linear(hidden, out_dim),
            nn.ReLU(),  # encoder features are post-ReLU, so non-negative
        )

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, cond], 1))


class FeatureDiscriminator(nn.Module):
    """D/Q for a feature level: a 2-layer trunk, an adversarial head and a Q head.

    ``mnist`` (mnist/train_independent.py): 2 x (Linear, LReLU), sigmoid Q head (z lies in
    [0, 1]). ``cifar`` (cifar/train_gan1.py): Linear-LReLU, Linear-BN-LReLU, linear Q head. Both
    have an input noise layer and, after each trunk layer, the noise layers of the CIFAR joint
    phase (cifar/train_joint.py; std 0: off).
    """

    def __init__(
        self,
        in_dim: int,
        z_dim: int,
        hidden: int,
        out_dim: int = 1,
        arch: str = "mnist",
        mbstd: bool = False,
    ) -> None:
        super().__init__()
        self.mbstd = MinibatchStd() if mbstd else nn.Identity()
        self.trunk = nn.Sequential(
            linear_act(in_dim + int(mbstd), hidden, lrelu(), bn=False),
            linear_act(hidden, hidden, lrelu(), bn=arch == "cifar"),
        )
        self.noise = nn.ModuleList([GaussianNoise(), GaussianNoise(), GaussianNoise()])
        self.adv = nn.Linear(hidden, out_dim)
        q: list[nn.Module] = [nn.Linear(hidden, z_dim)]
        self.q = nn.Sequential(*q, nn.Sigmoid()) if arch == "mnist" else nn.Sequential(*q)

    def set_regularisation(self, input_noise: float, dropout: float, inner_noise: float) -> None:
        self.noise[0].std = input_noise  # type: ignore[assignment]
        self.noise[1].std = self.noise[2].std = inner_noise  # type: ignore[assignment]

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.mbstd(self.noise[0](h.flatten(1)))
        t = self.noise[1](self.trunk[0](t))
        t = self.noise[2](self.trunk[1](t))
        return self.adv(t), self.q(t)


class CifarFeatureGenerator(nn.Module):
    """G1 of the CIFAR code (cifar/train_gan1.py): z -> 256 and the condition -> 512 embeddings
    (Linear, BN, ReLU), concatenated, 2 x (Linear 512, BN, ReLU), Linear -> out, ReLU."""

    def __init__(self, cond_dim: int, z_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.z_embed = linear_act(z_dim, 256, nn.ReLU())
        self.c_embed = linear_act(cond_dim, 512, nn.ReLU()) if cond_dim else None
        self.net = nn.Sequential(
            linear_act(256 + (512 if cond_dim else 0), hidden, nn.ReLU()),
            linear_act(hidden, hidden, nn.ReLU()),
            nn.Linear(hidden, out_dim),
            nn.ReLU(),
        )

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        parts = [self.z_embed(z)]
        if self.c_embed is not None:
            parts.append(self.c_embed(cond))
        return self.net(torch.cat(parts, 1))


class MnistImageGenerator(nn.Module):
    """G0 of the MNIST code: z embedding, FC to 4x4, 5x5 deconvs 4->8->12->24->28, sigmoid."""

    def __init__(self, cond_dim: int, z_dim: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = max(1, round(128 * width)), max(1, round(64 * width))
        self.c1 = c1
        self.z_embed = linear_act(z_dim, 128, nn.ReLU())
        self.fc = linear_act(cond_dim + 128, c1 * 16, nn.ReLU())
        self.deconv = nn.Sequential(
            deconv5(c1, c1, "half", nn.ReLU()),  # 8x8
            deconv5(c1, c2, "valid", nn.ReLU()),  # 12x12
            deconv5(c2, c2, "half", nn.ReLU()),  # 24x24
            deconv5(c2, 1, "valid", nn.Sigmoid(), bn=False),  # 28x28
        )

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([cond, self.z_embed(z)], 1))
        return self.deconv(h.view(-1, self.c1, 4, 4))


class MnistImageDiscriminator(nn.Module):
    """D0/Q0 of the MNIST code: three 5x5 stride-2 convs, FC 256, adversarial and Q heads."""

    def __init__(
        self, z_dim: int, width: float = 1.0, out_dim: int = 1, mbstd: bool = False
    ) -> None:
        super().__init__()
        c = [max(1, round(k * width)) for k in (32, 64, 128)]
        self.trunk = nn.Sequential(
            conv_act(1, c[0], 5, 2, 2, lrelu()),  # 14x14
            conv_act(c[0], c[1], 5, 2, 2, lrelu()),  # 7x7
            conv_act(c[1], c[2], 5, 2, 2, lrelu()),  # 4x4
            nn.Flatten(),
            *([MinibatchStd()] if mbstd else []),
            linear_act(c[2] * 16 + int(mbstd), 256, lrelu(), bn=False),
        )
        self.noise = GaussianNoise()
        self.adv = nn.Linear(256, out_dim)
        self.q = nn.Sequential(nn.Linear(256, z_dim), nn.Sigmoid())

    def set_regularisation(self, input_noise: float, dropout: float, inner_noise: float) -> None:
        self.noise.std = input_noise  # no dropout layers in the MNIST code (validated)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(self.noise(x))
        return self.adv(t), self.q(t)


class CifarImageGenerator(nn.Module):
    """G0 of the CIFAR code (cifar/train_gan0.py): z -> 2 x (Linear 128, BN, ReLU); concat with
    the condition; Linear -> 256x5x5; 5x5 deconvs 5->10->14->28->32; sigmoid."""

    def __init__(self, cond_dim: int, z_dim: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = max(1, round(256 * width)), max(1, round(128 * width))
        self.c1 = c1
        self.z_embed = nn.Sequential(
            linear_act(z_dim, 128, nn.ReLU()), linear_act(128, 128, nn.ReLU())
        )
        self.fc = linear_act(cond_dim + 128, c1 * 25, nn.ReLU())
        self.deconv = nn.Sequential(
            deconv5(c1, c1, "half", nn.ReLU()),  # 10x10
            deconv5(c1, c2, "valid", nn.ReLU()),  # 14x14
            deconv5(c2, c2, "half", nn.ReLU()),  # 28x28
            deconv5(c2, 3, "valid", nn.Sigmoid(), bn=False),  # 32x32
        )

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([cond, self.z_embed(z)], 1))
        return self.deconv(h.view(-1, self.c1, 5, 5))


class CifarImageDiscriminator(nn.Module):
    """D0/Q0 of the CIFAR code (cifar/train_gan0.py): input noise, 3x3 convs
    96-96/2-192-192/2-192 (BN on all but the first) with dropout after each stride-2 conv, a 1x1
    NIN; the adversarial head reads the global average pool, the linear Q head the whole 6x6
    trunk."""

    def __init__(self, z_dim: int, width: float = 1.0, out_dim: int = 1) -> None:
        super().__init__()
        a, b = max(1, round(96 * width)), max(1, round(192 * width))
        self.noise = GaussianNoise()
        self.drop = nn.ModuleList([nn.Dropout(0.0), nn.Dropout(0.0)])
        self.trunk = nn.Sequential(
            conv_act(3, a, 3, 1, 1, lrelu()),  # 32x32
            conv_act(a, a, 3, 2, 1, lrelu(), bn=True),  # 16x16
            self.drop[0],
            conv_act(a, b, 3, 1, 1, lrelu(), bn=True),
            conv_act(b, b, 3, 2, 1, lrelu(), bn=True),  # 8x8
            self.drop[1],
            conv_act(b, b, 3, 1, 0, lrelu(), bn=True),  # 6x6
            conv_act(b, b, 1, 1, 0, lrelu()),  # NIN
        )
        self.adv = nn.Linear(b, out_dim)
        self.q = nn.Sequential(nn.Flatten(), nn.Linear(b * 36, z_dim))

    def set_regularisation(self, input_noise: float, dropout: float, inner_noise: float) -> None:
        self.noise.std = input_noise
        for d in self.drop:
            d.p = dropout  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(self.noise(x))
        return self.adv(t.mean((2, 3))), self.q(t)


IMAGE_NETS = {
    "mnist": (MnistImageGenerator, MnistImageDiscriminator, (1, 28, 28)),
    "cifar": (CifarImageGenerator, CifarImageDiscriminator, (3, 32, 32)),
}
FEATURE_GENERATORS = {"mnist": FeatureGenerator, "cifar": CifarFeatureGenerator}
FEATURE_DISC_HIDDEN = {"mnist": 256, "cifar": 512}


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class SGAN(StackModel):
    """SGAN with N levels cut from a classifier (N = len(encoder.split) + 1)."""

    name = "sgan"
    Config = SGANConfig
    mean_image: torch.Tensor  # buffer (with cfg.mean_image): the training images' mean
    noise_distribution = "uniform"

    def __init__(self, cfg: SGANConfig, info: DataInfo) -> None:
        super().__init__(cfg, info)
        arch = cfg.encoder.arch
        g_cls, d_cls, shape = IMAGE_NETS[arch]
        if tuple(info.shape) != shape:
            raise ConfigError(
                f"the '{arch}' SGAN networks take {shape} images; the dataset "
                f"'{info.name}' has {info.shape}"
            )
        if info.num_classes <= 0:
            raise ConfigError("SGAN is class-conditional: the dataset must have labels")
        self.encoder = SGANEncoder(arch, cfg.encoder.split)
        self.encoder.requires_grad_(False)
        n = self.encoder.num_levels
        with torch.no_grad():
            feats = self.encoder.eval().features(torch.zeros(1, *shape))
        if feats[-1].shape[1] != info.num_classes:
            raise ConfigError(
                f"the encoder has {feats[-1].shape[1]} classes, the dataset {info.num_classes}"
            )
        self.rep_shapes = [shape] + [tuple(f.shape[1:]) for f in feats[:-1]]
        dims = [int(np.prod(s)) for s in self.rep_shapes]
        self.levels = n
        out_dim = info.num_classes if cfg.disc == "kclass" else 1
        disc_hidden = cfg.feature_disc_hidden or FEATURE_DISC_HIDDEN[arch]
        gens, discs = [], []
        for i in range(n):
            top_dim = info.num_classes if cfg.use_labels else 0
            cond_dim = top_dim if i == n - 1 else dims[i + 1]
            z = cfg.z_dims[i]
            mbstd = i in cfg.minibatch_std
            if i == 0:
                gens.append(g_cls(cond_dim, z, cfg.width))
                # only the mnist image D has the feature (validate() rejects it for cifar)
                extra = {"mbstd": True} if mbstd else {}
                discs.append(d_cls(z, cfg.width, out_dim, **extra))
            else:
                gens.append(FEATURE_GENERATORS[arch](cond_dim, z, dims[i], cfg.feature_hidden))
                discs.append(FeatureDiscriminator(dims[i], z, disc_hidden, out_dim, arch, mbstd))
        for g_net, d_net in zip(gens, discs, strict=True):
            init_normal_(g_net)
            if cfg.disc_init == "glorot":
                init_glorot_(d_net)
            else:
                init_normal_(d_net)
        self.G = nn.ModuleList(gens)
        self.D = nn.ModuleList(discs)
        if cfg.mean_image:  # set from the training images in setup(); saved in checkpoints
            self.register_buffer("mean_image", torch.zeros(shape))
        self._regularise(joint=False)
        self.optimizers = {}
        for i in range(n):
            self.optimizers[f"G{i}"] = self._adam(self.G[i].parameters())
            self.optimizers[f"D{i}"] = self._adam(self.D[i].parameters())

    generator_names = ("G",)

    @property
    def conditional(self) -> bool:
        return self.cfg.use_labels and self.info.num_classes > 0

    def _top_condition(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        if not self.conditional or y is None:
            return torch.zeros(n, 0, device=self.device)
        return F.one_hot(y.long(), self.info.num_classes).float()

    def _adam(self, params) -> torch.optim.Optimizer:
        # The official Adam puts eps inside the square root; the difference is negligible.
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2))

    @classmethod
    def default_phases(cls, cfg: SGANConfig) -> dict[str, int]:
        return {"independent": 2000, "joint": 1000}

    # ---- setup: the pretrained encoder -----------------------------------------------------

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        ecfg = self.cfg.encoder
        if self.cfg.mean_image:
            total = torch.zeros(self.rep_shapes[0], dtype=torch.float64)
            for s in range(0, len(train), 1000):
                total += train.images[s : s + 1000].double().sum(0) / 255.0
            self.mean_image.copy_((total / len(train)).float())
            means = [round(float(v), 4) for v in self.mean_image.mean((1, 2))]
            log(f"mean image of {len(train)} training images: channel means {means}")
        if ecfg.weights:
            self.encoder.load_lasagne_npz(ecfg.weights)
            log(f"encoder: loaded {ecfg.weights}")
            out: dict[str, Any] = {"encoder_source": str(ecfg.weights)}
        else:
            out = self._pretrain_encoder(train, log)
        if evaluation is not None:
            acc = classifier_accuracy(self.encoder, self.preprocess, evaluation)
            out[f"encoder_accuracy_{evaluation.name}"] = acc
            log(f"encoder: accuracy {acc:.4f} on {len(evaluation)} held-out images")
        self.encoder.requires_grad_(False)
        return out

    def _pretrain_encoder(self, train: ImageDataset, log: LogFn) -> dict:
        ecfg = self.cfg.encoder
        enc = self.encoder.train().requires_grad_(True)
        opt = torch.optim.Adam(enc.parameters(), lr=ecfg.pretrain_lr)
        dev = self.device
        x_all, y_all = train.images.to(dev), train.labels.to(dev)  # type: ignore[union-attr]
        bs = min(ecfg.pretrain_batch_size, len(train))  # a dataset smaller than one batch
        for epoch in range(ecfg.pretrain_epochs):
            perm = torch.randperm(len(train), device="cpu").to(dev)
            total = 0.0
            for s in range(0, len(train) - bs + 1, bs):
                idx = perm[s : s + bs]
                x = self.preprocess(x_all[idx])
                if ecfg.pretrain_flip:
                    flip = torch.rand(len(x), 1, 1, 1, device=dev) < 0.5
                    x = torch.where(flip, x.flip(3), x)
                loss = F.cross_entropy(enc(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            mean = total / (len(train) // bs)
            log(f"encoder: epoch {epoch + 1}/{ecfg.pretrain_epochs} loss {mean:.4f}")
        enc.requires_grad_(False)
        return {"encoder_source": "pretrained", "encoder_epochs": ecfg.pretrain_epochs}

    # ---- data conventions ------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> the encoder's input: pixels in [0, 1] (MNIST code), minus the per-pixel
        mean image with ``mean_image`` (CIFAR code)."""
        return self.centre(images.float() / 255.0)

    def centre(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the image level's representation h_0."""
        return images - self.mean_image if self.cfg.mean_image else images

    def _regularise(self, joint: bool) -> None:
        """The discriminators' input noise and dropout for the phase (CIFAR code:
        cifar/train_gan0.py, train_gan1.py, train_joint.py)."""
        cfg = self.cfg
        noise = cfg.d_input_noise or [0.0] * self.levels
        drop = cfg.d_dropout
        if joint and cfg.joint_d_dropout is not None:
            drop = cfg.joint_d_dropout
        inner = cfg.joint_feature_noise if joint else 0.0
        for i, d in enumerate(self.D):
            d.set_regularisation(noise[i], drop, inner)  # type: ignore[operator]

    # ---- training --------------------------------------------------------------------------

    def enter_phase(self, phase: str, fresh: bool) -> None:
        self._regularise(joint=phase == "joint")  # not in the checkpoint: set on every entry
        if fresh and self.cfg.reset_optimizers:
            for opt in self.optimizers.values():
                opt.state.clear()

    def lr(self, name: str, step: Step) -> float | None:
        """``joint_lr`` in the joint phase when set; ``lr`` (the optimizers' own) otherwise."""
        return self.cfg.joint_lr if step.phase == "joint" and self.cfg.joint_lr else None

    def _draw_z(self, b: int) -> list[torch.Tensor]:
        return [torch.rand(b, d, device=self.device) for d in self.cfg.z_dims]

    def _couple(self, h: torch.Tensor) -> torch.Tensor:
        c = self.cfg.joint_coupling
        return h.detach() if c == 0 else scale_grad(h, c)

    def _levels(
        self,
        real: list[torch.Tensor],
        top: torch.Tensor,
        zs: list[torch.Tensor],
        joint: bool,
        only: set[int] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fakes (in representation space: h_0 is mean-subtracted with ``mean_image``) and the
        condition each level was given, which is also its cond-loss target. ``only``: the
        levels needed (independent phase; the joint phase always runs the whole chain)."""
        n = self.levels
        fakes: list[torch.Tensor] = [torch.empty(0)] * n
        conds: list[torch.Tensor] = [torch.empty(0)] * n
        for i in reversed(range(n)):
            if not joint and only is not None and i not in only:
                continue
            if i == n - 1:
                conds[i] = top
            elif joint:
                conds[i] = self._couple(fakes[i + 1])
            else:
                conds[i] = real[i + 1]
            fakes[i] = self.G[i](conds[i], zs[i])
            if i == 0:
                fakes[i] = self.centre(fakes[i])
        return fakes, conds

    def cond_weight(self, level: int) -> float:
        return self.cfg.cond_weights[level] if self.cfg.cond_weights else self.cfg.cond_weight

    def ent_weight(self, level: int) -> float:
        return self.cfg.ent_weights[level] if self.cfg.ent_weights else self.cfg.ent_weight

    @staticmethod
    def adaptive_g_steps(d_adv: float) -> int:
        """The CIFAR code's schedule: more G steps the better D does (ln 2 ~ 0.69 is chance)."""
        for threshold, steps in ((0.65, 1), (0.5, 3), (0.3, 5)):
            if d_adv > threshold:
                return steps
        return 7

    def _update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        real: list[torch.Tensor],
        top: torch.Tensor,
        joint: bool,
        levels: list[int],
        logs: dict[str, torch.Tensor],
    ) -> dict[int, int]:
        """One discriminator step and the generator steps for ``levels`` (every level in the
        joint phase); returns the generator steps each level took and fills ``logs``."""
        cfg = self.cfg
        b, n = len(x), self.levels
        label_loss = cfg.disc == "kclass" and self.conditional and cfg.label_weight > 0
        # ---- discriminator step (the levels updated; real and fake in separate calls, as the code)
        zs = self._draw_z(b)
        with torch.no_grad():
            fakes, _ = self._levels(real, top, zs, joint, only=set(levels))
        d_total = x.new_zeros(())
        d_adv = []
        for i in levels:
            l_real, _ = self.D[i](real[i])
            l_fake, q = self.D[i](fakes[i])
            adv = losses.d_adversarial(l_real, l_fake)
            ent = losses.entropy(q, zs[i])
            d_total = d_total + adv + self.ent_weight(i) * ent
            if label_loss:  # K-class D: classify the real data (cifar/train_gan*.py)
                lab = F.cross_entropy(l_real, y)
                d_total = d_total + cfg.label_weight * lab
                logs[f"d{i}_label"] = lab.detach()
            d_adv.append(adv.detach())
            logs[f"d{i}_adv"] = adv.detach()
            logs[f"d{i}_ent"] = ent.detach()
        self.optimize(d_total, [f"D{i}" for i in levels])

        # ---- generator steps (fresh noise each; D's weights get no gradient)
        if cfg.g_steps == "one":
            counts = {i: 1 for i in levels}
        elif joint:  # driven by D0 alone (train_joint.py)
            counts = {i: self.adaptive_g_steps(float(d_adv[0])) for i in levels}
        else:  # each level by its own D (train_gan0.py, train_gan1.py)
            counts = {i: self.adaptive_g_steps(float(a)) for i, a in zip(levels, d_adv)}
        with frozen(self.D):
            for t in range(max(counts.values())):
                active = [i for i in levels if counts[i] > t]
                zs = self._draw_z(b)
                fakes, conds = self._levels(real, top, zs, joint, only=set(active))
                g_total = x.new_zeros(())
                for i in active:
                    l_fake, q = self.D[i](fakes[i])
                    adv = losses.g_adversarial(l_fake, cfg.g_loss)
                    ent = losses.entropy(q, zs[i])
                    pred = self.encoder.segment(i, fakes[i].view(b, *self.rep_shapes[i]))
                    if i == n - 1:
                        cond = (
                            losses.conditional_label(pred, y)
                            if self.conditional
                            else pred.new_zeros(())
                        )
                    else:
                        cond = losses.conditional_feature(pred.flatten(1), conds[i])
                    g_total = g_total + cfg.adv_weight * adv + self.cond_weight(i) * cond
                    g_total = g_total + self.ent_weight(i) * ent
                    logs[f"g{i}_adv"] = adv.detach()
                    logs[f"g{i}_cond"] = cond.detach()
                    logs[f"g{i}_ent"] = ent.detach()
                self.optimize(g_total, [f"G{i}" for i in active])
        return counts

    def train_step(self, batch: Tensors, phase: str, step: Step) -> Tensors:
        cfg = self.cfg
        x = self.preprocess(batch["images"])
        y = batch["labels"]
        b, n = len(x), self.levels
        with torch.no_grad():
            feats = self.encoder.features(x)
        real = [x] + [f.flatten(1) for f in feats[:-1]]
        top = self._top_condition(y, b)
        joint = phase == "joint"
        logs: dict[str, torch.Tensor] = {}
        counts = self._update(x, y, real, top, joint, list(range(n)), logs)
        if not joint and n > 1:  # extra rounds for the cheap feature levels (feature_rounds)
            for _ in range(cfg.feature_rounds - 1):
                self._update(x, y, real, top, joint, list(range(1, n)), logs)
        if cfg.g_steps == "adaptive":
            for i in range(n):
                logs[f"g{i}_steps"] = torch.tensor(float(counts[i]))
        return logs

    # ---- sampling --------------------------------------------------------------------------

    def noise_dims(self) -> dict[str, int]:
        return {f"z{i}": self.cfg.z_dims[i] for i in reversed(range(self.levels))}

    def generate(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gens = self.net("G")
        n = len(inputs[f"z{self.levels - 1}"])
        h = self._top_condition(inputs.get("y"), n)
        out: dict[str, torch.Tensor] = {}
        for i in reversed(range(self.levels)):
            h = gens[i](h, inputs[f"z{i}"])
            if i > 0:
                out[f"h{i}"] = h
        out["image"] = h
        return out

    @torch.no_grad()
    def noise_sensitivity(
        self, train: ImageDataset, conditions: int = 20, samples: int = 16, seed: int = 0
    ) -> dict[str, float]:
        """How much each level's output moves with that level's own noise (paper, Fig. 2).

        For level i: the mean pairwise L2 distance between outputs h_i when only z_i varies (the
        label and every other noise fixed), averaged over ``conditions`` draws, divided by the
        mean pairwise distance between the real h_i of random training images. 0 means the
        level ignores its noise.
        """
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(train), generator=gen)[:512]
        x = self.preprocess(train.images[idx].to(self.device))
        reals = [x.flatten(1)] + [f.flatten(1) for f in self.encoder.features(x)[:-1]]
        k = max(self.info.num_classes, 1)
        out = {}
        for i in range(self.levels):
            others = [n for n in self.input_names() if n != f"z{i}"]
            dists = []
            for c in range(conditions):
                inputs = self.draw_inputs(
                    samples, [c % k] if self.conditional else None, fixed=others, generator=gen
                )
                with self.sampling_mode():
                    o = self.generate(inputs)
                h = o["image"] if i == 0 else o[f"h{i}"]
                dists.append(float(torch.pdist(h.flatten(1).float()).mean()))
            spread = float(torch.pdist(reals[i]).mean())
            out[f"noise_sensitivity_z{i}"] = sum(dists) / len(dists) / spread
        return out

    def figures(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        k = self.info.num_classes if self.conditional else 8
        figs = {"classes": self.grid(k, 10, vary=self.noise_dims(), generator=generator)}
        # One figure per level: every input fixed within a row except that level's noise.
        for name in self.noise_dims():
            figs[f"vary_{name}"] = self.grid(k, 10, vary=[name], generator=generator)
        if self.levels > 1 and self.reference is not None:
            figs["reconstructions"] = self.reconstructions(self.reference, generator=generator)
        return figs

    @torch.no_grad()
    def reconstructions(
        self,
        data: ImageDataset,
        rows: int = 10,
        cols: int = 9,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Each row: a real image x, then G0(E0(x), z0) for ``cols`` draws of z0 (the CIFAR
        code's per-epoch reconstructions). How close they are shows how faithfully G0 follows
        its condition; how much they differ, how much it uses its noise."""
        picks = [
            int((data.labels == c).nonzero()[0])
            for c in range(self.info.num_classes)
            if data.labels is not None and bool((data.labels == c).any())
        ][:rows]
        picks = picks or list(range(min(rows, len(data))))
        x = data.images[picks].to(self.device)
        h1 = self.encoder.segment(0, self.preprocess(x)).flatten(1)
        z0 = self.draw_inputs(cols, generator=generator)["z0"]
        with self.sampling_mode():
            out = self.net("G")[0](h1.repeat_interleave(cols, 0), z0.repeat(len(x), 1))
        out = out.reshape(len(x), cols, *out.shape[1:])
        return torch.cat([x.float().div(255).unsqueeze(1), out], 1).cpu()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, preprocess, ds: ImageDataset, bs: int = 500) -> float:
    """Top-1 accuracy of a classifier on a labelled dataset."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(ds), bs):
        x = preprocess(ds.images[s : s + bs].to(dev))
        correct += int((model(x).argmax(1).cpu() == ds.labels[s : s + bs]).sum())  # type: ignore[index]
    model.train(was)
    return correct / len(ds)
