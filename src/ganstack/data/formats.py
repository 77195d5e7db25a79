"""Readers for standard dataset files a user may have on disk."""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError
from ganstack.fileio import read_regular

_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


# A gzipped IDX file may expand at most this many times. Real ones expand about 5x (MNIST
# images: 9.9 MB -> 47 MB); 100x keeps a 10 MB file below 1 GB, where a gzip "bomb" of zeros
# would expand 1000x. A genuine file beyond it can be gunzipped and read as it is.
IDX_MAX_EXPANSION = 100


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    The header is checked before the data is read: the data must have exactly the size the
    header gives, and a gzipped file may not expand beyond ``IDX_MAX_EXPANSION`` times."""
    path = Path(path)
    try:
        raw = read_regular(path, None, DataError, "IDX file")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    gz = raw[:2] == b"\x1f\x8b"
    stream = gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") if gz else io.BytesIO(raw)
    try:
        head = stream.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
            raise DataError(f"{path} is not an IDX file (bad magic number)")
        ndim = head[3]
        dim_bytes = stream.read(4 * ndim)
        if len(dim_bytes) < 4 * ndim:
            raise DataError(f"{path} is truncated (header incomplete)")
        dims = [int.from_bytes(dim_bytes[4 * i : 4 * i + 4], "big") for i in range(ndim)]
        dtype = np.dtype(_IDX_DTYPES[head[2]])
        expected = math.prod(dims) * dtype.itemsize  # not np.prod: it would overflow int64
        header = 4 + 4 * ndim
        if gz and expected > IDX_MAX_EXPANSION * max(len(raw), 1 << 10):
            raise DataError(
                f"{path}: its header gives shape {tuple(dims)} ({expected:,} bytes), over "
                f"{IDX_MAX_EXPANSION}x the size of the gzipped file ({len(raw):,} bytes): "
                f"refusing to decompress it. If the file is genuine, gunzip it and point "
                f"data.path at the result"
            )
        if not gz and len(raw) - header != expected:
            raise DataError(
                f"{path} is truncated or corrupt: header says shape {tuple(dims)} "
                f"({expected} bytes) but the file holds {len(raw) - header} bytes of data"
            )
        data = stream.read(expected + 1) if gz else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} looks gzipped but cannot be decompressed: {e}") from None
    if gz:
        if len(data) != expected:
            raise DataError(
                f"{path} is truncated or corrupt: header says shape {tuple(dims)} "
                f"({expected} bytes) but the file holds {len(data)}"
                f"{'+' if len(data) > expected else ''} bytes of data"
            )
        header = 0
    try:
        return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    except ValueError:  # e.g. shape (0, 2**31, 2**31): no data, but too big for numpy
        raise DataError(
            f"{path} is corrupt: its header gives an impossible shape {tuple(dims)}"
        ) from None


def _find(folder: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                return cand
    return None


def load_mnist_idx(folder: str | Path, split: str = "train", name: str = "mnist") -> ImageDataset:
    """The standard MNIST files (``train-images-idx3-ubyte[.gz]`` etc.) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"MNIST folder {folder} does not exist; set data.path to the folder holding "
            f"train-images-idx3-ubyte(.gz) and train-labels-idx1-ubyte(.gz)"
        )
    prefix = "train" if split == "train" else "t10k"
    img_path = _find(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lab_path = _find(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if img_path is None or lab_path is None:
        raise DataError(
            f"MNIST folder {folder} has no {prefix}-images-idx3-ubyte(.gz) / "
            f"{prefix}-labels-idx1-ubyte(.gz) files"
        )
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{img_path} should hold uint8 images (N, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lab_path} holds {labels.shape} labels for {len(images)} images")
    return ImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        num_classes=10,
        name=name,
    )


# --------------------------------------------------------------------------------------------
# A folder of images
# --------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
LABELS_FILE = "labels.csv"
_PIL_FORMATS = ["PNG", "JPEG", "BMP", "WEBP"]  # the only decoders Pillow may use here
_EXT_TEXT = ", ".join(IMAGE_EXTENSIONS)
_MAX_LISTED = 5  # file names quoted in one error message

log = logging.getLogger("ganstack")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _list_images(folder: Path) -> list[Path]:
    """Supported image files under ``folder``, recursively, hidden ones left out, sorted."""
    found, others = [], []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(p)
        elif p.name != LABELS_FILE:
            others.append(rel.as_posix())
    if not found:
        if not others:
            raise DataError(
                f"image folder {folder} is empty; put images ({_EXT_TEXT}) in it or in "
                f"sub-folders (one per class), or point data.path at the right folder"
            )
        raise DataError(
            f"image folder {folder} holds no images with a supported extension ({_EXT_TEXT}); "
            f"found {len(others)} other file(s): {_some(sorted(others))}. Convert the images "
            f"to PNG or JPEG, or point data.path at the right folder"
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_labels_file(path: Path, folder: Path, rels: list[str]) -> list[int]:
    """The labels of ``rels`` (paths relative to ``folder``) from a ``labels.csv`` file."""
    import csv
    import io
    from pathlib import PurePosixPath

    name = path.name
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    table: dict[str, int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise DataError(
                f"{name} line {lineno}: expected two comma-separated fields 'path,label', "
                f"got {len(row)}: {','.join(row)[:80]!r}"
            )
        rel_text, label_text = row[0].strip(), row[1].strip()
        if lineno == 1 and (rel_text.lower(), label_text.lower()) == ("path", "label"):
            continue  # the optional header
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(
                f"{name} line {lineno}: label {label_text[:40]!r} of {rel_text[:80]!r} is not "
                f"an integer; labels are class numbers 0, 1, 2, ..."
            ) from None
        rel = PurePosixPath(rel_text.replace("\\", "/")).as_posix()
        if rel in table:
            raise DataError(f"{name} line {lineno}: {rel!r} is listed twice; list each once")
        table[rel] = label
    if not table:
        raise DataError(f"{path} lists no images; write one 'path,label' line per image")
    wanted = set(rels)
    unknown = sorted(set(table) - wanted)
    if unknown:
        raise DataError(
            f"{name} names {len(unknown)} image(s) that are not in {folder} (or not of a "
            f"supported type {_EXT_TEXT}): {_some(unknown)}. Fix the paths (relative to the "
            f"folder, '/' separated) or remove those lines"
        )
    missing = [r for r in rels if r not in table]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) in {folder} are not listed in {name}: {_some(missing)}. "
            f"Add a 'path,label' line for each, or move them out of the folder"
        )
    return [table[r] for r in rels]


def _check_labels(labels: list[int], source: str) -> int:
    """Labels must be 0..K-1 with every class present; returns K."""
    used = sorted(set(labels))
    if used[0] < 0:
        raise DataError(f"{source}: label {used[0]} is negative; labels must be 0, 1, 2, ...")
    k = used[-1] + 1
    if len(used) != k:
        absent = sorted(set(range(min(k, 10**6))) - set(used))
        raise DataError(
            f"{source}: labels must be the numbers 0..K-1 with every class used, but the "
            f"largest is {used[-1]} and class(es) {_some([str(c) for c in absent])} have no "
            f"image; renumber the classes"
        )
    return k


def _reason(e: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not a PNG, JPEG, BMP or WebP image (content not recognised)"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:120]


def _open(path: Path) -> Any:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # an image too large to be sane is a bad file, not a warning
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path, formats=_PIL_FORMATS)


def _probe(path: Path) -> tuple[int, int]:
    """(width, height) from the header only, after the EXIF orientation."""
    with _open(path) as im:
        w, h = im.size
        if im.format in ("JPEG", "MPO", "WEBP") and im.getexif().get(0x0112) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def _decode(path: Path, channels: int, resolution: int, counts: dict[str, int]) -> np.ndarray:
    """One image as a uint8 (C, H, W) array, converted by the rules of load_image_folder."""
    from PIL import Image, ImageOps

    with _open(path) as im:
        if getattr(im, "n_frames", 1) > 1:
            counts["animated"] += 1
        sixteen = im.format == "PNG" and any(";16" in str(getattr(t, "args", "")) for t in im.tile)
        im.load()
        if im.format in ("JPEG", "MPO", "WEBP") and im.getexif().get(0x0112, 1) != 1:
            im = ImageOps.exif_transpose(im)
            counts["rotated"] += 1
        mode = im.mode
        if mode.startswith("I;16") or mode == "I":
            # 16-bit grayscale (Pillow's convert("L") would clip it): keep the high byte,
            # as Pillow does itself for 16-bit RGB(A) PNGs.
            a = np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8
            im = Image.fromarray(a.astype(np.uint8), "L")
            sixteen = True
        if sixteen:
            counts["16bit"] += 1
        if mode == "P" and "transparency" not in im.info:
            im = im.convert("RGB")
            counts["palette"] += 1
        elif im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba).convert("RGB")
            counts["alpha"] += 1
        elif im.mode not in ("L", "RGB"):
            im = im.convert("RGB" if im.mode != "1" else "L")
            counts["other_mode"] += 1
        gray = im.mode == "L"
        if channels == 3 and gray:
            im = im.convert("RGB")
            counts["gray_to_rgb"] += 1
        elif channels == 1 and not gray:
            im = im.convert("L")
            counts["rgb_to_gray"] += 1
        if resolution:
            w, h = im.size
            if w != h:
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                counts["cropped"] += 1
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
                counts["resized"] += 1
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


_CONVERSION_LOG = {
    "16bit": "16-bit image(s) scaled to 8 bits (v >> 8, so 65535 -> 255)",
    "palette": "palette image(s) expanded to RGB",
    "alpha": "image(s) with an alpha channel or transparency composited on a white background",
    "other_mode": "image(s) in another colour mode (1-bit, CMYK, YCbCr, ...) converted",
    "gray_to_rgb": "grayscale image(s) copied into 3 channels (data.channels=3)",
    "rgb_to_gray": "colour image(s) converted to grayscale, L = 0.299R + 0.587G + 0.114B "
    "(data.channels=1)",
    "rotated": "image(s) rotated upright by their EXIF orientation",
    "animated": "animated image(s): only the first frame is used",
    "cropped": "non-square image(s) centre-cropped to a square",
    "resized": "image(s) resized with a Lanczos filter",
}


def folder_labels(folder: Path, rels: list[str]) -> tuple[list[int] | None, list[str] | None, Path]:
    """The labels of the images ``rels`` of an image folder by the rules of
    :func:`load_image_folder` (``labels.csv``, else class sub-folders, else none):
    (labels or None, class names or None, the labels file's path)."""
    labels: list[int] | None = None
    class_names: list[str] | None = None
    labels_file = folder / LABELS_FILE
    if labels_file.is_file():
        labels = _read_labels_file(labels_file, folder, rels)
        log.info("labels from %s", labels_file)
    elif (folder / "labels.txt").is_file():
        raise DataError(
            f"found {folder / 'labels.txt'}, but the 'folder' dataset reads labels from "
            f"{LABELS_FILE} ('path,label' lines); rename it, or delete it to use class "
            f"sub-folders"
        )
    else:
        tops = {r.split("/", 1)[0] if "/" in r else None for r in rels}
        if None not in tops and len(tops) >= 2:
            class_names = sorted(t for t in tops if t is not None)
            index = {c: i for i, c in enumerate(class_names)}
            labels = [index[r.split("/", 1)[0]] for r in rels]
            log.info(
                "%d classes from the sub-folders of %s: %s",
                len(class_names),
                folder,
                _some(class_names),
            )
        else:
            log.info(
                "images in %s are unlabelled (no %s, no class sub-folders)", folder, LABELS_FILE
            )
    return labels, class_names, labels_file


def kept_folder_labels(
    labels: list[int],
    class_names: list[str] | None,
    kept: list[int],
    n_paths: int,
    labels_file: Path,
    folder: Path,
) -> tuple[list[int], list[str] | None, int]:
    """The labels of the images ``kept`` (indices into the listed files) when bad files were
    left out, classes renumbered when a sub-folder lost all its images; and K."""
    kept_labels = [labels[i] for i in kept]
    if class_names is not None and len(kept) < n_paths:  # a skipped file may empty a class
        present = sorted({class_names[y] for y in kept_labels})
        if len(present) < len(class_names):
            remap = {class_names.index(c): j for j, c in enumerate(present)}
            kept_labels = [remap[y] for y in kept_labels]
            class_names = present
    source = str(labels_file if class_names is None else folder)
    k = _check_labels(kept_labels, source)
    return kept_labels, class_names, k


def load_image_folder(
    folder: str | Path,
    resolution: int = 0,
    channels: int = 3,
    skip_bad: bool = False,
    name: str = "folder",
) -> ImageDataset:
    """A folder of images (``data.name: folder``), read once into one uint8 tensor.

    **Files.** Every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` file under ``folder``
    (recursively, extension case ignored; names starting with ``.`` are skipped), in the order
    of their '/'-separated paths relative to ``folder``, so the dataset is the same on every
    machine. Only Pillow's PNG, JPEG, BMP and WebP decoders are used, whatever the extension.

    **Labels** (optional), from the first rule that applies:

    1. a ``labels.csv`` file in ``folder``: UTF-8, one ``path,label`` line per image, ``path``
       relative to ``folder`` with ``/`` separators, ``label`` an integer; an optional first line
       ``path,label`` and lines starting with ``#`` are ignored. It must list every image exactly
       once and nothing else. Labels must be 0..K-1 with every class used;
    2. every image inside a first-level sub-folder, with at least two such sub-folders: one class
       per sub-folder; class ids follow the sorted sub-folder names (``class_names``);
    3. otherwise the images are unlabelled.

    **Conversions** (each logged once with the number of files it touched): the EXIF orientation
    of JPEG/WebP files is applied; 16-bit images are scaled to 8 bits (``v >> 8``, never
    clipped); palette images are expanded; images with an alpha channel or a transparent colour
    (RGBA, LA, PA, P) are composited on a **white** background; grayscale becomes RGB by copying
    when ``channels=3`` and RGB becomes luma (ITU-R 601) when ``channels=1``. With
    ``resolution`` > 0 every image is centre-cropped to a square and resized to
    ``resolution`` x ``resolution`` (Lanczos); with 0 all images must already share one size.

    **Bad files** (unreadable, truncated, not an image) stop loading with a :class:`DataError`
    naming them, unless ``skip_bad`` is set: they are then left out and logged as a warning.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(
            f"image folder {folder} does not exist; set data.path to a folder of images "
            f"({_EXT_TEXT})"
        )
    if not folder.is_dir():
        raise DataError(
            f"data.path {folder} is a file, but the 'folder' dataset reads a folder of images "
            f"({_EXT_TEXT}); set data.path to the folder that holds it"
        )
    if channels not in (1, 3):
        raise DataError(f"data.channels must be 1 or 3, got {channels}")
    if resolution < 0:
        raise DataError(f"data.resolution must be >= 0, got {resolution}")
    try:
        paths = _list_images(folder)
    except OSError as e:
        raise DataError(f"cannot list image folder {folder}: {e.strerror or e}") from None
    rels = [_rel(p, folder) for p in paths]

    labels, class_names, labels_file = folder_labels(folder, rels)

    bad: list[tuple[str, str]] = []

    def fail_if_bad() -> None:
        if bad and not skip_bad:
            listed = "; ".join(f"{r} ({why})" for r, why in bad[:_MAX_LISTED])
            more = f"; and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
            raise DataError(
                f"{len(bad)} file(s) in {folder} cannot be read as images: {listed}{more}. "
                f"Delete or replace them, or set data.skip_bad=true to leave them out"
            )

    # Pass 1, headers only: the common size when the images are not resized.
    keep = list(range(len(paths)))
    if resolution == 0:
        sizes: dict[tuple[int, int], list[str]] = {}
        keep = []
        for i, p in enumerate(paths):
            try:
                size = _probe(p)
            except MemoryError:
                raise
            except Exception as e:  # a decoder fed arbitrary bytes can raise anything
                bad.append((rels[i], _reason(e)))
                continue
            sizes.setdefault(size, []).append(rels[i])
            keep.append(i)
        if len(sizes) > 1:
            fail_if_bad()  # report unreadable files before the sizes
            common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
            desc = "; ".join(f"{len(v)} are {w}x{h} (e.g. {v[0]})" for (w, h), v in common[:4])
            raise DataError(
                f"the images in {folder} have {len(sizes)} different sizes: {desc}. Set "
                f"data.resolution=N to centre-crop and resize them all to N x N"
            )
        width, height = next(iter(sizes)) if sizes else (0, 0)
    else:
        width = height = resolution

    # Pass 2: decode into one preallocated array.
    try:
        out = np.empty((len(keep), channels, height, width), dtype=np.uint8)
    except MemoryError:
        raise DataError(
            f"{len(keep)} images of {channels}x{height}x{width} do not fit in memory; set "
            f"data.resolution to a smaller size"
        ) from None
    counts = dict.fromkeys(_CONVERSION_LOG, 0)
    kept: list[int] = []
    for i in keep:
        try:
            arr = _decode(paths[i], channels, resolution, counts)
        except MemoryError:
            raise
        except Exception as e:  # a decoder fed arbitrary bytes can raise anything
            bad.append((rels[i], _reason(e)))
            continue
        if arr.shape != out.shape[1:]:
            bad.append(
                (
                    rels[i],
                    f"decoded to {arr.shape[2]}x{arr.shape[1]}, its header says {width}x{height}",
                )
            )
            continue
        out[len(kept)] = arr
        kept.append(i)
    fail_if_bad()
    if bad:
        log.warning(
            "skipped %d unreadable file(s) (data.skip_bad=true): %s",
            len(bad),
            _some([f"{r} ({why})" for r, why in bad]),
        )
    if not kept:
        raise DataError(f"none of the {len(paths)} image files in {folder} could be read")
    for key, text in _CONVERSION_LOG.items():
        if counts[key]:
            log.info("%s: %d %s", name, counts[key], text)

    images = torch.from_numpy(out[: len(kept)] if len(kept) < len(out) else out)
    if labels is None:
        return ImageDataset(images, name=name)
    kept_labels, class_names, k = kept_folder_labels(
        labels, class_names, kept, len(paths), labels_file, folder
    )
    return ImageDataset(
        images,
        torch.tensor(kept_labels, dtype=torch.int64),
        num_classes=k,
        name=name,
        class_names=class_names,
    )
