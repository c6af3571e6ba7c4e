"""The README's big generate commands at full size: do they complete, and how close do
the layouts come to the budget?

``python -m benchmarks.scale [--quick] [--out FILE.json] [--seeds 0,1,2] [--presets ...] [--workers W] [--keep DIR]``

For every scene preset and seed, runs ``generate_dataset`` with the built-in assets
at 161x161 (48x48 for ``binary``) and the README's sizes: 80,000 images for the
default config, ``paper`` and ``sos-occlusion``; 35,000 for ``regression``,
``decorrelated``, ``binary`` and ``fsc`` (0..20 targets among 0..10 distractors).
Reports per run: completion (or the error), wall seconds, images/s, the layout
survey (budget, trials, seconds, hardest pair, unfit pairs), layouts per image by N
(mean, p99, max; ``nmax_*`` at the largest N), the most layouts any image needed as
a share of the budget, and with distractors their mean number per image and mean
visible fraction (targets' beside it); the dataset is deleted after measuring unless
``--keep``. Two runs of one config (the default and ``paper`` are the same scene) must
give equal shard checksums; ``identical_to`` says so. ``--quick`` makes 600 images
per run, one seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

from synthcount._system import usable_cores
from synthcount.config import PRESETS, DatasetConfig, SceneConfig, preset
from synthcount.generate import generate_dataset
from synthcount.reader import open_dataset
from synthcount.stats import distractor_summary

from ._common import emit, format_table, machine, parser

__all__ = ["run_one", "main", "SIZES"]

# The README's commands: pretraining-size sets, and regression-size sets (paper section 4.4).
SIZES = {"default": 80_000, "paper": 80_000, "sos-occlusion": 80_000,
         "regression": 35_000, "decorrelated": 35_000, "binary": 35_000, "fsc": 35_000}


def _scene(name: str) -> SceneConfig:
    return SceneConfig() if name == "default" else preset(name)


def run_one(name: str, seed: int, num_images: int, workers: int, root: str, keep: bool) -> Dict[str, object]:
    """Generate one dataset and summarise its layouts (see the module docstring)."""
    out = os.path.join(root, f"{name}-seed{seed}")
    cfg = DatasetConfig(scene=_scene(name), num_images=num_images, seed=seed, shard_size=1000)
    row: Dict[str, object] = {"preset": name, "seed": seed, "images": num_images, "workers": workers}
    t0 = time.perf_counter()
    try:
        res = generate_dataset(out, cfg, workers=workers, overwrite=True)
    except Exception as e:  # noqa: BLE001 - a failed run is the finding, reported not raised
        row.update(completed=False, error=f"{type(e).__name__}: {e}", wall_s=round(time.perf_counter() - t0, 1))
        return row
    wall = time.perf_counter() - t0
    with open_dataset(out) as ds:
        lab = ds.labels
        count, tries = lab["count"].astype(int), lab["layout_tries"].astype(int)
        dis = distractor_summary(ds)
    by_n = {}
    for n in np.unique(count):
        t = tries[count == n]
        by_n[str(int(n))] = {"mean": round(float(t.mean()), 2), "p99": float(np.percentile(t, 99)),
                             "max": int(t.max())}
    survey = res.layout_survey or {}
    import json

    with open(os.path.join(out, "manifest.json")) as f:
        sums = [s["sha256"] for s in json.load(f)["shards"]]
    row.update(completed=bool(res.complete), wall_s=round(wall, 1), generate_s=round(res.seconds, 1),
               images_per_s=round(res.images_per_second, 1), layout_budget=res.layout_budget,
               survey_trials=survey.get("trials"), survey_s=survey.get("seconds"), hardest=survey.get("hardest"),
               unfit=survey.get("unfit"), most_layouts=int(tries.max()),
               most_layouts_share_of_budget=round(float(tries.max()) / res.layout_budget, 5),
               layouts_by_n=by_n, manifest_digest=_digest(sums))
    if dis is not None:
        row.update(distractors_mean=round(dis["mean"], 3), distractor_visible_fraction=round(dis["visible_fraction"],
                                                                                             4),
                   target_visible_fraction=round(dis["target_visible_fraction"], 4))
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def _digest(sums: List[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(sums).encode()).hexdigest()[:16]


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--presets", default=",".join(SIZES), help=f"comma-separated, from {','.join(SIZES)}")
    p.add_argument("--workers", type=int, default=None, help="processes per run (default: the usable cores)")
    p.add_argument("--keep", metavar="DIR", default=None, help="keep the datasets in DIR instead of a temp folder")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {a.seeds!r}")
    names = [s for s in a.presets.split(",") if s]
    bad = [n for n in names if n not in SIZES]
    if bad:
        p.error(f"--presets must be from {sorted(SIZES)}, got {bad}")
    workers = a.workers or usable_cores()
    if a.quick:
        seeds = seeds[:1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = a.keep or tmp
        for seed in seeds:
            for name in names:
                rows.append(run_one(name, seed, 600 if a.quick else SIZES[name], workers, root, bool(a.keep)))
    seen: Dict[str, str] = {}
    for r in rows:
        d = r.get("manifest_digest")
        key = f"{_scene_key(r['preset'])}/{r['seed']}/{r['images']}"
        if d and key in seen:
            r["identical_to"] = seen[key] if d == seen[key + "#digest"] else None
        elif d:
            seen[key], seen[key + "#digest"] = r["preset"], d
    res = {"benchmark": "scale", "quick": a.quick, "machine": machine(), "runs": rows,
           "all_completed": all(r.get("completed") for r in rows)}
    flat = []
    for r in rows:
        by_n = r.get("layouts_by_n") or {}
        top = by_n.get(max(by_n, key=int), {}) if by_n else {}
        flat.append({**{k: v for k, v in r.items() if k not in ("layouts_by_n", "hardest", "unfit")},
                     "n4_mean": by_n.get("4", {}).get("mean"), "n4_p99": by_n.get("4", {}).get("p99"),
                     "n4_max": by_n.get("4", {}).get("max"), "nmax_mean": top.get("mean"), "nmax_p99": top.get("p99")})
    emit(res, [format_table(flat, ["preset", "seed", "images", "completed", "wall_s", "images_per_s",
                                   "layout_budget", "survey_s", "most_layouts", "n4_mean", "n4_p99", "n4_max",
                                   "nmax_mean", "nmax_p99"],
                            "full-scale generation (built-in assets)")], a.out)
    return 0 if res["all_completed"] else 1


def _scene_key(name: str) -> str:
    return repr(sorted(PRESETS.get(name, {}).items())) if name != "default" else repr([])


if __name__ == "__main__":
    raise SystemExit(main())
