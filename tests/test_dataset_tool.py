"""`ganstack dataset SRC DEST` and `data.name: prepared` (issue 20 item 3): a source converted
once into a mapped uint8 array that loads without decoding."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.cli import main
from ganstack.config import DataConfig
from ganstack.data import load_dataset
from ganstack.data import prepared as prep
from ganstack.data.base import train_eval_split
from ganstack.data.prepared import convert, load_prepared
from ganstack.errors import DataError


def make_folder(
    root: Path,
    n_per_class: int = 6,
    size: tuple[int, int] = (12, 10),
    classes: tuple[str, ...] = ("cat", "dog", "eel"),
) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i:03d}.png")
    return root


def folder_ds(path: Path, **kw):
    return load_dataset(DataConfig(name="folder", path=str(path), eval_size=0, **kw))[0]


def prepared_ds(path: Path, **kw):
    return load_dataset(DataConfig(name="prepared", path=str(path), eval_size=0, **kw))[0]


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "src")


def test_round_trip_identical_to_the_folder_loader(src: Path, tmp_path: Path) -> None:
    meta = convert(src, tmp_path / "out", workers=1, progress=False)
    ref = folder_ds(src)
    ds = prepared_ds(tmp_path / "out")
    assert torch.equal(ds.images, ref.images)
    assert torch.equal(ds.labels, ref.labels)
    assert ds.class_names == ref.class_names == ["cat", "dog", "eel"]
    assert ds.num_classes == 3
    assert meta["images"]["shape"] == [18, 3, 10, 12] and meta["count"] == 18
    on_disk = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert on_disk == meta
    assert on_disk["images"]["sha256"] == prep.sha256_file(tmp_path / "out" / "images.u8")
    assert on_disk["source"]["format"] == "folder"
    # data.name=folder pointed at a prepared folder reads it as prepared
    assert torch.equal(folder_ds(tmp_path / "out").images, ref.images)
    assert ds.fingerprint() == ref.fingerprint()


def test_parallel_workers_match_serial(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "many", n_per_class=100, size=(9, 7))  # 300: a pool is used
    convert(src, tmp_path / "a", workers=1, progress=False)
    convert(src, tmp_path / "b", workers=2, progress=False)  # headers and decoding in parallel
    assert (tmp_path / "a" / "images.u8").read_bytes() == (
        tmp_path / "b" / "images.u8"
    ).read_bytes()


def test_resolution_and_crop(src: Path, tmp_path: Path) -> None:
    convert(src, tmp_path / "c", resolution=8, workers=1, progress=False)
    ds = prepared_ds(tmp_path / "c")
    assert ds.shape == (3, 8, 8)
    assert torch.equal(ds.images, folder_ds(src, resolution=8).images)  # centre crop + Lanczos
    meta = convert(src, tmp_path / "s", resolution=8, crop="none", workers=1, progress=False)
    assert meta["crop"] == "none" and meta["conversions"] == {"resized": 18}
    first = np.asarray(Image.open(src / "cat" / "000.png").resize((8, 8), Image.Resampling.LANCZOS))
    assert np.array_equal(prepared_ds(tmp_path / "s").images[0].permute(1, 2, 0).numpy(), first)
    gray = convert(src, tmp_path / "g", resolution=6, channels=1, workers=1, progress=False)
    assert gray["images"]["shape"] == [18, 1, 6, 6]
    with pytest.raises(DataError, match="holds 8x8 images but data.resolution is 16"):
        prepared_ds(tmp_path / "c", resolution=16)


def test_stylegan2_ada_zip(src: Path, tmp_path: Path) -> None:
    meta = convert(src, tmp_path / "z", resolution=8, write_zip=True, workers=1, progress=False)
    assert meta["zip"]["file"] == "dataset.zip"
    ds = prepared_ds(tmp_path / "z")
    with zipfile.ZipFile(tmp_path / "z" / "dataset.zip") as z:
        names = z.namelist()
        assert names[0] == "00000/img00000000.png" and names[-1] == "dataset.json"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        labels = json.loads(z.read("dataset.json"))["labels"]
        assert labels[:2] == [["00000/img00000000.png", 0], ["00000/img00000001.png", 0]]
        assert [lab for _, lab in labels] == ds.labels.tolist()
        img = np.asarray(Image.open(io.BytesIO(z.read("00000/img00000017.png"))))
        assert np.array_equal(img, ds.images[17].permute(1, 2, 0).numpy())
    unl = make_folder(tmp_path / "u", classes=("only",))
    convert(unl / "only", tmp_path / "uz", write_zip=True, workers=1, progress=False)
    with zipfile.ZipFile(tmp_path / "uz" / "dataset.zip") as z:
        assert json.loads(z.read("dataset.json")) == {"labels": None}


def test_images_are_mapped_not_read(src: Path, tmp_path: Path) -> None:
    convert(src, tmp_path / "m", workers=1, progress=False)
    ds = load_prepared(tmp_path / "m")
    assert "mapped" in ds.meta
    # A change to the file after loading shows through: the tensor is the file's mapping.
    mm = np.memmap(tmp_path / "m" / "images.u8", np.uint8, "r+", shape=tuple(ds.images.shape))
    mm[3] = 7
    mm.flush()
    assert int(ds.images[3].min()) == int(ds.images[3].max()) == 7


def test_held_out_split_copied_when_it_fits(src: Path, tmp_path: Path) -> None:
    convert(src, tmp_path / "e", workers=1, progress=False)
    cfg = dict(eval_size=3, split_seed=1)
    tr, ev = load_dataset(DataConfig(name="prepared", path=str(tmp_path / "e"), **cfg))
    rtr, rev = load_dataset(DataConfig(name="folder", path=str(src), **cfg))
    assert torch.equal(tr.images, rtr.images) and torch.equal(tr.labels, rtr.labels)
    assert torch.equal(ev.images, rev.images) and torch.equal(ev.labels, rev.labels)


def test_held_out_split_stays_mapped_when_it_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_folder(tmp_path / "big", size=(64, 64))  # grayscale rows of one 4 KiB page
    convert(src, tmp_path / "l", channels=1, workers=1, progress=False)
    monkeypatch.setattr(prep, "IN_MEMORY_LIMIT", 30_000)  # 6 rows fit, 12 do not
    full = load_prepared(tmp_path / "l")
    ref = folder_ds(src, channels=1)
    tr, ev = train_eval_split(full, 6, seed=2)
    rtr, rev = train_eval_split(ref, 6, seed=2)
    assert torch.equal(ev.images, rev.images)  # small: copied, as always
    assert "lazy" in tr.meta and len(tr) == len(rtr) == 12
    # The same images with the same labels, in another order.
    key = lambda ds: sorted(  # noqa: E731
        (int(y), bytes(x.numpy().tobytes())) for x, y in zip(ds.images, ds.labels)
    )
    assert key(tr) == key(rtr)
    # Still the file's mapping: a row that is not a filled-in hole shows a change on disk.
    kept = [i for i in range(len(tr)) if torch.equal(tr.images[i], full.images[i])][-1]
    mm = np.memmap(tmp_path / "l" / "images.u8", np.uint8, "r+", shape=tuple(full.images.shape))
    mm[kept] = 9
    mm.flush()
    assert int(tr.images[kept].max()) == 9


def test_cli_and_errors(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "d"
    assert main(["-q", "dataset", str(src), str(dest), "--workers", "1"]) == 0
    assert "18 images 12x10x3, 3 classes" in capsys.readouterr().out
    # an existing prepared dataset: --force replaces it
    assert main(["-q", "dataset", str(src), str(dest), "--workers", "1"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (
        main(
            ["-q", "dataset", str(src), str(dest), "--workers", "1", "--force", "--resolution", "4"]
        )
        == 0
    )
    assert load_prepared(dest).shape == (3, 4, 4)
    # any other non-empty folder is never overwritten
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["-q", "dataset", str(src), str(other), "--force"]) == 2
    assert "not a prepared dataset; nothing was written" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    assert main(["-q", "dataset", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_missing_source_and_mixed_sizes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        convert(tmp_path / "nope", tmp_path / "x", progress=False)
    mixed = make_folder(tmp_path / "mixed", n_per_class=2)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(mixed / "cat" / "small.png")
    with pytest.raises(DataError, match="2 different sizes.*--resolution N"):
        convert(mixed, tmp_path / "x", workers=1, progress=False)
    assert not (tmp_path / "x").exists()
    assert convert(mixed, tmp_path / "x", resolution=4, workers=1, progress=False)["count"] == 7


def test_unreadable_files_counted_and_listed(src: Path, tmp_path: Path) -> None:
    (src / "dog" / "bad1.png").write_bytes(b"not a png")
    (src / "eel" / "bad2.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(
        DataError,
        match=r"2 file\(s\) in .* cannot be read as images: "
        r"dog/bad1.png .*eel/bad2.jpg .*--skip-bad",
    ):
        convert(src, tmp_path / "x", resolution=8, workers=1, progress=False)
    assert not (tmp_path / "x").exists()
    meta = convert(src, tmp_path / "x", resolution=8, workers=1, skip_bad=True, progress=False)
    assert meta["count"] == 18 and [s[0] for s in meta["skipped"]] == [
        "dog/bad1.png",
        "eel/bad2.jpg",
    ]
    assert torch.equal(
        prepared_ds(tmp_path / "x").images, folder_ds(src, resolution=8, skip_bad=True).images
    )


def test_corrupt_prepared_folder(src: Path, tmp_path: Path) -> None:
    convert(src, tmp_path / "t", workers=1, progress=False)
    with open(tmp_path / "t" / "images.u8", "rb+") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="truncated .* convert the source again"):
        load_prepared(tmp_path / "t")
    with pytest.raises(DataError, match="has no dataset.json"):
        load_prepared(src)
    with pytest.raises(DataError, match="does not exist"):
        load_prepared(tmp_path / "none")


def test_idx_source(tmp_path: Path) -> None:
    from tests.conftest import bar_digits, write_idx

    images, labels = bar_digits(20)
    (tmp_path / "mn").mkdir()
    write_idx(tmp_path / "mn" / "train-images-idx3-ubyte", images, gz=True)
    write_idx(tmp_path / "mn" / "train-labels-idx1-ubyte", labels)
    meta = convert(tmp_path / "mn", tmp_path / "p", workers=1, progress=False)
    assert meta["source"]["format"] == "mnist" and meta["images"]["shape"] == [20, 1, 28, 28]
    ds = prepared_ds(tmp_path / "p")
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == labels.tolist()
    with pytest.raises(DataError, match="--channels applies to image folders"):
        convert(tmp_path / "mn", tmp_path / "q", channels=3, progress=False)


def test_cub_layout_keeps_captions_and_embeddings(tmp_path: Path) -> None:
    from tests.test_stackgan_formats import make_cub

    root = make_cub(tmp_path / "birds")
    meta = convert(root, tmp_path / "p", resolution=16, workers=1, progress=False)
    assert meta["source"]["format"] == "cub" and meta["embeddings"]["shape"] == [6, 10, 1024]
    for enc in ("hash", "pickle"):
        kw = dict(resolution=16, eval_size=2, text_dim=64, text_encoder=enc)
        tr, ev = load_dataset(DataConfig(name="prepared", path=str(tmp_path / "p"), **kw))
        rtr, rev = load_dataset(DataConfig(name="cub", path=str(root), **kw))
        assert torch.equal(tr.images, rtr.images) and torch.equal(ev.labels, rev.labels)
        assert tr.captions == rtr.captions
        assert torch.equal(tr.extras["embeddings"], rtr.extras["embeddings"])


def test_lsun_lmdb_streamed(tmp_path: Path) -> None:
    lmdb = pytest.importorskip("lmdb")
    path = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(5):
            buf = io.BytesIO()
            Image.fromarray(np.full((12, 16, 3), 50 * i, np.uint8)).save(buf, format="WEBP")
            txn.put(f"{i:03d}".encode(), buf.getvalue())
        txn.put(b"999", b"not an image")
    env.close()
    with pytest.raises(DataError, match=r"1 file\(s\) .* entry 5 .*--skip-bad"):
        convert(path, tmp_path / "p", resolution=8, workers=2, progress=False)
    meta = convert(path, tmp_path / "p", resolution=8, workers=2, skip_bad=True, progress=False)
    assert meta["source"]["format"] == "lsun" and meta["count"] == 5
    ref = load_dataset(
        DataConfig(name="lsun", path=str(path), resolution=8, eval_size=0, num_images=5)
    )[0]
    assert torch.equal(prepared_ds(tmp_path / "p").images, ref.images)


def test_bad_arguments_and_destinations(src: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file; give a new or empty folder"):
        convert(src, tmp_path / "file", progress=False)
    with pytest.raises(DataError, match="the source itself"):
        convert(src, src, progress=False)
    with pytest.raises(DataError, match="--crop none stretches .* give --resolution"):
        convert(src, tmp_path / "n", crop="none", progress=False)
    (tmp_path / "empty").mkdir()
    assert convert(src, tmp_path / "empty", workers=1, progress=False)["count"] == 18
    with pytest.raises(DataError, match="StackGAN layout .* pass --format cub, oxford or coco"):
        (tmp_path / "sg" / "train").mkdir(parents=True)
        (tmp_path / "sg" / "train" / "filenames.pickle").write_bytes(b"")
        convert(tmp_path / "sg", tmp_path / "o", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "sg", "src"]


@pytest.mark.parametrize("mapped_split", [False, True])
def test_train_sgan_on_a_prepared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped_split: bool
) -> None:
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer
    from tests.conftest import bar_digits

    images, labels = bar_digits(120)
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "digits" / f"{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(tmp_path / "digits" / f"{y}" / f"{i:03d}.png")
    convert(tmp_path / "digits", tmp_path / "p", channels=1, workers=1, progress=False)
    if mapped_split:
        monkeypatch.setattr(prep, "IN_MEMORY_LIMIT", 20 * 28 * 28)  # the 20 held out fit
    cfg = load_config(
        "sgan-mnist",
        [
            "data.name=prepared",
            f"data.path={tmp_path / 'p'}",
            "data.eval_size=20",
            "model.width=0.25",
            "model.feature_hidden=16",
            "model.feature_disc_hidden=16",
            "model.encoder.pretrain_epochs=1",
            "train.batch_size=20",
            "train.phases.independent=1",
            "train.phases.joint=1",
            "train.sample_every=0",
            "train.checkpoint_every=0",
            "train.tensorboard=false",
            "train.progress=false",
            "train.ema=0",
            "train.num_threads=1",
        ],
    )
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.train_ds.shape == (1, 28, 28) and trainer.train_ds.num_classes == 10
    assert ("lazy" in trainer.train_ds.meta) == mapped_split
    assert trainer.fit() == "done"
