from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.config import DataConfig
from ganstack.data import load_dataset
from ganstack.data.nyu import load_nyu_normals
from ganstack.data.rooms import (
    ATTRIBUTES,
    MAX_BOXES,
    VISIBLE_SHARE,
    decode_normals,
    encode_normals,
    load_rooms,
    ray_directions,
    render_rooms,
)
from ganstack.errors import DataError

# ---- procedural rooms -------------------------------------------------------------------------


def test_rooms_are_deterministic_from_the_seed():
    a, b = load_rooms(12, 32, seed=3), load_rooms(12, 32, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.extras["normals"], b.extras["normals"])
    assert torch.equal(a.labels, b.labels)
    c = load_rooms(12, 32, seed=4)
    assert not torch.equal(a.images, c.images)
    # Scene i does not depend on how many scenes are made or how they are chunked.
    few = render_rooms(5, 32, seed=3, chunk=2)
    many = render_rooms(12, 32, seed=3, chunk=7)
    assert np.array_equal(few["normals"], many["normals"][:5])
    assert np.array_equal(few["attributes"], many["attributes"][:5])
    shifted = render_rooms(3, 32, seed=3, start=4)
    assert np.array_equal(shifted["images"], many["images"][4:7])


def test_normals_are_unit_and_face_the_camera():
    out = render_rooms(40, 32, seed=0)
    n = out["normals"]
    assert np.abs(np.linalg.norm(n, axis=1) - 1).max() < 1e-5
    d = ray_directions(32, 32).T.reshape(1, 3, 32, 32)
    assert np.abs(np.linalg.norm(d, axis=1) - 1).max() < 1e-5
    # Camera coordinates, camera looking along -z: every visible surface faces the viewer.
    assert ((n * d).sum(1) < 0).all()
    # The floor points up (y) and the ceiling down, whatever the camera's yaw; pitch <= 28 deg.
    surf = out["surfaces"]
    assert (n[:, 1][surf == 0] > 0.85).all() and (n[:, 1][surf == 1] < -0.85).all()
    assert (surf == 0).any() and (surf == 2).any()
    # The uint8 encoding p = (n + 1) * 127.5 round-trips to within one level.
    back = decode_normals(encode_normals(n))
    assert float((back - torch.from_numpy(n)).abs().max()) <= 0.5 / 127.5 + 1e-6
    assert float((back.norm(dim=1) - 1).abs().max()) < 0.02


def test_attributes_are_consistent():
    ds = load_rooms(60, 32, seed=1)
    out = render_rooms(60, 32, seed=1)
    attrs = ds.extras["attributes"]
    assert ds.meta["attribute_names"] == list(ATTRIBUTES)
    assert attrs.shape == (60, len(ATTRIBUTES)) and attrs.dtype == torch.int64
    assert torch.equal(ds.labels, attrs[:, 0]) and ds.num_classes == MAX_BOXES + 1
    visible, boxes = attrs[:, 0].numpy(), attrs[:, 1].numpy()
    assert (visible <= boxes).all() and (boxes <= MAX_BOXES).all()
    assert len(set(boxes.tolist())) > 2 and len(set(attrs[:, 2].tolist())) > 2
    surf = out["surfaces"]
    for i in range(60):
        shares = [(surf[i] == 3 + k).mean() for k in range(MAX_BOXES)]
        assert sum(s >= VISIBLE_SHARE for s in shares) == visible[i]
        assert all(shares[k] == 0 for k in range(boxes[i], MAX_BOXES))  # absent boxes unseen
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (60, 3, 32, 32)
    assert ds.extras["normals"].dtype == torch.uint8
    assert ds.extras["normals"].shape == ds.images.shape


def test_rooms_are_fast_and_registered():
    t0 = time.perf_counter()
    load_rooms(500, 64)
    assert time.perf_counter() - t0 < 20  # ~1 s on one thread; generous under load
    cfg = DataConfig(name="rooms", num_images=80, resolution=32, eval_size=8, gen_seed=2)
    train, ev = load_dataset(cfg)
    assert len(train) == 72 and len(ev) == 8 and train.shape == (3, 32, 32)
    assert "normals" in ev.extras and len(ev.extras["normals"]) == 8
    with pytest.raises(DataError, match="at least"):
        render_rooms(0, 32)


# ---- NYU-style (normal, rgb) pairs ------------------------------------------------------------


def _jpg(path: Path, seed: int, size=(40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _pairs(root: Path, n: int = 4) -> Path:
    lines = []
    for i in range(n):
        _jpg(root / "normals" / f"{i:03d}.jpg", i)
        _jpg(root / "rgb" / f"{i:03d}.jpg", 100 + i)
        lines.append(f"normals/{i:03d}.jpg rgb/{i:03d}.jpg")
    (root / "trainlist_rand.txt").write_text("\n".join(lines) + "\n")
    return root


def test_nyu_pair_list_and_folder_layout(tmp_path):
    root = _pairs(tmp_path / "data")
    ds = load_nyu_normals(root, resolution=16)
    assert ds.images.shape == (4, 3, 16, 16) and ds.extras["normals"].shape == (4, 3, 16, 16)
    assert ds.labels is None
    # The first column of a pair is the normal map, the second the image.
    ref = np.asarray(Image.open(root / "normals" / "000.jpg").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(ds.extras["normals"][0].permute(1, 2, 0).numpy(), ref)
    # The list file itself as data.path; num_images limits the pairs.
    assert len(load_nyu_normals(root / "trainlist_rand.txt", 16, limit=2)) == 2
    # Without the list: the folder layout, paired by name.
    (root / "trainlist_rand.txt").unlink()
    ds2 = load_nyu_normals(root, resolution=0)
    assert ds2.images.shape == (4, 3, 30, 40)
    cfg = DataConfig(name="nyu_normals", path=str(root), resolution=32, eval_size=0)
    assert load_dataset(cfg)[0].shape == (3, 32, 32)


def test_nyu_errors_name_the_file(tmp_path):
    root = _pairs(tmp_path / "a")
    lst = root / "trainlist_rand.txt"
    lst.write_text(lst.read_text() + "normals/009.jpg rgb/009.jpg\n")
    with pytest.raises(DataError, match=r"009\.jpg is listed but does not exist"):
        load_nyu_normals(root, 16)
    lst.write_text("normals/000.jpg rgb/000.jpg\nnormals/001.jpg\n")
    with pytest.raises(DataError, match=r"line 2: expected '<normal_jpg> <rgb_jpg>'"):
        load_nyu_normals(root, 16)
    lst.write_text("normals/000.jpg rgb/000.jpg\nnormals/001.jpg rgb/001.jpg\n")
    (root / "rgb" / "001.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=r"001\.jpg is not a readable image"):
        load_nyu_normals(root, 16)
    assert len(load_nyu_normals(root, 16, skip_bad=True)) == 1
    lst.write_text("\n")
    with pytest.raises(DataError, match="lists no pairs"):
        load_nyu_normals(root, 16)
    # Folder layout: unpaired files, missing subfolders, a missing path.
    other = _pairs(tmp_path / "b")
    (other / "trainlist_rand.txt").unlink()
    _jpg(other / "rgb" / "extra.jpg", 7)
    with pytest.raises(DataError, match=r"1 image\(s\) without a normal map .*extra\.jpg"):
        load_nyu_normals(other, 16)
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="normals/ and rgb/"):
        load_nyu_normals(tmp_path / "c", 16)
    with pytest.raises(DataError, match="does not exist"):
        load_nyu_normals(tmp_path / "nowhere", 16)
    with pytest.raises(DataError, match="set data.path"):
        load_dataset(DataConfig(name="nyu_normals"))
    # Sizes differ and no resolution is set.
    mixed = _pairs(tmp_path / "d", 2)
    _jpg(mixed / "rgb" / "001.jpg", 3, size=(20, 20))
    with pytest.raises(DataError, match="different sizes"):
        load_nyu_normals(mixed, 0)
