"""The evaluation protocol tells a working model from a failing one: precision/recall/density/
coverage, the calibration rows (real ceiling, blurred floors, condition-blind control), the
second feature space and the reference-statistics cache."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import torch

from ganstack.data.base import ImageDataset
from ganstack.metrics.prdc import kth_neighbour_radii, prdc

# The module (ganstack.metrics re-exports its function `evaluate` under the same name).
ev = importlib.import_module("ganstack.metrics.evaluate")

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- precision, recall, density, coverage ------------------------------------------------------


def _brute_prdc(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The papers' definitions, written out with loops over pairs."""

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radius(points: np.ndarray, i: int, k: int) -> float:
        return sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    r3 = [radius(real, i, k_pr) for i in range(len(real))]
    f3 = [radius(fake, j, k_pr) for j in range(len(fake))]
    r5 = [radius(real, i, k_dc) for i in range(len(real))]
    precision = np.mean([any(dist(y, real[i]) <= r3[i] for i in range(len(real))) for y in fake])
    recall = np.mean([any(dist(x, fake[j]) <= f3[j] for j in range(len(fake))) for x in real])
    density = sum(
        dist(y, real[i]) <= r5[i] for y, i in itertools.product(fake, range(len(real)))
    ) / (k_dc * len(fake))
    coverage = np.mean([any(dist(real[i], y) <= r5[i] for y in fake) for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_matches_the_definitions():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 5))
    fake = rng.normal(0.4, 1.3, size=(35, 5))
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k_pr=3, k_dc=5, chunk=7)
    want = _brute_prdc(real, fake, 3, 5)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_prdc_of_a_set_against_itself_and_a_far_set():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(1))
    same = prdc(x, x)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    # Each point lies in its own ball and in its k = 5 neighbours': (k + 1) / k.
    assert same["density"] == pytest.approx(6 / 5, abs=1e-12)
    other = prdc(x, torch.randn(200, 8, generator=torch.Generator().manual_seed(2)))
    assert 0.8 < other["density"] < 1.2 and other["precision"] > 0.8
    far = prdc(x, x + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_kth_neighbour_radii_and_errors():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert kth_neighbour_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert kth_neighbour_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ev.GanstackError, match="nearest neighbours need more"):
        kth_neighbour_radii(x, 4)
    with pytest.raises(ev.GanstackError, match="differ in dimension"):
        prdc(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ev.GanstackError, match="NaN"):
        prdc(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


# ---- a small domain with variety within each class ----------------------------------------------


def font_digits(n: int, seed: int, split: str) -> ImageDataset:
    """28x28 digits drawn with Pillow's scalable default font, with variety within each
    class: size, position, brightness and stroke width vary from image to image."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    fonts = {s: ImageFont.load_default(size=s) for s in range(13, 22)}
    images = np.empty((n, 1, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        im = Image.new("L", (28, 28))
        size = int(rng.integers(13, 22))
        ImageDraw.Draw(im).text(
            (int(rng.integers(4, 14)), int(rng.integers(0, 28 - size))),
            str(k),
            fill=int(rng.integers(150, 256)),
            font=fonts[size],
            stroke_width=int(rng.integers(0, 2)),
            stroke_fill=int(rng.integers(150, 256)),
        )
        images[i, 0] = np.asarray(im)
    images = np.maximum(images, rng.integers(0, 25, size=images.shape).astype(np.uint8))
    return ImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), 10, name=f"digits-{split}"
    )


@pytest.fixture(scope="module")
def digits() -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """Training split, held-out split, and more images of the same domain (a 'generator')."""
    return font_digits(500, 0, "train"), font_digits(200, 1, "eval"), font_digits(400, 2, "more")


METRICS = ["acc", "fid", "prdc"]


def _row(result: dict, row: str, prefix: str, extractor: str = "digitscnn") -> float:
    rows = result["protocol"]["calibration"]["rows"][row]
    (key,) = [k for k in rows if k.startswith(prefix + "_") and f"_{extractor}" in k]
    return rows[key]


def _metric(result: dict, prefix: str, extractor: str = "digitscnn") -> float:
    (key,) = [
        k
        for k in result["metrics"]
        if ev._COUNT.match(k)
        and ev.strip_count(k).startswith(prefix + "_")
        and f"_{extractor}" in k
        and not k.endswith(("_std", "_shuffled"))
    ]
    return result["metrics"][key]


def test_calibration_rows_order_real_blurred_and_fake(digits):
    train, held, more = digits
    res = ev.evaluate(more.images, more.labels, train, held, METRICS)
    cal = res["protocol"]["calibration"]
    assert cal["n"] == 200 and set(cal["rows"]) == {"model", "blind", "real", "blur1", "blur2"}
    for ext in ("digitscnn", "digitsalt"):  # both feature spaces, every row
        fid = {r: _row(res, r, "fid", ext) for r in ("model", "real", "blur1", "blur2")}
        assert fid["real"] < fid["blur1"] < fid["blur2"], fid
        # Real images of the same domain land near the ceiling, far from the floors.
        assert fid["model"] < fid["blur1"], fid
        assert _row(res, "real", "precision", ext) > _row(res, "blur2", "precision", ext)
        assert _row(res, "real", "acc", ext) > 0.9
        # The condition-blind control: the same samples against shuffled labels.
        assert _row(res, "blind", "acc", ext) < 0.3 < _row(res, "model", "acc", ext)


def test_blurred_real_generator_lands_between_ceiling_and_floor(digits):
    train, held, more = digits
    fake = ev.gaussian_blur(more.images, 1.5)
    res = ev.evaluate(fake, more.labels, train, held, ["fid"])
    for ext in ("digitscnn", "digitsalt"):
        model = _row(res, "model", "fid", ext)
        assert _row(res, "real", "fid", ext) < model < _row(res, "blur2", "fid", ext), ext


def test_a_generator_that_repeats_ten_images_keeps_precision_and_loses_recall(digits):
    train, held, more = digits
    varied = ev.evaluate(more.images, more.labels, train, held, ["prdc"], calibrate=False)
    idx = torch.arange(400) % 10  # ten images, one per class, repeated
    repeated = ev.evaluate(
        more.images[idx], more.labels[idx], train, held, ["prdc"], calibrate=False
    )
    for ext in ("digitscnn", "digitsalt"):
        # Ten distinct images make precision a multiple of 0.1: 0.8-1.0 on the CPUs seen so far
        # (the classifiers' rounding differs between AMD and Intel), as high as the varied set's.
        assert _metric(repeated, "precision", ext) >= min(0.7, _metric(varied, "precision", ext))
        assert _metric(repeated, "recall", ext) < 0.3 < _metric(varied, "recall", ext)
        assert _metric(repeated, "coverage", ext) < 0.3 < _metric(varied, "coverage", ext)


def test_gaussian_blur_keeps_constants_and_smooths_an_impulse():
    flat = torch.full((2, 3, 9, 9), 77, dtype=torch.uint8)
    assert torch.equal(ev.gaussian_blur(flat, 2.0), flat)
    dot = torch.zeros(1, 1, 15, 15, dtype=torch.uint8)
    dot[0, 0, 7, 7] = 255
    out = ev.gaussian_blur(dot, 1.0).float()[0, 0]
    # A normalised 2-D Gaussian of sigma 1: the centre keeps 1 / (2 pi) of the mass.
    assert out[7, 7].item() == pytest.approx(255 / (2 * np.pi), abs=1.5)
    assert out[7, 8] == out[8, 7] == out[7, 6] < out[7, 7]


def test_strip_count():
    assert ev.strip_count("fid5k_mnist5kcnn_train4500") == "fid_mnist5kcnn_train4500"
    shuffled = "caption_shape480_shapescnn_shuffled"
    assert ev.strip_count(shuffled) == "caption_shape_shapescnn_shuffled"
    assert ev.strip_count("precision200_digitsalt_train600_k3") == "precision_digitsalt_train600_k3"


def test_reference_features_are_cached_and_keyed_by_the_data(digits, monkeypatch):
    import shutil

    train, held, more = digits
    folder = ev.reference_cache_dir()
    shutil.rmtree(folder, ignore_errors=True)  # the classifiers stay cached
    calls = []
    real_extract = ev.EvalContext._extract

    def counting(self, extractor, images):
        calls.append((extractor, len(images)))
        return real_extract(self, extractor, images)

    monkeypatch.setattr(ev.EvalContext, "_extract", counting)
    first = ev.evaluate(more.images, more.labels, train, held, ["fid"], calibrate=False)
    assert calls.count(("classifier", len(train))) == 1  # the reference, computed once
    assert len(list(folder.glob("*.npz"))) == 2  # one per feature space
    calls.clear()
    second = ev.evaluate(more.images, more.labels, train, held, ["fid"], calibrate=False)
    assert ("classifier", len(train)) not in calls and ("alt", len(train)) not in calls
    assert second["metrics"] == first["metrics"]
    # Other reference images under the same name and size: other keys, computed anew.
    changed = ImageDataset(held.images.flip(3).contiguous(), held.labels, 10, name=held.name)
    for ref in (held, changed):
        calls.clear()
        ev.evaluate(
            more.images,
            more.labels,
            train,
            held,
            ["fid"],
            calibrate=False,
            ref_images=ref,
            ref_label="eval200",
        )
        assert ("classifier", len(held)) in calls
    assert len(list(folder.glob("*.npz"))) == 6


def test_ref_eval_compares_with_the_held_out_split(digits):
    train, held, more = digits
    ref_images, stats, label = ev.reference_option("eval", train, held)
    res = ev.evaluate(
        more.images,
        more.labels,
        train,
        held,
        ["fid"],
        ref_images=ref_images,
        ref_stats=stats,
        ref_label=label,
    )
    assert any(k.startswith("fid400_digitscnn_eval200") for k in res["metrics"])
    assert "calibration" not in res["protocol"]  # real vs itself would calibrate nothing
    with pytest.raises(ev.GanstackError, match="train, eval or a statistics"):
        ev.reference_option("somewhere.txt", train, held)


def test_a_baseline_result_joins_the_calibration_rows(digits, tmp_path):
    import json

    train, held, more = digits
    ours = ev.evaluate(more.images, more.labels, train, held, ["acc", "fid"])
    theirs = ev.evaluate(
        ev.gaussian_blur(more.images, 1.0), more.labels, train, held, ["acc", "fid"]
    )
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(theirs | {"recipe": "cDCGAN", "minutes": 5, "seed": 0}))
    ev.attach_baseline(ours, str(path))
    rows = ours["protocol"]["calibration"]["rows"]
    assert rows["baseline"] == theirs["protocol"]["calibration"]["rows"]["model"]
    assert ours["protocol"]["baseline"]["metrics"] == theirs["metrics"]
    from ganstack.metrics.report import report

    text = report(ours)
    assert "baseline" in text.splitlines()[0] and "blur σ2" in text.splitlines()[0]
    # Classifiers trained on the same data on another CPU (the whole fingerprint differs
    # there when float extras such as caption embeddings differ in their last bits): a row.
    assert ours["protocol"]["judge_data"] == train.fingerprint(floats=False)
    theirs["protocol"]["classifier"]["dataset_hash"] = "something else"
    path.write_text(json.dumps(theirs))
    again = ev.evaluate(more.images, more.labels, train, held, ["acc"])
    ev.attach_baseline(again, str(path))
    assert "baseline" in again["protocol"]["calibration"]["rows"]
    # Another judge (other classifier training data): no row, the metrics alone.
    theirs["protocol"]["judge_data"] = "something else"
    path.write_text(json.dumps(theirs))
    other = ev.evaluate(more.images, more.labels, train, held, ["acc"])
    ev.attach_baseline(other, str(path))
    assert "baseline" not in other["protocol"]["calibration"]["rows"]
