"""A tiny TorchScript stand-in for NVIDIA's Inception file, for tests only.

It has the same call interface as ``inception-2015-12-05.pt`` (uint8 NCHW 0..255 in,
``return_features`` -> (N, 2048) features, ``no_output_bias`` -> (N, 1008) softmax
probabilities) but random weights, so tests exercise the real loading path without the real
weights.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn


class _StandInInception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 2048)
        self.head = nn.Linear(2048, 1008)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1.0
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        features = F.relu(self.fc(x.flatten(1)))
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.head.weight)
        else:
            logits = self.head(features)
        return F.softmax(logits, dim=1)


def make_standin_inception(path: str | os.PathLike[str], seed: int = 0) -> str:
    """Build the stand-in network with a fixed seed, script it and save it at ``path``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _StandInInception().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(path))
    return str(path)
