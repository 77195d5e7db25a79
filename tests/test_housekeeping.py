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
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if p.name != "fileio.py" and ("os.replace(" in p.read_text()
                                               or "tempfile.mkstemp" in p.read_text())]
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
    return ImageDataset(images=images, labels=torch.arange(n) % 2, num_classes=2,
                        name="locktest-train")


def test_two_threads_never_train_the_same_cached_classifier_at_once(monkeypatch, tmp_path,
                                                                    caplog):
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
    for (pa, va), (pb, vb) in zip(results["a"][0].state_dict().items(),
                                  results["b"][0].state_dict().items(), strict=True):
        assert pa == pb and torch.equal(va, vb)
    waited = [r.getMessage() for r in caplog.records if "waiting for it" in r.getMessage()]
    assert len(waited) == 1 and "another process is training" in waited[0]
    folder = tmp_path / "cache" / "classifiers"
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".lock", ".safetensors"]
