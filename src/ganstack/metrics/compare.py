"""``ganstack fid A B``: FID and KID between any two image sets or statistics files.

Each side is a run directory (samples drawn from it), an ``.npz`` of uint8 images (``images``
as ganstack writes, or ``arr_0`` as other tools write), a folder of image files that share one
size, or a statistics file (pytorch-fid's / TTUR's ``mu``/``sigma`` npz, or a ganstack
:class:`~ganstack.metrics.stats.FeatureStats` npz). The feature space is NVIDIA's TorchScript
Inception (``--inception``) or a dataset's domain classifier (``--dataset``).

* :func:`read_image_set` -- an ``.npz`` or a folder of images as a uint8 (N, C, H, W) tensor;
* :func:`read_stats_file` -- ``(mu, sigma)`` of a statistics file, None when it holds images;
* :func:`compare` -- the FID (and KID) of two sides, as a JSON-ready dict;
* :func:`format_result` -- that dict as a few printable lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.errors import GanstackError
from ganstack.fileio import check_npz

log = logging.getLogger("ganstack")

__all__ = ["compare", "dataset_config", "format_result", "read_image_set", "read_stats_file"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_KEYS = ("images", "arr_0")  # ganstack's sample files; numpy's default name (other tools)
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_KINDS = "a run directory, an .npz of images or statistics, or a folder of images"


# ------------------------------------------------------------------------------ reading files


def _open_npz(path: Path) -> Any:
    if not path.exists():
        raise GanstackError(f"{path} does not exist; give {_KINDS}")
    try:
        check_npz(path, GanstackError)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise GanstackError(
            f"cannot read {path} as an .npz file ({e}); is it corrupt or truncated?"
        ) from None


def _stats_from_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict] | None:
    """(mu, sigma, features or None, metadata) of a statistics file; None if it holds images.

    Raises a GanstackError when the file holds neither."""
    from ganstack.metrics.stats import FeatureStats

    with _open_npz(path) as f:
        files = list(f.files)
        if "format" in files:  # ganstack's FeatureStats
            pass
        elif "mu" in files and "sigma" in files:
            try:
                mu = np.asarray(f["mu"], dtype=np.float64)
                sigma = np.asarray(f["sigma"], dtype=np.float64)
            except (ValueError, TypeError) as e:
                raise GanstackError(f"{path}: 'mu'/'sigma' are not numeric arrays: {e}") from None
            d = mu.shape[0] if mu.ndim == 1 else -1
            if d < 1 or sigma.shape != (d, d):
                raise GanstackError(
                    f"{path}: 'mu' must be (D,) and 'sigma' (D, D), got "
                    f"{mu.shape} and {sigma.shape}; is it a pytorch-fid "
                    f"statistics file?"
                )
            if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
                raise GanstackError(
                    f"{path}: 'mu'/'sigma' hold NaN or infinite values; recompute the statistics"
                )
            return mu, sigma, None, {"format": "mu/sigma"}
        elif any(k in files for k in IMAGE_KEYS):
            return None
        else:
            raise GanstackError(
                f"{path} holds neither images ('images' or 'arr_0') nor statistics ('mu' and "
                f"'sigma', or a ganstack FeatureStats file); it has {', '.join(files) or 'no'} "
                f"arrays. Write the images as uint8 under 'images', or give a statistics file"
            )
    stats = FeatureStats.load(path)
    if stats.num_items < 2:
        raise GanstackError(
            f"{path} holds statistics of {stats.num_items} feature vectors; at least 2 are needed"
        )
    mu, sigma = stats.mean_cov()
    feats = stats.features() if stats.keep_features else None
    return (
        mu,
        sigma,
        feats,
        dict(stats.metadata) | {"format": "ganstack FeatureStats", "num_items": stats.num_items},
    )


def read_stats_file(path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The float64 ``(mu (D,), sigma (D, D))`` of a statistics ``.npz`` (pytorch-fid's / TTUR's
    ``mu``/``sigma``, or a ganstack FeatureStats file); None when the file holds images
    (``images`` or ``arr_0``). A GanstackError when it is missing, unreadable, or holds neither."""
    res = _stats_from_npz(Path(path))
    return None if res is None else (res[0], res[1])


def _to_nchw(arr: np.ndarray, where: str) -> torch.Tensor:
    """uint8 (N, H, W, C), (N, C, H, W) or (N, H, W) images as a (N, C, H, W) tensor."""
    if arr.dtype != np.uint8:
        hint = " (floats in [0, 1]: multiply by 255 first)" if arr.dtype.kind == "f" else ""
        raise GanstackError(
            f"{where}: images must be uint8 with values 0..255, got "
            f"{arr.dtype}; convert them with "
            f"np.clip(np.round(x), 0, 255).astype(np.uint8){hint}"
        )
    if arr.ndim == 3:  # (N, H, W) grayscale
        arr = arr[:, None]
        return torch.from_numpy(np.ascontiguousarray(arr))
    if arr.ndim != 4:
        raise GanstackError(
            f"{where}: expected images of shape (N, H, W, C) or (N, C, H, W), got {arr.shape}"
        )
    last, second = arr.shape[3] in (1, 3), arr.shape[1] in (1, 3)
    if last and second:
        raise GanstackError(
            f"{where}: images of shape {arr.shape} are ambiguous (the channels "
            f"could be the 2nd or the last axis); write them as (N, H, W, C)"
        )
    if last:
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    elif second:
        x = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise GanstackError(
            f"{where}: images of shape {arr.shape} have no channel axis of 1 "
            f"or 3; expected (N, H, W, C) or (N, C, H, W)"
        )
    return x.contiguous()


def _images_from_npz(path: Path) -> torch.Tensor:
    with _open_npz(path) as f:
        key = next((k for k in IMAGE_KEYS if k in f.files), None)
        if key is None:
            kind = (
                "a statistics file"
                if "mu" in f.files or "format" in f.files
                else f"an npz with {', '.join(f.files) or 'no'} arrays"
            )
            raise GanstackError(
                f"{path} is {kind}, not images; images go under 'images' (uint8 N x H x W x C)"
            )
        try:
            arr = f[key]
        except ValueError as e:  # an object array needs pickle
            raise GanstackError(
                f"{path}: cannot read '{key}' ({e}); store the images as a plain uint8 array"
            ) from None
    return _to_nchw(arr, f"{path} ['{key}']")


def _list_image_files(folder: Path) -> list[Path]:
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.append(p)
    if not found:
        raise GanstackError(
            f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) "
            f"and is not a run directory (no config.yaml)"
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _images_from_folder(folder: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    files = _list_image_files(folder)
    sizes: dict[tuple[int, int], list[str]] = {}
    gray = True
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, []).append(p.relative_to(folder).as_posix())
                gray = gray and im.mode in _GRAY_MODES
        except (OSError, UnidentifiedImageError) as e:
            raise GanstackError(f"cannot read image {p}: {e}; remove or replace it") from None
    if len(sizes) > 1:
        parts = [
            f"{w}x{h} ({len(names)}, e.g. {names[0]})"
            for (w, h), names in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        ]
        raise GanstackError(
            f"the images in {folder} have {len(sizes)} different sizes: "
            f"{'; '.join(parts[:4])}; resize them to one size first"
        )
    mode = "L" if gray else "RGB"
    arrays = []
    for p in files:
        try:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert(mode)))
        except (OSError, UnidentifiedImageError) as e:
            raise GanstackError(f"cannot decode image {p}: {e}; remove or replace it") from None
    arr = np.stack(arrays)
    if arr.ndim == 3:
        arr = arr[..., None]
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def read_image_set(path: str | Path) -> torch.Tensor:
    """Images of an ``.npz`` (``images`` or ``arr_0``: uint8 (N, H, W, C), or (N, C, H, W)
    when unambiguous, or (N, H, W)) or of a folder of PNG/JPEG/BMP/WebP files (recursively,
    hidden ones left out, sorted by path; all of one size) as a uint8 (N, C, H, W) tensor with
    C = 1 (grayscale files) or 3."""
    path = Path(path)
    if not path.exists():
        raise GanstackError(f"{path} does not exist; give {_KINDS}")
    if path.is_dir():
        return _images_from_folder(path)
    if path.suffix.lower() == ".npz":
        return _images_from_npz(path)
    raise GanstackError(f"{path}: not an .npz or a folder; give {_KINDS}")


# ------------------------------------------------------------------------------ sides


@dataclass
class _Side:
    path: str
    kind: str  # "run", "images" or "statistics"
    images: torch.Tensor | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    features: np.ndarray | None = None  # raw features (extracted, or kept in a stats file)
    run: Any = None
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        if self.images is not None:
            return len(self.images)
        if self.features is not None:
            return len(self.features)
        return int(self.info.get("num_items", 0))

    def describe(self) -> dict:
        out = {"source": self.path, "kind": self.kind, "n": self.n} | self.info
        if self.images is not None:
            out["shape"] = list(self.images.shape[1:])
        if self.mu is not None and self.kind == "statistics":
            out["dim"] = int(self.mu.shape[0])
        return out


def _is_run(path: Path) -> bool:
    """A run directory, or an export of one (``ganstack export``)."""
    from ganstack.export import is_export

    return path.is_dir() and ((path / "config.yaml").is_file() or is_export(path))


def _open_side(path: str, checkpoint: str | None, device: str) -> _Side:
    p = Path(path)
    if not p.exists():
        raise GanstackError(f"{path} does not exist; give {_KINDS}")
    if _is_run(p):
        from ganstack.run import load

        return _Side(path, "run", run=load(p, checkpoint, device))
    if p.is_file() and p.suffix.lower() == ".npz":
        stats = _stats_from_npz(p)
        if stats is not None:
            mu, sigma, feats, meta = stats
            return _Side(path, "statistics", mu=mu, sigma=sigma, features=feats, info=meta)
    return _Side(path, "images", images=read_image_set(p))


def _sample_run(side: _Side, n: int, seed: int, datasets: _Datasets) -> None:
    """Draw ``n`` samples from a run side as :meth:`Run.evaluate` does: class-balanced
    labels, and for a text model captions of the held-out images."""
    from ganstack.viz import to_uint8

    run = side.run
    conditions = None
    if "text" in run.model.condition_dims():
        from ganstack.metrics.evaluate import caption_targets

        train_ds, eval_ds = datasets.get(run.config.data)
        conditions, _ = caption_targets(eval_ds or train_ds, n, seed)
    out = run.sample(n, seed=seed, conditions=conditions)
    side.images = to_uint8(out["image"])
    side.info = {"checkpoint": run.checkpoint, "step": run.step, "seed": seed}


class _Datasets:
    """Datasets loaded once per comparison, by their config."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple] = {}

    def get(self, cfg: Any) -> tuple:
        from ganstack.data import load_dataset

        key = repr(cfg)
        if key not in self._cache:
            self._cache[key] = load_dataset(cfg)
        return self._cache[key]


def dataset_config(name: str) -> Any:
    """The :class:`~ganstack.config.DataConfig` that ``--dataset NAME`` names: a run
    directory's config, a YAML file or bundled config (its ``data`` section), or a registered
    dataset name with the default data settings."""
    from ganstack.config import DataConfig, load_config
    from ganstack.data import DATASETS
    from ganstack.errors import ConfigError
    from ganstack.train.trainer import load_run_config

    p = Path(name)
    if p.is_dir():
        if not _is_run(p):
            raise GanstackError(
                f"--dataset {name}: the folder is not a run directory (no "
                f"config.yaml); give a run, a config or a dataset name"
            )
        from ganstack.export import is_export, read_export_config

        if is_export(p):
            from ganstack.config import from_dict

            return from_dict(read_export_config(p)["config"]).data
        return load_run_config(p).data
    try:
        return load_config(name).data
    except ConfigError as e:
        if name in DATASETS and p.suffix not in (".yaml", ".yml"):
            return DataConfig(name=name)
        if "neither a YAML file nor a bundled config" in str(e):
            raise GanstackError(
                f"--dataset {name}: neither a run directory, a YAML file, a bundled config "
                f"(`ganstack configs`) nor a dataset name (`ganstack datasets`)"
            ) from None
        raise


# ------------------------------------------------------------------------------ feature spaces


class _Space:
    """A feature extractor: ``features(images) -> (N, D) float64`` and its description."""

    def __init__(
        self,
        kind: str,
        dim: int,
        info: dict,
        extract: Any = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.kind, self.dim, self.info, self._extract, self.shape = kind, dim, info, extract, shape

    def features(self, images: torch.Tensor) -> np.ndarray:
        return self._extract(images).double().numpy()

    def describe(self) -> dict:
        return {"kind": self.kind, "dim": self.dim} | self.info


def _inception_space(path: str | None, device: str) -> _Space:
    from ganstack.metrics.inception import InceptionExtractor

    net = InceptionExtractor(path, device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [net.features(images[s : s + 200]).cpu() for s in range(0, len(images), 200)]
        )

    return _Space(
        "inception",
        net.feature_dim,
        {"name": "inception", "file": str(net.path), "sha256": net.sha256},
        extract,
    )


def _classifier_space(cfg: Any, datasets: _Datasets, device: str, source: str) -> _Space:
    from ganstack.metrics.classifier import get_classifier

    train_ds, eval_ds = datasets.get(cfg)
    clf, meta = get_classifier(train_ds, eval_ds)
    clf = clf.to(device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        return clf.predict(images)[0]

    info = {
        "name": meta["name"],
        "dataset": meta.get("dataset"),
        "from": source,
        "dataset_hash": meta.get("dataset_hash"),
        "held_out_accuracy": meta.get("held_out_accuracy"),
    }
    return _Space("classifier", int(clf.feature_dim), info, extract, tuple(train_ds.shape))


def _resolve_device(device: str | None) -> str:
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GanstackError(f"--device {device}: expected cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GanstackError(f"--device {device}: CUDA is not available here; use --device cpu")
    return str(dev)


# ------------------------------------------------------------------------------ compare


def compare(
    a: str | Path,
    b: str | Path,
    inception: str | None = None,
    dataset: str | None = None,
    device: str | None = None,
    n: int = 5000,
    seed: int = 0,
    kid: bool | None = None,
    checkpoint: str | None = None,
) -> dict:
    """FID (and KID) between ``a`` and ``b``, each a run directory, an ``.npz`` of images or of
    statistics, or a folder of images.

    Feature space: ``inception`` (NVIDIA's TorchScript file; also ``$GANSTACK_INCEPTION``) or
    ``dataset`` (a config, YAML, run directory or dataset name: that dataset's domain
    classifier); with neither, the dataset classifier of the first run among ``a``/``b``, else
    Inception. ``n``/``seed``/``checkpoint``: how many samples a run side gives (class-balanced
    labels; a text model's held-out captions, as :meth:`Run.evaluate`). ``kid``: None computes
    KID when both sides have features (images, or a FeatureStats file that kept them), True
    requires it, False skips it. ``device``: where models run (default: cuda when available).

    Returns ``{"fid", "kid", "kid_std", "a", "b", "feature_space"}`` (``kid`` None when
    skipped)."""
    if inception and dataset:
        raise GanstackError(
            "give either --inception (Inception features) or --dataset (a "
            "domain classifier's features), not both"
        )
    if n < 2:
        raise GanstackError(f"--n must be at least 2, got {n}")
    dev = _resolve_device(device)
    datasets = _Datasets()
    sides = {"a": _open_side(str(a), checkpoint, dev), "b": _open_side(str(b), checkpoint, dev)}
    stats_only = [k for k, s in sides.items() if s.kind == "statistics" and s.features is None]
    if kid and stats_only:
        which = " and ".join(sides[k].path for k in stats_only)
        raise GanstackError(
            f"KID needs both sets' features, but {which} holds only a mean and covariance; "
            f"give images (or a ganstack FeatureStats file saved with its features), or drop "
            f"--kid"
        )
    # The feature space.
    space: _Space | None = None
    runs = [s for s in sides.values() if s.kind == "run"]
    needs_features = any(s.kind != "statistics" for s in sides.values())
    if inception:
        space = _inception_space(inception, dev)
    elif dataset:
        space = _classifier_space(dataset_config(dataset), datasets, dev, f"--dataset {dataset}")
    elif runs:
        space = _classifier_space(runs[0].run.config.data, datasets, dev, f"the run {runs[0].path}")
    elif needs_features:
        try:
            space = _inception_space(None, dev)
        except GanstackError as e:
            raise GanstackError(
                f"no feature space given: pass --dataset CONFIG (a dataset's domain "
                f"classifier) or --inception FILE. {e}"
            ) from None
    # Samples, then features.
    for s in runs:
        _sample_run(s, n, seed, datasets)
    for name, s in sides.items():
        label = f"{name.upper()} ({s.path})"
        if s.kind == "statistics":
            dim = int(s.mu.shape[0])  # type: ignore[union-attr]
            if space is not None and dim != space.dim:
                hint = " (2048-d: Inception statistics; use --inception)" if dim == 2048 else ""
                raise GanstackError(
                    f"{label} holds {dim}-d statistics, but the "
                    f"{space.info['name']} features are {space.dim}-d{hint}"
                )
            continue
        assert s.images is not None and space is not None
        if len(s.images) < 2:
            raise GanstackError(f"{label} holds {len(s.images)} image(s); at least 2 are needed")
        shape = tuple(s.images.shape[1:])
        if space.shape is not None and shape != space.shape:
            raise GanstackError(
                f"{label} has images of shape {'x'.join(map(str, shape))} (C x H x W), but "
                f"the {space.info['name']} classifier takes "
                f"{'x'.join(map(str, space.shape))}; compare with --inception, or pick the "
                f"--dataset these images belong to"
            )
        if space.kind == "inception" and shape[0] not in (1, 3):
            raise GanstackError(
                f"{label}: Inception takes 1- or 3-channel images, got {shape[0]} channels"
            )
        log.info("features of %s: %d images", label, len(s.images))
        s.features = space.features(s.images)
        s.mu, s.sigma = _mean_cov(s.features)
    a_side, b_side = sides["a"], sides["b"]
    if a_side.mu.shape != b_side.mu.shape:  # type: ignore[union-attr]
        raise GanstackError(
            f"the two statistics files have different dimensions "
            f"({a_side.mu.shape[0]} and {b_side.mu.shape[0]}): they come "  # type: ignore[union-attr]
            f"from different feature extractors"
        )
    from ganstack.metrics.fid import frechet_distance, kernel_inception_distance

    fid = frechet_distance(a_side.mu, a_side.sigma, b_side.mu, b_side.sigma)  # type: ignore[arg-type]
    kid_mean = kid_std = None
    note = None
    if kid is False:
        note = "skipped (--no-kid)"
    elif a_side.features is None or b_side.features is None:
        note = "needs both sets' features; a statistics file holds only a mean and covariance"
    else:
        kid_mean, kid_std = kernel_inception_distance(a_side.features, b_side.features)
    feature_space = (
        space.describe()
        if space is not None
        else {"kind": "statistics", "dim": int(a_side.mu.shape[0])}  # type: ignore[union-attr]
    )
    res: dict[str, Any] = {
        "fid": fid,
        "kid": kid_mean,
        "kid_std": kid_std,
        "a": a_side.describe(),
        "b": b_side.describe(),
        "feature_space": feature_space,
    }
    if note:
        res["kid_note"] = note
    return res


def _mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from ganstack.metrics.stats import FeatureStats

    s = FeatureStats()
    s.append(features)
    return s.mean_cov()


def format_result(res: dict) -> str:
    """The result of :func:`compare` as printable lines."""
    fs = res["feature_space"]
    space = (
        "the statistics files' own features"
        if fs["kind"] == "statistics"
        else f"{fs.get('name')} {'classifier ' if fs['kind'] == 'classifier' else ''}features"
    )
    lines = [f"FID  {res['fid']:.4f}   ({space}, {fs['dim']}-d)"]
    if res.get("kid") is not None:
        lines.append(f"KID  {res['kid']:.6f} ± {res['kid_std']:.6f}")
    else:
        lines.append(f"KID  -   ({res.get('kid_note', 'not computed')})")
    for key in ("a", "b"):
        side = res[key]
        what = {"run": "samples", "images": "images", "statistics": "feature vectors"}
        extra = (
            f", {side['checkpoint']} (step {side['step']}), seed {side['seed']}"
            if side["kind"] == "run"
            else ""
        )
        count = f"{side['n']} {what[side['kind']]}" if side["n"] else "mean and covariance"
        lines.append(f"{key.upper()}    {side['source']}: {side['kind']}, {count}{extra}")
    return "\n".join(lines)
