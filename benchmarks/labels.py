"""Label-map compression: what gzip (portable: every HDF5 tool reads it) costs against
lzf (h5py only), in bytes and in generation speed.

``python -m benchmarks.labels [--quick] [--out FILE.json] [--images N] [--repeats R]``

Two measurements on real label maps (161x161, paper preset, t = 0.5, built-in assets):

- ``filters``: writing the label maps of ``images`` composites to an in-memory HDF5
  file, one map per chunk, exactly as ``write_shard`` stores them, with no filter, lzf
  and gzip levels 1, 2, 3, 4 and 6; then reading them back. Images/s (medians) and
  stored bytes per map. This isolates the filter's cost from composition.
- ``generation``: ``generate_dataset`` (workers 1, images uncompressed) with
  ``label_compression`` lzf and gzip (at ``shards.LABEL_GZIP_LEVEL``), runs
  interleaved so that the machine's load hits both alike; images/s (medians).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time

import h5py
import numpy as np

from synthcount import preset, shards
from synthcount.config import DatasetConfig
from synthcount.generate import generate_dataset

from ._common import emit, format_table, machine, measure, parser, rate
from .floor import source_images

__all__ = ["main"]

FILTERS = {"none": {}, "lzf": {"compression": "lzf"},
           **{f"gzip-{lv}": {"compression": "gzip", "compression_opts": lv} for lv in (1, 2, 3, 4, 6)}}


def _filters(maps: np.ndarray, repeats: int) -> list:
    n, h, w = maps.shape
    rows = []
    for name, kw in FILTERS.items():
        state = {}

        def write():
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                d = f.create_dataset("label_maps", data=maps, chunks=(1, h, w), track_times=False, **kw)
                state["bytes"] = d.id.get_storage_size()
            state["buf"] = buf

        m = measure(write, repeats)

        def read():
            with h5py.File(state["buf"], "r") as f:
                f["label_maps"][()]

        r = measure(read, repeats)
        rows.append({"filter": name, "write_images_per_s": rate(n, m["wall_s"]),
                     "read_images_per_s": rate(n, r["wall_s"]), "bytes_per_map": round(state["bytes"] / n, 1),
                     "write_ms_per_1000": 1000 * m["wall_s"] / n * 1000})
    lzf = next(r for r in rows if r["filter"] == "lzf")
    for r in rows:
        r["bytes_vs_lzf"] = r["bytes_per_map"] / lzf["bytes_per_map"]
    return rows


def _generation(tmp: str, n: int, repeats: int) -> list:
    out = os.path.join(tmp, "gen")
    runs = {"lzf": [], "gzip": []}
    sizes = {}
    for _ in range(repeats):
        for comp in runs:  # interleaved: lzf, gzip, lzf, gzip, ...
            shutil.rmtree(out, ignore_errors=True)
            cfg = DatasetConfig(scene=preset("paper", size=(161, 161), min_visible=0.5), num_images=n,
                                shard_size=min(n, 500), label_compression=comp)
            t0 = time.perf_counter()
            generate_dataset(out, cfg)
            runs[comp].append(time.perf_counter() - t0)
            with h5py.File(os.path.join(out, shards.shard_name(0)), "r") as f:
                sizes[comp] = f["label_maps"].id.get_storage_size() / f["label_maps"].shape[0]
    shutil.rmtree(out, ignore_errors=True)
    rows = [{"label_compression": c, "gzip_level": shards.LABEL_GZIP_LEVEL if c == "gzip" else None,
             "images_per_s": rate(n, float(np.median(t))), "wall_runs_s": [round(v, 3) for v in t],
             "label_bytes_per_image": round(sizes[c], 1)} for c, t in runs.items()]
    rows[1]["cost_vs_lzf"] = 1 - rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return rows


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="composites (default 1000, quick 48)")
    p.add_argument("--repeats", type=int, default=None, help="runs per setting (default 5, quick 1)")
    a = p.parse_args(argv)
    mach = machine()
    n = a.images or (48 if a.quick else 1000)
    repeats = a.repeats or (1 if a.quick else 5)
    _, maps = source_images(n)
    filters = _filters(maps, repeats)
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        gen = _generation(tmp, n, repeats)
    result = {"benchmark": "labels", "quick": a.quick, "machine": mach,
              "settings": {"size": [161, 161], "images": n, "repeats": repeats, "preset": "paper", "t": 0.5,
                           "label_gzip_level": shards.LABEL_GZIP_LEVEL},
              "filters": filters, "generation": gen}
    emit(result, [format_table(filters, ["filter", "write_images_per_s", "read_images_per_s", "bytes_per_map",
                                         "bytes_vs_lzf", "write_ms_per_1000"],
                               f"label maps of {n} composites, one per chunk (medians of {repeats})"),
                  format_table(gen, ["label_compression", "gzip_level", "images_per_s", "label_bytes_per_image",
                                     "cost_vs_lzf"], "generate_dataset, workers 1, interleaved runs")], a.out)


if __name__ == "__main__":
    main()
