"""VS similarity (HDGAN's visual-semantic similarity): the ranking loss, the joint embedding's
ceiling and floor, its cache, and the registered metric with its calibration rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganstack.config import load_config
from ganstack.data import load_dataset
from ganstack.metrics.evaluate import caption_targets, evaluate
from ganstack.metrics.vs import VSRecipe, bounds, get_vs_model, ranking_loss, train_vs

pytestmark = pytest.mark.usefixtures("one_thread")


def _shapes(n: int, eval_size: int, resolution: int = 16):
    cfg = load_config(
        "hdgan-shapes",
        [
            f"data.num_images={n}",
            f"data.eval_size={eval_size}",
            f"data.resolution={resolution}",
            "data.text_dim=32",
        ],
    )
    return load_dataset(cfg.data)


def test_ranking_loss_by_hand():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=1)
    c = v @ t.T  # c[0,0] = c[0,1]... image 0: 0.7071 with its caption, 0 with caption 1
    m = 0.2
    want = (
        max(0, m - c[0, 0] + c[0, 1])
        + max(0, m - c[1, 1] + c[1, 0])  # image -> captions
        + max(0, m - c[0, 0] + c[1, 0])
        + max(0, m - c[1, 1] + c[0, 1])
    )  # caption -> images
    assert float(ranking_loss(v, t, m)) == pytest.approx(float(want))
    # Matching pairs far apart from the rest: no loss.
    assert float(ranking_loss(v, v, m)) == 0.0


def test_real_pairs_score_above_shuffled_pairs():
    train, held = _shapes(600, 120)
    model = train_vs(train, VSRecipe(epochs=8, batch_size=32, size=16), lambda _m: None)
    b = bounds(model, held)
    assert -1 <= b["shuffled"] < b["real"] <= 1
    assert b["real"] - b["shuffled"] > 0.1, b


def test_the_embedding_is_cached_and_the_metric_is_registered(caplog):
    train, held = _shapes(96, 48)
    model, meta = get_vs_model(train, held)
    assert meta["name"] == "shapesvs" and {"real", "shuffled"} <= set(meta["held_out"])
    again, meta2 = get_vs_model(train, held)  # from the cache: the same weights
    assert meta2 == meta
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    # The metric: real held-out images with their own captions score as the ceiling row;
    # shuffled captions as the blind row; coarser outputs get their own figures.
    conditions, targets = caption_targets(held, 48)
    assert torch.equal(conditions["text"], targets["text"])
    images = held.images[:48]
    extra = {"level1": F.avg_pool2d(images.float(), 2).round().to(torch.uint8)}
    res = evaluate(images, None, train, held, ["vs"], extra_images=extra, targets=targets)
    m = res["metrics"]
    assert {
        "vs48_shapesvs",
        "vs_std48_shapesvs",
        "vs48_shapesvs_shuffled",
        "vs48_shapesvs_level1",
    } <= set(m)
    rows = res["protocol"]["calibration"]["rows"]
    assert "vs_shapesvs" in rows["real"] and "vs_shapesvs" in rows["blind"]
    assert all(-1 <= v <= 1 for k, v in m.items() if not k.startswith("vs_std"))
