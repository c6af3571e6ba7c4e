"""One composite: background crop, N transformed objects placed and blended, labels.

``Composer.compose(seed, index)`` draws everything for global image ``index`` from
``image_rng(seed, index)`` and returns ``(image, label_map, record)``.

Label-map rule: objects are pasted in order 1..N, each on top of the previous ones;
a pixel belongs to the topmost object whose blend alpha there is >= 0.5, else to the
background (0). All areas are counted from pixels: ``object_full_areas[k]`` is the
number of pixels with alpha >= 0.5 of object k (what it would cover alone),
``object_areas[k]`` the pixels of label k+1 in the final label map (visible after
occlusion), ``cumulative_area`` their sum. Objects lie fully inside the image, so no
area is lost to clipping.

Re-sampling: when a copy has no feasible position, the whole layout is drawn again
(sizes, rotations, flips, positions), keeping N, the object identities and the
background. In ``decorrelated`` area mode the target cumulative area is kept too,
so its distribution stays independent of N. ``layout_tries`` records how many
layouts an image needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .config import SceneConfig
from .pack import AssetPack
from .placement import Layout, PlacementError, min_visible_pixels
from .rng import image_rng
from .schema import new_records, record_spec
from .transforms import ALPHA_THRESHOLD_U8, MipAsset, Patch, sample_color, transform_patch

__all__ = ["Composer", "Copy", "Draw", "PlacementError", "check_feasible", "copy_scales", "field_area",
           "new_records", "record_spec", "DEFAULT_LAYOUT_BUDGET"]

# Layouts per image for a Composer made without a survey or an explicit max_layouts.
DEFAULT_LAYOUT_BUDGET = 10_000


def copy_scales(scene: SceneConfig, jitter: np.ndarray, long_sides: Optional[np.ndarray], footprints: np.ndarray,
                ref_side: float, target: float) -> np.ndarray:
    """Scale of each copy relative to its asset: the one sizing rule, used by the
    compositor (with drawn jitter) and by ``check_feasible`` (with extreme jitter).

    ``independent`` area mode: longer side = ``ref_side`` x jitter. ``decorrelated``:
    the copies share the target cumulative area ``target`` in proportion to jitter**2,
    each scaled so its footprint (alpha >= 0.5 pixels at scale 1) covers its share.
    """
    if scene.area_mode == "independent":
        return ref_side * jitter / long_sides
    w = jitter ** 2
    areas = target * w / w.sum()
    return np.sqrt(areas / np.maximum(np.asarray(footprints, np.float64), 1))


def _patch_dims(h: int, w: int, s: float, scene: SceneConfig) -> Tuple[float, float]:
    """Smallest patch (height, width) of an h x w object at scale s that the config can
    draw: at the allowed angle closest to 0, plus the feathering margin."""
    lo, hi = scene.rotation_range
    a = math.radians(0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi)))
    c, si = abs(math.cos(a)), abs(math.sin(a))
    pad = 2 * (math.ceil(3 * scene.feather_sigma) + 1) if scene.blend == "feather" else 0
    return (h * c + w * si) * s + pad, (w * c + h * si) * s + pad


def check_feasible(scene: SceneConfig, objects: AssetPack) -> None:
    """Raise ``ValueError`` when the request cannot be met at all.

    Impossible means: even the smallest copies the config allows of the most compact
    object cannot fit (their patch, feathering margin included, is larger than the
    image, or ``max_count`` of them need more pixels than the image has at the
    occlusion threshold); or, in ``decorrelated`` mode, a copy of the largest target
    area (the whole of A at N = 1) does not fit alone. Requests that are merely hard
    are handled by re-sampling layouts and fail with ``PlacementError`` after
    ``max_layouts`` tries.
    """
    if not objects.objects:
        raise ValueError("no objects to paste")
    H, W = scene.size
    probs = scene.count_distribution()
    if scene.max_count == 0 or not any(p > 0 for p in probs[1:]):
        return
    side = min(H, W)
    best_area, best_dims = math.inf, None
    j_lo, j_hi = scene.scale_jitter
    counts = [n for n in range(1, scene.max_count + 1) if probs[n] > 0]
    for o in objects.objects:
        h, w = o.alpha.shape
        fp = int(np.count_nonzero(o.alpha >= ALPHA_THRESHOLD_U8))
        if fp == 0:
            continue
        if scene.area_mode == "independent":
            s = copy_scales(scene, np.array([j_lo]), np.array([max(h, w)], np.float64), np.array([fp]),
                            scene.ref_side_range[0] * side, math.nan)[0]
        else:
            # The smallest copy: a low-jitter one among max N high-jitter ones at the
            # smallest A; the largest: a high-jitter one among min N low-jitter ones
            # at the largest A.
            n_max, n_min = max(counts), min(counts)
            fps = np.full(max(n_max, n_min), fp)
            s = copy_scales(scene, np.array([j_lo] + [j_hi] * (n_max - 1)), None, fps[:n_max],
                            math.nan, scene.area_fraction_range[0] * H * W)[0]
            large = copy_scales(scene, np.array([j_hi] + [j_lo] * (n_min - 1)), None, fps[:n_min],
                                math.nan, scene.area_fraction_range[1] * H * W)[0]
            bh, bw = _patch_dims(h, w, large, scene)
            if bh > H or bw > W:
                raise ValueError(
                    f"object {o.name!r} at the largest target area ({scene.area_fraction_range[1]:g} of the image) "
                    f"needs {bh:.0f}x{bw:.0f} px, more than the {H}x{W} image: lower area_fraction_range")
        area = fp * s * s
        if area < best_area:
            best_area, best_dims = area, _patch_dims(h, w, s, scene)
    if best_dims is None:
        raise ValueError("every object has an empty mask")
    if best_dims[0] > H or best_dims[1] > W:
        raise ValueError(f"objects cannot fit: the smallest allowed copy is {best_dims[0]:.0f}x{best_dims[1]:.0f} px, "
                         f"larger than the {H}x{W} image")
    # Footprints stay inside the image less the feathering tail (the blurred alpha
    # must fit too), so that inner area is the pixel budget.
    m = math.ceil(3 * scene.feather_sigma) if scene.blend == "feather" else 0
    budget = max(H - 2 * m, 0) * max(W - 2 * m, 0)
    for n in range(1, scene.max_count + 1):
        if probs[n] == 0:
            continue
        need = n * best_area * scene.visible_threshold(n)
        if scene.min_gap:
            need += n * 2 * scene.min_gap * math.sqrt(best_area) * 2
        if need > budget:
            raise ValueError(f"objects cannot fit: {n} copies at the smallest allowed size need about {need:.0f} px "
                             f"but the image has {budget} usable: lower ref_side_range/area_fraction_range or min_visible")


def _f32(x) -> float:
    return float(np.float32(x))


@dataclass
class Copy:
    """One pasted object: the transform drawn for it and, once placed, its patch and
    top-left position. Shared by sampling, rendering, recording and replay."""

    scale: float
    angle: float
    flip: bool
    color: Tuple[float, float, float]
    patch: Optional[Patch] = None
    pos: Optional[Tuple[int, int]] = None


@dataclass
class Draw:
    """Everything drawn for one image (``Composer._sample``): what the renderer and the
    record need, and nothing else."""

    n: int                      # objects pasted
    t: float                    # visible-fraction threshold used
    bid: int                    # background pack index
    crop: Tuple[int, int, int, int]  # y, x, h, w in the prescaled background
    ids: np.ndarray             # object pack index per copy, (n,)
    copies: List[Copy]
    ref_side: float             # reference side in pixels (independent mode) else NaN
    target: float               # target cumulative area (decorrelated mode) else NaN
    tries: int                  # layouts drawn
    maps: int                   # exact feasible-position maps computed
    redraws: int = 0            # objects replaced by the unfit="redraw" rule


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
    left = sub.argmax(axis=1)
    right = m.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    pts = np.concatenate([np.stack([left, rows], 1), np.stack([right, rows], 1)]).astype(np.int32)
    return float(cv2.contourArea(cv2.convexHull(pts)))


class Composer:
    """Makes composites from a scene config and asset packs.

    Parameters
    ----------
    scene : SceneConfig
    objects : AssetPack
        Pack with at least one object.
    backgrounds : AssetPack
        Pack with at least one background.
    layout_budget : int, optional
        Layouts an image may draw (see :meth:`set_layout_plan`).
    unfit : dict of int -> list of int, optional
        N -> objects to redraw (see :meth:`set_layout_plan`).

    Attributes
    ----------
    scene : SceneConfig
    objects, backgrounds : AssetPack
        The packs given.
    mips : list of MipAsset
        Each object with its pyramid of halvings.
    record_spec : dict
        The per-image record fields (``synthcount.schema.record_spec``).
    layout_budget : int
    bg_prescale : list of float
        Factor each background was downscaled by before crops are drawn.
    """

    def __init__(self, scene: SceneConfig, objects: AssetPack, backgrounds: AssetPack, *,
                 layout_budget: Optional[int] = None, unfit: Optional[Dict[int, Sequence[int]]] = None):
        if not objects.objects:
            raise ValueError("objects: the pack has no objects")
        if not backgrounds.backgrounds:
            raise ValueError("backgrounds: the pack has no backgrounds")
        self.scene = scene
        self.objects = objects
        self.backgrounds = backgrounds  # the pack, like ``objects``
        self._bg_small, self.bg_prescale = self._prescale(backgrounds.backgrounds)
        self.mips: List[MipAsset] = [MipAsset(o) for o in objects.objects]
        self.record_spec = record_spec(scene.max_count)
        self._probs = np.asarray(scene.count_distribution(), np.float64)
        self._probs /= self._probs.sum()
        self._cdf = self._probs.cumsum()
        self._cdf /= self._cdf[-1]
        self.set_layout_plan(layout_budget, unfit)

    def set_layout_plan(self, layout_budget: Optional[int] = None, unfit: Optional[Dict[int, Sequence[int]]] = None
                        ) -> None:
        """Set how many layouts an image may draw and which objects cannot be laid out
        N times (both from the layout survey, ``synthcount.survey``).

        The budget is the config's ``max_layouts`` if set, else ``layout_budget``, else
        ``DEFAULT_LAYOUT_BUDGET`` (a Composer made by hand). With ``unfit`` given, an
        image drawing an unfit object for its N draws another from those left
        (``SceneConfig.unfit = "redraw"``).
        """
        self.layout_budget = int(self.scene.max_layouts or layout_budget or DEFAULT_LAYOUT_BUDGET)
        self.unfit: Dict[int, frozenset] = {int(n): frozenset(int(i) for i in ids) for n, ids in (unfit or {}).items()
                                            if len(ids)}
        self._fit_ids = {n: np.array([i for i in range(len(self.mips)) if i not in bad], np.int64)
                         for n, bad in self.unfit.items()}
        empty = sorted(n for n, f in self._fit_ids.items() if len(f) == 0)
        if empty:
            raise ValueError(f"no object can be laid out {empty[0]} times: nothing to redraw from")

    def _prescale(self, bgs):
        """Downscale each background once (INTER_AREA) so that the smallest allowed
        crop maps to the output at about 1:1. Every crop is then shrunk by at most
        1 / sqrt(min crop fraction) (1.41 by default), which a bilinear resize does
        without aliasing, instead of paying for INTER_AREA per composite. Crops are
        drawn (and recorded in ``bg_crop``) in the prescaled background's pixels;
        ``Composer.bg_prescale[id]`` is the factor applied."""
        H, W = self.scene.size
        lo = self.scene.bg_scale_range[0]
        small, factor = [], []
        for b in bgs:
            hb, wb = b.shape[:2]
            k = math.sqrt(H * W / (lo * hb * wb))
            if k < 1.0:
                size = (max(1, int(round(wb * k))), max(1, int(round(hb * k))))
                b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
                factor.append(size[0] / wb)
            else:
                factor.append(1.0)
            # Kept as RGBA: OpenCV's bit-exact resize runs about twice as fast on 4
            # channels as on 3, and computes each channel alone (the same RGB bytes).
            small.append(cv2.cvtColor(b, cv2.COLOR_RGB2RGBA))
        return small, factor

    # -- sampling -----------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> Tuple[int, Tuple[int, int, int, int]]:
        H, W = self.scene.size
        bid = int(rng.integers(len(self._bg_small)))
        hb, wb = self._bg_small[bid].shape[:2]
        frac = rng.uniform(*self.scene.bg_scale_range)
        r = W / H
        ch = math.sqrt(frac * hb * wb / r)
        cw = ch * r
        if ch > hb:
            ch, cw = hb, hb * r
        if cw > wb:
            ch, cw = wb / r, wb
        ch, cw = max(1, min(hb, int(round(ch)))), max(1, min(wb, int(round(cw))))
        y, x = int(rng.integers(hb - ch + 1)), int(rng.integers(wb - cw + 1))
        return bid, (y, x, ch, cw)

    def _scales(self, rng: np.random.Generator, ids: np.ndarray, ref_side: float, target: float) -> np.ndarray:
        jit = rng.uniform(*self.scene.scale_jitter, size=len(ids))
        longs = np.array([self.mips[i].long_side for i in ids], np.float64)
        fps = np.array([self.mips[i].footprint_area for i in ids], np.float64)
        return copy_scales(self.scene, jit, longs, fps, ref_side, target)

    def compose(self, seed: int, index: int) -> Tuple[np.ndarray, np.ndarray, dict]:
        """Image ``index`` of the dataset with root ``seed``.

        Returns
        -------
        image : ndarray, uint8, (H, W, 3)
        label_map : ndarray, uint8, (H, W)
            0 background, k for the k-th pasted object.
        record : dict
            Every field of ``record_spec`` (numpy scalars / fixed-shape arrays).

        Raises
        ------
        PlacementError
            If no layout fitted within ``max_layouts`` tries.
        """
        H, W = self.scene.size
        images = np.empty((1, H, W, 3), np.uint8)
        maps = np.empty((1, H, W), np.uint8)
        recs = new_records(self.record_spec, 1)
        self.compose_into(seed, index, images, maps, recs, 0)
        return images[0], maps[0], {k: v[0] for k, v in recs.items()}

    def compose_into(self, seed: int, index: int, images: np.ndarray, label_maps: np.ndarray,
                     records: Dict[str, np.ndarray], row: int, record_row: Optional[int] = None) -> None:
        """Like ``compose``, writing into row ``row`` of preallocated batch arrays.

        ``images`` (n, H, W, 3) uint8 and ``label_maps`` (n, H, W) uint8 must be
        C-contiguous; ``records`` comes from ``new_records`` (its "absent" fill values
        are relied on), written at ``record_row`` (default ``row``: the generator
        keeps a whole shard's records but only a block of its images). This is the
        hot path of dataset generation: no per-image allocation of records.
        """
        rng = image_rng(seed, index)
        draw = self._sample(rng, index)
        self._render_into(draw.bid, draw.crop, draw.copies, images[row], label_maps[row])
        self._record_into(records, row if record_row is None else record_row, index, draw, label_maps[row])

    def _sample(self, rng: np.random.Generator, index: int) -> Draw:
        """Draw N, background, objects, transforms and positions (all randomness)."""
        sc = self.scene
        H, W = sc.size
        # What rng.choice(len(p), p=p) does, without its argument checks per image:
        # one uniform double located in the normalised cumulative distribution.
        n = int(self._cdf.searchsorted(rng.random(), side="right")) if len(self._probs) > 1 else 0
        t = sc.visible_threshold(n)
        bid, crop = self._background(rng)
        if sc.mode == "same" or n == 0:
            ids = np.full(n, int(rng.integers(len(self.mips))), np.int64)
        else:
            ids = rng.choice(len(self.mips), size=n, replace=n > len(self.mips)).astype(np.int64)
        redraws = self._redraw_unfit(rng, ids) if n and self.unfit.get(n) else 0
        target = float(np.exp(rng.uniform(*np.log(sc.area_fraction_range))) * H * W) if sc.area_mode == "decorrelated" and n else math.nan
        maps = 0
        for tries in range(1, self.layout_budget + 1):
            copies, ref_side, m = self.try_layout(rng, ids, t, target)
            maps += m
            if copies is not None:
                break
        else:
            names = sorted({self.objects.objects[i].name for i in ids})
            raise PlacementError(
                f"image {index}: no layout of {n} x {', '.join(names)} fitted at min_visible={t:g} in "
                f"{self.layout_budget} tries (a chance below the planned failure probability); "
                "lower the object sizes or min_visible")
        return Draw(n=n, t=t, bid=bid, crop=crop, ids=ids, copies=copies, ref_side=ref_side, target=target,
                    tries=tries, maps=maps, redraws=redraws)

    def _redraw_unfit(self, rng: np.random.Generator, ids: np.ndarray) -> int:
        """Replace, in place, objects that the layout survey found cannot be laid out
        N times (``unfit="redraw"``) by objects drawn uniformly from those that can,
        from the image's own stream. Returns how many were replaced."""
        n = len(ids)
        bad = self.unfit[n]
        fit = self._fit_ids[n]
        k = 0
        if self.scene.mode == "same":
            if int(ids[0]) in bad:
                ids[:] = fit[int(rng.integers(len(fit)))]
                k = n
            return k
        for j in range(n):
            if int(ids[j]) in bad:
                # Keep the objects of a mixed image distinct where the fit ones allow it.
                free = np.setdiff1d(fit, ids) if len(fit) >= n else fit
                ids[j] = free[int(rng.integers(len(free)))]
                k += 1
        return k

    def try_layout(self, rng: np.random.Generator, ids: np.ndarray, t: float, target: float
                   ) -> Tuple[Optional[List["Copy"]], float, int]:
        """Draw one whole layout of the objects ``ids`` at visibility ``t``.

        Returns ``(copies, ref_side, maps)``: the placed copies (None when a copy had no
        feasible position), the reference side drawn (independent mode, else NaN) and
        the exact feasible-position maps computed.
        """
        sc = self.scene
        H, W = sc.size
        n = len(ids)
        ref_side = math.nan
        if sc.area_mode == "independent":
            ref_side = float(rng.uniform(*sc.ref_side_range) * min(H, W))
        scales = self._scales(rng, ids, ref_side, target)
        copies = []
        for k in range(n):
            # Parameters are rounded to the float32 the record stores, so that
            # replaying a record reproduces the image bit for bit.
            angle = _f32(rng.uniform(*sc.rotation_range))
            flip = bool(rng.random() < sc.flip_p)
            color = tuple(_f32(v) for v in sample_color(rng, sc.color_jitter))
            copies.append(Copy(scale=_f32(scales[k]), angle=angle, flip=flip, color=color))
        layout = Layout(H, W, t, sc.min_gap)
        # At t = 1 pasting order cannot change any label, so place the largest
        # copies first (they are the hard ones); at t < 1 order is z-order.
        # Patches are warped only when their turn comes: a layout that fails
        # early does not pay for the rest.
        if t >= 1.0:
            order = sorted(range(n), key=lambda k: -(copies[k].scale ** 2) * self.mips[ids[k]].footprint_area)
        else:
            order = range(n)
        need = 0
        for k in order:
            c = copies[k]
            patch = c.patch = transform_patch(self.mips[ids[k]], c.scale, c.angle, c.flip, sc.blend, sc.feather_sigma)
            if patch is None or patch.full_area == 0:
                return None, ref_side, layout.maps_computed  # vanished at this scale
            need += min_visible_pixels(patch.full_area, t)
            if need > H * W:
                # Provably impossible: the pixels that must stay visible exceed the image.
                return None, ref_side, layout.maps_computed
            pos = layout.find(rng, patch.footprint, sc.max_tries_per_object)
            if pos is None:
                return None, ref_side, layout.maps_computed
            layout.add(patch.footprint, *pos)
            c.pos = pos
        return copies, ref_side, layout.maps_computed

    def replay(self, record: dict) -> Tuple[np.ndarray, np.ndarray]:
        """Render an image again from its stored record (no random numbers drawn).

        Returns the same ``(image, label_map)`` as the ``compose`` call that made the
        record, given the same asset packs and scene config.
        """
        sc = self.scene
        copies = []
        for k in range(int(record["count"])):
            scale, angle = float(record["object_scale"][k]), float(record["object_angle"][k])
            flip = bool(record["object_flip"][k])
            patch = transform_patch(self.mips[int(record["object_ids"][k])], scale, angle, flip, sc.blend, sc.feather_sigma)
            pos = tuple(int(v) for v in record["object_position"][k])
            copies.append(Copy(scale=scale, angle=angle, flip=flip, patch=patch, pos=pos,
                               color=tuple(float(c) for c in record["object_color"][k])))
        H, W = sc.size
        image, label_map = np.empty((H, W, 3), np.uint8), np.empty((H, W), np.uint8)
        self._render_into(int(record["background_id"]), tuple(int(v) for v in record["bg_crop"]), copies, image, label_map)
        return image, label_map

    # -- rendering (draws no random numbers) ---------------------------------
    def _render_into(self, bid: int, crop, copies, image: np.ndarray, label_map: np.ndarray) -> None:
        H, W = self.scene.size
        y, x, ch, cw = crop  # in the prescaled background's pixels
        src = self._bg_small[bid][y:y + ch, x:x + cw]
        if (ch, cw) != (H, W):
            # The bit-exact variant: the same bytes on every CPU.
            cv2.cvtColor(cv2.resize(src, (W, H), interpolation=cv2.INTER_LINEAR_EXACT), cv2.COLOR_RGBA2RGB, dst=image)
        else:
            image[...] = src[..., :3]
        label_map[...] = 0
        for k, c in enumerate(copies, start=1):
            (py, px), patch = c.pos, c.patch
            patch.paste(image, py, px, c.color)
            h, w = patch.shape
            label_map[py:py + h, px:px + w][patch.footprint] = k

    def _record_into(self, rec: Dict[str, np.ndarray], row: int, index: int, draw: "Draw", label_map: np.ndarray) -> None:
        n = draw.n
        rec["index"][row] = index
        rec["count"][row] = n
        rec["min_visible"][row] = draw.t
        rec["background_id"][row] = draw.bid
        rec["bg_crop"][row] = draw.crop
        rec["ref_side"][row] = draw.ref_side
        rec["target_area"][row] = draw.target
        rec["layout_tries"][row] = draw.tries
        rec["placement_maps"][row] = draw.maps
        rec["unfit_redraws"][row] = draw.redraws
        if n == 0:
            return
        rec["object_ids"][row, :n] = draw.ids
        total = 0
        box = [label_map.shape[0], label_map.shape[1], 0, 0]  # union of the patches, for the hull
        for k, c in enumerate(draw.copies):
            (py, px), patch = c.pos, c.patch
            h, w = patch.shape
            rec["object_full_areas"][row, k] = patch.full_area
            rec["object_position"][row, k] = (py, px)
            rec["object_patch_size"][row, k] = (h, w)
            rec["object_scale"][row, k] = c.scale
            rec["object_angle"][row, k] = c.angle
            rec["object_flip"][row, k] = c.flip
            rec["object_color"][row, k] = c.color
            box = [min(box[0], py), min(box[1], px), max(box[2], py + h), max(box[3], px + w)]
            # Object k's pixels lie inside its patch window: count them there, from
            # the final label map (occlusion by later objects included).
            vis = (label_map[py:py + h, px:px + w] == k + 1).view(np.uint8)
            mo = cv2.moments(vis, binaryImage=True)
            area = int(mo["m00"])
            rec["object_areas"][row, k] = area
            total += area
            if area:
                bx, by, bw, bh = cv2.boundingRect(vis)
                rec["object_boxes"][row, k] = (py + by, px + bx, py + by + bh, px + bx + bw)
                rec["object_centroids"][row, k] = (py + mo["m01"] / area, px + mo["m10"] / area)
        rec["cumulative_area"][row] = total
        rec["mean_item_area"][row] = total / n
        rec["field_area"][row] = field_area(label_map[box[0]:box[2], box[1]:box[3]])
