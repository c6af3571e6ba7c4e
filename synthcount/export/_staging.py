"""Writing an export: a workspace beside DEST, published by one rename when complete.

A reader of DEST sees nothing or the whole export, never part of one: every file is
written inside ``<dest>.tmp-<pid>-<random>/out``, fsynced, and that folder renamed to
DEST; ``DEST/export.json`` (:data:`MARKER`) records what it holds and marks a folder
that ``--overwrite`` may replace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Tuple

from .._io import WriteError, fsync_dir, tmp_name, write_json_atomic

__all__ = ["MARKER", "check_dest", "put", "staging", "write_marker"]

MARKER = "export.json"  # written last into every export: what, from where, how many


def put(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` inside a staging folder (published whole later, so no
    per-file rename; fsynced by :func:`staging`). A failure names the file."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


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
