"""Export a synthcount dataset to the formats other tools load.

``export_dataset(dataset, dest, format)`` with ``format`` one of ``FORMATS``:

- ``coco``: ``instances.json`` + images; masks as RLE, bbox ``[x, y, w, h]``, area =
  ``object_areas``, points (:mod:`synthcount.export.coco`);
- ``webdataset``: tar shards of png + mask.png + json (:mod:`synthcount.export.webdataset`);
- ``hf``: a Hugging Face ``datasets.Dataset`` saved with ``save_to_disk``
  (:mod:`synthcount.export.hf`);
- ``imagefolder``: one folder per count plus ``labels.csv`` (:mod:`synthcount.export.imagefolder`).

``coco`` needs pycocotools and ``hf`` needs datasets (the ``[export]`` extra);
``webdataset`` and ``imagefolder`` need nothing beyond the base install. Every export
is written into a workspace beside DEST and renamed into place when complete, with
``DEST/export.json`` recording what it holds: a failed or interrupted export leaves
DEST as it was. Coordinate conventions are in :mod:`synthcount.export._common`.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import time
from typing import Callable, Optional, Tuple

from .. import __version__
from ._common import (
    ExportError,
    ExportOptions,
    ExportResult,
    MissingExtraError,
    categories,
    check_checksums,
    density_map,
    items,
    require,
    selection,
)
from ._staging import MARKER, check_dest, dest_lock, staging, write_marker

__all__ = ["FORMATS", "MARKER", "ExportError", "ExportResult", "MissingExtraError", "density_map", "export_dataset"]

FORMATS = ("coco", "webdataset", "hf", "imagefolder")
_log = logging.getLogger(__name__)


def _check(ok: bool, name: str, rule: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def export_dataset(dataset: str, dest: str, format: str = "coco", *, shards: Optional[Tuple[int, int]] = None,
                   limit: Optional[int] = None, points: bool = False, density: Optional[float] = None,
                   image_format: str = "png", test_fraction: float = 0.0, split_seed: int = 0,
                   tar_size: int = 1000, overwrite: bool = False, progress: bool = False,
                   notes: Optional[Callable[[str], None]] = None) -> ExportResult:
    """Export images of a dataset to DEST in another format.

    Parameters
    ----------
    dataset : str
        Dataset folder or shard file.
    dest : str
        Folder to create (its parent folders are created as needed). An existing DEST is
        refused unless ``overwrite`` and it holds an earlier export (``export.json``).
    format : {"coco", "webdataset", "hf", "imagefolder"}
    shards : (int, int), optional
        Only shards ``I .. J-1`` (by shard index); all must be finished.
    limit : int >= 1, optional
        Only the first ``limit`` images (of the shard range, if given).
    points : bool
        Add one point per object (the visible-pixel centroid, x, y) to every image.
    density : float > 0, optional
        Also write a Gaussian density map per image (sigma in pixels) summing to N.
    image_format : {"png", "jpg"}
        PNG is lossless; JPEG quality 95. Masks are always PNG.
    test_fraction : float in [0, 1)
        Share of images marked "test" in the ``split`` field, by a hash of
        (``split_seed``, image index): the same images in every format and selection.
    tar_size : int >= 1
        Images per tar shard (webdataset).
    progress : bool
        A tqdm progress bar on stderr (off by default; the CLI turns it on).
    notes : callable, optional
        Called at once with each line of what was recovered before the export started
        (``ExportResult.recovered``), so that it is said even when the export then fails.

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        Bad arguments, not a dataset, or DEST refused; nothing is written.
    MissingExtraError
        The format's library is not installed (``pip install 'synthcount[export]'``).
    OSError, ExportError
        Reading a shard or writing DEST failed, or a shard's labels disagree with its
        pixels; DEST is left as it was.
    """
    from tqdm import tqdm

    from ..reader import open_dataset

    _check(format in FORMATS, "format", f"one of {FORMATS}", format)
    _check(image_format in ("png", "jpg"), "image_format", "png or jpg", image_format)
    _check(density is None or (isinstance(density, (int, float)) and math.isfinite(density) and density > 0),
           "density", "a Gaussian sigma in pixels > 0", density)
    _check(isinstance(test_fraction, (int, float)) and 0 <= test_fraction < 1, "test_fraction", "in [0, 1)",
           test_fraction)
    _check(isinstance(tar_size, int) and tar_size >= 1, "tar_size", "a positive integer", tar_size)
    writer = importlib.import_module(f".{format}", __name__)
    if writer.NEEDS:
        require(writer.NEEDS, format)  # before anything is written
    ds = open_dataset(dataset)
    try:
        start, stop = selection(ds, shards, limit)
        if stop <= start:
            raise ValueError(f"dataset {dataset!r} holds no images to export")
        check_dest(dest, dataset, overwrite)  # before anything is created
        with dest_lock(dest) as recovered:
            for line in recovered if notes is not None else ():
                notes(line)
            check_dest(dest, dataset, overwrite)  # again under the lock: another export may have finished meanwhile
            check_checksums(ds, start, stop)
            names = categories(ds)
            opts = ExportOptions(points=bool(points), density=None if density is None else float(density),
                                 image_format=image_format, test_fraction=float(test_fraction),
                                 split_seed=int(split_seed), tar_size=tar_size)
            res = ExportResult(dest=dest, format=format, num_images=stop - start,
                               first_index=int(ds[start]["index"]), end_index=int(ds[stop - 1]["index"]) + 1,
                               recovered=recovered)
            t0 = time.perf_counter()
            with tqdm(total=stop - start, unit="img", disable=not progress, dynamic_ncols=True,
                      desc=f"export {format}") as bar, staging(dest, overwrite) as (out, scratch):
                # Every writer: write(ds, items, out, scratch, opts, category names, bar) -> objects written.
                res.num_objects = writer.write(ds, items(ds, start, stop, opts), out, scratch, opts, names, bar)
                res.files = sorted(os.listdir(out)) + [MARKER]
                write_marker(out, {
                    "format": format, "synthcount_version": __version__, "dataset": os.path.abspath(ds.path),
                    "dataset_config": ds.config, "first_index": res.first_index, "end_index": res.end_index,
                    "num_images": res.num_images, "num_objects": res.num_objects, "num_categories": len(names),
                    "options": {"shards": list(shards) if shards else None, "limit": limit, "points": opts.points,
                                "density_sigma": opts.density, "image_format": image_format,
                                "test_fraction": opts.test_fraction, "split_seed": opts.split_seed,
                                "tar_size": tar_size if format == "webdataset" else None},
                })
    finally:
        ds.close()
    res.seconds = time.perf_counter() - t0
    res.images_per_second = res.num_images / res.seconds if res.seconds > 0 else 0.0
    _log.info("exported %d images (%d objects) of %s to %s as %s in %.1f s", res.num_images, res.num_objects,
              dataset, dest, format, res.seconds)
    return res
