"""Non-numerical visual properties of an image (DeWind et al. 2015), from its label map.

Every record holds, about the targets (labels 1..N; distractors never count):

- ``total_surface_area`` TSA: visible target pixels (= ``cumulative_area``);
- ``item_surface_area`` ISA: TSA / N (= ``mean_item_area``);
- ``field_area`` FA: area of the convex hull through the centres of the visible
  target pixels (``cv2.convexHull`` of pixel-centre coordinates, area by the shoelace
  formula: a hull through centres, so one pixel, or a one-pixel-wide line, has area 0);
- ``sparsity`` FA / N, ``coverage`` TSA / FA;
- ``total_perimeter``: the summed length of the boundaries (outer and of holes) of
  each target's visible pixels, traced through boundary-pixel centres
  (``cv2.findContours`` with every point kept, ``cv2.arcLength``) on the object's
  bounding box, as if it had a one-pixel empty border;
- ``log_size`` = log TSA + log ISA and ``log_spacing`` = log FA + log sparsity
  (natural logs: DeWind's size and spacing axes).

Undefined values are NaN: the ratios and logs at N = 0, and coverage and log
spacing where FA is 0; sums (TSA, FA, perimeter) and ISA are 0 at N = 0, as
``cumulative_area`` and ``mean_item_area`` are.

``stimulus_set`` (an integer per image) says which set of a designed space an image
belongs to; its names are the shard attribute ``stimulus_sets`` (JSON list), see
:func:`stimulus_set_names`. Datasets made before these fields get them on read
(``synthcount.reader``), computed here from the stored label maps.
"""

from __future__ import annotations

import math
from typing import Dict, List

import cv2
import numpy as np

__all__ = ["PROPERTY_FIELDS", "LOG_FIELDS", "object_contours", "object_perimeter", "derived", "visual_properties",
           "stimulus_set_names", "field_area"]

# The record fields this module defines (besides field_area, which older records have).
PROPERTY_FIELDS = ("total_surface_area", "item_surface_area", "sparsity", "coverage", "total_perimeter",
                   "log_size", "log_spacing")
LOG_FIELDS = ("log_size", "log_spacing")


def field_area(label_map: np.ndarray) -> float:
    """Area of the convex hull through the centres of all object pixels (field area).

    The hull of a pixel set equals the hull of each row's leftmost and rightmost
    pixels, so only those (at most 2 H points) go to ``cv2.convexHull``.
    """
    m = label_map > 0
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return 0.0
    sub = m[rows]
    k = rows.size
    pts = np.empty((2 * k, 2), np.int32)  # the leftmost pixel of each row, then the rightmost
    pts[:k, 0] = sub.argmax(axis=1)  # (argmax is fastest on bool; a contiguous flip beats sub[:, ::-1])
    pts[k:, 0] = m.shape[1] - 1 - cv2.flip(sub.view(np.uint8), 1).view(bool).argmax(axis=1)
    pts[:k, 1] = pts[k:, 1] = rows
    return float(cv2.contourArea(cv2.convexHull(pts)))


def _borders_traced() -> bool:
    """Whether this OpenCV's findContours traces pixels on the image border (a full
    3 x 3 mask has the 8-long boundary): then no empty border need be added."""
    c, _ = cv2.findContours(np.ones((3, 3), np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return len(c) == 1 and cv2.arcLength(c[0], True) == 8.0


_PAD = not _borders_traced()


def object_contours(mask: np.ndarray) -> tuple:
    """Every boundary (outer and holes) of the 0/1 uint8 ``mask``, as point arrays in
    its coordinates, as if it had an empty border."""
    if _PAD:
        mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        return cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE, offset=(-1, -1))[0]
    return cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]


def object_perimeter(tight: np.ndarray) -> float:
    """Boundary length of the 0/1 uint8 mask ``tight`` (cropped to its bounding box):
    outer boundaries and holes, through boundary-pixel centres (as if the mask had an
    empty border: added where this OpenCV would not trace border pixels)."""
    if _PAD:
        tight = cv2.copyMakeBorder(tight, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(tight, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, True) for c in contours))


def derived(n: int, tsa: float, fa: float) -> Dict[str, float]:
    """ISA, sparsity, coverage, log size and log spacing from N, TSA and FA (NaN where
    undefined, see the module docstring)."""
    nan = math.nan
    if n <= 0:
        return {"item_surface_area": 0.0, "sparsity": nan, "coverage": nan, "log_size": nan, "log_spacing": nan}
    isa = tsa / n
    return {"item_surface_area": isa, "sparsity": fa / n,
            "coverage": tsa / fa if fa > 0 else nan,
            "log_size": math.log(tsa) + math.log(isa) if tsa > 0 else nan,
            "log_spacing": math.log(fa) + math.log(fa / n) if fa > 0 else nan}


def visual_properties(label_map: np.ndarray, count: int) -> Dict[str, float]:
    """Every property of the module docstring, recomputed from one label map.

    Parameters
    ----------
    label_map : ndarray, uint8, (H, W)
        0 background, k the k-th pasted object; targets are 1..``count``.
    count : int
        N.

    Returns
    -------
    dict
        ``total_surface_area``, ``item_surface_area``, ``field_area``, ``sparsity``,
        ``coverage``, ``total_perimeter``, ``log_size``, ``log_spacing`` (floats).
    """
    lm = np.asarray(label_map)
    n = int(count)
    targets = np.where(lm <= n, lm, 0) if n < int(lm.max(initial=0)) else lm
    tsa, per = 0, 0.0
    for k in range(1, n + 1):
        vis = (targets == k).view(np.uint8)
        a = cv2.countNonZero(vis)
        if a:
            x, y, w, h = cv2.boundingRect(vis)
            per += object_perimeter(vis[y:y + h, x:x + w])
            tsa += a
    fa = field_area(targets) if n else 0.0
    out = {"total_surface_area": float(tsa), "field_area": fa, "total_perimeter": per}
    out.update(derived(n, float(tsa), fa))
    return out


def stimulus_set_names(scene) -> List[str]:
    """Names of the stimulus sets of a scene config, in ``stimulus_set`` order: the
    design's sets, or ``["standard"]`` without a design."""
    design = getattr(scene, "design", None)
    if design == "dewind":
        return ["dewind"]
    if design == "match":
        return ["standard"] + list(scene.match)
    return ["standard"]
