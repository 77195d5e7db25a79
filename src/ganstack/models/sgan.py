"""SGAN: Stacked Generative Adversarial Networks (Huang et al., CVPR 2017).

A pretrained classifier E is cut into levels, h_{i+1} = E_i(h_i), with h_0 the image and h_N the
label. Level i has a generator G_i(h_{i+1}, z_i) -> h_i, a discriminator D_i on h_i and a
posterior head Q_i(z_i | h_i) sharing D_i's trunk. Each generator minimises

    L_Gi = adv_weight * L_adv + cond_weight * L_cond + ent_weight * L_ent

with L_cond = || E_i(G_i(h_{i+1}, z_i)) - h_{i+1} ||^2 (cross-entropy against y at the top) and
L_ent = || Q_i(G_i(h_{i+1}, z_i)) - z_i ||^2 (a Gaussian posterior with fixed variance).

Phases (official MNIST code, spec sgan.md section 5.4):

- ``independent``: every level is conditioned on the *real* encoder features of the level above;
  one D step for all levels, then one G step for all levels.
- ``joint``: levels are chained, G_i is fed the *generated* h_{i+1}, which is also its cond
  target. ``joint_coupling`` = c sends c * grad(L_G_i) into the level above (0 in the MNIST code,
  0.01 in the CIFAR code).

Defaults follow the official MNIST code: sigmoid (one-logit) D, non-saturating G loss,
z ~ U(0, 1), Adam(1e-4, 0.5, 0.999), weights adv 1 / cond 1 / ent 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganstack import losses
from ganstack.config import ConfigError
from ganstack.data.base import ImageDataset
from ganstack.errors import CheckpointError
from ganstack.models.base import DataInfo, LogFn, StackModel
from ganstack.nn import (
    conv_act,
    deconv5,
    init_glorot_,
    init_normal_,
    linear_act,
    lrelu,
    scale_grad,
)

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class SGANEncoderConfig:
    arch: Literal["mnist"] = "mnist"  # spec section 2.2
    # Encoder layers after which the stack is cut: each gives one intermediate representation.
    # ["fc3"] is the paper's two-level stack (y -> fc3 -> image); ["pool2", "fc3"] gives three.
    split: list[str] = field(default_factory=lambda: ["fc3"])
    # Released weights in the official Lasagne .npz layout; when unset ganstack pretrains the
    # encoder on the training split (the official repo ships no training recipe).
    weights: str | None = None
    pretrain_epochs: int = 8
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 100


@dataclass
class SGANConfig:
    name: str = "sgan"
    encoder: SGANEncoderConfig = field(default_factory=SGANEncoderConfig)
    # Noise size per level, bottom level first: [z0, z1, ...]. MNIST code: 50 and 50.
    z_dims: list[int] = field(default_factory=lambda: [50, 50])
    # False: the top generator gets no label and has no conditional loss (the paper's
    # unconditional one-level baselines, "DCGAN (L_adv)" and "DCGAN (L_adv + L_ent)").
    use_labels: bool = True
    width: float = 1.0  # channel multiplier of the image generator/discriminator (1 = official)
    feature_hidden: int = 512  # hidden width of feature-level generators (official: 512)
    feature_disc_hidden: int = 256  # hidden width of feature-level discriminators (official: 256)
    adv_weight: float = 1.0  # lambda_1; 0 switches the generator's adversarial term off
    cond_weight: float = 1.0  # lambda_2; 0 switches the conditional loss off
    ent_weight: float = 10.0  # lambda_3; 0 switches the entropy loss (and Q training) off
    # Generator adversarial loss: "ns" = -log D(G(z)) (MNIST code and the paper);
    # "saturating" = log(1 - D(G(z))) (the CIFAR code).
    g_loss: Literal["ns", "saturating"] = "ns"
    joint_coupling: float = 0.0  # weight of L_G(i) in G(i+1)'s update in the joint phase
    # Discriminator/Q initialisation: "normal" = N(0, 0.02) (train_independent.py);
    # "glorot" = Glorot-uniform weights (the D/Q definitions left in the MNIST train_joint.py).
    disc_init: Literal["normal", "glorot"] = "normal"
    lr: float = 1e-4
    joint_lr: float | None = None  # learning rate of the joint phase (unset: lr)
    beta1: float = 0.5
    beta2: float = 0.999
    # The official stages are separate scripts, so Adam's state starts afresh in each phase.
    reset_optimizers: bool = True
    # Batch-norm statistics used when sampling: "eval" = running averages, "batch" = batch stats.
    sample_bn: Literal["eval", "batch"] = "eval"

    def validate(self, where: str) -> None:
        if any(d <= 0 for d in self.z_dims):
            raise ConfigError(f"{where}.z_dims must be positive, got {self.z_dims}")
        if self.width <= 0:
            raise ConfigError(f"{where}.width must be > 0, got {self.width}")
        if len(self.z_dims) != len(self.encoder.split) + 1:
            raise ConfigError(
                f"{where}.z_dims has {len(self.z_dims)} entries but encoder.split "
                f"{self.encoder.split} makes {len(self.encoder.split) + 1} levels: give one "
                f"noise size per level"
            )
        SGANEncoder(self.encoder.arch, self.encoder.split)  # checks the split names
        for k in ("adv_weight", "cond_weight", "ent_weight", "joint_coupling", "lr"):
            v = getattr(self, k)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{where}.{k} must be a finite number >= 0, got {v}")


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def _mnist_encoder_layers() -> list[tuple[str, nn.Module]]:
    """Spec 2.2: conv1-pool1-conv2-pool2-fc3-fc4, valid 5x5 convs, ReLU, inputs in [0, 1]."""
    return [
        ("conv1", nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU())),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Sequential(nn.Conv2d(32, 32, 5), nn.ReLU())),
        ("pool2", nn.MaxPool2d(2)),
        ("fc3", nn.Sequential(nn.Flatten(), nn.Linear(512, 256), nn.ReLU())),
        ("fc4", nn.Linear(256, 10)),  # logits; softmax lives in the losses
    ]


ENCODER_ARCHS = {"mnist": _mnist_encoder_layers}


class SGANEncoder(nn.Module):
    """A classifier whose layers are grouped into the stack's levels E_0 .. E_{N-1}."""

    def __init__(self, arch: str, split: list[str]) -> None:
        super().__init__()
        layers = ENCODER_ARCHS[arch]()
        self.layers = nn.ModuleDict(layers)
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
            with np.load(path, allow_pickle=False) as f:
                arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot read encoder weights {path}: {e}") from None
        params = []
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
# Generators and discriminators (spec 3.5, MNIST)
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
    """D/Q for a feature level: 2 x (Linear, LReLU) trunk, adversarial and sigmoid Q heads."""

    def __init__(self, in_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            linear_act(in_dim, hidden, lrelu(), bn=False),
            linear_act(hidden, hidden, lrelu(), bn=False),
        )
        self.adv = nn.Linear(hidden, 1)
        self.q = nn.Sequential(nn.Linear(hidden, z_dim), nn.Sigmoid())

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(h.flatten(1))
        return self.adv(t), self.q(t)


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

    def __init__(self, z_dim: int, width: float = 1.0) -> None:
        super().__init__()
        c = [max(1, round(k * width)) for k in (32, 64, 128)]
        self.trunk = nn.Sequential(
            conv_act(1, c[0], 5, 2, 2, lrelu()),  # 14x14
            conv_act(c[0], c[1], 5, 2, 2, lrelu()),  # 7x7
            conv_act(c[1], c[2], 5, 2, 2, lrelu()),  # 4x4
            nn.Flatten(),
            linear_act(c[2] * 16, 256, lrelu(), bn=False),
        )
        self.adv = nn.Linear(256, 1)
        self.q = nn.Sequential(nn.Linear(256, z_dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(x)
        return self.adv(t), self.q(t)


IMAGE_NETS = {"mnist": (MnistImageGenerator, MnistImageDiscriminator, (1, 28, 28))}



# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class SGAN(StackModel):
    """SGAN with N levels cut from a classifier (N = len(encoder.split) + 1)."""

    name = "sgan"
    Config = SGANConfig
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
        gens, discs = [], []
        for i in range(n):
            top_dim = info.num_classes if cfg.use_labels else 0
            cond_dim = top_dim if i == n - 1 else dims[i + 1]
            z = cfg.z_dims[i]
            if i == 0:
                gens.append(g_cls(cond_dim, z, cfg.width))
                discs.append(d_cls(z, cfg.width))
            else:
                gens.append(FeatureGenerator(cond_dim, z, dims[i], cfg.feature_hidden))
                discs.append(FeatureDiscriminator(dims[i], z, cfg.feature_disc_hidden))
        for g_net, d_net in zip(gens, discs, strict=True):
            init_normal_(g_net)
            if cfg.disc_init == "glorot":
                init_glorot_(d_net)
            else:
                init_normal_(d_net)
        self.G = nn.ModuleList(gens)
        self.D = nn.ModuleList(discs)
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

    def _adam(self, params) -> torch.optim.Optimizer:  # type: ignore[no-untyped-def]
        # The official Adam puts eps inside the square root; the difference is negligible.
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2))

    @classmethod
    def default_phases(cls, cfg: SGANConfig) -> dict[str, int]:
        return {"independent": 2000, "joint": 1000}

    # ---- setup: the pretrained encoder -----------------------------------------------------

    def setup(self, train: ImageDataset, evaluation: ImageDataset | None, log: LogFn) -> dict:
        ecfg = self.cfg.encoder
        if ecfg.weights:
            self.encoder.load_lasagne_npz(ecfg.weights)
            log(f"encoder: loaded {ecfg.weights}")
            out = {"encoder_source": str(ecfg.weights)}
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
        bs = ecfg.pretrain_batch_size
        for epoch in range(ecfg.pretrain_epochs):
            perm = torch.randperm(len(train), device="cpu").to(dev)
            total = 0.0
            for s in range(0, len(train) - bs + 1, bs):
                idx = perm[s : s + bs]
                loss = F.cross_entropy(enc(self.preprocess(x_all[idx])), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            mean = total / (len(train) // bs)
            log(f"encoder: epoch {epoch + 1}/{ecfg.pretrain_epochs} loss {mean:.4f}")
        enc.requires_grad_(False)
        return {"encoder_source": "pretrained", "encoder_epochs": ecfg.pretrain_epochs}

    # ---- data conventions ------------------------------------------------------------------

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 -> the encoder's input range (MNIST: raw pixels in [0, 1])."""
        return images.float() / 255.0

    # ---- training --------------------------------------------------------------------------

    def enter_phase(self, phase: str, fresh: bool) -> None:
        if not fresh:
            return  # resumed mid-phase: optimizer state and lr come from the checkpoint
        lr = self.cfg.joint_lr if phase == "joint" and self.cfg.joint_lr else self.cfg.lr
        for opt in self.optimizers.values():
            if self.cfg.reset_optimizers:
                opt.state.clear()
            for group in opt.param_groups:
                group["lr"] = lr

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
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Fakes and the condition each level was given (also its cond-loss target)."""
        n = self.levels
        fakes: list[torch.Tensor] = [torch.empty(0)] * n
        conds: list[torch.Tensor] = [torch.empty(0)] * n
        for i in reversed(range(n)):
            if i == n - 1:
                conds[i] = top
            elif joint:
                conds[i] = self._couple(fakes[i + 1])
            else:
                conds[i] = real[i + 1]
            fakes[i] = self.G[i](conds[i], zs[i])
        return fakes, conds

    def train_step(self, batch: dict[str, torch.Tensor], phase: str) -> dict[str, torch.Tensor]:
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

        # ---- discriminator step (all levels; real and fake in separate calls, as the code)
        zs = self._draw_z(b)
        with torch.no_grad():
            fakes, _ = self._levels(real, top, zs, joint)
        d_total = x.new_zeros(())
        for i in range(n):
            l_real, _ = self.D[i](real[i])
            l_fake, q = self.D[i](fakes[i])
            adv = losses.d_adversarial(l_real, l_fake)
            ent = losses.entropy(q, zs[i])
            d_total = d_total + adv + cfg.ent_weight * ent
            logs[f"d{i}_adv"] = adv.detach()
            logs[f"d{i}_ent"] = ent.detach()
        self.optimize(d_total, [f"D{i}" for i in range(n)])

        # ---- generator step (fresh noise; D's weights get no gradient)
        self.set_requires_grad(self.D, False)
        zs = self._draw_z(b)
        fakes, conds = self._levels(real, top, zs, joint)
        g_total = x.new_zeros(())
        for i in range(n):
            l_fake, q = self.D[i](fakes[i])
            adv = losses.g_adversarial(l_fake, cfg.g_loss)
            ent = losses.entropy(q, zs[i])
            pred = self.encoder.segment(i, fakes[i].view(b, *self.rep_shapes[i]))
            if i == n - 1:
                cond = losses.conditional_label(pred, y) if self.conditional else pred.new_zeros(())
            else:
                cond = losses.conditional_feature(pred.flatten(1), conds[i])
            g_total = g_total + cfg.adv_weight * adv + cfg.cond_weight * cond
            g_total = g_total + cfg.ent_weight * ent
            logs[f"g{i}_adv"] = adv.detach()
            logs[f"g{i}_cond"] = cond.detach()
            logs[f"g{i}_ent"] = ent.detach()
        self.optimize(g_total, [f"G{i}" for i in range(n)])
        self.set_requires_grad(self.D, True)
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
                inputs = self.draw_inputs(samples, [c % k] if self.conditional else None,
                                          fixed=others, generator=gen)
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
        return figs


@torch.no_grad()
def classifier_accuracy(model: nn.Module, preprocess, ds: ImageDataset, bs: int = 500) -> float:  # type: ignore[no-untyped-def]
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
