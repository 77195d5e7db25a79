"""The captioned shapes' difficulty options (data.shapes_counts, data.shapes_patterns): the
defaults stay the full dataset bit for bit, and in every setting images, attributes, captions
and mentions agree."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ganstack.config import ConfigError, DataConfig, load_config
from ganstack.data import ImageDataset, load_dataset, train_eval_split
from ganstack.data.shapes import (
    ATTRIBUTE_NAMES,
    COLOURS,
    PATTERNS,
    caption,
    draw_attributes,
    make_shapes,
)
from ganstack.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

COUNT, PATTERN = ATTRIBUTE_NAMES.index("count"), ATTRIBUTE_NAMES.index("pattern")
SECOND_WORDS = (" and a small ", " next to a small ", " beside a small ")
ALONE_WORDS = (" alone", " on its own", " by itself")
PATTERN_WORDS = (
    "plain",
    "solid",
    "flat",
    "no pattern",
    "striped",
    "stripy",
    "stripes",
    "dotted",
    "spotted",
    "dots",
    "gradient",
    "fading",
)


def digest(ds) -> str:
    """A hash of everything the shapes dataset makes: images, labels, extras, captions."""
    h = hashlib.sha256()
    h.update(ds.images.numpy().tobytes())
    h.update(ds.labels.numpy().tobytes())
    for key in sorted(ds.extras):
        h.update(key.encode())
        h.update(ds.extras[key].numpy().tobytes())
    h.update("\n".join("\t".join(caps) for caps in ds.captions).encode())
    return h.hexdigest()[:16]


# Computed before the difficulty options existed (commit 6a9a851), with the same function.
BEFORE = {
    (40, 16, 3): "72429f26210b1493",
    (30, 64, 0): "076f3ee24e962ae3",
    (24, 128, 5): "a132cedf58d7c35f",
}


@pytest.mark.parametrize("args", list(BEFORE))
def test_default_shapes_are_bit_identical_to_the_data_before_the_options(args):
    n, res, seed = args
    assert digest(make_shapes(n, res, seed=seed)) == BEFORE[args]
    # Every value given explicitly, in any order, is the default.
    same = make_shapes(n, res, seed=seed, counts=[2, 1], patterns=PATTERNS[::-1])
    assert digest(same) == BEFORE[args]


# The default split's attribute tables, mentions and labels (300 images, 32 px, 48 held out).
SCENES_BEFORE_OPTIONS = "fbafaaca7fe0e1ca"


def test_default_config_loads_the_same_data_as_before():
    # Through the registry and the hashed encoder, the defaults give the full data: the same
    # split, bit for bit, as the options spelled out ...
    base = dict(name="shapes", num_images=300, resolution=32, eval_size=48)
    train, held = load_dataset(DataConfig(**base))
    full = load_dataset(DataConfig(**base, shapes_counts=[1, 2], shapes_patterns=PATTERNS))
    assert (train.fingerprint(), held.fingerprint()) == tuple(d.fingerprint() for d in full)
    assert train.meta["shapes_counts"] == [1, 2] and train.meta["shapes_patterns"] == PATTERNS
    # ... and the same scenes as before the options existed, pinned on the integer tables
    # numpy draws alike on every CPU (the pixels are pinned by the test above). The float
    # caption embeddings differ in their last bits between CPUs (an Intel Xeon's and an AMD
    # EPYC's do), and with them the whole-split fingerprint, so that is not pinned.
    h = hashlib.sha256()
    for key in ("attributes", "mentions"):
        h.update(train.extras[key].contiguous().numpy().tobytes())
    h.update(train.labels.numpy().tobytes())
    assert h.hexdigest()[:16] == SCENES_BEFORE_OPTIONS


def off_segment(image: torch.Tensor, tol: float = 6.0) -> int:
    """Pixels of a (3, H, W) image that are not a blend of its background colour (the median
    corner) and the colour furthest from it: 0 for one shape on a plain background (edges
    are anti-aliased blends of the two); many for a second shape or a patterned background."""
    x = image.float().reshape(3, -1).T
    bg = image[:, [0, 0, -1, -1], [0, -1, 0, -1]].float().T.median(0).values
    d = x[(x - bg).norm(dim=1).argmax()] - bg
    t = ((x - bg) @ d / d.dot(d).clamp(min=1)).clamp(0, 1)
    return int(((x - (bg + t[:, None] * d)).norm(dim=1) > tol).sum())


def captions_of(ds, i):
    return list(zip(ds.captions[i], ds.extras["mentions"][i].tolist(), strict=True))


def test_one_shape_on_plain_backgrounds_images_and_captions_agree():
    ds = make_shapes(150, 32, seed=0, counts=[1], patterns=["plain"])
    attrs = ds.extras["attributes"]
    assert (attrs[:, COUNT] == 0).all() and (attrs[:, PATTERN] == 0).all()
    assert all(off_segment(im) == 0 for im in ds.images)  # one shape, flat background
    for i in range(len(ds)):
        for text, said in captions_of(ds, i):
            assert COLOURS[int(attrs[i, 1])] in text
            # Neither a second shape, nor "alone" or a pattern word (both say nothing here).
            assert not any(w in text for w in SECOND_WORDS + ALONE_WORDS), text
            assert not any(w in text.split() or w in text for w in PATTERN_WORDS), text
            assert not said[COUNT] and not said[PATTERN]
    assert ds.meta["shapes_counts"] == [1] and ds.meta["shapes_patterns"] == ["plain"]


def test_two_shapes_always_every_image_shows_a_second_shape():
    ds = make_shapes(150, 32, seed=0, counts=[2], patterns=["plain"])
    assert (ds.extras["attributes"][:, COUNT] == 1).all()
    # A second shape can hide behind a large central one: nearly all are visible.
    assert np.mean([off_segment(im) > 8 for im in ds.images]) > 0.9
    described = [any(w in t for w in SECOND_WORDS) for i in range(len(ds)) for t in ds.captions[i]]
    assert 0.6 < np.mean(described) < 0.8  # the second shape is still described, 70%
    assert not ds.extras["mentions"][:, :, COUNT].any()  # but count is fixed: never "named"
    assert not any(w in t for caps in ds.captions for t in caps for w in ALONE_WORDS)


def test_mixed_counts_the_count_attribute_says_which_images_hold_two():
    ds = make_shapes(150, 32, seed=2, patterns=["plain"])
    two = ds.extras["attributes"][:, COUNT] == 1
    seen = torch.tensor([off_segment(im) > 8 for im in ds.images])
    assert not seen[~two].any() and seen[two].float().mean() > 0.9
    for i in range(len(ds)):
        for text, said in captions_of(ds, i):
            if any(w in text for w in SECOND_WORDS):
                assert two[i] and said[COUNT]
            if any(w in text for w in ALONE_WORDS):
                assert not two[i] and said[COUNT]
            assert not said[PATTERN]  # the plain pattern is fixed


def test_patterned_backgrounds_are_drawn_only_from_the_allowed_patterns():
    ds = make_shapes(120, 32, seed=1, counts=[1], patterns=["plain", "gradient"])
    pattern = ds.extras["attributes"][:, PATTERN]
    assert set(pattern.tolist()) == {0, 3}
    flat = torch.tensor([off_segment(im) == 0 for im in ds.images])
    # Plain backgrounds are flat; gradients are seen (but a white shape on a grey gradient
    # is all greys, which this test cannot tell from a flat background).
    assert flat[pattern == 0].all() and (~flat[pattern == 3]).float().mean() > 0.95
    mentions = ds.extras["mentions"][:, :, PATTERN]
    assert 0.5 < mentions.float().mean() < 0.7  # the pattern still varies: named 60%
    for i in range(len(ds)):
        for text, said in captions_of(ds, i):
            if said[PATTERN]:
                words = (
                    ("plain", "solid", "flat", "no pattern")
                    if pattern[i] == 0
                    else ("gradient", "fading")
                )
                assert any(w in text for w in words), text
            assert not any(w in text for w in ("striped", "stripy", "dotted", "spotted"))
    stripes = make_shapes(40, 32, seed=1, counts=[1], patterns=["stripes"])
    assert all(off_segment(im) > 8 for im in stripes.images)
    assert not stripes.extras["mentions"][:, :, PATTERN].any()


def test_distinct_attribute_tuples_fall_with_each_restriction():
    # The attributes of stackgan-v2-shapes' 5,520 training images (6,000 made, 480 held out
    # class-balanced by the same split), without rendering them.
    def tuples(**allowed):
        a = draw_attributes(6000, np.random.default_rng([0, 7]), allowed)
        table = torch.from_numpy(np.stack([a[k] for k in ATTRIBUTE_NAMES], 1))
        ds = ImageDataset(
            torch.zeros(6000, 1, 1, 1, dtype=torch.uint8),
            table[:, 0] * len(COLOURS) + table[:, 1],
            extras={"a": table},
        )
        train, _ = train_eval_split(ds, 480, 0)
        assert len(train) == 5520
        return len({tuple(r) for r in train.extras["a"].tolist()})

    full, one = tuples(), tuples(count=[0])
    plain, easy = tuples(pattern=[0]), tuples(count=[0], pattern=[0])
    assert full == 3979  # of 7,680 possible
    assert easy < one < full and easy < plain < full
    assert one <= 3840 and plain <= 1920 and 900 < easy <= 960
    assert tuples(count=[0], pattern=[0, 3]) <= 1920


def test_make_shapes_rejects_unknown_values():
    for bad in ([3], [], [True], [0]):
        with pytest.raises(DataError, match="shapes_counts"):
            make_shapes(4, 16, counts=bad)
    with pytest.raises(DataError, match="shapes_patterns.*plain, stripes, dots, gradient"):
        make_shapes(4, 16, patterns=["zigzag"])


def test_caption_names_no_fixed_attribute():
    rng = np.random.default_rng(0)
    a = {
        "shape": 1,
        "colour": 2,
        "size": 0,
        "position": 4,
        "pattern": 2,
        "background": 1,
        "count": 0,
        "shape2": 0,
        "colour2": 1,
    }
    for _ in range(200):
        text, said = caption(a, rng, frozenset({"pattern", "count"}))
        assert not said[PATTERN] and not said[COUNT]
        assert "dot" not in text.replace("round dot", "") and "spotted" not in text
        assert not any(w in text for w in ALONE_WORDS)


def test_config_options_reach_the_data_and_are_checked():
    cfg = load_config(
        "stackgan-v2-shapes",
        [
            "data.shapes_counts=[1]",
            "data.shapes_patterns=[plain, gradient]",
            "data.num_images=96",
            "data.eval_size=48",
            "data.resolution=16",
        ],
    )
    assert cfg.data.shapes_counts == [1] and cfg.data.shapes_patterns == ["plain", "gradient"]
    train, held = load_dataset(cfg.data)
    for ds in (train, held):
        assert (ds.extras["attributes"][:, COUNT] == 0).all()
        assert set(ds.extras["attributes"][:, PATTERN].tolist()) <= {0, 3}
    assert train.meta["shapes_patterns"] == ["plain", "gradient"]
    # The data's defaults are every value; the StackGAN demos choose the easy variant.
    assert DataConfig().shapes_counts == [1, 2]
    assert load_config("stackgan-v2-shapes").data.shapes_counts == [1]
    for override, match in (
        ("data.shapes_counts=[3]", "shapes_counts takes one or more"),
        ("data.shapes_counts=[]", "shapes_counts takes one or more"),
        ("data.shapes_patterns=[]", "shapes_patterns needs at least"),
        ("data.shapes_patterns=[zigzag]", "expected one of"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config("stackgan-v2-shapes", [override])
    with pytest.raises(ConfigError, match="only the shapes dataset"):
        load_config("sgan-mnist", ["data.shapes_counts=[1]"])
    load_config("sgan-mnist", ["data.shapes_counts=[2, 1]"])  # the default, in another order
