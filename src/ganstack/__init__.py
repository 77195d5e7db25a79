"""ganstack: stacked generative adversarial networks in PyTorch.

>>> import ganstack
>>> run = ganstack.load("runs/sgan-mnist")          # doctest: +SKIP
>>> images = run.sample(16, labels=[3])["image"]    # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ganstack.run import Run


def load(run_dir: Any, checkpoint: str | None = None, device: str = "cpu") -> Run:
    """Load a trained run directory (see :class:`ganstack.run.Run`)."""
    from ganstack.run import load as _load

    return _load(run_dir, checkpoint, device)


__all__ = ["__version__", "load"]
