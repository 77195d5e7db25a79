"""The SGAN CIFAR-10 recipe, train.phase_init and config inheritance (base:)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ganstack.config import ConfigError, load_config
from ganstack.data.base import ImageDataset
from ganstack.models import DataInfo
from ganstack.models.base import Step
from ganstack.models.sgan import SGAN
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

INFO = DataInfo((3, 32, 32), 10, "toy")
SMALL = [
    "data.path=/unused",
    "model.width=0.25",
    "model.feature_hidden=32",
    "model.feature_disc_hidden=32",
]


def _cifar_model(*extra: str) -> SGAN:
    torch.manual_seed(0)
    return SGAN(load_config("sgan-cifar10", SMALL + list(extra)).model, INFO)


def _batch(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        "labels": torch.arange(n) % 10,
    }


def test_cifar_networks_have_the_official_shapes():
    m = SGAN(load_config("sgan-cifar10", ["data.path=/unused"]).model, INFO)
    feats = m.encoder.features(torch.zeros(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 256), (2, 10)]
    assert m.encoder.layers["fc3"][1].in_features == 3200
    logits, q = m.D[0](torch.zeros(4, 3, 32, 32))
    assert logits.shape == (4, 10) and q.shape == (4, 16)  # K-class head; z0 is 16-d
    assert m.D[0].q[-1].in_features == 192 * 6 * 6  # Q reads the un-pooled 6x6 trunk
    logits, q = m.D[1](torch.zeros(4, 256))
    assert logits.shape == (4, 10) and q.shape == (4, 50)
    assert m.D[1].trunk[0][0].out_features == 512
    with torch.no_grad():
        out = m.generate(m.draw_inputs(4))
    assert out["image"].shape == (4, 3, 32, 32) and out["h1"].shape == (4, 256)
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1


def test_mean_image_is_the_training_mean_and_is_subtracted_from_fakes_too():
    m = _cifar_model()
    imgs = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    train = ImageDataset(imgs, torch.arange(30) % 10, 10, "toy")
    m.cfg.encoder.pretrain_epochs = 0
    m.setup(train, None, lambda _m: None)
    expected = imgs.double().div(255).mean(0).float()
    assert torch.allclose(m.mean_image, expected, atol=1e-6)
    assert torch.allclose(
        m.preprocess(imgs).double().mean(0), torch.zeros(3, 32, 32, dtype=torch.float64), atol=1e-5
    )
    zs = m._draw_z(4)
    top = torch.nn.functional.one_hot(torch.arange(4), 10).float()
    m.eval()
    fakes, conds = m._levels([None, None], top, zs, joint=True)  # type: ignore[list-item]
    raw = m.G[0](conds[0], zs[0])
    assert torch.allclose(fakes[0] + m.mean_image, raw, atol=1e-6)
    assert "mean_image" in m.state_dict()  # saved with the checkpoints


def _label_loss_after_training(label_weight: float) -> tuple[float, float]:
    m = _cifar_model(
        "model.g_steps=one",
        "model.lr=3e-3",
        "model.ent_weight=0",
        f"model.label_weight={label_weight}",
    )
    batch = _batch(40)
    # class-dependent images: the class sets the brightness of one colour channel
    y = batch["labels"]
    batch["images"][torch.arange(40), y % 3] = (y * 25).to(torch.uint8)[:, None, None]
    m.enter_phase("independent", fresh=True)
    m.train()
    for _ in range(40):
        m.train_step(batch, "independent", Step(phase="independent"))
    with torch.no_grad():
        logits, _ = m.D[0](m.preprocess(batch["images"]))
        first = float(torch.nn.functional.cross_entropy(logits, y))
    return first, float(torch.log(torch.tensor(10.0)))


def test_kclass_discriminator_learns_the_real_labels():
    trained, chance = _label_loss_after_training(1.0)
    untrained, _ = _label_loss_after_training(0.0)
    assert trained < 0.3 * chance  # the label loss teaches D0 the classes
    assert untrained > 0.8 * chance  # without it the class logits are not class logits


def test_label_free_kclass_variant_has_no_label_loss():
    m = _cifar_model(
        "model.use_labels=false",
        "model.encoder.split=[]",
        "model.z_dims=[16]",
        "model.cond_weight=0",
        "model.d_input_noise=[0.05]",
    )
    logs = m.train_step(_batch(), "independent", Step(phase="independent"))
    assert not any(k.endswith("_label") for k in logs)


@pytest.mark.parametrize(
    ("d_adv", "steps"), [(0.69, 1), (0.651, 1), (0.6, 3), (0.5, 5), (0.31, 5), (0.3, 7), (0.05, 7)]
)
def test_adaptive_schedule_thresholds(d_adv, steps):
    assert SGAN.adaptive_g_steps(d_adv) == steps


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


@pytest.mark.parametrize("phase", ["independent", "joint"])
def test_adaptive_generator_steps_are_taken_as_logged(phase, monkeypatch):
    m = _cifar_model()
    # Force a confident D: every level's adversarial loss low -> 7 G steps.
    monkeypatch.setattr(
        "ganstack.losses.d_adversarial", lambda r, f: 0.0 * (r.sum() + f.sum()) + 0.2
    )
    m.enter_phase(phase, fresh=True)
    m.train()
    logs = m.train_step(_batch(), phase, Step(phase=phase))
    for i in (0, 1):
        assert float(logs[f"g{i}_steps"]) == 7
        assert _adam_steps(m.optimizers[f"G{i}"]) == 7
        assert _adam_steps(m.optimizers[f"D{i}"]) == 1


def test_levels_follow_their_own_d_in_the_independent_phase(monkeypatch):
    m = _cifar_model()
    calls = iter([0.2, 0.69])  # D0 confident (7 steps), D1 at chance (1 step)

    def fake_adv(r, f):
        return 0.0 * (r.sum() + f.sum()) + next(calls)

    monkeypatch.setattr("ganstack.losses.d_adversarial", fake_adv)
    m.train()
    logs = m.train_step(_batch(), "independent", Step(phase="independent"))
    assert (float(logs["g0_steps"]), float(logs["g1_steps"])) == (7, 1)
    assert _adam_steps(m.optimizers["G0"]) == 7 and _adam_steps(m.optimizers["G1"]) == 1


def test_joint_phase_regularisation_is_set_on_every_entry():
    m = _cifar_model()
    m.enter_phase("joint", fresh=False)  # a resume mid-phase must set it too
    assert [d.p for d in m.D[0].drop] == [0.3, 0.3]
    assert m.D[0].noise.std == 0.05 and m.D[1].noise[0].std == 0.2
    assert m.D[1].noise[1].std == m.D[1].noise[2].std == 0.2
    m.enter_phase("independent", fresh=True)
    assert [d.p for d in m.D[0].drop] == [0.1, 0.1]
    assert m.D[1].noise[1].std == 0.0
    # noise only in training mode
    m.eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(m.D[0].noise(x), x)
    m.train()
    assert not torch.equal(m.D[0].noise(x), x)


def test_recipe_options_that_make_no_sense_are_config_errors():
    with pytest.raises(ConfigError, match="no dropout layers"):
        load_config("sgan-mnist", ["model.d_dropout=0.1"])
    with pytest.raises(ConfigError, match="one std per level"):
        load_config("sgan-cifar10", ["data.path=/x", "model.d_input_noise=[0.05]"])
    with pytest.raises(ConfigError, match="must be in"):
        load_config("sgan-cifar10", ["data.path=/x", "model.joint_d_dropout=1.5"])


# ---- train.phase_init ---------------------------------------------------------------------


def _tiny_mnist_like(n=40):
    g = torch.Generator().manual_seed(1)
    train = ImageDataset(
        torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
        torch.arange(n) % 10,
        10,
        "toy",
    )
    return train, None


TINY = [
    "model.width=0.25",
    "model.feature_hidden=32",
    "model.feature_disc_hidden=32",
    "model.encoder.pretrain_epochs=0",
    "train.batch_size=10",
    "train.progress=false",
    "train.tensorboard=false",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.log_every=1",
    "eval.at_end=false",
    "train.phases.independent=4",
    "train.phases.joint=2",
]


def test_phase_init_starts_the_phase_from_the_kept_step(tmp_path):
    cfg = load_config("sgan-mnist", TINY + ["train.phase_init.joint=2", "train.ema=0"])
    trainer = Trainer(cfg, tmp_path / "run", datasets=_tiny_mnist_like())
    seen = {}
    enter = trainer.model.enter_phase

    def spy(phase, fresh):
        if phase == "joint" and fresh:
            seen.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        enter(phase, fresh)

    trainer.model.enter_phase = spy  # type: ignore[method-assign]
    assert trainer.fit() == "done"
    kept = tmp_path / "run" / "checkpoints" / "keep-step-0000002.json"
    _, tensors = ckpt.read_checkpoint(kept)
    _, end_of_phase = ckpt.read_checkpoint(
        tmp_path / "run" / "checkpoints" / "phase-independent.json"
    )
    key = "G.0.fc.0.weight"
    assert torch.equal(seen[key], tensors[f"model/{key}"])
    assert not torch.equal(seen[key], end_of_phase[f"model/{key}"])


def test_phase_init_survives_a_resume_exactly(tmp_path):
    over = TINY + ["train.phase_init.joint=2", "train.ema=0", "train.checkpoint_every=1"]
    Trainer(load_config("sgan-mnist", over), tmp_path / "a", datasets=_tiny_mnist_like()).fit()
    t = Trainer(load_config("sgan-mnist", over), tmp_path / "b", datasets=_tiny_mnist_like())
    assert t.fit(max_steps=3) == "interrupted"
    Trainer(
        load_config("sgan-mnist", over), tmp_path / "b", resume=True, datasets=_tiny_mnist_like()
    ).fit()
    a = ckpt.read_checkpoint(tmp_path / "a" / "checkpoints" / "phase-joint.json")[1]
    b = ckpt.read_checkpoint(tmp_path / "b" / "checkpoints" / "phase-joint.json")[1]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model/"))


def test_phase_init_errors():
    with pytest.raises(ConfigError, match="starts after step 4"):
        load_config("sgan-mnist", TINY + ["train.phase_init.joint=5"])
    with pytest.raises(ConfigError, match="phase_init"):
        load_config("sgan-mnist", TINY + ["train.phase_init.jiont=2"])


# ---- base: ---------------------------------------------------------------------------------


def test_base_configs_merge_and_cycles_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "base: sgan-mnist\nmodel:\n  width: 0.75\ntrain:\n  phases:\n    joint: 7\n"
    )
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmodel:\n  lr: 0.002\n")
    cfg = load_config(str(tmp_path / "b.yaml"))
    assert cfg.model.width == 0.75 and cfg.model.lr == 0.002
    assert cfg.model.disc_init == "glorot"  # from sgan-mnist, two files up
    demo = load_config("sgan-mnist").train.phases["independent"]
    assert demo != 7 and cfg.train.phases == {"independent": demo, "joint": 7}
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "c.yaml"))
    (tmp_path / "e.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError, match="base must name"):
        load_config(str(tmp_path / "e.yaml"))
    (tmp_path / "f.yaml").write_text("base: sgan-mnsit\n")
    with pytest.raises(ConfigError, match="Did you mean 'sgan-mnist'"):
        load_config(str(tmp_path / "f.yaml"))


def test_ablation_configs_are_the_papers_variants():
    for data in ("mnist", "cifar10", "svhn"):
        path = [] if data == "mnist" else ["data.path=/unused"]
        base = load_config(f"sgan-{data}", path)
        no_joint = load_config(f"sgan-{data}-no-joint", path)
        assert no_joint.train.phases["joint"] == 0 and base.train.phases["joint"] > 0
        for variant, labels, cond, ent in [
            ("adv", False, 0, 0),
            ("adv-ent", False, 0, 10),
            ("adv-cond", True, 1, 0),
            ("adv-cond-ent", True, 1, 10),
        ]:
            cfg = load_config(f"sgan-{data}-dcgan-{variant}", path)
            m = cfg.model
            assert m.encoder.split == [] and len(m.z_dims) == 1
            assert (m.use_labels, m.cond_weight, m.ent_weight) == (labels, cond, ent)
            assert m.encoder.arch == base.model.encoder.arch
            assert cfg.train.phases["joint"] == 0


# ---- end to end on CIFAR-format files ---------------------------------------------------------


def _cifar_folder(tmp_path, n=20):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in np.arange(n) % 10],
        }
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def test_cifar_recipe_trains_end_to_end_from_cifar_files(tmp_path):
    from ganstack.cli import main

    folder = _cifar_folder(tmp_path)
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "sgan-cifar10",
            "--out",
            str(run),
            f"data.path={folder}",
            "data.eval_size=20",
            *SMALL[1:],
            "model.encoder.pretrain_epochs=1",
            "train.batch_size=10",
            "train.phases.independent=4",
            "train.phases.joint=2",
            "train.phase_init.joint=3",
            "train.progress=false",
            "train.tensorboard=false",
            "train.sample_every=0",
            "train.checkpoint_every=0",
            "train.num_threads=1",
            "eval.n=40",
            "eval.metrics=[noise]",
        ]
    )
    assert rc == 0
    assert (run / "checkpoints" / "keep-step-0000003.json").is_file()
    assert (run / "figures" / "reconstructions.png").is_file()
    import json

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/d0_label", "loss/g0_steps", "loss/g1_steps"} <= set(rows[0])
    res = json.loads((run / "eval.json").read_text())
    assert res["metrics"]["noise_sensitivity_z0"] > 0
