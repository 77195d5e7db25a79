"""What a result was made with: versions, hardware, the command line and the git state.

:func:`environment` is recorded in ``run.json`` (when a run starts, and at each resume) and in
``eval.json``, so that a figure can be traced to the code, the libraries and the machine that
produced it. Nothing here may fail a run: an item that cannot be found is left out.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 10.0


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), so that oneDNN
    runs bf16 convolutions and matmuls faster than fp32 ones. False where torch cannot say."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name)() for name in checks if hasattr(torch.cpu, name))
    except Exception:  # a private helper that changed: take the safe answer
        return False


def git_state(folder: Path | None = None) -> dict[str, Any] | None:
    """``{"commit": SHA, "dirty": bool}`` of the git checkout that holds ``folder`` (default:
    the ganstack source in use); None when it is not in a checkout, or git is missing.
    ``dirty``: tracked files differ from the commit (untracked files do not count)."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # a status never takes the index lock
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = commit.stdout.strip()
    if len(sha) < 40:
        return None
    state: dict[str, Any] = {"commit": sha}
    if status.returncode == 0:
        state["dirty"] = bool(status.stdout.strip())
    return state


def environment(device: Any = None) -> dict[str, Any]:
    """Versions (ganstack, Python, torch, CUDA), the CPU and GPUs, the command line and the
    git state of the ganstack source (when it is a git checkout: absent otherwise).
    ``device``: the device the work ran on, recorded as given."""
    import torch

    from ganstack import __version__

    try:
        from importlib.metadata import version

        ganstack_version = version("ganstack")
    except Exception:  # not installed as a distribution
        ganstack_version = __version__
    env: dict[str, Any] = {
        "ganstack": ganstack_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    if torch.version.cuda:
        env["cuda"] = torch.version.cuda
    try:
        if torch.cuda.is_available():
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop a run from being recorded
        pass
    if device is not None:
        env["device"] = str(device)
    if sys.argv and sys.argv[0]:
        env["command"] = shlex.join(sys.argv)
    git = git_state()
    if git is not None:
        env["git"] = git
    return env
