"""Safe file writing shared by every writer in the project.

One rule for shards, packs, JSON, reports, checkpoints and figures: write a
temporary file in the destination's folder, flush and fsync it, rename it over the
destination, fsync the folder. A reader therefore sees the old file or the new one,
never half of one, even after a power cut; a failed write (disk full, Ctrl-C, a
killed process) removes its temporary file and leaves the destination untouched.

Temporary names are ``<name>.tmp-<pid>-<random>``: unique across processes and
across machines sharing a folder (two hosts can have the same pid).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
from typing import IO, Iterator, List

__all__ = ["atomic_write", "atomic_path", "naming", "tmp_name", "is_tmp_name", "write_json_atomic",
           "write_bytes_atomic", "sha256_file", "strict_json", "fsync_dir", "WriteError", "NotRegularFile",
           "check_regular", "open_regular", "read_text_bounded", "remove_stale_tmps"]

TMP_TAG = ".tmp-"


class WriteError(OSError):
    """Writing a file failed (disk full, permissions, I/O error); the message names the file."""


class NotRegularFile(OSError):
    """A path that must be a regular file is a FIFO, a device, a folder or missing: reading
    it could block forever (a FIFO) or never end (``/dev/zero``). The message names it."""


def check_regular(path: str, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed), raising :class:`NotRegularFile`
    naming it unless it is a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotRegularFile(f"{path}: missing ({what})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "a socket or special file")
        raise NotRegularFile(f"{path}: not a regular file but {kind} ({what})")
    return st


def open_regular(path: str, what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading only if it is a regular file. Opened without
    blocking (a FIFO swapped in between the check and the open cannot hang it) and
    checked again on the open descriptor."""
    check_regular(path, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path}: not a regular file ({what})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text_bounded(path: str, limit: int, what: str = "file") -> str:
    """The UTF-8 text of the regular file ``path``, refused (``ValueError`` naming it)
    when it holds more than ``limit`` bytes: small metadata files are never read
    without bound."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit:,} bytes, too large for a {what}")
    return data.decode("utf-8", errors="replace")


def remove_stale_tmps(path: str) -> List[str]:
    """Remove temporary files of ``path`` (``<path>.tmp-<pid>-<8 hex>``, the names
    :func:`tmp_name` makes) whose writer is gone: debris of a process killed outright.

    Only regular files of exactly that pattern are touched (never a foreign file), and
    only those whose pid is not a live process on this machine. Returns the removed paths.
    """
    folder, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(base + TMP_TAG) + r"(\d+)-[0-9a-f]{8}")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if not m:
            continue
        full = os.path.join(folder, name)
        if os.path.islink(full) or not os.path.isfile(full) or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.remove(full)
            removed.append(full)
    return removed


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process here (its temporary file may be in use)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # no such pid can exist
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def tmp_name(path: str) -> str:
    """A temporary name beside ``path`` that no other process or host will pick."""
    return f"{path}{TMP_TAG}{os.getpid()}-{os.urandom(4).hex()}"


def is_tmp_name(name: str) -> bool:
    """Whether a file name is one of ``tmp_name``'s."""
    return TMP_TAG in os.path.basename(name)


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(path: str, e: BaseException) -> str:
    what = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    return f"cannot write {path}: {what}"


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block (a full disk) into a ``WriteError`` naming
    ``path``, for writers that cannot go through :func:`atomic_write`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(e.errno, _describe(path, e)) from e


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` on success.

    Parameters
    ----------
    path : str
        Destination. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text (UTF-8).
    fsync : bool
        Flush the file and the folder to disk (on by default).

    Raises
    ------
    WriteError
        When the write, the flush or the rename fails (disk full, no permission, ...);
        the message names ``path`` and the cause. The temporary file is removed and
        ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_write("out.json", "w") as f:   # doctest: +SKIP
    ...     f.write("{}")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f


def fsync_path(path: str) -> None:
    """Flush a written file's data to the disk (before a rename publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, *, fsync: bool = True) -> Iterator[str]:
    """:func:`atomic_write` for writers that want a file name (h5py): yields a temporary
    path beside ``path``, which is fsynced (unless ``fsync`` is False) and renamed over
    ``path`` when the block ends without error, and removed otherwise (an ``OSError``
    becomes a ``WriteError`` naming ``path``)."""
    tmp = tmp_name(path)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, _describe(path, e)) from e
        raise
    if fsync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_bytes_atomic(path: str, data, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes-like) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None, so that the JSON is strict
    (Python writes bare ``NaN``/``Infinity`` otherwise, which other parsers reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        return strict_json(obj.item())
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array
        return strict_json(obj.tolist())
    return obj


def write_json_atomic(path: str, obj, *, indent: int = 1) -> None:
    """Write ``obj`` as strict JSON (NaN/inf become null) to ``path`` atomically."""
    text = json.dumps(strict_json(obj), indent=indent, allow_nan=False) + "\n"
    with atomic_write(path, "w") as f:
        f.write(text)


def sha256_file(path: str, block: int = 1 << 22) -> str:
    """Hex sha256 of a regular file's bytes, read in 4 MiB blocks (:class:`NotRegularFile`
    for anything else)."""
    h = hashlib.sha256()
    with open_regular(path, "to hash") as f:  # a FIFO or /dev/zero would hang or never end
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
