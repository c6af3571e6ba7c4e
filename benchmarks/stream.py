"""Sources larger than memory: streaming against in memory, in one run.

``python -m benchmarks.stream [--quick] [--root DIR] [--backgrounds 20000] [--objects 2000] [--images 6000]
[--workers 1,2] [--out FILE.json]``

Makes (once; kept under ``--root``, default ``/tmp/synthcount-stream-bench``) a
SUN397-layout tree of ``--backgrounds`` JPEGs of 640x480 (``<letter>/<class>/*.jpg``
in 40 classes, with ``ClassName.txt``) and a THUS10000-layout folder of
``--objects`` ``Imgs/<id>.jpg`` + ``<id>.png`` soft masks, both cut from
scikit-image's bundled photos (as ``tests/fixtures.py``) with a random crop, flip
and colour gain per file. Then, each step in its own subprocess so that its peak
memory is its own:

* ``prepare`` of each tree into a pack (``--workers`` max processes): wall seconds,
  files/s and peak RSS;
* ``generate`` of ``--images`` images (161x161, defaults otherwise, images
  uncompressed) from the two packs with ``--source-mode memory`` and ``stream``, at
  each ``--workers`` count, alternating modes: ``images_per_s`` by the generator's
  clock (sources loaded and the layout survey done before it starts),
  ``cpu_images_per_s`` the images per CPU second of all its processes (what a
  shared machine cannot blur), ``plan_s`` the time to plan (loading the packs, the
  layout survey), ``stage_s`` the streamed run's staging (prescaled backgrounds and
  object pyramids written once to a temporary folder; timed apart, before the
  clock), ``parent_peak_rss_mb`` and ``worker_peak_rss_mb`` (the largest pool worker's
  peak; with 1 worker the parent is the worker). Forked workers share the parent's
  pages, and RSS counts shared pages in full: an in-memory worker shows the whole
  sources, a streaming one its bounded caches.

``stream_vs_memory`` is the ratio of the images/s (and of the images per CPU
second) at each worker count (goal >= 0.85); the datasets of both modes are
compared image by image (``same_bytes``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

from ._common import emit, format_table, machine, parser

__all__ = ["main", "make_trees"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CLASSES = 40


def _photos():
    """Colour photos bundled with scikit-image (no download), uint8 RGB."""
    import numpy as np
    from skimage import data

    out = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for gray in (data.camera(), data.moon(), data.grass(), data.gravel(), data.brick(), data.coins()):
        g = gray.astype(np.float32)
        out.append(np.dstack([g, g * 0.8 + 30, g * 0.6 + 60]).clip(0, 255).astype(np.uint8))
    return out


def _variant(rng, photo, w: int, h: int):
    """A random crop of ``photo`` resized to w x h, maybe flipped, with colour gains."""
    import cv2
    import numpy as np

    ph, pw = photo.shape[:2]
    f = rng.uniform(0.5, 1.0)
    ch, cw = int(ph * f), int(min(pw, ph * f * w / h))
    y, x = rng.integers(ph - ch + 1), rng.integers(pw - cw + 1)
    img = cv2.resize(photo[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return (img * rng.uniform(0.7, 1.2, 3)).clip(0, 255).astype(np.uint8)


def _write_sun(args):
    root, lo, hi = args
    import numpy as np
    from PIL import Image

    photos = _photos()
    for i in range(lo, hi):
        rng = np.random.default_rng([7, i])
        c = i % _CLASSES
        d = os.path.join(root, chr(97 + c % 26), f"class{c:02d}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(_variant(rng, photos[i % len(photos)], 640, 480)).save(
            os.path.join(d, f"sun_{i:06d}.jpg"), quality=85)


def _write_thus(args):
    root, lo, hi = args
    import cv2
    import numpy as np
    from PIL import Image

    photos = _photos()
    d = os.path.join(root, "Imgs")
    os.makedirs(d, exist_ok=True)
    for i in range(lo, hi):
        rng = np.random.default_rng([11, i])
        w, h = int(rng.integers(300, 401)), int(rng.integers(225, 301))
        mask = np.zeros((h, w), np.uint8)
        centre = (int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65)))
        axes = (int(w * rng.uniform(0.15, 0.35)), int(h * rng.uniform(0.15, 0.35)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.5)
        Image.fromarray(_variant(rng, photos[i % len(photos)], w, h)).save(os.path.join(d, f"{i}.jpg"), quality=90)
        Image.fromarray(mask).save(os.path.join(d, f"{i}.png"))


def make_trees(root: str, backgrounds: int, objects: int, workers: int) -> Dict[str, object]:
    """The SUN397 and THUS10000 trees under ``root`` (made once; a marker file says
    they are complete). Returns their paths and the seconds spent making them."""
    import multiprocessing as mp

    sun, thus = os.path.join(root, f"SUN397-{backgrounds}"), os.path.join(root, f"THUS10000-{objects}")
    t0 = time.perf_counter()
    for path, n, fn in ((sun, backgrounds, _write_sun), (thus, objects, _write_thus)):
        if os.path.exists(os.path.join(path, ".complete")):
            continue
        step = max(1, -(-n // (8 * workers)))
        jobs = [(path, lo, min(n, lo + step)) for lo in range(0, n, step)]
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(fn, jobs, chunksize=1)
        if fn is _write_sun:
            with open(os.path.join(path, "ClassName.txt"), "w") as f:
                f.writelines(f"/{chr(97 + c % 26)}/class{c:02d}\n" for c in range(_CLASSES))
        open(os.path.join(path, ".complete"), "w").close()
    return {"sun": sun, "thus": thus, "make_trees_s": round(time.perf_counter() - t0, 1)}


_PREPARE = r"""
import json, resource, sys, time
from synthcount.sources import prepare
src, out, kind, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
pack = prepare(src, out, kind, workers=workers)
s = time.perf_counter() - t0
n = len(pack.objects) if kind == "objects" else len(pack.backgrounds)
print(json.dumps({"kind": kind, "files": n, "skipped": len(pack.skipped), "seconds": s,
                  "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_GENERATE = r"""
import json, resource, shutil, sys, tempfile, time
t00 = time.perf_counter()
from synthcount.config import DatasetConfig, SourceConfig
from synthcount.generate import plan_generation, run_plan
objects, backgrounds, mode, n, workers, out = sys.argv[1:7]
w = int(workers)
cfg = DatasetConfig(sources=SourceConfig(objects=objects, backgrounds=backgrounds, source_mode=mode),
                    num_images=int(n), shard_size=max(1, int(n) // (4 * w)), compression="none")
plan = plan_generation(out, cfg, workers=w)
plan_s = time.perf_counter() - t00
# Streamed: stage here (what run_plan would do first), to time it apart from generation.
t = time.perf_counter()
d = tempfile.mkdtemp(prefix="bench-stage-")
staged = plan.composer.stage(d, int(n), workers=w) if plan.composer.streamed() else []
stage_s = time.perf_counter() - t
cpu = lambda: sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
c0 = cpu()
res = run_plan(plan, workers=w)
gen_cpu = cpu() - c0
plan.composer.unstage()
shutil.rmtree(d, ignore_errors=True)
self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"images_per_s": res.images_per_second, "cpu_images_per_s": res.images_written / gen_cpu,
                  "generate_s": res.seconds, "plan_s": plan_s, "stage_s": stage_s, "staged": staged,
                  "parent_peak_rss_mb": self_peak, "worker_peak_rss_mb": self_peak if w == 1 else kids}))
"""


def _sub(code: str, *args) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def _digest(out: str) -> str:
    import h5py

    h, m = hashlib.sha256(), hashlib.sha256()  # images, label maps: the same for any shard size
    for f in sorted(glob.glob(os.path.join(out, "shard-*.h5"))):
        with h5py.File(f, "r") as g:
            h.update(g["images"][()].tobytes())
            m.update(g["label_maps"][()].tobytes())
    return h.hexdigest() + m.hexdigest()


def main(argv=None) -> Dict[str, object]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/synthcount-stream-bench", help="where the trees and packs are kept")
    p.add_argument("--backgrounds", type=int, default=None, help="JPEGs in the SUN397 tree [20000; quick 60]")
    p.add_argument("--objects", type=int, default=None, help="objects in the THUS10000 tree [2000; quick 20]")
    p.add_argument("--images", type=int, default=None, help="images per generate run [6000; quick 80]")
    p.add_argument("--workers", default=None, help="generate worker counts, comma-separated [1,2; quick 1,2]")
    a = p.parse_args(argv)
    nb = a.backgrounds or (60 if a.quick else 20000)
    no = a.objects or (20 if a.quick else 2000)
    ni = a.images or (80 if a.quick else 6000)
    counts = [int(w) for w in (a.workers or "1,2").split(",")]
    if a.quick and a.root == "/tmp/synthcount-stream-bench":
        a.root += "-quick"
    os.makedirs(a.root, exist_ok=True)
    result: Dict[str, object] = {"benchmark": "stream", "quick": bool(a.quick), "machine": machine(),
                                 "backgrounds": nb, "objects": no, "images": ni}
    trees = make_trees(a.root, nb, no, max(counts))
    result["make_trees_s"] = trees["make_trees_s"]
    packs, prep = {}, []
    for kind, src in (("backgrounds", trees["sun"]), ("objects", trees["thus"])):
        out = os.path.join(a.root, f"{os.path.basename(src)}.h5")
        for old in glob.glob(out + "*"):
            os.remove(old)
        r = _sub(_PREPARE, src, out, kind, max(counts))
        r["files_per_s"] = r["files"] / r["seconds"]
        r["pack_mb"] = os.path.getsize(out) / 2**20
        prep.append(r)
        packs[kind] = out
    result["prepare"] = prep
    rows: List[dict] = []
    digests: Dict[str, str] = {}
    for w in counts:
        for mode in ("memory", "stream"):
            out = os.path.join(a.root, f"ds-{mode}-{w}")
            subprocess.run(["rm", "-rf", out], check=True)
            r = _sub(_GENERATE, packs["objects"], packs["backgrounds"], mode, ni, w, out)
            r.update(mode=mode, workers=w)
            digests[f"{mode}-{w}"] = _digest(out)
            subprocess.run(["rm", "-rf", out], check=True)
            rows.append(r)
    result["runs"] = rows
    by = {(r["mode"], r["workers"]): r for r in rows}
    result["stream_vs_memory"] = [
        {"workers": w, "ratio": by[("stream", w)]["images_per_s"] / by[("memory", w)]["images_per_s"],
         "cpu_ratio": by[("stream", w)]["cpu_images_per_s"] / by[("memory", w)]["cpu_images_per_s"]}
        for w in counts]
    result["same_bytes"] = len(set(digests.values())) == 1
    tables = [format_table(prep, ["kind", "files", "seconds", "files_per_s", "parent_peak_rss_mb",
                                  "worker_peak_rss_mb", "pack_mb"], "prepare"),
              format_table(rows, ["mode", "workers", "images_per_s", "cpu_images_per_s", "plan_s", "stage_s",
                                  "parent_peak_rss_mb", "worker_peak_rss_mb"], f"generate {ni} images from the packs"),
              format_table(result["stream_vs_memory"], ["workers", "ratio", "cpu_ratio"],
                           f"streaming / in memory (same bytes: {result['same_bytes']})")]
    emit(result, tables, a.out)
    return result


if __name__ == "__main__":
    main()
