"""Where the time of one composite goes, and the ceiling that OpenCV's own work sets.

``python -m benchmarks.budget [--quick] [--out FILE.json] [--images 2000]``

For t = 0.5 and 1.0, on the built-in assets and on MSRA10K/SUN397-layout fixture
folders (``tests/fixtures.py``), 161x161, N uniform in 0..4, the paper's sizes, one
process and one OpenCV thread, composes ``--images`` images with
``Composer.compose_into`` (no file output) twice: once plain, for the time per image,
and once with every OpenCV function that synthcount calls wrapped in a timer, for the
time spent inside each (``perf_counter``: one thread, so wall time is this process's
time unless the machine takes the core away; a wrapper costs about a tenth of a
microsecond a call, which lands in "rest").

``ceiling_images_per_s`` is what one process would make if everything but the three
calls that the pixels require cost nothing: the bilinear fixed-point warps of every
alpha and colour patch (``remap``, with the ``convertMaps`` that feed it), the
background resize (``resize``, which also upsamples supersets), and the correlations
that give the placement's superset and exact maps (``matchTemplate``). The same
pixels cannot be made faster than that without making those calls cheaper or fewer.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Dict, List, Optional

import cv2
import numpy as np

from synthcount.compose import Composer
from synthcount.config import SceneConfig, SourceConfig
from synthcount.schema import new_records
from synthcount.sources import resolve_sources

from ._common import emit, format_table, machine, parser, rate

__all__ = ["budget", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The OpenCV functions synthcount calls while composing.
WRAPPED = ("remap", "convertMaps", "resize", "matchTemplate", "cvtColor", "boundingRect", "moments", "erode",
           "dilate", "add", "subtract", "multiply", "convertScaleAbs", "merge", "bitwise_and", "hasNonZero",
           "GaussianBlur", "convexHull", "contourArea", "copyMakeBorder", "countNonZero")
REQUIRED = ("remap", "convertMaps", "resize", "matchTemplate")


def _compose(comp: Composer, n: int) -> float:
    """Seconds of composing images 0..n-1 (seed 0) into a reused batch."""
    H, W = comp.scene.size
    imgs, maps = np.empty((64, H, W, 3), np.uint8), np.empty((64, H, W), np.uint8)
    recs = new_records(comp.record_spec, n)
    t0 = time.perf_counter()
    for i in range(n):
        comp.compose_into(0, i, imgs, maps, recs, i % 64, i)
    return time.perf_counter() - t0


def budget(comp: Composer, n: int) -> Dict[str, object]:
    """Per-image microseconds: total, inside each OpenCV function, and the rest."""
    total = _compose(comp, n)
    spent: Dict[str, float] = defaultdict(float)
    calls: Dict[str, int] = defaultdict(int)
    originals = {name: getattr(cv2, name) for name in WRAPPED}

    def wrap(name, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
                calls[name] += 1
        return timed

    try:
        for name, fn in originals.items():
            setattr(cv2, name, wrap(name, fn))
        _compose(comp, n)
    finally:
        for name, fn in originals.items():
            setattr(cv2, name, fn)
    per = {k: round(v / n * 1e6, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    required = sum(spent[k] for k in REQUIRED) / n
    other_cv = sum(v for k, v in spent.items() if k not in REQUIRED) / n
    return {"images_per_s": round(rate(n, total), 1), "us_per_image": round(total / n * 1e6, 1),
            "opencv_us_per_image": per, "calls_per_image": {k: round(calls[k] / n, 2) for k in per},
            "required_us_per_image": round(required * 1e6, 1), "other_opencv_us_per_image": round(other_cv * 1e6, 1),
            "rest_us_per_image": round((total / n - required - other_cv) * 1e6, 1),
            "ceiling_images_per_s": round(1.0 / required, 1) if required else None}


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images per configuration (default 2000, quick 60)")
    a = p.parse_args(argv)
    n = a.images or (60 if a.quick else 2000)
    if n < 1:
        p.error(f"--images must be >= 1, got {n}")
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as generation does
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="budget-") as tmp:
            sys.path.insert(0, ROOT)
            from tests import fixtures

            fx = SourceConfig(objects=fixtures.make_msra_dir(os.path.join(tmp, "msra")),
                              backgrounds=fixtures.make_sun_dir(os.path.join(tmp, "sun")))
            for assets, src in (("builtin", SourceConfig()), ("fixtures", fx)):
                packs = resolve_sources(src)
                for t in (0.5, 1.0):
                    comp = Composer(SceneConfig(min_visible=t), *packs)
                    rows.append({"assets": assets, "t": t, "images": n, **budget(comp, n)})
    finally:
        cv2.setNumThreads(cv_threads)
    res = {"benchmark": "budget", "quick": a.quick, "machine": machine(), "required": list(REQUIRED), "runs": rows}
    emit(res, [format_table(rows, ["assets", "t", "images_per_s", "us_per_image", "required_us_per_image",
                                   "other_opencv_us_per_image", "rest_us_per_image", "ceiling_images_per_s"],
                            "composing, 1 process, 161x161, microseconds per image")], a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
