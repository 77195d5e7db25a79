"""`ganstack fid A B`, `sample --out DIR/` (sample i depends on the seed and i only),
`--version` and `eval --device`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.cli import main
from ganstack.errors import GanstackError
from ganstack.metrics.compare import compare, read_image_set, read_stats_file
from tests.conftest import bar_digits, tiny_config_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("compare") / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "sgan-mnist",
                "--out",
                str(out),
                "--no-eval",
                *tiny_config_overrides(mnist_dir, batch_size=25),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory, mnist_dir):
    """A config whose data section is the tiny MNIST fixture (as the run was trained on)."""
    path = tmp_path_factory.mktemp("cfg") / "data.yaml"
    path.write_text(f"data:\n  name: mnist\n  path: {mnist_dir}\n  eval_size: 50\n")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Real-looking digits (other noise than the training set) in two halves, and the same
    digits with their bars moved 3 px and blurred: a clearly different set."""
    from ganstack.metrics.evaluate import gaussian_blur

    folder = tmp_path_factory.mktemp("sets")
    images, _ = bar_digits(400, seed=7)
    shifted = np.roll(images, 3, axis=2)
    shifted = gaussian_blur(torch.from_numpy(shifted)[:, None], 1.5)[:, 0].numpy()
    paths = {}
    for name, arr in (("a", images[:200]), ("b", images[200:]), ("c", shifted[200:])):
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], images=arr[..., None])  # N x H x W x 1, as ganstack writes
    return paths


def _fid(argv, tmp_path, name="r.json"):
    out = tmp_path / name
    assert main(["-q", "fid", *map(str, argv), "--device", "cpu", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _user_error(argv, capsys) -> str:
    assert main(["-q", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganstack: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------ sample DIR/


def test_sample_folder_depends_on_the_seed_and_index_only(run_dir, tmp_path, capsys):
    d7, d13, other = tmp_path / "n7", tmp_path / "n13", tmp_path / "seed1"
    assert main(["sample", str(run_dir), "--n", "7", "--out", f"{d7}/"]) == 0
    assert "wrote 7 samples" in capsys.readouterr().out
    d13.mkdir()  # an existing folder counts as a folder without the slash
    assert main(["sample", str(run_dir), "--n", "13", "--out", str(d13)]) == 0
    assert main(["sample", str(run_dir), "--n", "7", "--seed", "1", "--out", f"{other}/"]) == 0
    names7 = sorted(p.name for p in d7.iterdir())
    assert names7 == [f"{i:06d}.png" for i in range(7)]  # no temporary files left
    assert len(list(d13.iterdir())) == 13
    for name in names7:
        assert (d7 / name).read_bytes() == (d13 / name).read_bytes()
    assert any((d7 / n).read_bytes() != (other / n).read_bytes() for n in names7)
    with Image.open(d7 / "000000.png") as im:
        assert im.size == (28, 28) and im.mode == "L"


def test_sample_indexed_across_chunks(run_dir):
    """Chunked: sample i is the same whatever n, also across chunk boundaries; labels are
    i mod K; the global RNG is left alone; fixed inputs are shared by every chunk."""
    import ganstack

    run = ganstack.load(run_dir)
    state = torch.get_rng_state()
    a = run.sample_indexed(7, seed=3, chunk=4)
    b = run.sample_indexed(13, seed=3, chunk=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["image"], b["image"][:7]) and len(b["image"]) == 13
    assert b["y"].tolist() == [i % 10 for i in range(13)]
    c = run.sample_indexed(7, seed=4, chunk=4)
    assert not torch.equal(a["image"], c["image"])
    fixed = run.sample_indexed(9, seed=3, labels=[5], fixed=["z0", "z1"], chunk=4)
    assert fixed["y"].tolist() == [5] * 9
    assert (fixed["image"] - fixed["image"][:1]).abs().max() < 1e-5


# ------------------------------------------------------------------------------ fid


def test_fid_of_halves_is_small_beside_a_shifted_set(sets, data_yaml, tmp_path, capsys):
    same = _fid([sets["a"], sets["b"], "--dataset", data_yaml], tmp_path, "same.json")
    other = _fid([sets["a"], sets["c"], "--dataset", data_yaml], tmp_path, "other.json")
    assert same["fid"] < 0.25 * other["fid"]
    assert same["kid"] < other["kid"] and other["kid_std"] > 0
    assert same["feature_space"]["name"] == "mnistcnn" and same["feature_space"]["dim"] == 128
    assert (same["a"]["n"], same["b"]["n"], same["a"]["kind"]) == (200, 200, "images")
    printed = capsys.readouterr().out
    assert "FID" in printed and "KID" in printed and "mnistcnn" in printed


def test_folders_and_other_npz_layouts_read_the_same_images(sets, data_yaml, tmp_path):
    with np.load(sets["a"]) as f:
        images = f["images"]
    folder = tmp_path / "pngs"
    (folder / "sub").mkdir(parents=True)
    for i, img in enumerate(images):
        where = folder / "sub" if i % 2 else folder
        Image.fromarray(img[..., 0]).save(where / f"{i:03d}.png")
    (folder / ".hidden.png").write_bytes(b"not an image")  # hidden files are left out
    x = read_image_set(folder)
    assert x.dtype == torch.uint8 and x.shape == (200, 1, 28, 28)
    ref = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert sorted(map(bytes, x.numpy())) == sorted(map(bytes, ref.numpy()))
    nchw = tmp_path / "other_tool.npz"
    np.savez(nchw, images.transpose(0, 3, 1, 2))  # arr_0, N x C x H x W
    assert torch.equal(read_image_set(nchw), ref)
    res = _fid([folder, nchw, "--dataset", data_yaml], tmp_path)
    assert res["fid"] == pytest.approx(0.0, abs=1e-6)  # the same images in another order


def _classifier_features(data_yaml, images: np.ndarray) -> np.ndarray:
    from ganstack.config import load_config
    from ganstack.data import load_dataset
    from ganstack.metrics.classifier import get_classifier

    clf, _ = get_classifier(*load_dataset(load_config(str(data_yaml)).data))
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return clf.predict(x)[0].double().numpy()


def test_a_statistics_file_gives_the_fid_of_its_images(sets, data_yaml, tmp_path, capsys):
    from ganstack.metrics.stats import FeatureStats

    with np.load(sets["b"]) as f:
        feats = _classifier_features(data_yaml, f["images"])
    mu_sigma = tmp_path / "fid_stats.npz"  # as pytorch-fid / TTUR write them
    np.savez(mu_sigma, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    assert read_stats_file(mu_sigma)[0].shape == (128,)
    assert read_stats_file(sets["b"]) is None  # images, not statistics
    kept = tmp_path / "kept.npz"
    stats = FeatureStats(keep_features=True)
    stats.append(feats)
    stats.save(kept, {"what": "b"})

    images = _fid([sets["a"], sets["b"], "--dataset", data_yaml], tmp_path, "i.json")
    from_stats = _fid([sets["a"], mu_sigma, "--dataset", data_yaml], tmp_path, "s.json")
    assert from_stats["fid"] == pytest.approx(images["fid"], rel=1e-6)
    assert from_stats["kid"] is None and "mean and covariance" in from_stats["kid_note"]
    assert from_stats["b"]["kind"] == "statistics"
    # A FeatureStats file that kept its features serves KID too.
    from_kept = _fid([kept, sets["a"], "--dataset", data_yaml], tmp_path, "k.json")
    assert from_kept["fid"] == pytest.approx(images["fid"], rel=1e-6)
    assert from_kept["kid"] == pytest.approx(images["kid"], rel=1e-6)
    # Two statistics files: FID in their own space, no extractor needed.
    both = compare(mu_sigma, kept)
    assert both["fid"] == pytest.approx(0.0, abs=1e-9) and both["kid"] is None
    assert both["feature_space"] == {"kind": "statistics", "dim": 128}
    err = _user_error(["fid", mu_sigma, kept, "--kid"], capsys)
    assert "KID needs both sets' features" in err


def test_a_run_against_images_uses_the_runs_classifier(run_dir, sets, tmp_path, capsys):
    res = _fid([run_dir, sets["a"], "--n", "60"], tmp_path)
    assert res["a"]["kind"] == "run" and res["a"]["n"] == 60 and res["a"]["seed"] == 0
    assert res["feature_space"]["name"] == "mnistcnn"
    assert res["feature_space"]["from"] == f"the run {run_dir}"
    assert res["fid"] > 0 and res["kid"] is not None
    assert f"{run_dir}: run, 60 samples" in capsys.readouterr().out


def test_fid_errors_are_one_line_with_exit_code_2(sets, data_yaml, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GANSTACK_INCEPTION", raising=False)
    empty = tmp_path / "empty.npz"
    np.savez(empty, labels=np.arange(3))
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    Image.new("L", (28, 28)).save(ragged / "a.png")
    Image.new("L", (32, 32)).save(ragged / "b.png")
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((4, 32, 32, 3), np.uint8))
    stats64 = tmp_path / "s64.npz"
    np.savez(stats64, mu=np.zeros(64), sigma=np.eye(64))
    a = sets["a"]
    cases = [
        (["fid", tmp_path / "missing.npz", a, "--dataset", data_yaml], "does not exist"),
        (["fid", empty, a, "--dataset", data_yaml], "holds neither images"),
        (["fid", ragged, a, "--dataset", data_yaml], "2 different sizes"),
        (["fid", rgb, a, "--dataset", data_yaml], "classifier takes 1x28x28"),
        (["fid", stats64, a, "--dataset", data_yaml], "64-d statistics"),
        (["fid", a, sets["b"], "--dataset", data_yaml, "--inception", "x.pt"], "not both"),
        (["fid", a, sets["b"]], "no feature space given"),
        (["fid", a, sets["b"], "--dataset", "no-such-thing"], "nor a dataset name"),
    ]
    for argv, fragment in cases:
        assert fragment in _user_error(argv, capsys), argv
    # Bounded CLI numbers are checked by the argument parser: a usage error, exit code 2.
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "fid", str(a), str(sets["b"]), "--dataset", str(data_yaml), "--n", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "argument --n: must be in 2.." in err and len(err.splitlines()) == 1, err
    bad = tmp_path / "ambiguous.npz"
    np.savez(bad, images=np.zeros((2, 3, 5, 3), np.uint8))
    with pytest.raises(GanstackError, match="ambiguous"):
        read_image_set(bad)
    floats = tmp_path / "floats.npz"
    np.savez(floats, images=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(GanstackError, match="must be uint8"):
        read_image_set(floats)


# ------------------------------------------------------------------------------ other flags


def test_version_and_eval_device(run_dir, tmp_path, monkeypatch):
    res = subprocess.run(
        [sys.executable, "-m", "ganstack", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.startswith("ganstack ")
    assert res.stdout.split()[1][0].isdigit()

    import ganstack.run

    seen = []
    original = ganstack.run.load

    def spy(run, checkpoint=None, device="cpu"):
        seen.append(device)
        return original(run, checkpoint, device)

    monkeypatch.setattr(ganstack.run, "load", spy)
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "-q",
                "eval",
                str(run_dir),
                "--n",
                "20",
                "--metrics",
                "acc",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert seen == ["cpu"] and "acc20_mnistcnn" in json.loads(out.read_text())["metrics"]
