"""HDGAN: side outputs, the nested discriminators' heads, the least-squares losses, training
through the trainer, the paper-size networks and config errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from ganstack.cli import main
from ganstack.config import ConfigError, load_config
from ganstack.data import Batcher, load_dataset
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.models.hdgan import HDGAN, kl_log_sigma, ls_loss
from ganstack.run import load
from ganstack.train.trainer import Trainer

from .conftest import REFERENCE
from .helpers import assert_resume_is_exact_from_former_names

TINY = [
    "data.resolution=32",
    "data.num_images=96",
    "data.eval_size=48",
    "data.text_dim=32",
    "model.base_size=16",
    "model.side_outputs=2",
    "model.gf_dim=2",
    "model.df_dim=4",
    "model.ef_dim=8",
    "model.z_dim=8",
    "model.halve_at=[8,32]",
    "model.caption_bank=16",
    "train.batch_size=8",
    "train.phases.joint=4",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "eval.n=48",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(*extra: str):
    cfg = load_config("hdgan-shapes", TINY + list(extra))
    train, ev = load_dataset(cfg.data)
    model = build_model(cfg.model, DataInfo.of(train))
    model.setup(train, ev, lambda _m: None)
    return cfg, model, train


def _step(phase_step: int = 0, phase: str = "joint", batch: int = 8, data: int = 48):
    return Step(
        global_step=phase_step,
        phase=phase,
        phase_step=phase_step,
        batch_size=batch,
        world_size=1,
        dataset_size=data,
    )


def _paper(name: str, *extra: str) -> HDGAN:
    cfg = load_config(name, list(extra))
    size = cfg.model.out_size()
    with torch.device("meta"):
        return HDGAN(cfg.model, DataInfo((3, size, size), 0, "meta", 1024))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_side_output_and_the_trunk():
    cfg, model, _ = _model(
        "model.side_outputs=3", "data.resolution=64", "model.gf_dim=4", "model.halve_at=[8,32,64]"
    )
    assert model.sizes == [16, 32, 64]
    assert model.image_outputs() == ["level2", "level1", "image"]
    assert model.input_names() == ["text", "z", "ca"]
    out = model.sample(5)
    assert [tuple(out[k].shape) for k in model.image_outputs()] == [
        (5, 3, 16, 16),
        (5, 3, 32, 32),
        (5, 3, 64, 64),
    ]
    assert all(0 <= float(out[k].min()) and float(out[k].max()) <= 1 for k in model.image_outputs())
    # Trunk channels: 8 gf = 32 at 4x4, halved at 8, 32 and 64 (no conv at 16).
    assert cfg.model.channels() == {4: 32, 8: 16, 16: 16, 32: 8, 64: 4}
    assert [h[1].in_channels for h in model.netG.heads] == [16, 8, 4]
    # Fixing every input fixes every output; the figures show each side output.
    fixed = model.sample(3, fixed=["text", "z", "ca"])
    assert all(torch.equal(fixed[k][0], fixed[k][2]) for k in model.image_outputs())
    figs = model.figures(torch.Generator().manual_seed(0))
    assert {"vary_z", "vary_text", "vary_z_level2", "vary_z_level1", "scales"} <= set(figs)
    assert figs["scales"].shape[:2] == (8, 3) and figs["vary_z_level2"].shape[-1] == 16


def test_discriminator_heads_pair_and_patch_maps():
    cfg, model, _ = _model(
        "model.side_outputs=3", "data.resolution=64", "model.gf_dim=4", "model.halve_at=[8,32,64]"
    )
    assert cfg.model.patches() == [1, 1, 5]  # the code: 1x1, 1x1, 5x5 image scores
    emb = torch.randn(4, 32)
    for d, s, r in zip(model.netDs, (16, 32, 64), (1, 1, 5), strict=True):
        assert d.encoder(torch.zeros(4, 3, s, s)).shape == (4, 16, 8, 8)
        pair, image = d(torch.randn(4, 3, s, s), emb)
        assert pair.shape == (4,) and image.shape == (4, r, r)
    # The pair head reads the text, the image head does not.
    d = model.netDs[0].eval()
    x = torch.randn(4, 3, 16, 16)
    p1, i1 = d(x, emb)
    p2, i2 = d(x, torch.randn(4, 32))
    assert not torch.allclose(p1, p2) and torch.equal(i1, i2)
    # The paper's Fig. 3 sizes: 1, 3, 5.
    _, paper, _ = _model(
        "model.side_outputs=3",
        "data.resolution=64",
        "model.gf_dim=4",
        "model.halve_at=[8,32,64]",
        "model.image_patch=[1,3,5]",
    )
    assert [
        d(torch.randn(2, 3, s, s), emb[:2])[1].shape[-1]
        for d, s in zip(paper.netDs, (16, 32, 64), strict=True)
    ] == [1, 3, 5]


def test_least_squares_losses_by_hand():
    s = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    # (1-1)^2 + (0.5-1)^2 + (0-1)^2 + (2-1)^2 = 0 + .25 + 1 + 1 over 4 elements.
    assert float(ls_loss(s, 1)) == pytest.approx(2.25 / 4)
    assert float(ls_loss(s, 0)) == pytest.approx((1 + 0.25 + 0 + 4) / 4)
    # KL of N(mu, sigma) to N(0, 1) with log sigma: 0 at (0, 0); 0.5 mu^2 for sigma 1;
    # 0.5 (e^2 - 1) - 1 at log sigma = 1.
    z = torch.zeros(2, 3)
    assert float(kl_log_sigma(z, z)) == 0.0
    assert float(kl_log_sigma(z + 2, z)) == pytest.approx(2.0)
    assert float(kl_log_sigma(z, z + 1)) == pytest.approx(0.5 * (torch.e**2 - 1) - 1)


def test_d_loss_is_the_code_formula_and_the_paper_option():
    _, model, _ = _model()

    class Fixed(torch.nn.Module):
        """A 'discriminator' whose scores are set per image batch: real 0.8, fake 0.1, wrong
        (the rolled reals) 0.3; image maps 0.6 / 0.2 / 0.9; mismatched text: pair 0.4."""

        def forward(self, x, emb):
            kind = x.flatten(1)[:, 0]
            pair = torch.where(kind == 1, 0.8, torch.where(kind == 0, 0.1, 0.3))
            image = torch.where(kind == 1, 0.6, torch.where(kind == 0, 0.2, 0.9))
            if bool(emb[0, 0] < 0):
                pair = torch.full_like(pair, 0.4)
            return pair, image[:, None, None].expand(-1, 2, 2)

        def pair_score(self, x, emb):
            return self.forward(x, emb)[0]

    real = torch.ones(4, 3, 2, 2)
    real[0] = 2.0  # rolled: the "wrong" image of sample 1 differs from its own
    real[2:] = 2.0
    fake = torch.zeros(4, 3, 2, 2)
    emb = torch.ones(4, 5)
    pair, image = model.d_losses(Fixed(), real, fake, emb)
    # code: MSE(P_r,1) + 1/2 [MSE(P_w,0) + MSE(P_f,0)]; MSE(L_f,0) + 1/2 [MSE(L_w,1) + MSE(L_r,1)]
    d = Fixed()
    pr, lr = d(real, emb)
    pw, lw = d(real.roll(1, 0), emb)
    pf, lf = d(fake, emb)
    mse = torch.nn.functional.mse_loss
    want_pair = mse(pr, torch.ones_like(pr)) + 0.5 * (
        mse(pw, torch.zeros_like(pw)) + mse(pf, torch.zeros_like(pf))
    )
    want_image = mse(lf, torch.zeros_like(lf)) + 0.5 * (
        mse(lw, torch.ones_like(lw)) + mse(lr, torch.ones_like(lr))
    )
    assert torch.allclose(pair, want_pair) and torch.allclose(image, want_image)
    # paper: unit weights, (real, mismatched text) as the pair negative, no wrong images for
    # the image head.
    model.cfg.objective = "paper"
    emb2 = emb.clone()
    emb2[1:, 0] = -1.0  # after the roll, sample 0's text is another sample's (negative)
    pair, image = model.d_losses(Fixed(), real, fake, emb2)
    pr, lr = d(real, emb2)
    pf, lf = d(fake, emb2)
    pm = d.pair_score(real, emb2.roll(1, 0))
    assert torch.allclose(
        pair,
        mse(pr, torch.ones_like(pr))
        + mse(pf, torch.zeros_like(pf))
        + mse(pm, torch.zeros_like(pm)),
    )
    assert torch.allclose(image, mse(lr, torch.ones_like(lr)) + mse(lf, torch.zeros_like(lf)))


def test_train_step_updates_g_and_every_d_and_logs_each_term():
    _, model, train = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model.train_step(Batcher(train, 8, 0).batch(0), "joint", _step())
    assert {
        "d0_pair",
        "d0_image",
        "d1_pair",
        "d1_image",
        "d",
        "g0_pair",
        "g0_image",
        "g1_pair",
        "g1_image",
        "g_kl",
        "g",
    } <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    for prefix in ("netG.", "netDs.0.", "netDs.1."):
        changed = [
            k
            for k in before
            if k.startswith(prefix)
            and before[k].is_floating_point()
            and not torch.equal(before[k], model.state_dict()[k])
        ]
        assert changed, prefix
    assert set(model.optimizers) == {"G", "D"}


def test_a_few_steps_move_the_losses(tmp_path):
    cfg = load_config(
        "hdgan-shapes", TINY + ["train.phases.joint=8", "train.ema=0.9", "model.lr_decay_epochs=1"]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.fit() == "done"
    # The trainer applied the model's schedule: 48 training images, batch 8, so the last step
    # (7 done before it) is in the 2nd epoch: halved at 1-based epochs 1 and 2.
    assert {g["lr"] for o in trainer.model.optimizers.values() for g in o.param_groups} == {
        2e-4 / 4
    }
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for key in ("loss/d", "loss/g", "loss/g_kl"):
        values = [r[key] for r in rows]
        assert all(v == v and abs(v) < 1e3 for v in values), key
        assert len(set(values)) > 1, key
    # The discriminators learn: their loss falls from the first steps to the last.
    assert sum(r["loss/d"] for r in rows[-3:]) < sum(r["loss/d"] for r in rows[:3])


def test_sample_cli_and_eval_read_every_side_output(tmp_path):
    cfg = load_config("hdgan-shapes", TINY)
    run_dir = tmp_path / "run"
    with Trainer(cfg, run_dir) as t:
        t.fit()
        figs = t.write_figures()
    assert {p.name for p in figs} >= {
        "vary_z.png",
        "vary_text.png",
        "vary_z_level1.png",
        "scales.png",
    }
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--n",
                "3",
                "--caption",
                "a red star",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["level1"].shape == (3, 16, 16, 3)
    m = load(run_dir).evaluate(metrics=["fid_scales", "caption"])["metrics"]
    assert any(k.startswith("fid48_") and k.endswith("_level1") for k in m)
    assert any(k.startswith("caption_attr") for k in m)


def test_learning_rate_halves_at_the_codes_epochs():
    _, model, _ = _model("model.lr_decay_epochs=2")
    # 48 images a pass, batch 8: 6 steps an epoch. Code: halved at the start of 1-based
    # epochs 2, 4, ...: after 1 epoch (step 6), after 3 (step 18).
    lrs = [model.lr("G", _step(t)) for t in (0, 5, 6, 17, 18)]
    assert lrs == [2e-4, 2e-4, 1e-4, 1e-4, 5e-5]
    assert model.lr("D", _step(6)) == 1e-4
    _, flat, _ = _model("model.lr_decay_epochs=0")
    assert flat.lr("G", _step(10_000)) == 2e-4


def test_super_output_phase_trains_only_the_512_part():
    cfg, model, train = _model("data.resolution=64", "model.super_output=true")
    assert model.image_outputs() == ["level2", "level1", "image"]
    assert model.default_phases(cfg.model) == {"joint": 442_500, "super": 70_800}
    assert [d.patch for d in model.netDs] == [1, 5, 5]  # a D at the super output (paper)
    out = model.sample(2)
    assert out["image"].shape[-1] == 64 and out["level1"].shape[-1] == 32
    batch = Batcher(train, 8, 0).batch(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Phase joint: the super part and its D stay as they are.
    model.train_step(batch, "joint", _step())
    after = model.state_dict()
    moved = {
        k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])
    }
    assert not any(k.startswith(("netG.super.", "netDs.2.")) for k in moved)
    assert any(k.startswith("netG.levels.") for k in moved)
    # Phase super: L1 + the super D's terms, only the super part of G learns (its weights;
    # the frozen trunk's batch-norm statistics still follow the batches, as the code).
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model.train_step(batch, "super", _step(phase="super"))
    # The super output is level 0 (image); the side outputs are levels 2 and 1.
    assert {"g_l1", "g0_pair", "g0_image", "d0_pair", "d1_pair"} <= set(out)
    assert "g_kl" not in out and "g1_pair" not in out
    after = model.state_dict()
    g_params = {f"netG.{n}" for n, _ in model.netG.named_parameters()}
    moved = {k for k in g_params if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("netG.super.") for k in moved)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("netDs.2."))
    # Without the paper's 512 discriminator: the L1 term alone.
    _, l1_only, train = _model(
        "data.resolution=64", "model.super_output=true", "model.super_adversarial=false"
    )
    assert len(l1_only.netDs) == 2
    out = l1_only.train_step(Batcher(train, 8, 0).batch(0), "super", _step(phase="super"))
    assert torch.allclose(out["g"], out["g_l1"])


def test_paper_configs_have_the_official_parameter_counts():
    # Counted by instantiating ypxie/HDGan's Generator(1024, 100, 128, 128, num_resblock=1)
    # and Discriminator(3, 128, 1024, 128) (test_same_outputs_as_the_official_networks
    # checks layer by layer), and by hand from hd_networks.py's layer list.
    for name in ("hdgan-birds", "hdgan-flowers", "hdgan-coco"):
        m = _paper(name)
        assert m.sizes == [64, 128, 256]
        assert _count(m.netG) == 41_378_496, name
        assert _count(m.netDs) == 25_693_606, name
        assert [d.patch for d in m.netDs] == [1, 1, 5]
    assert load_config("hdgan-coco").model.kl_weight == 2.0
    assert load_config("hdgan-birds").model.kl_weight == 4.0
    # The 512 variant's extra part (GeneratorSuperL1Loss minus its generator_256): 2
    # ResBlock(64), conv 64 -> 32 + BN, conv 32 -> 3.
    big = _paper("hdgan-birds", "model.super_output=true", "data.resolution=512")
    assert _count(big.netG.super) == 2 * (2 * 9 * 64 * 64 + 4 * 64) + 9 * 64 * 32 + 64 + 9 * 32 * 3


@pytest.mark.skipif(
    not (REFERENCE / "HDGan" / "HDGan" / "models" / "hd_networks.py").exists(),
    reason="the official code is not present: put ypxie/HDGan's checkout at "
    "$GANSTACK_REFERENCE_DIR/HDGan",
)
def test_same_outputs_as_the_official_networks(monkeypatch):
    """With the official networks' weights copied in, the outputs are the same (eval mode)."""
    monkeypatch.syspath_prepend(str(REFERENCE / "HDGan"))
    ref = pytest.importorskip("HDGan.models.hd_networks")
    torch.manual_seed(0)
    m = HDGAN(load_config("hdgan-birds").model, DataInfo((3, 256, 256), 0, "x", 1024)).eval()
    g = ref.Generator(1024, 100, 128, 128, num_resblock=1).eval()
    d = ref.Discriminator(3, 128, 1024, 128).eval()
    for mod in [*g.modules(), *d.modules()]:
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)

    def tensors(module, prefix):
        return [
            v
            for k, v in module.state_dict().items()
            if k.startswith(prefix) and "num_batches_tracked" not in k
        ]

    def copy(dst, src):
        assert [t.shape for t in dst] == [t.shape for t in src]
        with torch.no_grad():
            for a, b in zip(dst, src, strict=True):
                a.copy_(b)

    sizes = [4, 8, 16, 32, 64, 128, 256]
    copy(
        tensors(m.netG, "ca.") + tensors(m.netG, "fc."),
        tensors(g, "condEmbedding.") + tensors(g, "vec_to_tensor."),
    )
    for i, s in enumerate(sizes):
        copy(tensors(m.netG, f"levels.{i}."), tensors(g, f"scale_{s}."))
    for i, s in enumerate((64, 128, 256)):
        copy(tensors(m.netG, f"heads.{i}."), tensors(g, f"tensor_to_img_{s}."))
        md = m.netDs[i]
        copy(
            tensors(md, "encoder.")
            + tensors(md, "squeeze.")
            + tensors(md, "text.")
            + tensors(md, "pair.")
            + tensors(md, "image."),
            tensors(d, f"img_encoder_{s}.")
            + (tensors(d, "pre_encode.") if s == 256 else [])
            + tensors(d, f"context_emb_pipe_{s}.")
            + tensors(d, f"pair_disc_{s}.")
            + tensors(d, f"local_img_disc_{s}."),
        )
    eps, emb, z = torch.randn(2, 128), torch.randn(2, 1024), torch.randn(2, 100)
    # The official CA draws its noise on the GPU: give it ours.
    monkeypatch.setattr(
        ref.condEmbedding,
        "sample_encoded_context",
        lambda self, mean, log_sigma, kl_loss=False: mean + eps * log_sigma.exp(),
    )
    with torch.no_grad():
        *want, _, _ = g(emb, z)
        got, _, _ = m.netG(z, emb, eps)
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
        for i, s in enumerate((64, 128, 256)):
            x = torch.randn(3, 3, s, s)
            p_ref, l_ref = d(x, emb[:1].expand(3, -1))
            p, patch = m.netDs[i](x, emb[:1].expand(3, -1))
            assert torch.allclose(p, p_ref.flatten(), atol=1e-6)
            assert torch.allclose(patch, l_ref[:, 0], atol=1e-6)
    sys.modules.pop("HDGan.models.hd_networks", None)


def test_config_errors_are_config_errors():
    with pytest.raises(
        ConfigError,
        match=r"makes 32x32 images, but the data is 64x64; set "
        r"data.resolution=32",
    ):
        _model("data.resolution=64")
    with pytest.raises(ConfigError, match="captioned data"):
        build_model(load_config("hdgan-shapes", TINY).model, DataInfo((3, 32, 32), 0, "plain", 0))
    with pytest.raises(ConfigError, match="power of two >= 16"):
        load_config("hdgan-shapes", ["model.base_size=8"])
    with pytest.raises(ConfigError, match="power of two >= 16"):
        load_config("hdgan-shapes", ["model.base_size=24"])
    with pytest.raises(ConfigError, match="one R per discriminator"):
        load_config("hdgan-shapes", ["model.image_patch=[1,5]"])
    with pytest.raises(ConfigError, match=r"in 1\.\.8"):
        load_config("hdgan-shapes", ["model.image_patch=[1,1,9]"])
    with pytest.raises(ConfigError, match="gf_dim"):
        load_config("hdgan-shapes", ["model.gf_dim=1", "model.halve_at=[8,16,32,64]"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_config("hdgan-shapes", ["model.df_dim=6"])
    with pytest.raises(ConfigError, match="halve_at"):
        load_config("hdgan-shapes", ["model.halve_at=[12]"])
    with pytest.raises(ConfigError, match="objective"):
        load_config("hdgan-shapes", ["model.objective=both"])
    with pytest.raises(ConfigError, match="kl_weight"):
        load_config("hdgan-shapes", ["model.kl_weight=-1"])
    with pytest.raises(ConfigError, match="side_outputs"):
        load_config("hdgan-shapes", ["model.side_outputs=0"])


def test_a_checkpoint_with_the_former_names_resumes_exactly(tmp_path, caplog):
    """Checkpoints written before the level vocabulary name the optimizers ``g``, ``d`` and
    ``g_super``: they load under ``G``, ``D`` and ``G_super``, bit for bit."""
    cfg = load_config(
        "hdgan-shapes",
        TINY
        + [
            "data.resolution=64",
            "model.super_output=true",
            "train.phases.joint=2",
            "train.phases.super=2",
        ],
    )
    former = {"G": "g", "D": "d", "G_super": "g_super"}
    assert_resume_is_exact_from_former_names(cfg, tmp_path, 3, former, caplog)
