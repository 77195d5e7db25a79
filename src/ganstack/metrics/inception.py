"""Inception feature extractor for FID, KID and IS (NVIDIA's TorchScript Inception-v3).

ganstack never downloads weights. The user supplies NVIDIA's ``inception-2015-12-05.pt``, the
TorchScript port of the original TensorFlow Inception graph published with
stylegan2-ada-pytorch's metrics, which gives features matching the reference FID code. The
path comes from the ``path`` argument (the CLI's ``--inception PATH``) or the
``GANSTACK_INCEPTION`` environment variable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ganstack.errors import GanstackError
from ganstack.fileio import sha256_file

__all__ = ["ENV_VAR", "InceptionExtractor", "resolve_inception_path", "sha256_file"]

ENV_VAR = "GANSTACK_INCEPTION"
FILE_NAME = "inception-2015-12-05.pt"

_HOW_TO_GET = (
    f"ganstack never downloads weights. Obtain NVIDIA's {FILE_NAME} (the TorchScript Inception "
    f"file published with stylegan2-ada-pytorch's metrics) on a machine with internet access, "
    f"copy it here, and pass its path with --inception PATH or by setting {ENV_VAR}=PATH. "
    f"The file is loaded as trusted code (TorchScript can run code): only use a file from a "
    f"source you trust."
)


def resolve_inception_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the Inception weights path: ``path`` if given, else ``$GANSTACK_INCEPTION``.

    Raises:
        GanstackError: When neither is given, or the file does not exist; the message explains
            how to obtain the file.
    """
    if path is not None and str(path) != "":
        source = "the given path"
        resolved = Path(path).expanduser()
    else:
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise GanstackError(
                f"no Inception weights file given (neither --inception PATH nor {ENV_VAR} is "
                f"set). {_HOW_TO_GET}"
            )
        source = f"{ENV_VAR}"
        resolved = Path(env).expanduser()
    if not resolved.is_file():
        raise GanstackError(
            f"Inception weights file not found: {resolved} (from {source}). {_HOW_TO_GET}"
        )
    return resolved


class InceptionExtractor:
    """Pool features and class probabilities from NVIDIA's TorchScript Inception-v3.

    Args:
        path: Path to ``inception-2015-12-05.pt``; when ``None``, ``$GANSTACK_INCEPTION``.
        device: Device to run the network on.

    Attributes:
        name: ``"inception"``.
        feature_dim: 2048, the pool-feature dimension.
        num_classes: 1008, the number of output classes.
        path: The resolved weights path.
        sha256: Hex SHA-256 of the weights file, to record which weights produced a result.

    Raises:
        GanstackError: When the file cannot be found or loaded.
    """

    name = "inception"
    feature_dim = 2048
    num_classes = 1008

    def __init__(
        self, path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.path = resolve_inception_path(path)
        self.device = torch.device(device)
        try:
            self.sha256 = sha256_file(self.path)
        except OSError as e:
            raise GanstackError(f"could not read Inception weights file {self.path}: {e}") from e
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in recent PyTorch, but NVIDIA's file is TorchScript.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as e:
            # corrupt file, not TorchScript, incompatible torch version, ...
            raise GanstackError(
                f"could not load the Inception weights file {self.path} as TorchScript ({e}). "
                f"Expected NVIDIA's {FILE_NAME}. {_HOW_TO_GET}"
            ) from e
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module.to(self.device)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise GanstackError(
                f"InceptionExtractor expects a torch.Tensor, got {type(images).__name__}"
            )
        if images.dtype != torch.uint8:
            raise GanstackError(
                f"InceptionExtractor expects uint8 images with values 0..255, got dtype "
                f"{images.dtype}; convert generator output with "
                f"((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)"
            )
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise GanstackError(
                f"InceptionExtractor expects images of shape (N, C, H, W) with C = 1 or 3, got "
                f"{tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images.to(self.device).contiguous()

    def _check(self, out: object, cols: int, what: str, n: int) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, cols):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GanstackError(
                f"the Inception network {self.path} returned {what} of shape {shape}, expected "
                f"({n}, {cols}); is it NVIDIA's {FILE_NAME}?"
            )
        return out.detach().float()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the ``(N, 2048)`` float pool features of uint8 ``(N, C, H, W)`` images."""
        x = self._prepare(images)
        return self._check(
            self.module(x, return_features=True), self.feature_dim, "features", x.shape[0]
        )

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features (N, 2048), probabilities (N, 1008))`` for uint8 images.

        Args:
            images: uint8 ``(N, C, H, W)`` tensor with values 0..255 and C = 1 (repeated to 3
                channels) or 3; any size (the network resizes internally).

        Raises:
            GanstackError: On a wrong dtype or shape, or when the network's outputs do not
                have the expected shapes.
        """
        x = self._prepare(images)
        n = x.shape[0]
        feats = self._check(self.module(x, return_features=True), self.feature_dim, "features", n)
        probs = self._check(
            self.module(x, no_output_bias=True), self.num_classes, "probabilities", n
        )
        return feats, probs

    def __repr__(self) -> str:
        return (
            f"InceptionExtractor(path={str(self.path)!r}, device={str(self.device)!r}, "
            f"sha256={self.sha256[:12]}...)"
        )
