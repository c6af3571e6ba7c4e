"""The floor: how fast this machine merely stores 161x161x3 images, and generation against it.

``python -m benchmarks.floor [--quick] [--out FILE.json] [--repeats R]``

Source images are real synthcount composites (paper preset, t = 0.5), so that lzf
meets realistic content. Floors (images/s, medians over repeats):

- ``copy_warm``: copy each image into a preallocated (n, 161, 161, 3) uint8 array
  already touched once (as synthcount's reused shard buffers are);
- ``copy_fresh``: the same into a fresh ``np.empty`` array (pays first-touch page faults);
- ``hdf5_none`` / ``hdf5_lzf`` / ``hdf5_gzip``: write the images to a new HDF5 file
  with one image per chunk, in shards of 250 images, exactly as ``write_shard``
  stores them (``create_dataset(data=..., chunks=(1, H, W, 3))``), file close included;
- ``hdf5_none_with_maps`` / ``hdf5_lzf_with_maps``: the same plus the uint8 label
  maps with lzf (synthcount's default for them), i.e. everything pixel-sized a
  shard holds;
- ``sha256``: hashing the written uncompressed file (``write_shard`` hashes every shard).

Then synthcount ``generate_dataset`` (workers 1, 161x161, t = 1.0 and 0.5, images
uncompressed and lzf) in the same run, as a fraction of the matching HDF5 floor.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Dict

import h5py
import numpy as np

from synthcount import preset
from synthcount.assets import builtin_backgrounds, builtin_objects
from synthcount.compose import Composer, new_records

from ._common import emit, format_table, machine, measure, parser, rate
from .generate import run_synthcount

__all__ = ["source_images", "main"]

_COMP = {"none": None, "lzf": "lzf", "gzip": "gzip"}


def source_images(k: int, size: int = 161) -> tuple:
    """``k`` real composites (paper preset, t = 0.5): images (k, H, W, 3) and label maps (k, H, W), uint8."""
    comp = Composer(preset("paper", size=(size, size), min_visible=0.5), builtin_objects(), builtin_backgrounds())
    imgs, maps = np.empty((k, size, size, 3), np.uint8), np.empty((k, size, size), np.uint8)
    recs = new_records(comp.record_spec, k)
    for i in range(k):
        comp.compose_into(0, i, imgs, maps, recs, i)
    return imgs, maps


def _tile(src: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(src))
    return np.ascontiguousarray(np.concatenate([src] * reps)[:n])


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="runs per floor (default 5, quick 1)")
    a = p.parse_args(argv)
    mach = machine()  # before the work: the load average says how busy the machine was
    repeats = a.repeats or (1 if a.quick else 5)
    n, shard = (96, 24) if a.quick else (2000, 250)
    src_imgs, src_maps = source_images(16 if a.quick else 64)
    imgs, maps = _tile(src_imgs, n), _tile(src_maps, n)
    H, W = imgs.shape[1:3]
    floors: Dict[str, Dict[str, object]] = {}

    def put(name: str, m: dict, note: str) -> None:
        floors[name] = {"floor": name, "images_per_s": rate(n, m["wall_s"]), "cpu_images_per_s": rate(n, m["cpu_s"]),
                        "wall_runs_s": m["wall_runs"], "note": note}

    warm = np.empty_like(imgs)
    warm.fill(0)

    def copy_into(dst):
        for i in range(n):
            dst[i] = imgs[i]

    put("copy_warm", measure(lambda: copy_into(warm), repeats), "copy into a reused preallocated array")
    put("copy_fresh", measure(lambda: copy_into(np.empty_like(imgs)), repeats),
        "copy into a fresh np.empty array (first-touch page faults)")

    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        path = os.path.join(tmp, "f.h5")

        def write(comp: str, with_maps: bool):
            for s in range(0, n, shard):
                with h5py.File(path, "w") as f:
                    f.create_dataset("images", data=imgs[s:s + shard], chunks=(1, H, W, 3), compression=_COMP[comp],
                                     track_times=False)
                    if with_maps:
                        f.create_dataset("label_maps", data=maps[s:s + shard], chunks=(1, H, W), compression="lzf",
                                         track_times=False)
            return os.path.getsize(path)

        sizes = {}
        for comp in ("none", "lzf", "gzip"):
            m = measure(lambda: write(comp, False), repeats)
            put(f"hdf5_{comp}", m, f"HDF5 write, images {comp}, one image per chunk, {shard} per file")
            sizes[comp] = m["last"] / min(shard, n)
            floors[f"hdf5_{comp}"]["bytes_per_image"] = round(sizes[comp])
        for comp in ("none", "lzf"):
            put(f"hdf5_{comp}_with_maps", measure(lambda: write(comp, True), repeats),
                f"HDF5 write, images {comp} + label maps lzf")
        write("none", False)

        def digest():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            return h.hexdigest()

        m = measure(digest, repeats)
        per_file = min(shard, n)
        floors["sha256"] = {"floor": "sha256", "images_per_s": rate(per_file, m["wall_s"]),
                            "cpu_images_per_s": rate(per_file, m["cpu_s"]), "wall_runs_s": m["wall_runs"],
                            "note": "sha256 of an uncompressed shard file (write_shard hashes every shard)"}

        gen_n, gen_shard = (48, 12) if a.quick else (2000, 250)
        gen = [run_synthcount(tmp, size=161, t=t, compression=comp, workers=1, num_images=gen_n,
                              shard_size=gen_shard, repeats=1 if a.quick else 3)
               for t in (1.0, 0.5) for comp in ("none", "lzf")]
    fractions = []
    for g in gen:
        fl = floors[f"hdf5_{g['compression']}"]
        flm = floors[f"hdf5_{g['compression']}_with_maps"]
        fractions.append({"t": g["t"], "compression": g["compression"], "synthcount_images_per_s": g["images_per_s"],
                          "floor_images_per_s": fl["images_per_s"],
                          "fraction_of_floor": rate(g["images_per_s"], fl["images_per_s"]),
                          "floor_slowdown": rate(fl["images_per_s"], g["images_per_s"]),
                          "fraction_of_floor_with_maps": rate(g["images_per_s"], flm["images_per_s"]),
                          "fraction_of_floor_cpu": rate(g["cpu_images_per_s"], fl["cpu_images_per_s"])})
    res = {"benchmark": "floor", "quick": a.quick, "machine": mach,
           "settings": {"size": [161, 161], "images": n, "images_per_file": shard, "repeats": repeats},
           "floors": list(floors.values()), "synthcount": gen, "fractions": fractions}
    tables = [format_table(list(floors.values()), ["floor", "images_per_s", "cpu_images_per_s", "bytes_per_image"],
                           "storage floors, 161x161x3 uint8 (medians)"),
              format_table(fractions, ["t", "compression", "synthcount_images_per_s", "floor_images_per_s",
                                       "fraction_of_floor", "floor_slowdown", "fraction_of_floor_with_maps",
                                       "fraction_of_floor_cpu"], "synthcount generation vs the floor, same run")]
    emit(res, tables, a.out)


if __name__ == "__main__":
    main()
