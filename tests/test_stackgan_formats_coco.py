"""MS-COCO in StackGAN-Pytorch's layout (``data.name=coco``), on tiny generated files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganstack.config import DataConfig, load_config
from ganstack.data import DATASETS, load_dataset
from ganstack.errors import DataError
from ganstack.models import DataInfo, build_model
from ganstack.train.trainer import Trainer

from .test_stackgan_formats import _write_pickle

pytestmark = pytest.mark.usefixtures("one_thread")

CAPS = [
    "a man riding a red bike down the street",
    "a person on a bicycle in a city",
    "someone cycling past parked cars",
    "a cyclist on a busy road",
    "a red bicycle and its rider",
    "a sixth caption that is left out",
]


def _key(i: int) -> str:
    split = "train2014" if i % 2 == 0 else "val2014"
    return f"COCO_{split}_{i + 9:012d}"


def make_coco(
    root: Path,
    n: int = 4,
    image_dir: str = "images",
    ext: str = ".jpg",
    captions: int = 6,
    dim: int = 1024,
    per_image: int = 5,
) -> Path:
    """A COCO folder: n two-colour images (left half red, right half blue, 40x20, so a
    centre crop would lose the colours at the sides), text/<key>.txt, train/ pickles."""
    rng = np.random.default_rng(0)
    keys = [_key(i) for i in range(n)]
    for i, key in enumerate(keys):
        img = np.zeros((20, 40, 3), np.uint8)
        img[:, :20] = [230, 20, 20]
        img[:, 20:] = [20, 20, 230]
        img[0, 0] = [10 * i, 10 * i, 10 * i]  # distinct files
        d = {"images": "images", "zips": key.split("_")[1]}[image_dir]
        p = root / d / f"{key}{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, **({"quality": 95} if ext == ".jpg" else {}))
        t = root / "text" / f"{key}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("\n".join(CAPS[:captions]) + "\n")
    _write_pickle(root / "train" / "filenames.pickle", [k.encode() for k in keys])
    emb = rng.standard_normal((n, per_image, dim)).astype(np.float32)
    _write_pickle(root / "train" / "char-CNN-RNN-embeddings.pickle", emb)
    return root


def test_coco_is_registered():
    assert "coco" in DATASETS.names()


def test_coco_layout_with_the_released_embeddings(tmp_path):
    root = make_coco(tmp_path / "coco")
    tr, ev = load_dataset(
        DataConfig(name="coco", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    )
    assert ev is None or len(ev) == 0
    assert tr.images.shape == (4, 3, 8, 8) and tr.labels is None
    emb = pickle.loads((root / "train" / "char-CNN-RNN-embeddings.pickle").read_bytes())
    assert torch.equal(tr.extras["embeddings"], torch.from_numpy(emb))
    # The caption files are read too when present: the first 5 lines of each.
    assert tr.captions[0] == CAPS[:5]
    # Resized straight to a square, as StackGAN-Pytorch does: the red left and blue right
    # halves both survive (a centre crop would keep only the middle 20 columns).
    img = tr.images[0].float()
    assert img[0, :, :3].mean() > 180 and img[2, :, :3].mean() < 60
    assert img[2, :, 5:].mean() > 180 and img[0, :, 5:].mean() < 60


def test_coco_images_in_the_zip_folders_and_hashed_captions(tmp_path):
    # train2014/ and val2014/ as the COCO zips extract, PNG files, no embeddings pickle.
    root = make_coco(tmp_path / "coco", image_dir="zips", ext=".png")
    (root / "train" / "char-CNN-RNN-embeddings.pickle").unlink()
    tr, ev = load_dataset(
        DataConfig(name="coco", path=str(root), resolution=8, eval_size=1, text_dim=32)
    )
    assert len(tr) == 3 and len(ev) == 1
    assert tr.extras["embeddings"].shape == (3, 5, 32)  # hashed encoder on text/
    assert all(len(c) == 5 for c in tr.captions)


def test_coco_num_images_keeps_the_first_ones(tmp_path):
    root = make_coco(tmp_path / "coco", n=5)
    (root / "images" / f"{_key(4)}.jpg").unlink()  # beyond the cap: never looked for
    tr, _ = load_dataset(
        DataConfig(
            name="coco",
            path=str(root),
            resolution=8,
            eval_size=0,
            text_encoder="pickle",
            num_images=3,
        )
    )
    emb = pickle.loads((root / "train" / "char-CNN-RNN-embeddings.pickle").read_bytes())
    assert len(tr) == 3 and torch.equal(tr.extras["embeddings"], torch.from_numpy(emb[:3]))


def test_coco_errors_name_the_file_and_what_is_expected(tmp_path):
    root = make_coco(tmp_path / "coco")
    cfg = DataConfig(name="coco", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    img = root / "images" / f"{_key(1)}.jpg"
    img.rename(img.with_suffix(".bak"))
    with pytest.raises(
        DataError,
        match=rf"COCO image '{_key(1)}'.*images/{_key(1)}.jpg.*"
        rf"train2014/{_key(1)}.jpg",
    ):
        load_dataset(cfg)
    img.with_suffix(".bak").rename(img)
    (root / "text" / f"{_key(2)}.txt").write_text("just one caption\n")
    with pytest.raises(DataError, match=rf"{_key(2)}.txt has 1 caption\(s\); 5"):
        load_dataset(cfg)
    (root / "text" / f"{_key(2)}.txt").unlink()
    with pytest.raises(DataError, match=rf"caption file .*{_key(2)}.txt is missing"):
        load_dataset(cfg)
    for p in (root / "text").iterdir():
        p.unlink()
    (root / "text").rmdir()
    load_dataset(cfg)  # the released embeddings need no caption files
    with pytest.raises(DataError, match=r"no text/ caption folder; .*text_encoder=pickle"):
        load_dataset(DataConfig(name="coco", path=str(root), resolution=8, eval_size=0))
    _write_pickle(
        root / "train" / "char-CNN-RNN-embeddings.pickle", np.zeros((3, 5, 1024), np.float32)
    )
    with pytest.raises(DataError, match=r"shape \(3, 5, 1024\); expected \(4, captions, dim\)"):
        load_dataset(cfg)
    (root / "train" / "char-CNN-RNN-embeddings.pickle").unlink()
    with pytest.raises(DataError, match="char-CNN-RNN-embeddings.pickle does not exist"):
        load_dataset(cfg)
    (root / "train" / "filenames.pickle").unlink()
    with pytest.raises(DataError, match="filenames.pickle does not exist"):
        load_dataset(cfg)
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(DataConfig(name="coco", path=str(tmp_path / "nope"), eval_size=0))
    with pytest.raises(DataError, match="set data.path"):
        load_dataset(DataConfig(name="coco"))


def test_malicious_coco_pickle_is_refused_without_running(tmp_path):
    root = make_coco(tmp_path / "coco")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataError, match="not a plain data pickle"):
        load_dataset(DataConfig(name="coco", path=str(root), resolution=8, eval_size=0))
    assert not marker.exists()


def test_stackgan_v1_coco_config_loads_and_trains_a_step_of_each_stage(tmp_path):
    root = make_coco(tmp_path / "coco", n=6)
    overrides = [f"data.path={root}"]
    cfg = load_config("stackgan-v1-coco", overrides)
    assert cfg.data.name == "coco" and cfg.data.text_encoder == "pickle"
    # The bundled config's own data settings (resolution 256, released embeddings).
    train, _ = load_dataset(cfg.data)
    assert train.images.shape == (6, 3, 256, 256)
    assert train.extras["embeddings"].shape == (6, 5, 1024)
    model = build_model(cfg.model, DataInfo.of(train))
    assert DataInfo.of(train).text_dim == 1024 and model.netG1 is not None
    # A tiny version of it trains one step of each stage.
    tiny = overrides + [
        "data.resolution=64",
        "model.stage1_size=16",
        "model.stage2_size=64",
        "model.gf_dim=4",
        "model.df_dim=4",
        "model.ef_dim=8",
        "model.z_dim=8",
        "model.caption_bank=4",
        "train.batch_size=4",
        "train.phases.stage1=1",
        "train.phases.stage2=1",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
        "train.num_threads=1",
        "eval.n=4",
    ]
    assert Trainer(load_config("stackgan-v1-coco", tiny), tmp_path / "run").fit() == "done"


@settings(
    deadline=None,
    database=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda obj, proto: pickle.dumps(obj, protocol=proto),
            st.recursive(
                st.none()
                | st.integers()
                | st.floats()
                | st.text(max_size=20)
                | st.binary(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            st.integers(0, 5),
        ),
    )
)
def test_fuzzed_coco_embeddings_pickle_gives_a_data_error(tmp_path_factory, blob):
    """Any bytes as the embeddings pickle: a clear DataError or a successful load."""
    root = make_coco(tmp_path_factory.mktemp("fuzz"), n=2, dim=4)
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(blob)
    try:
        load_dataset(
            DataConfig(
                name="coco", path=str(root), resolution=4, eval_size=0, text_encoder="pickle"
            )
        )
    except DataError:
        pass
