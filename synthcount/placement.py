"""Non-overlap placement at mask level, with the visible-fraction rule.

Rule: after all objects are pasted, every object keeps at least a fraction t of its
own footprint (alpha >= 0.5) visible, objects pasted later lying on top. t = 1 means
no two objects share a pixel; with ``gap`` > 0 they are also at least ``gap`` pixels
apart.

Positions are drawn uniformly from the set of feasible top-left corners, in three
phases: a few blind draws checked exactly (cheap when space is plentiful); draws
from a half-resolution superset of the feasible set (``coarse_superset``, which also
proves cheaply that nothing fits when it is empty); then the exact map of feasible
positions (a cross-correlation of the occupancy with the footprint,
``cv2.matchTemplate``). Each phase is uniform over the same feasible set when it
succeeds, so their mixture is too. Every accepted position is re-checked with
integer arithmetic, so float error in a map can never admit an overlap.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

__all__ = ["Layout", "PlacementError", "min_visible_pixels"]


_K3 = np.ones((3, 3), np.uint8)
# At t = 1, when the free pixels are fewer than this many times a footprint, the
# superset is computed before the blind draws (a speed choice only: the positions
# drawn are the same either way).
CROWDED = 3


class PlacementError(RuntimeError):
    """An image could not be laid out within the allowed number of layouts."""


def min_visible_pixels(full: int, t: float) -> int:
    """Smallest integer v with v / full >= t (the same float test the checks use)."""
    if full <= 0:
        return 0
    v = int(np.ceil(t * full))
    while v > 0 and (v - 1) / full >= t:
        v -= 1
    while v / full < t:
        v += 1
    return v


class Layout:
    """Objects placed so far in one image of size (height, width).

    Parameters
    ----------
    height, width : int
    t : float
        Visible-fraction threshold in [0, 1].
    gap : int
        Minimum distance in pixels between objects (only with t == 1).
    """

    def __init__(self, height: int, width: int, t: float, gap: int = 0):
        self.h, self.w, self.t, self.gap = height, width, float(t), int(gap)
        self.exclusive = self.t >= 1.0
        self.occ = np.zeros((height, width), bool)  # union of (dilated) footprints, t == 1
        self.vis: List[np.ndarray] = []  # full-size visible mask per object, t < 1
        self.slack: List[int] = []  # pixels of object k that may still be covered
        self.placed: List[Tuple[int, int, int, int]] = []  # (y, x, h, w)
        self.maps_computed = 0  # exact feasible maps drawn (a cost figure)
        self.coarse_maps = 0  # half-resolution superset maps drawn
        self._occupied = 0  # pixels of occ set (t == 1)
        if gap:
            self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))

    # -- exact checks -------------------------------------------------------
    def fits(self, fp: np.ndarray, y: int, x: int) -> bool:
        """Exact test: may footprint ``fp`` (bool, (h, w)) go at top-left (y, x)?"""
        h, w = fp.shape
        if self.exclusive:
            # uint8 views of the bool arrays: OpenCV's AND and test, about twice numpy's speed.
            return not cv2.hasNonZero(cv2.bitwise_and(self.occ[y:y + h, x:x + w].view(np.uint8), fp.view(np.uint8)))
        for k, (vy, vx, vh, vw) in enumerate(self.placed):
            if vy >= y + h or y >= vy + vh or vx >= x + w or x >= vx + vw:
                continue  # boxes apart: nothing covered
            if np.count_nonzero(self.vis[k][y:y + h, x:x + w] & fp) > self.slack[k]:
                return False
        return True

    def feasible_map(self, fp: np.ndarray) -> np.ndarray:
        """Bool map (H - h + 1, W - w + 1) of top-left corners where ``fp`` fits."""
        f = fp.astype(np.float32)
        if self.exclusive:
            if not self.occ.any():
                return np.ones((self.h - fp.shape[0] + 1, self.w - fp.shape[1] + 1), bool)
            # Counts are integers; the float DFT errs by far less than 0.5.
            return cv2.matchTemplate(self.occ.astype(np.float32), f, cv2.TM_CCORR) < 0.5
        ok = np.ones((self.h - fp.shape[0] + 1, self.w - fp.shape[1] + 1), bool)
        for k in range(len(self.placed)):
            ok &= cv2.matchTemplate(self.vis[k].astype(np.float32), f, cv2.TM_CCORR) < self.slack[k] + 0.5
        return ok

    def coarse_superset(self, fp: np.ndarray) -> np.ndarray:
        """Bool map (H - h + 1, W - w + 1) that contains every feasible corner.

        Computed at half resolution, about four times cheaper than ``feasible_map``:
        ``core(c)`` marks the 2x2 cells that the footprint covers whole for every
        placement phase (the footprint's 3x3 erosion sampled at odd padded
        coordinates), and the pixels of object k it must cover at corner p are at
        least ``sum_c core(c) * cnt_k(p // 2 + c)`` with ``cnt_k`` the 2x2 sum-pooled
        mask. Where that lower bound exceeds what may be covered, p is infeasible.
        An empty superset therefore proves that nothing fits.
        """
        ok = self._coarse(fp)
        ny, nx = self.h - fp.shape[0] + 1, self.w - fp.shape[1] + 1
        if ok is None:
            return np.ones((ny, nx), bool)
        return np.repeat(np.repeat(ok, 2, axis=0), 2, axis=1)[:ny, :nx]

    def _coarse(self, fp: np.ndarray) -> Optional[np.ndarray]:
        """The superset at half resolution (corner p is in it iff cell p // 2 is), or
        None when it holds every corner (the footprint covers no whole cell)."""
        h, w = fp.shape
        ny, nx = self.h - h + 1, self.w - w + 1
        # Erosion of the zero-padded footprint at odd padded rows/cols = erosion of
        # the footprint itself (zero border) at even rows/cols.
        core = cv2.erode(fp.view(np.uint8), _K3, borderType=cv2.BORDER_CONSTANT, borderValue=0)[0::2, 0::2]
        if not core.any():
            return None
        core = core.astype(np.float32)
        ay, ax = (ny + 1) // 2, (nx + 1) // 2  # coarse corners a = p // 2
        ry, rx = ay + core.shape[0] - 1, ax + core.shape[1] - 1  # coarse cells read
        ok = np.ones((ay, ax), bool)
        masks = [self.occ] if self.exclusive else self.vis
        limits = [0] if self.exclusive else self.slack
        for m, lim in zip(masks, limits):
            src = m[:2 * ry, :2 * rx].view(np.uint8)
            if src.shape != (2 * ry, 2 * rx):  # cells past the image edge hold nothing
                src = cv2.copyMakeBorder(src, 0, 2 * ry - src.shape[0], 0, 2 * rx - src.shape[1], cv2.BORDER_CONSTANT,
                                         value=0)
            # 2x2 sum-pool: INTER_AREA at exactly half size averages each cell.
            cnt = cv2.resize(src.astype(np.float32), (rx, ry), interpolation=cv2.INTER_AREA) * np.float32(4)
            ok &= cv2.matchTemplate(cnt, core, cv2.TM_CCORR) < lim + 0.5
        return ok

    # -- sampling -----------------------------------------------------------
    def find(self, rng: np.random.Generator, fp: np.ndarray, blind_tries: int) -> Optional[Tuple[int, int]]:
        """A uniformly drawn feasible top-left corner for ``fp``, or None if none exists."""
        h, w = fp.shape
        if h > self.h or w > self.w:
            return None
        ny, nx = self.h - h + 1, self.w - w + 1
        if not self.placed:
            return int(rng.integers(ny)), int(rng.integers(nx))
        # Three phases, each uniform over the feasible set when it succeeds (blind
        # draws; rejection from the cheap superset; the exact map), so their
        # mixture is uniform too.
        coarse, have_coarse = None, False
        if self.exclusive and (self.h * self.w - self._occupied) < CROWDED * int(np.count_nonzero(fp)):
            # Crowded: the superset first (no random numbers). If it is empty every
            # blind draw would fail: draw their numbers all the same (the stream, so
            # the image, stays what it is) and skip their exact checks.
            coarse, have_coarse = self._coarse(fp), True
            self.coarse_maps += 1
            if coarse is not None and not coarse.any():
                for _ in range(blind_tries):
                    rng.integers(ny), rng.integers(nx)
                return None
        for _ in range(blind_tries):
            y, x = int(rng.integers(ny)), int(rng.integers(nx))
            if coarse is not None and not coarse[y >> 1, x >> 1]:
                continue  # outside the superset: cannot fit (what fits() would say)
            if self.fits(fp, y, x):
                return y, x
        if not have_coarse:
            coarse = self._coarse(fp)
            self.coarse_maps += 1
        if coarse is None:
            sup = np.arange(ny * nx)
        elif not coarse.any():
            return None  # proven: nothing fits
        else:
            sup = np.flatnonzero(np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:ny, :nx])
        for _ in range(blind_tries):
            y, x = divmod(int(sup[rng.integers(sup.size)]), nx)
            if self.fits(fp, y, x):
                return y, x
        ok = self.feasible_map(fp)
        self.maps_computed += 1
        cand = np.flatnonzero(ok)
        while cand.size:
            i = int(rng.integers(cand.size))
            y, x = divmod(int(cand[i]), nx)
            if self.fits(fp, y, x):
                return y, x
            cand = np.delete(cand, i)  # float error admitted it: drop and draw again
        return None

    def add(self, fp: np.ndarray, y: int, x: int, t: Optional[float] = None) -> None:
        """Record ``fp`` placed at (y, x), on top of everything placed before.

        ``t`` is this object's own visible-fraction threshold (default the layout's
        ``t``): distractors keep theirs beside the targets'. It must not be below the
        layout's ``t``, which is the lowest of the image (a layout made with t = 1
        keeps every object whole).
        """
        h, w = fp.shape
        if self.exclusive:
            if self.gap:
                g = self.gap
                pad = cv2.dilate(np.pad(fp, g).astype(np.uint8), self._kernel).astype(bool)
                y0, x0 = y - g, x - g
                sy, sx = max(0, -y0), max(0, -x0)
                ey, ex = min(pad.shape[0], self.h - y0), min(pad.shape[1], self.w - x0)
                self.occ[y0 + sy:y0 + ey, x0 + sx:x0 + ex] |= pad[sy:ey, sx:ex]
            else:
                self.occ[y:y + h, x:x + w] |= fp
            self._occupied = int(np.count_nonzero(self.occ))
        else:
            for k, (vy, vx, vh, vw) in enumerate(self.placed):
                if vy >= y + h or y >= vy + vh or vx >= x + w or x >= vx + vw:
                    continue
                win = self.vis[k][y:y + h, x:x + w]
                covered = np.count_nonzero(win & fp)
                win &= ~fp
                self.slack[k] -= covered
            full = int(np.count_nonzero(fp))
            vis = np.zeros((self.h, self.w), bool)
            vis[y:y + h, x:x + w] = fp
            self.vis.append(vis)
            self.slack.append(full - min_visible_pixels(full, self.t if t is None else max(float(t), self.t)))
        self.placed.append((y, x, h, w))
