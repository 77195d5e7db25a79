"""Prepared datasets: ``ganstack dataset SRC DEST`` converts a source once into a folder that
loads without decoding (``data.name: prepared``, ``data.path: DEST``).

**Why a raw array.** A training run's data loading is dominated by decoding images (PNG, JPEG)
and resizing them; a converted dataset should need neither. DEST holds the images as one raw
uint8 array in ganstack's own layout, (N, C, H, W) in C order: the file *is* the dataset's
image tensor, so loading maps it (``np.memmap``) and wraps the mapping (``torch.from_numpy``)
without reading or copying a byte. The operating system pages rows in as batches touch them,
and pages them out again under memory pressure, so a dataset larger than RAM trains. A zip of
PNGs (stylegan2-ada's ``dataset_tool.py`` format, which StyleGAN2/3 and others read) would have
to be decoded again on every run; ``--zip`` writes one *as well*, for sharing.

DEST::

    dataset.json   format "ganstack-dataset" v1: shape, dtype, layout, count, class names,
                   source, resolution, crop, channels, skipped files, SHA-256 of each file
    images.u8      uint8 (N, C, H, W), C order, no header (np.memmap / np.fromfile)
    labels.npy     int64 (N,) (labelled sources only)
    captions.json  one list of captions per image (captioned sources only)
    embeddings.npy float32 (N, captions, D): StackGAN layouts' char-CNN-RNN embeddings
    dataset.zip    (--zip) stylegan2-ada's layout: 00000/img00000000.png ... and its own
                   dataset.json {"labels": [["00000/img00000000.png", 3], ...] or null}

**Held-out split.** ``data.eval_size`` works as for every other dataset. When the training
split fits in a quarter of this machine's memory it is copied into RAM exactly as an
in-memory dataset's would be (same order, same batches). When it does not, it stays mapped:
the held-out images' places in the file's order are filled with the last training images (a
copy-on-write mapping, so only those rows take memory) and the split keeps that order; the
batches then differ from an in-memory load of the same data, the set of images does not.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError
from ganstack.fileio import (
    atomic_write_text,
    install_folder,
    memory_budget,
    read_regular,
    sha256_file,
    umask,
)

log = logging.getLogger("ganstack")

FORMAT = "ganstack-dataset"
VERSION = 1
META = "dataset.json"
IMAGES = "images.u8"
LABELS = "labels.npy"
CAPTIONS = "captions.json"
EMBEDDINGS = "embeddings.npy"
ZIP = "dataset.zip"
SOURCE_FORMATS = ("auto", "folder", "mnist", "cifar10", "svhn", "lsun", "cub", "oxford", "coco")
CROPS = ("centre", "none")
_MAX_LISTED = 5
_META_LIMIT = 256 << 20  # dataset.json lists class names and skipped files: never this big

# The training split of a mapped dataset is copied into RAM when it takes at most this many
# bytes (None: a quarter of physical memory); else it stays mapped (see the module's doc).
IN_MEMORY_LIMIT: int | None = None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``ganstack dataset`` (its dataset.json says so)."""
    meta = Path(path) / META
    if not meta.is_file() or not (Path(path) / IMAGES).is_file():
        return False
    try:
        return json.loads(read_regular(meta, _META_LIMIT, DataError, META)).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, DataError):
        return False


def read_meta(path: str | Path) -> dict:
    """DEST/dataset.json, checked: a one-line :class:`DataError` for anything wrong."""
    folder = Path(path)
    if not folder.exists():
        raise DataError(
            f"prepared dataset {folder} does not exist; make it with "
            f"`ganstack dataset SRC {folder}`"
        )
    if not folder.is_dir():
        raise DataError(
            f"data.path {folder} is a file; a prepared dataset is the folder "
            f"`ganstack dataset SRC DEST` wrote (DEST)"
        )
    meta_path = folder / META
    if not meta_path.is_file():
        raise DataError(
            f"{folder} has no {META}: it is not a prepared dataset; make one with "
            f"`ganstack dataset SRC {folder}`"
        )
    try:
        meta = json.loads(read_regular(meta_path, _META_LIMIT, DataError, META))
    except OSError as e:
        raise DataError(f"cannot read {meta_path}: {e.strerror}") from None
    except ValueError:
        raise DataError(
            f"{meta_path} is not JSON; convert the source again with "
            f"`ganstack dataset SRC {folder} --force`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(
            f"{meta_path} does not describe a ganstack prepared dataset (format "
            f"{FORMAT!r}); a stylegan2-ada zip's dataset.json is not one"
        )
    if meta.get("version") != VERSION:
        raise DataError(
            f"{folder} is a prepared dataset of format version "
            f"{meta.get('version')}; this ganstack reads version {VERSION}: "
            f"convert the source again"
        )
    try:
        shape = tuple(int(d) for d in meta["images"]["shape"])
        assert len(shape) == 4 and shape[1] in (1, 3) and min(shape) > 0
        assert meta["images"]["dtype"] == "uint8" and meta["images"]["layout"] == "NCHW"
    except (KeyError, TypeError, ValueError, AssertionError):
        raise DataError(
            f"{meta_path}: 'images' must give dtype uint8, layout NCHW and a "
            f"shape (N, 1 or 3, H, W); convert the source again"
        ) from None
    meta["images"]["shape"] = list(shape)
    return meta


class MappedImages:
    """The ``meta["mapped"]`` of a dataset whose images are a mapping of ``images.u8``: how its
    subsets are taken (:meth:`ImageDataset.subset` asks it first)."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int], ptr: int) -> None:
        self.path = path
        self.shape = shape
        self.ptr = ptr

    def __repr__(self) -> str:
        return f"MappedImages({str(self.path)!r}, {self.shape})"

    def owns(self, ds: ImageDataset) -> bool:
        return ds.images.data_ptr() == self.ptr and tuple(ds.images.shape) == self.shape

    def subset(
        self, ds: ImageDataset, index: torch.Tensor, name: str | None
    ) -> ImageDataset | None:
        """A subset that stays mapped when copying it would not fit in memory; None to copy
        (the ordinary :meth:`ImageDataset.subset`)."""
        if not self.owns(ds):
            return None
        idx = torch.as_tensor(index).flatten()
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.long()
        n, total = len(idx), self.shape[0]
        limit = memory_budget() // 2 if IN_MEMORY_LIMIT is None else IN_MEMORY_LIMIT
        if n * math.prod(self.shape[1:]) <= limit or n == 0:
            return None
        if int(torch.unique(idx).numel()) != n:
            return None
        keep = torch.zeros(total, dtype=torch.bool)
        keep[idx] = True
        holes = (~keep[:n]).nonzero().flatten()
        fills = keep[n:].nonzero().flatten() + n
        order = torch.arange(n)
        order[holes] = fills
        arr = np.memmap(self.path, np.uint8, "c", shape=self.shape)
        if len(holes):
            arr[holes.numpy()] = arr[fills.numpy()]  # private copies of these rows only
        log.info(
            "%s: the %d-image split stays mapped from %s (more than %.1f GiB); the "
            "held-out images' places are filled from its end",
            name or ds.name,
            n,
            self.path,
            limit / 2**30,
        )
        meta = {k: v for k, v in ds.meta.items() if k != "mapped"}
        return ImageDataset(
            torch.from_numpy(arr[:n]),
            None if ds.labels is None else ds.labels[order],
            ds.num_classes,
            name or ds.name,
            ds.class_names,
            {k: v[order] for k, v in ds.extras.items()},
            None if ds.captions is None else [ds.captions[int(i)] for i in order],
            meta | {"lazy": str(self.path)},
        )


def load_prepared(path: str | Path, resolution: int = 0, name: str = "prepared") -> ImageDataset:
    """A folder written by ``ganstack dataset`` (``data.name: prepared``): the images mapped
    from ``images.u8`` (nothing is read until used), labels, captions and embeddings loaded.
    ``resolution`` > 0 must match the stored size (it cannot be changed without converting
    again)."""
    folder = Path(path)
    meta = read_meta(folder)
    shape = tuple(meta["images"]["shape"])
    n, c, h, w = shape
    if resolution and (h, w) != (resolution, resolution):
        raise DataError(
            f"prepared dataset {folder} holds {w}x{h} images but data.resolution "
            f"is {resolution}; set data.resolution=0 (or {h}), or convert the "
            f"source again with --resolution {resolution}"
        )
    img_path = folder / IMAGES
    try:
        size = img_path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read {img_path}: {e.strerror}") from None
    if size != math.prod(shape):
        raise DataError(
            f"{img_path} holds {size:,} bytes but {META} gives shape {shape} "
            f"({math.prod(shape):,} bytes): it is truncated or not the file "
            f"written with it; convert the source again"
        )
    try:
        arr = np.memmap(img_path, np.uint8, "c", shape=shape)  # private: writes stay in RAM
    except OSError as e:
        raise DataError(f"cannot map {img_path}: {e.strerror or e}") from None
    images = torch.from_numpy(arr)
    labels = None
    if meta.get("labels"):
        labels = _load_npy(folder / LABELS, np.int64, n)
    captions = None
    if meta.get("captions"):
        cap_path = folder / CAPTIONS
        try:
            captions = json.loads(read_regular(cap_path, 16 << 30, DataError, CAPTIONS))
        except (OSError, ValueError):
            raise DataError(
                f"{cap_path} cannot be read as JSON; convert the source again"
            ) from None
        if not isinstance(captions, list) or not all(
            isinstance(c, list) and all(isinstance(t, str) for t in c) for c in captions
        ):
            raise DataError(f"{cap_path} must hold one list of strings per image")
    extras = {}
    if meta.get("embeddings"):
        extras["embeddings"] = _load_npy(folder / EMBEDDINGS, np.float32, n)
    ds = ImageDataset(
        images,
        labels,
        int(meta.get("num_classes") or 0),
        name,
        meta.get("class_names"),
        extras,
        captions,
        {"mapped": MappedImages(img_path, shape, images.data_ptr())},
    )
    log.info(
        "%s: %d images %dx%dx%d mapped from %s (converted from %s)",
        name,
        n,
        c,
        h,
        w,
        img_path,
        (meta.get("source") or {}).get("format", "?"),
    )
    return ds


def _load_npy(path: Path, dtype: Any, n: int) -> torch.Tensor:
    try:
        a = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; convert the source again") from None
    if a.dtype != np.dtype(dtype) or a.ndim < 1 or len(a) != n:
        raise DataError(
            f"{path} holds {a.dtype} {a.shape}, expected {np.dtype(dtype)} with "
            f"{n} rows; convert the source again"
        )
    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------------------------
# Converting
# --------------------------------------------------------------------------------------------


def detect_format(src: Path) -> str:
    """The source format of ``src`` by the files it holds."""
    if src.is_file():
        if src.suffix.lower() == ".mat":
            return "svhn"
        if src.suffix.lower() == ".mdb":
            return "lsun"
        if src.suffix.lower() == ".zip":
            raise DataError(f"{src} is a zip file: extract it and convert the folder")
        raise DataError(
            f"{src} is a file of no known dataset format: give a folder of "
            f"images, an IDX/CIFAR-10/SVHN/LSUN/StackGAN source, or --format"
        )
    names = {p.name for p in src.iterdir()}
    if "data.mdb" in names:
        return "lsun"
    if any(n.startswith(("train-images-idx3-ubyte", "train-images.idx3-ubyte")) for n in names):
        return "mnist"
    if "data_batch_1" in names or "cifar-10-batches-py" in names:
        return "cifar10"
    if "train_32x32.mat" in names:
        return "svhn"
    if (src / "train" / "filenames.pickle").is_file():
        if "CUB_200_2011" in names:
            return "cub"
        if "jpg" in names and "text_c10" in names:
            return "oxford"
        if "train2014" in names or ("images" in names and "text" in names):
            return "coco"
        raise DataError(
            f"{src} is a StackGAN layout (train/filenames.pickle) of unknown kind; "
            f"pass --format cub, oxford or coco"
        )
    return "folder"


def _check_dest(src: Path, dest: Path, force: bool) -> bool:
    """Whether ``dest`` holds a prepared dataset to replace; an error when it may not be
    written."""
    if dest.is_symlink():
        raise DataError(f"{dest} is a symbolic link; give the folder itself")
    if dest.resolve() == src.resolve():
        raise DataError(f"DEST {dest} is the source itself; give a new folder")
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise DataError(f"{dest} is a file; give a new or empty folder for the dataset")
    if not any(dest.iterdir()):
        return False
    if not is_prepared(dest):
        raise DataError(
            f"{dest} is not empty and is not a prepared dataset; nothing was "
            f"written. Give a new or empty folder (--force replaces only an "
            f"earlier prepared dataset)"
        )
    if not force:
        raise DataError(f"{dest} already holds a prepared dataset; pass --force to replace it")
    return True


def _pool_context() -> Any:
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["ganstack.data.prepared"])
        return ctx
    return mp.get_context("spawn")


def _ordered_map(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, jobs)`` in order over ``workers`` processes, at most 4 jobs per worker in
    flight (jobs may be read lazily: an LMDB's values)."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(workers, mp_context=_pool_context())
    pending: collections.deque = collections.deque()
    try:
        for job in jobs:
            pending.append(ex.submit(fn, job))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _stretch(a: np.ndarray, resolution: int) -> np.ndarray:
    """(C, H, W) resized to resolution x resolution, aspect ratio not kept (Lanczos)."""
    from PIL import Image

    im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
    b = np.asarray(im, dtype=np.uint8)
    return b[None] if b.ndim == 2 else b.transpose(2, 0, 1)


def _decode_files(job: tuple) -> tuple[list, dict]:
    """Worker: decode image files by the folder dataset's rules. -> ([(array | None, reason)],
    conversion counts)."""
    from ganstack.data.formats import _CONVERSION_LOG, _decode, _reason

    paths, channels, resolution, crop = job
    counts = dict.fromkeys(_CONVERSION_LOG, 0)
    out: list[tuple[np.ndarray | None, str | None]] = []
    for p in paths:
        try:
            if crop == "centre":
                a = _decode(Path(p), channels, resolution, counts)
            else:
                a = _decode(Path(p), channels, 0, counts)
                if resolution and a.shape[1:] != (resolution, resolution):
                    a = _stretch(a, resolution)
                    counts["resized"] += 1
            out.append((a, None))
        except MemoryError:
            raise
        except Exception as e:  # a decoder fed arbitrary bytes can raise anything
            out.append((None, _reason(e)))
    return out, counts


def _probe_files(paths: list[str]) -> list:
    from ganstack.data.formats import _probe, _reason

    out: list = []
    for p in paths:
        try:
            out.append(_probe(Path(p)))
        except MemoryError:
            raise
        except Exception as e:
            out.append(_reason(e))
    return out


def _decode_lsun(job: tuple) -> tuple[list, dict]:
    """Worker: LSUN LMDB values as data.name=lsun decodes them (RGB, centre square, bilinear
    resize), or stretched to a square with crop 'none'."""
    import io

    from PIL import Image

    items, resolution, crop = job
    out: list[tuple[np.ndarray | None, str | None]] = []
    for _key, value in items:
        try:
            with Image.open(io.BytesIO(value)) as im:
                im = im.convert("RGB")
                w, h = im.size
                if crop == "centre":
                    s = min(w, h)
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)
                out.append((np.asarray(im, dtype=np.uint8).transpose(2, 0, 1), None))
        except MemoryError:
            raise
        except Exception as e:
            out.append((None, str(e).splitlines()[0][:120] if str(e) else type(e).__name__))
    return out, {}


def _encode_pngs(job: tuple) -> list[bytes]:
    """Worker: rows start..stop of images.u8 as PNG files (stylegan2-ada's: compress_level 0)."""
    import io

    from PIL import Image

    path, shape, start, stop = job
    arr = np.memmap(path, np.uint8, "r", shape=tuple(shape))
    out = []
    for i in range(start, stop):
        a = np.asarray(arr[i])
        im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, format="png", compress_level=0, optimize=False)
        out.append(buf.getvalue())
    return out


class _Writer:
    """Rows appended to ``images.u8`` in a folder, through a mapping sized for ``capacity``."""

    def __init__(self, folder: Path, chw: tuple[int, int, int], capacity: int) -> None:
        self.path = folder / IMAGES
        self.chw = chw
        self.count = 0
        self.capacity = capacity
        try:
            self.arr = np.memmap(self.path, np.uint8, "w+", shape=(max(capacity, 1), *chw))
        except OSError as e:
            raise DataError(
                f"cannot create {self.path} ({capacity:,} images of {chw}): {e.strerror or e}"
            ) from None

    def put(self, a: np.ndarray) -> None:
        self.arr[self.count] = a
        self.count += 1

    def finish(self) -> None:
        self.arr.flush()
        del self.arr
        os.truncate(self.path, self.count * math.prod(self.chw))
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _fail_bad(bad: list[tuple[str, str]], where: Path, skip_bad: bool) -> None:
    if bad and not skip_bad:
        listed = "; ".join(f"{r} ({why})" for r, why in bad[:_MAX_LISTED])
        more = f"; and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise DataError(
            f"{len(bad)} file(s) in {where} cannot be read as images: {listed}"
            f"{more}. Delete or replace them, or pass --skip-bad to leave them out "
            f"(they are then listed in DEST/{META})"
        )


def _convert_folder(src: Path, tmp: Path, o: dict, progress: bool) -> dict:
    from ganstack.data.formats import (
        _CONVERSION_LOG,
        _list_images,
        _rel,
        folder_labels,
        kept_folder_labels,
    )

    try:
        paths = _list_images(src)
    except OSError as e:
        raise DataError(f"cannot list image folder {src}: {e.strerror or e}") from None
    if o["num_images"]:
        paths = paths[: o["num_images"]]
    rels = [_rel(p, src) for p in paths]
    labels, class_names, labels_file = folder_labels(src, rels)
    channels, resolution = o["channels"] or 3, o["resolution"]
    workers = o["workers"] if len(paths) > 256 else 1  # a pool costs more than a few images
    chunk = 64
    bad: list[tuple[str, str]] = []
    keep = list(range(len(paths)))
    if resolution == 0:  # headers first: all images must share one size
        sizes: dict[tuple[int, int], list[str]] = {}
        keep = []
        with _bar(len(paths), "reading headers", progress) as bar:
            probes = _chunks([str(p) for p in paths], 256)
            for j, res in enumerate(_ordered_map(_probe_files, probes, workers)):
                for k, r in enumerate(res):
                    i = j * 256 + k
                    if isinstance(r, str):
                        bad.append((rels[i], r))
                    else:
                        sizes.setdefault(tuple(r), []).append(rels[i])
                        keep.append(i)
                bar.update(len(res))
        if len(sizes) > 1:
            _fail_bad(bad, src, o["skip_bad"])
            common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
            desc = "; ".join(f"{len(v)} are {w}x{h} (e.g. {v[0]})" for (w, h), v in common[:4])
            raise DataError(
                f"the images in {src} have {len(sizes)} different sizes: {desc}. "
                f"Pass --resolution N to centre-crop and resize them all to N x N"
            )
        if not sizes:
            _fail_bad(bad, src, o["skip_bad"])
            raise DataError(f"none of the {len(paths)} image files in {src} could be read")
        width, height = next(iter(sizes))
    else:
        width = height = resolution
    writer = _Writer(tmp, (channels, height, width), len(keep))
    counts = dict.fromkeys(_CONVERSION_LOG, 0)
    kept: list[int] = []
    jobs = [
        ([str(paths[i]) for i in part], channels, resolution, o["crop"])
        for part in _chunks(keep, chunk)
    ]
    with _bar(len(keep), "decoding", progress) as bar:
        for j, (res, cnt) in enumerate(_ordered_map(_decode_files, jobs, workers)):
            for k, (a, why) in enumerate(res):
                i = keep[j * chunk + k]
                if a is None:
                    bad.append((rels[i], why))
                elif a.shape != writer.chw:
                    bad.append(
                        (
                            rels[i],
                            f"decoded to {a.shape[2]}x{a.shape[1]}x{a.shape[0]}, "
                            f"not {width}x{height}x{channels}",
                        )
                    )
                else:
                    writer.put(a)
                    kept.append(i)
            for key, v in cnt.items():
                counts[key] += v
            bar.update(len(res))
    writer.finish()
    _fail_bad(bad, src, o["skip_bad"])
    if not kept:
        raise DataError(f"none of the {len(paths)} image files in {src} could be read")
    if bad:
        log.warning(
            "skipped %d unreadable file(s) (--skip-bad): %s",
            len(bad),
            "; ".join(f"{r} ({why})" for r, why in bad[:_MAX_LISTED]),
        )
    for key, text in _CONVERSION_LOG.items():
        if counts[key]:
            log.info("%d %s", counts[key], text)
    out: dict = {
        "count": len(kept),
        "chw": writer.chw,
        "skipped": bad,
        "conversions": {k: v for k, v in counts.items() if v},
    }
    if labels is not None:
        y, class_names, k = kept_folder_labels(
            labels, class_names, kept, len(paths), labels_file, src
        )
        out |= {"labels": np.asarray(y, np.int64), "num_classes": k, "class_names": class_names}
    return out


def _convert_lsun(src: Path, tmp: Path, o: dict, progress: bool) -> dict:
    try:
        import lmdb
    except ImportError:
        from ganstack.errors import MissingDependencyError

        raise MissingDependencyError("lmdb", "lsun", "Reading LSUN LMDB files") from None
    if o["channels"] not in (None, 3):
        raise DataError("LSUN images are RGB: --channels 1 is not supported for them")
    folder = src if src.is_dir() else src.parent
    try:
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as e:
        raise DataError(f"{src} is not an LMDB database: {e}") from None
    resolution = o["resolution"] or 256
    total = int(env.stat()["entries"])
    if o["num_images"]:
        total = min(total, o["num_images"])
    if total == 0:
        raise DataError(f"LSUN database {src} holds no images")
    writer = _Writer(tmp, (3, resolution, resolution), total)
    bad: list[tuple[str, str]] = []

    def jobs() -> Iterator[tuple]:
        items: list = []
        with env.begin(write=False) as txn:
            for n, (key, value) in enumerate(txn.cursor()):
                if n >= total:
                    break
                items.append((bytes(key), bytes(value)))
                if len(items) == 64:
                    yield items, resolution, o["crop"]
                    items = []
        if items:
            yield items, resolution, o["crop"]

    with _bar(total, "decoding", progress) as bar:
        for res, _ in _ordered_map(_decode_lsun, jobs(), o["workers"]):
            for a, why in res:
                if a is None:
                    bad.append((f"entry {writer.count + len(bad)}", why))
                else:
                    writer.put(a)
            bar.update(len(res))
    env.close()
    writer.finish()
    _fail_bad(bad, src, o["skip_bad"])
    return {"count": writer.count, "chw": writer.chw, "skipped": bad}


def _convert_loaded(src: Path, tmp: Path, o: dict, progress: bool) -> dict:
    """Sources read whole by their data.name loaders (they fit in memory): IDX, CIFAR-10, SVHN
    and the StackGAN layouts."""
    fmt = o["format"]
    if o["channels"] is not None:
        raise DataError(
            f"--channels applies to image folders; a {fmt} source keeps its own channels"
        )
    if fmt == "mnist":
        from ganstack.data.formats import load_mnist_idx

        ds = load_mnist_idx(src, "train")
    elif fmt == "cifar10":
        from ganstack.data.archives import load_cifar10

        ds = load_cifar10(src)
    elif fmt == "svhn":
        from ganstack.data.archives import load_svhn

        ds = load_svhn(src)
    else:
        from ganstack.data.stackgan_formats import load_stackgan_layout

        if o["crop"] != "centre":
            raise DataError(
                f"the {fmt} layout is cropped as the StackGAN code does; --crop none does not apply"
            )
        pickled = (src / "train" / "char-CNN-RNN-embeddings.pickle").is_file()
        ds = load_stackgan_layout(
            src,
            fmt,
            "train",
            o["resolution"] or 256,
            "pickle" if pickled else "hash",
            None,
            o["num_images"],
        )
    n = min(len(ds), o["num_images"] or len(ds))
    c, h, w = ds.shape
    r = o["resolution"] or h
    writer = _Writer(tmp, (c, r, r) if o["resolution"] else (c, h, w), n)
    with _bar(n, "writing", progress) as bar:
        for i in range(n):
            a = ds.images[i].numpy()
            writer.put(a if a.shape == writer.chw else _stretch(a, r))
            bar.update(1)
    writer.finish()
    out: dict = {"count": n, "chw": writer.chw, "skipped": []}
    if ds.labels is not None:
        out |= {
            "labels": ds.labels[:n].numpy().astype(np.int64),
            "num_classes": ds.num_classes,
            "class_names": ds.class_names,
        }
    if ds.captions is not None:
        out["captions"] = ds.captions[:n]
    if "embeddings" in ds.extras:
        out["embeddings"] = ds.extras["embeddings"][:n].numpy().astype(np.float32)
    return out


def _write_zip(
    tmp: Path, shape: tuple, labels: np.ndarray | None, workers: int, progress: bool
) -> None:
    """stylegan2-ada's dataset zip (dataset_tool.py): 00000/img00000000.png, ... stored
    uncompressed, and dataset.json {"labels": [[name, label], ...] or null}."""
    n = shape[0]
    names = [f"{i:08d}"[:5] + f"/img{i:08d}.png" for i in range(n)]
    jobs = [(str(tmp / IMAGES), shape, s, min(s + 64, n)) for s in range(0, n, 64)]
    with (
        zipfile.ZipFile(tmp / ZIP, "w", zipfile.ZIP_STORED) as z,
        _bar(n, "zipping", progress) as bar,
    ):
        i = 0
        for pngs in _ordered_map(_encode_pngs, jobs, workers):
            for data in pngs:
                z.writestr(names[i], data)
                i += 1
            bar.update(len(pngs))
        labs = None if labels is None else [[names[j], int(labels[j])] for j in range(n)]
        z.writestr("dataset.json", json.dumps({"labels": labs}))


def _sha(path: Path) -> str:
    return sha256_file(path)


def convert(
    src: str | Path,
    dest: str | Path,
    *,
    fmt: str = "auto",
    resolution: int = 0,
    crop: str = "centre",
    channels: int | None = None,
    workers: int | None = None,
    write_zip: bool = False,
    force: bool = False,
    skip_bad: bool = False,
    num_images: int = 0,
    progress: bool = True,
) -> dict:
    """Convert ``src`` once into the prepared dataset ``dest`` (see the module's doc); returns
    its dataset.json. ``dest`` must be new or empty; ``force`` replaces an earlier prepared
    dataset there, never anything else. The folder is written beside ``dest`` and renamed into
    place: an interrupted or failed conversion leaves nothing at ``dest``."""
    from ganstack.cli import version

    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise DataError(
            f"source {src} does not exist; give a folder of images or a dataset's "
            f"files (IDX, CIFAR-10, SVHN .mat, LSUN LMDB, StackGAN layout)"
        )
    if fmt not in SOURCE_FORMATS:
        raise DataError(f"--format {fmt!r} is not one of {', '.join(SOURCE_FORMATS)}")
    if crop not in CROPS:
        raise DataError(f"--crop {crop!r} is not one of {', '.join(CROPS)}")
    if resolution < 0:
        raise DataError(f"--resolution must be >= 0 (0: keep the size), got {resolution}")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    if crop == "none" and not resolution:
        raise DataError("--crop none stretches the images to --resolution N x N: give --resolution")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "folder" and not src.is_dir():
        raise DataError(f"{src} is a file; an image source is a folder of images")
    replace = _check_dest(src, dest, force)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    opts = {
        "format": fmt,
        "resolution": resolution,
        "crop": crop,
        "channels": channels,
        "workers": workers,
        "skip_bad": skip_bad,
        "num_images": num_images,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".dataset"))
    try:
        if fmt == "folder":
            res = _convert_folder(src, tmp, opts, progress)
        elif fmt == "lsun":
            res = _convert_lsun(src, tmp, opts, progress)
        else:
            res = _convert_loaded(src, tmp, opts, progress)
        shape = (res["count"], *res["chw"])
        meta: dict = {
            "format": FORMAT,
            "version": VERSION,
            "images": {
                "file": IMAGES,
                "dtype": "uint8",
                "layout": "NCHW",
                "shape": list(shape),
                "sha256": _sha(tmp / IMAGES),
            },
            "count": shape[0],
            "resolution": resolution,
            "crop": crop,
            "channels": shape[1],
            "source": {"path": str(src.resolve()), "format": fmt},
            "labels": None,
            "num_classes": 0,
            "class_names": None,
            "captions": None,
            "embeddings": None,
            "zip": None,
            "conversions": res.get("conversions", {}),
            "skipped": [list(b) for b in res["skipped"]],
            "created_by": f"ganstack {version()}",
        }
        if "labels" in res:
            np.save(tmp / LABELS, res["labels"], allow_pickle=False)
            meta |= {
                "labels": {"file": LABELS, "dtype": "int64", "sha256": _sha(tmp / LABELS)},
                "num_classes": int(res["num_classes"]),
                "class_names": res["class_names"],
            }
        if "captions" in res:
            atomic_write_text(tmp / CAPTIONS, json.dumps(res["captions"]))
            meta["captions"] = {"file": CAPTIONS, "sha256": _sha(tmp / CAPTIONS)}
        if "embeddings" in res:
            np.save(tmp / EMBEDDINGS, res["embeddings"], allow_pickle=False)
            meta["embeddings"] = {
                "file": EMBEDDINGS,
                "dtype": "float32",
                "shape": list(res["embeddings"].shape),
                "sha256": _sha(tmp / EMBEDDINGS),
            }
        if write_zip:
            _write_zip(tmp, shape, res.get("labels"), workers, progress)
            meta["zip"] = {
                "file": ZIP,
                "layout": "stylegan2-ada dataset_tool",
                "sha256": _sha(tmp / ZIP),
            }
        for name in (LABELS, EMBEDDINGS, ZIP):
            if (tmp / name).is_file():
                with open(tmp / name, "rb+") as f:
                    os.fsync(f.fileno())
        atomic_write_text(tmp / META, json.dumps(meta, indent=1))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp made it 0700
        install_folder(tmp, dest, replace, "dataset")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def summary(meta: dict) -> str:
    """One line about a prepared dataset."""
    n, c, h, w = meta["images"]["shape"]
    lab = f", {meta['num_classes']} classes" if meta.get("labels") else ", unlabelled"
    cap = ", captions" if meta.get("captions") else ""
    return f"{n:,} images {w}x{h}x{c}{lab}{cap} ({meta['source']['format']} source)"
