"""The StackGAN papers' datasets in the official code's on-disk layouts (``hanzhanggit/StackGAN``
misc/datasets.py, ``StackGAN-Pytorch`` code/miscc/datasets.py, ``StackGAN-v2`` code/datasets.py).

CUB-200-2011 birds (``data.name=cub``), ``data.path`` = the ``birds`` folder::

    CUB_200_2011/images/<class>/<name>.jpg, CUB_200_2011/images.txt, bounding_boxes.txt
    text/<class>/<name>.txt  (or text_c10/)      10 captions per image, one per line
    train/filenames.pickle  train/char-CNN-RNN-embeddings.pickle  [train/class_info.pickle]
    test/  (the same files)

Oxford-102 flowers (``data.name=oxford``), ``data.path`` = the ``flowers`` folder::

    jpg/image_XXXXX.jpg   text_c10/class_NNNNN/image_XXXXX.txt
    train/filenames.pickle  train/char-CNN-RNN-embeddings.pickle  train/class_info.pickle

MS-COCO 2014 (``data.name=coco``), ``data.path`` = the ``coco`` folder of StackGAN-Pytorch
(its ``miscc/datasets.py`` reads ``images/<key>.jpg`` and ``text/<key>.txt``)::

    images/<key>.jpg    (or the COCO zips' train2014/<key>.jpg and val2014/<key>.jpg, or
                         <key>.jpg when the key names its folder; .png is also accepted)
    text/<key>.txt      5 captions per image, one per line (only needed without
                        data.text_encoder=pickle; extra lines are ignored)
    train/filenames.pickle  train/char-CNN-RNN-embeddings.pickle   (no class_info.pickle)

Birds are cropped to their bounding box as the code does (R = 0.75 max(w, h) around the box
centre, clipped to the image; ``custom_crop``); birds and flowers are then resized (bilinear) so the
shorter side is ``data.resolution`` and centre-cropped to a square. COCO images are resized
straight to ``data.resolution`` squared (bilinear), aspect ratio not kept, as the StackGAN-Pytorch
code does (it resizes every image to a square before its random crop). ``data.num_images`` > 0
reads only the first N images of a layout (all of COCO's 80k training images take 15.7 GB at
256 pixels). Captions become vectors with ``data.text_encoder``: ``pickle`` uses the released
char-CNN-RNN embeddings (N, captions, 1024); ``hash`` (default) encodes the caption files, and
works for new captions at sampling time.

The pickles were written by Python 2. They are read with ganstack's restricted unpickler
(:func:`ganstack.data.archives.safe_unpickle`): plain containers, strings, numbers and NumPy
arrays only, so a pickle that references code is refused before anything runs; and one that
stands for far more items than its size holds (lists shared and nested, arrays declared but not
stored) is refused before anything here walks it (``str``, ``np.asarray``, ``list``).

LSUN scenes (``data.name=lsun``): a scene's training LMDB (``bedroom_train_lmdb``), read with
the optional ``lmdb`` package (``pip install 'ganstack[lsun]'``); ``data.num_images`` caps how
many images are read (the whole bedroom set does not fit in memory at 256 pixels).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.data.archives import safe_unpickle
from ganstack.data.base import ImageDataset
from ganstack.errors import DataError, MissingDependencyError

log = logging.getLogger("ganstack")

CAPTIONS_PER_IMAGE = 10  # CUB and Oxford (Reed et al.'s captions)
COCO_CAPTIONS_PER_IMAGE = 5  # COCO's annotators wrote 5 (some images have 6 or 7)
COCO_IMAGE_DIRS = ("images", ".", "train2014", "val2014")
COCO_IMAGE_EXTENSIONS = (".jpg", ".png")


def _text(x: Any) -> str:
    return x.decode("latin1") if isinstance(x, bytes) else str(x)


def _read_pickle_list(path: Path, what: str) -> list:
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: the StackGAN layout keeps the {what} there "
            f"(it comes with the embedding download)"
        )
    obj = safe_unpickle(path)
    if isinstance(obj, np.ndarray):
        return list(obj)
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{path} should hold a list ({what}), found {type(obj).__name__}")
    return list(obj)


def _load_image(
    path: Path, resolution: int, box: tuple[float, float, float, float] | None, squash: bool = False
) -> np.ndarray:
    """An RGB image, (bounding-box crop), resized: shorter side to ``resolution`` and
    centre-cropped, or (``squash``) straight to ``resolution`` squared."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if box is not None:  # the code's custom_crop
                x, y, w, h = box
                r = int(0.75 * max(w, h))
                cx, cy = int(x + w / 2), int(y + h / 2)
                W, H = im.size
                im = im.crop((max(0, cx - r), max(0, cy - r), min(W, cx + r), min(H, cy + r)))
            if squash:
                im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
            w, h = im.size
            s = resolution / min(w, h)
            nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - resolution) // 2, (nh - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except FileNotFoundError:
        raise DataError(f"image {path} is missing (listed in filenames.pickle)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image {path} is unreadable or truncated ({e})") from None


def _read_captions(path: Path, per_image: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """The first ``per_image`` non-empty lines of a caption file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"caption file {path} is missing; the StackGAN layout has one text "
            f"file of {per_image} captions per image (or use "
            f"data.text_encoder=pickle, which needs no caption files)"
        ) from None
    except OSError as e:
        raise DataError(f"cannot read caption file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin1")
        log.info("caption file %s is not UTF-8; read as Latin-1", path)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < per_image:
        raise DataError(
            f"caption file {path} has {len(lines)} caption(s); "
            f"{per_image} (one per line) are expected"
        )
    return lines[:per_image]


def _coco_image(root: Path, key: str) -> Path:
    """Where a COCO image is: images/<key>.jpg as StackGAN-Pytorch expects, or beside the
    key in the COCO zips' train2014/ and val2014/ folders (or the root)."""
    for d in COCO_IMAGE_DIRS:
        for ext in COCO_IMAGE_EXTENSIONS:
            p = root / d / f"{key}{ext}"
            if p.is_file():
                return p
    tried = ", ".join(f"{d}/{key}.jpg" if d != "." else f"{key}.jpg" for d in COCO_IMAGE_DIRS)
    raise DataError(
        f"COCO image '{key}' (listed in filenames.pickle) is not in {root}: looked "
        f"for {tried} (or .png); StackGAN-Pytorch keeps the COCO images in images/, "
        f"the COCO 2014 zips extract to train2014/ and val2014/"
    )


def _cub_boxes(root: Path) -> dict[str, tuple[float, float, float, float]]:
    cub = root / "CUB_200_2011"
    names, boxes = cub / "images.txt", cub / "bounding_boxes.txt"
    for p in (names, boxes):
        if not p.is_file():
            raise DataError(f"{p} does not exist: CUB-200-2011 ships it beside images/")

    def lines(p: Path) -> list[str]:
        try:
            return p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(
                f"{p} is not UTF-8 text; CUB-200-2011 ships it as plain text (download it again)"
            ) from None

    ids = {}
    for n, line in enumerate(lines(names), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{names} line {n} should be '<image id> <path>.jpg'")
            ids[parts[0]] = parts[1].strip().removesuffix(".jpg")
    out = {}
    for n, line in enumerate(lines(boxes), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            box = tuple(float(v) for v in parts[1:])
        except ValueError:
            box = ()
        if (
            len(parts) != 5
            or parts[0] not in ids
            or len(box) != 4
            or not all(math.isfinite(v) for v in box)
        ):
            raise DataError(
                f"{boxes} line {n} should be '<image id> x y width height' (an id "
                f"of images.txt and four numbers)"
            )
        out[ids[parts[0]]] = box
    return out


def load_stackgan_layout(
    root: str | Path,
    kind: str,
    split: str,
    resolution: int,
    text_encoder: str,
    encode: Any = None,
    max_images: int = 0,
) -> ImageDataset:
    """CUB birds (``kind='cub'``), Oxford-102 flowers (``'oxford'``) or MS-COCO (``'coco'``)
    in the StackGAN layout.

    ``encode`` (captions per image -> (N, K, D) tensor) encodes the caption files when
    ``text_encoder`` is not ``pickle``. ``max_images`` > 0 keeps the first N images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data.path {root} is not a folder (expected the StackGAN '{kind}' "
            f"layout: {split}/filenames.pickle, images and captions)"
        )
    keys = [_text(k) for k in _read_pickle_list(root / split / "filenames.pickle", "image names")]
    if not keys:
        raise DataError(f"{root / split / 'filenames.pickle'} lists no images")
    n_listed = len(keys)
    if max_images:
        keys = keys[:max_images]
    # The small files first, so that a wrong one is reported before the images are read.
    extras: dict[str, torch.Tensor] = {}
    if text_encoder == "pickle":
        emb_path = root / split / "char-CNN-RNN-embeddings.pickle"
        try:
            emb = np.asarray(_read_pickle_list(emb_path, "caption embeddings"), dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise DataError(
                f"{emb_path} should hold numbers: one (captions, dim) array per image"
            ) from None
        if emb.ndim != 3 or len(emb) != n_listed:
            raise DataError(
                f"{emb_path} holds embeddings of shape {emb.shape}; expected "
                f"({n_listed}, captions, dim), one row per name in filenames.pickle"
            )
        extras["embeddings"] = torch.from_numpy(np.ascontiguousarray(emb[: len(keys)]))
    class_path = root / split / "class_info.pickle"
    labels = None
    if class_path.is_file():
        try:
            cls = np.asarray([int(c) for c in _read_pickle_list(class_path, "class ids")])
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{class_path} should hold a list of integer class ids") from None
        if len(cls) != n_listed:
            raise DataError(f"{class_path} has {len(cls)} class ids for {n_listed} images")
        cls = cls[: len(keys)]
        _, labels_np = np.unique(cls, return_inverse=True)
        labels = torch.from_numpy(labels_np.astype(np.int64))
    text_dirs = ("text",) if kind == "coco" else ("text", "text_c10")
    text_dir = next((root / d for d in text_dirs if (root / d).is_dir()), None)
    if text_encoder != "pickle" and text_dir is None:
        raise DataError(
            f"{root} has no {' or '.join(d + '/' for d in text_dirs)} caption "
            f"folder; it is needed unless data.text_encoder=pickle"
        )
    captions: list[list[str]] | None = None
    if text_dir is not None:
        per_image = COCO_CAPTIONS_PER_IMAGE if kind == "coco" else CAPTIONS_PER_IMAGE
        captions = []
        for i, key in enumerate(keys):
            if kind in ("cub", "coco"):
                path = text_dir / f"{key}.txt"
            else:  # flowers: text_c10/class_NNNNN/image_XXXXX.txt (1-based class ids)
                if labels is None:
                    raise DataError(
                        f"{class_path} is missing: the flowers' captions are "
                        f"found by class (text_c10/class_NNNNN/)"
                    )
                cid = int(cls[i])
                path = text_dir / f"class_{cid:05d}" / f"{Path(key).name}.txt"
            captions.append(_read_captions(path, per_image))
    boxes = _cub_boxes(root) if kind == "cub" else {}
    images = np.empty((len(keys), 3, resolution, resolution), np.uint8)
    for i, key in enumerate(keys):
        if kind == "cub":
            path = root / "CUB_200_2011" / "images" / f"{key}.jpg"
            if key not in boxes:
                raise DataError(f"CUB image {key} has no bounding box in bounding_boxes.txt")
            images[i] = _load_image(path, resolution, boxes[key])
        elif kind == "coco":
            images[i] = _load_image(_coco_image(root, key), resolution, None, squash=True)
        else:
            images[i] = _load_image(root / f"{key}.jpg", resolution, None)
    if text_encoder != "pickle" and encode is not None:
        assert captions is not None
        extras["embeddings"] = encode(captions)
    return ImageDataset(
        torch.from_numpy(images), labels, name=kind, extras=extras, captions=captions
    )


def load_lsun(path: str | Path, resolution: int, max_images: int = 0) -> ImageDataset:
    """Images of an LSUN scene LMDB (values are encoded images), resized and centre-cropped."""
    try:
        import lmdb
    except ImportError:
        raise MissingDependencyError("lmdb", "lsun", "Reading LSUN LMDB files") from None
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DataError(f"LSUN database {path} does not exist (e.g. bedroom_train_lmdb)")
    try:
        env = lmdb.open(
            str(path),
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
            subdir=path.is_dir(),
        )
    except lmdb.Error as e:
        raise DataError(f"{path} is not an LMDB database: {e}") from None
    out: list[np.ndarray] = []
    with env.begin(write=False) as txn:
        for key, value in txn.cursor():
            try:
                with Image.open(io.BytesIO(value)) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    s = min(w, h)
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                    im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)
                    out.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(
                    f"{path}: entry {key[:40]!r} is not a readable image ({e})"
                ) from None
            if max_images and len(out) >= max_images:
                break
    env.close()
    if not out:
        raise DataError(f"LSUN database {path} holds no images")
    return ImageDataset(torch.from_numpy(np.stack(out)), name="lsun")
