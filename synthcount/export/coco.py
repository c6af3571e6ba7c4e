"""COCO instances: ``instances.json`` plus ``images/<index>.png`` (or ``.jpg``).

Layout of DEST::

    instances.json            info, licenses, categories, images, annotations
    images/000000017.png      global image index, 9 digits
    density/000000017.npy     float32 (H, W), with --density

- ``images[]``: ``id`` = global image index, ``file_name``, ``width``, ``height``,
  and the extra fields ``count``, ``cumulative_area``, ``split`` (and ``points``,
  ``[[x, y], ...]`` of the visible objects, with ``--points``; ``density_file`` with
  ``--density``).
- ``annotations[]``: one per object, ``id`` = index * 256 + k for object k (label k of
  the label map), ``category_id`` = object id + 1, ``segmentation`` = the visible-pixel
  mask as compressed RLE (pycocotools), ``area`` = ``object_areas`` (checked against
  the RLE while writing), ``bbox`` = ``[x, y, w, h]``, ``iscrowd`` 0, ``point`` = the
  visible-pixel centroid ``[x, y]`` (null for an object hidden entirely), ``label`` = k.
- ``categories[]``: every object of the asset pack, ``id`` = object id + 1, ``name`` =
  its name, ``supercategory`` "object".
"""

from __future__ import annotations

import os

import numpy as np

from .. import __version__
from .._io import write_json_atomic
from ._common import ExportError, density_map, encode_image, encode_npy, require
from ._staging import put

NEEDS = "pycocotools.mask"


def write(ds, its, out: str, scratch: str, opts, names, bar) -> int:
    """Write the COCO export of the items ``its`` into ``out``; returns the number of objects."""
    mask_util = require(NEEDS, "coco")
    h, w = ds.image_size
    os.mkdir(os.path.join(out, "images"))
    if opts.density is not None:
        os.mkdir(os.path.join(out, "density"))
    images, anns = [], []
    for it in its:
        stem = f"{it.index:09d}"
        entry = {"id": it.index, "file_name": f"images/{stem}.{opts.image_format}", "width": w, "height": h,
                 "count": it.count, "cumulative_area": int(it.record["cumulative_area"]), "split": it.split}
        put(os.path.join(out, entry["file_name"]), encode_image(it.image, opts.image_format))
        visible = it.points[~np.isnan(it.points).any(axis=1)]
        if opts.points:
            entry["points"] = visible.tolist()
        if opts.density is not None:
            entry["density_file"] = f"density/{stem}.npy"
            put(os.path.join(out, entry["density_file"]), encode_npy(density_map(it.points, (h, w), opts.density)))
        images.append(entry)
        if it.count:
            labels = np.arange(1, it.count + 1, dtype=np.uint8)
            masks = np.asfortranarray((it.label_map[:, :, None] == labels).astype(np.uint8))  # (H, W, N)
            rles = mask_util.encode(masks)
            got = mask_util.area(rles).astype(np.int64)
            if not np.array_equal(got, it.areas):
                raise ExportError(f"image {it.index}: label-map pixel counts {got.tolist()} differ from "
                                 f"object_areas {it.areas.tolist()}; run synthcount verify")
            for k in range(it.count):
                point = None if np.isnan(it.points[k]).any() else it.points[k].tolist()
                anns.append({"id": it.index * 256 + k + 1, "image_id": it.index,
                             "category_id": int(it.category_ids[k]),
                             "segmentation": {"size": [h, w], "counts": rles[k]["counts"].decode("ascii")},
                             "area": int(it.areas[k]), "bbox": it.boxes_xywh[k].tolist(), "iscrowd": 0,
                             "point": point, "label": k + 1})
        bar.update(1)
    doc = {
        "info": {"description": f"synthcount export of {os.path.abspath(ds.path)}", "version": __version__,
                 "synthcount_config": ds.config},
        "licenses": [],
        "categories": [{"id": c + 1, "name": name, "supercategory": "object"} for c, name in enumerate(names)],
        "images": images,
        "annotations": anns,
    }
    write_json_atomic(os.path.join(out, "instances.json"), doc, indent=None)
    return len(anns)
