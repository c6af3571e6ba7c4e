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
  visible-pixel centroid ``[x, y]`` (null for an object hidden entirely), ``label`` = k,
  ``role`` "target" or "distractor" and, for targets, ``exemplar`` (true for the
  up to 3 targets whose boxes are the image's ``exemplar_boxes``). Distractors
  (labels N+1..N+K, ``--distractors``) are annotated like targets; ``count`` counts the
  targets only.
- ``images[]`` also carry ``num_distractors`` and ``exemplar_boxes`` (``[[x, y, w, h],
  ...]``, FSC-147 style) when the dataset has them.
- ``categories[]``: every object of the asset pack, ``id`` = object id + 1, ``name`` =
  its name, ``supercategory`` "object"; when distractors come from their own pack,
  its objects follow with ``supercategory`` "distractor".
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from .. import __version__
from .._io import atomic_write, naming, strict_json
from ._common import ExportError, density_map, distractors_of, encode_image, encode_npy, exemplars_of, require
from ._staging import put

NEEDS = "pycocotools.mask"


def write(ds, its, out: str, scratch: str, opts, names, bar) -> int:
    """Write the COCO export of the items ``its`` into ``out``; returns the number of objects."""
    mask_util = require(NEEDS, "coco")
    os.mkdir(os.path.join(out, "images"))
    if opts.density is not None:
        os.mkdir(os.path.join(out, "density"))
    own = ds.distractor_object_names if "num_distractors" in ds.fields else None
    separate = own is not None and list(own) != list(ds.object_names or [])
    offset = len(names) if separate else 0  # category ids of a separate distractor pack follow the targets'
    head = {
        "info": {"description": f"synthcount export of {os.path.abspath(ds.path)}", "version": __version__,
                 "synthcount_config": ds.config},
        "licenses": [],
        "categories": [{"id": c + 1, "name": name, "supercategory": "object"} for c, name in enumerate(names)]
        + ([{"id": offset + c + 1, "name": name, "supercategory": "distractor"} for c, name in enumerate(own)]
           if separate else []),
    }
    # The image and annotation entries go to two scratch files as they are made, and
    # instances.json is assembled from them at the end: memory stays flat however many
    # images (a list of every entry took about 9 KB per image, 9 GB for a million).
    images = _Entries(os.path.join(scratch, "images.json-part"))
    anns = _Entries(os.path.join(scratch, "annotations.json-part"))
    try:
        n_anns = _entries(ds, its, out, opts, mask_util, offset, images, anns, bar)
    finally:
        images.close()
        anns.close()
    # The same text as json.dumps of the whole document (indent None): the head's
    # fields, then each list's entries joined by ", ".
    text = json.dumps(strict_json(head), allow_nan=False)
    with atomic_write(os.path.join(out, "instances.json"), "w") as f:
        f.write(text[:-1] + ', "images": [')
        images.copy_to(f)
        f.write('], "annotations": [')
        anns.copy_to(f)
        f.write("]}\n")
    return n_anns


def _entries(ds, its, out, opts, mask_util, offset, images, anns, bar) -> int:
    """Write every image file and add the image and annotation entries; the number of annotations."""
    h, w = ds.image_size
    n_anns = 0
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
        full = it.full or it.record
        k_d, d_areas, d_boxes, d_points, d_ids = distractors_of(full) if "num_distractors" in full \
            else (0, np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros((0, 2)), np.zeros(0, np.int64))
        exemplars = exemplars_of(full)
        if "num_distractors" in full:
            entry["num_distractors"] = k_d
        if "exemplar_boxes" in full:
            entry["exemplar_boxes"] = exemplars.tolist()
        images.add(entry)
        total = it.count + k_d
        if total:
            labels = np.arange(1, total + 1, dtype=np.uint8)
            masks = np.asfortranarray((it.label_map[:, :, None] == labels).astype(np.uint8))  # (H, W, N + K)
            rles = mask_util.encode(masks)
            got = mask_util.area(rles).astype(np.int64)
            want = np.concatenate([it.areas, d_areas])
            if not np.array_equal(got, want):
                raise ExportError(f"image {it.index}: label-map pixel counts {got.tolist()} differ from "
                                 f"object_areas {want.tolist()}; run synthcount verify")
            ex = {tuple(b) for b in exemplars.tolist()}
            for k in range(total):
                target = k < it.count
                j = k - it.count  # distractor j
                pts, box = (it.points[k], it.boxes_xywh[k]) if target else (d_points[j], d_boxes[j])
                cat = int(it.category_ids[k]) if target else int(d_ids[j]) + 1 + offset
                ann = {"id": it.index * 256 + k + 1, "image_id": it.index, "category_id": cat,
                       "segmentation": {"size": [h, w], "counts": rles[k]["counts"].decode("ascii")},
                       "area": int(want[k]), "bbox": box.tolist(), "iscrowd": 0,
                       "point": None if np.isnan(pts).any() else pts.tolist(), "label": k + 1,
                       "role": "target" if target else "distractor"}
                if target:
                    ann["exemplar"] = tuple(box.tolist()) in ex and int(want[k]) > 0
                anns.add(ann)
                n_anns += 1
        bar.update(1)
    return n_anns


class _Entries:
    """JSON entries of one list, appended to a scratch file as ``e1, e2, ...``."""

    def __init__(self, path: str):
        self.path, self.n = path, 0
        self._f = open(path, "w", encoding="utf-8")

    def add(self, entry: dict) -> None:
        with naming(self.path):  # a full disk names the file, as every writer does
            self._f.write((", " if self.n else "") + json.dumps(strict_json(entry), allow_nan=False))
        self.n += 1

    def close(self) -> None:
        with naming(self.path):
            self._f.close()

    def copy_to(self, f) -> None:
        with open(self.path, encoding="utf-8") as src:
            shutil.copyfileobj(src, f, 1 << 20)
