"""ganstack: stacked generative adversarial networks in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
