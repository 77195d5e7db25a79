"""What users expect of any tool: one atomic writer, the cache where XDG says, one process
training a cached classifier at a time, versions and the command recorded with each run, -q
anywhere, a license, and data-shape errors that name the key to set (issue 20, item 5)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from ganstack.fileio import atomic_path

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- one atomic writer -----------------------------------------------------------------------


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".x.bin.")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the name until the block ends
    assert target.read_bytes() == b"new"
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert target.read_bytes() == b"new"  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.bin"]


def test_atomic_path_gives_the_umasks_mode_even_when_the_writer_replaces_the_file(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.bin") as tmp:
            tmp.unlink()  # as safetensors does: a new file, created 0600 here
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644


def test_no_module_renames_files_by_itself():
    """Every atomic write goes through ganstack.fileio (fsync, cleanup, file mode)."""
    src = Path(__file__).resolve().parents[1] / "src" / "ganstack"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "fileio.py"
        and ("os.replace(" in p.read_text() or "tempfile.mkstemp" in p.read_text())
    ]
    assert offenders == []


# ---- the cache -------------------------------------------------------------------------------


def test_the_cache_follows_ganstack_cache_then_xdg_then_home(monkeypatch, tmp_path):
    from ganstack.metrics.classifier import cache_dir
    from ganstack.metrics.evaluate import reference_cache_dir

    monkeypatch.setenv("GANSTACK_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("GANSTACK_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "ganstack"
    assert reference_cache_dir() == tmp_path / "xdg" / "ganstack" / "refstats"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG rule: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ganstack"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "ganstack"


def _tiny_dataset(n: int = 40):
    from ganstack.data.base import ImageDataset

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(
        images=images, labels=torch.arange(n) % 2, num_classes=2, name="locktest-train"
    )


def test_two_threads_never_train_the_same_cached_classifier_at_once(monkeypatch, tmp_path, caplog):
    """Two evaluations of runs on the same data, at the same moment: one trains the
    classifier, the other waits on the lock beside the cache entry and reads it."""
    from ganstack.metrics import classifier

    monkeypatch.setenv("GANSTACK_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    inside = threading.Event()
    real = classifier.train_classifier

    def slow_train(train, held_out, recipe):  # type: ignore[no-untyped-def]
        calls.append(threading.get_ident())
        inside.set()
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        return real(train, held_out, recipe)

    monkeypatch.setattr(classifier, "train_classifier", slow_train)
    recipe = classifier.ClassifierRecipe(epochs=1, batch_size=20)
    ds = _tiny_dataset()
    results: dict[str, tuple] = {}

    def work(name: str) -> None:
        results[name] = classifier.get_classifier(ds, None, recipe)

    caplog.set_level("INFO", logger="ganstack")
    first = threading.Thread(target=work, args=("a",))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=work, args=("b",))
    second.start()
    first.join(60)
    second.join(60)
    assert len(calls) == 1, "the classifier was trained twice"
    # the second read the first's record (JSON: tuples become lists)
    assert json.loads(json.dumps(results["a"][1])) == results["b"][1]
    for (pa, va), (pb, vb) in zip(
        results["a"][0].state_dict().items(), results["b"][0].state_dict().items(), strict=True
    ):
        assert pa == pb and torch.equal(va, vb)
    waited = [r.getMessage() for r in caplog.records if "waiting for it" in r.getMessage()]
    assert len(waited) == 1 and "another process is training" in waited[0]
    folder = tmp_path / "cache" / "classifiers"
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".lock", ".safetensors"]


# ---- the command line ------------------------------------------------------------------------


def test_version_and_quiet_before_or_after_the_command(capsys):
    from ganstack.cli import _parser, main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ganstack ")
    p = _parser()
    for argv, quiet in (
        (["train", "x"], False),
        (["-q", "train", "x"], True),
        (["train", "x", "-q"], True),
        (["train", "x", "a=b", "--quiet"], True),
        (["sample", "r", "--out", "o.png", "-q"], True),
    ):
        args, _ = p.parse_known_args(argv)
        assert args.quiet is quiet, argv
    assert main(["configs", "-q"]) == 0
    assert "sgan-mnist" in capsys.readouterr().out


# ---- versions, machine, command and git state in run.json and eval.json ------------------------


def test_git_state_of_a_checkout_and_of_a_folder_that_is_none(tmp_path):
    import shutil
    import subprocess

    from ganstack.environment import git_state

    assert git_state(tmp_path) is None  # not a checkout: absent, never an error
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    assert git_state(repo) is None  # no commit yet
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    state = git_state(repo)
    assert state is not None and len(state["commit"]) == 40 and state["dirty"] is False
    (repo / "untracked.txt").write_text("x")
    assert git_state(repo)["dirty"] is False  # untracked files do not count
    (repo / "a.txt").write_text("2")
    assert git_state(repo) == {"commit": state["commit"], "dirty": True}


def test_run_json_and_eval_json_record_versions_machine_command_and_git(
    tmp_path, mnist_dir, monkeypatch
):
    import sys

    import ganstack
    from ganstack.cli import main
    from ganstack.environment import git_state

    from .conftest import tiny_config_overrides

    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "sgan-mnist",
        "--out",
        str(run),
        "--no-eval",
        *tiny_config_overrides(mnist_dir),
        "train.phases.independent=2",
        "train.phases.joint=1",
        "train.num_threads=1",
    ]
    monkeypatch.setattr(sys, "argv", ["ganstack", *argv])
    assert main(argv) == 0
    env = json.loads((run / "run.json").read_text())["environment"]
    assert env["ganstack"] == ganstack.__version__ and env["torch"] == torch.__version__
    assert env["python"].count(".") == 2 and env["cpu"] and env["device"] == "cpu"
    assert env["command"].startswith("ganstack -q train sgan-mnist --out ")
    assert env.get("git") == git_state()  # this checkout's state, or absent outside one

    # A resume (here of a finished run) adds its own environment, at its step.
    monkeypatch.setattr(sys, "argv", ["ganstack", *argv, "--resume"])
    assert main([*argv, "--resume"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["environment"] == env
    assert [r["step"] for r in info["resumes"]] == [3]
    assert info["resumes"][0]["environment"]["command"].endswith("--resume")

    monkeypatch.setattr(sys, "argv", ["ganstack", "eval", str(run)])
    assert main(["-q", "eval", str(run), "--n", "20", "--metrics", "acc", "--no-calibrate"]) == 0
    env = json.loads((run / "eval.json").read_text())["environment"]
    assert env["ganstack"] == ganstack.__version__ and env["device"] == "cpu"
    assert env["command"] == f"ganstack eval {run}"


# ---- a license -------------------------------------------------------------------------------


def test_the_license_file_and_the_pep_639_metadata_agree():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (root / "LICENSE").read_text().startswith("MIT License\n")


# ---- data-shape errors name the key that fixes them -------------------------------------------


def _png_classes(folder: Path, mode: str, size: int = 28, classes: int = 2) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                folder / str(k) / f"{i}.png"
            )
    return folder


def test_an_rgb_folder_for_an_mnist_model_says_to_set_data_channels(tmp_path):
    from ganstack.config import ConfigError, load_config
    from ganstack.train.trainer import Trainer

    base = [
        "data.name=folder",
        "data.eval_size=0",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    rgb = _png_classes(tmp_path / "rgb", "RGB")
    cfg = load_config("sgan-mnist", [*base, f"data.path={rgb}"])
    with pytest.raises(
        ConfigError,
        match=r"take \(1, 28, 28\).*has \(3, 28, 28\)\. Set "
        r"data\.channels=1 to load the folder data",
    ):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # Grey images of the wrong size: the key is data.resolution.
    grey = _png_classes(tmp_path / "grey", "L", size=20)
    cfg = load_config("sgan-mnist", [*base, f"data.path={grey}", "data.channels=1"])
    with pytest.raises(ConfigError, match=r"Set data\.resolution=28 to"):
        Trainer(cfg, tmp_path / "run")
    # Both: an RGB folder of 20x20 images.
    small = _png_classes(tmp_path / "small", "RGB", size=20)
    cfg = load_config("sgan-mnist", [*base, f"data.path={small}"])
    with pytest.raises(ConfigError, match=r"Set data\.channels=1 data\.resolution=28 to"):
        Trainer(cfg, tmp_path / "run")


def test_an_error_that_is_not_about_the_shape_gets_no_shape_advice(tmp_path):
    from ganstack.config import ConfigError, load_config
    from ganstack.train.trainer import Trainer

    grey = _png_classes(tmp_path / "flat", "L", classes=1)  # one folder: no labels
    cfg = load_config(
        "sgan-mnist",
        ["data.name=folder", f"data.path={grey}", "data.channels=1", "data.eval_size=0"],
    )
    with pytest.raises(ConfigError) as e:
        Trainer(cfg, tmp_path / "run")
    assert "class-conditional" in str(e.value) and "Set data." not in str(e.value)
