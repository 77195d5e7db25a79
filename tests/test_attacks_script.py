"""benchmarks/attacks.py: its classifier tells each outcome apart (on fake commands that do
each bad thing), and a few cheap real attacks come out as the clear errors they must be."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attacks.py"


@pytest.fixture(scope="module")
def attacks():
    spec = importlib.util.spec_from_file_location("ganstack_benchmark_attacks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _fake(attacks, tmp_path: Path, code: str, timeout: float = 30, mem_limit: int | None = None):
    """A Python one-liner run the way the script runs a ganstack command."""
    return attacks.run_child(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=timeout,
        mem_limit=mem_limit,
    )


ONE_LINE = "import sys; print('ganstack: error: bad input', file=sys.stderr); sys.exit(2)"


def test_the_classifier_tells_each_outcome_apart(attacks, tmp_path):
    classify = attacks.classify
    assert classify(_fake(attacks, tmp_path, ONE_LINE), "error") == ("clear error", "bad input")
    warned = (
        "import sys; print('a warning first', file=sys.stderr); "
        "print('ganstack: error: bad', file=sys.stderr); sys.exit(2)"
    )
    assert classify(_fake(attacks, tmp_path, warned), "error")[0] == "clear error"
    # The same refusal where the command had to work is a wrong result, not a clear error.
    assert classify(_fake(attacks, tmp_path, ONE_LINE), "held")[0] == "wrong result"
    assert classify(_fake(attacks, tmp_path, ONE_LINE), "either")[0] == "clear error"
    assert classify(_fake(attacks, tmp_path, "pass"), "held") == ("held", "worked")
    assert classify(_fake(attacks, tmp_path, "pass"), "error")[0] == "wrong result"
    assert classify(_fake(attacks, tmp_path, "pass"), "held", check=lambda: "no s.png written") == (
        "wrong result",
        "no s.png written",
    )

    out = classify(_fake(attacks, tmp_path, "raise ValueError('boom')"), "error")
    assert out == ("traceback", "ValueError: boom")
    # A traceback printed before a tidy last line is still a traceback.
    hidden = (
        "import sys, traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    traceback.print_exc()\nprint('ganstack: error: x', file=sys.stderr)\n"
        "sys.exit(2)"
    )
    assert classify(_fake(attacks, tmp_path, hidden), "error")[0] == "traceback"
    two = "import sys; print('oops\\nganstack: error: x\\nmore', file=sys.stderr); sys.exit(1)"
    assert classify(_fake(attacks, tmp_path, two), "error")[0] == "unclear error"

    child = _fake(attacks, tmp_path, "import time; time.sleep(60)", timeout=1)
    assert child.timed_out and child.seconds < 30
    assert classify(child, "error")[0] == "hang"
    segv = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert classify(_fake(attacks, tmp_path, segv), "error") == ("crash", "killed by signal 11")

    marker = tmp_path / "CODE-RAN"
    touch = f"open({str(marker)!r}, 'w'); {ONE_LINE}"
    assert classify(_fake(attacks, tmp_path, touch), "error", marker=marker)[0] == "code execution"

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "a.json").write_text("{}")
    (run / ".lock").write_text("")
    before = attacks.snapshot(run)
    assert list(before) == ["checkpoints/a.json"]  # lock files are not the run's data
    rm = f"import os; os.remove({str(run / 'checkpoints' / 'a.json')!r}); {ONE_LINE}"
    out = classify(_fake(attacks, tmp_path, rm), "error", protected=(run, before))
    assert out == ("data loss", "changed or removed: checkpoints/a.json")

    leak = (
        "import sys; print('ganstack: error: key root:$6$SECRET:1:2:', file=sys.stderr); "
        "sys.exit(2)"
    )
    assert classify(_fake(attacks, tmp_path, leak), "error", secrets=("SECRET",)) == (
        "wrong result",
        "echoed planted file content",
    )
    assert (
        classify(_fake(attacks, tmp_path, leak), "error", leak=attacks._ACCOUNT_LINE)[0]
        == "wrong result"
    )


def test_the_memory_cap_turns_a_bomb_into_an_error(attacks, tmp_path):
    child = _fake(attacks, tmp_path, "x = bytearray(2 << 30)", mem_limit=512 << 20)
    assert attacks.classify(child, "error") == ("traceback", "MemoryError")
    touch = (
        "import time; x = bytearray(64 << 20); x[::4096] = b'1' * len(x[::4096]); "
        "time.sleep(0.3)"
    )  # every page touched, then held while the script polls
    child = _fake(attacks, tmp_path, touch)
    assert child.returncode == 0 and child.max_rss_mb > 60, child.max_rss_mb


def test_real_attacks_are_classified_as_clear_errors(attacks, tmp_path):
    """Three cheap attacks on the real CLI (no training run needed), through the script."""
    ctx = attacks.Context(tmp_path / "work", timeout=120)  # no base run, so no memory cap
    chosen = [
        a
        for a in attacks.ATTACKS
        if a.name in ("yaml-laughs-file", "base-shadow-like-file", "train-seed-2e64")
    ]
    assert len(chosen) == 3
    results = attacks.run_attacks(ctx, chosen, echo=False)
    got = {r.name: (r.outcome, r.detail) for r in results}
    assert all(outcome == "clear error" for outcome, _ in got.values()), got
    assert "expands to more than" in got["yaml-laughs-file"][1]
    assert "not a key name" in got["base-shadow-like-file"][1]
    assert "PLANTED" not in str(got)
    counts = attacks.counts(results)
    assert counts["all"]["clear error"] == 3 and sum(counts["all"].values()) == 3
    text = attacks.markdown(
        results,
        {
            "quick": False,
            "command": "x",
            "date": "d",
            "cpu": "c",
            "cores": 2,
            "python": "3",
            "torch": "t",
            "timeout_s": 60.0,
            "mem_gib": 1.0,
            "mem_limit_mb": 1.0,
            "baseline": {"vm_peak_mb": 1, "rss_mb": 1},
            "seconds": 1.0,
        },
    )
    assert "| **all** | 3 | 0 | 3 |" in text
