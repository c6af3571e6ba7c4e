"""Hugging Face ``datasets``: a ``Dataset`` with declared ``Features``, written with
``save_to_disk`` (read back with ``datasets.load_from_disk(DEST)``).

Columns:

- ``image``: ``Image()`` (PNG or JPEG bytes); ``label_map``: ``Image()``, an 8-bit grey
  PNG with value k at the pixels of object k (0 background);
- ``count``: ``ClassLabel`` with names "0" .. "M" (its value is the count);
- every other per-image field of the shard under its own name: scalars as ``Value``,
  fixed-size fields (``bg_crop``) as fixed-length sequences, per-object fields as
  sequences over the ``count`` present objects (``object_areas``, ``object_boxes``
  as y0, x0, y1, x1, ``object_centroids`` as y, x, ...), so the values are the shard's;
- ``objects``: the detection convention of the Hub: a sequence of ``{"bbox": [x, y, w, h],
  "category": ClassLabel over the object names (index = object id), "area": int}``;
- ``split``: "train" / "test"; ``points``: ``[[x, y], ...]`` with ``--points`` (NaN for
  an object hidden entirely); ``density``: ``Array2D((H, W), "float32")`` with ``--density``.
"""

from __future__ import annotations

import os

from .._io import TMP_TAG, WriteError
from ._common import ExportError, density_map, encode_image, per_object_fields, require

NEEDS = "datasets"


def _features(datasets, ds, names, opts):
    V, Seq = datasets.Value, datasets.Sequence
    m = int(ds.fields["object_areas"][1][0])
    per_object = set(per_object_fields(ds))
    cols = {"image": datasets.Image(), "label_map": datasets.Image(),
            "count": datasets.ClassLabel(names=[str(i) for i in range(m + 1)])}
    for key, (dt, shp) in ds.fields.items():
        if key in ("images", "label_maps", "count"):
            continue
        if key in per_object:
            # (M,) -> one value per object; (M, K) -> K values per object.
            cols[key] = Seq(V(dt.name)) if len(shp) == 1 else Seq(Seq(V(dt.name), length=shp[1]))
        elif shp == ():
            cols[key] = V(dt.name)
        else:
            # (K,) -> K values; (K, L) -> K rows of L values (exemplar_boxes (3, 4)).
            inner = V(dt.name)
            for d in reversed(shp):
                inner = Seq(inner, length=d)
            cols[key] = inner
    cols["objects"] = Seq({"bbox": Seq(V("float32"), length=4), "category": datasets.ClassLabel(names=names),
                           "area": V("int64")})
    cols["split"] = V("string")
    if opts.points:
        cols["points"] = Seq(Seq(V("float32"), length=2))
    if opts.density is not None:
        cols["density"] = datasets.Array2D(shape=tuple(ds.image_size), dtype="float32")
    return datasets.Features(cols)


def write(ds, its, out: str, scratch: str, opts, names, bar) -> int:
    """Build the ``Dataset`` from the items ``its`` (Arrow cache in ``scratch``) and
    ``save_to_disk`` it into ``out``; returns the number of objects."""
    datasets = require(NEEDS, "hf")
    features = _features(datasets, ds, names, opts)
    h, w = ds.image_size
    n_obj = [0]

    def rows():
        for it in its:
            row = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in it.record.items()}
            row.update(image={"bytes": encode_image(it.image, opts.image_format), "path": None},
                       label_map={"bytes": encode_image(it.label_map, "png"), "path": None},
                       count=it.count, split=it.split,
                       objects={"bbox": it.boxes_xywh.tolist(), "category": (it.category_ids - 1).tolist(),
                                "area": it.areas.tolist()})
            if opts.points:
                row["points"] = it.points.tolist()
            if opts.density is not None:
                row["density"] = density_map(it.points, (h, w), opts.density)
            n_obj[0] += it.count
            bar.update(1)
            yield row

    was_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # ours counts the images; theirs would print two more bars
    try:
        # An explicit fingerprint: datasets would otherwise hash (pickle) the generator and
        # the open shards; the Arrow cache lives in the export's scratch folder, never in ~/.cache.
        dset = datasets.Dataset.from_generator(rows, features=features, cache_dir=os.path.join(scratch, "hf-cache"),
                                               fingerprint=f"synthcount-export-{os.getpid()}-{id(its)}")
        dset.save_to_disk(out)
        del dset
    except Exception as e:  # noqa: BLE001 - datasets wraps every failure in its own exceptions
        raise _unwrapped(e, out) from None
    finally:
        if was_on:
            datasets.enable_progress_bars()
    return n_obj[0]


def _unwrapped(e: BaseException, out: str) -> BaseException:
    """What really stopped ``datasets`` (it wraps errors, a full disk included, in its
    ``DatasetGenerationError`` with a long traceback): ours (a shard that failed to
    read, an ExportError) as they are, an OS error as a WriteError naming DEST."""
    dest = os.path.dirname(out).rsplit(TMP_TAG, 1)[0]
    seen, cur = set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (WriteError, ExportError)) or type(cur).__module__.startswith("synthcount"):
            return cur
        if isinstance(cur, OSError):
            return WriteError(cur.errno, f"cannot write {dest}: {cur.strerror or ' '.join(str(cur).split())}")
        cur = cur.__cause__ or cur.__context__
    first = str(e).splitlines()[0] if str(e) else ""
    return ExportError(f"hf export to {dest} failed ({type(e).__name__}: {first[:200]})")
