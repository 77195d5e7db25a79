from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from ganstack.errors import GanstackError
from ganstack.metrics.inception import ENV_VAR, InceptionExtractor

from .standin import make_standin_inception


@pytest.fixture(scope="module")
def standin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "standin-inception.pt"
    make_standin_inception(path)
    return path


@pytest.fixture(scope="module")
def extractor(standin_path: Path) -> InceptionExtractor:
    return InceptionExtractor(standin_path)


def _images(n: int, c: int, size: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def test_no_path_and_no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(GanstackError) as info:
        InceptionExtractor()
    message = str(info.value)
    assert "GANSTACK_INCEPTION" in message
    assert "--inception" in message
    assert "inception-2015-12-05.pt" in message
    assert "never downloads" in message
    assert "trust" in message


def test_missing_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    missing = tmp_path / "nope.pt"
    with pytest.raises(GanstackError, match="GANSTACK_INCEPTION") as info:
        InceptionExtractor(missing)
    assert str(missing) in str(info.value)


def test_env_var_points_to_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.pt"))
    with pytest.raises(GanstackError, match="absent.pt"):
        InceptionExtractor()


def test_env_var_resolution(standin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(standin_path))
    ext = InceptionExtractor()
    assert ext.path == standin_path
    assert ext.name == "inception" and ext.feature_dim == 2048
    assert ext.sha256 == hashlib.sha256(standin_path.read_bytes()).hexdigest()


def test_explicit_path_wins_over_env_var(
    standin_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent.pt"))
    assert InceptionExtractor(str(standin_path)).path == standin_path


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_probabilities(extractor: InceptionExtractor, channels: int) -> None:
    feats, probs = extractor(_images(4, channels))
    assert feats.shape == (4, 2048) and feats.dtype == torch.float32
    assert probs.shape == (4, 1008) and probs.dtype == torch.float32
    assert torch.isfinite(feats).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(extractor.features(_images(4, channels)), feats)


def test_grayscale_equals_repeated_rgb(extractor: InceptionExtractor) -> None:
    gray = _images(3, 1, seed=1)
    f_gray, p_gray = extractor(gray)
    f_rgb, p_rgb = extractor(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(f_gray, f_rgb)
    torch.testing.assert_close(p_gray, p_rgb)
    # Different images give different features (the stand-in is not constant).
    assert not torch.allclose(extractor.features(_images(3, 1, seed=2)), f_gray)


def test_rejects_bad_images(extractor: InceptionExtractor) -> None:
    with pytest.raises(GanstackError, match="uint8"):
        extractor(torch.rand(2, 3, 16, 16))
    with pytest.raises(GanstackError, match="C = 1 or 3"):
        extractor(_images(2, 4))
    with pytest.raises(GanstackError, match=r"\(N, C, H, W\)"):
        extractor(torch.zeros(3, 16, 16, dtype=torch.uint8))


def test_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a TorchScript archive")
    with pytest.raises(GanstackError, match="garbage.pt"):
        InceptionExtractor(bad)


def test_wrong_network_output_shape(tmp_path: Path) -> None:
    class Tiny(torch.nn.Module):
        def forward(
            self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False
        ) -> torch.Tensor:
            return img.float().flatten(1)[:, :10]

    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch.jit.script is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Tiny()), str(path))
    ext = InceptionExtractor(path)
    with pytest.raises(GanstackError, match="expected"):
        ext(_images(2, 3))
