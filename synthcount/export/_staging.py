"""Writing an export: a workspace beside DEST, published by one rename when complete.

A reader of DEST sees nothing or the whole export, never part of one: every file is
written inside ``<dest>.tmp-<pid>-<random>/out``, fsynced, and that folder renamed to
DEST; ``DEST/export.json`` (:data:`MARKER`) records what it holds and marks a folder
that ``--overwrite`` may replace.

One export per DEST at a time: ``<dest>.lock`` (``fcntl.flock``, released by the
kernel even on kill -9) is held from the DEST check to the rename, so a second export
to the same DEST is refused naming the first (it could otherwise pass the check while
the first runs and then replace the first's finished export without ``--overwrite``).
Under that lock every ``<dest>.tmp-*`` workspace is debris of an export that died; it
is removed, after putting back an earlier export that a killed ``--overwrite`` had
moved aside and not yet replaced.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Iterator, List, Tuple

from .._io import TMP_TAG, fsync_dir, naming, tmp_name, write_json_atomic
from ..locks import FolderBusy, PathLock

__all__ = ["MARKER", "check_dest", "dest_lock", "put", "staging", "write_marker"]

MARKER = "export.json"  # written last into every export: what, from where, how many


def put(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` inside a staging folder (published whole later, so no
    per-file rename; fsynced by :func:`staging`). A failure names the file."""
    with naming(path), open(path, "wb") as f:
        f.write(data)


def check_dest(dest: str, dataset: str, overwrite: bool) -> None:
    """Refuse a DEST that exists (unless ``overwrite`` and it is an earlier export) or
    that is or holds the dataset.

    Raises
    ------
    ValueError
    """
    real, src = os.path.realpath(dest), os.path.realpath(dataset)
    if real == src or src.startswith(real + os.sep):
        raise ValueError(f"dest {dest!r} is (or holds) the dataset {dataset!r}; export elsewhere")
    if os.path.lexists(dest):
        if not overwrite:
            raise ValueError(f"dest {dest!r} exists; use --overwrite (overwrite=True) to replace an earlier export")
        if not os.path.isfile(os.path.join(dest, MARKER)):
            raise ValueError(f"dest {dest!r} exists and is not a synthcount export (no {MARKER}); "
                             f"refusing to replace it")
    parent = os.path.dirname(os.path.abspath(dest))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"dest {dest!r} cannot be created: {parent!r} is not a writable folder")


def _fsync_tree(root: str) -> None:
    """fsync every file and folder under ``root`` (deepest first), so that the rename
    that publishes it never exposes files whose data is not yet on disk."""
    for here, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(here, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(here)


@contextlib.contextmanager
def dest_lock(dest: str) -> Iterator[List[str]]:
    """Hold ``<dest>.lock`` (exclusive) and clear debris of dead exports to ``dest``.

    Yields what was cleared (one line each). Parent folders made for DEST are removed
    again if nothing was published.

    Raises
    ------
    FolderBusy
        Another export to ``dest`` is running (a ``ValueError``: exit 2 in the CLI).
    """
    dest = os.path.abspath(dest)
    made, d = [], os.path.dirname(dest)  # parent folders this export creates
    while not os.path.exists(d):
        made.append(d)
        d = os.path.dirname(d)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    lock = PathLock(dest + ".lock")
    try:
        if not lock.acquired:
            raise FolderBusy(f"dest {dest!r} is being exported by another synthcount run ({lock.holder()}); "
                             "wait for it to finish or choose another DEST")
        yield _clear_debris(dest)
    finally:
        lock.release()
        if not os.path.lexists(dest):  # nothing published: take back the folders made for it
            for d in made:
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def _clear_debris(dest: str) -> List[str]:
    """Remove the workspaces of exports to ``dest`` that died (the caller holds the
    DEST lock, so none is live); an earlier export moved aside into one (a killed
    ``--overwrite``) goes back to ``dest`` if nothing replaced it. Returns one line
    per thing done."""
    pattern = re.compile(re.escape(os.path.basename(dest) + TMP_TAG) + r"\d+-[0-9a-f]{8}")
    parent, notes = os.path.dirname(dest), []
    for name in sorted(os.listdir(parent)):
        work = os.path.join(parent, name)
        if not pattern.fullmatch(name) or not os.path.isdir(work) or os.path.islink(work):
            continue
        if not set(os.listdir(work)) <= {"out", "scratch", "old"}:
            continue  # not one of ours: leave it
        old = os.path.join(work, "old")
        if os.path.isdir(old) and not os.path.lexists(dest):
            os.rename(old, dest)
            fsync_dir(parent)
            notes.append(f"put back the earlier export {dest}, which an interrupted --overwrite had moved aside")
        shutil.rmtree(work)
        notes.append(f"removed {work}, left by an export to {dest} that did not finish")
    return notes


@contextlib.contextmanager
def staging(dest: str, overwrite: bool) -> Iterator[Tuple[str, str]]:
    """A workspace ``(out, scratch)`` beside ``dest``; ``out`` becomes ``dest`` on success.

    The workspace is ``<dest>.tmp-<pid>-<random>/``. On success ``out`` is fsynced and
    renamed to ``dest`` (an earlier export there, with ``overwrite``, is moved aside
    first and deleted after), and the workspace removed. On any error (Ctrl-C
    included) the workspace is removed and ``dest`` is left as it was. A process
    killed outright leaves only the ``.tmp-`` workspace: ``dest`` never exists
    half-written.
    """
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    work = tmp_name(os.path.abspath(dest))
    os.mkdir(work)
    out, scratch = os.path.join(work, "out"), os.path.join(work, "scratch")
    try:
        os.mkdir(out)
        os.mkdir(scratch)
        yield out, scratch
        _fsync_tree(out)
        old = None
        if os.path.lexists(dest):  # overwrite (checked by check_dest): move the old export aside
            old = os.path.join(work, "old")
            os.rename(dest, old)
        try:
            os.rename(out, dest)
        except OSError:
            if old is not None:
                os.rename(old, dest)  # put the earlier export back
            raise
        fsync_dir(parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_marker(out: str, info: dict) -> None:
    """The export's own record (written last, inside the staging folder)."""
    write_json_atomic(os.path.join(out, MARKER), info)
