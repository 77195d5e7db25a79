"""Shared fixtures: tiny generated datasets and configs so whole pipelines run in seconds."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

# Files that cannot ship with the repository (the SGAN authors' released MNIST encoder,
# mnist/pretrained/encoder.npz in xunhuang1995/SGAN): tests that need them skip without them.
REFERENCE = Path(os.environ.get("GANSTACK_REFERENCE_DIR", "reference-files"))


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def bar_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Easy 28x28 'digits': class k is a bright vertical bar at column 2 + 2k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 4:24, 2 + 2 * k : 4 + 2 * k] = 255
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of standard MNIST IDX files holding 300 generated 'digits'."""
    folder = tmp_path_factory.mktemp("mnist")
    images, labels = bar_digits(300)
    write_idx(folder / "train-images-idx3-ubyte", images, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", labels)
    return folder


def tiny_config_overrides(mnist_dir: Path, batch_size: int = 20) -> list[str]:
    """Overrides that make the SGAN MNIST config train in about a second."""
    return [
        "data.name=mnist",
        f"data.path={mnist_dir}",
        "data.eval_size=50",
        "model.width=0.25",
        "model.feature_hidden=32",
        "model.feature_disc_hidden=32",
        "model.encoder.pretrain_epochs=1",
        f"train.batch_size={batch_size}",
        "train.phases.independent=4",
        "train.phases.joint=4",
        "train.log_every=1",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.tensorboard=false",
        "train.progress=false",
        "eval.n=100",
    ]


@pytest.fixture()
def tiny_overrides(mnist_dir: Path) -> list[str]:
    return tiny_config_overrides(mnist_dir)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one torch thread is faster and does not fight other processes for the
    cores. A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Classifier caches go to a per-session temporary folder, never the user's. Session-scoped
    so that module-scoped fixtures (a run trained and evaluated once per file) use it too: with
    a function-scoped one they evaluated with the user's cached classifiers, and the tests with
    the session's, which another process may have trained with other threads."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANSTACK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield
