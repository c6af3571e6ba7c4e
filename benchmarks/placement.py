"""Cost of composing one image as the number of objects grows and the threshold t falls.

``python -m benchmarks.placement [--quick] [--out FILE.json] [--images K] [--max-layouts L]``

For N in 0, 1, 2, 4, 8, 16 (fixed per cell through ``count_probs``) and t in 1.0,
0.8, 0.5, 0.2, at 161x161 with the built-in assets, for the ``paper`` scene preset
(reference side U(0.4, 0.8) x H) and the ``regression`` preset (U(0.3, 0.45) x H),
composes K images with ``Composer.compose_into`` (no file output) and reports per
cell: median and mean wall microseconds per image, median CPU microseconds, mean
layouts and exact placement maps per image, and the share of images that failed
with ``PlacementError`` after ``--max-layouts`` layouts (failed images are timed
too: their cost is the cost of finding out). Cells that ``check_feasible`` rejects
outright (the copies cannot fit at all) are marked ``infeasible`` and cost nothing.
"""

from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

from synthcount import preset
from synthcount.assets import builtin_backgrounds, builtin_objects
from synthcount.compose import Composer, PlacementError, check_feasible, new_records

from ._common import emit, format_table, machine, parser

__all__ = ["time_cell", "main"]

COUNTS = (0, 1, 2, 4, 8, 16)
THRESHOLDS = (1.0, 0.8, 0.5, 0.2)


def time_cell(scene_preset: str, n: int, t: float, images: int, max_layouts: int, seed: int = 0) -> Dict[str, object]:
    """Compose ``images`` images with exactly ``n`` objects at threshold ``t``; per-image costs."""
    probs = tuple([0.0] * n + [1.0])
    scene = preset(scene_preset, max_count=n, count_probs=probs, min_visible=t, max_layouts=max_layouts)
    row = {"preset": scene_preset, "n": n, "t": t, "images": images, "max_layouts": max_layouts}
    objects, backgrounds = builtin_objects(), builtin_backgrounds()
    try:
        check_feasible(scene, objects)
    except ValueError as e:
        return {**row, "status": "infeasible", "reason": str(e)}
    comp = Composer(scene, objects, backgrounds)
    H, W = scene.size
    imgs, maps = np.empty((1, H, W, 3), np.uint8), np.empty((1, H, W), np.uint8)
    walls, cpus, failed = [], [], 0
    tries, pmaps = [], []
    for i in range(images):
        recs = new_records(comp.record_spec, 1)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            comp.compose_into(seed, i, imgs, maps, recs, 0)
            ok = True
        except PlacementError:
            ok = False
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if ok:
            tries.append(int(recs["layout_tries"][0]))
            pmaps.append(int(recs["placement_maps"][0]))
        else:
            failed += 1
    w, c = np.asarray(walls) * 1e6, np.asarray(cpus) * 1e6
    return {**row, "status": "ok" if failed == 0 else ("all failed" if failed == images else "some failed"),
            "median_us": float(np.median(w)), "mean_us": float(w.mean()), "median_cpu_us": float(np.median(c)),
            "images_per_s": float(1e6 / w.mean()),
            "layouts_per_image": float(np.mean(tries)) if tries else None,
            "maps_per_image": float(np.mean(pmaps)) if pmaps else None,
            "failure_rate": failed / images}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images per cell (default 100, quick 6)")
    p.add_argument("--max-layouts", type=int, default=50, help="layouts before PlacementError (default 50)")
    a = p.parse_args(argv)
    mach = machine()  # before the work: the load average says how busy the machine was
    images = a.images or (6 if a.quick else 100)
    if images < 1 or a.max_layouts < 1:
        p.error(f"--images and --max-layouts must be >= 1, got {images} and {a.max_layouts}")
    max_layouts = min(a.max_layouts, 10) if a.quick else a.max_layouts
    # Warm-up: build the packs and the mip pyramids once.
    time_cell("paper", 1, 1.0, 2, max_layouts)
    cells: List[dict] = []
    for sp in ("paper", "regression"):
        for t in THRESHOLDS:
            for n in COUNTS:
                cells.append(time_cell(sp, n, t, images, max_layouts))
    res = {"benchmark": "placement", "quick": a.quick, "machine": mach,
           "settings": {"size": [161, 161], "assets": "built-in", "images_per_cell": images,
                        "max_layouts": max_layouts, "counts": list(COUNTS), "thresholds": list(THRESHOLDS)},
           "cells": cells}
    tables = []
    for sp in ("paper", "regression"):
        grid = []
        for t in THRESHOLDS:
            r = {"t": t}
            for c in cells:
                if c["preset"] == sp and c["t"] == t:
                    r[f"N={c['n']}"] = ("infeasible" if c["status"] == "infeasible" else
                                        f"{c['median_us']:,.0f}us L{c['layouts_per_image'] or 0:.1f} "
                                        f"M{c['maps_per_image'] or 0:.2f} F{c['failure_rate']:.0%}")
            grid.append(r)
        tables.append(format_table(grid, ["t"] + [f"N={n}" for n in COUNTS],
                                   f"{sp} preset, 161x161: median us/image, L layouts/image, M maps/image, "
                                   f"F PlacementError rate (max_layouts={max_layouts})"))
    emit(res, tables, a.out)


if __name__ == "__main__":
    main()
