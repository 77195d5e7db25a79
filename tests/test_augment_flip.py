"""The flip that keeps captions true (data.flip): mirrored captions, attributes and
embeddings, the batcher's flip, and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganstack.config import ConfigError, DataConfig, load_config
from ganstack.data import Batcher, load_dataset
from ganstack.data.augment import mirror_batch
from ganstack.data.shapes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    MIRRORED_POSITION,
    caption,
    draw_attributes,
    make_shapes,
    mirror_attributes,
)
from ganstack.data.text import HashedTextEncoder, encode_mirrored, mirror_caption
from ganstack.errors import DataError

from .helpers import assert_resume_is_exact
from .test_stackgan_v2 import TINY  # the tiny StackGAN-v2 settings

pytestmark = pytest.mark.usefixtures("one_thread")

POSITION = ATTRIBUTE_NAMES.index("position")
FLIP = ["data.flip=true", "model.augment=false"]


def test_mirror_caption_swaps_left_and_right_words_only():
    assert mirror_caption("a red star at the top left") == "a red star at the top right"
    assert mirror_caption("Right of the LEFT box, left") == "Left of the RIGHT box, right"
    assert (
        mirror_caption("a bright leftover in the upper right corner")
        == "a bright leftover in the upper left corner"
    )
    assert mirror_caption("a blue disc in the middle") == "a blue disc in the middle"
    for text in ("the left wing", "a green box in the lower right corner"):
        assert mirror_caption(mirror_caption(text)) == text


def test_mirror_attributes_swaps_left_and_right_positions():
    positions = ATTRIBUTES["position"]
    for p, q in enumerate(MIRRORED_POSITION):
        mirrored = positions[p].replace("left", "L").replace("right", "left").replace("L", "right")
        assert positions[q] == mirrored
    table = np.arange(5 * 7).reshape(5, 7) % 4
    table[:, POSITION] = np.arange(5)
    out = mirror_attributes(table)
    assert out[:, POSITION].tolist() == [1, 0, 3, 2, 4]
    keep = [k for k in range(7) if k != POSITION]
    assert (out[:, keep] == table[:, keep]).all() and (table[:, POSITION] == np.arange(5)).all()
    assert torch.equal(mirror_attributes(torch.from_numpy(table)), torch.from_numpy(out))
    assert (mirror_attributes(out) == table).all()


def test_mirrored_captions_are_those_the_generator_makes_of_mirrored_attributes():
    # Same caption RNG, mirrored attributes: the caption is the word-swapped one, naming the
    # same attributes; so the mirrored embeddings are exact, not an approximation.
    attrs = draw_attributes(300, np.random.default_rng(0))
    table = np.stack([attrs[k] for k in ATTRIBUTE_NAMES], 1)
    mirrored = mirror_attributes(table)
    named_side = 0
    for i in range(len(table)):
        a = {k: int(v[i]) for k, v in attrs.items() if v.dtype.kind == "i"}
        b = dict(a, position=int(mirrored[i, POSITION]))
        r1, r2 = np.random.default_rng(i), np.random.default_rng(i)
        for _ in range(10):
            (t1, s1), (t2, s2) = caption(a, r1), caption(b, r2)
            assert mirror_caption(t1) == t2 and s1 == s2
            named_side += ("left" in t1) or ("right" in t1)
    assert named_side > 500  # the position words were exercised


def test_mirror_batch_flips_only_the_chosen_samples_and_swaps_their_conditions():
    images = torch.arange(4 * 3 * 2 * 5, dtype=torch.uint8).reshape(4, 3, 2, 5)
    emb, emb_m = torch.randn(4, 10, 6), torch.randn(4, 10, 6)
    attrs = torch.randint(0, 5, (4, 7))
    labels = torch.arange(4)
    batch = {
        "images": images,
        "labels": labels,
        "embeddings": emb,
        "embeddings_mirror": emb_m,
        "attributes": attrs,
        "attributes_mirror": attrs + 10,
    }
    mask = torch.tensor([True, False, False, True])
    out = mirror_batch(batch, mask)
    assert set(out) == {"images", "labels", "embeddings", "attributes"}
    for i, m in enumerate(mask.tolist()):
        assert torch.equal(out["images"][i], images[i].flip(2) if m else images[i])
        assert torch.equal(out["embeddings"][i], emb_m[i] if m else emb[i])
        assert torch.equal(out["attributes"][i], attrs[i] + 10 if m else attrs[i])
    assert torch.equal(out["labels"], labels)


def _flip_data(**kw):
    cfg = DataConfig(
        name="shapes", num_images=240, resolution=32, eval_size=48, text_dim=64, flip=True, **kw
    )
    return load_dataset(cfg)


def test_mirrored_embeddings_encode_the_mirrored_captions():
    train, held = _flip_data()
    enc = HashedTextEncoder(64)
    emb, emb_m = train.extras["embeddings"], train.extras["embeddings_mirror"]
    changed = 0
    for i in range(0, len(train), 7):
        for j, text in enumerate(train.captions[i]):
            want = enc.encode([mirror_caption(text)])[0]
            assert torch.allclose(emb_m[i, j], want, atol=1e-5)
            changed += not torch.equal(emb_m[i, j], emb[i, j])
            if mirror_caption(text) == text:
                assert torch.equal(emb_m[i, j], emb[i, j])
    assert changed > 20
    assert torch.equal(
        train.extras["attributes_mirror"], mirror_attributes(train.extras["attributes"])
    )
    assert held.meta["flip"] and "embeddings_mirror" in held.extras  # split keeps them
    # The same data without the flip has the same fingerprint: the same domain classifier.
    plain_train, plain_held = load_dataset(
        DataConfig(name="shapes", num_images=240, resolution=32, eval_size=48, text_dim=64)
    )
    assert train.fingerprint() == plain_train.fingerprint()
    assert held.fingerprint() == plain_held.fingerprint()
    # Without left or right in any caption, the embeddings are kept, not re-encoded.
    caps = [["a red star", "a blue box in the middle"]]
    same = torch.randn(1, 2, 64)
    assert torch.equal(encode_mirrored(enc, caps, same), same)


def _main_shape_side(image: torch.Tensor) -> float:
    """Mean column (0..1) of the pixels that differ from the plain background."""
    bg = image[:, [0, 0, -1, -1], [0, -1, 0, -1]].float().median(1).values
    far = (image.float() - bg[:, None, None]).norm(dim=0) > 30
    cols = far.nonzero()[:, 1].float()
    return float((cols.mean() + 0.5) / image.shape[-1])


def test_batcher_flips_half_of_each_batch_with_the_conditions_that_match():
    # One shape on a plain background: the shape's side can be read off the pixels, and must
    # agree with the (possibly mirrored) position attribute and caption words of the batch.
    train, _ = _flip_data(shapes_counts=[1], shapes_patterns=["plain"])
    plain = Batcher(train, 24, seed=3)
    plain.flip = False
    batcher = Batcher(train, 24, seed=3)
    flipped_total, sided = 0, 0
    for step in range(6):
        raw, out = plain.batch(step), batcher.batch(step)
        mask = batcher.flip_mask(step)
        assert torch.equal(mask, Batcher(train, 24, seed=3).flip_mask(step))  # (seed, step)
        assert "embeddings_mirror" not in out and "attributes_mirror" not in out
        idx = batcher.indices(step)
        for b in range(24):
            m = bool(mask[b])
            assert torch.equal(
                out["images"][b], raw["images"][b].flip(2) if m else raw["images"][b]
            )
            key = "embeddings_mirror" if m else "embeddings"
            assert torch.equal(out["embeddings"][b], train.extras[key][idx[b]])
            assert torch.equal(out["labels"][b], raw["labels"][b])
            pos = int(out["attributes"][b, POSITION])
            if pos < 4:
                side = _main_shape_side(out["images"][b])
                assert (side > 0.5) == (pos in (1, 3)), (step, b, side, pos)
                sided += 1
                words = [mirror_caption(t) if m else t for t in train.captions[int(idx[b])]]
                name = ATTRIBUTES["position"][pos].split()[1]  # "left" / "right"
                other = "right" if name == "left" else "left"
                assert all(other not in t for t in words)
        flipped_total += int(mask.sum())
    assert 0.35 < flipped_total / (6 * 24) < 0.65 and sided > 60
    assert not torch.equal(batcher.flip_mask(0), batcher.flip_mask(1))


def test_flip_masks_are_the_same_for_any_number_of_processes():
    train, _ = _flip_data()
    whole = Batcher(train, 16, seed=1)
    parts = [Batcher(train, 8, seed=1, rank=r, world=2) for r in range(2)]
    for step in range(3):
        assert torch.equal(whole.flip_mask(step), torch.cat([p.flip_mask(step) for p in parts]))
        both = [p.batch(step) for p in parts]
        ref = whole.batch(step)
        for key in ref:
            assert torch.equal(ref[key], torch.cat([b[key] for b in both]))


def test_without_the_option_nothing_changes():
    train, _ = load_dataset(
        DataConfig(name="shapes", num_images=96, resolution=16, eval_size=48, text_dim=32)
    )
    assert "flip" not in train.meta and not any(k.endswith("_mirror") for k in train.extras)
    batcher = Batcher(train, 8, seed=0)
    assert not batcher.flip
    idx = batcher.indices(0)
    assert torch.equal(batcher.batch(0)["images"], train.images[idx])


def test_flip_option_is_checked():
    # The demos flip caption-true by default: turning the model's own flip back on is refused.
    with pytest.raises(ConfigError, match="set model.augment=false"):
        load_config("stackgan-v2-shapes", ["model.augment=true"])
    with pytest.raises(ConfigError, match="set model.augment=false"):
        load_config("stackgan-v1-shapes", ["model.augment=true"])
    assert load_config("stackgan-v2-shapes", FLIP).data.flip
    load_config("dcgan-shapes", ["data.flip=true"])  # models without a flip of their own
    with pytest.raises(DataError, match="cannot"):
        load_dataset(DataConfig(name="mnist5k", eval_size=0, flip=True))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(
            DataConfig(
                name="shapes",
                num_images=20,
                resolution=8,
                eval_size=0,
                flip=True,
                text_encoder="pickle",
            )
        )


def test_make_shapes_mirror_adds_only_the_mirror_extras():
    a, b = make_shapes(30, 16, seed=2), make_shapes(30, 16, seed=2, mirror=True)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert set(b.extras) - set(a.extras) == {"attributes_mirror"} and b.meta["flip"]


def test_stackgan_v2_trains_with_the_flip_and_resumes_exactly(tmp_path):
    cfg = load_config("stackgan-v2-shapes", TINY + FLIP + ["train.phases.joint=6"])
    assert_resume_is_exact(cfg, tmp_path)
