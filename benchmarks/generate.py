"""Generation throughput of synthcount, side by side with the baseline cut-paste generator.

``python -m benchmarks.generate [--quick] [--out FILE.json] [--repeats R] [--baseline-seconds S]``

``python -m benchmarks.generate --dask ADDRESS [...]`` runs ``benchmarks.dask_engine``
instead: one dataset by 1 process, a local pool and the Dask cluster (its own flags).

Measures, for the built-in assets, N uniform in 0..4, the paper's scene preset:

- synthcount images/s through the real ``generate_dataset`` into a temp folder, at
  161x161 and 256x256, t = 1.0 and 0.5, compression none / lzf / gzip (workers 1)
  and workers 2 (compression none and lzf), with at least 2 shards per worker;
  medians over ``--repeats`` runs. ``images_per_s`` is the generator's own clock
  (composing and writing shards; sources are resolved before it starts),
  ``end_to_end_images_per_s`` the whole call (planning, manifest, hashing);
  ``cpu_images_per_s`` divides by process CPU time (children included);
- layouts and exact placement maps per image, read back from the records
  (``layout_tries`` / ``placement_maps``), also with the ``regression`` preset
  (modest sizes), to explain the cost at t = 1 with the paper's sizes;
- peak memory of the parent process and the largest worker;
- scaling from 1 to 2 workers;
- the baseline (``benchmarks.baseline``) at 161x161, t = 1.0 and 0.5, bounded by
  time, and the synthcount / baseline ratios of this same run.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Dict, List, Optional

import h5py
import numpy as np

from synthcount import DatasetConfig, preset
from synthcount.assets import builtin_backgrounds, builtin_objects
from synthcount.generate import generate_dataset

from ._common import children_peak_rss_mb, emit, format_table, machine, measure, parser, peak_rss_mb, rate, reset_peak
from .baseline import run_baseline, write_assets

__all__ = ["run_synthcount", "record_stats", "main"]


def record_stats(folder: str) -> Dict[str, float]:
    """Mean layouts and exact placement maps per image over the shards in ``folder``."""
    tries, maps = [], []
    for p in sorted(glob.glob(os.path.join(folder, "shard-*.h5"))):
        with h5py.File(p, "r") as f:
            tries.append(f["layout_tries"][()])
            maps.append(f["placement_maps"][()])
    if not tries:
        return {"layouts_per_image": None, "maps_per_image": None, "max_layouts": None}
    t, m = np.concatenate(tries), np.concatenate(maps)
    return {"layouts_per_image": float(t.mean()), "maps_per_image": float(m.mean()), "max_layouts": int(t.max())}


def run_synthcount(tmp: str, *, size: int, t: float, compression: str, workers: int, num_images: int,
                   shard_size: int, repeats: int, scene_preset: str = "paper", seed: int = 0) -> Dict[str, object]:
    """Time ``generate_dataset`` for one configuration (a fresh folder per repeat).

    Returns
    -------
    dict
        The configuration, ``images_per_s`` (median, generator clock),
        ``end_to_end_images_per_s``, ``cpu_images_per_s`` (medians), record statistics
        (:func:`record_stats`), ``peak_rss_mb`` (parent) and ``children_peak_rss_mb``.
    """
    cfg = DatasetConfig(scene=preset(scene_preset, size=(size, size), min_visible=t), num_images=num_images,
                        shard_size=shard_size, compression=compression, seed=seed)
    inner: List[float] = []
    out = os.path.join(tmp, "ds")

    def once():
        shutil.rmtree(out, ignore_errors=True)
        r = generate_dataset(out, cfg, workers=workers, progress=False)
        inner.append(r.images_per_second)
        return r

    reset_peak()
    m = measure(once, repeats)
    stats = record_stats(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"preset": scene_preset, "size": size, "t": t, "compression": compression, "workers": workers,
            "images": num_images, "shards": cfg.num_shards, "repeats": repeats,
            "images_per_s": float(np.median(inner)),
            "end_to_end_images_per_s": rate(num_images, m["wall_s"]),
            "cpu_images_per_s": rate(num_images, m["cpu_s"]),
            # CPU seconds per wall second: ~2 means two workers really ran in parallel.
            "cores_used": rate(m["cpu_s"], m["wall_s"]),
            "wall_runs_s": m["wall_runs"], "cpu_runs_s": m["cpu_runs"],
            **stats,
            "peak_rss_mb": round(peak_rss_mb(), 1), "children_peak_rss_mb": round(children_peak_rss_mb(), 1)}


def _find(rows: List[dict], **kv) -> Optional[dict]:
    for r in rows:
        if all(r.get(k) == v for k, v in kv.items()):
            return r
    return None


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3, quick 1)")
    p.add_argument("--baseline-seconds", type=float, default=None, help="time limit per baseline run (default 20 s)")
    p.add_argument("--dask", metavar="ADDRESS", help="run benchmarks.dask_engine on this cluster instead")
    a, rest = p.parse_known_args(argv)
    if a.dask:
        from . import dask_engine

        return dask_engine.main(argv)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    mach = machine()  # before the work: the load average says how busy the machine was
    quick = a.quick
    repeats = a.repeats or (1 if quick else 3)
    if repeats < 1:
        p.error(f"--repeats must be >= 1, got {repeats}")
    sizes = (161,) if quick else (161, 256)
    # Images per run: enough shards for 2 per worker (4 shards) at both sizes.
    plan = {161: (48, 12), 256: (32, 8)} if quick else {161: (2000, 250), 256: (800, 100)}
    bl_seconds = a.baseline_seconds or (4.0 if quick else 20.0)  # a loaded CI machine still finishes one image
    bl_max = 4 if quick else 1_000_000

    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        # Warm-up: builds the built-in packs (cached per process) and imports.
        generate_dataset(os.path.join(tmp, "warm"), DatasetConfig(num_images=8, shard_size=8), progress=False)
        for size in sizes:
            n, shard = plan[size]
            for t in (1.0, 0.5):
                for comp in ("none", "lzf", "gzip"):
                    rows.append(run_synthcount(tmp, size=size, t=t, compression=comp, workers=1, num_images=n,
                                               shard_size=shard, repeats=repeats))
                for comp in ("none", "lzf"):
                    rows.append(run_synthcount(tmp, size=size, t=t, compression=comp, workers=2, num_images=n,
                                               shard_size=shard, repeats=repeats))
        n, shard = plan[161]
        presets = [run_synthcount(tmp, size=161, t=t, compression="none", workers=1, num_images=n, shard_size=shard,
                                  repeats=repeats, scene_preset="regression") for t in (1.0, 0.5)]
        stems, bgs = write_assets(os.path.join(tmp, "assets"), builtin_objects(), builtin_backgrounds())
        baseline = [run_baseline(stems, bgs, (161, 161), t, seconds=bl_seconds, max_images=bl_max)
                    for t in (1.0, 0.5)]

    scaling = []
    for size in sizes:
        for t in (1.0, 0.5):
            for comp in ("none", "lzf"):
                one, two = _find(rows, size=size, t=t, compression=comp, workers=1), \
                    _find(rows, size=size, t=t, compression=comp, workers=2)
                scaling.append({"size": size, "t": t, "compression": comp,
                                "workers1_images_per_s": one["images_per_s"],
                                "workers2_images_per_s": two["images_per_s"],
                                "speedup": two["images_per_s"] / one["images_per_s"],
                                "workers2_cores_used": two["cores_used"]})
    ratios = []
    for b in baseline:
        s = _find(rows, size=161, t=b["t"], compression="none", workers=1)
        ratios.append({"size": 161, "t": b["t"], "synthcount_images_per_s": s["images_per_s"],
                       "baseline_images_per_s": b["images_per_s"], "baseline_images": b["images"],
                       "ratio": rate(s["images_per_s"], b["images_per_s"]),
                       "ratio_cpu": rate(s["cpu_images_per_s"], b["cpu_images_per_s"])})
    res = {"benchmark": "generate", "quick": quick, "machine": mach,
           "settings": {"assets": "built-in", "scene": "paper preset, N uniform 0..4", "repeats": repeats,
                        "baseline_seconds": bl_seconds},
           "synthcount": rows, "regression_preset": presets, "scaling": scaling, "baseline": baseline,
           "ratios": ratios}
    cols = ["preset", "size", "t", "compression", "workers", "images", "images_per_s", "end_to_end_images_per_s",
            "cpu_images_per_s", "cores_used", "layouts_per_image", "maps_per_image", "peak_rss_mb",
            "children_peak_rss_mb"]
    tables = [format_table(rows + presets, cols, "synthcount generate_dataset (medians)"),
              format_table(scaling, ["size", "t", "compression", "workers1_images_per_s", "workers2_images_per_s",
                                     "speedup", "workers2_cores_used"],
                           "scaling 1 -> 2 workers (cores_used = CPU s / wall s; "
                           "below ~1.9 the machine lent fewer cores)"),
              format_table(baseline, ["t", "images", "seconds", "images_per_s", "cpu_images_per_s",
                                      "layouts_per_image", "abandoned"], "baseline (161x161, time-bounded)"),
              format_table(ratios, ["t", "synthcount_images_per_s", "baseline_images_per_s", "ratio", "ratio_cpu"],
                           "synthcount / baseline, same run")]
    emit(res, tables, a.out)


if __name__ == "__main__":
    main()
