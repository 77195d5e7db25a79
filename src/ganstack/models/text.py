"""Text conditioning shared by the StackGAN models: caption choice per training sample and
a bank of training captions to draw sampling conditions from."""

from __future__ import annotations

import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import ConfigError
from ganstack.models.base import DataInfo


class CaptionBankMixin:
    """Sampling conditions for a text model: a bank of training-caption embeddings (filled in
    ``setup``, kept in checkpoints) that ``text`` inputs are drawn from when not given."""

    text_bank: torch.Tensor

    def _init_bank(self, size: int, text_dim: int) -> None:
        self.register_buffer("text_bank", torch.zeros(size, max(text_dim, 1)))  # type: ignore[attr-defined]

    def fill_bank(self, train: ImageDataset) -> None:
        emb = train.extras["embeddings"]
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(emb), generator=g)[: len(self.text_bank)]
        idx = idx.repeat((len(self.text_bank) + len(idx) - 1) // len(idx))[: len(self.text_bank)]
        cap = torch.randint(emb.shape[1], (len(idx),), generator=g)
        self.text_bank.copy_(emb[idx, cap])

    def draw_condition(self, name: str, n: int, generator: torch.Generator | None) -> torch.Tensor:
        idx = torch.randint(len(self.text_bank), (n,), generator=generator)
        return self.text_bank[idx.to(self.text_bank.device)]


def pick_captions(emb: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, K, D) caption embeddings -> (B, D): one random caption per sample (PyTorch code) or
    the mean of 4 distinct random ones (TF code, ``mean4``), using torch's global RNG."""
    b, k, _ = emb.shape
    if mode == "mean4" and k > 1:
        m = min(4, k)
        idx = torch.rand(b, k).argsort(1)[:, :m].to(emb.device)
        return emb.gather(1, idx[:, :, None].expand(-1, -1, emb.shape[2])).mean(1)
    idx = torch.randint(k, (b,)).to(emb.device)
    return emb[torch.arange(b, device=emb.device), idx]


def require_text(info: DataInfo, model: str, has_unconditional: bool = True) -> None:
    """A ConfigError unless the data has caption embeddings. ``has_unconditional``: the model
    has an unconditional variant (``model.text=false``) to suggest."""
    if info.text_dim <= 0:
        if has_unconditional:
            raise ConfigError(
                f"{model} with model.text=true needs captioned data (caption embeddings), but "
                f"dataset '{info.name}' has none; use a captioned dataset (e.g. "
                f"data.name=shapes) or set model.text=false for the unconditional model"
            )
        raise ConfigError(
            f"{model} is a text-to-image model and needs captioned data (caption embeddings), "
            f"but dataset '{info.name}' has none; use a captioned dataset (e.g. "
            f"data.name=shapes)"
        )
