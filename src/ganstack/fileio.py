"""Crash-safe file writes and hashing (temporary file, fsync, rename); guarded reads of files
that may not be what their name says; the lock that keeps one writer per run directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("ganstack")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp", fsync: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` for a writer that needs a file name (safetensors,
    NumPy, Pillow): when the block ends without an error the file is fsynced and renamed over
    ``path`` (and the folder fsynced); otherwise it is removed. The temporary is named
    ``.NAME.XXXXXXXX<suffix>`` (hidden) and has the mode a plain ``open`` would give it.

    ``suffix``: for writers that add an extension of their own (``np.savez`` appends
    ``.npz`` to a name without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        # After the writer: some replace the file they are given (safetensors does).
        os.chmod(tmp, file_mode())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def install_folder(tmp: Path, dest: Path, replace: bool, keep: str = "folder") -> None:
    """Put the finished folder ``tmp`` (written beside ``dest``) at ``dest`` by renaming it: an
    empty ``dest`` is removed first; with ``replace`` the folder at ``dest`` is moved aside,
    deleted once ``tmp`` is in place, and put back if the rename fails. The caller checks that
    ``dest`` may be replaced. ``keep``: the name the old folder has while it is moved aside."""
    import shutil

    fsync_dir(tmp)
    old = None
    if replace:
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
        os.replace(dest, old / keep)
    elif dest.is_dir():
        dest.rmdir()  # empty (checked); a file put there meanwhile makes this fail
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old / keep, dest)
            old.rmdir()
        raise
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask.
    (``mkstemp`` creates temporary files 0o600; renamed into place they would stay so.)"""
    return 0o666 & ~umask()


def umask() -> int:
    """This process's umask (without changing it, where ``/proc`` tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_GUARD:  # elsewhere: read it by setting it (and put it back at once)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_GUARD = threading.Lock()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk, where the platform can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading files a stranger may have planted: regular files only, never more than a limit
# --------------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "special file"


def read_regular(
    path: Path, limit: int | None, error: type[Exception] = OSError, what: str = "file"
) -> bytes:
    """The bytes of ``path``, which must be a regular file (a symlink to one is fine) of at
    most ``limit`` bytes; otherwise ``error`` with a message that says why.

    A FIFO, a device (``/dev/zero``), a socket or a folder is refused without reading from it:
    the file is opened non-blocking (opening a FIFO would otherwise wait for a writer forever)
    and checked with ``fstat`` on the open descriptor, so it cannot be swapped in between.
    A missing file raises ``FileNotFoundError`` whatever ``error`` is.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(
                f"{what} {path} is not a regular file (it is a {_kind(st.st_mode)}); "
                f"refusing to read it"
            )
        if limit is not None and st.st_size > limit:
            raise error(
                f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} such "
                f"a file can hold; it is not a file ganstack wrote, or it is damaged"
            )
        chunks, total = [], 0
        while True:  # read to the end (the file may have grown since fstat), up to the limit
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if limit is not None and total > limit:
                raise error(
                    f"{what} {path} is more than {limit:,} bytes; it is not a file "
                    f"ganstack wrote, or it is damaged"
                )
        return b"".join(chunks)
    finally:
        os.close(fd)


def memory_budget() -> int:
    """Half the machine's physical memory, in bytes: the most one file or request may ask
    ganstack to hold at once."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30


def check_npz(path: Path, error: type[Exception], budget: int | None = None) -> None:
    """Refuse an ``.npz`` whose arrays would not fit in ``budget`` bytes (default
    :func:`memory_budget`), before numpy allocates them.

    An ``.npy`` header declares its array's shape: a few hundred bytes can ask for gigabytes,
    which ``np.load`` would allocate on first access. Only the headers are read here; a lone
    ``.npy`` (which ``np.load`` also accepts) is checked the same way. Any other file is left
    to ``np.load`` (and its error) to report."""
    import zipfile

    import numpy as np

    budget = memory_budget() if budget is None else budget
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise error(
            f"{path} is not a regular file (it is a {_kind(st.st_mode)}); refusing to read it"
        )
    total = 0

    def add(fh: Any, name: str) -> None:
        nonlocal total
        try:
            major, _ = np.lib.format.read_magic(fh)
            # Version 3 differs from 2 only in the header's text encoding.
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(fh)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise error(
                f"{path}: the header of {name} is unreadable ({e}); is the file corrupt?"
            ) from None
        count = 1
        for d in shape:
            count *= int(d)
        total += count * dtype.itemsize
        if total > budget:
            raise error(
                f"{path}: its arrays would take {total:,} bytes or more (the header of "
                f"{name} asks for shape {tuple(shape)} of {dtype}), more than the "
                f"{budget:,} bytes allowed; it is not a file ganstack can hold in memory"
            )

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        with open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                fh.seek(0)
                add(fh, Path(path).name)
        return
    with archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                with archive.open(info) as member:
                    add(member, info.filename)


# --------------------------------------------------------------------------------------------
# An exclusive lock on a folder (one writer per run directory)
# --------------------------------------------------------------------------------------------

LOCK_NAME = ".lock"
# Lock files this process holds: real path -> [descriptor, holders]. A second Trainer on the
# same folder in the same process shares the lock (the lock guards against other processes).
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _holder_text(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host, since = int(info["pid"]), str(info["host"])[:100], str(info["since"])[:40]
    except Exception:  # being written, or not ours: say nothing we cannot vouch for
        return "another process"
    return f"process {pid} on host {host!r}, since {since}"


def lock_folder(folder: Path, purpose: str) -> str | None:
    """Take the exclusive lock on ``folder`` (``flock`` on ``folder/.lock``); returns a key for
    :func:`unlock_folder`, or None where the file system cannot lock (a warning is logged).

    The lock belongs to the open file, so it ends with the process however it ends (a SIGKILL
    included): a lock is never stale, and the file left behind means nothing. The file records
    who holds it, for the error another process gets: :class:`~ganstack.errors.RunLockedError`.
    """
    from ganstack.errors import RunLockedError

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = os.path.realpath(path)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return key
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags | os.O_NONBLOCK, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a symlink planted as the lock file
                raise RunLockedError(
                    f"{path} is a symbolic link, not ganstack's lock file; remove it"
                ) from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RunLockedError(
                    f"{path} is a {_kind(st.st_mode)}, not ganstack's lock file; remove it"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(
                    f"{folder} is in use: {_holder_text(fd)} is writing to it ({purpose} holds "
                    f"{path}). Wait for it to finish or stop it, or choose another --out"
                ) from None
            except OSError as e:  # e.g. a network file system without flock
                log.warning(
                    "cannot lock %s (%s): make sure no other process writes to %s",
                    path,
                    e.strerror,
                    folder,
                )
                os.close(fd)
                return None
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "purpose": purpose,
                "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        _HELD[key] = [fd, 1]
        return key


def unlock_folder(key: str | None) -> None:
    """Release one hold of a lock taken by :func:`lock_folder` (the last one unlocks)."""
    if key is None:
        return
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.ftruncate(held[0], 0)
            os.close(held[0])  # closing the file releases the lock


@contextlib.contextmanager
def flock_file(path: Path, shared: bool, on_wait: Any = None) -> Iterator[None]:
    """Hold ``flock`` on ``path`` for the block: shared (readers) or exclusive (the writer).

    A writer creates the file; a reader that cannot open it (it does not exist yet, or the
    folder is read-only) goes on without it. ``on_wait``: called (with no argument) once
    before waiting, when another process holds the lock.
    """
    flags = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | (os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT), 0o666)
    except OSError:
        if not shared:
            raise
        yield
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            with contextlib.suppress(OSError):  # a file system without flock: no lock
                try:
                    fcntl.flock(fd, kind | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait()
                    fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)
