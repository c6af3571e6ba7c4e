"""Natural images with count labels: the Salient Object Subitizing (SOS) layout and
a plain image folder with a labels CSV.

SOS (Zhang et al.): ``ROOT/imgIdx.mat`` holds a struct array ``imgIdx`` with fields
``name`` (image path relative to ROOT), ``label`` (0, 1, 2, 3, 4 = "4+") and
``istest`` (1 = test). The released file is MATLAB v7.3 (HDF5: each field a column
of object references), read with h5py; older MAT versions are read with
``scipy.io.loadmat``.

CSV folder: ``FOLDER/labels.csv`` (or any CSV file given directly) with a header
naming a file column (``file``, ``name``, ``path`` or ``image``) and a label column
(``count`` or ``label``), optionally ``split`` (``train``/``test``) or ``istest``
(0/1); without one every image is for training. Paths are relative to the CSV's
folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

__all__ = ["NaturalSet", "load_sos", "load_labeled_csv", "load_natural", "read_imgidx"]

Item = Tuple[str, int]


@dataclass
class NaturalSet:
    """Natural images split into train and test: lists of (absolute path, label)."""

    train: List[Item] = field(default_factory=list)
    test: List[Item] = field(default_factory=list)
    source: str = ""
    kind: str = ""

    def summary(self) -> dict:
        def hist(items):
            v, c = np.unique([lab for _, lab in items], return_counts=True) if items else ([], [])
            return {int(a): int(b) for a, b in zip(v, c)}

        return {"source": self.source, "kind": self.kind, "train": len(self.train), "test": len(self.test),
                "train_labels": hist(self.train), "test_labels": hist(self.test)}


def _is_hdf5(path: str) -> bool:
    import h5py

    # MATLAB v7.3 files are HDF5 behind a 512-byte user block; h5py finds it there.
    return bool(h5py.is_hdf5(path))


def _h5_value(f, obj):
    """Decode one MATLAB v7.3 value: a char array -> str, numeric -> scalar."""
    import h5py

    if isinstance(obj, h5py.Reference):
        obj = f[obj]
    arr = np.asarray(obj[()])
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if cls == "char" or arr.dtype == np.uint16:
        return "".join(chr(int(c)) for c in arr.reshape(-1, order="F"))
    return arr.reshape(-1)[0].item() if arr.size else None


def _read_v73(path: str) -> List[Tuple[str, int, int]]:
    import h5py

    with h5py.File(path, "r") as f:
        if "imgIdx" not in f:
            found = sorted(k for k in f.keys() if not k.startswith("#"))
            raise ValueError(f"{path}: no 'imgIdx' variable (found {found})")
        g = f["imgIdx"]
        missing = [k for k in ("name", "label", "istest") if k not in g]
        if missing:
            raise ValueError(f"{path}: imgIdx lacks fields {missing}")
        cols = {}
        for k in ("name", "label", "istest"):
            d = g[k]
            refs = np.asarray(d[()]).reshape(-1)
            if d.dtype == h5py.ref_dtype or refs.dtype == object:
                cols[k] = [_h5_value(f, r) for r in refs]
            else:  # a scalar-struct field stored inline
                cols[k] = [_h5_value(f, d)]
        return [(str(n), int(lab), int(t)) for n, lab, t in zip(cols["name"], cols["label"], cols["istest"])]


def _read_v5(path: str) -> List[Tuple[str, int, int]]:
    from scipy.io import loadmat

    try:
        m = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for bad files
        raise ValueError(f"{path}: not a readable MAT file ({e})") from None
    if "imgIdx" not in m:
        raise ValueError(f"{path}: no 'imgIdx' variable (found {sorted(k for k in m if not k.startswith('__'))})")
    s = np.atleast_1d(m["imgIdx"])
    out = []
    for e in s:
        try:
            out.append((str(e.name), int(np.asarray(e.label).reshape(-1)[0]), int(np.asarray(e.istest).reshape(-1)[0])))
        except AttributeError as err:
            raise ValueError(f"{path}: imgIdx entries need fields name, label, istest ({err})") from None
    return out


def read_imgidx(path: str) -> List[Tuple[str, int, int]]:
    """Rows (name, label, istest) of an SOS ``imgIdx.mat`` (v7.3 via h5py, older via scipy)."""
    if not os.path.isfile(path):
        raise ValueError(f"SOS index not found: {path}")
    return _read_v73(path) if _is_hdf5(path) else _read_v5(path)


def load_sos(root: str) -> NaturalSet:
    """The SOS train/test split from ``root/imgIdx.mat`` (image paths made absolute)."""
    rows = read_imgidx(os.path.join(root, "imgIdx.mat"))
    out = NaturalSet(source=os.path.abspath(root), kind="sos")
    for name, label, istest in rows:
        if not 0 <= label <= 4:
            raise ValueError(f"{root}/imgIdx.mat: label must be in 0..4, got {label} for {name!r}")
        (out.test if istest else out.train).append((os.path.join(os.path.abspath(root), name), label))
    return out


def load_labeled_csv(path: str) -> NaturalSet:
    """Images listed in a CSV (see module docstring); ``path`` is the CSV or its folder."""
    csv_path = os.path.join(path, "labels.csv") if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise ValueError(f"labels CSV not found: {csv_path}")
    base = os.path.dirname(os.path.abspath(csv_path))
    out = NaturalSet(source=os.path.abspath(csv_path), kind="csv")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        fcol = next((cols[c] for c in ("file", "name", "path", "image") if c in cols), None)
        lcol = next((cols[c] for c in ("count", "label") if c in cols), None)
        if fcol is None or lcol is None:
            raise ValueError(f"{csv_path}: header must name a file column (file/name/path/image) and a "
                             f"count column (count/label), got {reader.fieldnames}")
        scol, tcol = cols.get("split"), cols.get("istest")
        for line, row in enumerate(reader, start=2):
            try:
                label = int(float(row[lcol]))
            except (TypeError, ValueError):
                raise ValueError(f"{csv_path}:{line}: count must be an integer, got {row[lcol]!r}") from None
            item = (os.path.join(base, row[fcol].strip()), label)
            if scol is not None:
                split = (row[scol] or "").strip().lower()
                if split not in ("train", "test"):
                    raise ValueError(f"{csv_path}:{line}: split must be 'train' or 'test', got {row[scol]!r}")
                is_test = split == "test"
            elif tcol is not None:
                is_test = bool(int(float(row[tcol])))
            else:
                is_test = False
            (out.test if is_test else out.train).append(item)
    return out


def load_natural(path: str) -> NaturalSet:
    """SOS folder (has ``imgIdx.mat``), a folder with ``labels.csv``, or a CSV file."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "imgIdx.mat")):
        ns = load_sos(path)
    elif os.path.isfile(path) and path.lower().endswith(".mat"):
        ns = load_sos(os.path.dirname(os.path.abspath(path)))
    elif os.path.isdir(path) or (os.path.isfile(path) and path.lower().endswith(".csv")):
        ns = load_labeled_csv(path)
    else:
        raise ValueError(f"natural images must be an SOS folder (imgIdx.mat) or a folder/CSV with labels, got {path!r}")
    if not ns.train:
        raise ValueError(f"natural images at {path!r}: no training images listed")
    return ns
