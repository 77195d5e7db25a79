"""Attacks on the ganstack CLI, re-run in a temporary folder and counted by outcome.

    python benchmarks/attacks.py                  # every attack; writes benchmarks/results/
    python benchmarks/attacks.py --quick          # one or two per class (attacks-quick.*)
    python benchmarks/attacks.py --only yaml-laughs-file sample-n-1e9
    python benchmarks/attacks.py --list
    python benchmarks/attacks.py --table          # re-render the .md from the stored .json

Each attack builds a hostile or unlucky situation (a damaged run directory, a second writer, a
tiny file that would expand to gigabytes, a special file, a tampered checkpoint record, an
edited config, an out-of-range number, a YAML include of a system file, a pickle or YAML tag
that would run code) and runs one `python -m ganstack` command against it. The command's
result is classified, the first matching row winning:

    code execution  the marker file that the planted pickle or YAML would create exists
    data loss       a file of a run that the command had to leave alone changed or vanished
    hang            the command ran past --timeout (then its process group is killed)
    crash           the process was killed by a signal (a segfault, or the memory cap)
    traceback       a Python traceback on stderr or stdout
    wrong result    exit 0 for input that must be refused; a refusal where the command must
                    work; a check of the command's output failed; planted file content echoed
    unclear error   a nonzero exit without exactly one final `ganstack: error: ` line
    clear error     a nonzero exit with one `ganstack: error: ` line as the last line
    held            exit 0, and the attack's check of the result passed

Every child runs with one thread, a wall-time limit (--timeout, 60 s) and an address-space
cap (RLIMIT_AS): the peak address space of a tiny training run measured first (VmPeak: what
an ordinary command needs, torch's reservations included) plus --mem-gib (1 GiB). A bomb
that gets past the checks therefore shows up as a traceback (MemoryError) or a crash, not a
machine out of memory. The peak resident memory of each command (ru_maxrss from wait4) is in
the tables, beside that of the tiny training run.

Writes benchmarks/results/attacks.{json,md} (--quick: attacks-quick.{json,md}).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import platform
import re
import resource
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

OUTCOMES = [
    "held",
    "clear error",
    "unclear error",
    "wrong result",
    "traceback",
    "crash",
    "hang",
    "data loss",
    "code execution",
]
GOOD = {"held", "clear error"}

CLASSES = {
    "resume-lock": "resume and lock: damaged records with --resume, two writers on one --out",
    "memory-bomb": "tiny files that expand: YAML aliases, shared-list pickles, IDX .gz, .npz",
    "special-file": "a FIFO or a /dev/zero symlink named *.json in checkpoints/; a run's "
    "config.yaml or metrics.jsonl replaced by a FIFO",
    "tampered-record": "checkpoint records with out-of-range fields (rehashed, or not)",
    "edited-config": "config.yaml edited before --resume; overrides given with --resume",
    "cli-number": "out-of-range numbers and device names on the command line",
    "yaml-include": "`base:` naming a file that is no config (shadow-like, binary, device)",
    "code-exec": "pickles and YAML tags that would run code",
}

# The smallest useful run: DCGAN on the bundled MNIST-5k, 4 steps, a checkpoint every step.
TINY = [
    "model.z_dim=8",
    "model.g_dim=8",
    "model.d_dim=8",
    "train.batch_size=16",
    "train.phases.train=4",
    "train.checkpoint_every=1",
    "train.log_every=1",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "train.num_threads=1",
    "train.ema=0",
    "eval.at_end=false",
    "data.eval_size=50",
]
STEPS = 4
CONFIG = "dcgan-mnist"
ERROR = "ganstack: error: "

# What `python -m ganstack` runs, plus a last stderr line (removed before the output is
# classified) with the peak address space and resident memory of the process: ru_maxrss from
# wait4 would count the memory of this script, which the child shares until it execs.
_LAUNCH = """import atexit, sys
def _peak():
    with open('/proc/self/status') as f:
        sys.stderr.write(''.join('ATTACKS-' + ln for ln in f if ln.startswith(('VmPeak:',
                                                                              'VmHWM:'))))
atexit.register(_peak)
from ganstack.cli import main
sys.exit(main(sys.argv[1:]))
"""
_PEAK = re.compile(r"ATTACKS-(VmPeak|VmHWM):\s+(\d+) kB\n?")


# --------------------------------------------------------------------------------------------
# Running a child and classifying what it did
# --------------------------------------------------------------------------------------------


@dataclass
class Child:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    max_rss_mb: float  # the peak resident memory of the process (VmHWM)
    vm_peak_mb: float  # its peak address space (VmPeak)


def _limits(mem_limit: int | None) -> Callable[[], None]:
    def apply() -> None:
        if mem_limit:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from crashes

    return apply


def run_child(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float, mem_limit: int | None
) -> Child:
    """Run ``argv`` in its own process group under the limits; its output, exit status, wall
    time and peak memory. Past ``timeout`` the whole group is killed. The peak memory is what
    the process reports at exit (see ``_LAUNCH``), else the highest seen while polling it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_limits(mem_limit),
            start_new_session=True,
        )
        timed_out = False
        polled = {"VmHWM": 0, "VmPeak": 0}
        while True:
            _poll_memory(proc.pid, polled)
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                timed_out = True
                _kill_group(proc.pid, signal.SIGKILL)
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(proc.pid, signal.SIGKILL)  # anything it left behind
        out.seek(0)
        err.seek(0)
        stderr = err.read(1 << 20).decode("utf-8", "replace")
        reported = {k: int(v) for k, v in _PEAK.findall(stderr)}
        peak = {k: max(reported.get(k, 0), polled[k]) for k in polled}
        return Child(
            argv,
            proc.returncode,
            out.read(1 << 20).decode("utf-8", "replace"),
            _PEAK.sub("", stderr),
            seconds,
            timed_out,
            peak["VmHWM"] / 1024,
            peak["VmPeak"] / 1024,
        )


def _poll_memory(pid: int, peak: dict[str, int]) -> None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
    except (OSError, ValueError, IndexError):
        pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but lock files) by relative path: the SHA-256 of a regular
    file, the target of a symlink, the kind of anything else (never opened: it may be a FIFO)."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name in (".lock", ".writing.lock"):
                continue
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[str(p.relative_to(folder))] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                found[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                found[str(p.relative_to(folder))] = f"special:{stat.S_IFMT(st.st_mode)}"
    return found


@dataclass
class Result:
    name: str
    cls: str
    outcome: str
    detail: str
    seconds: float
    max_rss_mb: float
    command: str = ""


def error_line(child: Child) -> str | None:
    """The one-line error of a clear refusal, else None."""
    lines = [ln for ln in child.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR)]
    if len(errors) == 1 and lines and lines[-1] == errors[0]:
        return errors[0]
    return None


def classify(
    child: Child,
    expect: str,
    *,
    marker: Path | None = None,
    protected: tuple[Path, dict[str, str]] | None = None,
    secrets: tuple[str, ...] = (),
    leak: re.Pattern | None = None,
    check: Callable[[], str | None] | None = None,
) -> tuple[str, str]:
    """(outcome, detail) of one command. ``expect``: "error" (the input must be refused),
    "held" (the command must work), or "either". ``protected``: a folder and its snapshot
    from before, which the command must leave as it was. ``secrets`` / ``leak``: planted
    content that no output may show. ``check``: a test of the result of a command that must
    work, returning what is wrong or None."""
    output = child.stdout + child.stderr
    if marker is not None and marker.exists():
        return "code execution", f"{marker.name} was created"
    if protected is not None:
        now = snapshot(protected[0])
        before = protected[1]
        changed = sorted(k for k in before if now.get(k) != before[k])
        if changed:
            return "data loss", f"changed or removed: {', '.join(changed[:3])}"
    if child.timed_out:
        return "hang", f"still running after {child.seconds:.0f} s; killed"
    if child.returncode < 0:
        return "crash", f"killed by signal {-child.returncode}"
    if "Traceback (most recent call last)" in output:
        last = [ln for ln in child.stderr.splitlines() if ln.strip()]
        return "traceback", (last[-1] if last else "")[:160]
    if any(s in output for s in secrets) or (leak is not None and leak.search(output)):
        return "wrong result", "echoed planted file content"
    if child.returncode != 0:
        line = error_line(child)
        if line is None:
            tail = [ln for ln in output.splitlines() if ln.strip()]
            return "unclear error", f"exit {child.returncode}: {(tail[-1] if tail else '')[:140]}"
        if expect == "held":
            return "wrong result", f"refused, should have worked: {line[len(ERROR) :][:140]}"
        return "clear error", line[len(ERROR) :]
    if expect == "error":
        return "wrong result", "exit 0: accepted input that must be refused"
    if check is not None:
        problem = check()
        if problem:
            return "wrong result", problem
    return "held", "worked"


# --------------------------------------------------------------------------------------------
# The context every attack gets
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    root: Path
    timeout: float = 60.0
    mem_gib: float = 1.0
    mem_limit: int | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    _base: Path | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            GANSTACK_CACHE=str(self.root / "cache"),
        )
        self.env.pop("RANK", None)

    def ganstack(self, *args: str) -> list[str]:
        return [sys.executable, "-c", _LAUNCH, "-q", *args]

    def run(self, argv: list[str], cwd: Path, timeout: float | None = None) -> Child:
        return run_child(
            argv, cwd=cwd, env=self.env, timeout=timeout or self.timeout, mem_limit=self.mem_limit
        )

    def measure_baseline(self) -> None:
        """Train the base run under a wrapper that reports its peak address space and resident
        memory; the cap on every attack is that peak plus --mem-gib."""
        base = self.root / "base"
        argv = self.ganstack("train", CONFIG, "--out", str(base), "--no-eval", *TINY)
        child = run_child(argv, cwd=self.root, env=self.env, timeout=600, mem_limit=None)
        if child.returncode != 0 or not child.vm_peak_mb:
            raise SystemExit(f"the base run failed:\n{child.stderr[-2000:]}")
        self.baseline = {
            "vm_peak_mb": round(child.vm_peak_mb),
            "rss_mb": round(child.max_rss_mb),
            "train_seconds": round(child.seconds, 1),
        }
        self.mem_limit = int(child.vm_peak_mb * (1 << 20) + self.mem_gib * (1 << 30))
        self._base = base

    def base_run(self, dest: Path) -> Path:
        """A copy of the finished tiny run (4 steps, a checkpoint every step)."""
        if self._base is None:
            self.measure_baseline()
        assert self._base is not None
        shutil.copytree(self._base, dest, symlinks=True)
        return dest


# An attack: builds its situation in the folder it is given, runs one command, classifies it.
AttackFn = Callable[[Context, Path], tuple[Child, str, str]]


@dataclass
class Attack:
    name: str
    cls: str
    run: AttackFn
    quick: bool = False


ATTACKS: list[Attack] = []


def attack(cls: str, name: str, quick: bool = False) -> Callable:
    def register(func: AttackFn) -> Callable:
        ATTACKS.append(Attack(name, cls, func, quick))
        return func

    return register


def run_attack(ctx: Context, a: Attack) -> Result:
    folder = ctx.root / "attacks" / a.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    child, outcome, detail = a.run(ctx, folder)
    detail = detail.replace(str(ctx.root), "$TMP").replace("\n", " ")
    command = shlex.join(["ganstack", *child.argv[3:]]).replace(str(ctx.root), "$TMP")
    return Result(
        a.name,
        a.cls,
        outcome,
        detail[:200],
        round(time.monotonic() - t0, 1),
        round(child.max_rss_mb),
        command[:200],
    )


# --------------------------------------------------------------------------------------------
# Helpers that build hostile files
# --------------------------------------------------------------------------------------------


def _records(run: Path) -> list[Path]:
    """The readable checkpoint records of a run, oldest first. Read here without ganstack, and
    only regular files: an attack may have planted a FIFO or a device among them."""
    found = []
    for p in (run / "checkpoints").glob("*.json"):
        try:
            if not stat.S_ISREG(p.lstat().st_mode):
                continue
            step = json.loads(p.read_text())["global_step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if type(step) is int:
            found.append((step, p.name, p))
    return [p for _, _, p in sorted(found)]


def _rewrite(path: Path, rehash: bool = True, **fields: object) -> None:
    """Change fields of a checkpoint record; ``rehash`` makes its own hash match again, so
    only the validation of the fields can refuse it."""
    from ganstack.train import checkpoint as ckpt

    rec = json.loads(path.read_text())
    rec.update(fields)
    if rehash:
        rec["record_sha256"] = ckpt._record_digest(rec)
    path.write_text(json.dumps(rec).replace("Infinity", "1e999"))


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return (
        [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip()]
        if path.is_file()
        else []
    )


def _finished_at(run: Path, step: int) -> Callable[[], str | None]:
    """The check of a training command that must work: its newest checkpoint is at ``step``
    and metrics.jsonl logs steps 1..step, each once."""

    def check() -> str | None:
        found = _records(run)
        newest = json.loads(found[-1].read_text())["global_step"] if found else None
        if newest != step:
            return f"the newest checkpoint is at step {newest}, not {step}"
        if _steps(run) != list(range(1, step + 1)):
            return f"metrics.jsonl logs steps {_steps(run)}, not 1..{step} once each"
        return None

    return check


def _laughs(levels: int) -> str:
    """A flow list whose level i is 9 aliases of level i - 1: 9**levels strings."""
    items = [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[&l0 [ha,ha,ha,ha,ha,ha,ha,ha,ha], " + ", ".join(items) + "]"


class _Evil:
    """Pickles as a call of os.system that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _shared_lists(levels: int, width: int = 8) -> list:
    """One list of ``width`` zeros, referred to ``width`` times by the next, ``levels`` deep:
    width**(levels + 1) items in a pickle of a few hundred bytes."""
    obj: list = [0] * width
    for _ in range(levels):
        obj = [obj] * width
    return obj


def _pickle_ops(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _pickle_ndarray_call(n: int) -> bytes:
    """numpy.ndarray((n,), 'O'): n object slots, each set to None, from one instruction."""
    return _pickle_ops(
        _global("numpy", "ndarray") + b"((J" + struct.pack("<i", n) + b"tX\x01\x00\x00\x00OtR"
    )


def _pickle_short_object_array() -> bytes:
    """An object array of shape (5,) whose item list is empty: NumPy's own state check
    does not look at it (the process crashed with SIGSEGV)."""
    dtype = _global("numpy", "dtype") + b"(X\x02\x00\x00\x00O8\x89\x88tR"
    array = (
        _global("numpy.core.multiarray", "_reconstruct")
        + b"("
        + _global("numpy", "ndarray")
        + b"(K\x00tC\x01btR"
    )
    return _pickle_ops(array + b"(K\x01(K\x05t" + dtype + b"\x89]tb")


def _cub_layout(
    folder: Path,
    *,
    filenames: bytes | None = None,
    embeddings: bytes | None = None,
    class_info: bytes | None = None,
) -> Path:
    """The pickles of a CUB layout (the loader reads them before any image)."""
    import numpy as np

    train = folder / "train"
    train.mkdir(parents=True)
    names = [f"001.Bird/Bird_{i:04d}".encode() for i in range(6)]
    emb = np.zeros((6, 10, 1024), np.float32)
    (train / "filenames.pickle").write_bytes(filenames or pickle.dumps(names, protocol=2))
    (train / "char-CNN-RNN-embeddings.pickle").write_bytes(
        embeddings or pickle.dumps(emb, protocol=2)
    )
    (train / "class_info.pickle").write_bytes(class_info or pickle.dumps([1] * 6, protocol=2))
    return folder


def _train_cub(ctx: Context, d: Path, layout: Path) -> Child:
    return ctx.run(
        ctx.ganstack(
            "train",
            "stackgan-v1-birds",
            "--out",
            str(d / "run"),
            "--no-eval",
            f"data.path={layout}",
            "data.text_encoder=pickle",
            "train.progress=false",
            "train.tensorboard=false",
        ),
        d,
    )


def _train_tiny(
    ctx: Context, d: Path, *extra: str, config: str = CONFIG, out: Path | None = None
) -> Child:
    return ctx.run(
        ctx.ganstack("train", config, "--out", str(out or d / "run"), "--no-eval", *TINY, *extra), d
    )


def _refused_and_absent(
    ctx: Context, d: Path, child: Child, out: Path, **kw: object
) -> tuple[Child, str, str]:
    """A training command that must be refused without creating its run directory."""
    outcome, detail = classify(child, "error", **kw)  # type: ignore[arg-type]
    if outcome == "clear error" and out.exists() and any(out.iterdir()):
        return child, "wrong result", f"refused, but {out.name}/ was created"
    return child, outcome, detail


# --------------------------------------------------------------------------------------------
# resume and lock
# --------------------------------------------------------------------------------------------


def _damaged_resume(how: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        for p in (run_dir / "checkpoints").glob("*.json"):
            if how == "empty":
                p.write_bytes(b"")
            elif how == "garbage":
                p.write_bytes(b"\x00\xffnot a record")
            elif how == "deleted":
                p.unlink()
            elif how == "inf-step":
                _rewrite(p, global_step=float("inf"))
        before = snapshot(run_dir)
        child = _train_tiny(ctx, d, "--resume")
        return child, *classify(child, "error", protected=(run_dir, before))

    return run


for _how, _quick in (("empty", True), ("garbage", False), ("deleted", False), ("inf-step", False)):
    attack("resume-lock", f"resume-{_how}-records", _quick)(_damaged_resume(_how))


@attack("resume-lock", "resume-damaged-newest")
def _resume_damaged_newest(ctx: Context, d: Path) -> tuple[Child, str, str]:
    run_dir = ctx.base_run(d / "run")
    _records(run_dir)[-1].write_bytes(b"")
    child = _train_tiny(ctx, d, "--resume")
    return child, *classify(child, "held", check=_finished_at(run_dir, STEPS))


def _second_writer(resume: bool) -> AttackFn:
    """A long run trains in --out; a second train (or --resume) on the same --out must be
    refused, and the first run must go on, stop on Ctrl-C and leave loadable checkpoints."""

    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = d / "run"
        long = [*TINY, "train.phases.train=100000", "train.keep_checkpoints=1"]
        first = subprocess.Popen(
            ctx.ganstack("train", CONFIG, "--out", str(run_dir), "--no-eval", *long),
            cwd=d,
            env=ctx.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_limits(ctx.mem_limit),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + ctx.timeout
            while not (run_dir / "checkpoints").is_dir() or not _records(run_dir):
                if first.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{d.name}: the first run did not start")
                time.sleep(0.05)
            child = _train_tiny(ctx, d, *(["--resume"] if resume else []))
            outcome, detail = classify(child, "error")
            alive = first.poll() is None
            _kill_group(first.pid, signal.SIGINT)  # Ctrl-C
            try:
                code = first.wait(ctx.timeout)
            except subprocess.TimeoutExpired:
                return child, "hang", "the first run did not stop on Ctrl-C"
        finally:
            if first.poll() is None:
                _kill_group(first.pid, signal.SIGKILL)
                first.wait()
        if outcome != "clear error":
            return child, outcome, detail
        if not alive or code != 130:
            return child, "data loss", f"the first run ended (exit {code}) instead of going on"
        check = ctx.run(
            ctx.ganstack("sample", str(run_dir), "--n", "4", "--out", str(d / "s.png")), d
        )
        if check.returncode != 0:
            return child, "data loss", "the first run's checkpoints no longer load"
        return child, outcome, detail

    return run


attack("resume-lock", "second-train-same-out", quick=True)(_second_writer(False))
attack("resume-lock", "resume-during-run")(_second_writer(True))


# --------------------------------------------------------------------------------------------
# tiny files that expand
# --------------------------------------------------------------------------------------------


@attack("memory-bomb", "yaml-laughs-file", quick=True)
def _yaml_laughs_file(ctx: Context, d: Path) -> tuple[Child, str, str]:
    bomb = d / "bomb.yaml"
    bomb.write_text(f"description: {_laughs(9)}\n")  # 387 million strings, under 1 KB
    child = ctx.run(ctx.ganstack("train", str(bomb), "--out", str(d / "run")), d)
    return _refused_and_absent(ctx, d, child, d / "run")


@attack("memory-bomb", "yaml-laughs-override")
def _yaml_laughs_override(ctx: Context, d: Path) -> tuple[Child, str, str]:
    child = ctx.run(
        ctx.ganstack("train", CONFIG, "--out", str(d / "run"), f"description={_laughs(9)}"), d
    )
    return _refused_and_absent(ctx, d, child, d / "run")


@attack("memory-bomb", "yaml-alias-loop")
def _yaml_alias_loop(ctx: Context, d: Path) -> tuple[Child, str, str]:
    loop = d / "loop.yaml"
    loop.write_text("description: &a [*a]\n")
    child = ctx.run(ctx.ganstack("train", str(loop), "--out", str(d / "run")), d)
    return _refused_and_absent(ctx, d, child, d / "run")


@attack("memory-bomb", "pickle-shared-lists-cifar")
def _pickle_shared_cifar(ctx: Context, d: Path) -> tuple[Child, str, str]:
    folder = d / "cifar-10-batches-py"
    folder.mkdir()
    batch = pickle.dumps({b"data": _shared_lists(9), b"labels": [0] * 10}, protocol=2)
    for i in range(1, 6):  # 8**10 = 1.07 billion items in each, a few hundred bytes
        (folder / f"data_batch_{i}").write_bytes(batch)
    child = _train_tiny(ctx, d, "data.name=cifar10", f"data.path={folder}")
    return child, *classify(child, "error")


def _cub_bomb(which: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        if which == "filenames":
            layout = _cub_layout(d / "birds", filenames=pickle.dumps(_shared_lists(9), 2))
        elif which == "embeddings":  # rows of 1,024 shared 10 and 100,000 times: 4 GB
            row = [0] * 1024
            layout = _cub_layout(
                d / "birds",
                filenames=pickle.dumps([f"b{i}".encode() for i in range(100_000)], 2),
                embeddings=pickle.dumps([[row] * 10] * 100_000, 2),
            )
        elif which == "class-info-array":  # numpy.ndarray((10**9,), 'O') called directly
            layout = _cub_layout(d / "birds", class_info=_pickle_ndarray_call(10**9))
        elif which == "codec-chain":  # b'ab' hex-encoded 40 times: 2 TiB
            chain = (
                (_global("_codecs", "encode") + b"(") * 41
                + b"X\x02\x00\x00\x00ab"
                + b"X\x06\x00\x00\x00latin1tR"
                + b"X\x03\x00\x00\x00hextR" * 40
            )
            layout = _cub_layout(d / "birds", class_info=_pickle_ops(chain))
        elif which == "deep":  # a list nested 1,000,000 deep: str() of it recursed
            layout = _cub_layout(
                d / "birds", filenames=_pickle_ops(b"]" * 10**6 + b"a" * (10**6 - 1))
            )
        else:  # an object array whose items are missing: NumPy crashed
            layout = _cub_layout(d / "birds", class_info=_pickle_short_object_array())
        child = _train_cub(ctx, d, layout)
        return child, *classify(child, "error")

    return run


attack("memory-bomb", "pickle-shared-lists-cub-filenames")(_cub_bomb("filenames"))
attack("memory-bomb", "pickle-shared-rows-cub-embeddings", quick=True)(_cub_bomb("embeddings"))
attack("memory-bomb", "pickle-array-from-nothing-class-info")(_cub_bomb("class-info-array"))
attack("memory-bomb", "pickle-codec-chain-class-info")(_cub_bomb("codec-chain"))
attack("memory-bomb", "pickle-deep-nesting-filenames")(_cub_bomb("deep"))
attack("memory-bomb", "pickle-object-array-short")(_cub_bomb("object-array-short"))


@attack("memory-bomb", "idx-gz-bomb", quick=True)
def _idx_gz_bomb(ctx: Context, d: Path) -> tuple[Child, str, str]:
    """A gzipped IDX file whose header declares 100,000 x 1,000 x 1,000 bytes (100 GB)."""
    folder = d / "mnist"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (100_000, 1000, 1000))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1 << 20)))
    (folder / "train-labels-idx1-ubyte").write_bytes(
        bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(100)
    )
    child = _train_tiny(ctx, d, "data.name=mnist", f"data.path={folder}")
    return child, *classify(child, "error")


def _npz_bomb(path: Path, shape: tuple[int, ...], name: str = "images") -> Path:
    """An .npz of a few hundred bytes whose one array header declares ``shape`` (uint8)."""
    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", header.getvalue())
    return path


HUGE = (10**6, 10**3, 10**3, 1)  # 10**12 bytes declared


@attack("memory-bomb", "npz-huge-shape-eval")
def _npz_eval(ctx: Context, d: Path) -> tuple[Child, str, str]:
    run_dir = ctx.base_run(d / "run")
    before = snapshot(run_dir)
    bomb = _npz_bomb(d / "bomb.npz", HUGE)
    child = ctx.run(
        ctx.ganstack(
            "eval",
            str(run_dir),
            "--samples",
            str(bomb),
            "--metrics",
            "colour",
            "--no-calibrate",
            "--out",
            str(d / "e.json"),
        ),
        d,
    )
    return child, *classify(child, "error", protected=(run_dir, before))


@attack("memory-bomb", "npz-huge-shape-fid", quick=True)
def _npz_fid(ctx: Context, d: Path) -> tuple[Child, str, str]:
    bomb = _npz_bomb(d / "bomb.npz", HUGE)
    child = ctx.run(ctx.ganstack("fid", str(bomb), str(bomb), "--dataset", "mnist5k"), d)
    return child, *classify(child, "error")


# --------------------------------------------------------------------------------------------
# special files in checkpoints/
# --------------------------------------------------------------------------------------------


def _special_record(kind: str, command: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        bad = run_dir / "checkpoints" / "step-9999999.json"
        if kind == "fifo":
            os.mkfifo(bad)
        else:
            bad.symlink_to("/dev/zero")
        before = snapshot(run_dir)
        if command == "sample":
            child = ctx.run(
                ctx.ganstack("sample", str(run_dir), "--n", "4", "--out", str(d / "s.png")), d
            )
            return child, *classify(
                child,
                "held",
                protected=(run_dir, before),
                check=lambda: None if (d / "s.png").is_file() else "no s.png written",
            )
        if command == "eval":
            child = ctx.run(
                ctx.ganstack(
                    "eval",
                    str(run_dir),
                    "--n",
                    "16",
                    "--metrics",
                    "colour",
                    "--no-calibrate",
                    "--out",
                    str(d / "e.json"),
                ),
                d,
            )
            return child, *classify(
                child,
                "held",
                protected=(run_dir, before),
                check=lambda: None if (d / "e.json").is_file() else "no e.json written",
            )
        child = _train_tiny(ctx, d, "--resume", f"train.phases.train={STEPS + 1}")
        return child, *classify(child, "held", check=_finished_at(run_dir, STEPS + 1))

    return run


for _kind in ("fifo", "dev-zero"):
    for _command in ("sample", "eval", "resume"):
        attack(
            "special-file",
            f"{_kind}-record-{_command}",
            quick=(_kind, _command) == ("fifo", "sample"),
        )(_special_record(_kind, _command))


def _special_run_file(name: str, command: str) -> AttackFn:
    """A run's own file (config.yaml, metrics.jsonl) replaced by a FIFO: a refusal or a
    result, never a wait for a writer that never comes."""

    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        (run_dir / name).unlink()
        os.mkfifo(run_dir / name)
        before = snapshot(run_dir)
        if command == "sample":
            child = ctx.run(
                ctx.ganstack("sample", str(run_dir), "--n", "4", "--out", str(d / "s.png")), d
            )
            return child, *classify(child, "either", protected=(run_dir, before))
        child = _train_tiny(ctx, d, "--resume", f"train.phases.train={STEPS + 1}")
        return child, *classify(child, "either")

    return run


attack("special-file", "fifo-config-yaml-sample")(_special_run_file("config.yaml", "sample"))
attack("special-file", "fifo-metrics-jsonl-resume")(_special_run_file("metrics.jsonl", "resume"))


# --------------------------------------------------------------------------------------------
# tampered checkpoint records
# --------------------------------------------------------------------------------------------


def _newest(run: Path) -> list[Path]:
    """The readable records at the newest step (a rolling one and a phase-end one, say)."""
    found = _records(run)
    top = json.loads(found[-1].read_text())["global_step"] if found else None
    return [p for p in found if json.loads(p.read_text())["global_step"] == top]


def _tampered(
    fields: dict[str, object], command: str, rehash: bool = True, every: bool = False
) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        for p in _records(run_dir) if every else _newest(run_dir):
            _rewrite(p, rehash=rehash, **fields)
        before = snapshot(run_dir)
        if command == "sample":
            child = ctx.run(
                ctx.ganstack("sample", str(run_dir), "--n", "4", "--out", str(d / "s.png")), d
            )
            return child, *classify(
                child, "error" if every else "held", protected=(run_dir, before)
            )
        child = _train_tiny(ctx, d, "--resume", f"train.phases.train={STEPS + 1}")
        extra = _finished_at(run_dir, STEPS + 1)

        def check() -> str | None:
            problem = extra()
            if problem:
                return problem
            scales = {json.loads(p.read_text())["lr_scale"] for p in _newest(run_dir)}
            return None if scales == {1.0} else f"the resumed run's lr_scale is {scales}"

        return child, *classify(child, "held", check=check)

    return run


attack("tampered-record", "record-global-step-1e999-sample")(
    _tampered({"global_step": float("inf")}, "sample")
)
attack("tampered-record", "record-global-step-1e999-every-sample")(
    _tampered({"global_step": float("inf")}, "sample", every=True)
)
attack("tampered-record", "record-phase-step-negative-resume", quick=True)(
    _tampered({"phase_step": -1000}, "resume")
)
attack("tampered-record", "record-lr-scale-negative-resume")(_tampered({"lr_scale": -1}, "resume"))
attack("tampered-record", "record-step-edited-unhashed-sample")(
    _tampered({"global_step": 2}, "sample", rehash=False)
)


# --------------------------------------------------------------------------------------------
# config.yaml edited before --resume
# --------------------------------------------------------------------------------------------


def _edited_config(key: str, old: str, new: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        cfg = run_dir / "config.yaml"
        text = cfg.read_text()
        edited = re.sub(rf"(?m)^(\s+{key}:) {re.escape(old)}$", rf"\1 {new}", text, count=1)
        assert edited != text, f"{key}: {old} not found in config.yaml"
        cfg.write_text(edited)
        before = snapshot(run_dir)
        child = _train_tiny(ctx, d, "--resume")
        return child, *classify(child, "error", protected=(run_dir, before))

    return run


attack("edited-config", "config-seed-edited-resume", quick=True)(_edited_config("seed", "0", "1"))
attack("edited-config", "config-lr-edited-resume")(_edited_config("lr", "0.0002", "0.002"))


@attack("edited-config", "override-with-resume-is-saved")
def _override_saved(ctx: Context, d: Path) -> tuple[Child, str, str]:
    run_dir = ctx.base_run(d / "run")
    child = _train_tiny(ctx, d, "--resume", f"train.phases.train={STEPS + 2}")

    def check() -> str | None:
        problem = _finished_at(run_dir, STEPS + 2)()
        if problem:
            return problem
        if not re.search(rf"(?m)^\s+train: {STEPS + 2}$", (run_dir / "config.yaml").read_text()):
            return "config.yaml does not hold the override given with --resume"
        return None

    return child, *classify(child, "held", check=check)


# --------------------------------------------------------------------------------------------
# out-of-range numbers on the command line
# --------------------------------------------------------------------------------------------


def _reader_number(*args: str, command: str = "sample") -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        run_dir = ctx.base_run(d / "run")
        before = snapshot(run_dir)
        out = ["--out", str(d / ("s.png" if command == "sample" else "e.json"))]
        if command == "fid":
            argv = ctx.ganstack("fid", str(run_dir), str(run_dir), *args)
        else:
            argv = ctx.ganstack(command, str(run_dir), *args, *out)
        child = ctx.run(argv, d)
        return child, *classify(child, "error", protected=(run_dir, before))

    return run


def _train_number(override: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        child = _train_tiny(ctx, d, override)
        return _refused_and_absent(ctx, d, child, d / "run")

    return run


for _name, _args, _cmd, _quick in (
    ("sample-n-1e9", ("--n", "1e9"), "sample", True),
    ("sample-n-10e9", ("--n", str(10**9)), "sample", False),
    ("sample-n-negative", ("--n", "-5"), "sample", False),
    ("sample-seed-2e70", ("--seed", str(2**70)), "sample", False),
    ("sample-label-99", ("--label", "99"), "sample", False),
    ("sample-device-foo", ("--device", "foo"), "sample", False),
    ("sample-device-cuda-abc", ("--device", "cuda:abc"), "sample", False),
    ("eval-n-10e12", ("--n", str(10**12)), "eval", False),
    ("eval-seed-2e70", ("--seed", str(2**70)), "eval", False),
    ("fid-device-foo", ("--device", "foo"), "fid", False),
):
    attack("cli-number", _name, _quick)(_reader_number(*_args, command=_cmd))

for _name, _override, _quick in (
    ("train-seed-2e64", f"train.seed={2**64}", False),
    ("train-g-dim-100000", "model.g_dim=100000", True),
    ("train-device-cuda-abc", "train.device=cuda:abc", False),
    ("train-split-seed-2e64", f"data.split_seed={2**64}", False),
    ("train-batch-size-1e12", f"train.batch_size={10**12}", False),
):
    attack("cli-number", _name, _quick)(_train_number(_override))


# --------------------------------------------------------------------------------------------
# YAML includes of files that are no config
# --------------------------------------------------------------------------------------------

# A line of /etc/shadow or /etc/passwd: name:field:number: ...
_ACCOUNT_LINE = re.compile(r"(?m)\b[a-z_][a-z0-9_-]*:[^:\s]*:\d*:\d*:")


PLANTED = ("PLANTEDHASH", "planteduser")


def _include(target: str | None, secrets: tuple[str, ...] = ()) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        cfg = d / "c.yaml"
        if target in (None, "tab"):  # a shadow-like file planted here
            shadow = d / "shadow"
            shadow.write_text(
                "root:$6$PLANTEDHASH:19000:0:99999:7:::\n"
                "planteduser:*:19000:0:99999:7:::\n"
                + ("\tplanteduser-tab-line\n" if target == "tab" else "")
            )
            path = str(shadow)
        elif target == "fifo":
            path = str(d / "pipe.yaml")
            os.mkfifo(path)
        elif target == "self":
            path = str(cfg)
        else:
            path = target
        cfg.write_text(f"base: {path}\n")
        child = ctx.run(ctx.ganstack("train", str(cfg), "--out", str(d / "run")), d)
        return _refused_and_absent(ctx, d, child, d / "run", secrets=secrets, leak=_ACCOUNT_LINE)

    return run


attack("yaml-include", "base-shadow-like-file", quick=True)(_include(None, PLANTED))
attack("yaml-include", "base-shadow-like-invalid-yaml")(_include("tab", PLANTED))
attack("yaml-include", "base-etc-shadow")(_include("/etc/shadow"))
attack("yaml-include", "base-etc-passwd")(_include("/etc/passwd"))
attack("yaml-include", "base-binary")(_include(sys.executable))
attack("yaml-include", "base-dev-zero")(_include("/dev/zero"))
attack("yaml-include", "base-fifo")(_include("fifo"))
attack("yaml-include", "base-itself")(_include("self"))


# --------------------------------------------------------------------------------------------
# pickles and YAML tags that would run code
# --------------------------------------------------------------------------------------------


@attack("code-exec", "pickle-exec-cifar", quick=True)
def _exec_cifar(ctx: Context, d: Path) -> tuple[Child, str, str]:
    marker = d / "CODE-RAN"
    folder = d / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
        )
    child = _train_tiny(ctx, d, "data.name=cifar10", f"data.path={folder}")
    return child, *classify(child, "error", marker=marker)


def _exec_cub(which: str) -> AttackFn:
    def run(ctx: Context, d: Path) -> tuple[Child, str, str]:
        marker = d / "CODE-RAN"
        evil = pickle.dumps([_Evil(marker)], protocol=2)
        layout = _cub_layout(d / "birds", **{which: evil})
        child = _train_cub(ctx, d, layout)
        return child, *classify(child, "error", marker=marker)

    return run


for _which in ("filenames", "embeddings", "class_info"):
    attack("code-exec", f"pickle-exec-cub-{_which.replace('_', '-')}")(_exec_cub(_which))


@attack("code-exec", "pickle-as-checkpoint-weights")
def _exec_weights(ctx: Context, d: Path) -> tuple[Child, str, str]:
    """The newest weights replaced by a pickle, and its record rehashed to match."""
    marker = d / "CODE-RAN"
    run_dir = ctx.base_run(d / "run")
    for rec in _newest(run_dir):
        weights = rec.parent / json.loads(rec.read_text())["weights"]
        blob = pickle.dumps({"model": _Evil(marker)}, protocol=2)
        weights.write_bytes(blob)
        _rewrite(rec, sha256=hashlib.sha256(blob).hexdigest())
    child = ctx.run(ctx.ganstack("sample", str(run_dir), "--n", "4", "--out", str(d / "s.png")), d)
    return child, *classify(child, "either", marker=marker)


@attack("code-exec", "pickle-in-npz-samples")
def _exec_npz(ctx: Context, d: Path) -> tuple[Child, str, str]:
    import numpy as np

    marker = d / "CODE-RAN"
    run_dir = ctx.base_run(d / "run")
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    np.savez(d / "evil.npz", images=evil)
    child = ctx.run(
        ctx.ganstack(
            "eval",
            str(run_dir),
            "--samples",
            str(d / "evil.npz"),
            "--metrics",
            "colour",
            "--no-calibrate",
            "--out",
            str(d / "e.json"),
        ),
        d,
    )
    return child, *classify(child, "error", marker=marker)


@attack("code-exec", "pickle-in-npz-fid")
def _exec_npz_fid(ctx: Context, d: Path) -> tuple[Child, str, str]:
    import numpy as np

    marker = d / "CODE-RAN"
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    np.savez(d / "evil.npz", images=evil)
    child = ctx.run(
        ctx.ganstack("fid", str(d / "evil.npz"), str(d / "evil.npz"), "--dataset", "mnist5k"), d
    )
    return child, *classify(child, "error", marker=marker)


@attack("code-exec", "yaml-python-tag-file")
def _exec_yaml(ctx: Context, d: Path) -> tuple[Child, str, str]:
    marker = d / "CODE-RAN"
    cfg = d / "c.yaml"
    cfg.write_text(
        f'base: {CONFIG}\ndescription: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    child = ctx.run(ctx.ganstack("train", str(cfg), "--out", str(d / "run")), d)
    return child, *classify(child, "error", marker=marker)


@attack("code-exec", "yaml-python-tag-override")
def _exec_yaml_override(ctx: Context, d: Path) -> tuple[Child, str, str]:
    marker = d / "CODE-RAN"
    child = _train_tiny(ctx, d, f'train.seed=!!python/object/apply:os.system ["touch {marker}"]')
    return child, *classify(child, "error", marker=marker)


# --------------------------------------------------------------------------------------------
# Running them all and writing the tables
# --------------------------------------------------------------------------------------------


def run_attacks(ctx: Context, attacks: list[Attack], echo: bool = True) -> list[Result]:
    results = []
    for i, a in enumerate(attacks, 1):
        r = run_attack(ctx, a)
        results.append(r)
        if echo:
            print(
                f"[{i:2d}/{len(attacks)}] {r.outcome:<14} {r.seconds:5.1f} s "
                f"{r.max_rss_mb:5.0f} MB  {a.name}: {r.detail[:90]}",
                flush=True,
            )
    return results


def counts(results: list[Result]) -> dict[str, dict[str, int]]:
    """Outcome counts per attack class, and in all (key "all")."""
    table: dict[str, dict[str, int]] = {}
    for r in results:
        for key in (r.cls, "all"):
            row = table.setdefault(key, dict.fromkeys(OUTCOMES, 0))
            row[r.outcome] += 1
    return {k: table[k] for k in [*CLASSES, "all"] if k in table}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(results: list[Result], meta: dict) -> str:
    c = counts(results)
    short = {
        "held": "held",
        "clear error": "clear err",
        "unclear error": "unclear",
        "wrong result": "wrong",
        "traceback": "traceback",
        "crash": "crash",
        "hang": "hang",
        "data loss": "data loss",
        "code execution": "code exec",
    }
    lines = [
        f"# Attacks on the ganstack CLI{' (--quick)' if meta['quick'] else ''}",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- CPU: {meta['cpu']} ({meta['cores']} cores), Python {meta['python']}, "
        f"torch {meta['torch']}",
        f"- each command: one thread, at most {meta['timeout_s']:.0f} s, address space "
        f"capped at {meta['mem_limit_mb']:,.0f} MB (the tiny training run's peak of "
        f"{meta['baseline']['vm_peak_mb']:,.0f} MB plus {meta['mem_gib']:g} GiB); the "
        f"tiny training run's peak resident memory: {meta['baseline']['rss_mb']:,.0f} MB",
        f"- {len(results)} attacks in {meta['seconds']:.0f} s; outcomes are defined at "
        f"the top of `benchmarks/attacks.py`",
        "",
        "| class | attacks | " + " | ".join(short[o] for o in OUTCOMES) + " |",
        "|---|---:|" + "---:|" * len(OUTCOMES),
    ]
    for key, row in c.items():
        name = "**all**" if key == "all" else key
        lines.append(
            f"| {name} | {sum(row.values())} | " + " | ".join(str(row[o]) for o in OUTCOMES) + " |"
        )
    lines += [
        "",
        "Classes: " + "; ".join(f"`{k}`: {v}" for k, v in CLASSES.items()) + ".",
        "",
        "| class | attack | outcome | s | peak RSS MB | detail |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in results:
        detail = r.detail.replace("|", "\\|")
        lines.append(
            f"| {r.cls} | `{r.name}` | {r.outcome} | {r.seconds:.1f} | "
            f"{r.max_rss_mb:.0f} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one or two attacks of each class")
    p.add_argument("--only", nargs="+", metavar="NAME", help="just these attacks")
    p.add_argument("--list", action="store_true", help="list the attacks and exit")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per command (60)")
    p.add_argument(
        "--mem-gib",
        type=float,
        default=1.0,
        help="address space allowed beyond a tiny training run's peak (1 GiB)",
    )
    p.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--table",
        action="store_true",
        help="re-render the .md from the stored .json (with --quick: the quick one)",
    )
    args = p.parse_args(argv)
    stem = "attacks-quick" if args.quick else "attacks"
    if args.table:
        stored = json.loads((RESULTS / f"{stem}.json").read_text())
        text = markdown([Result(**r) for r in stored["results"]], stored["meta"])
        (RESULTS / f"{stem}.md").write_text(text)
        print(text)
        return 0
    chosen = [
        a for a in ATTACKS if (not args.quick or a.quick) and (not args.only or a.name in args.only)
    ]
    if args.only and len(chosen) != len(set(args.only)):
        known = {a.name for a in ATTACKS}
        p.error(f"unknown attack(s): {', '.join(sorted(set(args.only) - known))}")
    if args.list:
        for a in chosen:
            print(f"{a.cls:<16} {a.name}{'  (quick)' if a.quick else ''}")
        return 0
    root = args.work or Path(tempfile.mkdtemp(prefix="ganstack-attacks-"))
    t0 = time.monotonic()
    try:
        ctx = Context(root, timeout=args.timeout, mem_gib=args.mem_gib)
        ctx.measure_baseline()
        print(
            f"base run: {ctx.baseline['train_seconds']} s, peak address space "
            f"{ctx.baseline['vm_peak_mb']:,.0f} MB, resident {ctx.baseline['rss_mb']:,.0f} MB;"
            f" cap {ctx.mem_limit / (1 << 20):,.0f} MB",
            flush=True,
        )
        results = run_attacks(ctx, chosen)
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)
    import torch

    meta = {
        "quick": args.quick,
        "command": shlex.join(
            ["python", "benchmarks/attacks.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timeout_s": args.timeout,
        "mem_gib": args.mem_gib,
        "mem_limit_mb": (ctx.mem_limit or 0) / (1 << 20),
        "baseline": ctx.baseline,
        "seconds": time.monotonic() - t0,
    }
    text = markdown(results, meta)
    print()
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(
            json.dumps(
                {"meta": meta, "counts": counts(results), "results": [asdict(r) for r in results]},
                indent=1,
            )
            + "\n"
        )
        (RESULTS / f"{stem}.md").write_text(text)
        print(f"wrote {RESULTS / stem}.json and .md")
    bad = sum(1 for r in results if r.outcome not in GOOD)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
