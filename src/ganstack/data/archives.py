"""Readers for dataset files that come as Python pickles or MATLAB files.

Pickles from the internet can run code when unpickled. :func:`safe_unpickle` reads them with an
unpickler that admits only plain containers, numbers, strings and NumPy arrays; anything else
(a function, a class, ``os.system``) stops the load with a :class:`DataError` before it runs.

A pickle that runs no code can still ask for far more memory than it holds. One instruction
can build an array of any shape, and a list can be referred to many times and such lists
nested, so that a few hundred bytes stand for billions of items once anything walks them
(``str``, ``np.asarray``). So the unpickler calls the few constructors that NumPy's pickles use
only as NumPy calls them, with their arguments checked, and :func:`safe_unpickle` measures the
loaded object with every shared reference counted each time it occurs (memoised, without
expanding anything) before it returns it.
"""

from __future__ import annotations

import _codecs
import copyreg
import io
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from struct import error as struct_error
from typing import Any, ClassVar

import numpy as np
import torch

from ganstack.data.base import ImageDataset
from ganstack.errors import DataError
from ganstack.fileio import memory_budget, read_regular

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

# (module, name) pairs a data pickle may reference: NumPy's array reconstruction and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; runs no code
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("__builtin__", "bytes"),  # bytes(): how Python 3 writes b"" in protocols 0 to 2
    ("builtins", "bytes"),
}

# The most items a data pickle may stand for: each list slot, dict entry, number and array
# element counts once for every reference to it, a string one per 8 characters. A real data
# pickle stands for at most about one item per byte of file (a list of small integers: 2 bytes
# each; float32 arrays: 4 bytes an element); only shared references make a file stand for more.
PICKLE_ITEMS_PER_BYTE = 4
PICKLE_MIN_ITEMS = 1 << 22  # any file may stand for 4 Mi items (32 MiB as float64)
PICKLE_MAX_DEPTH = 100  # containers nested deeper than this are refused (real data: 2 or 3)

_DTYPE_NAME = re.compile(r"[<>=|]?[A-Za-z?]\d{0,9}")  # 'f4', 'u1', 'O8', 'S12', 'M8'


class _Refused(pickle.UnpicklingError):
    pass


class _TooLarge(pickle.UnpicklingError):
    pass


class _Malformed(pickle.UnpicklingError):
    pass


def pickle_item_limit(file_size: int) -> int:
    """The most items a data pickle of ``file_size`` bytes may stand for."""
    return min(max(PICKLE_MIN_ITEMS, PICKLE_ITEMS_PER_BYTE * file_size), memory_budget() // 8)


def _shape(shape: Any) -> tuple[int, ...]:
    if (
        not isinstance(shape, tuple)
        or len(shape) > 64
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise _Malformed("an array shape that is not a tuple of sizes")
    return shape


class _DataUnpickler(pickle._Unpickler):  # Python's own: each instruction can be checked
    """Admits the names in ``_ALLOWED`` and calls them only the way NumPy's pickles do, with
    the arguments checked; the arrays it builds hold at most ``limit`` items in all."""

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(pickle._Unpickler.dispatch)
    # The pure-Python unpickler's working state (set by its load(); not in the type stubs).
    stack: list[Any]
    append: Callable[[Any], None]

    def __init__(self, file: Any, limit: int) -> None:
        super().__init__(file, encoding="bytes")
        self.limit = limit
        self.items = 0

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        where = f"{module}.{name}"  # a name from the file: shown in part, as ASCII
        raise _Refused(f"refusing to load {ascii(where[:60])}{'...' if len(where) > 60 else ''}")

    def _count(self, items: int) -> None:
        self.items += items
        if self.items > self.limit:
            raise _TooLarge(f"its arrays would hold more than {self.limit:,} items")

    def _call(self, func: Any, args: Any) -> Any:
        """``func(*args)`` for the calls found in data pickles; anything else is refused."""
        if not isinstance(args, tuple):
            raise _Refused("a call without an argument tuple")
        if func is _multiarray._reconstruct:  # _reconstruct(ndarray, (0,), b'b'), then BUILD
            if len(args) != 3 or args[0] is not np.ndarray:
                raise _Malformed("an array reconstruction of another kind")
            self._count(math.prod(_shape(args[1])))
            return func(*args)
        if func is np.dtype:  # dtype('f4', False, True), then BUILD
            name = (
                args[0].decode("latin1")
                if args and isinstance(args[0], bytes)
                else (args[0] if args else None)
            )
            if len(args) > 3 or not isinstance(name, str) or not _DTYPE_NAME.fullmatch(name):
                raise _Malformed("a dtype that is not one plain type")
            return np.dtype(name, bool(args[1]) if len(args) > 1 else False, True)  # a copy
        if func is _multiarray.scalar:  # scalar(dtype('float64'), b'8 bytes')
            if (
                len(args) != 2
                or not isinstance(args[0], np.dtype)
                or args[0].hasobject
                or not isinstance(args[1], bytes)
                or len(args[1]) != args[0].itemsize
            ):
                raise _Malformed("a NumPy scalar of another kind")
            return func(*args)
        if func is _codecs.encode:  # encode('text', 'latin1'): bytes in a protocol-2 pickle
            if (
                len(args) != 2
                or not isinstance(args[0], str)
                or args[1] not in ("latin1", "latin-1")
            ):
                raise _Malformed("an encoding other than latin1")
            return func(*args)
        reconstructor = copyreg._reconstructor  # type: ignore[attr-defined]
        if func is reconstructor and args == (object, object, None):
            return object()
        if func is object and not args:
            return object()
        if func is bytes and not args:
            return b""
        raise _Refused(f"a call to '{getattr(func, '__name__', type(func).__name__)}'")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.append(self._call(self.stack.pop(), args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise _Malformed("a constructor with keyword arguments")
        self.append(self._call(cls, args))

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ (protocols 0, 1)
        self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            self._check_array_state(state)
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(self._dtype_state(inst, state))  # type: ignore[attr-defined]
        else:
            raise _Refused(f"setting the state of a {type(inst).__name__}")

    def _check_array_state(self, state: Any) -> None:
        """NumPy's ``([version,] shape, dtype, fortran, data)``: the data must be exactly what
        the shape and dtype need (NumPy does not check an object array's list; it crashes)."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Malformed("an array state of another kind")
        shape, dtype, _, data = state[-4:]
        n = math.prod(_shape(shape))
        if not isinstance(dtype, np.dtype):
            raise _Malformed("an array state without a dtype")
        self._count(n)
        if dtype.hasobject:
            if dtype != np.dtype(object) or not isinstance(data, list) or len(data) != n:
                raise _Malformed("an object array whose items do not match its shape")
        elif not isinstance(data, (bytes, bytearray, str)) or len(data) != n * dtype.itemsize:
            raise _Malformed("an array whose bytes do not match its shape")

    @staticmethod
    def _dtype_state(inst: np.dtype, state: Any) -> tuple:
        """NumPy's dtype state ``(3 or 4, endian, None, None, None, size, alignment, flags[,
        metadata])`` for one plain type; the flags are the dtype's own, never the file's."""
        if (
            not isinstance(state, tuple)
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
            or state[1] not in ("<", ">", "=", "|", b"<", b">", b"=", b"|")
            or any(s is not None for s in state[2:5])
            or not all(type(v) is int and -1 <= v < 1 << 31 for v in state[5:7])
        ):
            raise _Malformed("a structured or unusual dtype")
        return (*state[:7], inst.flags, *state[8:])

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _children(obj: Any) -> Any:
    """The objects a container refers to, or None for a leaf."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return obj.ravel().tolist()
    return None


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (list, tuple, set, frozenset, dict)) or (
        isinstance(obj, np.ndarray) and obj.dtype.hasobject
    )


def _leaf_items(obj: Any) -> int:
    if isinstance(obj, (str, bytes, bytearray)):
        return 1 + len(obj) // 8
    if isinstance(obj, np.ndarray):
        return max(1, obj.size)
    return 1


def expanded_items(obj: Any, limit: int, max_depth: int = PICKLE_MAX_DEPTH) -> int:
    """How many items ``obj`` stands for when walked as a tree: a container counts 1 plus its
    children, every time it is referred to. Computed once per distinct object (so a list
    shared a billion times costs nothing to measure); raises ``_TooLarge`` past ``limit``,
    ``_Malformed`` for a container that contains itself or nesting deeper than ``max_depth``."""
    done: dict[int, tuple[int, int]] = {}  # id -> (items, depth), for containers
    open_: set[int] = set()  # containers whose children are being measured
    stack: list[tuple[Any, bool]] = [(obj, False)]
    while stack:
        o, children_done = stack.pop()
        key = id(o)
        if children_done:
            items, depth = 1, 1
            for c in _children(o):
                ci, cd = done.get(id(c), (_leaf_items(c), 0))
                items += ci
                depth = max(depth, cd + 1)
            open_.discard(key)
            if items > limit:
                raise _TooLarge(f"it stands for more than {limit:,} items")
            if depth > max_depth:
                raise _Malformed(f"it nests containers more than {max_depth} deep")
            done[key] = (items, depth)
            continue
        if key in done:
            continue
        if key in open_:
            raise _Malformed("a container in it contains itself")
        children = _children(o)
        if children is None:
            continue
        open_.add(key)
        stack.append((o, True))
        stack.extend((c, False) for c in children if _is_container(c))
    return done.get(id(obj), (_leaf_items(obj), 0))[0]


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle a data file (Python 2 or 3) admitting only containers, scalars and arrays, and
    only as many items as :func:`pickle_item_limit` allows for its size."""
    path = Path(path)
    try:
        raw = read_regular(path, None, DataError, "data file")  # never a FIFO or a device
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    limit = pickle_item_limit(len(raw))
    try:
        obj = _DataUnpickler(io.BytesIO(raw), limit).load()
        expanded_items(obj, limit)
    except _TooLarge as e:
        raise DataError(
            f"{path} is not a plain data pickle: {e} (list entries, numbers and array elements, "
            f"each counted every time it is referred to), far more than a {len(raw):,}-byte "
            f"data file holds: its lists refer to one another, or it declares arrays it does "
            f"not contain. ganstack refuses it before expanding it; re-create the file from "
            f"the original dataset."
        ) from None
    except _Refused as e:
        raise DataError(
            f"{path} is not a plain data pickle ({e}); ganstack does not load pickles that "
            f"reference code. Re-create the file from the original dataset."
        ) from None
    except _Malformed as e:
        raise DataError(
            f"{path} is not a plain data pickle ({e}): it is damaged, or was not written "
            f"from a dataset. Re-create the file from the original dataset."
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        RecursionError,
        OverflowError,
        UnicodeDecodeError,
        struct_error,
    ) as e:
        raise DataError(f"{path} is truncated or corrupt: {e}") from None
    return obj


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def load_cifar10(folder: str | Path, split: str = "train") -> ImageDataset:
    """CIFAR-10, python version: ``data_batch_1..5`` (train) or ``test_batch`` in ``folder``."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 folder {folder} lacks {', '.join(missing)}; set data.path to the "
            f"extracted cifar-10-batches-py folder (the python version of CIFAR-10)"
        )
    images, labels = [], []
    for n in names:
        batch = safe_unpickle(folder / n)
        try:
            data, lab = _get(batch, "data"), _get(batch, "labels")
        except (KeyError, TypeError):
            raise DataError(f"{folder / n} is not a CIFAR-10 batch (no data/labels)") from None
        # Only an array and a flat list: a pickle can nest one shared list in another so that
        # a few hundred bytes stand for billions of items, which np.asarray would expand.
        if not isinstance(data, np.ndarray):
            raise DataError(
                f"{folder / n}: data should be a uint8 array (N, 3072), got a {type(data).__name__}"
            )
        if isinstance(lab, list) and not all(isinstance(v, int) for v in lab):
            raise DataError(f"{folder / n}: labels should be a list of integers")
        try:
            lab = np.asarray(lab, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{folder / n}: labels should be a list of integers") from None
        if lab.ndim != 1:
            raise DataError(f"{folder / n}: labels should be one integer per image")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(
                f"{folder / n}: data should be uint8 (N, 3072), got {data.dtype} {data.shape}"
            )
        if len(lab) != len(data):
            raise DataError(f"{folder / n}: {len(lab)} labels for {len(data)} images")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    class_names = None
    if (folder / "batches.meta").is_file():
        meta = safe_unpickle(folder / "batches.meta")
        try:
            class_names = [
                s.decode() if isinstance(s, bytes) else str(s) for s in _get(meta, "label_names")
            ]
        except (KeyError, TypeError):
            class_names = None
    return ImageDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        10,
        "cifar10",
        class_names,
    )


def load_svhn(path: str | Path) -> ImageDataset:
    """SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` (label 10 means digit 0)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    if path.is_dir():
        path = path / "train_32x32.mat"
    if not path.is_file():
        raise DataError(f"SVHN file {path} does not exist; set data.path to train_32x32.mat")
    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DataError(f"{path} is not a readable MATLAB file: {e}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} has no X/y arrays: is it an SVHN *_32x32.mat file?")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X should be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: {len(y)} labels for {x.shape[3]} images")
    y[y == 10] = 0
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return ImageDataset(images, torch.from_numpy(y), 10, "svhn")
