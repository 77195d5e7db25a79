from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ganstack
from ganstack.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "-q",
            "train",
            "sgan-mnist",
            "--out",
            str(out),
            "--no-eval",
            "data.name=mnist",
            f"data.path={mnist_dir}",
            "data.eval_size=50",
            "model.width=0.25",
            "model.feature_hidden=32",
            "model.feature_disc_hidden=32",
            "model.encoder.pretrain_epochs=1",
            "train.batch_size=25",
            "train.phases.independent=3",
            "train.phases.joint=2",
            "train.progress=false",
            "train.tensorboard=false",
            "eval.n=100",
        ]
    )
    assert code == 0
    return out


def test_train_writes_figures(run_dir):
    for name in ("classes", "vary_z0", "vary_z1"):
        assert (run_dir / "figures" / f"{name}.png").is_file()


def test_sample_npz_format(run_dir, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", str(run_dir), "--n", "30", "--out", str(out), "--seed", "3"]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert set(f.files) == {"images", "labels"}
        assert f["images"].dtype == np.uint8 and f["images"].shape == (30, 28, 28, 1)
        assert f["labels"].dtype == np.int64 and f["labels"].tolist() == [i % 10 for i in range(30)]
        first = f["images"].copy()
    main(["sample", str(run_dir), "--n", "30", "--out", str(out), "--seed", "3"])
    with np.load(out) as f:
        assert np.array_equal(f["images"], first)  # the seed fixes the samples


def test_sample_with_labels_and_fixed_inputs(run_dir, tmp_path):
    out = tmp_path / "s.npz"
    main(
        ["sample", str(run_dir), "--n", "8", "--out", str(out), "--label", "7", "--fix", "z1", "z0"]
    )
    with np.load(out) as f:
        assert f["labels"].tolist() == [7] * 8
        imgs = f["images"].astype(int)
        assert np.abs(imgs - imgs[:1]).max() <= 1  # everything fixed: identical images
    png = tmp_path / "g.png"
    assert main(["sample", str(run_dir), "--n", "16", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_writes_protocol_named_metrics(run_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert (
        main(
            ["eval", str(run_dir), "--n", "100", "--metrics", "acc", "is", "fid", "--out", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    names = set(res["metrics"])
    assert {"acc100_mnistcnn", "is100_mnistcnn", "fid100_mnistcnn_train250"} <= names
    assert {"acc100_mnistalt", "fid100_mnistalt_train250"} <= names  # the second judge
    assert res["protocol"]["classifier"]["held_out_accuracy"] is not None
    rows = res["protocol"]["calibration"]["rows"]
    assert set(rows) == {"model", "real", "blur1", "blur2", "blind"}
    assert set(rows["real"]) == set(rows["model"]) and "acc_mnistcnn" in rows["blind"]
    # What a user sees: each figure beside real data's and the floors'.
    printed = capsys.readouterr().out.splitlines()
    header = next(line for line in printed if line.startswith("metric "))
    assert header.split()[:4] == ["metric", "n=100", "this", "run"]
    assert "blur σ2" in header and "real" in header
    fid_line = next(line for line in printed if line.startswith("fid_mnistcnn_train250 "))
    # value, model at n=50, real, blur 1, blur 2, and no blind control for FID
    cells = fid_line.split()
    assert len(cells) == 7 and cells[-1] == "-"
    assert float(cells[3]) < float(cells[4]) < float(cells[5])  # real < blur 1 < blur 2


def test_eval_of_a_sample_file(run_dir, tmp_path):
    s = tmp_path / "s.npz"
    main(["sample", str(run_dir), "--n", "50", "--out", str(s)])
    out = tmp_path / "e.json"
    assert (
        main(["eval", str(run_dir), "--samples", str(s), "--metrics", "acc", "--out", str(out)])
        == 0
    )
    assert "acc50_mnistcnn" in json.loads(out.read_text())["metrics"]


def test_python_api_in_two_lines(run_dir):
    run = ganstack.load(run_dir)
    out = run.sample(5, labels=[2])
    assert out["image"].shape == (5, 1, 28, 28) and out["y"].tolist() == [2] * 5


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "sgan-mnist", "train.bach_size=3"], "Did you mean 'batch_size'"),
        (["train", "no-such-config"], "neither a YAML file nor a bundled config"),
        (["sample", "/nonexistent/run", "--out", "x.png"], "not a ganstack run directory"),
        (["eval", "/nonexistent/run"], "not a ganstack run directory"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_sample_rejects_bad_requests(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "x.jpg")]) == 2
    assert (
        main(
            ["sample", str(run_dir), "--n", "4", "--label", "12", "--out", str(tmp_path / "x.png")]
        )
        == 2
    )
    assert "labels must lie in [0, 9]" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [[], ["train"], ["sample"], ["eval"], ["configs"]])
def test_help_for_every_command(cmd):
    res = subprocess.run(
        [sys.executable, "-m", "ganstack", *cmd, "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "usage: ganstack" in res.stdout


def test_configs_lists_the_demo(capsys):
    assert main(["configs"]) == 0
    assert "sgan-mnist" in capsys.readouterr().out


def test_metrics_and_datasets_list_every_entry(capsys):
    from ganstack.data import DATASETS
    from ganstack.metrics import METRICS

    assert main(["metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(METRICS)
    assert all(len(line.split()) > 1 for line in lines)  # every metric says what it is
    assert main(["datasets"]) == 0
    assert capsys.readouterr().out.split() == list(DATASETS)


def test_eval_against_the_held_out_split(run_dir, tmp_path):
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "eval",
                str(run_dir),
                "--n",
                "60",
                "--metrics",
                "fid",
                "--ref",
                "eval",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert "fid60_mnistcnn_eval50" in res["metrics"] and "calibration" not in res["protocol"]
    assert (
        main(
            [
                "eval",
                str(run_dir),
                "--n",
                "60",
                "--metrics",
                "fid",
                "--no-calibrate",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert "fid60_mnistcnn_train250" in res["metrics"] and "calibration" not in res["protocol"]
    assert main(["eval", str(run_dir), "--ref", "stats.txt"]) == 2
