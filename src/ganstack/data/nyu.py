"""NYU Depth v2 (image, surface-normal) pairs as released with S²-GAN (``xiaolonw/ss-gan`` README).

The released data is a folder of jpgs (``render_data``): RGB frames and TV-denoised normal maps,
the normals encoded as p = (n + 1) * 127.5. Two layouts are read:

- a **list file** of pairs, one ``<normal_jpg> <rgb_jpg>`` per line, paths relative to a root
  folder (the official ``trainlist_rand.txt``). ``data.path`` is either the list file (the root
  is then its folder) or the root folder holding ``trainlist_rand.txt``;
- a **folder layout**: ``data.path`` holds ``normals/`` and ``rgb/`` (or ``images/``) with files
  of the same name stem, paired by that stem.

Both pictures of a pair are resized bilinearly to a square (``data.resolution``; 0 keeps the
size, which must then be the same for every frame): the aspect ratio is not kept, as in the
official code. Normals are not re-normalised here (the official 128x128 conditioning normals are
not; the model re-normalises where the code does). ``data.num_images`` > 0 reads only the first
N pairs. There are no labels, so the domain-classifier metrics (FID) are not available.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError

log = logging.getLogger("ganstack")

LIST_NAME = "trainlist_rand.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_pair_list(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """The (normal, rgb) paths of a list file; every line must hold exactly two paths."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read the pair list {list_file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"the pair list {list_file} is not UTF-8 text") from None
    pairs = []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(
                f"{list_file}, line {no}: expected '<normal_jpg> <rgb_jpg>' (two paths), got "
                f"{len(parts)} field(s): {line.strip()[:120]!r}. Fix or remove that line."
            )
        pairs.append((root / parts[0], root / parts[1]))
    if not pairs:
        raise DataError(f"the pair list {list_file} lists no pairs")
    return pairs


def folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """Pairs of ``root/normals/X.*`` and ``root/rgb/X.*`` (or ``root/images/X.*``)."""
    rgb_dir = next((root / n for n in ("rgb", "images") if (root / n).is_dir()), None)
    normal_dir = root / "normals"
    if rgb_dir is None or not normal_dir.is_dir():
        raise DataError(
            f"{root} is neither a pair list nor a folder of pairs: expected the list file "
            f"{LIST_NAME} (lines '<normal_jpg> <rgb_jpg>'), or the subfolders normals/ and rgb/ "
            f"(or images/) holding files of the same names"
        )

    def stems(folder: Path) -> dict[str, Path]:
        return {
            p.stem: p
            for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        }

    normals, rgbs = stems(normal_dir), stems(rgb_dir)
    only_n, only_r = sorted(set(normals) - set(rgbs)), sorted(set(rgbs) - set(normals))
    if only_n or only_r:
        what = []
        if only_n:
            what.append(f"{len(only_n)} normal map(s) without an image (e.g. {normals[only_n[0]]})")
        if only_r:
            what.append(f"{len(only_r)} image(s) without a normal map (e.g. {rgbs[only_r[0]]})")
        raise DataError(
            f"{root}: unpaired files: {'; '.join(what)}. Every file in "
            f"{normal_dir.name}/ needs one of the same name in {rgb_dir.name}/."
        )
    if not normals:
        raise DataError(f"{normal_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [(normals[k], rgbs[k]) for k in sorted(normals)]


def _read(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        exists = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        exists = False
    if not exists:
        raise DataError(
            f"{path} is listed but does not exist; check data.path (the root the "
            f"list's paths are relative to)"
        )
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{path} is not a readable image ({e}); replace it, remove its pair "
            f"from the list, or set data.skip_bad=true"
        ) from None


def load_nyu_normals(
    path: str | Path,
    resolution: int = 128,
    limit: int = 0,
    skip_bad: bool = False,
    workers: int = 8,
) -> ImageDataset:
    """(RGB, normals) pairs: images uint8 (N, 3, R, R), ``extras["normals"]`` the same shape."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"data.path {p} does not exist (expected the folder of the released "
            f"S²-GAN data or its pair list {LIST_NAME})"
        )
    if p.is_file():
        pairs = read_pair_list(p, p.parent)
    elif (p / LIST_NAME).is_file():
        pairs = read_pair_list(p / LIST_NAME, p)
    else:
        pairs = folder_pairs(p)
    if limit > 0:
        pairs = pairs[:limit]

    def read_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            return _read(pair[0], resolution), _read(pair[1], resolution)
        except DataError as e:
            if not skip_bad:
                raise
            log.warning("skipping a pair: %s", e)
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow decodes without the GIL
        read = [r for r in pool.map(read_pair, pairs) if r is not None]
    if not read:
        raise DataError(f"{p}: no readable (normal, image) pair")
    shapes = {r[k].shape for r in read for k in (0, 1)}
    if len(shapes) > 1:
        raise DataError(
            f"{p}: the pictures have different sizes {sorted(shapes)[:3]}; set "
            f"data.resolution to resize them all to one square size"
        )
    normals = torch.from_numpy(np.stack([r[0] for r in read]))
    images = torch.from_numpy(np.stack([r[1] for r in read]))
    return ImageDataset(
        images,
        None,
        name="nyu_normals",
        extras={"normals": normals},
        meta={
            "source": str(p),
            "pairs": len(read),
            "normals": "p = (n + 1) * 127.5 (released jpgs)",
        },
    )
