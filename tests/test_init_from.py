"""`train.init_from` (issue 20, item 2): a new run that starts from another run's (or an
export's) weights, matched by name and shape, with what was and was not loaded in run.json."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganstack.cli import main
from ganstack.config import load_config
from ganstack.errors import ConfigError
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import Trainer

from .conftest import bar_digits, tiny_config_overrides
from .helpers import final_state, logged_losses

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE_STEPS = ["train.phases.independent=2", "train.phases.joint=2"]


@pytest.fixture(scope="module")
def source(tmp_path_factory, mnist_dir) -> Path:
    """A tiny SGAN MNIST run with an EMA of its generator (4 steps)."""
    out = tmp_path_factory.mktemp("init_from") / "mnist-run"
    cfg = load_config(
        "sgan-mnist",
        tiny_config_overrides(mnist_dir) + SOURCE_STEPS + ["train.ema=0.9", "train.num_threads=1"],
    )
    assert Trainer(cfg, out).fit() == "done"
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """60 grey 28x28 PNGs in one sub-folder per class (other 'digits' than MNIST's:
    inverted, another seed)."""
    folder = tmp_path_factory.mktemp("init_from_images") / "imgs"
    xs, ys = bar_digits(60, seed=3)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        path = folder / f"class{y}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - x).save(path)
    return folder


def folder_config(images: Path, init_from: str | Path | None, *extra: str):
    """sgan-mnist on the image folder, the source's network sizes, 2 + 2 steps."""
    over = [
        "data.name=folder",
        f"data.path={images}",
        "data.channels=1",
        "data.eval_size=10",
        "model.width=0.25",
        "model.feature_hidden=32",
        "model.feature_disc_hidden=32",
        "model.encoder.pretrain_epochs=1",
        "train.batch_size=10",
        *SOURCE_STEPS,
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
        "train.ema=0.9",
        "train.seed=5",
    ]
    if init_from is not None:
        over.append(f"train.init_from={init_from}")
    return load_config("sgan-mnist", over + list(extra))


def source_tensors(run: Path, name: str | None = None) -> dict[str, torch.Tensor]:
    _, _, tensors = ckpt.read_newest(run / "checkpoints", name)
    return {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def run_record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["init_from"]


def assert_finite_losses(run: Path) -> None:
    rows = logged_losses(run)
    assert rows and all(math.isfinite(v) for r in rows for k, v in r.items() if k != "step")


# ---- (a) a fine-tune from an MNIST run onto a folder of images --------------------------------


def test_a_fine_tune_onto_a_folder_starts_from_the_source_reports_and_trains(
    source, images, tmp_path, caplog
):
    src = source_tensors(source)
    fresh = state(Trainer(folder_config(images, None), tmp_path / "fresh"))
    with caplog.at_level(logging.INFO, logger="ganstack"):
        trainer = Trainer(folder_config(images, source), tmp_path / "ft")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from"))
    assert f"init_from run {source} (checkpoint " in line and "step 4" in line
    assert "generators from its EMA weights" in line and " tensors loaded" in line
    start = state(trainer)
    report = trainer.init_report
    assert report is not None and report["kind"] == "run" and report["generators"] == "ema"
    assert report["step"] == 4 and report["model"] == "sgan"
    # Every network tensor matches (same sizes, other data): all loaded, nothing left over.
    assert report["shape_mismatch"] == [] and report["missing"] == [] == report["unused"]
    nets = [k for k in start if not k.startswith("ema.")]
    assert sorted(report["loaded"]) == sorted(nets)
    for k in nets:  # the generator from the source's EMA copy, the rest from its networks
        expected = src[f"ema.{k}"] if k.startswith("G.") else src[k]
        assert torch.equal(start[k], expected), k
    for k in (k for k in nets if k.startswith("G.")):  # this run's EMA starts as its G
        assert torch.equal(start[f"ema.{k}"], start[k]), k
    # The source's weights are not what this run's own seed would have drawn.
    moved = [
        k for k in nets if start[k].is_floating_point() and not torch.equal(start[k], fresh[k])
    ]
    assert any(k.startswith("G.") for k in moved) and any(k.startswith("D.") for k in moved)
    assert trainer.fit() == "done"
    record = run_record(tmp_path / "ft")
    assert record["loaded"] == report["loaded"] and record["source"] == str(source.resolve())
    assert record["checkpoint"] == report["checkpoint"] and len(record["sha256"]) == 64
    assert_finite_losses(tmp_path / "ft")
    end = final_state(tmp_path / "ft")
    assert end["model/G.0.fc.0.weight"].shape == start["G.0.fc.0.weight"].shape
    assert not torch.equal(end["model/G.0.fc.0.weight"], start["G.0.fc.0.weight"])  # trained
    assert (tmp_path / "ft" / "checkpoints").is_dir()
    assert (
        ckpt.read_checkpoint(ckpt.list_checkpoints(tmp_path / "ft" / "checkpoints")[-1])[0][
            "global_step"
        ]
        == 4
    )  # a new run: 4 steps from step 0


def test_a_fine_tune_resumes_exactly_without_reading_the_source_again(source, images, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    cfg = folder_config(images, copy)
    assert Trainer(cfg, tmp_path / "straight").fit() == "done"
    assert Trainer(cfg, tmp_path / "split").fit(max_steps=3) == "interrupted"
    shutil.rmtree(copy)  # a resume must not need it: the weights are in the run's checkpoints
    assert Trainer(cfg, tmp_path / "split", resume=True).fit() == "done"
    assert logged_losses(tmp_path / "split") == logged_losses(tmp_path / "straight")
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((tmp_path / "split" / "run.json").read_text())
    assert info["init_from"]["loaded"] and [r["step"] for r in info["resumes"]] == [3]


# ---- (b) from an export -----------------------------------------------------------------------


def test_a_run_starts_from_an_export(source, images, tmp_path):
    from safetensors.torch import load_file

    export = tmp_path / "export"
    assert main(["-q", "export", str(source), str(export)]) == 0
    exported = load_file(str(export / "model.safetensors"))
    cfg = folder_config(images, export, "train.phases.independent=1", "train.phases.joint=1")
    trainer = Trainer(cfg, tmp_path / "ft")
    report = trainer.init_report
    assert report["kind"] == "export" and report["generators"] == "ema" and report["step"] == 4
    start = state(trainer)
    gen = [k for k in exported if k.startswith("G.")]
    assert gen and sorted(report["loaded"]) == sorted(gen)
    for k in gen:
        assert torch.equal(start[k], exported[k]) and torch.equal(start[f"ema.{k}"], exported[k])
    # An export holds the generator alone: the discriminators and encoder start fresh.
    assert report["missing"] and all(k.startswith(("D.", "encoder.")) for k in report["missing"])
    assert trainer.fit() == "done"
    assert run_record(tmp_path / "ft")["kind"] == "export"
    assert_finite_losses(tmp_path / "ft")


# ---- (c) other shapes: reported, not an error -------------------------------------------------


def test_other_shapes_are_reported_and_keep_their_fresh_init(source, images, tmp_path, caplog):
    src = source_tensors(source, "phase-independent")
    over = ("model.feature_disc_hidden=16", "train.phases.independent=1", "train.phases.joint=1")
    fresh = state(Trainer(folder_config(images, None, *over), tmp_path / "fresh"))
    with caplog.at_level(logging.INFO, logger="ganstack"):
        trainer = Trainer(
            folder_config(images, f"{source}:phase-independent", *over), tmp_path / "ft"
        )
    report = trainer.init_report
    assert report["checkpoint"] == "phase-independent" and report["step"] == 2
    mismatch = {m["name"]: m for m in report["shape_mismatch"]}
    assert mismatch and all(k.startswith("D.1.") for k in mismatch)
    one = next(iter(mismatch.values()))
    assert one["source"] == list(src[one["name"]].shape) != one["model"]
    start = state(trainer)
    for k in mismatch:  # the new model's own initialisation, in its own shape
        assert list(start[k].shape) == mismatch[k]["model"] and torch.equal(start[k], fresh[k])
    assert report["loaded"] and all(
        torch.equal(start[k], src[f"ema.{k}"] if k.startswith("G.") else src[k])
        for k in report["loaded"]
    )
    assert any("skipped for shape: D.1." in r.getMessage() for r in caplog.records)
    assert trainer.fit() == "done"
    assert run_record(tmp_path / "ft")["shape_mismatch"] == report["shape_mismatch"]
    assert_finite_losses(tmp_path / "ft")


# ---- (d) errors -------------------------------------------------------------------------------


def test_errors_say_what_to_do_and_leave_no_run_behind(source, images, mnist_dir, tmp_path):
    empty_run = tmp_path / "empty-run"  # a run that has not reached its first checkpoint
    empty_run.mkdir()
    shutil.copy(source / "config.yaml", empty_run / "config.yaml")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    cases = [
        (tmp_path / "nope", "nope does not exist; give a run directory"),
        (a_file, "is a file; give a run directory"),
        (images, "is neither a run directory .* nor an export"),
        (empty_run, "has no checkpoint; train it first"),
        (
            f"{source}:step-9999999",
            "has no usable checkpoint 'step-9999999' \\(it has .*phase-independent",
        ),
    ]
    for i, (spec, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(ConfigError, match=message):
            Trainer(folder_config(images, spec), out)
        assert not out.exists(), spec
    # Another model family: nothing matches by name and shape, so nothing is trained.
    dcgan = load_config(
        "dcgan-mnist",
        [
            "data.name=mnist",
            f"data.path={mnist_dir}",
            "data.eval_size=50",
            f"train.init_from={source}",
        ],
    )
    with pytest.raises(ConfigError, match="no weight of a 'sgan' model matches this 'dcgan'"):
        Trainer(dcgan, tmp_path / "dcgan")
    assert not (tmp_path / "dcgan").exists()


def test_the_cli_reports_a_bad_source_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "sgan-mnist",
                "--out",
                str(out),
                f"train.init_from={tmp_path / 'missing'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.init_from=" in err and "does not exist" in err
    assert not out.exists()


def test_step_counters_and_data_statistics_are_not_taken():
    from ganstack.models import DataInfo, build_model
    from ganstack.train import init_from

    cfg = load_config("sgan-mnist", ["model.mean_image=true", "model.width=0.25"])
    info = DataInfo((1, 28, 28), 10, "mnist")
    torch.manual_seed(0)
    trained = build_model(cfg.model, info)
    trained.mean_image.fill_(0.5)  # the source data's statistics
    torch.manual_seed(1)
    model = build_model(cfg.model, info)
    tensors = {k: v.clone() for k, v in trained.state_dict().items()}
    tensors["images_seen"] = torch.tensor(12345)  # an older version's step counter
    report = init_from.apply(
        model,
        init_from.Source("src", Path("src"), "run", "step-1", 1, "sgan", False, None, tensors),
    )
    assert report["not_taken"] == ["mean_image"] and report["unused"] == ["images_seen"]
    assert float(model.mean_image.abs().max()) == 0.0
    assert report["loaded"] and not report["missing"]
    assert all(torch.equal(model.state_dict()[k], tensors[k]) for k in report["loaded"])
    assert "own state not taken (counters, data statistics): " in init_from.summary(report)
