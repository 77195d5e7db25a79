from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganstack import losses
from ganstack.config import ConfigError, load_config
from ganstack.errors import GanstackError
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.models.stackgan_v1 import StackGANv1, StackGANv1Config

TEXT_DIM = 16
INFO = DataInfo((3, 64, 64), 0, "toy", TEXT_DIM)


def _cfg(**kw) -> StackGANv1Config:
    cfg = StackGANv1Config(
        stage1_size=16,
        stage2_size=64,
        z_dim=8,
        ef_dim=8,
        gf_dim=4,
        df_dim=4,
        r_num=1,
        caption_bank=8,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    cfg.validate("model")
    return cfg


def _batch(n: int = 6, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        "embeddings": torch.randn(n, 10, TEXT_DIM, generator=g),
    }


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- every variant builds, trains a step of each stage and samples ----------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},  # the PyTorch code (default)
        {"variant": "tf"},
        {"use_ca": False},  # ablation: no conditioning augmentation
        {"stage2_text": False},  # ablation: text only given to Stage-I
        {"stage2_uncond": False},  # PyTorch without Stage-II's unconditional head
        {"variant": "tf", "stage2_uncond": True, "d_condition": "mu", "ca": "linear"},
        {"caption_sampling": "mean4", "stage1_bn": "eval", "kl_weight": 1.0},
    ],
)
def test_variants_build_train_and_sample(kw):
    torch.manual_seed(0)
    m = StackGANv1(_cfg(**kw), INFO)
    cfg = m.cfg
    ca = (["ca1"] + (["ca2"] if cfg.stage2_text else [])) if cfg.use_ca else []
    assert m.input_names() == ["text", "z", *ca]
    assert m.image_outputs() == ["stage1", "image"]
    assert (m.netD2.uncond is not None) == (
        cfg.variant == "pytorch" if cfg.stage2_uncond is None else cfg.stage2_uncond
    )
    assert m.netD1.uncond is None
    assert (m.netG2.ca is None) == (not cfg.stage2_text)
    assert (m.netD1.text_fc is None) == (cfg.d_cond == "mu")
    # Before any stage has trained, sampling returns both stages.
    out = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert out["stage1"].shape == (3, 3, 16, 16) and out["image"].shape == (3, 3, 64, 64)
    for k in ("stage1", "image"):
        assert float(out[k].min()) >= 0 and float(out[k].max()) <= 1
    logs1 = m.train_step(_batch(), "stage1", Step(phase="stage1"))
    logs2 = m.train_step(_batch(seed=1), "stage2", Step(phase="stage2"))
    kl1 = {"g1_kl"} if cfg.use_ca else set()
    kl2 = {"g2_kl"} if cfg.use_ca and cfg.stage2_text else set()
    assert set(logs1) == {"d1", "g1", "g1_adv"} | kl1
    assert set(logs2) == {"d2", "g2", "g2_adv"} | kl2
    for v in (*logs1.values(), *logs2.values()):
        assert v.dim() == 0 and torch.isfinite(v) and not v.requires_grad
    if cfg.use_ca:
        assert float(logs1["g1"]) == pytest.approx(
            float(logs1["g1_adv"]) + cfg.kl_weight * float(logs1["g1_kl"]), rel=1e-5
        )
    out = m.sample(2)
    assert out["image"].shape == (2, 3, 64, 64)


def test_sampling_inputs_fix_and_vary_each_stage():
    torch.manual_seed(0)
    # Batch statistics: after two steps the running ones still shrink the outputs to ~0.
    m = StackGANv1(_cfg(gf_dim=16, sample_bn="batch"), INFO)
    for _ in range(2):
        m.train_step(_batch(), "stage1", Step(phase="stage1"))
        m.train_step(_batch(), "stage2", Step(phase="stage2"))
    m.fill_bank(_dataset_like())
    gen = torch.Generator().manual_seed(0)
    out = m.sample(4, fixed=["text", "z", "ca1", "ca2"], generator=gen)
    for k in ("stage1", "image"):  # every input fixed: one image
        assert torch.allclose(out[k], out[k][:1].expand_as(out[k]), atol=1e-5)
    # Only Stage-II's CA noise varies: Stage-I is shared, Stage-II differs.
    out = m.sample(4, fixed=["text", "z", "ca1"], generator=gen)
    assert torch.allclose(out["stage1"], out["stage1"][:1].expand_as(out["stage1"]), atol=1e-5)
    assert float((out["image"][0] - out["image"][1]).abs().max()) > 1e-4
    # The same seed gives the same samples.
    a = m.sample(3, generator=torch.Generator().manual_seed(5))
    b = m.sample(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["image"], b["image"])


def test_sizes_follow_the_config_128_ablation_and_paper_layout():
    # The paper's 128x128 ablation (64 -> 128): one up-block fewer in Stage-II's decoder.
    m = StackGANv1(_cfg(stage1_size=64, stage2_size=128), DataInfo((3, 128, 128), 0, "t", TEXT_DIM))
    ups = [x for x in m.netG2.decoder.modules() if isinstance(x, nn.Upsample)]
    assert len(ups) == 3
    out = m.sample(2)
    assert out["stage1"].shape == (2, 3, 64, 64) and out["image"].shape == (2, 3, 128, 128)
    # 64 -> 256 (paper): the join is at 16x16 and the decoder has 4 up-blocks.
    m = StackGANv1(_cfg(stage1_size=64, stage2_size=256), DataInfo((3, 256, 256), 0, "t", TEXT_DIM))
    assert len([x for x in m.netG2.decoder.modules() if isinstance(x, nn.Upsample)]) == 4
    with torch.no_grad():
        h = m.netG2.encoder(torch.zeros(2, 3, 64, 64))
    assert h.shape == (2, 16, 16, 16)  # 4 gf channels at 16x16
    assert m.netD2.encode(torch.zeros(2, 3, 256, 256)).shape[-2:] == (4, 4)


@pytest.mark.parametrize("variant", ["pytorch", "tf"])
def test_stage2_residual_block_has_a_relu_after_the_sum(variant):
    # Both official v1 codes apply a ReLU after the residual sum (StackGAN-Pytorch
    # code/model.py ResBlock.forward: out += residual; out = relu(out); the TF code's
    # stageII/model.py residual_block: add, then relu). One of the model's own Stage-II
    # blocks, given weights that make each channel independent and the arithmetic visible:
    # both 3x3 convs are a diagonal kernel with only the centre tap (conv1 2.0, conv2 1.5),
    # so on a 1x2 image each conv just scales; BN in eval mode with eps 0.
    m = StackGANv1(_cfg(variant=variant), INFO)
    block = m.netG2.res[0]
    conv1, bn1, _, conv2, bn2 = block.body
    c = conv1.in_channels
    with torch.no_grad():
        for conv, centre in ((conv1, 2.0), (conv2, 1.5)):
            conv.weight.zero_()
            conv.weight[range(c), range(c), 1, 1] = centre
        for bn, mean, var, gamma, beta in ((bn1, 0.0, 4.0, 1.0, 1.0), (bn2, 1.0, 1.0, 2.0, 0.0)):
            bn.running_mean.fill_(mean)
            bn.running_var.fill_(var)
            bn.weight.fill_(gamma)
            bn.bias.fill_(beta)
            bn.eps = 0.0
    block.eval()
    x = torch.tensor([1.0, -3.0]).view(1, 1, 1, 2).expand(1, c, 1, 2)
    # By hand, for x = [1, -3]:
    #   conv1: 2x                      = [2, -6]
    #   BN1:   (h - 0) / sqrt(4) * 1 + 1 = [2, -2];  ReLU -> [2, 0]
    #   conv2: 1.5 y                   = [3, 0]
    #   BN2:   (y - 1) / sqrt(1) * 2 + 0 = [4, -2]
    #   sum:   x + body                = [5, -5];  ReLU -> [5, 0]
    # Without the ReLU after the sum the second value would be -5.
    with torch.no_grad():
        out = block(x)
    assert torch.equal(out, torch.tensor([5.0, 0.0]).view(1, 1, 1, 2).expand(1, c, 1, 2))


def test_stackgan_v2_residual_blocks_keep_no_relu_after_the_sum():
    # StackGAN-v2's code (code/model.py ResBlock) has no activation after the sum; the v1 fix
    # must not reach it.
    from ganstack.models.stackgan_v2 import StackGANv2, StackGANv2Config
    from ganstack.nn.stackgan import ResBlock

    cfg = StackGANv2Config(base_size=8, branches=2, gf_dim=8, df_dim=4, ef_dim=8, z_dim=8, r_num=1)
    cfg.validate("model")
    m = StackGANv2(cfg, DataInfo((3, 16, 16), 0, "toy", TEXT_DIM))
    blocks = [x for x in m.modules() if isinstance(x, ResBlock)]
    assert blocks and not any(b.relu_after for b in blocks)


def test_figures():
    torch.manual_seed(0)
    m = StackGANv1(_cfg(), INFO)
    m.fill_bank(_dataset_like())
    figs = m.figures(torch.Generator().manual_seed(0))
    assert set(figs) == {"vary_z", "vary_text", "stage1", "scales"}
    assert figs["vary_z"].shape == (8, 10, 3, 64, 64)
    assert figs["stage1"].shape == (8, 10, 3, 16, 16)
    assert figs["scales"].shape == (8, 2, 3, 64, 64)


def _dataset_like():
    class _DS:
        extras = {"embeddings": torch.randn(20, 10, TEXT_DIM)}

    return _DS()


# ---- stage-wise training ----------------------------------------------------------------------


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_buffers()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module, buffers: bool = False) -> bool:
    now = dict(module.named_buffers() if buffers else module.named_parameters())
    return any(not torch.equal(before[k], now[k]) for k in before)


@pytest.mark.parametrize("stage1_bn", ["train", "eval"])
def test_each_stage_trains_only_its_own_networks(stage1_bn):
    torch.manual_seed(0)
    m = StackGANv1(_cfg(stage1_bn=stage1_bn), INFO)
    g2, d2, g2_buf = _params(m.netG2), _params(m.netD2), _buffers(m.netG2)
    m.train_step(_batch(), "stage1", Step(phase="stage1"))
    assert not _changed(g2, m.netG2) and not _changed(d2, m.netD2)
    assert not _changed(g2_buf, m.netG2, buffers=True)
    g1, d1, g1_buf = _params(m.netG1), _params(m.netD1), _buffers(m.netG1)
    g2, d2 = _params(m.netG2), _params(m.netD2)
    m.zero_grad(set_to_none=True)
    m.train_step(_batch(seed=1), "stage2", Step(phase="stage2"))
    # Stage-I is frozen: its weights never move ...
    assert not _changed(g1, m.netG1) and not _changed(d1, m.netD1)
    assert all(p.grad is None for p in [*m.netG1.parameters(), *m.netD1.parameters()])
    # ... but, as the code, its BN runs on batch statistics (running averages updated) unless
    # stage1_bn=eval.
    moved = any(
        not torch.equal(g1_buf[k], v) for k, v in m.netG1.named_buffers() if "running_mean" in k
    )
    assert moved == (stage1_bn == "train")
    assert _changed(g2, m.netG2) and _changed(d2, m.netD2)


def test_stage2_sees_the_frozen_stage1_output_for_the_same_z():
    torch.manual_seed(0)
    m = StackGANv1(_cfg(stage1_bn="eval", use_ca=False), INFO)  # no CA noise: deterministic
    m.eval()
    seen = {}
    m.netG2.encoder.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    z, emb = torch.randn(3, 8), torch.randn(3, TEXT_DIM)
    with torch.no_grad():
        out = m.generate({"z": z, "text": emb})
        s1, _, _ = m.netG1(z, emb)
    assert torch.allclose(seen["x"], s1) and torch.allclose(out["stage1"], (s1 + 1) / 2)


def test_learning_rate_halves_at_the_configured_steps():
    torch.manual_seed(0)
    lr = 2e-4
    m = StackGANv1(_cfg(lr_decay_every=2, stage2_lr_decay_every=3), INFO)

    def lrs(phase, t):  # the rates of a stage's networks at step t (0-based) of a phase
        step = Step(100 + t, phase, t)
        return [m.lr(f"{n}{s}", step) for s in "12" for n in "gd"]

    # Stage I's rate at its step t is lr / 2^(t // 2); Stage II's networks keep their own.
    assert [lrs("stage1", t) for t in range(5)] == [
        [r, r, None, None] for r in (lr, lr, lr / 2, lr / 2, lr / 4)
    ]
    assert [lrs("stage2", t) for t in range(4)] == [
        [None, None, r, r] for r in (lr, lr, lr, lr / 2)
    ]
    assert m.lr_at(1, 13) == lr / 64
    m0 = StackGANv1(_cfg(lr_decay_every=0), INFO)
    assert m0.lr_at(1, 10**6) == m0.lr_at(2, 10**6) == lr


# ---- the matching-aware discriminator loss ----------------------------------------------------


class ColourD(nn.Module):
    """A hand-made matching-aware D. Images are solid colours; the text is a one-hot colour.
    Its code h is the image's mean colour in [0, 1]; the conditional logit is
    k (2 <h, text> - 1): +k for a real image with its own colour, -k for another colour, and
    -k/2 for the (dim, 0.25-bright) fakes; the unconditional one k (2 max(h) - 1)."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def encode(self, x):
        return (x.mean((2, 3)) + 1) / 2

    def cond_logits(self, h, cond):
        return self.k * (2 * (h * cond).sum(1) - 1)

    def uncond_logits(self, h):
        return self.k * (2 * h.max(1).values - 1)


def _colour_pairs(n: int = 6):
    colour = torch.arange(n) % 3
    onehot = nn.functional.one_hot(colour, 3).float()
    real = (onehot * 2 - 1)[:, :, None, None].expand(n, 3, 8, 8)
    fake = (onehot * 0.5 - 1)[:, :, None, None].expand(n, 3, 8, 8)  # 0.25 bright
    return real, fake, onehot


@pytest.mark.parametrize("uncond", [False, True])
def test_matching_aware_loss_ranks_the_pairs(uncond):
    real, fake, text = _colour_pairs()

    def loss_of(k: float):
        d = ColourD(k)
        lg = StackGANv1.d_logits(d, real, fake, text)
        if not uncond:
            lg["real_u"] = lg["fake_u"] = None
        return lg, losses.matching_aware_d_v1(
            lg["real"], lg["wrong"], lg["fake"], lg["real_u"], lg["fake_u"]
        )

    # Mismatched pairs: real image i-1 with text i (the batch rolled by one).
    lg, _ = loss_of(1.0)
    h = ColourD(1.0).encode(real)
    assert torch.allclose(lg["wrong"], ColourD(1.0).cond_logits(h.roll(1, 0), text))
    chance = 2 * math.log(2)  # the loss of a D that outputs 0 for every pair
    zero = torch.zeros(6)
    assert float(
        losses.matching_aware_d_v1(zero, zero, zero, *((zero, zero) if uncond else (None, None)))
    ) == pytest.approx(chance)
    previous = chance
    for k in (0.5, 2.0, 8.0):
        lg, loss = loss_of(k)
        # A D that ranks real/matching above real/mismatched and fake/matching ...
        assert bool((lg["real"] > 0).all() and (lg["wrong"] < 0).all() and (lg["fake"] < 0).all())
        # ... has a loss between the bounds its smallest and largest margins give (each
        # term is softplus(-margin) and the weights sum to 2), below chance, and falling as
        # the D grows more confident.
        pos = [lg["real"]] + ([lg["real_u"]] if uncond else [])
        neg = [lg["wrong"], lg["fake"]] + ([lg["fake_u"]] if uncond else [])
        margins = torch.cat(pos + [-x for x in neg])
        lo = 2 * float(nn.functional.softplus(-margins.max()))
        hi = 2 * float(nn.functional.softplus(-margins.min()))
        assert lo - 1e-6 <= float(loss) <= hi + 1e-6
        assert float(loss) < previous
        previous = float(loss)
        # The same D with the conditional ranking reversed is worse than chance.
        _, anti = loss_of(-k)
        assert float(anti) > chance


def test_matching_aware_loss_weights_follow_the_code():
    r, w, f, ru, fu = (torch.tensor([v]) for v in (0.3, -0.2, 0.1, 0.7, -0.4))
    bce = losses.bce
    assert float(losses.matching_aware_d_v1(r, w, f)) == pytest.approx(
        float(bce(r, 1) + 0.5 * (bce(w, 0) + bce(f, 0)))
    )
    assert float(losses.matching_aware_d_v1(r, w, f, ru, fu)) == pytest.approx(
        float(0.5 * (bce(r, 1) + bce(ru, 1)) + (bce(f, 0) + bce(w, 0) + bce(fu, 0)) / 3)
    )
    with pytest.raises(ValueError):
        losses.matching_aware_d_v1(r, w, f, ru, None)


# ---- through the trainer ----------------------------------------------------------------------


TINY = [
    "data.num_images=48",
    "data.eval_size=24",
    "data.text_dim=32",
    "model.gf_dim=4",
    "model.df_dim=4",
    "model.ef_dim=8",
    "model.z_dim=8",
    "model.r_num=1",
    "model.caption_bank=8",
    "model.lr_decay_every=2",
    "model.stage2_lr_decay_every=2",
    "train.batch_size=8",
    "train.phases.stage1=3",
    "train.phases.stage2=3",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "train.num_threads=1",
    "eval.n=48",
]


def test_bundled_configs_build():
    cfg = load_config("stackgan-v1-shapes")
    assert cfg.model.name == "stackgan_v1" and list(cfg.train.phases) == ["stage1", "stage2"]
    assert cfg.data.resolution == cfg.model.stage2_size == 64
    m = build_model(cfg.model, DataInfo((3, 64, 64), 0, "shapes", 256))
    assert isinstance(m, StackGANv1)
    for name, variant in (("birds", "tf"), ("flowers", "tf"), ("coco", "pytorch")):
        c = load_config(f"stackgan-v1-{name}")
        assert c.model.variant == variant and c.model.stage2_size == c.data.resolution == 256
        assert c.model.stage1_size == 64


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.stage1_size=24", "stage1_size must be a power of two"),
        ("model.stage1_size=8", "stage1_size must be a power of two"),
        ("model.stage2_size=48", "stage2_size must be stage1_size"),
        ("model.stage2_size=16", "stage2_size must be stage1_size"),
        ("model.gf_dim=2", "gf_dim"),
        ("model.gf_dim=0", "gf_dim must be > 0"),
        ("model.variant=keras", "expected one of"),
        ("model.r_num=-1", "r_num must be >= 0"),
        ("model.kl_weight=-1", "kl_weight must be >= 0"),
        ("model.lr=0", "lr must be > 0"),
        ("model.beta1=1.0", "beta1"),
        ("model.lr_decay_every=-5", "lr_decay_every"),
        ("model.stage2_lr_decay_every=-1", "stage2_lr_decay_every"),
        ("model.stage1_bn=frozen", "expected one of"),
        ("model.stage_size=64", "Did you mean"),
        ("train.phases.joint=5", "train.phases.joint"),
    ],
)
def test_bad_configs_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("stackgan-v1-shapes", [override])


def test_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="df_dim must be even"):
        load_config("stackgan-v1-shapes", ["model.variant=tf", "model.df_dim=5"])
    with pytest.raises(ConfigError, match="data.resolution=64"):
        StackGANv1(_cfg(), DataInfo((3, 32, 32), 0, "toy", TEXT_DIM))
    with pytest.raises(ConfigError, match="captioned data"):
        StackGANv1(_cfg(), DataInfo((3, 64, 64), 10, "mnist", 0))
    m = StackGANv1(_cfg(), INFO)
    with pytest.raises(GanstackError, match="phases"):
        m.train_step(_batch(), "joint", Step(phase="joint"))
