"""StackGAN-v2: the tree, its losses, training through the trainer, sampling from captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganstack import losses
from ganstack.cli import main
from ganstack.config import ConfigError, load_config
from ganstack.data import Batcher, load_dataset
from ganstack.metrics.evaluate import caption_consistency
from ganstack.models import DataInfo, build_model
from ganstack.models.base import Step
from ganstack.run import load
from ganstack.train.trainer import Trainer

from .helpers import assert_resume_is_exact_from_former_names

TINY = [
    "data.resolution=16",
    "data.num_images=96",
    "data.eval_size=48",
    "data.text_dim=32",
    "model.base_size=8",
    "model.branches=2",
    "model.gf_dim=8",
    "model.df_dim=4",
    "model.ef_dim=8",
    "model.z_dim=8",
    "model.r_num=1",
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
    cfg = load_config("stackgan-v2-shapes", TINY + list(extra))
    train, ev = load_dataset(cfg.data)
    model = build_model(cfg.model, DataInfo.of(train))
    model.setup(train, ev, lambda _m: None)
    return cfg, model, train


def test_tree_shapes_scales_and_channels():
    cfg, model, train = _model("model.branches=3", "model.base_size=4", "model.gf_dim=8")
    assert model.sizes == [4, 8, 16]
    out = model.sample(5)
    assert [tuple(out[k].shape) for k in model.image_outputs()] == [
        (5, 3, 4, 4),
        (5, 3, 8, 8),
        (5, 3, 16, 16),
    ]
    assert all(0 <= float(out[k].min()) and float(out[k].max()) <= 1 for k in model.image_outputs())
    assert model.input_names() == ["text", "z", "ca"]
    # Named by level (docs/architecture.md): netDs[0], the coarsest, is level 2's D.
    assert model.image_outputs() == ["level2", "level1", "image"]
    assert list(model.optimizers) == ["G", "D2", "D1", "D0"]
    for j, d in enumerate(model.netDs):
        held = model.optimizers[f"D{2 - j}"].param_groups[0]["params"]
        assert [id(p) for p in held] == [id(p) for p in d.parameters()]
    # The paper-size tree: channels 64 -> 32 -> 16 at 64/128/256 (StackGAN-v2 code/model.py), D
    # ends at 4x4.
    info = DataInfo((3, 256, 256), 0, "birds", 1024)
    full = build_model(load_config("stackgan-v2-birds", ["model.init=default"]).model, info)
    assert full.netG.stages[0].ngf == 1024
    assert [h[0].in_channels for h in full.netG.heads] == [64, 32, 16]
    for d, s in zip(full.netDs, (64, 128, 256), strict=True):
        assert d.trunk(torch.zeros(1, 3, s, s)).shape == (1, 512, 4, 4)


def test_matching_aware_d_loss_is_the_code_formula():
    r, w, f = torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([-3.0])
    full = losses.matching_aware_d(r, r, w, r, f, f, 1.0)
    manual = sum(losses.bce(x, t) for x, t in [(r, 1), (r, 1), (w, 0), (r, 1), (f, 0), (f, 0)])
    assert torch.allclose(full, manual)
    # Wrong images are real for the unconditional head: calling them real lowers the loss.
    assert losses.matching_aware_d(r, r, w, r, f, f, 1.0) < losses.matching_aware_d(
        r, r, w, -r, f, f, 1.0
    )
    only_cond = losses.matching_aware_d(r, r, w, None, f, f, 0.0)
    assert torch.allclose(only_cond, losses.bce(r, 1) + 0.5 * (losses.bce(w, 0) + losses.bce(f, 0)))


def test_colour_consistency_and_kl():
    a = torch.rand(4, 3, 8, 8)
    assert float(losses.colour_consistency(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = a * 0.5 + 0.2
    assert float(losses.colour_consistency(b, a)) > 0
    fine, coarse = b.clone().requires_grad_(), a.clone().requires_grad_()
    losses.colour_consistency(fine, coarse).backward()
    assert fine.grad.abs().sum() > 0 and coarse.grad is None  # the coarser scale is detached
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert float(losses.kl_standard_normal(mu, logvar)) == 0.0
    assert float(losses.kl_standard_normal(mu + 1, logvar)) == pytest.approx(0.5)


def test_train_step_updates_every_network_and_logs_each_term():
    cfg, model, train = _model("model.colour_weight=50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = Batcher(train, 8, 0).batch(0)
    out = model.train_step(batch, "joint", Step(phase="joint"))
    assert {"d0", "d1", "g0_adv", "g1_adv", "g_colour", "g_kl", "g"} <= set(out)
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


def test_unconditional_tree_ignores_captions_and_reinjects_z():
    cfg, model, train = _model("model.text=false", "model.colour_weight=50")
    assert model.condition_dims() == {} and model.input_names() == ["z"]
    assert model.netG.ca is None
    # F1's joint conv sees h0 and z (re-injected): gf + z_dim input channels.
    assert model.netG.stages[1].joint[0].in_channels == 8 + 8
    out = model.train_step(Batcher(train, 8, 0).batch(0), "joint", Step(phase="joint"))
    assert "g_kl" not in out and "g_colour" in out


def test_config_errors_are_clear():
    with pytest.raises(
        ConfigError,
        match=r"makes \[16, 32\] images, but the data is 16x16; "
        r"set data.resolution=32",
    ):
        _model("model.base_size=16")
    with pytest.raises(ConfigError, match="captioned data"):
        build_model(
            load_config("stackgan-v2-shapes", TINY).model, DataInfo((3, 16, 16), 0, "plain", 0)
        )
    with pytest.raises(ConfigError, match="power of two"):
        load_config("stackgan-v2-shapes", ["model.base_size=12"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config("stackgan-v2-shapes", ["model.gf_dim=6", "model.branches=3"])


def test_ema_reset_quirk_copies_the_average_into_the_live_generator():
    cfg, model, train = _model("model.ema_reset_every=3")
    model.enable_ema(0.9)
    b = Batcher(train, 8, 0).batch(0)
    for step in range(3):
        model.train_step(b, "joint", Step(step, "joint", step))
        live = list(model.netG.parameters())
        avg = list(model.ema["netG"].parameters())
        same = all(torch.equal(p, q) for p, q in zip(live, avg, strict=True))
        assert same == (step == 2)  # reset after the 3rd step, not before
        model.update_ema()


def test_sample_from_captions_cli_and_eval(tmp_path, capsys):
    cfg = load_config("stackgan-v2-shapes", TINY)
    run_dir = tmp_path / "run"
    with Trainer(cfg, run_dir) as t:
        t.fit()
        figs = t.write_figures()
    assert {p.name for p in figs} >= {"vary_z.png", "vary_text.png", "scales.png"}
    run = load(run_dir)
    a = run.sample(4, captions=["a large red circle in the middle"], fixed=[], seed=1)
    b = run.sample(4, captions=["a small blue star at the top left"], fixed=[], seed=1)
    assert torch.equal(a["text"][0], a["text"][3]) and not torch.equal(a["text"], b["text"])
    assert not torch.equal(a["image"], b["image"])  # same noise, other caption
    caps = tmp_path / "caps.txt"
    caps.write_text("a green square\n\na white triangle on a striped background\n")
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--n",
                "6",
                "--captions",
                str(caps),
                "--caption",
                "a red star",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (6, 16, 16, 3) and f["level1"].shape == (6, 8, 8, 3)
        assert list(f["captions"][:4]) == [
            "a red star",
            "a green square",  # --caption first
            "a white triangle on a striped background",
            "a red star",
        ]
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--n",
                "4",
                "--caption",
                "a red star",
                "--out",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    from PIL import Image

    with Image.open(tmp_path / "s.png") as im:  # 4 samples x 2 scales side by side, one row
        assert im.width > 2 * im.height
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--n",
                "2",
                "--captions",
                str(tmp_path / "none.txt"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "cannot read captions file" in capsys.readouterr().err
    res = run.evaluate(metrics=["fid", "fid_scales", "caption"])
    m = res["metrics"]
    assert any(k.startswith("fid48_") and k.endswith("_level1") for k in m)
    cap = [
        k
        for k in m
        if k.startswith("caption_attr")
        and not k.endswith(("_shuffled", "_level1", "_level1_shuffled"))
    ]
    assert len(cap) == 1 and 0.0 <= m[cap[0]] <= 1.0
    assert "real_shapes-eval_caption_attr" in res["protocol"]["real_data"]
    json.dumps(res)


def test_caption_consistency_counts_only_mentioned_attributes():
    target = torch.tensor([[0, 1, 2], [1, 1, 0]])
    mentioned = torch.tensor([[True, True, False], [True, False, False]])
    pred = torch.tensor([[0, 1, 0], [0, 1, 0]])  # wrong only where not mentioned / row 2 attr 0
    res = caption_consistency(pred, target, mentioned, ["a", "b", "c"])
    assert res["attr"] == pytest.approx(2 / 3) and res["all"] == pytest.approx(0.5)
    assert res["a"] == pytest.approx(0.5) and res["b"] == 1.0 and "c" not in res


def test_a_checkpoint_with_the_former_names_resumes_exactly(tmp_path, caplog):
    """Checkpoints written before the level vocabulary name the optimizers ``g`` and ``d{j}``,
    j counted from the coarsest: they load under ``G`` and ``D{L-1-j}``, bit for bit."""
    cfg = load_config(
        "stackgan-v2-shapes",
        TINY + ["model.branches=3", "model.base_size=4", "train.phases.joint=3"],
    )
    former = {"G": "g", "D2": "d0", "D1": "d1", "D0": "d2"}
    assert_resume_is_exact_from_former_names(cfg, tmp_path, 2, former, caplog)
