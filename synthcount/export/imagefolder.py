"""Image folder by count, as the Salient Object Subitizing tools (and torchvision's
``ImageFolder``) expect.

Layout of DEST::

    0/000000004.png             one folder per count present, named by the count,
    3/000000017.png             zero-padded to the width of the largest possible count
    3/000000017.density.npy     float32 (H, W), with --density (ImageFolder skips it)
    labels.csv                  file,count,cumulative_area,split (file relative to DEST)
    points.json                 {"3/000000017.png": [[x, y], ...]}, with --points

Padding keeps torchvision's class order (folder names sorted as text) equal to the
count order; its class index equals the count when every count from 0 up is present.
``labels.csv`` is the authoritative label and is what ``synthcount vae --natural``
reads.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from .._io import atomic_write, write_json_atomic
from ._common import density_map, encode_image, encode_npy
from ._staging import put

NEEDS = None


def write(ds, its, out: str, scratch: str, opts, names, bar) -> int:
    """Write the folders, ``labels.csv`` and ``points.json`` of the items ``its`` into ``out``."""
    h, w = ds.image_size
    width = len(str(int(ds.fields["object_areas"][1][0])))
    rows, points, made = [], {}, set()
    n_obj = 0
    for it in its:
        folder = f"{it.count:0{width}d}"
        if folder not in made:
            os.makedirs(os.path.join(out, folder), exist_ok=True)
            made.add(folder)
        stem = f"{folder}/{it.index:09d}"
        rel = f"{stem}.{opts.image_format}"
        put(os.path.join(out, rel), encode_image(it.image, opts.image_format))
        if opts.density is not None:
            put(os.path.join(out, f"{stem}.density.npy"), encode_npy(density_map(it.points, (h, w), opts.density)))
        if opts.points:
            points[rel] = it.points[~np.isnan(it.points).any(axis=1)].tolist()
        rows.append((rel, it.count, int(it.record["cumulative_area"]), it.split))
        n_obj += it.count
        bar.update(1)
    text = io.StringIO()
    wr = csv.writer(text, lineterminator="\n")
    wr.writerow(("file", "count", "cumulative_area", "split"))
    wr.writerows(rows)
    with atomic_write(os.path.join(out, "labels.csv"), "w") as f:
        f.write(text.getvalue())
    if opts.points:
        write_json_atomic(os.path.join(out, "points.json"), points)
    return n_obj
