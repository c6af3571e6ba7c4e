"""This synthcount against another version of it, in one run: images/s per process, the
storage floor, and peak memory.

``python -m benchmarks.versus --reference PATH [--quick] [--out FILE.json] [--repeats 3] [--images 4000]``

``PATH`` is a source tree of the version to compare with (for example a git worktree
of tag or commit ``f8754d7``, synthcount 0.1.0: ``git worktree add /tmp/v010
f8754d7``). For t = 0.5 and 1.0, on the built-in assets and on MSRA10K/SUN397-layout
fixture folders made from scikit-image's photos (``tests/fixtures.py``), 161x161, N
uniform in 0..4, the paper's sizes, one process, images uncompressed, each tree runs
``generate_dataset`` in its own subprocess (``PYTHONPATH`` = the tree) into a temp
folder, the trees' runs alternating: ``images_per_s`` is the generator's own clock
(composing and writing shards; sources resolved and, in 0.2, the layout survey done
before it starts), medians over ``--repeats``; ``cpu_images_per_s`` divides by the
process's CPU time; ``speedup`` is the ratio of the medians, ``paired_speedup`` the
median of each run over the reference run beside it; ``peak_rss_mb``
is the subprocess's peak resident memory. The HDF5 write floor of the same images
(``benchmarks.floor``'s ``hdf5_none_with_maps``) is measured in the same run, and each
figure is given as a fraction of it. A run that fails (an image that exhausts 0.1.0's
200 layouts, say) is reported with its error.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from ._common import emit, format_table, machine, parser, rate

__all__ = ["main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUNNER = r"""
import json, os, resource, sys, time
from synthcount.config import DatasetConfig, SceneConfig, SourceConfig
from synthcount.generate import generate_dataset
t, n, out, objects, backgrounds = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
src = SourceConfig(objects=objects or None, backgrounds=backgrounds or None)
cfg = DatasetConfig(scene=SceneConfig(min_visible=t), sources=src, num_images=n, shard_size=n // 4, seed=0,
                    compression="none")
r0 = resource.getrusage(resource.RUSAGE_SELF)
try:
    res = generate_dataset(out, cfg, workers=1, progress=False)
    err = None
except Exception as e:
    res, err = None, f"{type(e).__name__}: {e}"
r1 = resource.getrusage(resource.RUSAGE_SELF)
import synthcount
print(json.dumps({"version": synthcount.__version__, "error": err,
                  "images_per_s": res.images_per_second if res else None,
                  "seconds": res.seconds if res else None,
                  "cpu_s": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                  "peak_rss_mb": r1.ru_maxrss / 1024}))
"""


def _run(tree: str, t: float, n: int, tmp: str, objects: str, backgrounds: str) -> dict:
    out = tempfile.mkdtemp(dir=tmp)
    env = dict(os.environ, PYTHONPATH=tree)
    p = subprocess.run([sys.executable, "-c", _RUNNER, str(t), str(n), os.path.join(out, "ds"), objects, backgrounds],
                       cwd=tmp, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _floor(n: int, tmp: str) -> float:
    """images/s of writing n composites with their label maps as a shard stores them."""
    import time

    import h5py

    from .floor import source_images

    images, maps = source_images(min(n, 500))
    walls = []
    for _ in range(3):
        path = os.path.join(tmp, "floor.h5")
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=images, chunks=(1,) + images.shape[1:], track_times=False)
            f.create_dataset("label_maps", data=maps, chunks=(1,) + maps.shape[1:], compression="gzip",
                             compression_opts=3, track_times=False)
        walls.append(time.perf_counter() - t0)
        os.remove(path)
    return rate(len(images), statistics.median(walls))


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, metavar="PATH", help="source tree of the version to compare with")
    p.add_argument("--repeats", type=int, default=None, help="runs per configuration and tree (default 3, quick 1)")
    p.add_argument("--images", type=int, default=None, help="images per run, in 4 shards (default 4000, quick 200)")
    a = p.parse_args(argv)
    ref = os.path.abspath(a.reference)
    if not os.path.isfile(os.path.join(ref, "synthcount", "__init__.py")):
        p.error(f"--reference {a.reference}: not a synthcount source tree (no synthcount/__init__.py)")
    repeats = a.repeats or (1 if a.quick else 3)
    n = a.images or (200 if a.quick else 4000)
    if repeats < 1 or n < 4:
        p.error(f"--repeats must be >= 1 and --images >= 4, got {repeats} and {n}")
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="versus-") as tmp:
        sys.path.insert(0, ROOT)
        from tests import fixtures

        msra = fixtures.make_msra_dir(os.path.join(tmp, "msra"))
        sun = fixtures.make_sun_dir(os.path.join(tmp, "sun"))
        floor = _floor(n, tmp)
        for assets, (objects, backgrounds) in (("builtin", ("", "")), ("fixtures", (msra, sun))):
            for t in (0.5, 1.0):
                # Runs alternate between the trees (this, reference, this, ...) so that a
                # shared machine's drift over minutes weighs on both alike.
                runs_of = {"this": [], "reference": []}
                for _ in range(repeats):
                    for name, tree in (("this", ROOT), ("reference", ref)):
                        runs_of[name].append(_run(tree, t, n, tmp, objects, backgrounds))
                for name in ("this", "reference"):
                    runs = runs_of[name]
                    ok = [r for r in runs if not r.get("error")]
                    row = {"assets": assets, "t": t, "tree": name, "images": n,
                           "version": ok[0]["version"] if ok else None,
                           "errors": [r["error"] for r in runs if r.get("error")]}
                    if ok:
                        ips = statistics.median(r["images_per_s"] for r in ok)
                        cpu = statistics.median(r["cpu_s"] for r in ok)
                        row.update(images_per_s=round(ips, 1), cpu_images_per_s=round(rate(n, cpu), 1),
                                   peak_rss_mb=round(max(r["peak_rss_mb"] for r in ok), 1),
                                   share_of_floor=round(ips / floor, 4) if floor else None,
                                   runs_images_per_s=[round(r["images_per_s"], 1) for r in ok])
                    rows.append(row)
                # Each run against the reference run next to it: steadier than the ratio
                # of medians when the machine's speed drifts.
                pairs = [a["images_per_s"] / b["images_per_s"] for a, b in zip(runs_of["this"], runs_of["reference"])
                         if not a.get("error") and not b.get("error")]
                if pairs:
                    this_row = next(r for r in rows[-2:] if r["tree"] == "this")
                    this_row["paired_speedup"] = round(statistics.median(pairs), 3)
    for r in rows:
        if r["tree"] == "this":
            other = next(x for x in rows
                         if x["tree"] == "reference" and x["assets"] == r["assets"] and x["t"] == r["t"])
            if r.get("images_per_s") and other.get("images_per_s"):
                r["speedup"] = round(r["images_per_s"] / other["images_per_s"], 3)
    res = {"benchmark": "versus", "quick": a.quick, "machine": machine(), "reference": ref,
           "floor_images_per_s": round(floor, 1), "runs": rows}
    emit(res, [format_table(rows, ["assets", "t", "tree", "version", "images_per_s", "cpu_images_per_s",
                                   "peak_rss_mb", "share_of_floor", "speedup", "paired_speedup"],
                            f"generation, 1 process, 161x161, uncompressed (HDF5 floor {floor:,.0f} images/s)")], a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
