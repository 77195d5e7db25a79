"""Captioned shapes: a procedural text-to-image dataset that needs no download.

Each image holds a main shape (circle, square, triangle or star) with a colour, a size and a
position, sometimes a second small shape behind it, on a background with a pattern (plain,
stripes, dots or a gradient) and a colour. Images are rendered at any resolution with 4x
(2x from 64 pixels up) supersampling, so edges are anti-aliased, and are a pure function of
(seed, index, resolution): the same seed always gives the same images.

Every image comes with 10 captions from varied templates and synonyms ("a small red star at the
top left of a striped blue background", "there is a big yellow disc in the middle"). A caption
need not mention every attribute; which ones it mentions is recorded per caption, so that a
classifier can check whether a generated image matches *its* caption (caption consistency).

Difficulty: ``counts`` (``data.shapes_counts``) and ``patterns`` (``data.shapes_patterns``)
restrict the number of shapes per image and the background patterns to the given values (the
defaults, every value, give the full dataset, bit for bit as before these options existed). An
attribute fixed to one value is never named as such: no "alone" when every image holds one
shape, no pattern word when every background has the same pattern (with two shapes always,
the second shape is still described, by its kind and colour, but ``count`` does not count as
named). So caption consistency scores only what a caption can tell apart.

Mirroring (``mirror=True``, ``data.flip``): ``extras["attributes_mirror"]`` holds each image's
attributes after a left-right flip (left and right positions swapped); the captions of a
flipped image are :func:`ganstack.data.text.mirror_caption` of its captions, exactly what the
caption generator says of the mirrored attributes. The shapes, the dots and the plain
backgrounds are mirror-symmetric; a flipped horizontal gradient runs the other way and
flipped vertical stripes change phase, both of which the generator never draws.

The dataset is an :class:`ImageDataset` with
- ``labels``: the main shape's kind x colour (24 classes, for FID/IS with the domain classifier);
- ``extras["attributes"]``: int64 (N, 7), the attributes below;
- ``extras["mentions"]``: bool (N, 10, 7), which attributes each caption mentions;
- ``captions``: 10 strings per image; ``meta["attribute_sizes"]``, ``meta["attributes"]``,
  ``meta["shapes_counts"]``, ``meta["shapes_patterns"]`` (the values allowed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError

SHAPES = ["circle", "square", "triangle", "star"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "white"]
SIZES = ["small", "large"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right", "centre"]
PATTERNS = ["plain", "stripes", "dots", "gradient"]
BACKGROUNDS = ["grey", "blue", "green", "orange"]
COUNTS = ["one", "two"]

ATTRIBUTES = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "pattern": PATTERNS,
    "background": BACKGROUNDS,
    "count": COUNTS,
}
ATTRIBUTE_NAMES = list(ATTRIBUTES)
CAPTIONS_PER_IMAGE = 10

_RGB = np.array(
    [[220, 40, 40], [40, 180, 60], [50, 80, 230], [240, 220, 40], [150, 60, 200], [245, 245, 245]],
    np.float32,
)
_BG_RGB = np.array([[110, 110, 110], [40, 60, 125], [50, 100, 60], [170, 100, 40]], np.float32)
_CENTRES = np.array([[0.3, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.7], [0.5, 0.5]], np.float32)
_RADIUS = np.array([0.16, 0.28], np.float32)  # small, large (half-size, in image widths)
_SECOND_RADIUS = 0.12


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _shape_mask(
    kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """(N, S, S) bool: pixel (u, v) lies inside shape n (kind, centre, radius per image)."""
    out = np.zeros((len(kind), *u.shape), bool)
    for k in np.unique(kind):
        idx = np.flatnonzero(kind == k)
        du = u[None] - cx[idx, None, None]
        dv = v[None] - cy[idx, None, None]
        rr = r[idx, None, None]
        if k == 0:  # circle
            m = du**2 + dv**2 <= rr**2
        elif k == 1:  # square
            m = np.maximum(np.abs(du), np.abs(dv)) <= 0.85 * rr
        elif k == 2:  # triangle pointing up (v grows downwards): apex -r, base +0.6 r
            t = (dv + rr) / (1.6 * rr)  # 0 at the apex, 1 at the base
            m = (t >= 0) & (t <= 1) & (np.abs(du) <= t * 0.95 * rr)
        else:
            # Five-pointed star, a tip up: between an outer tip and an inner vertex the
            # boundary is a straight line; compare each pixel's radius with it at its angle.
            alpha = np.float32(np.pi / 5)
            phi = np.mod(np.arctan2(dv, du) + np.float32(np.pi / 2), 2 * alpha)
            phi = np.where(phi > alpha, 2 * alpha - phi, phi)
            inner = 0.45
            ex, ey = inner * np.cos(alpha) - 1.0, inner * np.sin(alpha)
            boundary = -ey / (ex * np.sin(phi) - ey * np.cos(phi))
            m = du**2 + dv**2 <= (np.abs(boundary) * rr * 1.1) ** 2
        out[idx] = m
    return out


def _background(
    pattern: np.ndarray, colour: np.ndarray, orient: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """(N, S, S, 3) float background images."""
    factor = np.ones((len(pattern), *u.shape), np.float32)
    for p in np.unique(pattern):
        idx = np.flatnonzero(pattern == p)
        coord = np.where(orient[idx, None, None] == 0, u[None], v[None])
        if p == 1:  # stripes
            factor[idx] = np.where(np.mod(coord * 4.0, 1.0) < 0.5, 1.0, 0.5)
        elif p == 2:  # dots
            du = np.mod(u * 5.0, 1.0) - 0.5
            dv = np.mod(v * 5.0, 1.0) - 0.5
            factor[idx] = np.where(du**2 + dv**2 < 0.2**2, 1.6, 0.7)[None]
        elif p == 3:  # gradient
            factor[idx] = 0.35 + 0.95 * coord
    return colour[:, None, None, :] * factor[..., None]


def render(attrs: dict[str, np.ndarray], resolution: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3, R, R) images of the given attributes (jitter drawn from ``rng``)."""
    n = len(attrs["shape"])
    ss = 4 if resolution < 64 else 2 if resolution < 128 else 1
    s = resolution * ss
    coords = (np.arange(s, dtype=np.float32) + 0.5) / s
    v, u = np.meshgrid(coords, coords, indexing="ij")
    jitter = rng.uniform(-0.04, 0.04, size=(n, 2)).astype(np.float32)
    centre = _CENTRES[attrs["position"]] + jitter
    radius = _RADIUS[attrs["size"]] * rng.uniform(0.9, 1.1, size=n).astype(np.float32)
    colour = _RGB[attrs["colour"]] + rng.uniform(-15, 15, size=(n, 3)).astype(np.float32)
    bg = _BG_RGB[attrs["background"]] + rng.uniform(-12, 12, size=(n, 3)).astype(np.float32)
    img = _background(attrs["pattern"], bg, attrs["orientation"], u, v)
    second = attrs["count"] == 1
    if second.any():
        c2 = _RGB[attrs["colour2"]] + rng.uniform(-15, 15, size=(n, 3)).astype(np.float32)
        m2 = (
            _shape_mask(
                attrs["shape2"],
                attrs["cx2"],
                attrs["cy2"],
                np.full(n, _SECOND_RADIUS, np.float32),
                u,
                v,
            )
            & second[:, None, None]
        )
        img = np.where(m2[..., None], c2[:, None, None, :], img)
    m = _shape_mask(attrs["shape"], centre[:, 0], centre[:, 1], radius, u, v)
    img = np.where(m[..., None], colour[:, None, None, :], img)
    if ss > 1:
        img = img.reshape(n, resolution, ss, resolution, ss, 3).mean(axis=(2, 4))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


def draw_attributes(
    n: int, rng: np.random.Generator, allowed: dict[str, list[int]] | None = None
) -> dict[str, np.ndarray]:
    """The attributes of ``n`` images; ``allowed`` maps an attribute name to the value
    indices it may take (uniformly; default every value). With every value allowed the draws
    are those of the full dataset."""
    allowed = allowed or {}
    a = {}
    for name, values in ATTRIBUTES.items():
        choices = sorted(set(allowed.get(name, range(len(values)))))
        if choices == list(range(len(values))):
            a[name] = rng.integers(0, len(values), size=n)
        else:
            a[name] = np.asarray(choices, np.int64)[rng.integers(0, len(choices), size=n)]
    # Every shape x colour class equally often (so evaluation splits can be class-balanced).
    combo = rng.permutation(n) % (len(SHAPES) * len(COLOURS))
    a["shape"], a["colour"] = combo // len(COLOURS), combo % len(COLOURS)
    a["orientation"] = rng.integers(0, 2, size=n)
    a["shape2"] = rng.integers(0, len(SHAPES), size=n)
    a["colour2"] = (a["colour"] + rng.integers(1, len(COLOURS), size=n)) % len(COLOURS)
    # The second shape sits in a corner away from the main one (behind it if that is central).
    corner = rng.integers(0, 4, size=n)
    main = a["position"]
    opposite = np.array([3, 2, 1, 0, 0])
    corner = np.where(
        main < 4, np.where(rng.random(n) < 0.5, opposite[np.minimum(main, 3)], corner), corner
    )
    corner = np.where(corner == main, opposite[np.minimum(main, 3)], corner)
    cxy = _CENTRES[corner] * 0.8 + 0.1 + rng.uniform(-0.03, 0.03, size=(n, 2))
    a["cx2"], a["cy2"] = cxy[:, 0].astype(np.float32), cxy[:, 1].astype(np.float32)
    return a


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

_SIZE_WORDS = [["small", "little", "tiny"], ["large", "big", "huge"]]
_SHAPE_WORDS = [["circle", "disc", "round dot"], ["square", "box"], ["triangle"], ["star"]]
_POSITION_WORDS = [
    ["at the top left", "in the upper left corner", "in the top left"],
    ["at the top right", "in the upper right corner", "in the top right"],
    ["at the bottom left", "in the lower left corner", "in the bottom left"],
    ["at the bottom right", "in the lower right corner", "in the bottom right"],
    ["in the centre", "in the middle", "at the center"],
]
_PATTERN_ADJ = [
    ["plain", "solid", "flat"],
    ["striped", "stripy"],
    ["dotted", "spotted"],
    ["gradient", "fading"],
]
_PATTERN_NOUN = ["no pattern", "stripes", "dots", "a gradient"]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def caption(
    a: dict[str, int], rng: np.random.Generator, fixed: frozenset[str] = frozenset()
) -> tuple[str, list[bool]]:
    """One caption of an image's attributes and which attributes it mentions. ``fixed``: the
    attributes that take one value in the whole dataset: no words name them and they do not
    count as mentioned (with none fixed, the captions of the full dataset)."""
    said = dict.fromkeys(ATTRIBUTE_NAMES, False)
    said["shape"] = said["colour"] = True
    size = ""
    if rng.random() < 0.7:
        size = _pick(rng, _SIZE_WORDS[a["size"]]) + " "
        said["size"] = True
    obj = f"{size}{COLOURS[a['colour']]} {_pick(rng, _SHAPE_WORDS[a['shape']])}"
    obj = ("an " if obj[0] in "aeiou" else "a ") + obj
    pos = ""
    if rng.random() < 0.6:
        pos = " " + _pick(rng, _POSITION_WORDS[a["position"]])
        said["position"] = True
    bg = ""
    with_pattern, with_colour = rng.random() < 0.6, rng.random() < 0.5
    with_pattern = with_pattern and "pattern" not in fixed
    if with_pattern or with_colour:
        adj = _pick(rng, _PATTERN_ADJ[a["pattern"]]) + " " if with_pattern else ""
        col = BACKGROUNDS[a["background"]] + " " if with_colour else ""
        form = int(rng.integers(3))
        if form == 0:
            bg = f" on a {adj}{col}background"
        elif form == 1:
            bg = f" against a {adj}{col}backdrop"
        else:
            noun = f" with {_PATTERN_NOUN[a['pattern']]}" if with_pattern else ""
            bg = f" over a {col}background{noun}"
        said["pattern"], said["background"] = with_pattern, with_colour
    second = ""
    if a["count"] == 1 and rng.random() < 0.7:
        s2 = _pick(rng, _SHAPE_WORDS[a["shape2"]])
        second = f" {_pick(rng, ['and', 'next to', 'beside'])} a small {COLOURS[a['colour2']]} {s2}"
        said["count"] = True
    elif a["count"] == 0 and rng.random() < 0.3:
        second = _pick(rng, [" alone", " on its own", " by itself"])
        said["count"] = True
        if "count" in fixed:
            second = ""
    form = int(rng.integers(4))
    if form == 0:
        text = f"{obj}{pos}{second}{bg}"
    elif form == 1:
        text = f"there is {obj}{second}{pos}{bg}"
    elif form == 2:
        text = f"a picture of {obj}{pos}{bg}{second}"
    else:
        text = f"{obj}{second}{bg}{pos}"
    return text, [said[k] and k not in fixed for k in ATTRIBUTE_NAMES]


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


# Left-right mirror of each position: top left <-> top right, bottom left <-> bottom right.
MIRRORED_POSITION = np.array([1, 0, 3, 2, 4])


def mirror_attributes(table: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(N, 7) attribute table -> the attributes of the left-right mirrored images."""
    out = table.clone() if isinstance(table, torch.Tensor) else table.copy()
    k = ATTRIBUTE_NAMES.index("position")
    pos = table[:, k]
    out[:, k] = (
        torch.from_numpy(MIRRORED_POSITION).to(pos.device)[pos]
        if isinstance(pos, torch.Tensor)
        else MIRRORED_POSITION[pos]
    )
    return out


def _allowed(option: str, given: Sequence, values: list) -> list[int]:
    """Sorted indices into ``values`` of the ``given`` values; errors name the choices."""
    bad = [v for v in given if isinstance(v, bool) or v not in values]
    if bad or not given:
        raise DataError(
            f"the shapes dataset: {option} takes one or more of "
            f"{', '.join(map(str, values))}; got {list(given)}"
        )
    return sorted({values.index(v) for v in given})


def make_shapes(
    n: int,
    resolution: int,
    seed: int = 0,
    chunk: int = 256,
    *,
    counts: Sequence[int] = (1, 2),
    patterns: Sequence[str] = tuple(PATTERNS),
    mirror: bool = False,
) -> ImageDataset:
    """``n`` captioned images of ``resolution`` x ``resolution`` pixels, deterministic.

    ``counts``: the numbers of shapes an image may hold (1, 2 or both, equally often);
    ``patterns``: the background patterns it may have (names from ``PATTERNS``). ``mirror``:
    also ``extras["attributes_mirror"]`` and ``meta["flip"]``, for the batcher's
    caption-keeping flip (``data.flip``)."""
    if n <= 0:
        raise DataError(f"the shapes dataset needs a positive number of images, got {n}")
    if resolution < 8:
        raise DataError(f"the shapes dataset renders at 8 pixels or more, got {resolution}")
    if seed < 0:  # numpy's seed sequences take no negative numbers
        raise DataError(f"the shapes dataset: data.gen_seed must be >= 0, got {seed}")
    allowed = {
        "count": _allowed("data.shapes_counts", counts, [1, 2]),
        "pattern": _allowed("data.shapes_patterns", patterns, PATTERNS),
    }
    fixed = frozenset(k for k, v in allowed.items() if len(v) == 1)
    rng = np.random.default_rng([seed, 7])
    attrs = draw_attributes(n, rng, allowed)
    images = np.empty((n, 3, resolution, resolution), np.uint8)
    render_rng = np.random.default_rng([seed, 11])
    for s in range(0, n, chunk):
        part = {k: v[s : s + chunk] for k, v in attrs.items()}
        images[s : s + chunk] = render(part, resolution, render_rng)
    caption_rng = np.random.default_rng([seed, 13])
    captions: list[list[str]] = []
    mentions = np.zeros((n, CAPTIONS_PER_IMAGE, len(ATTRIBUTE_NAMES)), bool)
    for i in range(n):
        a = {k: int(v[i]) for k, v in attrs.items() if v.dtype.kind == "i"}
        caps = []
        for j in range(CAPTIONS_PER_IMAGE):
            text, said = caption(a, caption_rng, fixed)
            caps.append(text)
            mentions[i, j] = said
        captions.append(caps)
    table = np.stack([attrs[k] for k in ATTRIBUTE_NAMES], axis=1).astype(np.int64)
    labels = table[:, 0] * len(COLOURS) + table[:, 1]
    extras = {"attributes": torch.from_numpy(table), "mentions": torch.from_numpy(mentions)}
    meta = {
        "attributes": ATTRIBUTE_NAMES,
        "attribute_sizes": [len(v) for v in ATTRIBUTES.values()],
        "attribute_values": {k: list(v) for k, v in ATTRIBUTES.items()},
        "shapes_counts": [i + 1 for i in allowed["count"]],
        "shapes_patterns": [PATTERNS[i] for i in allowed["pattern"]],
    }
    if mirror:
        extras["attributes_mirror"] = torch.from_numpy(mirror_attributes(table))
        meta["flip"] = True
    return ImageDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        num_classes=len(SHAPES) * len(COLOURS),
        name="shapes",
        class_names=[f"{c} {s}" for s in SHAPES for c in COLOURS],
        extras=extras,
        captions=captions,
        meta=meta,
    )
