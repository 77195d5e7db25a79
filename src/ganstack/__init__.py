"""ganstack: stacked generative adversarial networks in PyTorch.

>>> import ganstack
>>> run = ganstack.load("runs/sgan-mnist")          # doctest: +SKIP
>>> images = run.sample(16, labels=[3])["image"]    # doctest: +SKIP
>>> model = ganstack.from_pretrained("exports/sgan-mnist")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ganstack.export import Pretrained
    from ganstack.run import Run


def load(run_dir: Any, checkpoint: str | None = None, device: str = "cpu") -> Run:
    """Load a trained run directory (see :class:`ganstack.run.Run`), or an export."""
    from ganstack.run import load as _load

    return _load(run_dir, checkpoint, device)


def from_pretrained(folder: Any, device: str = "cpu") -> Pretrained:
    """Load an export written by ``ganstack export RUN DIR``: the sampling generator alone,
    with the sampling API of :func:`load` (see :class:`ganstack.export.Pretrained`)."""
    from ganstack.export import from_pretrained as _from_pretrained

    return _from_pretrained(folder, device)


__all__ = ["__version__", "from_pretrained", "load"]
