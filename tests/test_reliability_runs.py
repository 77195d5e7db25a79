"""Reliability of run directories: resume never starts over silently, one writer per run,
readers during training, validated checkpoint records, config changes on resume, and small
files that would eat memory or hang (issue 22).

Each test here failed before its fix; docs/reliability.md says how.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ganstack
from ganstack.cli import main
from ganstack.errors import CheckpointError, RunLockedError
from ganstack.fileio import lock_folder, unlock_folder
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import Trainer

from .killing import ENV, run_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

READ_WHILE_TRAINING = 60  # ganstack.load calls while a run writes a checkpoint every step


def _overrides(
    tiny_overrides: list[str], independent: int = 2, joint: int = 2, every: int = 1
) -> list[str]:
    return run_overrides(tiny_overrides, {"independent": independent, "joint": joint}, every)


def _train(argv_tail: list[str], run: Path, *extra: str) -> int:
    return main(["-q", "train", "sgan-mnist", "--out", str(run), "--no-eval", *extra, *argv_tail])


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run (but its lock file), by relative path."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture()
def trained(tmp_path, tiny_overrides) -> tuple[Path, list[str]]:
    """A finished tiny run with a checkpoint every step (4 steps, 2 rolling ones kept)."""
    run = tmp_path / "run"
    over = _overrides(tiny_overrides)
    assert _train(over, run) == 0
    return run, over


# ---- 1. --resume never starts over silently ----------------------------------------------------


def _damage_records(ckdir: Path, how: str) -> None:
    for p in ckdir.glob("*.json"):
        if how == "empty":
            p.write_bytes(b"")
        elif how == "garbage":
            p.write_bytes(b"\x00\xffnot a record")
        elif how == "infinite-step":  # rehashed, so only the validation can catch it
            rec = json.loads(p.read_text())
            rec["global_step"] = float("inf")
            rec["record_sha256"] = ckpt._record_digest(rec)
            p.write_text(json.dumps(rec).replace("Infinity", "1e999"))
        elif how == "deleted":  # weights left without any record
            p.unlink()


@pytest.mark.parametrize("how", ["empty", "garbage", "infinite-step", "deleted"])
def test_resume_with_no_readable_checkpoint_is_an_error_and_changes_nothing(trained, capsys, how):
    run, over = trained
    _damage_records(run / "checkpoints", how)
    before = _snapshot(run)
    code = _train(over, run, "--resume")
    err = capsys.readouterr().err.strip()
    # Before the fix: exit 0, the weights overwritten and metrics.jsonl started afresh.
    assert code == 2, err
    assert err.startswith("ganstack: error: --resume: ") and len(err.splitlines()) == 1, err
    assert "none of its checkpoints can be read" in err and "Nothing was changed" in err
    assert _snapshot(run) == before
    # Without --resume it is not a fresh directory either.
    assert _train(over, run) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_resume_in_a_folder_without_a_run_starts_one(tmp_path, tiny_overrides):
    run = tmp_path / "new"
    assert _train(_overrides(tiny_overrides), run, "--resume") == 0
    assert ckpt.list_checkpoints(run / "checkpoints")


def test_resume_passes_over_a_damaged_newest_record_with_a_warning(trained, caplog):
    run, over = trained
    records = ckpt.list_checkpoints(run / "checkpoints")
    records[-1].write_bytes(b"")
    with caplog.at_level("WARNING", logger="ganstack"):
        assert _train(over, run, "--resume") == 0
    assert "cannot be read and are passed over" in caplog.text


# ---- 2. one writer per run directory; readers during training ----------------------------------


def _start_training(run: Path, over: list[str], *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "ganstack",
        "train",
        "sgan-mnist",
        "--out",
        str(run),
        "--no-eval",
        *extra,
        *over,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, text=True
    )


def _wait(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _long_run(tiny_overrides: list[str]) -> list[str]:
    return _overrides(tiny_overrides, independent=100_000, joint=1) + ["train.keep_checkpoints=1"]


def test_a_second_writer_is_refused_and_the_first_run_goes_on(tmp_path, tiny_overrides, capsys):
    run = tmp_path / "run"
    over = _long_run(tiny_overrides)
    proc = _start_training(run, over)
    try:
        _wait(lambda: len(ckpt.list_checkpoints(run / "checkpoints")) > 0, proc)
        short = over + ["train.phases.independent=2"]  # were it to run, it would end soon
        for extra in (["--resume"], []):
            code = _train(short, run, *extra)
            err = capsys.readouterr().err.strip()
            # Before the fix: --resume deleted the first run's temporary files and trained too.
            assert code == 2, err
            assert f"is in use: process {proc.pid} on host" in err, err
            assert len(err.splitlines()) == 1
        with pytest.raises(RunLockedError):  # the Python API too
            Trainer(ganstack.load(run).config, run, resume=True)
        assert proc.poll() is None  # the first run was not disturbed
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # It has stopped: now --resume may take the directory over.
    assert _train(over + ["train.phases.independent=0"], run, "--resume") == 0


def test_the_lock_dies_with_its_process_even_under_sigkill(tmp_path):
    folder = tmp_path / "run"
    code = (
        "import sys, time; from pathlib import Path; from ganstack.fileio import "
        "lock_folder; lock_folder(Path(sys.argv[1]), 'test'); print('locked', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, env=ENV, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {proc.pid} on host"):
            lock_folder(folder, "test")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    key = lock_folder(folder, "test")  # no stale lock
    assert key is not None
    unlock_folder(key)


def test_readers_load_the_newest_complete_checkpoint_while_the_run_trains(tmp_path, tiny_overrides):
    """``ganstack.load`` (what sample and eval use) during training: a checkpoint every step,
    only one rolling checkpoint kept, so the one a reader picks is soon pruned or replaced.
    Before the fix about 5% of loads failed with a false "is corrupt" (or a traceback)."""
    run = tmp_path / "run"
    proc = _start_training(run, _long_run(tiny_overrides))
    steps = []
    try:
        _wait(lambda: len(ckpt.list_checkpoints(run / "checkpoints")) > 0, proc)
        for _ in range(READ_WHILE_TRAINING):
            loaded = ganstack.load(run)
            steps.append(loaded.step)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert steps == sorted(steps) and steps[-1] > steps[0], steps  # it was training meanwhile


def test_readers_do_not_take_the_write_lock(trained):
    run, _ = trained
    key = lock_folder(run, "test")
    try:
        # In another process, as `ganstack sample` is: a held write lock does not stop it.
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "ganstack",
                "sample",
                str(run),
                "--n",
                "4",
                "--out",
                str(run.parent / "s.png"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
        )
        assert res.returncode == 0, res.stderr
    finally:
        unlock_folder(key)


# ---- 3. the checkpoint record is validated and hashed ------------------------------------------


def _rewrite(path: Path, rehash: bool = True, **fields) -> None:
    rec = json.loads(path.read_text())
    rec.update(fields)
    if rehash:  # a consistent record: only the validation can refuse it
        rec["record_sha256"] = ckpt._record_digest(rec)
    path.write_text(json.dumps(rec).replace("Infinity", "1e999"))


def _newest_records(ckdir: Path) -> list[Path]:
    found = ckpt.list_checkpoints(ckdir)
    top = json.loads(found[-1].read_text())["global_step"]
    return [p for p in found if json.loads(p.read_text())["global_step"] == top]


@pytest.mark.parametrize(
    "field, value",
    [
        ("global_step", float("inf")),
        ("global_step", -5),
        ("global_step", "3"),
        ("global_step", True),
        ("phase_step", -1000),
        ("phase_index", 10**6),
        ("lr_scale", -1.0),
        ("lr_scale", 0.0),
        ("lr_scale", float("nan")),
        ("lr_scale", 5),
        ("elapsed_s", float("inf")),
        ("weights", "../../etc/passwd"),
        ("sha256", "abc"),
        ("data_info", {"shape": [1, 10**9, 28], "num_classes": 10, "name": "", "text_dim": 0}),
        ("best", {"metric": 5, "value": 1.0, "step": 1}),
        ("optimizers", [1, 2]),
    ],
)
def test_an_invalid_record_field_is_refused_and_passed_over(trained, field, value):
    run, _ = trained
    ckdir = run / "checkpoints"
    path = ckpt.list_checkpoints(ckdir)[-1]
    _rewrite(path, **{field: value})
    with pytest.raises(CheckpointError, match=f"'{field}' must be"):
        ckpt.read_checkpoint(path)
    # Listing (what every command does first) passes over it instead of failing.
    assert path not in ckpt.list_checkpoints(ckdir)
    assert ganstack.load(run).checkpoint != path.stem


def test_an_edited_record_fails_its_own_hash_and_an_old_one_still_loads(trained):
    run, _ = trained
    path = ckpt.list_checkpoints(run / "checkpoints")[-1]
    _rewrite(path, rehash=False, lr_scale=0.5)  # valid, but not what was written
    with pytest.raises(CheckpointError, match="does not match its own SHA-256"):
        ckpt.read_checkpoint(path)
    rec = json.loads(path.read_text())  # a format-1 record (older ganstack): no record hash
    del rec["record_sha256"]
    rec["format_version"] = 1
    path.write_text(json.dumps(rec))
    assert ckpt.read_checkpoint(path)[0]["lr_scale"] == 0.5


def test_a_negative_phase_step_does_not_train_extra_steps(trained, caplog):
    """Before the fix, phase_step: -1000 in the newest record trained 1,000 extra steps."""
    run, over = trained
    for path in _newest_records(run / "checkpoints"):
        _rewrite(path, phase_step=-1000)
    with caplog.at_level("WARNING", logger="ganstack"):
        assert _train(over, run, "--resume") == 0
    assert "'phase_step' must be" in caplog.text
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_malformed_rng_state_is_a_checkpoint_error(trained, capsys):
    run, over = trained
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        rec = json.loads(path.read_text())
        rec["rng"]["numpy"] = ["MT19937", [1, 2], 0, 0, 0.0]
        _rewrite(path, rng=rec["rng"])
    assert _train(over, run, "--resume") == 2
    assert "malformed optimizer or RNG state" in capsys.readouterr().err


# ---- 4. the config on resume: compared with the checkpoint's; overrides are saved --------------


def test_a_config_edited_before_resume_is_an_error_unless_given_as_an_override(trained, capsys):
    run, over = trained
    cfg_path = run / "config.yaml"
    text = cfg_path.read_text()
    assert "  seed: 0\n" in text
    cfg_path.write_text(text.replace("  seed: 0\n", "  seed: 5\n", 1))
    code = _train(over, run, "--resume")
    err = capsys.readouterr().err
    # Before the fix: exit 0, the edit passed silently.
    assert code == 2, err
    assert "differs from the one" in err and "train.seed" in err and "override" in err
    # Given on the command line, the change is deliberate: accepted, and saved.
    cfg_path.write_text(text)
    assert _train(over + ["train.seed=5"], run, "--resume") == 0
    assert ganstack.load(run).config.train.seed == 5


def test_overrides_given_with_resume_are_saved_for_eval(tmp_path, mnist_dir, tiny_overrides):
    """A moved data folder: before the fix config.yaml kept the old path, so the evaluation
    after training (and `ganstack eval`) failed."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(mnist_dir, data)
    over = [o for o in _overrides(tiny_overrides) if not o.startswith("data.path")]
    run = tmp_path / "run"
    assert _train(over + [f"data.path={data}"], run) == 0
    moved = data.rename(tmp_path / "moved")
    more = [f"data.path={moved}", "train.phases.joint=3"]  # one more step, on the moved data
    assert _train(over + more, run, "--resume") == 0
    loaded = ganstack.load(run)
    assert loaded.config.data.path == str(moved) and loaded.step == 5
    assert loaded.config.train.phases["joint"] == 3
    assert _train([], run, "--resume") == 0  # the saved config is the checkpoint's now


# ---- 5. small files that would eat memory or hang ----------------------------------------------


def _laughs(levels: int) -> str:
    """A flow list whose level i is 9 aliases of level i - 1: 9**levels strings."""
    items = [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[&l0 [ha,ha,ha,ha,ha,ha,ha,ha,ha], " + ", ".join(items) + "]"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    # 6 levels: 9**6 = 531,441 strings under a valid key. (The real attack used 9 levels, 387
    # million; before the fix it took 2.7 GB, then a MemoryError. This one is small enough to
    # run unfixed: its error message then quoted all of it, 4 MB.)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"description: {_laughs(6)}\n")
    assert main(["train", str(bomb), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expands to more than" in err and len(err) < 400, err[:400]
    argv = ["train", "sgan-mnist", "--out", str(tmp_path / "r"), f"description={_laughs(6)}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "expands to more than" in err and len(err) < 400, err[:400]
    loop = tmp_path / "loop.yaml"
    loop.write_text("description: &a [*a]\n")
    assert main(["train", str(loop), "--out", str(tmp_path / "r")]) == 2
    assert "refers to itself" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_checkpoint_record_that_is_no_regular_file_is_passed_over(trained, kind):
    """Before the fix a FIFO named *.json hung sample, eval and --resume for good, and a
    symlink to /dev/zero read until memory ran out."""
    run, over = trained
    bad = run / "checkpoints" / "step-9999999.json"
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "dev-zero":
        bad.symlink_to("/dev/zero")
    else:
        with open(bad, "wb") as f:
            f.truncate(ckpt.RECORD_LIMIT + 1)  # sparse: no disk space
    for argv in (
        ["sample", str(run), "--n", "4", "--out", str(run.parent / "s.png")],
        ["train", "sgan-mnist", "--out", str(run), "--resume", "--no-eval", *over],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "ganstack", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
        )
        assert res.returncode == 0, res.stderr
    with pytest.raises(
        CheckpointError, match="not a regular file" if kind != "huge" else "more than"
    ):
        ckpt.read_checkpoint(bad)


def test_a_gzipped_idx_bomb_is_refused_before_it_is_decompressed(tmp_path):
    import zlib

    from ganstack.data.formats import read_idx
    from ganstack.errors import DataError

    shape = (200, 1024, 1024)  # 200 MiB of zeros in about 200 KB
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in shape))]
    zeros = bytes(1 << 20)
    for _ in range(200):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"".join(parts))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match="refusing to decompress"):
        read_idx(path)


def test_a_config_key_newer_than_the_checkpoint_is_no_difference(trained):
    """A checkpoint written by a version without some config key (now at its default) resumes:
    a new key must not make every old run unresumable."""
    run, over = trained
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        cfg = json.loads(path.read_text())["config"]
        del cfg["train"]["nan_retries"]
        _rewrite(path, config=cfg)
    assert _train(over, run, "--resume") == 0


# ---- 8. numbers and names out of range on the command line -------------------------------------


def test_out_of_range_numbers_and_devices_are_one_line_errors(trained, capsys):
    """Before the fix each of these ended in a traceback (or tried to allocate terabytes)."""
    run, over = trained
    png = str(run.parent / "s.png")
    cases = {
        "sample --n 1e9": ["sample", str(run), "--n", "1e9", "--out", png],
        "sample --n 10**9": ["sample", str(run), "--n", str(10**9), "--out", png],
        "sample --n 10**7 .npz": [
            "sample",
            str(run),
            "--n",
            str(10**7 * 5),
            "--out",
            str(run.parent / "s.npz"),
        ],
        "sample --seed 2**70": ["sample", str(run), "--seed", str(2**70), "--out", png],
        "sample --seed -1": ["sample", str(run), "--seed", "-1", "--out", png],
        "sample --label 99": ["sample", str(run), "--label", "99", "--out", png],
        "sample --device foo": ["sample", str(run), "--device", "foo", "--out", png],
        "sample --device cuda:abc": ["sample", str(run), "--device", "cuda:abc", "--out", png],
        "eval --seed 2**70": ["eval", str(run), "--seed", str(2**70)],
        "eval --n 10**12": ["eval", str(run), "--n", str(10**12)],
        "eval --device foo": ["eval", str(run), "--device", "foo"],
        "fid --device foo": ["fid", str(run), str(run), "--device", "foo"],
        "train.seed=2**64": [
            "train",
            "sgan-mnist",
            "--out",
            str(run.parent / "x"),
            f"train.seed={2**64}",
        ],
        "train.device=cuda:abc": [
            "train",
            "sgan-mnist",
            "--out",
            str(run.parent / "x"),
            "train.device=cuda:abc",
        ],
        "data.split_seed=2**64": [
            "train",
            "sgan-mnist",
            "--out",
            str(run.parent / "x"),
            f"data.split_seed={2**64}",
        ],
    }
    for name, argv in cases.items():
        try:
            code = main(argv)
        except SystemExit as e:  # argparse exits by itself
            code = e.code
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert err.startswith("ganstack: error: ") and len(err.splitlines()) == 1, (name, err)
    assert not (run.parent / "x").exists()


# ---- 11. smaller: file modes, leftovers, errors that quote files -------------------------------


def test_written_files_get_the_umasks_mode_not_0600(tmp_path):
    from torch import nn

    old = os.umask(0o022)
    try:
        ckpt.atomic_write_text(tmp_path / "a.txt", "x")
        ckpt.save_checkpoint(tmp_path, "c", nn.Linear(2, 2), {}, {"global_step": 0})
    finally:
        os.umask(old)
    for name in ("a.txt", "c.json", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # before: 0o600


def test_a_failed_npz_write_leaves_no_hidden_file(trained, monkeypatch):
    import numpy as np

    run, _ = trained

    def full_disk(file, **arrays):
        Path(file).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError):
        ganstack.load(run).save_samples(run.parent / "s.npz", 4)
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # before: .s.npz.tmp.npz


def test_a_yaml_error_does_not_quote_the_file(tmp_path, capsys):
    """`base: /etc/shadow` used to print a line of that file in PyYAML's error excerpt."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("root:$6$s3cr3tHASH:19000:0:99999:7:::\n\tdaemon:*:19000\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {secret}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "s3cr3t" not in err and "daemon" not in err, err


def test_a_valid_yaml_system_file_as_base_is_not_quoted_either(tmp_path, capsys):
    """A real /etc/shadow has no tab: it parses as a mapping whose key is a whole line
    ("root:HASH:19000:0:99999:7::"), and the unknown-key error quoted that key (found by
    benchmarks/attacks.py, base-etc-shadow). Keys that are no key name are not quoted."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$s3cr3tHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {secret}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a key name" in err and "not shown" in err, err
    assert "s3cr3t" not in err and "root" not in err and "daemon" not in err, err
    assert len(err.splitlines()) == 1
    # A typo is still quoted, with its nearest valid key.
    assert main(["train", "sgan-mnist", "--out", str(tmp_path / "r"), "train.bach_size=3"]) == 2
    assert "'train.bach_size'. Did you mean 'batch_size'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_base_include_of_a_special_file_says_so(tmp_path, capsys, kind):
    target = tmp_path / "pipe.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {target}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"config file {target} is not a regular file" in err, err  # before: "does not exist"


def test_sample_from_a_run_whose_every_record_is_invalid_says_so(trained, capsys):
    """Before: "has no checkpoint yet; train it first", for a run that has checkpoints."""
    run, _ = trained
    for p in ckpt.list_checkpoints(run / "checkpoints"):
        _rewrite(p, global_step=float("inf"))
    assert main(["sample", str(run), "--n", "4", "--out", str(run.parent / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds checkpoints but none of them can be read" in err and len(err.splitlines()) == 1
    assert "train it first" not in err, err


def test_a_cifar_pickle_of_shared_nested_lists_is_refused_without_expanding(tmp_path):
    """A few hundred bytes of pickle can stand for billions of list items (one list shared
    many times, nested). Before the fix np.asarray expanded it: 3.5 GB for 313 bytes. Here
    30 million items (240 MB expanded), small enough to run unfixed. The restricted unpickler
    now measures it first (tests/test_reliability_pickles.py); load_cifar10's own type check
    stays behind it."""
    import pickle
    import tracemalloc

    from ganstack.data.archives import load_cifar10
    from ganstack.errors import DataError

    rows = [[0] * 3072] * 10_000  # 30.7 million items, one row shared
    for i in range(1, 6):
        blob = pickle.dumps({b"data": rows, b"labels": [0] * 10_000}, protocol=2)
        (tmp_path / f"data_batch_{i}").write_bytes(blob)
    assert len(blob) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="its lists refer to one another"):
            load_cifar10(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak


def test_a_config_error_quotes_a_long_value_only_in_part(capsys):
    value = "[" + ", ".join(["x" * 50] * 1000) + "]"  # 53 KB; before: quoted whole
    assert main(["train", "sgan-mnist", f"description={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected a string" in err and "characters)" in err and len(err) < 300, len(err)


# ---- 9. the losses logged across a stop and a resume -------------------------------------------


@pytest.mark.parametrize("stop_at", [3, 5])  # mid-way through a logging interval of 2 steps
def test_losses_logged_across_a_stop_and_resume_are_those_of_a_run_never_stopped(
    tmp_path, tiny_overrides, stop_at
):
    """Before the fix the first row after a resume averaged only the steps after it (with
    train.log_every > 1): the weights matched a run never stopped, the logged losses did not."""
    from ganstack.config import load_config

    from .helpers import logged_losses

    cfg = load_config("sgan-mnist", tiny_overrides + ["train.log_every=2"])
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert Trainer(cfg, straight).fit() == "done"
    assert Trainer(cfg, split).fit(max_steps=stop_at) == "interrupted"
    assert Trainer(cfg, split, resume=True).fit() == "done"
    assert logged_losses(split) == logged_losses(straight)


# ---- 10. a full disk with TensorBoard on -------------------------------------------------------


def test_a_full_disk_under_tensorboard_is_one_line(tmp_path, tiny_overrides):
    """Before the fix TensorBoard's writer thread printed its 16-line traceback first. (In a
    real process: pytest replaces threading.excepthook with its own.)"""
    pytest.importorskip("tensorboard")
    code = (
        "import os, sys\n"
        "from tensorboard.summary.writer import record_writer\n"
        "def full(self, data):\n"
        "    raise OSError(28, os.strerror(28))\n"
        "record_writer.RecordWriter.write = full\n"
        "from ganstack.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    over = _overrides(tiny_overrides) + ["train.tensorboard=true"]
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "-q",
            "train",
            "sgan-mnist",
            "--out",
            str(tmp_path / "run"),
            "--no-eval",
            *over,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    err = res.stderr.strip()
    assert res.returncode == 1, err
    assert (
        err.startswith("ganstack: error: No space left on device") and len(err.splitlines()) == 1
    ), err


# ---- .npz files whose headers ask for more memory than there is -----------------------------


def _npz_bomb(path: Path, shape: tuple[int, ...], name: str = "images") -> Path:
    """An .npz of a few hundred bytes whose one array header declares ``shape`` (uint8)."""
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", header.getvalue())
    return path


def test_an_npz_header_asking_for_terabytes_is_refused_by_every_reader(tmp_path):
    import numpy as np

    from ganstack.errors import GanstackError
    from ganstack.fileio import check_npz
    from ganstack.metrics.evaluate import images_from_npz
    from ganstack.metrics.stats import FeatureStats
    from ganstack.models.sgan import SGANEncoder

    huge = (10**6, 10**3, 10**3, 1)  # 10**12 bytes declared in a file of under 200 bytes
    bomb = _npz_bomb(tmp_path / "bomb.npz", huge)
    assert bomb.stat().st_size < 400
    with pytest.raises(GanstackError, match="would take 1,000,000,000,000 bytes"):
        images_from_npz(str(bomb))
    with pytest.raises(GanstackError, match="more than the"):
        FeatureStats.load(bomb)
    with pytest.raises(CheckpointError, match="more than the"):
        SGANEncoder("mnist", ["fc3"]).load_lasagne_npz(_npz_bomb(tmp_path / "w.npz", huge, "arr_0"))
    # A lone .npy (np.load reads one too) is checked the same way.
    import io

    lone = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lone, {"descr": "|u1", "fortran_order": False, "shape": huge}
    )
    (tmp_path / "lone.npz").write_bytes(lone.getvalue())
    with pytest.raises(GanstackError, match="more than the"):
        images_from_npz(str(tmp_path / "lone.npz"))
    # The sum over the members is what counts: an ordinary file passes at its own size and is
    # refused one byte below it.
    ok = tmp_path / "ok.npz"
    np.savez(ok, a=np.zeros((10, 10), np.uint8), b=np.zeros(5, np.float64))
    check_npz(ok, GanstackError, budget=140)
    with pytest.raises(GanstackError, match="would take 140 bytes"):
        check_npz(ok, GanstackError, budget=139)


def test_the_fid_command_refuses_an_npz_bomb_in_one_line(tmp_path, capsys):
    bomb = _npz_bomb(tmp_path / "bomb.npz", (10**6, 10**3, 10**3, 1))
    assert main(["-q", "fid", str(bomb), str(bomb), "--dataset", "mnist5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganstack: error: ") and "more than the" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_model_too_large_for_memory_is_a_config_error_before_any_allocation():
    from ganstack.config import ConfigError, load_config
    from ganstack.models import DataInfo, build_model

    # g_dim 100,000: about 10**11 weights, far beyond any machine this runs on; the probe
    # built on the meta device finds it out without allocating them.
    cfg = load_config("dcgan-mnist", ["model.g_dim=100000"])
    with pytest.raises(ConfigError, match=r"GiB of weights, more than the .* reduce its widths"):
        build_model(cfg.model, DataInfo((1, 28, 28), 10, "mnist5k"))
    assert build_model(load_config("dcgan-mnist").model, DataInfo((1, 28, 28), 10, "m")) is not None
