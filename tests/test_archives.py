from __future__ import annotations

import pickle

import numpy as np
import pytest

from ganstack.data.archives import load_cifar10, load_svhn, safe_unpickle
from ganstack.errors import DataError


def _cifar_folder(tmp_path, n=6):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"label_names": [
            b"airplane",
            b"automobile",
            b"bird",
            b"cat",
            b"deer",
            b"dog",
            b"frog",
            b"horse",
            b"ship",
            b"truck",
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return tmp_path, folder


def test_cifar10_batches_load(tmp_path):
    root, folder = _cifar_folder(tmp_path)
    ds = load_cifar10(root)
    assert ds.images.shape == (30, 3, 32, 32) and ds.num_classes == 10
    assert ds.class_names[0] == "airplane"
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert np.array_equal(ds.images[0].numpy().reshape(-1), first[b"data"][0])


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    root, folder = _cifar_folder(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="does not load pickles that reference code"):
        load_cifar10(root)
    assert not marker.exists()


def test_truncated_and_missing_cifar_files(tmp_path):
    root, folder = _cifar_folder(tmp_path)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar10(root)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="lacks data_batch_5"):
        load_cifar10(root)


def test_safe_unpickle_reads_plain_arrays(tmp_path):
    p = tmp_path / "emb.pickle"
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    p.write_bytes(pickle.dumps({"x": arr, "names": ["a", "b"]}, protocol=2))
    obj = safe_unpickle(p)
    assert np.array_equal(obj["x"], arr) and obj["names"] == ["a", "b"]


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [4], [5], [10]])
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    ds = load_svhn(tmp_path)
    assert ds.images.shape == (7, 3, 32, 32)
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5, 0]  # 10 means digit 0
    assert np.array_equal(ds.images[2].numpy(), x[:, :, :, 2].transpose(2, 0, 1))
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        load_svhn(tmp_path / "bad.mat")
    with pytest.raises(DataError, match="does not exist"):
        load_svhn(tmp_path / "nope.mat")


def test_registered_as_datasets(tmp_path):
    from ganstack.config import DataConfig
    from ganstack.data import load_dataset

    root, _ = _cifar_folder(tmp_path)
    tr, ev = load_dataset(DataConfig(name="cifar10", path=str(root), eval_size=0))
    assert len(tr) == 30 and ev is None
    with pytest.raises(DataError, match="set data.path"):
        load_dataset(DataConfig(name="svhn"))
