"""Data pickles that run no code but would eat memory, crash or recurse without end: the
StackGAN layouts' filenames.pickle, char-CNN-RNN-embeddings.pickle and class_info.pickle (and
every other reader of ganstack.data.archives.safe_unpickle) against tiny hostile files (issue 22).

Each bomb here is small enough to run against the code before the fix, where it failed the
memory bound (or crashed the process, or raised a RecursionError); docs/reliability.md says how.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ganstack.config import DataConfig
from ganstack.data import load_dataset
from ganstack.data.archives import expanded_items, pickle_item_limit, safe_unpickle
from ganstack.errors import DataError

from .test_stackgan_formats import make_cub

SECRET = "s3cr3t-name"  # planted in the bombs: no error message may quote it
PEAK = 20 << 20  # bytes a refused bomb may make the loader allocate (unfixed: 100s of MB)


# ---- pickles written by hand, instruction by instruction (protocol 2) ---------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _text(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _tuple(*args) + b"R"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _dtype(name: str) -> bytes:
    return _call(_global("numpy", "dtype"), _text(name), b"\x89", b"\x88")


def _empty_array() -> bytes:  # how NumPy starts every array: _reconstruct(ndarray, (0,), b'b')
    return _call(
        _global("numpy.core.multiarray", "_reconstruct"),
        _global("numpy", "ndarray"),
        _tuple(b"K\x00"),
        b"C\x01b",
    )


def _array_with_state(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    """An array, then BUILD with (1, shape, dtype, False, data): NumPy's own layout."""
    return (
        _empty_array()
        + _tuple(b"K\x01", _tuple(*map(_int, shape)), _dtype(dtype), b"\x89", data)
        + b"b"
    )


def _shared_nested(leaf: object, sizes: list[int]) -> list:
    """One list of ``sizes[0]`` leaves, referred to ``sizes[1]`` times by the next, and so on."""
    obj: object = leaf
    for n in sizes:
        obj = [obj] * n
    return obj  # type: ignore[return-value]


# ---- the StackGAN layout's three pickles --------------------------------------------------------


def _void_array_bomb(n: int) -> bytes:
    """An array of ``n`` zero-byte items: 0 bytes of data, but list() makes n objects."""
    return _pickle(_array_with_state((n,), "V0", b"C\x00"))


BOMBS = {
    # 100 names, each one list standing for 300,000 items; str() of each expanded it (90 MB)
    "filenames.pickle": lambda: pickle.dumps(
        _shared_nested(0, [30, 100, 100, 100]) + [SECRET], protocol=2
    ),
    # one row of 1,024 shared 100 times, that block 300 times: np.asarray expanded it
    # (123 MB as float32)
    "char-CNN-RNN-embeddings.pickle": lambda: pickle.dumps(
        _shared_nested(0, [1024, 100, 300]), protocol=2
    ),
    # an array of 5 million zero-byte items: list() made 5 million objects (over 400 MB)
    "class_info.pickle": lambda: _void_array_bomb(5_000_000),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_shared_nested_stackgan_pickle_is_refused_before_it_expands(tmp_path, name):
    root = make_cub(tmp_path / "birds")
    blob = BOMBS[name]()
    assert len(blob) < 4_000
    (root / "train" / name).write_bytes(blob)
    cfg = DataConfig(name="cub", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    msg = ""
    tracemalloc.start()
    try:
        load_dataset(cfg)
    except DataError as e:
        msg = str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK, peak
    assert "is not a plain data pickle" in msg and name in msg, msg
    assert "refer to one another" in msg and "re-create the file" in msg, msg
    assert SECRET not in msg and len(msg.splitlines()) == 1


BUILDERS = {
    # numpy.ndarray((30 million,), 'O') called directly: 240 MB of None pointers
    "ndarray-call": _pickle(
        _call(_global("numpy", "ndarray"), _tuple(_int(30_000_000)), _text("O"))
    ),
    # _reconstruct asked for 30 million object slots at once (NumPy's pickles ask for 0)
    "reconstruct-shape": _pickle(
        _call(
            _global("numpy.core.multiarray", "_reconstruct"),
            _global("numpy", "ndarray"),
            _tuple(_int(30_000_000)),
            _dtype("O8"),
        )
    ),
    # bytes hex-encoded 24 times over: 2 characters become 16 MiB, then 32 MiB
    "codec-chain": _pickle(
        (_global("_codecs", "encode") + b"(") * 25
        + _text("ab")
        + _text("latin1")
        + b"tR"
        + b"".join(_text("hex") + b"tR" for _ in range(24))
    ),
    # a memo slot numbered 8 million: the C unpickler sized its memo table to it (128 MB)
    "memo-index": _pickle(b"]r" + struct.pack("<I", 8 << 20)),
}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_pickle_that_builds_a_huge_object_from_nothing_is_refused(tmp_path, kind):
    path = tmp_path / "class_info.pickle"
    path.write_bytes(BUILDERS[kind])
    assert path.stat().st_size < 1_000
    msg = ""
    tracemalloc.start()
    try:
        got = safe_unpickle(path)
    except DataError as e:
        msg = str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK, peak
    if kind == "memo-index":  # a valid pickle of []: it loads, in a few bytes
        assert got == []
    else:
        assert "is not a plain data pickle" in msg, msg


def test_an_object_array_shorter_than_its_shape_is_refused_not_a_crash(tmp_path):
    """NumPy does not check an object array's item list against its shape: setting the state
    (5,) with an empty list crashed the process (SIGSEGV). Run in a child process, so that the
    unfixed code fails this test instead of ending the test run."""
    path = tmp_path / "class_info.pickle"
    path.write_bytes(_pickle(_array_with_state((5,), "O8", b"]")))
    code = (
        "import sys\nfrom ganstack.data.archives import safe_unpickle\n"
        "from ganstack.errors import DataError\n"
        "try:\n    safe_unpickle(sys.argv[1])\nexcept DataError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-500:])
    assert "object array whose items do not match its shape" in out.stdout, out.stdout


def _nested_lists(depth: int) -> bytes:
    """[[[...]]] ``depth`` deep, written flat: EMPTY_LIST x depth, then APPEND x (depth - 1)."""
    return _pickle(b"]" * depth + b"a" * (depth - 1))


def _self_containing_list() -> bytes:
    lst: list = [SECRET]
    lst.append(lst)
    return pickle.dumps(lst, protocol=2)


@pytest.mark.parametrize("kind", ["deep", "cycle"])
@pytest.mark.parametrize("name", ["filenames.pickle", "char-CNN-RNN-embeddings.pickle"])
def test_a_pickle_nested_without_end_is_a_data_error(tmp_path, kind, name):
    """Unfixed, str() of a 100,000-deep list raised RecursionError as filenames.pickle."""
    root = make_cub(tmp_path / "birds")
    (root / "train" / name).write_bytes(
        _nested_lists(100_000) if kind == "deep" else _self_containing_list()
    )
    cfg = DataConfig(name="cub", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    with pytest.raises(DataError, match="is not a plain data pickle") as info:
        load_dataset(cfg)
    assert ("deep" if kind == "deep" else "contains itself") in str(info.value)
    assert SECRET not in str(info.value)


# ---- what must still load -----------------------------------------------------------------------


VALUES = [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.array([1, "a", None], dtype=object),
    np.array([b"ab", b"cde"]),
    np.array(["ab", "cdé"]),
    np.array(["2020-01-01"], dtype="datetime64[ns]"),
    np.arange(6, dtype=">f8").reshape(2, 3).T,  # big-endian, Fortran order
    np.zeros((0, 5), np.uint8),
    np.float64(1.5),
    np.int16(-3),
    np.bool_(True),
    {"x": [1, 2.5, None, True], b"y": (b"bytes", "text"), 3: {4: 5}},
    [[0] * 100] * 100,  # one row shared 100 times: 10,101 items, well within the limit
    list(range(1_000_000)),  # 1 million distinct ints in about 5 MB
]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
def test_plain_data_pickles_still_load(tmp_path, protocol):
    path = tmp_path / "data.pickle"
    for value in VALUES:
        blob = pickle.dumps(value, protocol=protocol)
        path.write_bytes(blob)
        got, want = safe_unpickle(path), pickle.loads(blob)  # NumPy's own unpickling
        if isinstance(value, np.ndarray):
            assert got.dtype == want.dtype and np.array_equal(got, value)
        else:
            assert got == value and type(got) is type(value)


def test_the_item_count_counts_every_reference_without_expanding():
    row = [1, 2]
    assert expanded_items([row, row, row], 100) == 1 + 3 * 3
    assert expanded_items({"k": row}, 100) == 1 + 1 + 3
    assert expanded_items(np.zeros((4, 5)), 100) == 20
    assert expanded_items("x" * 80, 100) == 11
    huge = _shared_nested(0, [10] * 30)  # 10**30 items in 30 small lists: measured at once
    with pytest.raises(pickle.UnpicklingError, match="stands for more than"):
        expanded_items(huge, 10**12)
    assert pickle_item_limit(10) == 1 << 22
    assert pickle_item_limit(10 << 20) == 4 * (10 << 20)


def test_the_released_embeddings_layout_still_loads_with_shared_rows(tmp_path):
    """A layout whose embeddings list refers to one (10, 1024) array per image: real files do
    not share rows, but sharing within the limit is no reason to refuse them."""
    root = make_cub(tmp_path / "birds")
    row = np.ones((10, 1024), np.float32)
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(
        pickle.dumps([row] * 6, protocol=2)
    )
    tr, _ = load_dataset(
        DataConfig(name="cub", path=str(root), resolution=8, eval_size=0, text_encoder="pickle")
    )
    assert tr.extras["embeddings"].shape == (6, 10, 1024)
    assert Path(root / "train" / "filenames.pickle").is_file()
