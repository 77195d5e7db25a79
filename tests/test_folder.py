"""The image-folder dataset (`data.name: folder`): formats, conversions, labels and bad input."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.config import ConfigError, DataConfig, build
from ganstack.data import load_dataset
from ganstack.data.formats import load_image_folder
from ganstack.errors import DataError

EXTS = r"\.bmp, \.jpeg, \.jpg, \.png, \.webp"


def rgb(seed: int, w: int = 8, h: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, im: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def png_bytes(w: int, h: int, bit_depth: int, color_type: int, rows: np.ndarray) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): rows is (h, w*samples) big-endian."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ganstack"]


# ---- formats and conversions -----------------------------------------------------------------


def test_lossless_formats_load_exactly_in_sorted_order(tmp_path):
    # Written in reverse order, upper-case extensions included: the order is by path.
    save(tmp_path / "c.webp", Image.fromarray(rgb(2)), lossless=True)
    save(tmp_path / "b.BMP", Image.fromarray(rgb(1)))
    save(tmp_path / "a.png", Image.fromarray(rgb(0)))
    save(tmp_path / "sub" / "d.png", Image.fromarray(rgb(3)))
    (tmp_path / ".hidden.png").write_bytes(b"not an image, but hidden: ignored")
    ds = load_image_folder(tmp_path)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (4, 3, 8, 8)
    assert ds.labels is None and ds.num_classes == 0
    for i in range(4):
        assert torch.equal(ds.images[i], torch.from_numpy(rgb(i)).permute(2, 0, 1)), i


def test_jpeg_is_decoded_close_to_the_original(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    save(tmp_path / "a.jpg", Image.fromarray(smooth), quality=95)
    save(tmp_path / "b.jpeg", Image.fromarray(smooth), quality=95)
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 3, 16, 16)
    diff = ds.images[0].permute(1, 2, 0).int() - torch.from_numpy(smooth).int()
    assert diff.abs().max() <= 8


def test_grayscale_to_rgb_and_rgb_to_grayscale(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    save(tmp_path / "g.png", Image.new("L", (4, 4), 77))
    save(tmp_path / "r.png", Image.new("RGB", (4, 4), (255, 0, 0)))
    ds = load_image_folder(tmp_path, channels=3)
    assert ds.images[0].unique().tolist() == [77]  # gray copied into the 3 channels
    assert ds.images[1, :, 0, 0].tolist() == [255, 0, 0]
    assert any("1 grayscale image(s) copied into 3 channels" in m for m in messages(caplog))
    caplog.clear()
    ds1 = load_image_folder(tmp_path, channels=1)
    assert ds1.images.shape == (2, 1, 4, 4)
    assert ds1.images[0].unique().tolist() == [77]
    assert ds1.images[1].unique().tolist() == [76]  # luma of pure red: 0.299 * 255
    assert any("1 colour image(s) converted to grayscale" in m for m in messages(caplog))


def test_alpha_and_transparency_are_composited_on_white(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    px = np.array(
        [[[255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128], [0, 200, 0, 255]]], dtype=np.uint8
    )
    save(tmp_path / "a_rgba.png", Image.fromarray(px, "RGBA"))
    la = np.array([[[10, 0], [10, 255], [200, 255], [0, 0]]], dtype=np.uint8)
    save(tmp_path / "b_la.png", Image.fromarray(la, "LA"))
    pal = Image.new("P", (4, 1))
    pal.putpalette([0, 0, 255, 9, 9, 9] + [0] * 762)
    pal.putdata([0, 1, 1, 0])
    save(tmp_path / "c_pal_transparent.png", pal, transparency=0)  # index 0 (blue) transparent
    ds = load_image_folder(tmp_path)
    a = ds.images[:, :, 0, :].permute(0, 2, 1).tolist()  # (image, x, rgb)
    assert a[0] == [[255, 255, 255], [0, 0, 0], [127, 127, 127], [0, 200, 0]]
    assert a[1] == [[255, 255, 255], [10, 10, 10], [200, 200, 200], [255, 255, 255]]
    assert a[2] == [[255, 255, 255], [9, 9, 9], [9, 9, 9], [255, 255, 255]]
    msgs = messages(caplog)
    assert sum("composited on a white background" in m for m in msgs) == 1  # logged once ...
    assert any(m.startswith("folder: 3 image(s) with an alpha") for m in msgs)  # ... with count


def test_palette_without_transparency_keeps_its_colours(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    pal = Image.new("P", (2, 1))
    pal.putpalette([12, 34, 56, 200, 100, 0] + [0] * 762)
    pal.putdata([0, 1])
    save(tmp_path / "p.png", pal)
    save(tmp_path / "p.bmp", pal)
    ds = load_image_folder(tmp_path)
    for i in range(2):
        assert ds.images[i, :, 0, :].T.tolist() == [[12, 34, 56], [200, 100, 0]]
    assert any("2 palette image(s) expanded" in m for m in messages(caplog))


def test_16bit_images_are_scaled_not_clipped(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    gray = np.array([[0, 257, 30000, 65535]], dtype=np.uint16)
    save(tmp_path / "a_gray16.png", Image.fromarray(gray))  # Pillow writes 16-bit gray itself
    rgb16 = np.array(
        [[[0, 30000, 65535], [257 * 7, 1000, 65280], [65535, 65535, 65535], [0, 0, 0]]], dtype=">u2"
    )
    (tmp_path / "b_rgb16.png").write_bytes(png_bytes(4, 1, 16, 2, rgb16.reshape(1, -1)))
    ds = load_image_folder(tmp_path)
    assert ds.images[0, 0, 0].tolist() == [0, 1, 117, 255]  # 30000 -> 117, not clipped to 255
    assert ds.images[1, :, 0, :].T.tolist() == [[0, 117, 255], [7, 3, 255], [255] * 3, [0] * 3]
    assert any("2 16-bit image(s) scaled to 8 bits" in m for m in messages(caplog))


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (16, 8), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    save(tmp_path / "photo.jpg", im, exif=exif)
    assert load_image_folder(tmp_path).images.shape == (1, 3, 16, 8)  # stored 16 wide, shown 8


# ---- sizes ---------------------------------------------------------------------------------


def test_mixed_sizes_need_a_resolution(tmp_path):
    for i in range(3):
        save(tmp_path / f"big{i}.png", Image.fromarray(rgb(i, 16, 16)))
    save(tmp_path / "small.png", Image.fromarray(rgb(9, 12, 8)))
    with pytest.raises(DataError, match="data.resolution") as e:
        load_image_folder(tmp_path)
    assert "3 are 16x16" in str(e.value) and "1 are 12x8 (e.g. small.png)" in str(e.value)


def test_resolution_centre_crops_then_resizes(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16] = (255, 0, 0)
    wide[:, 16:32] = (0, 255, 0)  # the centre square
    wide[:, 32:] = (0, 0, 255)
    save(tmp_path / "wide.png", Image.fromarray(wide))
    save(tmp_path / "tall.png", Image.new("RGB", (6, 30), (5, 6, 7)))
    save(tmp_path / "exact.png", Image.fromarray(rgb(0)))
    ds = load_image_folder(tmp_path, resolution=8)
    assert ds.images.shape == (3, 3, 8, 8)
    assert torch.equal(ds.images[0], torch.from_numpy(rgb(0)).permute(2, 0, 1))  # untouched
    assert ds.images[1].flatten(1).unique(dim=1).T.tolist() == [[5, 6, 7]]
    assert ds.images[2].flatten(1).unique(dim=1).T.tolist() == [[0, 255, 0]]
    msgs = messages(caplog)
    assert any("2 non-square image(s) centre-cropped" in m for m in msgs)
    assert any("2 image(s) resized with a Lanczos filter" in m for m in msgs)


def test_one_shared_non_square_size_is_kept(tmp_path):
    for i in range(2):
        save(tmp_path / f"{i}.png", Image.fromarray(rgb(i, 10, 6)))
    assert load_image_folder(tmp_path).images.shape == (2, 3, 6, 10)


# ---- bad files and bad folders -----------------------------------------------------------------


def _good_and_bad(tmp_path: Path) -> Path:
    for i in range(3):
        save(tmp_path / f"ok{i}.png", Image.fromarray(rgb(i)))
    buf = io.BytesIO()
    Image.fromarray(rgb(5, 32, 32)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(rgb(6)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:60])
    (tmp_path / "notes.png").write_text("this is a text file with a .png name\n")
    return tmp_path


@pytest.mark.parametrize("resolution", [0, 8])  # header pass, or decode pass only
def test_corrupt_truncated_and_fake_files_are_named(tmp_path, resolution):
    _good_and_bad(tmp_path)
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, resolution=resolution)
    msg = str(e.value)
    assert "3 file(s)" in msg and "cannot be read as images" in msg
    for name in ("cut.jpg", "cut.png", "notes.png"):
        assert name in msg
    assert "notes.png (not a PNG, JPEG, BMP or WebP image" in msg
    assert "data.skip_bad=true" in msg and "\n" not in msg


def test_skip_bad_leaves_them_out_and_says_so(tmp_path, caplog):
    _good_and_bad(tmp_path)
    ds = load_dataset(DataConfig(name="folder", path=str(tmp_path), eval_size=0, skip_bad=True))[0]
    assert ds.images.shape == (3, 3, 8, 8)
    for i in range(3):
        assert torch.equal(ds.images[i], torch.from_numpy(rgb(i)).permute(2, 0, 1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 3 unreadable file(s)" in warnings[0]
    assert "cut.jpg" in warnings[0]


def test_only_bad_files_with_skip_bad_is_still_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_image_folder(tmp_path, skip_bad=True)


def test_missing_empty_file_and_imageless_paths(tmp_path):
    with pytest.raises(DataError, match=f"does not exist; set data.path.*{EXTS}"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match=f"is empty; put images \\({EXTS}\\)"):
        load_image_folder(tmp_path)
    save(tmp_path / "x.png", Image.fromarray(rgb(0)))
    with pytest.raises(DataError, match=f"is a file.*folder of images \\({EXTS}\\)"):
        load_image_folder(tmp_path / "x.png")
    other = tmp_path / "other"
    (other / "deep").mkdir(parents=True)
    (other / "a.gif").write_bytes(b"GIF89a")
    (other / "deep" / "b.txt").write_text("hi")
    with pytest.raises(
        DataError,
        match=f"no images with a supported extension \\({EXTS}\\); "
        r"found 2 other file\(s\): a.gif, deep/b.txt",
    ):
        load_image_folder(other)
    with pytest.raises(DataError, match="reads a folder of images.*set data.path"):
        load_dataset(DataConfig(name="folder"))


def test_config_checks_channels_and_resolution():
    assert build(DataConfig, {"name": "folder", "resolution": 32, "channels": 1}).channels == 1
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        build(DataConfig, {"channels": 4}, "data")
    with pytest.raises(ConfigError, match="resolution must be >= 0"):
        build(DataConfig, {"resolution": -8}, "data")


# ---- labels -----------------------------------------------------------------------------------


def test_class_subfolders_give_sorted_class_ids(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ganstack")
    save(tmp_path / "zebra" / "1.png", Image.fromarray(rgb(0)))
    save(tmp_path / "ant" / "2.png", Image.fromarray(rgb(1)))
    save(tmp_path / "ant" / "nested" / "3.png", Image.fromarray(rgb(2)))  # still an ant
    save(tmp_path / "moth" / "4.jpg", Image.fromarray(rgb(3)))
    (tmp_path / "empty-class").mkdir()
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ["ant", "moth", "zebra"] and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 1, 2]  # ant/2, ant/nested/3, moth/4, zebra/1
    assert torch.equal(ds.images[3], torch.from_numpy(rgb(0)).permute(2, 0, 1))  # zebra/1.png
    assert any("3 classes from the sub-folders" in m for m in messages(caplog))


def test_images_also_at_the_top_level_mean_unlabelled(tmp_path):
    save(tmp_path / "a" / "1.png", Image.fromarray(rgb(0)))
    save(tmp_path / "b" / "2.png", Image.fromarray(rgb(1)))
    save(tmp_path / "3.png", Image.fromarray(rgb(2)))
    assert load_image_folder(tmp_path).labels is None
    single = tmp_path / "b"
    assert load_image_folder(single).labels is None


def test_skipping_a_whole_class_renumbers_the_rest(tmp_path):
    save(tmp_path / "a" / "1.png", Image.fromarray(rgb(0)))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.png").write_bytes(b"broken")
    save(tmp_path / "c" / "3.png", Image.fromarray(rgb(1)))
    save(tmp_path / "c" / "4.png", Image.fromarray(rgb(2)))
    ds = load_image_folder(tmp_path, skip_bad=True)
    assert ds.class_names == ["a", "c"] and ds.labels.tolist() == [0, 1, 1]


def _labelled(tmp_path: Path, csv: str) -> Path:
    for name in ("x.png", "sub/y.png", "z.png"):
        save(tmp_path / name, Image.fromarray(rgb(len(name))))
    (tmp_path / "labels.csv").write_text(csv)
    return tmp_path


def test_labels_csv(tmp_path):
    _labelled(tmp_path, "path,label\n# a comment\nz.png,0\n./sub/y.png, 1\n\nx.png,1\n")
    ds = load_image_folder(tmp_path)
    assert ds.labels.tolist() == [1, 1, 0]  # sub/y.png, x.png, z.png
    assert ds.num_classes == 2 and ds.class_names is None


@pytest.mark.parametrize(
    "csv, fragment",
    [
        ("x.png,cat\nsub/y.png,0\nz.png,1\n", r"line 1: label 'cat' of 'x.png' is not an integer"),
        ("x.png,1.5\nsub/y.png,0\nz.png,1\n", "is not an integer"),
        ("x.png,-1\nsub/y.png,0\nz.png,1\n", "label -1 is negative"),
        ("x.png,0\nsub/y.png,0\nz.png,5\n", r"largest is 5 and class\(es\) 1, 2, 3, 4 have no"),
        ("x.png,0\nsub/y.png,1\n", r"1 image\(s\) in .* are not listed in labels.csv: z.png"),
        (
            "x.png,0\nsub/y.png,1\nz.png,0\ngone.png,1\n",
            r"names 1 image\(s\) that are not in .*: gone.png",
        ),
        ("x.png,0\nx.png,1\nsub/y.png,1\nz.png,0\n", "line 2: 'x.png' is listed twice"),
        ("x.png;0\nsub/y.png,1\nz.png,0\n", "line 1: expected two comma-separated fields"),
        ("path,label\n", "lists no images"),
    ],
)
def test_labels_csv_errors(tmp_path, csv, fragment):
    _labelled(tmp_path, csv)
    with pytest.raises(DataError, match=fragment):
        load_image_folder(tmp_path)


def test_labels_file_encoding_and_the_wrong_name(tmp_path):
    _labelled(tmp_path, "")
    (tmp_path / "labels.csv").write_bytes(b"x.png,0\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_image_folder(tmp_path)
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "labels.txt").write_text("x.png 0\n")
    with pytest.raises(DataError, match="reads labels from labels.csv"):
        load_image_folder(tmp_path)


# ---- end to end -------------------------------------------------------------------------------


def test_train_sgan_on_a_folder_of_digit_pngs(tmp_path):
    from ganstack.config import load_config
    from ganstack.train.trainer import Trainer

    from .conftest import bar_digits

    images, labels = bar_digits(120)
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        save(tmp_path / "digits" / f"{y}" / f"{i:03d}.png", Image.fromarray(x))
    cfg = load_config(
        "sgan-mnist",
        [
            "data.name=folder",
            f"data.path={tmp_path / 'digits'}",
            "data.channels=1",
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
    assert trainer.train_ds.class_names == [str(k) for k in range(10)]
    assert trainer.fit() == "done"
