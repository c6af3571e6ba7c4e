"""WebDataset: tar shards ``shard-000000.tar``, ... of ``tar_size`` images each.

Each image is one sample, key = its global index (9 digits):

- ``{key}.png`` (or ``.jpg``): the RGB image;
- ``{key}.mask.png``: the label map as an 8-bit grey PNG, value k at the pixels of
  object k (0 background; a label image, not meant for viewing);
- ``{key}.json``: every per-image record field of the shard (per-object fields cut to
  the ``count`` present objects; NaN as null), plus ``split``, ``object_names`` (the
  category name of each object) and, with ``--points``, ``points`` (``[[x, y], ...]``,
  null for an object hidden entirely);
- ``{key}.density.npy``: float32 (H, W) density map, with ``--density``.

Written with Python's ``tarfile`` (no library needed): members in sample order, with
mtime 0 and no owner names, so the same export gives byte-identical tar files. Read
back with ``webdataset.WebDataset("DEST/shard-{000000..000002}.tar")``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile

from .._io import atomic_write, strict_json
from ._common import density_map, encode_image, encode_npy, object_names_of

NEEDS = None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write(ds, its, out: str, scratch: str, opts, names, bar) -> int:
    """Write the tar shards of the items ``its`` into ``out``; returns the number of objects."""
    h, w = ds.image_size
    its = iter(its)
    n_obj, k = 0, 0
    while True:
        chunk = itertools.islice(its, opts.tar_size)
        first = next(chunk, None)
        if first is None:
            break
        with atomic_write(os.path.join(out, f"shard-{k:06d}.tar"), "wb") as f, \
                tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for it in itertools.chain([first], chunk):
                key = f"{it.index:09d}"
                meta = dict(it.record, split=it.split, object_names=object_names_of(it, names))
                if opts.points:
                    meta["points"] = it.points
                _add(tar, f"{key}.{opts.image_format}", encode_image(it.image, opts.image_format))
                _add(tar, f"{key}.mask.png", encode_image(it.label_map, "png"))
                _add(tar, f"{key}.json", json.dumps(strict_json(meta), allow_nan=False).encode())
                if opts.density is not None:
                    _add(tar, f"{key}.density.npy", encode_npy(density_map(it.points, (h, w), opts.density)))
                n_obj += it.count
                bar.update(1)
        k += 1
    return n_obj
