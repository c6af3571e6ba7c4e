"""Who may write into a dataset folder, and which shard each writer is making.

Two kinds of lock, both ``fcntl.flock`` on small files (released by the kernel when
the process dies, kill -9 included, so a crash never leaves a stale lock; on NFS,
Linux maps flock to byte-range locks that every client sees):

- ``OUT_DIR/.lock``, the folder lock, held from planning to the end of a run. A
  whole-dataset run (and any ``overwrite``) takes it exclusively: a second run into
  the same folder waits or is refused naming the holder. ``--shards I:J`` pieces
  take it shared, so pieces started on several machines run side by side, and no
  whole run or overwrite can start under them.
- ``OUT_DIR/.locks/shard-XXXXX.lock``, one per shard, exclusive, taken by the process
  that makes the shard: two pieces never make the same shard, and temporary files
  of a shard whose lock is free can only be debris of a dead run.

Each lock file holds a line naming its last holder (pid, host, start time), which
is what a refused run prints.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from typing import Iterator, Optional

__all__ = ["FolderBusy", "FolderLock", "PathLock", "ShardLock", "hold_folder", "LOCK_FILE", "LOCKS_DIR"]

LOCK_FILE = ".lock"
LOCKS_DIR = ".locks"


class FolderBusy(ValueError):
    """Another run holds the folder lock (a usage error: exit 2 in the CLI)."""


def _holder_line() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"


def _read_holder(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        text = ""
    return text or "an unknown process"


def _lock_file(path: str, exclusive: bool, wait: bool) -> Optional[int]:
    """Open ``path`` (created if absent) and flock it; the fd, or None if busy and not
    ``wait``. Retries when the file was replaced or removed while we waited for it
    (its holder cleaned up), so the lock held is always on the file at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _write_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_line().encode(), 0)


class FolderLock:
    """The folder lock of ``folder`` (which must exist).

    Parameters
    ----------
    folder : str
    exclusive : bool
        True for a whole-dataset run or an overwrite, False for a ``--shards`` piece.
    wait : bool
        Block until the lock is free instead of raising ``FolderBusy``.
    """

    def __init__(self, folder: str, exclusive: bool, wait: bool = False):
        self.folder, self.exclusive = folder, exclusive
        self.path = os.path.join(folder, LOCK_FILE)
        fd = _lock_file(self.path, exclusive, wait)
        if fd is None:
            raise FolderBusy(f"{folder} is being written by another synthcount run ({_read_holder(self.path)}); "
                             "wait for it to finish (--wait) or choose another OUT_DIR")
        self.fd: Optional[int] = fd
        _write_holder(fd)

    def try_exclusive(self) -> bool:
        """Upgrade to exclusive if no one else holds the lock (for a cleanup that must be
        alone); False if someone does."""
        if self.exclusive:
            return True
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self.exclusive = True
        return True

    def release(self, remove: bool = False) -> None:
        """Unlock; with ``remove`` (exclusive holders only) delete the lock file first, so
        that an emptied folder can be removed."""
        if self.fd is None:
            return
        if remove and self.exclusive:
            with contextlib.suppress(OSError):
                os.remove(self.path)
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class PathLock:
    """An exclusive, non-blocking lock on the file ``path`` (created if absent);
    ``acquired`` is False if another process holds it, and ``holder()`` names that
    process. ``release`` deletes the file."""

    def __init__(self, path: str):
        self.path = path
        self.fd = _lock_file(path, exclusive=True, wait=False)
        self.acquired = self.fd is not None
        if self.fd is not None:
            _write_holder(self.fd)

    def holder(self) -> str:
        return _read_holder(self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        # Removed while held: a process that opened the old file re-checks the inode
        # after locking it (_lock_file) and starts again on a fresh one.
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "PathLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ShardLock(PathLock):
    """The lock of shard ``index`` in ``folder``; ``acquired`` is False if another
    process is making that shard right now."""

    def __init__(self, folder: str, name: str):
        d = os.path.join(folder, LOCKS_DIR)
        os.makedirs(d, exist_ok=True)
        super().__init__(os.path.join(d, name + ".lock"))


@contextlib.contextmanager
def hold_folder(folder: str, what: str) -> Iterator[None]:
    """One ``what`` (a training run, a demo) at a time in ``folder``: hold
    ``folder/.lock`` for the block, or raise ``FolderBusy`` naming the holder. The
    folder is made if absent, and removed again if the block left it empty (bad input)."""
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    lock = PathLock(os.path.join(folder, LOCK_FILE))
    try:
        if not lock.acquired:
            raise FolderBusy(f"{folder} is in use by another {what} ({lock.holder()}); wait for it to end or choose "
                             "another folder")
        yield
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty
