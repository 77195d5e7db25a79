"""Datasets: a registry of loaders that return in-memory :class:`ImageDataset` objects."""

from __future__ import annotations

from collections.abc import Callable

from ganstack.config import DataConfig
from ganstack.data.base import Batcher, ImageDataset, train_eval_split
from ganstack.errors import DataError
from ganstack.registry import Registry

DATASETS: Registry[Callable[[DataConfig], ImageDataset]] = Registry("dataset")


@DATASETS.register("mnist5k")
def _mnist5k(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.embedded import load_mnist5k

    return load_mnist5k()


def _path(cfg: DataConfig, reads: str) -> str:
    if not cfg.path:
        raise DataError(f"dataset '{cfg.name}' reads {reads}: set data.path")
    return cfg.path


@DATASETS.register("mnist")
def _mnist(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.formats import load_mnist_idx

    return load_mnist_idx(_path(cfg, "the standard MNIST IDX files in a folder"), "train")


@DATASETS.register("folder")
def _folder(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.formats import IMAGE_EXTENSIONS, load_image_folder

    path = _path(cfg, f"a folder of images ({', '.join(IMAGE_EXTENSIONS)})")
    from ganstack.data.prepared import is_prepared

    if is_prepared(path):  # a folder written by `ganstack dataset SRC DEST`
        return _prepared(cfg)
    return load_image_folder(path, cfg.resolution, cfg.channels, cfg.skip_bad)


@DATASETS.register("prepared")
def _prepared(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.prepared import load_prepared

    path = _path(cfg, "a folder written by `ganstack dataset SRC DEST` (DEST)")
    ds = load_prepared(path, cfg.resolution)
    if ds.captions is not None and cfg.text_encoder != "pickle":
        return attach_embeddings(ds, cfg)
    if cfg.text_encoder == "pickle" and ds.captions is not None and "embeddings" not in ds.extras:
        raise DataError(
            f"data.text_encoder=pickle reads the char-CNN-RNN embeddings, which "
            f"{path} does not hold (its source had none); use "
            f"data.text_encoder=hash"
        )
    return ds


@DATASETS.register("cifar10")
def _cifar10(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.archives import load_cifar10

    return load_cifar10(_path(cfg, "the python-version CIFAR-10 batches (cifar-10-batches-py)"))


@DATASETS.register("svhn")
def _svhn(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.archives import load_svhn

    return load_svhn(_path(cfg, "SVHN's train_32x32.mat"))


@DATASETS.register("rooms")
def _rooms(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.rooms import load_rooms

    # data.resolution (default 64) is both the image and the normal-map size.
    return load_rooms(cfg.num_images or 4000, cfg.resolution or 64, cfg.gen_seed)


@DATASETS.register("nyu_normals")
def _nyu_normals(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.nyu import load_nyu_normals

    path = _path(cfg, "S²-GAN's (normal jpg, rgb jpg) pairs: a list file or a folder")
    return load_nyu_normals(path, cfg.resolution, cfg.num_images, cfg.skip_bad)


@DATASETS.register("shapes")
def _shapes(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.shapes import make_shapes

    ds = make_shapes(
        cfg.num_images or 6000,
        cfg.resolution or 64,
        cfg.gen_seed,
        counts=cfg.shapes_counts,
        patterns=cfg.shapes_patterns,
        mirror=cfg.flip,
    )
    return attach_embeddings(ds, cfg)


def _stackgan_layout(cfg: DataConfig, kind: str) -> ImageDataset:
    from ganstack.data.stackgan_formats import load_stackgan_layout
    from ganstack.data.text import build_encoder, encode_caption_lists

    path = _path(cfg, f"the StackGAN '{kind}' layout (train/filenames.pickle, images, text)")
    encode = None
    if cfg.text_encoder != "pickle":
        encoder = build_encoder(cfg.text_encoder, cfg.text_dim, cfg.text_model)
        encode = lambda caps: encode_caption_lists(encoder, caps)  # noqa: E731
    # data.num_images > 0 keeps the first N images of filenames.pickle (COCO's 80k training
    # images take 15.7 GB at 256 pixels).
    return load_stackgan_layout(
        path, kind, "train", cfg.resolution or 256, cfg.text_encoder, encode, cfg.num_images
    )


@DATASETS.register("cub")
def _cub(cfg: DataConfig) -> ImageDataset:
    return _stackgan_layout(cfg, "cub")


@DATASETS.register("oxford")
def _oxford(cfg: DataConfig) -> ImageDataset:
    return _stackgan_layout(cfg, "oxford")


@DATASETS.register("coco")
def _coco(cfg: DataConfig) -> ImageDataset:
    # StackGAN-Pytorch's layout: images/ (or train2014/, val2014/), text/, train/*.pickle.
    return _stackgan_layout(cfg, "coco")


@DATASETS.register("lsun")
def _lsun(cfg: DataConfig) -> ImageDataset:
    from ganstack.data.stackgan_formats import load_lsun

    path = _path(cfg, "an LSUN scene LMDB (e.g. bedroom_train_lmdb)")
    return load_lsun(path, cfg.resolution or 256, cfg.num_images)


# The data keys that change the shape of a dataset's images, by dataset (data.name): what an
# error about the data's shape can tell the user to set.
SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "folder": ("channels", "resolution"),
    "rooms": ("resolution",),
    "shapes": ("resolution",),
    "nyu_normals": ("resolution",),
    "cub": ("resolution",),
    "oxford": ("resolution",),
    "coco": ("resolution",),
    "lsun": ("resolution",),
}


def attach_embeddings(ds: ImageDataset, cfg: DataConfig) -> ImageDataset:
    """Encode a captioned dataset's captions with the configured encoder (``data.text_*``)
    into ``extras["embeddings"]`` (N, captions, D); for a dataset that is flipped with its
    conditions (``meta["flip"]``), those of the mirrored captions into
    ``extras["embeddings_mirror"]``."""
    from ganstack.data.text import build_encoder, encode_caption_lists, encode_mirrored

    if ds.captions is None:
        raise DataError(f"dataset '{ds.name}' has no captions to encode")
    if cfg.text_encoder == "pickle":
        raise DataError(
            f"data.text_encoder=pickle reads precomputed char-CNN-RNN embeddings, which "
            f"dataset '{ds.name}' does not have; use data.text_encoder=hash"
        )
    encoder = build_encoder(cfg.text_encoder, cfg.text_dim, cfg.text_model)
    ds.extras["embeddings"] = encode_caption_lists(encoder, ds.captions)
    if ds.meta.get("flip"):
        ds.extras["embeddings_mirror"] = encode_mirrored(
            encoder, ds.captions, ds.extras["embeddings"]
        )
    return ds


def load_dataset(cfg: DataConfig) -> tuple[ImageDataset, ImageDataset | None]:
    """Load the configured dataset and split off its evaluation images."""
    full = DATASETS.get(cfg.name, what="dataset (data.name)")(cfg)
    if cfg.flip and not full.meta.get("flip"):
        raise DataError(
            f"data.flip=true needs a dataset that can mirror its conditions with "
            f"its images (shapes); dataset '{full.name}' cannot"
        )
    return train_eval_split(full, cfg.eval_size, cfg.split_seed)


__all__ = ["DATASETS", "SHAPE_KEYS", "Batcher", "ImageDataset", "load_dataset", "train_eval_split"]
