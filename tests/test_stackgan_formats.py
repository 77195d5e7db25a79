"""The StackGAN on-disk layouts (CUB birds, Oxford flowers; COCO: test_stackgan_formats_coco.py)
and LSUN LMDBs, on tiny files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganstack.config import DataConfig
from ganstack.data import load_dataset
from ganstack.errors import DataError

CAPS = [
    f"this bird has a {c} crown and {w} wings"
    for c, w in zip(
        ["red", "blue", "black", "white", "grey", "brown", "yellow", "green", "tan", "pink"],
        ["short", "long", "pointed", "round", "striped", "dark", "pale", "wide", "thin", "small"],
        strict=True,
    )
]


def _write_pickle(path: Path, obj, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cub(root: Path, n: int = 6) -> Path:
    """A CUB layout: images with bounding boxes, captions, filenames/embeddings/class pickles."""
    rng = np.random.default_rng(0)
    keys, lines_names, lines_boxes = [], [], []
    for i in range(n):
        cls = f"00{1 + i % 2}.Bird_{i % 2}"
        key = f"{cls}/Bird_{i:04d}"
        keys.append(key)
        img = rng.integers(0, 60, (40, 60, 3), dtype=np.uint8)
        img[10:30, 20:40] = [250, 20, 20]  # the bird: a red box inside its bounding box
        p = root / "CUB_200_2011" / "images" / f"{key}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, quality=95)
        lines_names.append(f"{i + 1} {key}.jpg")
        lines_boxes.append(f"{i + 1} 20.0 10.0 20.0 20.0")
        t = root / "text" / f"{key}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("\n".join(CAPS) + "\n")
    (root / "CUB_200_2011" / "images.txt").write_text("\n".join(lines_names) + "\n")
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(lines_boxes) + "\n")
    # Python 2 wrote byte strings; protocol 2 with bytes keys mimics that.
    _write_pickle(root / "train" / "filenames.pickle", [k.encode() for k in keys])
    emb = rng.standard_normal((n, 10, 1024)).astype(np.float32)
    _write_pickle(root / "train" / "char-CNN-RNN-embeddings.pickle", emb)
    _write_pickle(root / "train" / "class_info.pickle", [1 + i % 2 for i in range(n)])
    return root


def test_cub_layout_crops_to_the_box_and_reads_captions(tmp_path):
    root = make_cub(tmp_path / "birds")
    cfg = DataConfig(name="cub", path=str(root), resolution=16, eval_size=2, text_dim=64)
    tr, ev = load_dataset(cfg)
    assert len(tr) == 4 and len(ev) == 2 and tr.images.shape[1:] == (3, 16, 16)
    assert tr.extras["embeddings"].shape == (4, 10, 64)  # hashed encoder on the caption files
    assert tr.captions[0] == CAPS
    # R = 0.75 * 20 = 15 around the box centre (30, 20): the crop is mostly the red box.
    red = (tr.images[:, 0].float() > 150).float().mean()
    assert red > 0.35
    assert sorted(set(tr.labels.tolist()) | set(ev.labels.tolist())) == [0, 1]


def test_cub_layout_with_the_released_embeddings(tmp_path):
    root = make_cub(tmp_path / "birds")
    cfg = DataConfig(name="cub", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    tr, _ = load_dataset(cfg)
    assert tr.extras["embeddings"].shape == (6, 10, 1024)
    emb = pickle.loads((root / "train" / "char-CNN-RNN-embeddings.pickle").read_bytes())
    assert torch.equal(tr.extras["embeddings"], torch.from_numpy(emb))


def test_oxford_layout(tmp_path):
    root = tmp_path / "flowers"
    keys = []
    for i in range(4):
        key = f"jpg/image_{i + 1:05d}"
        keys.append(key)
        (root / "jpg").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / f"{key}.jpg")
        t = root / "text_c10" / f"class_{7 + i % 2:05d}" / f"image_{i + 1:05d}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("\n".join(c.replace("bird", "flower") for c in CAPS))
    _write_pickle(root / "train" / "filenames.pickle", keys)
    _write_pickle(root / "train" / "class_info.pickle", [7 + i % 2 for i in range(4)])
    tr, _ = load_dataset(DataConfig(name="oxford", path=str(root), resolution=8, eval_size=0))
    assert tr.images.shape == (4, 3, 8, 8) and tr.captions[1][0].startswith("this flower")
    assert int(tr.images[3].float().mean()) == pytest.approx(120, abs=3)


def test_layout_errors_name_the_file(tmp_path):
    root = make_cub(tmp_path / "birds")
    cfg = DataConfig(name="cub", path=str(root), resolution=8, eval_size=0)
    bad = root / "text" / "001.Bird_0" / "Bird_0000.txt"
    bad.write_text("only one caption\n")
    with pytest.raises(DataError, match=r"Bird_0000.txt has 1 caption\(s\); 10"):
        load_dataset(cfg)
    bad.write_bytes("\n".join(CAPS).encode("latin1") + b"\n\xe9t\xe9\n")  # not UTF-8: read
    load_dataset(cfg)
    (root / "CUB_200_2011" / "images" / "002.Bird_1" / "Bird_0001.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DataError, match="Bird_0001.jpg is unreadable or truncated"):
        load_dataset(cfg)
    (root / "train" / "filenames.pickle").unlink()
    with pytest.raises(DataError, match="filenames.pickle does not exist"):
        load_dataset(cfg)
    with pytest.raises(DataError, match="set data.path"):
        load_dataset(DataConfig(name="cub"))


def test_malicious_embedding_pickle_is_refused_without_running(tmp_path):
    root = make_cub(tmp_path / "birds")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(pickle.dumps([Evil()]))
    cfg = DataConfig(name="cub", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    with pytest.raises(DataError, match="not a plain data pickle"):
        load_dataset(cfg)
    assert not marker.exists()


def test_lsun_lmdb(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    import io

    path = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(5):
            buf = io.BytesIO()
            Image.fromarray(np.full((12, 16, 3), 50 * i, np.uint8)).save(buf, format="WEBP")
            txn.put(f"{i:03d}".encode(), buf.getvalue())
    env.close()
    tr, _ = load_dataset(
        DataConfig(name="lsun", path=str(path), resolution=8, eval_size=0, num_images=4)
    )
    assert tr.images.shape == (4, 3, 8, 8)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(name="lsun", path=str(tmp_path / "nope"), eval_size=0))


@settings(
    deadline=None,
    database=None,
    derandomize=True,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda obj, proto: pickle.dumps(obj, protocol=proto),
            st.recursive(
                st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            st.integers(0, 5),
        ),
    ),
    st.sampled_from(["oxford", "coco"]),
)
def test_fuzzed_filenames_pickle_gives_a_data_error(tmp_path_factory, blob, name):
    """Any bytes as filenames.pickle: a clear DataError or a successful load, nothing else."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "train").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(blob)
    (root / "jpg").mkdir()
    (root / "images").mkdir()
    (root / "text").mkdir()
    try:
        load_dataset(DataConfig(name=name, path=str(root), resolution=8, eval_size=0))
    except DataError:
        pass
