"""Encode images with a trained (or the untrained initial) VAE: latents file for probe and regression.

Inputs (``data``), detected from the path:

- a synthcount dataset folder (``manifest.json``) or one shard ``.h5``: every image,
  with its count, cumulative visible area and global image index;
- an SOS folder (``imgIdx.mat``), its ``.mat`` file, a folder with ``labels.csv`` or a
  CSV file (:func:`vae.sos.load_natural`): the chosen split (``train``, ``test`` or
  ``all``), with count labels, area unknown (-1), file names and the test flag;
- any other folder: its image files (sorted, recursively), count and area unknown (-1).

Latents file (format ``synthcount-latents`` version 1; read by :func:`vae.probe.load_latents`
and :func:`vae.regress.run_regression`)::

    mu               float32 (n, latent_dim)   posterior means (the representation)
    sigma            float32 (n, latent_dim)   posterior standard deviations
    count            int64 (n,)                objects per image (SOS: 4 means 4+; -1 unknown)
    cumulative_area  int64 (n,)                visible object pixels (-1 unknown)
    index            int64 (n,)                global image index / position in the list
    names            str (n,)                  image files (natural images only)
    istest           int8 (n,)                 SOS/CSV test flag (natural images only)
    field_area, mean_item_area, total_surface_area, item_surface_area, sparsity,
    coverage, total_perimeter, log_size, log_spacing   float (n,), optional
                                               the dataset's per-image visual properties,
                                               copied when its records hold them
    stimulus_set     int (n,), optional        control set of each image; attribute
                                               ``names`` (the sets' names) when known
    attrs: format, format_version, run_dir, checkpoint, checkpoint_path, epoch, dataset,
           data_kind, split, image_size, latent_dim, num_images, synthcount_version

Images are resized to the model's input size exactly as in training (no augmentation).
The model runs in eval mode, so BatchNorm uses its running statistics.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Union

import h5py
import numpy as np

from synthcount._io import atomic_path

__all__ = ["FORMAT", "open_images", "encode_model", "encode_dataset", "write_latents", "resolve_device",
           "IMAGE_EXTS", "PROPERTY_FIELDS", "record_properties"]

FORMAT = "synthcount-latents"
FORMAT_VERSION = 1
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# optional per-image record fields copied into a latents file when the dataset has them
# (the number-sense analyses: vae.dewind, vae.tuning, vae.compare)
PROPERTY_FIELDS = ("field_area", "mean_item_area", "total_surface_area", "item_surface_area", "sparsity", "coverage",
                   "total_perimeter", "log_size", "log_spacing", "stimulus_set")


def record_properties(opened, index: np.ndarray) -> Dict[str, np.ndarray]:
    """The fields of :data:`PROPERTY_FIELDS` that an opened synthcount dataset holds, at ``index``.

    Parameters
    ----------
    opened : synthcount.reader.Dataset
    index : numpy.ndarray of int
        Global image indices (a latents file's ``index``).

    Returns
    -------
    dict of numpy.ndarray
        One array per field present; ``stimulus_set_names`` (list of str) too when
        the first shard's ``stimulus_set`` dataset has a ``names`` attribute.
    """
    lab = opened.labels
    index = np.asarray(index, dtype=np.int64)
    out: Dict[str, np.ndarray] = {k: np.asarray(lab[k])[index] for k in PROPERTY_FIELDS if k in lab.dtype.names}
    if "stimulus_set" in out and getattr(opened, "files", None):
        with h5py.File(opened.files[0], "r") as f:
            if "stimulus_set" in f and "names" in f["stimulus_set"].attrs:
                out["stimulus_set_names"] = [v.decode() if isinstance(v, bytes) else str(v)
                                             for v in f["stimulus_set"].attrs["names"]]
    return out


def resolve_device(name: str) -> str:
    """:func:`vae.device.resolve_device` as a string ("cpu", "cuda"), kept for older callers
    that store it in JSON (``vae.demo``). New code: ``vae.device.resolve_device``, which
    returns a ``torch.device``."""
    from .device import resolve_device as _resolve

    return str(_resolve(name))


def _is_shards(path: str) -> bool:
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "manifest.json"))
    return path.lower().endswith((".h5", ".hdf5"))


def _is_natural(path: str) -> bool:
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "imgIdx.mat")) or os.path.isfile(os.path.join(path, "labels.csv"))
    return path.lower().endswith((".mat", ".csv"))


def open_images(data: str, image_size, *, split: str = "all", limit: Optional[int] = None):
    """A torch Dataset yielding ``(x (3, H, W) float in [0, 1], labels dict)`` for ``data``.

    Parameters
    ----------
    data : str
        Shard dataset, SOS / labelled folder or CSV, or a plain image folder.
    image_size : (int, int)
        The model's input size.
    split : {"all", "train", "test"}
        Natural images only (a shard dataset is always encoded whole).
    limit : int, optional
        Keep the first ``limit`` images.

    Returns
    -------
    dataset : torch.utils.data.Dataset
    info : dict
        ``kind`` ("shards", "sos", "csv", "folder"), ``names`` (list or None),
        ``istest`` (array or None).
    """
    from .data import NaturalImages, ShardImages

    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not os.path.exists(data):
        raise ValueError(f"dataset {data!r} does not exist")
    if _is_shards(data):
        import synthcount

        opened = synthcount.open_dataset(data)  # once: ShardImages shares it
        n = len(opened)
        idx = np.arange(n if limit is None else min(n, limit))
        return ShardImages(opened, idx, train=False, image_size=image_size), {"kind": "shards", "names": None,
                                                                            "istest": None}
    if _is_natural(data):
        from .sos import load_natural

        ns = load_natural(data)
        parts = {"train": [(it, 0) for it in ns.train], "test": [(it, 1) for it in ns.test]}
        rows = parts["train"] + parts["test"] if split == "all" else parts[split]
        if not rows:
            raise ValueError(f"dataset {data!r} lists no {split} images")
        rows = rows[:limit] if limit else rows
        items = [it for it, _ in rows]
        ds = NaturalImages(items, train=False, image_size=image_size)
        return ds, {"kind": ns.kind, "names": [p for p, _ in items],
                    "istest": np.array([t for _, t in rows], dtype=np.int8)}
    if os.path.isdir(data):
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(data) for f in fs if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise ValueError(f"dataset {data!r}: no manifest.json, imgIdx.mat, labels.csv or image files found")
        files = files[:limit] if limit else files
        ds = NaturalImages([(f, -1) for f in files], train=False, image_size=image_size)
        return ds, {"kind": "folder", "names": files, "istest": None}
    raise ValueError(f"dataset {data!r} must be a shard dataset (folder or .h5), an SOS folder / imgIdx.mat, "
                     "a labels CSV or an image folder")


def encode_model(model, dataset, *, batch_size: int = 256, device="cpu", workers: int = 0,
                 progress: bool = True, desc: str = "encode") -> Dict[str, np.ndarray]:
    """Run ``model.encode`` over a dataset of ``(x, labels)`` in order, on ``device``
    (a ``torch.device`` or its name).

    Returns
    -------
    dict of numpy.ndarray
        ``mu``, ``sigma`` float32 (n, d); ``count``, ``cumulative_area``, ``index`` int64 (n,).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    out = {k: [] for k in ("mu", "sigma", "count", "cumulative_area", "index")}
    with torch.no_grad(), tqdm(total=len(dataset), desc=desc, unit="img", file=sys.stderr, disable=not progress,
                               leave=False, dynamic_ncols=True) as bar:
        for x, lab in loader:
            mu, sigma = model.encode(x.to(device, non_blocking=True))
            # Copies, not views: a kept view pins the tensor's block in torch's CPU
            # allocator between the batch's large, freed ones, and memory then grew
            # by about 30 KB per image (1.3 GB over 35,000 images).
            out["mu"].append(mu.float().cpu().numpy().copy())
            out["sigma"].append(sigma.float().cpu().numpy().copy())
            for k in ("count", "cumulative_area", "index"):
                out[k].append(torch.as_tensor(lab[k]).numpy().astype(np.int64, copy=True))
            bar.update(x.shape[0])
    d = model.cfg.latent_dim if hasattr(model, "cfg") else 0
    return {k: (np.concatenate(v) if v else np.zeros((0, d) if k in ("mu", "sigma") else 0))
            .astype(np.float32 if k in ("mu", "sigma") else np.int64) for k, v in out.items()}


def write_latents(out_h5: str, arrays: Dict[str, np.ndarray], attrs: dict, *, names=None, istest=None) -> None:
    """Write a latents file atomically (temporary name, fsync, then rename; a failed
    write leaves an earlier file as it was and raises ``WriteError`` naming it)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_h5)) or ".", exist_ok=True)
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        for k in ("mu", "sigma"):
            f.create_dataset(k, data=arrays[k].astype(np.float32))
        for k in ("count", "cumulative_area", "index"):
            f.create_dataset(k, data=arrays[k].astype(np.int64))
        if names is not None:
            f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        if istest is not None:
            f.create_dataset("istest", data=np.asarray(istest, dtype=np.int8))
        for k in PROPERTY_FIELDS:  # optional visual properties (record_properties)
            if k in arrays:
                f.create_dataset(k, data=np.asarray(arrays[k]))
        if "stimulus_set" in arrays and arrays.get("stimulus_set_names"):
            f["stimulus_set"].attrs["names"] = np.array([str(v) for v in arrays["stimulus_set_names"]],
                                                        dtype=h5py.string_dtype())
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v


def encode_dataset(run_dir: str, data: str, out_h5: str, which: Union[str, int] = "last", *, split: str = "all",
                   batch_size: int = 256, device: str = "auto", limit: Optional[int] = None, workers: int = 0,
                   progress: bool = True) -> dict:
    """Encode every image of ``data`` with the run's checkpoint ``which`` and write ``out_h5``.

    Parameters
    ----------
    run_dir : str
        Training run folder (or a checkpoint file).
    data : str
        See :func:`open_images`.
    out_h5 : str
        Output latents file (replaced if it exists).
    which : "last", "init" or int
        ``"init"`` = the untrained initial weights (the control).
    split : {"all", "train", "test"}
        For natural images.
    batch_size : int >= 1
    device : {"auto", "cpu", "cuda"}
    limit : int, optional
        Only the first ``limit`` images.
    workers : int
        DataLoader worker processes.

    Returns
    -------
    dict
        ``num_images``, ``latent_dim``, ``checkpoint``, ``epoch``, ``out``, ``data_kind``.
    """
    from .checkpoint import load_model
    from .device import resolve_device as _resolve

    dev = _resolve(device)
    model, cfg, meta = load_model(run_dir, which, map_location="cpu")
    ds, info = open_images(data, cfg.image_size, split=split, limit=limit)
    arr = encode_model(model, ds, batch_size=batch_size, device=dev, workers=workers, progress=progress,
                       desc=f"encode ({which})")
    if info["kind"] == "shards":
        arr.update(record_properties(ds.ds, arr["index"]))
    import synthcount

    attrs = {"run_dir": os.path.abspath(run_dir), "checkpoint": str(which), "checkpoint_path": meta["path"],
             "epoch": int(meta["epoch"]), "dataset": os.path.abspath(data), "data_kind": info["kind"],
             "split": split if info["kind"] not in ("shards", "folder") else "all",
             "image_size": list(cfg.image_size), "latent_dim": int(cfg.latent_dim), "num_images": int(len(ds)),
             "synthcount_version": synthcount.__version__}
    write_latents(out_h5, arr, attrs, names=info["names"], istest=info["istest"])
    return {"num_images": int(len(ds)), "latent_dim": int(cfg.latent_dim), "checkpoint": str(which),
            "epoch": int(meta["epoch"]), "out": os.path.abspath(out_h5), "data_kind": info["kind"]}
