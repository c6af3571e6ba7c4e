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

Distractors (``SceneConfig.distractors``): K uncounted objects, drawn from the
image's distractor stream ``image_rng(seed, index, DISTRACTOR_STREAM)`` (K, their
objects, and per layout their transforms and positions), so that the main stream
draws exactly what it draws without them. They take labels N+1..N+K: pasted after
the targets, on top of them, under the same placement rule at their own threshold
(``distractor_min_visible``), which never lets a distractor cover more of a target
than the targets' t allows. Each layout places the targets first, with the draws
of the image without distractors, then the distractors; if either fails the whole
layout is redrawn (the distractor stream is not touched by a failed target layout).
So the targets of an image are exactly those of the same image made without
distractors whenever the distractors fit into its first fitting target layout.
Their objects come from the object pool less the image's target identities (or
from ``distractor_objects``, less assets identical to a target). Their sizes follow
the targets' sizing rule: in independent mode the layout's reference side (shared
with the targets) x their own jitter, so size does not tell them apart; in
decorrelated mode an item area A' / N' drawn once per image as a target image draws
A / N, but independently of the image's own A and N, so that the distractors carry
no information about N (sharing A / N would make their size a cue to it).
``count``, ``cumulative_area``, ``mean_item_area`` and ``field_area`` are about the
targets only; per-object fields cover both, told apart by ``object_role``.

Exemplars: ``exemplar_boxes`` holds the visible-pixel boxes of up to 3 targets
(FSC-147 style), in label order; with more than 3 visible targets, 3 are chosen
uniformly from the image's exemplar stream ``image_rng(seed, index, EXEMPLAR_STREAM)``.

Classes (``SceneConfig.classes`` C, mixed mode): the image draws C distinct objects
and each target is a copy of one of them, uniformly; ``class_counts`` holds the
targets per class, ``class_ids`` the classes, and ``count`` the total N.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .config import SceneConfig
from .pack import AssetPack
from .placement import Layout, PlacementError, min_visible_pixels
from .properties import derived, field_area, object_contours
from .rng import DISTRACTOR_STREAM, EXEMPLAR_STREAM, ImageStreams, uniform_from
from .schema import MAX_EXEMPLARS, ROLE_DISTRACTOR, ROLE_TARGET, new_records, record_spec
from .stream import LazyAssets, _one_array, is_streamed, object_dims, stage
from .transforms import ALPHA_THRESHOLD_U8, RGBA_PAD, MipAsset, Patch, transform_patch

__all__ = ["Composer", "Copy", "Draw", "Distractors", "PlacementError", "check_feasible", "copy_scales",
           "distractor_scales", "field_area", "new_records", "record_spec", "DEFAULT_LAYOUT_BUDGET",
           "DISTRACTOR_REDRAW_AFTER"]

# Layouts per image for a Composer made without a survey or an explicit max_layouts.
DEFAULT_LAYOUT_BUDGET = 10_000
# Layouts after which a distractor layout that fails redraws the distractors' objects
# (see Composer._sample); the layout survey adds them to the budget.
DISTRACTOR_REDRAW_AFTER = 64


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


def distractor_scales(scene: SceneConfig, jitter: np.ndarray, long_sides: np.ndarray, footprints: np.ndarray,
                      ref_side: float, item_area: float) -> np.ndarray:
    """Scale of each distractor relative to its asset.

    ``independent`` area mode: longer side = ``ref_side`` x jitter (the layout's
    reference side, shared with the targets). ``decorrelated``: footprint area =
    ``item_area`` x jitter**2, ``item_area`` drawn per image like a target's A / N
    (see ``Composer.draw_distractors``). Never taken from the targets' cumulative
    area, which stays theirs alone.
    """
    if scene.area_mode == "independent":
        return copy_scales(scene, jitter, long_sides, footprints, ref_side, math.nan)
    return np.sqrt(item_area * jitter ** 2 / np.maximum(np.asarray(footprints, np.float64), 1))


def _patch_dims(h: int, w: int, s: float, scene: SceneConfig) -> Tuple[float, float]:
    """Smallest patch (height, width) of an h x w object at scale s that the config can
    draw: at the allowed angle closest to 0, plus the feathering margin."""
    lo, hi = scene.rotation_range
    a = math.radians(0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi)))
    c, si = abs(math.cos(a)), abs(math.sin(a))
    pad = 2 * (math.ceil(3 * scene.feather_sigma) + 1) if scene.blend == "feather" else 0
    return (h * c + w * si) * s + pad, (w * c + h * si) * s + pad


def check_feasible(scene: SceneConfig, objects: AssetPack, distractor_objects: Optional[AssetPack] = None) -> None:
    """Raise ``ValueError`` when the request cannot be met at all.

    Impossible means: even the smallest copies the config allows of the most compact
    object cannot fit (their patch, feathering margin included, is larger than the
    image, or ``max_count`` of them, with the most distractors an image has, need
    more pixels than the image has at the occlusion threshold); or, in
    ``decorrelated`` mode, a copy of the largest target area (the whole of A at
    N = 1) does not fit alone; or an image's targets may use every object of the
    pool that its distractors are drawn from. Requests that are merely hard are
    handled by re-sampling layouts and fail with ``PlacementError`` after
    ``max_layouts`` tries.
    """
    if not objects.objects:
        raise ValueError("no objects to paste")
    if scene.classes and scene.classes > len(objects.objects):
        raise ValueError(f"classes must be at most the {len(objects.objects)} objects of the pack, got {scene.classes}")
    if scene.design is not None:
        _check_design(scene)
        return
    if scene.max_distractors:
        _check_distractor_pool(scene, objects, distractor_objects)
    H, W = scene.size
    probs = scene.count_distribution()
    if scene.max_count == 0 or not any(p > 0 for p in probs[1:]):
        return
    side = min(H, W)
    best_area, best_dims = math.inf, None
    j_lo, j_hi = scene.scale_jitter
    counts = [n for n in range(1, scene.max_count + 1) if probs[n] > 0]
    for name, h, w, fp in object_dims(objects):  # a streamed pack: from its metadata
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
                    f"object {name!r} at the largest target area ({scene.area_fraction_range[1]:g} of the image) "
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
    # The most distractors: the layout survey tries every pair with them and would find
    # every object unfit at this N, which refuses the request in either unfit mode;
    # this says so at once.
    d_most = scene.max_distractors
    d_area = _smallest_distractor_area(scene, distractor_objects or objects, counts) if d_most else 0.0
    for n in range(1, scene.max_count + 1):
        if probs[n] == 0:
            continue
        need = n * best_area * scene.visible_threshold(n) + d_most * d_area * scene.distractor_threshold(n)
        if scene.min_gap:
            need += (n * 2 * scene.min_gap * math.sqrt(best_area) + d_most * 2 * scene.min_gap * math.sqrt(d_area)) * 2
        if need > budget:
            with_d = f" with {d_most} distractors" if d_most else ""
            raise ValueError(f"objects cannot fit: {n} copies{with_d} at the smallest allowed size need about "
                             f"{need:.0f} px but the image has {budget} usable: lower ref_side_range/"
                             f"area_fraction_range, min_visible or distractors")


def _check_design(scene: SceneConfig) -> None:
    """Refuse design ranges no layout can meet: a field disc wider than the image, or
    items under 2 pixels. The layout survey finds what is merely too hard."""
    H, W = scene.size
    lo, hi = scene.design_count
    ng = math.sqrt(lo * hi)
    (il, ih), (fl, fh) = scene.item_area_range, scene.field_area_range
    if scene.design == "dewind":
        fa_max, isa_min = fh * math.sqrt(hi / ng), il * math.sqrt(ng / hi)
    else:
        fa_max = max(fh, math.sqrt(fl * fh) * hi / ng) if "density" in scene.match else fh
        isa_min = min(il, math.sqrt(il * ih) * ng / hi) if "total-area" in scene.match else il
    if fa_max * H * W >= math.pi / 4 * min(H, W) ** 2:
        raise ValueError(f"field_area_range: the largest field area ({fa_max:.3g} of the image, at N = {hi}) is a "
                         f"disc wider than the {H}x{W} image; lower field_area_range (--field-area)")
    if isa_min * H * W < 2:
        raise ValueError(f"item_area_range: the smallest item ({isa_min * H * W:.2g} px, at N = {hi}) is under 2 "
                         f"pixels; raise item_area_range (--item-area) or the image size")


def _check_distractor_pool(scene: SceneConfig, objects: AssetPack, distractor_objects: Optional[AssetPack]) -> None:
    """Distractors drawn from the object pool itself need an object that is none of the
    image's targets: more objects than the most target identities an image has."""
    if distractor_objects is not None:
        if not distractor_objects.objects:
            raise ValueError("distractor_objects: the pack has no objects")
        return
    probs = scene.count_distribution()
    most_n = max([n for n in range(scene.max_count + 1) if probs[n] > 0], default=0)
    identities = 1 if scene.mode == "same" else (scene.classes or most_n)
    if len(objects.objects) <= identities:
        raise ValueError(f"distractors: an image's targets may use all {len(objects.objects)} objects of the pool, "
                         f"leaving none to draw distractors from; give distractor_objects (--distractor-objects) "
                         f"or more objects")


def _smallest_distractor_area(scene: SceneConfig, pack: AssetPack, counts: Sequence[int]) -> float:
    """Footprint pixels of the smallest distractor copy the config can draw from ``pack``."""
    H, W = scene.size
    j_lo = scene.scale_jitter[0]
    item = scene.area_fraction_range[0] * H * W / max(counts, default=1)  # decorrelated: the smallest A / N
    best = math.inf
    for _, h, w, fp in object_dims(pack):
        if fp == 0:
            continue
        s = distractor_scales(scene, np.array([j_lo]), np.array([max(h, w)], np.float64), np.array([fp]),
                              scene.ref_side_range[0] * min(H, W), item)[0]
        best = min(best, fp * s * s)
    if not math.isfinite(best):
        raise ValueError("every distractor object has an empty mask")
    return best


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
class Distractors:
    """The distractors one image drew (kept across its layouts, like N and the targets)."""

    ids: np.ndarray             # distractor pack index per distractor, (k,)
    t: float                    # their visible-fraction threshold
    item_area: float            # decorrelated mode: footprint area of one at jitter 1 (pixels); else NaN
    pool: Optional[np.ndarray] = None  # distractor pack indices they are drawn from
    failed: bool = False        # set by try_layout: the targets fitted, these did not


@dataclass
class Draw:
    """Everything drawn for one image (``Composer._sample``): what the renderer and the
    record need, and nothing else."""

    n: int                      # targets pasted (the count)
    t: float                    # visible-fraction threshold used
    bid: int                    # background pack index
    crop: Tuple[int, int, int, int]  # y, x, h, w in the prescaled background
    ids: np.ndarray             # object pack index per target, (n,)
    copies: List[Copy]          # the targets, then the distractors (labels 1..n+k)
    ref_side: float             # reference side in pixels (independent mode) else NaN
    target: float               # target cumulative area (decorrelated mode) else NaN
    tries: int                  # layouts drawn
    maps: int                   # exact feasible-position maps computed
    redraws: int = 0            # objects replaced by the unfit="redraw" rule
    distractors: Optional[Distractors] = None
    target_id: int = -1         # same mode: the counted object (also when n = 0); -1 in mixed mode
    class_ids: Optional[np.ndarray] = None     # classes mode: object pack index per class, (C,)
    class_counts: Optional[np.ndarray] = None  # classes mode: targets per class, (C,)
    stimulus_set: int = 0                       # design: the image's stimulus set
    design_target: Optional[Tuple[float, float, float]] = None  # design: log N, log Size, log Spacing aimed at

    @property
    def k(self) -> int:
        """Distractors pasted."""
        return 0 if self.distractors is None else len(self.distractors.ids)


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
    distractor_objects : AssetPack, optional
        Where distractors come from; None: ``objects`` (less the image's targets).

    Attributes
    ----------
    scene : SceneConfig
    objects, backgrounds, distractor_objects : AssetPack
        The packs given (``distractor_objects`` None: the object pack serves).
    mips : list of MipAsset
        Each object with its pyramid of halvings.
    dmips : list of MipAsset
        Each distractor object (``mips`` itself when they come from the object pack).
    record_spec : dict
        The per-image record fields (``synthcount.schema.record_spec``).
    layout_budget : int
    bg_prescale : list of float
        Factor each background was downscaled by before crops are drawn.
    """

    def __init__(self, scene: SceneConfig, objects: AssetPack, backgrounds: AssetPack, *,
                 layout_budget: Optional[int] = None, unfit: Optional[Dict[int, Sequence[int]]] = None,
                 distractor_objects: Optional[AssetPack] = None):
        if not objects.objects:
            raise ValueError("objects: the pack has no objects")
        if not backgrounds.backgrounds:
            raise ValueError("backgrounds: the pack has no backgrounds")
        if scene.classes and scene.classes > len(objects.objects):
            raise ValueError(f"classes must be at most the {len(objects.objects)} objects of the pack, "
                             f"got {scene.classes}")
        self.scene = scene
        self.objects = objects
        self.backgrounds = backgrounds  # the pack, like ``objects``
        self._bg_small, self.bg_prescale, self._bg_hw = self._prescale(backgrounds.backgrounds)
        self.mips: Sequence[MipAsset] = _mips(objects.objects)
        self.distractor_objects = distractor_objects
        if distractor_objects is None:
            self.dmips, self._twin = self.mips, np.arange(len(self.mips))
        else:
            if not distractor_objects.objects:
                raise ValueError("distractor_objects: the pack has no objects")
            self.dmips = _mips(distractor_objects.objects)
            self._twin = _twins(distractor_objects, objects)
        # Longer side and footprint pixels of each asset, for the sizing rule (of a
        # streamed pack, from its metadata: the pyramids are built on demand).
        dims = object_dims(objects)
        self._long = np.array([max(d[1], d[2]) for d in dims], np.float64)
        self._fp = np.array([d[3] for d in dims], np.float64)
        ddims = dims if distractor_objects is None else object_dims(distractor_objects)
        self._dlong = np.array([max(d[1], d[2]) for d in ddims], np.float64)
        self._dfp = np.array([d[3] for d in ddims], np.float64)
        # Uniforms per copy: rotation, flip, and 3 colour factors with colour jitter.
        self._per_copy = 5 if scene.color_jitter > 0 else 2
        self.record_spec = record_spec(scene.max_count, scene.max_distractors, scene.classes)
        self._probs = np.asarray(scene.count_distribution(), np.float64)
        self._probs /= self._probs.sum()
        self._cdf = self._probs.cumsum()
        self._cdf /= self._cdf[-1]
        self.set_layout_plan(layout_budget, unfit)
        self._local = threading.local()  # per-thread ImageStreams (see _streams)

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
        ``Composer.bg_prescale[id]`` is the factor applied.

        Streamed backgrounds are prescaled when first drawn, into a bounded cache;
        their prescaled sizes come from the stored shapes, by the same rule.
        Returns (prescaled backgrounds, factors, prescaled (h, w) of each)."""
        H, W = self.scene.size
        lo = self.scene.bg_scale_range[0]
        if is_streamed(bgs):
            sizes = [_prescaled_size(int(h), int(w), H, W, lo) for h, w, _ in bgs.meta["shapes"]]
            small = LazyAssets(len(bgs), _Prescaler(bgs, H, W, lo), names=bgs.names, meta={})
            return small, [s[1] / int(w) for s, (_, w, _) in zip(sizes, bgs.meta["shapes"])], sizes
        small = [_prescale_background(b, H, W, lo) for b in bgs]
        return small, [b.shape[1] / a.shape[1] for a, b in zip(bgs, small)], [b.shape[:2] for b in small]

    # -- streamed sources ------------------------------------------------------
    def streamed(self) -> List[LazyAssets]:
        """The sequences read on demand: prescaled backgrounds, object pyramids."""
        seqs = [self._bg_small, self.mips] + ([self.dmips] if self.dmips is not self.mips else [])
        return [s for s in seqs if isinstance(s, LazyAssets)]

    def stage(self, folder: str, images: int, *, workers: int = 1, progress: bool = False) -> List[str]:
        """Streamed sources: compute the prescaled backgrounds and object pyramids once
        into files under ``folder`` (``synthcount.stream.stage``), so that a cache miss
        reads them instead of computing them; what memory mode does once, at a disk
        cost instead of a memory one. Done for a sequence only when the run makes more
        images than it has items (else computing per miss costs less), and only where
        the disk has room. The items, and so the images, are the same bytes either
        way. Returns the names of what was staged; undo with :meth:`unstage`."""
        done = []
        self._unstaged = getattr(self, "_unstaged", {})
        for name, seq in (("backgrounds", self._bg_small), ("objects", self.mips), ("distractors", self.dmips)):
            if not isinstance(seq, LazyAssets) or images <= len(seq) or id(seq) in self._unstaged:
                continue
            if name == "backgrounds":
                est = sum(4 * h * w for h, w in self._bg_hw)
                enc, dec = _background_arrays, _one_array
            else:
                shapes = (self.objects if name == "objects" else self.distractor_objects).objects.meta["shapes"]
                p = 2 * RGBA_PAD
                est = int(sum((4 * (h + p) * (w + p) + h * w) * 4 // 3 for h, w, _ in shapes))
                enc, dec = _mip_arrays, _mip_from_arrays
            load = seq.load
            if stage(seq, enc, dec, folder, est, workers=workers, progress=progress, desc=f"stage {name}"):
                self._unstaged[id(seq)] = (seq, load)
                done.append(name)
        return done

    def unstage(self) -> None:
        """Read streamed sources from their source again (see :meth:`stage`)."""
        for seq, load in getattr(self, "_unstaged", {}).values():
            staged, seq.load = seq.load, load
            staged.close()
            with seq._lock:
                seq._cache.clear()
                seq._held = 0
        self._unstaged = {}

    # -- sampling -----------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> Tuple[int, Tuple[int, int, int, int]]:
        H, W = self.scene.size
        bid = int(rng.integers(len(self._bg_small)))
        hb, wb = self._bg_hw[bid]
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
        streams = self._streams(seed)
        rng = streams[0].at(index)  # image_rng(seed, index), without a SeedSequence per image
        # The distractors' own stream, used only when there can be distractors.
        drng = streams[DISTRACTOR_STREAM].at(index) if self.scene.max_distractors else None
        draw = self._sample(rng, index, drng)
        self._render_into(draw.bid, draw.crop, draw.copies, images[row], label_maps[row])
        r = row if record_row is None else record_row
        self._record_into(records, r, index, draw, label_maps[row])
        self._exemplars_into(records, r, streams[EXEMPLAR_STREAM], index, draw.n)

    def _streams(self, seed: int) -> Dict[int, ImageStreams]:
        """This thread's generators of dataset ``seed``, by stream: main (0),
        distractors, exemplars (``ImageStreams`` reuses one generator per stream, so
        each thread has its own)."""
        cached = getattr(self._local, "streams", None)
        if cached is None or cached[0].root_seed != seed:
            cached = self._local.streams = {k: ImageStreams(seed, k) for k in (0, DISTRACTOR_STREAM, EXEMPLAR_STREAM)}
        return cached

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_local"]  # per-thread generators: they do not pickle, and are remade on use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _sample(self, rng: np.random.Generator, index: int, drng: Optional[np.random.Generator] = None) -> Draw:
        """Draw N, background, objects, transforms and positions (all randomness);
        the distractors from ``drng`` (None: no distractors)."""
        sc = self.scene
        H, W = sc.size
        # What rng.choice(len(p), p=p) does, without its argument checks per image:
        # one uniform double located in the normalised cumulative distribution.
        n = int(self._cdf.searchsorted(rng.random(), side="right")) if len(self._probs) > 1 else 0
        t = sc.visible_threshold(n)
        bid, crop = self._background(rng)
        class_ids = assign = None
        first = -1
        if sc.classes:
            class_ids, assign = self._draw_classes(rng, n)
            ids = class_ids[assign]
        elif sc.mode == "same" or n == 0:
            first = int(rng.integers(len(self.mips)))
            ids = np.full(n, first, np.int64)
        else:
            ids = rng.choice(len(self.mips), size=n, replace=n > len(self.mips)).astype(np.int64)
        redraws = 0
        if n and self.unfit.get(n):
            redraws = self._redraw_unfit(rng, ids) if class_ids is None else self._redraw_unfit_classes(rng, class_ids,
                                                                                                        assign, ids)
        target_id = (int(ids[0]) if n else first) if sc.mode == "same" else -1
        if sc.design is not None:
            draw = self._sample_design(rng, index, n, t, bid, crop, ids, redraws, target_id)
            if class_ids is not None:
                draw.class_ids, draw.class_counts = class_ids, np.bincount(assign, minlength=len(class_ids))
            return draw
        target = math.nan
        if sc.area_mode == "decorrelated" and n:
            target = float(np.exp(rng.uniform(*np.log(sc.area_fraction_range))) * H * W)
        dis = None
        if drng is not None:
            # Distractors are never of an identity the image counts (its classes, too).
            exclude = np.array([target_id]) if sc.mode == "same" else (class_ids if class_ids is not None else ids)
            dis = self.draw_distractors(drng, n, exclude)
        maps = 0
        for tries in range(1, self.layout_budget + 1):
            copies, ref_side, m = self.try_layout(rng, ids, t, target, dis, drng)
            maps += m
            if copies is not None:
                break
            if dis is not None and dis.failed and tries >= DISTRACTOR_REDRAW_AFTER:
                # The distractors did not fit around the targets again: from here on
                # each layout draws their objects afresh (K and the item area stay), so
                # that an image's chance per layout is what the survey measured over
                # distractor draws. Objects kept for good could make an image far
                # harder than the survey's average (3 large compact distractors, say)
                # and exhaust its budget. Not before DISTRACTOR_REDRAW_AFTER layouts,
                # so that images made before this rule keep their bytes.
                dis.failed = False
                dis.ids = dis.pool[drng.integers(dis.pool.size, size=dis.ids.size)].astype(np.int64)
        else:
            names = sorted({self.objects.objects[i].name for i in ids})
            raise PlacementError(
                f"image {index}: no layout of {n} x {', '.join(names)} fitted at min_visible={t:g} in "
                f"{self.layout_budget} tries (a chance below the planned failure probability); "
                "lower the object sizes or min_visible")
        counts = None if class_ids is None else np.bincount(assign, minlength=len(class_ids))
        return Draw(n=n, t=t, bid=bid, crop=crop, ids=ids, copies=copies, ref_side=ref_side, target=target,
                    tries=tries, maps=maps, redraws=redraws, distractors=dis, target_id=target_id,
                    class_ids=class_ids, class_counts=counts)

    def _draw_classes(self, rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """``classes`` mode: C distinct objects, and the class of each of the n targets
        (uniform). Returns ``(class_ids (C,), assign (n,))``."""
        c = self.scene.classes
        class_ids = rng.choice(len(self.mips), size=c, replace=False).astype(np.int64)
        return class_ids, rng.integers(c, size=n).astype(np.int64)

    def _redraw_unfit_classes(self, rng: np.random.Generator, class_ids: np.ndarray, assign: np.ndarray,
                              ids: np.ndarray) -> int:
        """``unfit="redraw"`` in classes mode: a class with copies whose object cannot be
        laid out N times becomes another object, drawn from those that can and are not
        yet a class of the image (any fit one if none is left). Updates ``class_ids``
        and ``ids`` in place; returns how many copies changed object."""
        n = len(ids)
        bad, fit = self.unfit[n], self._fit_ids[n]
        k = 0
        for c in range(len(class_ids)):
            copies = int(np.count_nonzero(assign == c))
            if copies and int(class_ids[c]) in bad:
                free = np.setdiff1d(fit, class_ids)
                free = free if free.size else fit
                class_ids[c] = free[int(rng.integers(free.size))]
                k += copies
        ids[:] = class_ids[assign]
        return k

    # -- designs (SceneConfig.design) ----------------------------------------
    def _sample_design(self, rng: np.random.Generator, index: int, n: int, t: float, bid: int,
                       crop: Tuple[int, int, int, int], ids: np.ndarray, redraws: int, target_id: int) -> Draw:
        """The rest of a designed image: its targets (set, ISA, FA), then layouts until
        one meets them (``design_layout``)."""
        sset, isa, fa, aim = self.design_targets(rng, index, n)
        maps = 0
        sc = self.scene
        for tries in range(1, self.layout_budget + 1):
            if tries > 1 and sc.mode == "mixed" and not sc.classes:
                # Mixed items are drawn per layout: some shapes cannot make up an area
                # to a pixel at small sizes, and another draw of them can.
                ids = rng.choice(len(self.mips), size=n, replace=n > len(self.mips)).astype(np.int64)
            copies, m = self.design_layout(rng, ids, isa, fa)
            maps += m
            if copies is not None:
                break
        else:
            raise PlacementError(
                f"image {index}: no layout of {n} items met the design (item area {isa:.1f} px, field area "
                f"{fa:.1f} px, tolerance {self.scene.design_tolerance:g}) in {self.layout_budget} tries; narrow "
                f"item_area_range / field_area_range (--item-area / --field-area)")
        return Draw(n=n, t=t, bid=bid, crop=crop, ids=ids, copies=copies, ref_side=math.nan, target=n * isa,
                    tries=tries, maps=maps, redraws=redraws, target_id=target_id, stimulus_set=sset,
                    design_target=aim)

    def design_targets(self, rng: np.random.Generator, index: int, n: int
                       ) -> Tuple[int, float, float, Tuple[float, float, float]]:
        """An image's design: ``(stimulus_set, ISA px, FA px, (log N, log Size, log Spacing))``.

        Two uniforms are drawn whatever the set, so every set uses the stream alike.
        ``dewind``: log Size and log Spacing uniform over their ranges (see
        ``SceneConfig.item_area_range``), ISA = sqrt(Size / N), FA = sqrt(Spacing N).
        ``match``: the set is ``index`` modulo the number of sets (balanced); the
        standard set draws ISA and FA log-uniformly (independent of N); a matched set
        holds its property at the standard set's geometric midpoint at N_g (total
        area N_g ISA_g, item area ISA_g, field area FA_g, density N_g / FA_g) and
        draws the other of ISA / FA as the standard set does.
        """
        sc = self.scene
        H, W = sc.size
        area = float(H * W)
        lo, hi = sc.design_count
        ng = math.sqrt(lo * hi)
        (il, ih), (fl, fh) = sc.item_area_range, sc.field_area_range
        u = rng.random(2)
        ln = math.log(n)
        sset = 0
        if sc.design == "dewind":
            log_sz = float(uniform_from(u[0], math.log(il * il * ng), math.log(ih * ih * ng))) + 2 * math.log(area)
            log_sp = float(uniform_from(u[1], math.log(fl * fl / ng), math.log(fh * fh / ng))) + 2 * math.log(area)
            isa, fa = math.exp((log_sz - ln) / 2), math.exp((log_sp + ln) / 2)
        else:
            sets = ["standard"] + list(sc.match)
            sset = index % len(sets)
            isa = math.exp(float(uniform_from(u[0], math.log(il), math.log(ih)))) * area
            fa = math.exp(float(uniform_from(u[1], math.log(fl), math.log(fh)))) * area
            isa_g, fa_g = math.sqrt(il * ih) * area, math.sqrt(fl * fh) * area
            name = sets[sset]
            if name == "total-area":
                isa = ng * isa_g / n
            elif name == "item-area":
                isa = isa_g
            elif name == "field-area":
                fa = fa_g
            elif name == "density":
                fa = n * fa_g / ng
            log_sz, log_sp = math.log(n * isa) + math.log(isa), 2 * math.log(fa) - ln
        return sset, isa, fa, (ln, log_sz, log_sp)

    def design_extremes(self, n: int) -> List[Tuple[float, float]]:
        """The (ISA, FA) corners an image with ``n`` items can draw, every set included
        (the layout survey tries each: the hardest decides)."""
        sc = self.scene
        area = float(np.prod(sc.size))
        lo, hi = sc.design_count
        ng = math.sqrt(lo * hi)
        (il, ih), (fl, fh) = sc.item_area_range, sc.field_area_range
        if sc.design == "dewind":
            return [(math.sqrt(i * i * ng / n) * area, math.sqrt(f * f * n / ng) * area) for i in (il, ih)
                    for f in (fl, fh)]
        isa_g, fa_g = math.sqrt(il * ih) * area, math.sqrt(fl * fh) * area
        isas = {"standard": (il * area, ih * area), "total-area": (ng * isa_g / n,), "item-area": (isa_g,),
                "field-area": (il * area, ih * area), "density": (il * area, ih * area)}
        fas = {"standard": (fl * area, fh * area), "total-area": (fl * area, fh * area),
               "item-area": (fl * area, fh * area), "field-area": (fa_g,), "density": (n * fa_g / ng,)}
        out = []
        for name in ["standard"] + list(sc.match):
            out += [(i, f) for i in isas[name] for f in fas[name] if (i, f) not in out]
        return out

    def _fit_patch(self, mip: MipAsset, area: float, angle: float, flip: bool, scan: bool = False
                   ) -> Tuple[Optional[Patch], float]:
        """The copy of ``mip`` at ``angle`` / ``flip`` whose footprint is closest to
        ``area`` pixels, and its (float32) scale: secant steps on the scale, then,
        with ``scan``, a scan of nearby scales (footprints move in steps of pixels)."""
        sc = self.scene

        def warp(s):
            return transform_patch(mip, s, angle, flip, sc.blend, sc.feather_sigma)

        s = float(np.float32(math.sqrt(area / max(mip.footprint_area, 1))))
        best, best_s = None, s
        for _ in range(4):
            p = warp(s)
            if p is None or p.full_area == 0:
                s = float(np.float32(s * 1.25))
                continue
            if best is None or abs(p.full_area - area) < abs(best.full_area - area):
                best, best_s = p, s
            if abs(p.full_area - area) <= 0.5:
                return best, best_s
            s = float(np.float32(s * math.sqrt(area / p.full_area)))
        if best is not None and scan and abs(best.full_area - area) > 0.5:
            for f in np.linspace(0.8, 1.2, 41):
                s = float(np.float32(best_s * f))
                p = warp(s)
                if p is not None and p.full_area and abs(p.full_area - area) < abs(best.full_area - area):
                    best, best_s = p, s
        return best, best_s

    def design_layout(self, rng: np.random.Generator, ids: np.ndarray, isa: float, fa: float
                      ) -> Tuple[Optional[List["Copy"]], int]:
        """One layout of the targets ``ids`` for a design: returns ``(copies or None,
        exact maps computed)``.

        Sizes: each copy's footprint is fitted to its share, by its jitter squared
        (``scale_jitter``), of the area the copies before it left (N ISA less what
        they took), so the total is TSA = N ISA to a pixel or two (footprints grow in
        steps of pixels; a layout that misses draws new jitters). Field: a disc of
        area FA, placed uniformly inside the image, takes the items, uniformly over
        its feasible positions; as the hull of items inside a disc is smaller than
        the disc, their centres are then spread from the disc's centre by the
        factor (found by bisection) that brings the hull to FA.
        None when Size or Spacing misses ``design_tolerance``, an item does not fit,
        or the spread copies overlap or leave the image.
        """
        sc = self.scene
        H, W = sc.size
        n = len(ids)
        tol = sc.design_tolerance
        u = rng.random(2 + n * (1 + self._per_copy))
        w = uniform_from(u[2:2 + n], *sc.scale_jitter) ** 2  # relative areas
        copies = self._copies(u[2 + n:], np.ones(n))
        got = 0
        for k, c in enumerate(copies):
            want = (n * isa - got) * w[k] / w[k:].sum()
            if want < 1:
                return None, 0
            # The last copy takes what is left: worth a scan of its scales.
            patch, c.scale = self._fit_patch(self.mips[ids[k]], want, c.angle, c.flip, scan=k == n - 1)
            if patch is None:
                return None, 0
            c.patch = patch
            got += patch.full_area
        if abs((got / (n * isa)) ** 2 - 1) > tol:
            return None, 0
        r = math.sqrt(fa / math.pi)
        if 2 * r >= min(H, W):
            return None, 0
        cy, cx = float(uniform_from(u[0], r, H - r)), float(uniform_from(u[1], r, W - r))
        yy, xx = np.ogrid[:H, :W]
        layout = Layout(H, W, 1.0, sc.min_gap)
        layout.block((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 > r * r)
        for k in sorted(range(n), key=lambda k: -copies[k].patch.full_area):
            fp = copies[k].patch.footprint
            pos = layout.find(rng, fp, sc.max_tries_per_object, area=copies[k].patch.full_area)
            if pos is None:
                return None, layout.maps_computed
            layout.add(fp, *pos, area=copies[k].patch.full_area)
            copies[k].pos = pos
        return (copies if self._spread(copies, cy, cx, fa, n) else None), layout.maps_computed

    def _spread(self, copies: List["Copy"], cy: float, cx: float, fa: float, n: int) -> bool:
        """Move the copies' centres away from (cy, cx) by one factor s >= 1 so that the
        field area (hull of their pixels) meets the design; False if no s within the
        image does, or the copies then overlap (closer than ``min_gap``)."""
        sc = self.scene
        H, W = sc.size
        tol = sc.design_tolerance
        half = [(c.patch.shape[0] / 2, c.patch.shape[1] / 2) for c in copies]
        cen = [(c.pos[0] + hy, c.pos[1] + hx) for c, (hy, hx) in zip(copies, half)]

        def place(s):
            out = []
            for (ky, kx), (hy, hx), c in zip(cen, half, copies):
                y, x = int(round(cy + s * (ky - cy) - hy)), int(round(cx + s * (kx - cx) - hx))
                if y < 0 or x < 0 or y + c.patch.shape[0] > H or x + c.patch.shape[1] > W:
                    return None
                out.append((y, x))
            return out

        canvas = np.zeros((H, W), np.uint8)

        def error(pos):
            """(hull / FA)^2 - 1: the Spacing error (Spacing = FA^2 / N)."""
            canvas[...] = 0
            for (y, x), c in zip(pos, copies):
                h, w = c.patch.shape
                canvas[y:y + h, x:x + w] |= c.patch.footprint.view(np.uint8)
            return (field_area(canvas) / fa) ** 2 - 1

        aim = tol / 2  # the bisection aims within half the tolerance: margin for pixel steps
        pos = [c.pos for c in copies]
        e = error(pos)
        if abs(e) > tol:
            if e > 0:
                return False  # (the hull lies inside the disc: not expected)
            lo, hi = 1.0, 1.0
            while place(hi * 1.25) is not None and hi < 64:
                hi *= 1.25
            a, b = hi, hi * 1.25
            for _ in range(8):  # about the largest factor that keeps every copy inside
                mid = (a + b) / 2
                a, b = (mid, b) if place(mid) is not None else (a, mid)
            hi = a
            hi_pos = place(hi)
            e_hi = error(hi_pos)
            if e_hi < -tol:
                return False
            if abs(e_hi) <= tol:
                pos = hi_pos
            else:
                pos = None
                for _ in range(24):
                    mid = (lo + hi) / 2
                    p = place(mid)
                    e = error(p)
                    if abs(e) <= aim:
                        pos = p
                        break
                    lo, hi = (mid, hi) if e < 0 else (lo, mid)
                if pos is None:
                    return False
            check = Layout(H, W, 1.0, sc.min_gap)
            for (y, x), c in zip(pos, copies):
                if not check.fits(c.patch.footprint, y, x):
                    return False
                check.add(c.patch.footprint, y, x, area=c.patch.full_area)
        for p, c in zip(pos, copies):
            c.pos = p
        return True

    def draw_distractors(self, rng: np.random.Generator, n: int, exclude: np.ndarray,
                         k: Optional[int] = None) -> Distractors:
        """The distractors of an image with ``n`` targets (objects, threshold, size).

        Parameters
        ----------
        rng : numpy.random.Generator
            The image's distractor stream (the survey passes its trial stream).
        n : int
            Targets of the image.
        exclude : ndarray of int
            Object pack indices the image counts: no distractor is one of them (or,
            from ``distractor_objects``, identical to one).
        k : int, optional
            How many; default drawn uniformly in ``distractors`` A..B.
        """
        sc = self.scene
        lo, hi = sc.distractors
        if k is None:
            k = int(rng.integers(lo, hi + 1)) if hi > lo else lo
        pool = np.flatnonzero(~np.isin(self._twin, exclude))
        if k and pool.size == 0:
            raise ValueError("distractors: no object is left to draw them from once an image's targets are "
                             "excluded; give distractor_objects (--distractor-objects)")
        ids = pool[rng.integers(pool.size, size=k)] if k else np.zeros(0, np.int64)
        item = self._distractor_item_area(rng) if sc.area_mode == "decorrelated" and k else math.nan
        return Distractors(ids=ids.astype(np.int64), t=sc.distractor_threshold(n), item_area=item, pool=pool)

    def _distractor_item_area(self, rng: np.random.Generator) -> float:
        """Decorrelated mode: the distractors' item area A' / N', with A' and N' drawn as
        a target image draws A and N (N >= 1), independently of the image's own."""
        H, W = self.scene.size
        a = float(np.exp(rng.uniform(*np.log(self.scene.area_fraction_range))) * H * W)
        p = self._probs[1:]
        nn = 1 + int(rng.choice(len(p), p=p / p.sum())) if p.sum() > 0 else 1
        return a / nn

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

    def try_layout(self, rng: np.random.Generator, ids: np.ndarray, t: float, target: float,
                   distractors: Optional[Distractors] = None, drng: Optional[np.random.Generator] = None
                   ) -> Tuple[Optional[List["Copy"]], float, int]:
        """Draw one whole layout of the objects ``ids`` at visibility ``t``, then of the
        ``distractors`` (from ``drng``) on top of them.

        Returns ``(copies, ref_side, maps)``: the placed copies, targets then
        distractors (None when a copy had no feasible position), the reference side
        drawn (independent mode, else NaN) and the exact feasible-position maps computed.
        Nothing is drawn from ``drng`` unless every target found its place.
        """
        sc = self.scene
        H, W = sc.size
        n = len(ids)
        indep = sc.area_mode == "independent"
        # Every continuous draw of the layout in one call (see ``uniform_from``): the
        # reference side, the jitter of each copy, then each copy's rotation, flip
        # and colour, in the order they were once drawn one by one.
        u = rng.random(int(indep) + n * (1 + self._per_copy))
        ref_side = math.nan
        if indep:
            ref_side = float(uniform_from(u[0], *sc.ref_side_range) * min(H, W))
        jit = uniform_from(u[int(indep):int(indep) + n], *sc.scale_jitter)
        scales = copy_scales(sc, jit, self._long[ids], self._fp[ids], ref_side, target)
        copies = self._copies(u[int(indep) + n:], scales)
        k = 0 if distractors is None else len(distractors.ids)
        # The layout's threshold is the lowest of the image; each object keeps its own.
        layout = Layout(H, W, min(t, distractors.t) if k else t, sc.min_gap)
        need = self._place(rng, layout, self.mips, ids, copies, t, 0)
        if need is None:
            return None, ref_side, layout.maps_computed
        if k:
            d = distractors
            du = drng.random(k * (1 + self._per_copy))
            djit = uniform_from(du[:k], *sc.scale_jitter)
            dscales = distractor_scales(sc, djit, self._dlong[d.ids], self._dfp[d.ids], ref_side, d.item_area)
            dcopies = self._copies(du[k:], dscales)
            if self._place(drng, layout, self.dmips, d.ids, dcopies, d.t, need) is None:
                d.failed = True
                return None, ref_side, layout.maps_computed
            copies += dcopies
        return copies, ref_side, layout.maps_computed

    def _copies(self, u: np.ndarray, scales: np.ndarray) -> List[Copy]:
        """Rotation, flip and colour of each copy from its uniforms ``u`` (copy by copy:
        rotation, flip, then 3 colour factors when there is colour jitter)."""
        sc = self.scene
        n = len(scales)
        u = u[:n * self._per_copy].reshape(n, self._per_copy)
        # Parameters are rounded to the float32 the record stores, so that replaying
        # a record reproduces the image bit for bit.
        angles = uniform_from(u[:, 0], *sc.rotation_range).astype(np.float32).tolist()
        flips = (u[:, 1] < sc.flip_p).tolist()
        sizes = scales.astype(np.float32).tolist()
        if self._per_copy == 2:
            return [Copy(scale=s, angle=a, flip=f, color=(1.0, 1.0, 1.0)) for s, a, f in zip(sizes, angles, flips)]
        c = sc.color_jitter  # as sample_color: U(1 - c, 1 + c) per factor
        colors = uniform_from(u[:, 2:5], 1 - c, 1 + c).astype(np.float32).tolist()
        return [Copy(scale=s, angle=a, flip=f, color=tuple(col)) for s, a, f, col in zip(sizes, angles, flips, colors)]

    def _place(self, rng: np.random.Generator, layout: Layout, mips: List[MipAsset], ids: np.ndarray,
               copies: List[Copy], t: float, need: int) -> Optional[int]:
        """Warp and place ``copies`` (of ``mips[ids]``) into ``layout`` at threshold ``t``.

        Returns the pixels that must stay visible so far (``need`` plus these copies'),
        or None when a copy vanished or found no position.
        """
        sc = self.scene
        H, W = sc.size
        n = len(copies)
        # At t = 1 pasting order cannot change any label, so place the largest
        # copies first (they are the hard ones); at t < 1 order is z-order.
        # Patches are warped only when their turn comes: a layout that fails
        # early does not pay for the rest.
        if t >= 1.0:
            order = sorted(range(n), key=lambda k: -(copies[k].scale ** 2) * mips[ids[k]].footprint_area)
        else:
            order = range(n)
        for k in order:
            c = copies[k]
            patch = c.patch = transform_patch(mips[ids[k]], c.scale, c.angle, c.flip, sc.blend, sc.feather_sigma)
            if patch is None or patch.full_area == 0:
                return None  # vanished at this scale
            need += min_visible_pixels(patch.full_area, t)
            if need > H * W:
                # Provably impossible: the pixels that must stay visible exceed the image.
                return None
            pos = layout.find(rng, patch.footprint, sc.max_tries_per_object, area=patch.full_area)
            if pos is None:
                return None
            layout.add(patch.footprint, *pos, t, area=patch.full_area)
            c.pos = pos
        return need

    def replay(self, record: dict) -> Tuple[np.ndarray, np.ndarray]:
        """Render an image again from its stored record (no random numbers drawn).

        Returns the same ``(image, label_map)`` as the ``compose`` call that made the
        record, given the same asset packs and scene config.
        """
        sc = self.scene
        copies = []
        n = int(record["count"])
        for k in range(n + int(record.get("num_distractors", 0))):
            scale, angle = float(record["object_scale"][k]), float(record["object_angle"][k])
            flip = bool(record["object_flip"][k])
            mips = self.mips if k < n else self.dmips  # distractor ids index the distractor pack
            patch = transform_patch(mips[int(record["object_ids"][k])], scale, angle, flip, sc.blend, sc.feather_sigma)
            pos = tuple(int(v) for v in record["object_position"][k])
            copies.append(Copy(scale=scale, angle=angle, flip=flip, patch=patch, pos=pos,
                               color=tuple(float(c) for c in record["object_color"][k])))
        H, W = sc.size
        image, label_map = np.empty((H, W, 3), np.uint8), np.empty((H, W), np.uint8)
        self._render_into(int(record["background_id"]), tuple(int(v) for v in record["bg_crop"]), copies, image,
                          label_map)
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

    def _record_into(self, rec: Dict[str, np.ndarray], row: int, index: int, draw: "Draw",
                     label_map: np.ndarray) -> None:
        """Fill row ``row`` of ``rec`` from the draw and the final label map. Per-object
        fields cover targets and distractors; the sums (``cumulative_area``, the mean
        item area, the field area) cover the targets only."""
        n, nd = draw.n, draw.k
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
        rec["num_distractors"][row] = nd
        rec["target_id"][row] = draw.target_id
        rec["stimulus_set"][row] = draw.stimulus_set
        if draw.design_target is not None:
            rec["design_target"][row] = draw.design_target
        if draw.class_ids is not None:
            rec["class_ids"][row] = draw.class_ids
            rec["class_counts"][row] = draw.class_counts
        if n + nd == 0:
            return
        rec["object_ids"][row, :n] = draw.ids
        rec["object_role"][row, :n] = ROLE_TARGET
        if nd:
            rec["object_ids"][row, n:n + nd] = draw.distractors.ids
            rec["object_role"][row, n:n + nd] = ROLE_DISTRACTOR
        total, perimeter = 0, 0.0
        box = [label_map.shape[0], label_map.shape[1], 0, 0]  # union of the target patches, for the hull
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
            if k < n:
                box = [min(box[0], py), min(box[1], px), max(box[2], py + h), max(box[3], px + w)]
            # Object k's pixels lie inside its patch window: count them there, from
            # the final label map (occlusion by later objects included).
            vis = (label_map[py:py + h, px:px + w] == k + 1).view(np.uint8)
            # vis holds 0 and 1, so plain moments are the binary ones (exact integer
            # sums either way) at a third of the time.
            mo = cv2.moments(vis)
            area = int(mo["m00"])
            rec["object_areas"][row, k] = area
            total += area if k < n else 0
            if area:
                if k < n:
                    # A target's boundaries give its perimeter and, from their points, its
                    # box (the extreme pixels lie on them): cheaper than boundingRect's
                    # scan of the mask.
                    cs = object_contours(vis)
                    bx, by, bw, bh = cv2.boundingRect(cs[0] if len(cs) == 1 else np.concatenate(cs))
                    perimeter += sum(cv2.arcLength(c, True) for c in cs)
                else:
                    bx, by, bw, bh = cv2.boundingRect(vis)
                rec["object_boxes"][row, k] = (py + by, px + bx, py + by + bh, px + bx + bw)
                rec["object_centroids"][row, k] = (py + mo["m01"] / area, px + mo["m10"] / area)
        if n == 0:
            return  # A, A / N and the field area stay 0: there are no targets
        rec["cumulative_area"][row] = total
        rec["mean_item_area"][row] = total / n
        hull = label_map[box[0]:box[2], box[1]:box[3]]
        if nd:
            hull = (hull <= n).view(np.uint8) * hull  # the targets' pixels only (labels 1..n)
        fa = field_area(hull)
        rec["field_area"][row] = fa
        rec["total_surface_area"][row] = total
        rec["total_perimeter"][row] = perimeter
        for key, v in derived(n, float(total), fa).items():
            rec[key][row] = v

    def _exemplars_into(self, rec: Dict[str, np.ndarray], row: int, stream: ImageStreams, index: int,
                        n: int) -> None:
        """``exemplar_boxes``: the boxes of up to ``MAX_EXEMPLARS`` visible targets, in
        label order; with more, a uniform choice from the image's exemplar stream
        (made only then: most images draw nothing for it)."""
        visible = np.flatnonzero(rec["object_areas"][row, :n] > 0)
        if visible.size > MAX_EXEMPLARS:
            pick = stream.at(index).choice(visible, MAX_EXEMPLARS, replace=False)
            visible = np.sort(pick)
        rec["exemplar_boxes"][row, :visible.size] = rec["object_boxes"][row, visible]


def _twins(candidate_pack: AssetPack, object_pack: AssetPack) -> np.ndarray:
    """For each candidate asset, the index of an identical one (same pixels) among
    the objects, else -1: a distractor pack may hold the targets' own objects (the
    built-in ones, say), and a target must never reappear as a distractor. Only
    assets of equal shape and footprint are loaded and hashed."""
    def key(o) -> bytes:
        return hashlib.blake2b(o.alpha.tobytes() + o.rgb.tobytes(), digest_size=16).digest()

    candidates, objects = candidate_pack.objects, object_pack.objects
    by_shape: Dict[tuple, List[int]] = {}
    for i, (_, h, w, fp) in enumerate(object_dims(object_pack)):
        by_shape.setdefault((h, w, fp), []).append(i)
    keys: Dict[int, bytes] = {}
    out = np.full(len(candidates), -1, np.int64)
    for j, (_, h, w, fp) in enumerate(object_dims(candidate_pack)):
        same = by_shape.get((h, w, fp), [])
        if not same:
            continue
        kj = key(candidates[j])
        for i in same:
            if i not in keys:
                keys[i] = key(objects[i])
            if keys[i] == kj:
                out[j] = i
                break
    return out


def _prescaled_size(hb: int, wb: int, H: int, W: int, lo: float) -> Tuple[int, int]:
    """(h, w) of an hb x wb background after ``Composer._prescale``."""
    k = math.sqrt(H * W / (lo * hb * wb))
    if k < 1.0:
        return max(1, int(round(hb * k))), max(1, int(round(wb * k)))
    return hb, wb


def _prescale_background(b: np.ndarray, H: int, W: int, lo: float) -> np.ndarray:
    """One background as ``Composer._prescale`` keeps it (RGBA, downscaled)."""
    hb, wb = b.shape[:2]
    h, w = _prescaled_size(hb, wb, H, W, lo)
    if (h, w) != (hb, wb):
        b = cv2.resize(b, (w, h), interpolation=cv2.INTER_AREA)
    # Kept as RGBA: OpenCV's bit-exact resize runs about twice as fast on 4
    # channels as on 3, and computes each channel alone (the same RGB bytes).
    return cv2.cvtColor(b, cv2.COLOR_RGB2RGBA)


class _Prescaler:
    """Loader of a streamed background, prescaled (picklable, for Dask)."""

    def __init__(self, bgs: LazyAssets, H: int, W: int, lo: float):
        self.bgs, self.H, self.W, self.lo = bgs, H, W, lo

    def __call__(self, i: int) -> np.ndarray:
        b = self.bgs.load(i)  # the source's loader: the prescaled copy is what is cached
        if b.shape != tuple(self.bgs.meta["shapes"][i]):
            raise ValueError(f"background {self.bgs.names[i]!r} changed on disk since it was scanned "
                             f"({b.shape} instead of {tuple(self.bgs.meta['shapes'][i])})")
        return _prescale_background(b, self.H, self.W, self.lo)


class _MipLoader:
    def __init__(self, objects: LazyAssets):
        self.objects = objects

    def __call__(self, i: int) -> MipAsset:
        return MipAsset(self.objects.load(i))


def _mips(objects) -> Sequence[MipAsset]:
    """Each object with its pyramid: all built now, or on demand for a streamed pack."""
    if is_streamed(objects):
        return LazyAssets(len(objects), _MipLoader(objects), names=objects.names, meta={})
    return [MipAsset(o) for o in objects]


def _background_arrays(b: np.ndarray) -> List[np.ndarray]:
    return [b]


def _mip_arrays(m: MipAsset) -> List[np.ndarray]:
    """A pyramid as its arrays: the RGBA levels, then the alpha levels."""
    return list(m.rgba) + list(m.alpha)


def _mip_from_arrays(arrays: List[np.ndarray]) -> MipAsset:
    """The pyramid ``_mip_arrays`` took apart (nothing recomputed but the footprint)."""
    m = MipAsset.__new__(MipAsset)
    k = len(arrays) // 2
    m.rgba, m.alpha = arrays[:k], arrays[k:]
    m.height, m.width = m.alpha[0].shape
    m.long_side = max(m.height, m.width)
    m.footprint_area = int(np.count_nonzero(m.alpha[0] >= ALPHA_THRESHOLD_U8))
    return m
