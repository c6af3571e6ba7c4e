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
CROWDED = 6


def _upsample2(cells: np.ndarray) -> np.ndarray:
    """Each cell of a bool map repeated 2x2 (nearest-neighbour at exactly twice the size)."""
    h, w = cells.shape
    return cv2.resize(cells.view(np.uint8), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST).view(bool)


def _overlap(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels set in both bool masks of one shape (OpenCV's AND and count on uint8
    views: about twice numpy's speed)."""
    return cv2.countNonZero(cv2.bitwise_and(a.view(np.uint8), b.view(np.uint8)))


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
        # Masks live in arrays padded to even sides, so that their 2x2 cells (the
        # coarse superset's) never straddle the edge; ``occ`` and ``vis[k]`` are views.
        self._ch, self._cw = (height + 1) // 2, (width + 1) // 2
        self._occ_pad = np.zeros((2 * self._ch, 2 * self._cw), bool)
        self.occ = self._occ_pad[:height, :width]  # union of (dilated) footprints, t == 1
        self.vis: List[np.ndarray] = []  # full-size visible mask per object, t < 1
        self._vis_pad: List[np.ndarray] = []
        # 2x2 sum-pooled masks (uint8, 0..4): the coarse superset's input, one for occ
        # (t == 1) or one per object; the boxes add() changed are summed again when
        # a superset is next asked for.
        self._cells: List[np.ndarray] = [np.zeros((self._ch, self._cw), np.uint8)] if self.exclusive else []
        self._stale: List[Tuple[int, int, int, int, int]] = []  # (mask, y0, x0, y1, x1)
        self.slack: List[int] = []  # pixels of object k that may still be covered
        self.placed: List[Tuple[int, int, int, int]] = []  # (y, x, h, w)
        self.maps_computed = 0  # exact feasible maps drawn (a cost figure)
        self.coarse_maps = 0  # half-resolution superset maps drawn
        self._occupied = 0  # pixels of occ set (t == 1)
        self._blocked = False  # block() marked pixels no footprint may cover
        if gap:
            self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))

    def _refresh_cells(self) -> None:
        """Sum again the 2x2 cells of every box that add() changed since the last call."""
        for k, y0, x0, y1, x1 in self._stale:
            pad = self._occ_pad if self.exclusive else self._vis_pad[k]
            cy0, cx0, cy1, cx1 = y0 >> 1, x0 >> 1, (y1 + 1) >> 1, (x1 + 1) >> 1
            u = pad[2 * cy0:2 * cy1, 2 * cx0:2 * cx1].view(np.uint8)
            rows = u[0::2] + u[1::2]  # pairs of rows, then pairs of columns
            np.add(rows[:, 0::2], rows[:, 1::2], out=self._cells[k][cy0:cy1, cx0:cx1])
        self._stale.clear()

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
            if _overlap(self.vis[k][y:y + h, x:x + w], fp) > self.slack[k]:
                return False
        return True

    def feasible_map(self, fp: np.ndarray, box: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
        """Bool map (H - h + 1, W - w + 1) of top-left corners where ``fp`` fits.

        With ``box`` = (y0, y1, x0, x1) only the corners inside it are computed, and
        the map is False elsewhere (for a caller that knows nothing fits there).
        """
        h, w = fp.shape
        ny, nx = self.h - h + 1, self.w - w + 1
        y0, y1, x0, x1 = box or (0, ny, 0, nx)
        f = fp.view(np.uint8)
        # Counts are integers; OpenCV's float DFT errs by far less than 0.5.
        if self.exclusive:
            if not self.occ.any():
                part = np.ones((y1 - y0, x1 - x0), bool)
            else:
                part = cv2.matchTemplate(self.occ[y0:y1 + h - 1, x0:x1 + w - 1].view(np.uint8), f, cv2.TM_CCORR) < 0.5
        else:
            part = np.ones((y1 - y0, x1 - x0), bool)
            for k in range(len(self.placed)):
                win = self.vis[k][y0:y1 + h - 1, x0:x1 + w - 1].view(np.uint8)
                part &= cv2.matchTemplate(win, f, cv2.TM_CCORR) < self.slack[k] + 0.5
        if (y0, y1, x0, x1) == (0, ny, 0, nx):
            return part
        ok = np.zeros((ny, nx), bool)
        ok[y0:y1, x0:x1] = part
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
        return _upsample2(ok)[:ny, :nx]

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
        ay, ax = (ny + 1) // 2, (nx + 1) // 2  # coarse corners a = p // 2
        ch, cw = core.shape
        ry, rx = ay + ch - 1, ax + cw - 1  # coarse cells read (within the padded sides)
        self._refresh_cells()
        ok = None
        for cells, lim in zip(self._cells, [0] if self.exclusive else self.slack):
            # cells[i, j]: pixels of the mask in the 2x2 cell (i, j), 0 past the image
            # edge. Correlated as uint8 (OpenCV's float32 DFT; its error is far below
            # the 0.5 that separates integers, as with float input).
            hit = cv2.matchTemplate(cells[:ry, :rx], core, cv2.TM_CCORR) < lim + 0.5
            ok = hit if ok is None else np.logical_and(ok, hit, out=ok)
        return np.ones((ay, ax), bool) if ok is None else ok

    # -- sampling -----------------------------------------------------------
    def find(self, rng: np.random.Generator, fp: np.ndarray, blind_tries: int, area: Optional[int] = None
             ) -> Optional[Tuple[int, int]]:
        """A uniformly drawn feasible top-left corner for ``fp``, or None if none exists
        (``area``: its pixels, when the caller has counted them already)."""
        h, w = fp.shape
        if h > self.h or w > self.w:
            return None
        ny, nx = self.h - h + 1, self.w - w + 1
        if not self.placed and not self._blocked:
            return int(rng.integers(ny)), int(rng.integers(nx))
        # Three phases, each uniform over the feasible set when it succeeds (blind
        # draws; rejection from the cheap superset; the exact map), so their
        # mixture is uniform too.
        coarse, have_coarse = None, False
        crowded = self.exclusive and (self.h * self.w - self._occupied) < CROWDED * (
            int(np.count_nonzero(fp)) if area is None else area)
        if crowded:
            # Crowded: the superset first (no random numbers). If it is empty every
            # blind draw would fail: draw their numbers all the same (the stream, so
            # the image, stays what it is) and skip their exact checks.
            coarse, have_coarse = self._coarse(fp), True
            self.coarse_maps += 1
            if coarse is not None and not coarse.any():
                # One call with per-element bounds draws the same numbers as the
                # alternating scalar calls (and leaves the same stream behind).
                rng.integers(np.array((ny, nx) * blind_tries, np.int64))
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
        full = None
        if coarse is None:
            sup = np.arange(ny * nx)
        elif not coarse.any():
            return None  # proven: nothing fits
        else:
            full = _upsample2(coarse)[:ny, :nx]
            sup = np.flatnonzero(full)
        for _ in range(blind_tries):
            y, x = divmod(int(sup[rng.integers(sup.size)]), nx)
            if self.fits(fp, y, x):
                return y, x
        box = None
        if full is not None:  # the exact map is needed only inside the superset's box
            rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
            box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        ok = self.feasible_map(fp, box)
        self.maps_computed += 1
        cand = np.flatnonzero(ok)
        while cand.size:
            i = int(rng.integers(cand.size))
            y, x = divmod(int(cand[i]), nx)
            if self.fits(fp, y, x):
                return y, x
            cand = np.delete(cand, i)  # float error admitted it: drop and draw again
        return None

    def block(self, mask: np.ndarray) -> None:
        """Mark the pixels of the bool (H, W) ``mask`` as taken, so that no footprint
        covers them (a region the objects must stay in; t == 1 only)."""
        if not self.exclusive:
            raise ValueError("block() needs t == 1")
        self.occ |= mask
        self._stale.append((0, 0, 0, self.h, self.w))
        self._occupied = int(np.count_nonzero(self.occ))
        self._blocked = True

    def add(self, fp: np.ndarray, y: int, x: int, t: Optional[float] = None, area: Optional[int] = None) -> None:
        """Record ``fp`` placed at (y, x), on top of everything placed before (``area``:
        its pixels, when the caller has counted them already).

        ``t`` is this object's own visible-fraction threshold (default the layout's
        ``t``): distractors keep theirs beside the targets'. It must not be below the
        layout's ``t``, which is the lowest of the image (a layout made with t = 1
        keeps every object whole).
        """
        h, w = fp.shape
        if self.exclusive:
            if self.gap:
                g = self.gap
                # (OpenCV's constant border: the bytes of np.pad at a tenth of its time)
                pad = cv2.dilate(cv2.copyMakeBorder(fp.view(np.uint8), g, g, g, g, cv2.BORDER_CONSTANT, value=0),
                                 self._kernel).view(bool)
                y0, x0 = y - g, x - g
                sy, sx = max(0, -y0), max(0, -x0)
                ey, ex = min(pad.shape[0], self.h - y0), min(pad.shape[1], self.w - x0)
                self.occ[y0 + sy:y0 + ey, x0 + sx:x0 + ex] |= pad[sy:ey, sx:ex]
                self._stale.append((0, y0 + sy, x0 + sx, y0 + ey, x0 + ex))
            else:
                self.occ[y:y + h, x:x + w] |= fp
                self._stale.append((0, y, x, y + h, x + w))
            self._occupied = int(np.count_nonzero(self.occ))
        else:
            for k, (vy, vx, vh, vw) in enumerate(self.placed):
                if vy >= y + h or y >= vy + vh or vx >= x + w or x >= vx + vw:
                    continue
                win = self.vis[k][y:y + h, x:x + w]
                covered = _overlap(win, fp)
                if covered:
                    cv2.subtract(win.view(np.uint8), fp.view(np.uint8), dst=win.view(np.uint8))  # 0/1: win AND NOT fp
                    self.slack[k] -= covered
                    self._stale.append((k, y, x, y + h, x + w))
            full = int(np.count_nonzero(fp)) if area is None else area
            vis_pad = np.zeros((2 * self._ch, 2 * self._cw), bool)
            vis_pad[y:y + h, x:x + w] = fp
            self._stale.append((len(self._cells), y, x, y + h, x + w))
            self._vis_pad.append(vis_pad)
            self.vis.append(vis_pad[:self.h, :self.w])
            self._cells.append(np.zeros((self._ch, self._cw), np.uint8))
            self.slack.append(full - min_visible_pixels(full, self.t if t is None else max(float(t), self.t)))
        self.placed.append((y, x, h, w))
