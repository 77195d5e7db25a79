"""Reliability: SIGKILL at random moments, a full disk, fuzzed inputs, and CLI errors.

Counts quoted in docs/reliability.md come from the constants below (KILLS, *_EXAMPLES).
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganstack.cli import main, read_captions_file
from ganstack.config import DataConfig, apply_overrides, build, from_dict, load_config
from ganstack.data import load_dataset
from ganstack.data.formats import load_image_folder, read_idx
from ganstack.data.nyu import load_nyu_normals
from ganstack.errors import DataError, GanstackError
from ganstack.train import checkpoint as ckpt
from ganstack.train.trainer import Trainer

from .killing import KilledRun, leftovers, metric_steps, run_overrides, step_of

KILLS = 6  # SIGKILLs injected into one training run
CONFIG_EXAMPLES = 400  # each of the two override / config-tree fuzz tests
YAML_EXAMPLES = 200  # YAML files and config names
IDX_EXAMPLES = 1000
IMAGE_EXAMPLES = 1000  # folders of 1-3 random or mutated image files
LAYOUT_EXAMPLES = 300  # a CUB layout with one file rewritten
NYU_EXAMPLES = 200  # NYU-style pair lists and images
ROOMS_EXAMPLES = 60  # rooms and shapes settings
CAPTION_EXAMPLES = 300  # --captions files

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _run_overrides(
    tiny_overrides: list[str], independent: int, joint: int, checkpoint_every: int
) -> list[str]:
    return run_overrides(
        tiny_overrides, {"independent": independent, "joint": joint}, checkpoint_every
    )


# ---- SIGKILL at random moments ------------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_completes_exactly(tmp_path, tiny_overrides):
    phases = {"independent": 12, "joint": 36}  # the phase boundary falls among the kills
    overrides = run_overrides(tiny_overrides, phases, checkpoint_every=1)
    killed = KilledRun(tmp_path, "sgan-mnist", overrides, seed=20240611)
    stats = killed.kill_repeatedly(KILLS)
    killed.finish()
    assert stats.kills == KILLS and stats.in_write >= KILLS // 4, stats
    killed.check_complete(phases)

    # ... and it is the run that was never killed: same losses, same weights.
    cfg = load_config("sgan-mnist", run_overrides(tiny_overrides, phases, 0))
    straight = tmp_path / "straight"
    assert Trainer(cfg, straight).fit() == "done"
    killed.check_same_as(straight, phases)


class _Killed(BaseException):
    """Stands for SIGKILL at an exact point: nothing after it runs."""


@pytest.mark.parametrize("kill_at", [1, 2])  # after the first / second unlink of a prune
def test_a_kill_while_pruning_leaves_only_complete_checkpoints(
    tmp_path, tiny_overrides, monkeypatch, kill_at
):
    cfg = load_config(
        "sgan-mnist",
        _run_overrides(tiny_overrides, 3, 0, checkpoint_every=1) + ["train.keep_checkpoints=1"],
    )
    trainer = Trainer(cfg, tmp_path)
    ckdir = trainer.ckpt_dir
    real_unlink = Path.unlink
    calls = []

    def unlink(self, missing_ok=False):
        if self.parent == ckdir:
            calls.append(self.name)
            if len(calls) == kill_at:  # the process dies instead of this unlink
                raise _Killed
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Killed):
        trainer.fit()  # step 2's checkpoint prunes step 1's
    monkeypatch.undo()
    assert {c.split(".")[0] for c in calls} == {"step-0000001"}
    found = ckpt.list_checkpoints(ckdir)
    assert found
    for path in found:
        ckpt.read_checkpoint(path)
    # The resumed run removes the weights a kill mid-prune left without their record.
    assert Trainer(cfg, tmp_path, resume=True).fit() == "done"
    assert leftovers(ckdir) == []


# ---- a full disk during a checkpoint write ------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["fsync", "safetensors", "json-record"])
def test_full_disk_during_a_checkpoint_fails_loudly_and_keeps_the_last_one(
    tmp_path, tiny_overrides, monkeypatch, capsys, where
):
    run = tmp_path / "run"
    ckdir = run / "checkpoints"
    argv = [
        "train",
        "sgan-mnist",
        "--out",
        str(run),
        "--no-eval",
        *_run_overrides(tiny_overrides, 4, 4, checkpoint_every=2),
    ]
    first = ckdir / "step-0000002.json"
    # The disk fills up after the checkpoint of step 2: the one of step 4 fails.
    if where == "fsync":  # the kernel reports ENOSPC when the data reaches the disk
        real_fsync = os.fsync

        def fsync(fd):
            if first.exists():
                raise _enospc()
            return real_fsync(fd)

        monkeypatch.setattr(ckpt.os, "fsync", fsync)
    elif where == "safetensors":  # a write error inside safetensors, as it really reports it
        from safetensors import SafetensorError

        real_save = ckpt.save_file

        def save_file(tensors, filename, metadata=None):
            if first.exists():
                Path(filename).write_bytes(b"\0" * 1000)  # partly written, then the disk is full
                raise SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)"
                )
            return real_save(tensors, filename, metadata=metadata)

        monkeypatch.setattr(ckpt, "save_file", save_file)
    else:  # the weights are written, the JSON record that makes them a checkpoint is not
        real_write = ckpt.atomic_write_text

        def atomic_write_text(path, text):
            if first.exists() and path.parent == ckdir:
                raise _enospc()
            return real_write(path, text)

        monkeypatch.setattr(ckpt, "atomic_write_text", atomic_write_text)

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("ganstack: error: ") and "No space left on device" in err
    assert "--resume" in err
    # The previous checkpoint is the newest visible one and it loads; nothing half-written.
    found = ckpt.list_checkpoints(ckdir)
    assert [p.name for p in found] == ["step-0000002.json"]
    record, _ = ckpt.read_checkpoint(found[0])
    assert record["global_step"] == 2
    assert not [n for n in os.listdir(ckdir) if n.endswith(".tmp")]

    monkeypatch.undo()  # space was freed: the run resumes from step 2 and completes
    assert main([*argv, "--resume"]) == 0
    assert step_of(ckpt.list_checkpoints(ckdir)[-1]) == 8
    assert metric_steps(run) == list(range(1, 9))


def test_a_real_write_error_from_the_kernel_is_one_line(tmp_path, tiny_overrides):
    """No simulation: a file-size limit makes the kernel refuse the checkpoint write (EFBIG).

    safetensors reports that as its own SafetensorError, not an OSError; the CLI still prints
    one line and exits 1, and no partial file is left.
    """
    import resource

    def limit_file_size():  # config.yaml and metrics fit, a checkpoint (~6 MB) does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    run = tmp_path / "run"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganstack",
            "-q",
            "train",
            "sgan-mnist",
            "--out",
            str(run),
            "--no-eval",
            *_run_overrides(tiny_overrides, 4, 0, checkpoint_every=2),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "File too large" in lines[0] and "--resume" in lines[0], lines
    assert ckpt.list_checkpoints(run / "checkpoints") == []
    assert leftovers(run / "checkpoints") == []


# ---- fuzzing: the config loader -----------------------------------------------------------------

KNOWN_KEYS = [
    "model",
    "model.name",
    "model.width",
    "model.z_dims",
    "model.encoder",
    "model.encoder.split",
    "model.encoder.weights",
    "model.lr",
    "model.joint_lr",
    "model.g_loss",
    "model.levels",
    "data",
    "data.name",
    "data.path",
    "data.eval_size",
    "data.resolution",
    "data.channels",
    "data.skip_bad",
    "train",
    "train.phases",
    "train.phases.independent",
    "train.phases.joint",
    "train.batch_size",
    "train.seed",
    "train.device",
    "train.precision",
    "train.ema",
    "train.num_threads",
    "eval",
    "eval.n",
    "eval.metrics",
    "eval.inception",
    "description",
]
YAML_SCALARS = [
    "",
    "~",
    "null",
    "true",
    "no",
    "on",
    "0",
    "-1",
    "3",
    "1e-3",
    "1.0e400",
    ".nan",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "2020-01-01",
    "2020-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "9" * 5000,
    "1" + "0" * 400,
    "[1, 2",
    "[1, 2]",
    "[]",
    "{}",
    "{a: 1}",
    "{1: 2}",
    "[[[[[[1]]]]]]",
    "[" * 3000,
    "&a [*a]",
    "*x",
    "!!binary AAA",
    "!!set {a}",
    "!!bool x",
    "!!int ",
    "!!float x",
    "!!python/object/apply:os.system ['echo hi']",
    "sgan",
    "lapgan",
    "fc3",
    "[pool2, fc3]",
    "'quoted'",
    '"x\\u0000y"',
    "a: b: c",
    "- 1",
    "|\n  text",
    "\x00",
    "é",
    "10000000000000000000000",
]
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(alphabet="abcz._-=09 ", max_size=12),
    st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(KNOWN_KEYS), st.text(max_size=6)),
)
values = st.one_of(st.sampled_from(YAML_SCALARS), st.text(max_size=20))
overrides = st.lists(st.builds(lambda k, v: f"{k}={v}", keys, values), max_size=5)

plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["sgan", "lapgan", "mnist", "folder", "cpu", "fc3"]),
)
name_keys = st.one_of(
    st.sampled_from([k.rsplit(".", 1)[-1] for k in KNOWN_KEYS]), st.text(max_size=6), st.integers()
)
trees = st.recursive(
    plain,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(name_keys, c, max_size=4),
    max_leaves=12,
)
top = st.dictionaries(
    st.sampled_from(["model", "data", "train", "eval", "description", "x"]), trees, max_size=5
)


def _only_user_errors(fn, *args):
    try:
        return fn(*args)
    except GanstackError:
        return None


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(overrides)
@example(["train.seed=2020-13-45"])  # PyYAML's ValueError (was uncaught)
@example(["model=[1, 2]"])  # a model section that is not a mapping (was a TypeError)
@example(["model.name=5"])  # a model name that is not a string (was a TypeError)
@example(["model.lr=1" + "0" * 400])  # an int beyond the float range (was an OverflowError)
@example(["train.seed=" + "9" * 5000])  # an int too long for Python to parse (was a ValueError)
@example(["description=!!bool x"])  # PyYAML's KeyError (was uncaught)
def test_fuzz_overrides_raise_only_config_errors(items):
    cfg = _only_user_errors(load_config, "sgan-mnist", items)
    if cfg is not None:  # a config that loads can be saved and loaded again, unchanged
        again = from_dict(yaml.safe_load(cfg.to_yaml()))
        assert again.hash() == cfg.hash()


@settings(FUZZ, max_examples=CONFIG_EXAMPLES)
@given(top, overrides)
@example({"model": "abc"}, [])
@example({"model": {"name": ["sgan"]}}, [])
def test_fuzz_config_trees_raise_only_config_errors(raw, items):
    def go():
        return from_dict(apply_overrides(raw, items))

    _only_user_errors(go)


@settings(FUZZ, max_examples=YAML_EXAMPLES)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        trees.map(lambda t: yaml.safe_dump({"train": t, "model": {"name": "sgan"}})),
    ),
    st.text(max_size=300),
)
@example(b"\xff\xfe", "")  # not UTF-8 (was a UnicodeDecodeError)
@example("train: {seed: 2020-13-45}", "")
@example("", "a" * 300)  # a config name too long for the file system (was an OSError)
def test_fuzz_yaml_files_and_config_names(tmp_path_factory, content, name):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    _only_user_errors(load_config, str(path))
    _only_user_errors(load_config, name)


# ---- fuzzing: the IDX reader --------------------------------------------------------------------


def _idx_bytes(dtype_code: int, dims: list[int], payload: bytes) -> bytes:
    return (
        bytes([0, 0, dtype_code, len(dims)])
        + b"".join(d.to_bytes(4, "big") for d in dims)
        + payload
    )


idx_files = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _idx_bytes,
        st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]),
        st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), max_size=5),
        st.binary(max_size=200),
    ),
    st.builds(lambda b, cut: gzip.compress(b)[:cut], st.binary(max_size=200), st.integers(0, 300)),
    st.builds(lambda b: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b, st.binary(max_size=60)),
)


@settings(FUZZ, max_examples=IDX_EXAMPLES)
@given(idx_files)
@example(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 30)  # was a zlib.error
@example(_idx_bytes(0x08, [65536] * 4, b""))  # np.prod overflowed to 0 (was a ValueError)
@example(_idx_bytes(0x0C, [0, 3, 2**31, 2**31], b""))  # no data, too big a shape (ValueError)
def test_fuzz_idx_reader_raises_only_data_errors(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte"
    path.write_bytes(raw)
    try:
        arr = read_idx(path)
    except DataError:
        event("DataError")
        return
    event("read")
    assert isinstance(arr, np.ndarray)


# ---- fuzzing: the image-folder loader -----------------------------------------------------------


def _encoded(fmt: str, mode: str, **kw) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


SEEDS = [
    _encoded("PNG", "RGB"),
    _encoded("PNG", "RGBA"),
    _encoded("PNG", "P"),
    _encoded("PNG", "L"),
    _encoded("JPEG", "RGB"),
    _encoded("BMP", "RGB"),
    _encoded("WEBP", "RGB", lossless=True),
    _encoded("PNG", "I;16"),
]


def _mutate(seed: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed[: max(cut, 0)] if cut < len(seed) else seed)
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    return bytes(data)


image_files = st.one_of(
    st.binary(max_size=400),
    st.builds(
        _mutate,
        st.sampled_from(SEEDS),
        st.integers(0, 1000),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    ),
)


@settings(FUZZ, max_examples=IMAGE_EXAMPLES)
@given(
    st.lists(image_files, min_size=1, max_size=3), st.sampled_from([0, 4]), st.sampled_from([1, 3])
)
def test_fuzz_image_folder_raises_only_data_errors(tmp_path_factory, files, resolution, channels):
    folder = tmp_path_factory.mktemp("img")
    for i, raw in enumerate(files):
        (folder / f"{i}.png").write_bytes(raw)
    try:
        ds = load_image_folder(folder, resolution=resolution, channels=channels)
    except DataError as e:
        event("DataError: " + ("unreadable" if "cannot be read" in str(e) else "other"))
        return
    event("loaded")
    assert ds.images.dtype == torch.uint8 and ds.images.shape[:2] == (len(files), channels)


# ---- fuzzing: the StackGAN layouts, NYU pair lists, rooms, caption files -------------------------

# Tokens that trip parsers: numbers out of range, non-numbers, odd whitespace and bytes.
TOKENS = [
    "",
    "0",
    "-1",
    "1",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "x",
    "1.5",
    "\t",
    "\x00",
    "é",
    "\u2028",
    "a b",
    "9" * 40,
    "/",
    "..",
]


def _mutate_text(original: bytes, cut: int, subs: list[tuple[int, str]]) -> bytes:
    """``original`` with some whitespace-separated tokens replaced, then perhaps cut short."""
    words = original.decode("utf-8").split(" ")
    for pos, tok in subs:
        words[pos % len(words)] = tok
    data = " ".join(words).encode("utf-8")
    return data[:cut] if cut < len(data) else data


junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=2),
    max_leaves=10,
)
pickled = st.builds(lambda obj, proto: pickle.dumps(obj, protocol=proto), junk, st.integers(0, 5))
mutated_lines = st.tuples(
    st.integers(0, 400),
    st.lists(st.tuples(st.integers(0, 10**4), st.sampled_from(TOKENS)), min_size=1, max_size=4),
)

# The files of a CUB layout (tests/test_stackgan_formats.py::make_cub) that the fuzz rewrites.
LAYOUT_FILES = [
    "CUB_200_2011/images.txt",
    "CUB_200_2011/bounding_boxes.txt",
    "text/001.Bird_0/Bird_0000.txt",
    "train/filenames.pickle",
    "train/class_info.pickle",
    "train/char-CNN-RNN-embeddings.pickle",
]


@pytest.fixture(scope="module")
def cub_layout(tmp_path_factory) -> Path:
    from .test_stackgan_formats import make_cub

    return make_cub(tmp_path_factory.mktemp("cub") / "birds", n=2)


@settings(FUZZ, max_examples=LAYOUT_EXAMPLES)
@given(
    st.sampled_from(LAYOUT_FILES),
    st.one_of(st.binary(max_size=200), pickled, mutated_lines),
    st.booleans(),
)
@example("CUB_200_2011/images.txt", b"1\n", False)  # one field (was a ValueError)
@example("CUB_200_2011/bounding_boxes.txt", b"1 a b c d\n", False)  # (was a ValueError)
@example("CUB_200_2011/bounding_boxes.txt", b"1 inf 1 1 1\n", False)  # (was an OverflowError)
@example("CUB_200_2011/images.txt", b"\xff\xfe", False)  # (was a UnicodeDecodeError)
@example("train/class_info.pickle", pickle.dumps(["a", "b"]), False)  # (was a ValueError)
@example("train/class_info.pickle", pickle.dumps([[1], None]), False)  # (was a TypeError)
@example("train/char-CNN-RNN-embeddings.pickle", pickle.dumps([[1.0], [1.0, 2.0]]), True)
def test_fuzz_stackgan_layout_raises_only_data_errors(
    cub_layout, tmp_path_factory, name, content, embeddings
):
    """One file of a CUB layout rewritten: random bytes, a pickle of random data, or the
    original with tokens replaced; with the hashed caption encoder or the pickled embeddings."""
    root = tmp_path_factory.mktemp("layout") / "birds"
    shutil.copytree(cub_layout, root)
    path = root / name
    if isinstance(content, tuple):
        content = (
            _mutate_text(path.read_bytes(), *content)
            if path.suffix == ".txt"
            else pickle.dumps(content[1])
        )
    path.write_bytes(content)
    cfg = DataConfig(
        name="cub",
        path=str(root),
        resolution=8,
        eval_size=0,
        text_dim=16,
        text_encoder="pickle" if embeddings else "hash",
    )
    try:
        load_dataset(cfg)
    except DataError:
        event(f"DataError ({name.rsplit('/', 1)[-1]})")
        return
    event("loaded")


@pytest.fixture(scope="module")
def nyu_pairs(tmp_path_factory) -> Path:
    from .test_rooms import _pairs

    return _pairs(tmp_path_factory.mktemp("nyu") / "data", n=2)


pair_tokens = st.sampled_from(
    [
        "normals/000.jpg",
        "rgb/000.jpg",
        "normals/001.jpg",
        "rgb/001.jpg",
        "rgb",
        "missing.jpg",
        "trainlist_rand.txt",
        "x" * 300,
        "a\x00b",
        "../data/rgb/000.jpg",
        "",
        "\t",
    ]
)
pair_lists = st.lists(st.lists(pair_tokens, max_size=3).map(" ".join), max_size=4).map(
    lambda lines: "\n".join(lines).encode("utf-8")
)


@settings(FUZZ, max_examples=NYU_EXAMPLES)
@given(
    st.one_of(pair_lists, st.binary(max_size=100)),
    st.none()
    | st.builds(
        _mutate,
        st.sampled_from(SEEDS),
        st.integers(0, 1000),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    ),
    st.sampled_from([0, 8]),
)
@example(("x" * 5000 + " y").encode(), None, 8)  # a name too long (was an OSError)
def test_fuzz_nyu_pairs_raise_only_data_errors(
    nyu_pairs, tmp_path_factory, pair_list, image, resolution
):
    """A random pair list (paths that exist or not, odd fields, bytes), and perhaps one of the
    pictures replaced by a truncated, overwritten image file."""
    root = tmp_path_factory.mktemp("pairs") / "data"
    shutil.copytree(nyu_pairs, root)
    (root / "trainlist_rand.txt").write_bytes(pair_list)
    if image is not None:
        (root / "rgb" / "001.jpg").write_bytes(image)
    try:
        ds = load_nyu_normals(root, resolution, workers=1)
    except DataError:
        event("DataError")
        return
    event("loaded")
    assert ds.images.shape == ds.extras["normals"].shape


@settings(FUZZ, max_examples=ROOMS_EXAMPLES)
@given(
    st.integers(-2, 6).filter(bool),  # 0 means the default count: 4,000 (rooms) images
    st.integers(-1, 20),
    st.integers(-3, 2**70),
    st.integers(-1, 8),
)
@example(4, 8, -1, 0)  # a negative seed (was numpy's ValueError)
def test_fuzz_rooms_settings_raise_only_user_errors(num_images, resolution, seed, eval_size):
    """The procedural rooms dataset (and shapes) with random sizes, seeds and hold-outs."""
    for name in ("rooms", "shapes"):
        try:
            cfg = build(
                DataConfig,
                {
                    "name": name,
                    "num_images": num_images,
                    "resolution": resolution,
                    "gen_seed": seed,
                    "eval_size": eval_size,
                },
                "data",
            )
            train, _ = load_dataset(cfg)
        except GanstackError as e:
            event(f"{name}: {type(e).__name__}")
            continue
        event(f"{name}: loaded")
        assert train.images.shape[-1] == (resolution or 64)


@settings(FUZZ, max_examples=CAPTION_EXAMPLES)
@given(
    st.one_of(
        st.binary(max_size=100),
        st.text(max_size=100).map(str.encode),
        st.lists(st.sampled_from(TOKENS), max_size=6).map(lambda t: "\n".join(t).encode("utf-8")),
    )
)
def test_fuzz_captions_files_raise_only_user_errors(tmp_path_factory, raw):
    """`ganstack sample --captions FILE`: any bytes give captions or a one-line user error."""
    path = tmp_path_factory.mktemp("caps") / "captions.txt"
    path.write_bytes(raw)
    try:
        caps = read_captions_file(str(path))
    except GanstackError:
        event("GanstackError")
        return
    event("read")
    assert caps and all(isinstance(c, str) and c.strip() == c and c for c in caps)


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["datasets", "metrics"])  # the others are in test_cli.py
def test_help_of_the_listing_commands(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: ganstack" in capsys.readouterr().out


def _user_error_argvs(tmp: Path) -> dict[str, list[str]]:
    return {
        "train": [
            "train",
            "sgan-mnist",
            "--out",
            str(tmp / "r"),
            "data.name=folder",
            f"data.path={tmp / 'no-such-folder'}",
        ],
        "train-args": ["train", "sgan-mnist", "--out"],
        "sample": ["sample", str(tmp), "--n", "0", "--out", "x.png"],
        "sample-args": ["sample", str(tmp), "--n", "many", "--out", "x.png"],
        "eval": ["eval", str(tmp), "--n", "1"],
        "configs": ["configs", "--verbose"],
        "datasets": ["datasets", "extra"],
        "metrics": ["metrics", "--all"],
        "unknown": ["fit", "sgan-mnist"],
    }


@pytest.mark.parametrize("case", list(_user_error_argvs(Path("."))))
def test_a_user_error_in_each_command_is_one_line_and_exit_2(case, tmp_path, capsys):
    argv = _user_error_argvs(tmp_path)[case]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("ganstack: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_user_errors_through_a_real_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganstack",
            "train",
            "sgan-mnist",
            "--out",
            str(tmp_path / "r"),
            "data.name=folder",
            f"data.path={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"ganstack: error: image folder {tmp_path} is empty; put images (.bmp, .jpeg, .jpg, "
        f".png, .webp) in it or in sub-folders (one per class), or point data.path at the "
        f"right folder"
    ]
