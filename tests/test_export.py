"""`ganstack export` and `ganstack.from_pretrained` (issue 20, item 1): the sampling generator
alone, its config and a model card; loaded in a fresh process it samples bit for bit what the
run samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ganstack
from ganstack.cli import main
from ganstack.export import (
    CARD,
    CONFIG,
    WEIGHTS,
    ExportError,
    check_sampling_state,
    export_run,
    sampling_state,
    split_front_matter,
)

from .conftest import tiny_config_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_dir) -> Path:
    """A tiny SGAN run with an EMA of its generators, evaluated (acc and fid, calibrated)."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "sgan-mnist",
                "--out",
                str(out),
                "--no-eval",
                *tiny_config_overrides(mnist_dir),
                "train.phases.independent=3",
                "train.phases.joint=3",
                "train.ema=0.9",
                "train.num_threads=1",
            ]
        )
        == 0
    )
    assert main(["-q", "eval", str(out), "--n", "100", "--metrics", "acc", "fid"]) == 0
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("exports") / "sgan-tiny"
    assert main(["-q", "export", str(run), str(dest)]) == 0
    return dest


def test_an_export_holds_the_sampling_generator_config_card_and_figures(run, exported):
    names = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert {
        WEIGHTS,
        CONFIG,
        CARD,
        "samples.png",
        "eval.json",
        "figures/classes.png",
        "samples/joint-final.png",
    } <= set(names)
    meta = json.loads((exported / CONFIG).read_text())
    assert meta["format"] == "ganstack-export" and meta["model"] == "sgan"
    assert meta["source"]["ema"] is True and meta["source"]["step"] == 6
    from safetensors.torch import load_file

    tensors = load_file(str(exported / WEIGHTS))
    # The generators only (the EMA weights, under the generators' names): no D, encoder, EMA.
    assert tensors and all(k.startswith("G.") for k in tensors), sorted(tensors)[:5]
    live = ganstack.load(run).model
    for k, v in tensors.items():
        assert torch.equal(v, live.ema.state_dict()[k]), k
    assert not all(torch.equal(v, live.state_dict()[k]) for k, v in tensors.items())


def test_an_export_samples_bit_identically_to_the_run_in_a_fresh_process(run, exported, tmp_path):
    out = tmp_path / "s.npz"
    code = textwrap.dedent(f"""
        import numpy as np, torch, ganstack
        torch.set_num_threads(1)
        m = ganstack.from_pretrained({str(exported)!r})
        a = m.sample_indexed(150, seed=7)
        b = m.sample(12, labels=[3, 5], fixed=["z1"], seed=2)
        np.savez({str(out)!r}, **{{"a_" + k: v.numpy() for k, v in a.items()}},
                 **{{"b_" + k: v.numpy() for k, v in b.items()}})
        print(type(m).__name__, m.step)
    """)
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["Pretrained", "6"]
    r = ganstack.load(run)
    want = {
        **{f"a_{k}": v for k, v in r.sample_indexed(150, seed=7).items()},
        **{f"b_{k}": v for k, v in r.sample(12, labels=[3, 5], fixed=["z1"], seed=2).items()},
    }
    with np.load(out) as got:
        assert sorted(got.files) == sorted(want)
        for k, v in want.items():
            assert np.array_equal(got[k], v.numpy()), k  # bit for bit


def test_the_model_card_front_matter_parses_as_yaml_with_the_eval_protocol(run, exported):
    front, body = split_front_matter((exported / CARD).read_text())
    assert front["library_name"] == "ganstack" and front["license"] == "mit"
    assert front["datasets"] == ["ylecun/mnist"]
    assert {"ganstack", "sgan", "class-conditional"} <= set(front["tags"])
    assert front["pipeline_tag"] == "unconditional-image-generation"
    ev = json.loads((run / "eval.json").read_text())
    shown = {k: v for k, v in ev["metrics"].items() if not k.endswith(("_std", "_shuffled"))}
    (result,) = front["model-index"][0]["results"]
    assert {m["name"]: m["value"] for m in result["metrics"]} == shown
    assert set(front["metrics"]) == {"accuracy", "class_share_min", "fid"}
    fid = next(m for m in result["metrics"] if m["type"] == "fid")
    assert fid["args"]["samples"] == 100 and fid["args"]["drawn_from"].startswith("phase-joint")
    assert fid["args"]["reference"] == ev["protocol"]["reference"]
    assert "classifier" in fid["args"]["feature_space"]
    assert set(fid["args"]["calibration"]) >= {"n", "real", "blur1", "blur2"}
    assert "ganstack.from_pretrained" in body and "![samples drawn" in body
    assert "figures/classes.png" in body


def test_sample_and_eval_take_an_export_like_a_run(run, exported, tmp_path, capsys):
    for src, name in ((run, "r.npz"), (exported, "e.npz")):
        assert (
            main(
                [
                    "-q",
                    "sample",
                    str(src),
                    "--n",
                    "30",
                    "--seed",
                    "4",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    with np.load(tmp_path / "r.npz") as a, np.load(tmp_path / "e.npz") as b:
        assert np.array_equal(a["images"], b["images"])
        assert np.array_equal(a["labels"], b["labels"])
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "-q",
                "eval",
                str(exported),
                "--n",
                "100",
                "--metrics",
                "acc",
                "fid",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (
        json.loads(out.read_text())["metrics"]
        == json.loads((run / "eval.json").read_text())["metrics"]
    )
    capsys.readouterr()
    assert main(["eval", str(exported), "--metrics", "noise"]) == 2
    assert "an export does not hold" in capsys.readouterr().err
    assert (
        main(["sample", str(exported), "--checkpoint", "step-1", "--out", str(tmp_path / "x.png")])
        == 2
    )
    assert "applies to run directories only" in capsys.readouterr().err


# ---- where it may be written ------------------------------------------------------------------


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_an_export_refuses_a_non_empty_folder_and_replaces_an_export_only_with_force(
    run, exported, tmp_path, capsys
):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["export", str(run), str(other), "--force"]) == 2
    assert "is not empty and is not a ganstack export" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    assert main(["export", str(run), str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err

    dest = tmp_path / "e"
    dest.mkdir()  # an empty folder is fine
    assert main(["-q", "export", str(run), str(dest)]) == 0
    assert main(["export", str(run), str(dest)]) == 2
    assert "already holds an export; pass --force" in capsys.readouterr().err
    (dest / CARD).write_text("edited")
    assert main(["-q", "export", str(run), str(dest), "--force", "--license", "cc-by-4.0"]) == 0
    assert split_front_matter((dest / CARD).read_text())[0]["license"] == "cc-by-4.0"
    assert _hidden(tmp_path) == []
    assert main(["export", str(exported), str(tmp_path / "again")]) == 2
    assert "already an export" in capsys.readouterr().err


def test_a_failed_export_leaves_nothing_and_keeps_the_previous_one(run, tmp_path, monkeypatch):
    from ganstack import export

    dest = tmp_path / "e"

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "model_card", boom)
    with pytest.raises(OSError, match="No space"):
        export_run(run, dest)
    assert not dest.exists() and _hidden(tmp_path) == []
    monkeypatch.undo()
    export_run(run, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    monkeypatch.setattr(export, "model_card", boom)
    with pytest.raises(OSError, match="No space"):
        export_run(run, dest, force=True)
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert _hidden(tmp_path) == []


def test_an_export_that_would_not_sample_like_the_run_is_refused(run, tmp_path, monkeypatch):
    from ganstack import export

    real = export.sampling_state

    def incomplete(model):  # type: ignore[no-untyped-def]
        state = real(model)
        state.pop(sorted(state)[0])
        return state

    monkeypatch.setattr(export, "sampling_state", incomplete)
    with pytest.raises(ExportError, match="samples with tensors outside its generators"):
        export_run(run, tmp_path / "e")
    assert not (tmp_path / "e").exists()


# ---- loading: clear errors for what is not an export -----------------------------------------


def test_from_pretrained_says_what_a_folder_is_when_it_is_not_an_export(run, exported, tmp_path):
    import shutil

    with pytest.raises(ExportError, match="is a run directory, not an export"):
        ganstack.from_pretrained(run)
    with pytest.raises(ExportError, match="does not exist"):
        ganstack.from_pretrained(tmp_path / "nope")
    with pytest.raises(ExportError, match="is a file"):
        ganstack.from_pretrained(exported / CONFIG)
    with pytest.raises(ExportError, match="not a ganstack export \\(it has no config.json\\)"):
        ganstack.from_pretrained(tmp_path)
    other = tmp_path / "diffusers"
    other.mkdir()
    (other / CONFIG).write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ExportError, match="another library's model"):
        ganstack.from_pretrained(other)
    with pytest.raises(ExportError, match="another library's model"):
        ganstack.load(other)  # load() takes exports too, with the same errors

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    meta = json.loads((copy / CONFIG).read_text())
    (copy / CONFIG).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ExportError, match="newer ganstack"):
        ganstack.from_pretrained(copy)
    (copy / CONFIG).write_text(json.dumps(meta))
    raw = bytearray((copy / WEIGHTS).read_bytes())
    raw[-1] ^= 1
    (copy / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ExportError, match="does not match the SHA-256"):
        ganstack.from_pretrained(copy)
    (copy / WEIGHTS).unlink()
    with pytest.raises(ExportError, match="missing"):
        ganstack.from_pretrained(copy)


# ---- every registered model exports what it samples with --------------------------------------


@pytest.mark.parametrize(
    "name", ["sgan", "lapgan", "dcgan", "s2gan", "stackgan_v1", "stackgan_v2", "hdgan"]
)
def test_every_model_samples_with_its_generators_and_own_buffers_alone(name, mnist_dir):
    """What sampling_state leaves out (discriminators, encoders, the live generators when an
    EMA is kept) is NaN in the probe: any use of it would show in the samples."""
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.models import MODELS, DataInfo, build_model

    from .test_contract import CONTRACTS

    assert sorted(CONTRACTS) == MODELS.names()
    c = CONTRACTS[name]
    cfg = load_config(c.config, c.overrides(mnist_dir))
    info = DataInfo.of(load_dataset(cfg.data)[0])
    torch.manual_seed(0)
    model = build_model(cfg.model, info)
    model.enable_ema(0.5)
    with torch.no_grad():  # an EMA unlike the live generators, so that using either shows
        for p in model.ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = sampling_state(model)
    assert check_sampling_state(model, state, n=3) == []
    # and the check sees a missing tensor
    key = next(
        k for k in state if k.startswith(model.generator_names[0] + ".") and k.endswith("weight")
    )
    assert check_sampling_state(model, {k: v for k, v in state.items() if k != key}, n=3)
