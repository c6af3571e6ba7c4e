"""Configuration of a synthcount dataset as frozen dataclasses.

Every knob that changes the pixels or the labels of a dataset lives here, so that
``DatasetConfig.to_json()`` is a complete description of what was generated (it is
stored in every shard) and two runs with equal configs produce byte-identical
output. Values are checked in ``__post_init__``; a bad value raises ``ValueError``
naming the field, the rule and the value it got.

Defaults follow the paper's authors' generator (Wever & Runia's public code):
reference longer side U(0.4, 0.8) x image height (shorter side), per-copy scale jitter
U(0.85, 1.15), rotation U(-10, 10) degrees, horizontal flip with p = 0.5,
N uniform over 0..4, copies of one object, soft alpha blending.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DESIGNS",
    "MATCHES",
    "SceneConfig",
    "SourceConfig",
    "DatasetConfig",
    "PRESETS",
    "DEFAULT_REF_SIDE",
    "DEFAULT_AREA_FRACTION",
    "distractor_size_factor",
    "preset",
    "parse_size",
    "load_config_file",
]

COMPRESSIONS = ("none", "lzf", "gzip")
BLENDS = ("soft", "hard", "feather")
MODES = ("same", "mixed")
AREA_MODES = ("independent", "decorrelated")
UNFIT = ("error", "redraw")
DESIGNS = ("dewind", "match")
MATCHES = ("total-area", "item-area", "field-area", "density")
# Scene fields added with the designed stimulus spaces (issue 25): left out of
# ``DatasetConfig.to_dict`` while at their defaults, so that configs without a design
# keep the bytes they had (shard ``config`` attributes, ``dataset.json``).
DESIGN_FIELDS = {"design": None, "match": (), "design_count": (4, 16), "item_area_range": (0.003, 0.006),
                 "field_area_range": (0.15, 0.3), "design_tolerance": 0.05}


# Config input is bounded: a file's size, the nodes of its YAML with every alias expanded
# (a "billion laughs" alias bomb of 1 KB expands to 387 million), and what an error quotes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxtuple, _SHOW.maxdict, _SHOW.maxlevel = 60, 60, 8, 8, 8, 3
_SHOW.maxlong = 40


def _show(value: Any) -> str:
    """``repr(value)`` for an error message, cut short (at most about 200 characters)."""
    text = _SHOW.repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# Default object sizes (the authors' generator): longer side / image height, and the
# decorrelated mode's cumulative area / image area. Scenes with distractors shrink
# them (see ``distractor_size_factor``) unless sizes are given.
DEFAULT_REF_SIDE = (0.4, 0.8)
DEFAULT_AREA_FRACTION = (0.04, 0.16)
# generate warns when objects can be smaller than this on their longer side (pixels).
MIN_OBJECT_SIDE = 8


def _check(cond: bool, name: str, rule: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"{name} must be {rule}, got {_show(value)}")


def _is_int(v: Any) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, not to a user)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _range(name: str, value: Sequence[float], lo: float = -math.inf, hi: float = math.inf) -> Tuple[float, float]:
    _check(isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_num(v) for v in value),
           name, "a pair of numbers (low, high)", value)
    a, b = (float(v) for v in value)
    _check(math.isfinite(a) and math.isfinite(b) and a <= b, name, "a finite pair with low <= high", value)
    _check(lo <= a and b <= hi, name, f"within [{lo}, {hi}]", value)
    return (a, b)


def parse_size(text: Any) -> Tuple[int, int]:
    """Parse ``161`` or ``"120x160"`` (H x W) into ``(height, width)``."""
    if isinstance(text, (tuple, list)):
        _check(len(text) == 2 and all(_is_int(v) for v in text), "size", "an integer or HxW", text)
        h, w = (int(v) for v in text)
    elif isinstance(text, bool) or text is None:
        raise ValueError(f"size must be an integer or HxW, got {_show(text)}")
    elif _is_int(text):
        h = w = text
    else:
        s = str(text).lower().strip()
        try:
            if "x" in s:
                hs, ws = s.split("x", 1)
                h, w = int(hs), int(ws)
            else:
                h = w = int(s)
        except ValueError:
            raise ValueError(f"size must be an integer or HxW, got {_show(text)}") from None
    _check(8 <= h <= 8192 and 8 <= w <= 8192, "size", "between 8 and 8192 pixels per side", text)
    return (h, w)


def distractor_size_factor(scene: "SceneConfig") -> float:
    """Factor on the default object sides for a scene with distractors.

    The rule: targets and distractors are scaled together so that the most objects an
    image can hold (the largest N with P(N) > 0 plus the most distractors B) occupy
    the area that the largest N alone occupies at the default sizes, i.e. sides times
    ``sqrt(N_max / (N_max + B))`` (areas times ``N_max / (N_max + B)``). 1.0 without
    distractors, so scenes without them keep the paper's sizes. Applied only to sizes
    left at their default (None); an explicit ``ref_side_range`` /
    ``area_fraction_range`` (``--object-size`` / ``--area-fraction``) is kept.
    """
    b = scene.distractors[1]
    if not b:
        return 1.0
    probs = scene.count_distribution()
    n_max = max([n for n in range(1, scene.max_count + 1) if probs[n] > 0], default=1)
    return math.sqrt(n_max / (n_max + b))


@dataclass(frozen=True)
class SceneConfig:
    """What goes into one composite image.

    Attributes
    ----------
    size : (int, int)
        Output (height, width) in pixels.
    max_count : int
        Largest number of objects N in an image.
    count_probs : tuple of float or None
        Probability of N = 0..max_count; None means uniform. Must sum to 1.
    mode : {"same", "mixed"}
        ``same``: N copies of one object (the paper); ``mixed``: N different objects.
    ref_side_range : (float, float) or None
        Reference longer side of the object as a fraction of the image's shorter
        side (its height for the paper's square images), drawn per layout
        (``independent`` area mode). None (default): ``DEFAULT_REF_SIDE`` (0.4, 0.8),
        shrunk with distractors by the rule of :func:`distractor_size_factor`.
    scale_jitter : (float, float)
        Per-copy multiplicative jitter of the reference size.
    rotation_range : (float, float)
        Per-copy rotation in degrees; the canvas is expanded so no pixel is cut.
    flip_p : float
        Probability of a horizontal flip per copy.
    color_jitter : float
        Per-copy brightness/contrast/saturation jitter strength in [0, 1];
        0 disables it (default, as in the paper).
    min_visible : float or tuple of float
        Occlusion threshold t: every object keeps at least this fraction of its own
        pixels visible. 1.0 means no two objects share a pixel. A tuple gives t per N
        (index N), e.g. the authors' ``(1, 0.5, 0.5, 0.6, 0.7)``.
    min_gap : int
        Minimum distance in pixels between objects (needs min_visible == 1 for all N).
    area_mode : {"independent", "decorrelated"}
        ``independent``: per-copy sizes from ref_side_range x scale_jitter (paper).
        ``decorrelated``: the cumulative area A is drawn log-uniformly from
        ``area_fraction_range`` x image area independently of N, and every copy gets
        area A / N (times jitter), so corr(log N, log A) is near 0.
    area_fraction_range : (float, float) or None
        Range of the target cumulative area as a fraction of the image area
        (``decorrelated`` mode only). None (default): ``DEFAULT_AREA_FRACTION``
        (0.04, 0.16), times :func:`distractor_size_factor` squared with distractors.
    blend : {"soft", "hard", "feather"}
        ``soft``: out = bg * (1 - a) + obj * a with the mask's own soft alpha
        (the authors' choice); ``hard``: a = 1 where alpha >= 0.5 else 0;
        ``feather``: alpha blurred with a Gaussian of ``feather_sigma`` pixels.
    feather_sigma : float
        Standard deviation of the feathering blur in pixels.
    bg_scale_range : (float, float)
        Random resized crop of the background: fraction of the source area kept.
    stimulus : {"cutout", "binary"}
        ``binary``: Stoianov & Zorzi style white shapes on black (use with the
        ``binary`` preset / built-in binary assets).
    max_tries_per_object : int
        Blind placement tries per copy before the exact feasible-position map is
        computed (the result is uniform over feasible positions either way).
    max_layouts : int or None
        Whole layouts an image may draw before it fails with PlacementError. None
        (default): the layout survey run at plan time (``synthcount.survey``) derives
        it from ``layout_failure_prob`` and the measured success rate of the hardest
        (object, N) pair.
    layout_failure_prob : float
        Target probability that an image exhausts its layouts (default 1e-12).
    unfit : {"error", "redraw"}
        What to do with an (object, N) pair the layout survey finds cannot be laid
        out (fewer than 4 of 2,000 trial layouts fit): ``error`` refuses the
        request before anything is written, naming the object and N; ``redraw``
        makes an image that draws such an object draw another one (uniformly among
        those that fit N times) from its own random stream, and records it in
        ``unfit_redraws``. N and its distribution are never changed.
    distractors : int or (int, int)
        Uncounted objects added to every image: K, or (A, B) for a count drawn
        uniformly in A..B per image (default (0, 0): none). They are placed with the
        same rule as the targets, pasted after them (labels N+1..N+K, on top), sized
        by the targets' rule but never from the image's own N or A, and drawn from
        the image's distractor stream (see ``synthcount.compose``). ``max_count`` + B
        must be at most 255 (label maps are uint8).
    distractor_min_visible : float or None
        Visibility threshold of the distractors; None (default): the image's own
        ``min_visible`` t. ``min_visible`` always applies to the targets.
    classes : int or None
        ``mixed`` mode only: each image draws ``classes`` distinct objects (classes)
        and every one of its N targets is a copy of one of them, chosen uniformly;
        the per-class counts are stored in ``class_counts`` and the classes in
        ``class_ids``. ``count`` stays the total N (so its distribution is the
        configured one); None (default): N different objects.
    design : {None, "dewind", "match"}
        A designed stimulus space (``synthcount.compose``, "Designs"): N is drawn
        log-uniformly over ``design_count`` (``count_probs`` is not used), item area
        ISA and field area FA from the design, and each image is laid out until its
        achieved size and spacing are within ``design_tolerance`` of the design.
        ``dewind``: log N, log Size (TSA x ISA) and log Spacing (FA x Sparsity) drawn
        independently and uniformly; ``match``: a standard set and one control set per
        ``match`` entry. Needs ``min_visible`` 1, no distractors, ``design_count``
        high <= ``max_count``; ``scale_jitter`` jitters each item's size around ISA
        (renormalised so that the items add up to N ISA). None (default): no design.
    match : tuple of str
        ``match`` design: the properties held constant across N, one control set each,
        of ``total-area``, ``item-area``, ``field-area``, ``density``.
    design_count : (int, int)
        N range of a design (low >= 2: one item has no spacing of its own).
    item_area_range : (float, float)
        Item area ISA as a fraction of the image area at the geometric-mean N
        N_g = sqrt(low x high). ``dewind``: Size = ISA^2 N_g (in image areas squared)
        spans [low^2 N_g, high^2 N_g], so ISA = sqrt(Size / N). ``match``: the
        standard set's ISA range; the matched constants are the geometric midpoints.
    field_area_range : (float, float)
        Field area FA as a fraction of the image area at N_g. ``dewind``: Spacing =
        FA^2 / N_g spans [low^2 / N_g, high^2 / N_g], so FA = sqrt(Spacing x N).
        ``match``: the standard set's FA range.
    design_tolerance : float
        Largest relative error of the achieved Size and Spacing (not their logs)
        from the design's; an image whose layout misses it is laid out again.
    """

    size: Tuple[int, int] = (161, 161)
    max_count: int = 4
    count_probs: Optional[Tuple[float, ...]] = None
    mode: str = "same"
    ref_side_range: Optional[Tuple[float, float]] = None
    scale_jitter: Tuple[float, float] = (0.85, 1.15)
    rotation_range: Tuple[float, float] = (-10.0, 10.0)
    flip_p: float = 0.5
    color_jitter: float = 0.0
    min_visible: Any = 1.0
    min_gap: int = 0
    area_mode: str = "independent"
    area_fraction_range: Optional[Tuple[float, float]] = None
    blend: str = "soft"
    feather_sigma: float = 1.0
    bg_scale_range: Tuple[float, float] = (0.5, 1.0)
    stimulus: str = "cutout"
    max_tries_per_object: int = 12
    max_layouts: Optional[int] = None
    layout_failure_prob: float = 1e-12
    unfit: str = "error"
    distractors: Any = (0, 0)
    distractor_min_visible: Optional[float] = None
    classes: Optional[int] = None
    design: Optional[str] = None
    match: Tuple[str, ...] = ()
    design_count: Tuple[int, int] = (4, 16)
    item_area_range: Tuple[float, float] = (0.003, 0.006)
    field_area_range: Tuple[float, float] = (0.15, 0.3)
    design_tolerance: float = 0.05

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        set_("size", parse_size(self.size))
        _check(_is_int(self.max_count) and 0 <= self.max_count <= 255, "max_count",
               "an integer in 0..255", self.max_count)
        if self.count_probs is not None:
            _check(isinstance(self.count_probs, (list, tuple)) and all(_is_num(v) for v in self.count_probs),
                   "count_probs", "a list of probabilities", self.count_probs)
            p = tuple(float(v) for v in self.count_probs)
            _check(len(p) == self.max_count + 1, "count_probs", f"{self.max_count + 1} values (N = 0..max_count)",
                   self.count_probs)
            _check(all(v >= 0 and math.isfinite(v) for v in p) and abs(sum(p) - 1) < 1e-6, "count_probs",
                   "non-negative and summing to 1", self.count_probs)
            set_("count_probs", p)
        _check(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        set_("scale_jitter", _range("scale_jitter", self.scale_jitter, 1e-3, 10.0))
        set_("rotation_range", _range("rotation_range", self.rotation_range, -180.0, 180.0))
        _check(_is_num(self.flip_p) and 0.0 <= float(self.flip_p) <= 1.0, "flip_p", "in [0, 1]", self.flip_p)
        _check(_is_num(self.color_jitter) and 0.0 <= float(self.color_jitter) <= 1.0, "color_jitter", "in [0, 1]",
               self.color_jitter)
        mv = self.min_visible
        if isinstance(mv, (list, tuple)):
            _check(all(_is_num(v) for v in mv), "min_visible", "numbers in [0, 1]", self.min_visible)
            mv = tuple(float(v) for v in mv)
            _check(len(mv) == self.max_count + 1, "min_visible", f"a number or {self.max_count + 1} values (t per N)",
                   self.min_visible)
            _check(all(0.0 <= v <= 1.0 for v in mv), "min_visible", "in [0, 1]", self.min_visible)
        else:
            _check(_is_num(mv) and 0.0 <= float(mv) <= 1.0, "min_visible", "in [0, 1]", self.min_visible)
            mv = float(mv)
        set_("min_visible", mv)
        _check(_is_int(self.min_gap) and 0 <= self.min_gap <= 64, "min_gap", "an integer in 0..64", self.min_gap)
        if self.min_gap > 0:
            _check(all(self.visible_threshold(n) == 1.0 for n in range(self.max_count + 1)), "min_gap",
                   "0 unless min_visible is 1.0 (a gap only makes sense without overlap)", self.min_gap)
        _check(self.area_mode in AREA_MODES, "area_mode", f"one of {AREA_MODES}", self.area_mode)
        _check(self.blend in BLENDS, "blend", f"one of {BLENDS}", self.blend)
        _check(_is_num(self.feather_sigma) and 0.0 < float(self.feather_sigma) <= 20.0, "feather_sigma", "in (0, 20]",
               self.feather_sigma)
        set_("bg_scale_range", _range("bg_scale_range", self.bg_scale_range, 1e-3, 1.0))
        _check(self.stimulus in ("cutout", "binary"), "stimulus", "'cutout' or 'binary'", self.stimulus)
        # Upper bounds keep a typo from running for hours: per image, the placement
        # work grows with max_tries_per_object x max_layouts.
        _check(_is_int(self.max_tries_per_object) and 0 <= self.max_tries_per_object <= 1000,
               "max_tries_per_object", "an integer in 0..1000", self.max_tries_per_object)
        _check(self.max_layouts is None or (_is_int(self.max_layouts) and 1 <= self.max_layouts <= 1_000_000),
               "max_layouts", "null (from the layout survey) or an integer in 1..1000000", self.max_layouts)
        _check(_is_num(self.layout_failure_prob) and 1e-30 <= float(self.layout_failure_prob) <= 0.01,
               "layout_failure_prob", "in [1e-30, 0.01]", self.layout_failure_prob)
        _check(self.unfit in UNFIT, "unfit", f"one of {UNFIT}", self.unfit)
        self._check_distractors()
        # The default sizes are resolved here, so that to_json() always holds the
        # values used (and is unchanged for every scene without distractors).
        f = distractor_size_factor(self)
        if self.ref_side_range is None:
            set_("ref_side_range", tuple(round(v * f, 4) for v in DEFAULT_REF_SIDE))
        if self.area_fraction_range is None:
            set_("area_fraction_range", tuple(round(v * f * f, 5) for v in DEFAULT_AREA_FRACTION))
        set_("ref_side_range", _range("ref_side_range", self.ref_side_range, 1e-3, 1.0))
        set_("area_fraction_range", _range("area_fraction_range", self.area_fraction_range, 1e-5, 1.0))
        _check(self.classes is None or (_is_int(self.classes) and 1 <= self.classes <= 255), "classes",
               "null or an integer in 1..255", self.classes)
        _check(self.classes is None or self.mode == "mixed", "classes", "null unless mode is 'mixed'", self.classes)
        self._check_design()

    def _check_design(self) -> None:
        """Normalise and check the design fields (see the class docstring)."""
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        m = self.match
        if isinstance(m, str):
            m = tuple(v.strip() for v in m.split(",") if v.strip())
        _check(isinstance(m, (list, tuple)) and all(v in MATCHES for v in m) and len(set(m)) == len(m), "match",
               f"distinct names of {MATCHES}", self.match)
        set_("match", tuple(m))
        d = self.design
        if d is None and m:
            d = "match"
        _check(d is None or d in DESIGNS, "design", f"null or one of {DESIGNS}", self.design)
        _check(d != "match" or bool(m), "match", f"at least one of {MATCHES} with design 'match'", self.match)
        _check(d != "dewind" or not m, "match", "empty with design 'dewind' (match sets are their own design)",
               self.match)
        set_("design", d)
        c = self.design_count
        _check(isinstance(c, (list, tuple)) and len(c) == 2 and all(_is_int(v) for v in c) and 2 <= c[0] <= c[1]
               <= 255, "design_count", "a pair of integers 2 <= low <= high <= 255", c)
        set_("design_count", (int(c[0]), int(c[1])))
        set_("item_area_range", _range("item_area_range", self.item_area_range, 1e-6, 1.0))
        set_("field_area_range", _range("field_area_range", self.field_area_range, 1e-6, 1.0))
        _check(_is_num(self.design_tolerance) and 0.001 <= float(self.design_tolerance) <= 0.5, "design_tolerance",
               "in [0.001, 0.5]", self.design_tolerance)
        set_("design_tolerance", float(self.design_tolerance))
        if d is None:
            return
        _check(self.max_count >= self.design_count[1], "max_count", f"at least design_count's high "
               f"({self.design_count[1]}) with a design", self.max_count)
        _check(all(self.visible_threshold(n) == 1.0 for n in range(self.max_count + 1)), "min_visible",
               "1.0 with a design (the design's areas are of whole items)", self.min_visible)
        _check(self.max_distractors == 0, "distractors", "0 with a design", self.distractors)

    def _check_distractors(self) -> None:
        """Normalise ``distractors`` to a pair (A, B) and check it with its threshold."""
        d = self.distractors
        if _is_int(d):
            d = (d, d)
        _check(isinstance(d, (list, tuple)) and len(d) == 2 and all(_is_int(v) for v in d), "distractors",
               "an integer K or a pair of integers (A, B)", self.distractors)
        a, b = (int(v) for v in d)
        _check(0 <= a <= b, "distractors", "0 <= A <= B", self.distractors)
        # Targets take labels 1..N and distractors N+1..N+K in a uint8 label map.
        _check(self.max_count + b <= 255, "distractors", f"at most {255 - self.max_count} "
               f"(max_count {self.max_count} + the most distractors must stay <= 255)", self.distractors)
        object.__setattr__(self, "distractors", (a, b))
        dm = self.distractor_min_visible
        _check(dm is None or (_is_num(dm) and 0.0 <= float(dm) <= 1.0), "distractor_min_visible",
               "null (the targets' min_visible) or in [0, 1]", dm)
        if dm is not None:
            object.__setattr__(self, "distractor_min_visible", float(dm))
        if self.min_gap > 0 and b > 0:
            _check(all(self.distractor_threshold(n) == 1.0 for n in range(self.max_count + 1)), "min_gap",
                   "0 unless distractor_min_visible is 1.0 too (a gap only makes sense without overlap)", self.min_gap)

    def smallest_object_side(self) -> float:
        """About the smallest longer side in pixels a copy can have: the lowest reference
        side x the lowest jitter (independent mode), or the square root of the smallest
        copy area, a low-jitter copy among N_max high-jitter ones at the lowest A
        (decorrelated mode)."""
        j_lo, j_hi = self.scale_jitter
        H, W = self.size
        if self.area_mode == "independent":
            return self.ref_side_range[0] * j_lo * min(H, W)
        probs = self.count_distribution()
        n = max([k for k in range(1, self.max_count + 1) if probs[k] > 0], default=1)
        return math.sqrt(self.area_fraction_range[0] * H * W * j_lo ** 2 / (j_lo ** 2 + (n - 1) * j_hi ** 2))

    def size_warning(self, min_side: float = MIN_OBJECT_SIDE) -> Optional[str]:
        """A warning when the image is too small for its objects (cut-outs whose longer
        side can fall below ``min_side`` pixels), naming the smallest size that is not;
        None otherwise, and for ``binary`` stimuli (dots by design)."""
        side = self.smallest_object_side()
        if self.stimulus == "binary" or side >= min_side:
            return None
        H, W = self.size
        k = min_side / side
        need = f"{math.ceil(H * k)}" if H == W else f"{math.ceil(H * k)}x{math.ceil(W * k)}"
        return (f"--size {H if H == W else f'{H}x{W}'}: the smallest objects are about {side:.0f} px on their longer "
                f"side, below {min_side} px (too small to tell shapes apart); --size {need} or more keeps them at "
                f"{min_side} px, or raise {'--area-fraction' if self.area_mode == 'decorrelated' else '--object-size'}")

    @property
    def max_distractors(self) -> int:
        """The most distractors an image can have (B of ``distractors``)."""
        return self.distractors[1]

    @property
    def max_objects(self) -> int:
        """Columns of the per-object record fields: ``max_count`` + the most distractors."""
        return self.max_count + self.max_distractors

    def distractor_threshold(self, n: int) -> float:
        """Visibility threshold of the distractors in an image with ``n`` targets."""
        dm = self.distractor_min_visible
        return self.visible_threshold(n) if dm is None else float(dm)

    def visible_threshold(self, n: int) -> float:
        """Occlusion threshold t for an image with ``n`` objects."""
        mv = self.min_visible
        return float(mv[n]) if isinstance(mv, tuple) else float(mv)

    def count_distribution(self) -> Tuple[float, ...]:
        """Probabilities of N = 0..max_count (with a design: log N uniform over
        ``design_count`` widened by half a unit each side, then rounded)."""
        if self.design is not None:
            lo, hi = self.design_count
            edges = np.log(np.arange(lo, hi + 2) - 0.5)
            w = np.diff(edges) / (edges[-1] - edges[0])
            return tuple([0.0] * lo + [float(v) for v in w] + [0.0] * (self.max_count - hi))
        if self.count_probs is not None:
            return self.count_probs
        k = self.max_count + 1
        return tuple([1.0 / k] * k)


@dataclass(frozen=True)
class SourceConfig:
    """Where objects and backgrounds come from.

    Attributes
    ----------
    objects : str or None
        Folder (MSRA10K layout or RGBA cut-outs) or an asset pack ``.h5`` made by
        ``synthcount prepare``; None = built-in assets.
    backgrounds : str or None
        Folder (SUN397 layout or any image folder) or asset pack; None = built-in.
    background_classes : tuple of str
        SUN397 class filter such as ``("/f/forest/needleleaf",)``; empty = all.
    mask_threshold : float
        Alpha (0..1) at and above which a mask pixel counts as object when cropping
        the object to its mask's bounding box and when rejecting empty/full masks.
    object_max_side : int
        Objects are downscaled so their longer side is at most this (pixels).
    background_max_side : int
        Backgrounds are downscaled so their shorter side is at most this (pixels).
    distractor_objects : str or None
        Where distractors come from: None (default) = the object pool itself, less
        the image's target identities; ``"builtin"`` = the built-in objects; or a
        folder / asset pack like ``objects``. A distractor asset identical (same
        pixels) to one of the image's targets is never drawn.
    source_mode : {"auto", "memory", "stream"}
        Hold folders and packs in memory, stream them from disk per image through a
        bounded cache, or (auto) whichever fits in memory. It changes how a dataset
        is made, never its bytes, so it is left out of ``DatasetConfig.to_dict``
        (like ``workers``): a run resumes across modes.
    """

    objects: Optional[str] = None
    backgrounds: Optional[str] = None
    background_classes: Tuple[str, ...] = ()
    mask_threshold: float = 0.5
    object_max_side: int = 256
    background_max_side: int = 256
    distractor_objects: Optional[str] = None
    source_mode: str = "auto"

    def __post_init__(self) -> None:
        bc = self.background_classes
        if isinstance(bc, str):
            bc = (bc,)
        _check(isinstance(bc, (list, tuple)) and all(isinstance(c, str) for c in bc), "background_classes",
               "a list of class paths such as /f/forest/needleleaf", self.background_classes)
        object.__setattr__(self, "background_classes", tuple(bc))
        for name in ("objects", "backgrounds", "distractor_objects"):
            v = getattr(self, name)
            _check(v is None or isinstance(v, str), name, "a path or null", v)
        _check(_is_num(self.mask_threshold) and 0.0 < float(self.mask_threshold) <= 1.0, "mask_threshold", "in (0, 1]",
               self.mask_threshold)
        _check(_is_int(self.object_max_side) and self.object_max_side >= 8, "object_max_side",
               "an integer >= 8", self.object_max_side)
        _check(_is_int(self.background_max_side) and self.background_max_side >= 8, "background_max_side",
               "an integer >= 8", self.background_max_side)
        _check(self.source_mode in ("auto", "memory", "stream"), "source_mode", "auto, memory or stream",
               self.source_mode)


@dataclass(frozen=True)
class DatasetConfig:
    """A whole dataset: scene, sources, size, seed and storage.

    ``workers`` and the ``--shards`` range are deliberately not part of it: they
    change how the dataset is made, never what it contains.
    """

    scene: SceneConfig = field(default_factory=SceneConfig)
    sources: SourceConfig = field(default_factory=SourceConfig)
    num_images: int = 1000
    seed: int = 0
    shard_size: int = 1000
    compression: str = "none"
    label_compression: str = "gzip"  # deflate: any HDF5 tool reads it (lzf only h5py); see shards.LABEL_GZIP_LEVEL

    def __post_init__(self) -> None:
        if isinstance(self.scene, dict):
            object.__setattr__(self, "scene", SceneConfig(**self.scene))
        if isinstance(self.sources, dict):
            object.__setattr__(self, "sources", SourceConfig(**self.sources))
        _check(isinstance(self.scene, SceneConfig), "scene", "a mapping of scene settings", self.scene)
        _check(isinstance(self.sources, SourceConfig), "sources", "a mapping of source settings", self.sources)
        _check(_is_int(self.num_images) and 1 <= self.num_images <= 10**10, "num_images", "an integer in 1..1e10",
               self.num_images)
        _check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed", "an integer in [0, 2**63)", self.seed)
        _check(_is_int(self.shard_size) and 1 <= self.shard_size <= 10**6, "shard_size", "an integer in 1..1000000",
               self.shard_size)
        _check(self.compression in COMPRESSIONS, "compression", f"one of {COMPRESSIONS}", self.compression)
        _check(self.label_compression in COMPRESSIONS, "label_compression", f"one of {COMPRESSIONS}",
               self.label_compression)

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def shard_range(self, shard: int) -> Tuple[int, int]:
        """Global image index range [first, end) of shard ``shard``."""
        first = shard * self.shard_size
        return first, min(first + self.shard_size, self.num_images)

    def to_dict(self) -> dict:
        """The config as a dict, without ``sources.source_mode`` (how the sources are
        read, never what the dataset holds: the identity and the shards leave it out)."""
        d = dataclasses.asdict(self)
        d["sources"].pop("source_mode", None)
        for k, v in DESIGN_FIELDS.items():  # left out at their defaults: older configs keep their bytes
            if d["scene"].get(k) == v or (isinstance(v, tuple) and tuple(d["scene"].get(k)) == v):
                del d["scene"][k]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown dataset config keys: {sorted(unknown)}")
        scene = d.pop("scene", {}) or {}
        sources = d.pop("sources", {}) or {}
        for name, sub, klass in (("scene", scene, SceneConfig), ("sources", sources, SourceConfig)):
            if not isinstance(sub, dict):
                raise ValueError(f"{name} must be a mapping of settings, got {_show(sub)}")
            bad = set(sub) - {f.name for f in dataclasses.fields(klass)}
            if bad:
                raise ValueError(f"unknown {name} config keys: {sorted(bad)}")
        return cls(scene=SceneConfig(**_tuples(scene)), sources=SourceConfig(**_tuples(sources)), **d)

    @classmethod
    def from_json(cls, text: str) -> "DatasetConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_sources(cls, file: Optional[str] = None, preset: Optional[str] = None,
                     overrides: Optional[dict] = None) -> "DatasetConfig":
        """A config from a file, a preset and explicit values, in that order of precedence
        (lowest first, after the defaults): what ``synthcount generate`` does with
        ``--config``, ``--preset`` and its other flags.

        Parameters
        ----------
        file : str, optional
            YAML or JSON file holding a ``DatasetConfig`` dict (``.json`` is read as
            JSON, anything else as YAML).
        preset : str, optional
            A name of ``PRESETS``; its scene fields override the file's.
        overrides : dict, optional
            Values that win over both: top-level fields (``num_images``, ``seed``,
            ``shard_size``, ``compression``, ``label_compression``), scene fields
            (``size`` as 161 or "HxW", ``max_count``, ``mode``, ``min_visible``, ...)
            and source fields (``objects``, ``backgrounds``, ``background_classes``).
            None values are ignored. A new ``max_count`` with a count distribution of
            another length keeps its shape: no N = 0 if it had none, uniform over the rest.

        Raises
        ------
        ValueError
            Unreadable file, unknown preset or key, or a value out of range (the
            message names the field).
        """
        d = dict(load_config_file(file)) if file else {}
        scene, sources = d.pop("scene", None) or {}, d.pop("sources", None) or {}
        for name, sub in (("scene", scene), ("sources", sources)):
            if not isinstance(sub, dict):
                raise ValueError(f"{name} in {file} must be a mapping of settings, got {_show(sub)}")
        scene, sources = dict(scene), dict(sources)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {_show(preset)}")
            scene.update(PRESETS[preset])
        scene_keys = {f.name for f in dataclasses.fields(SceneConfig)}
        source_keys = {f.name for f in dataclasses.fields(SourceConfig)}
        top_keys = {f.name for f in dataclasses.fields(cls)} - {"scene", "sources"}
        ov = {k: v for k, v in (overrides or {}).items() if v is not None and v != ()}
        unknown = set(ov) - scene_keys - source_keys - top_keys
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        for k, v in ov.items():
            if k in top_keys:
                d[k] = v
            elif k in source_keys:
                sources[k] = list(v) if k == "background_classes" else v
            else:
                scene[k] = parse_size(v) if k == "size" else v
        if ov.get("match") and "design" not in ov:
            scene["design"] = "match"  # --match implies the match design, over a preset's or file's
        if scene.get("design") or scene.get("match"):
            # A design draws N from design_count, not from the count distribution (a
            # preset's, say): max_count follows it unless a flag gives it.
            hi = int(tuple(scene.get("design_count", DESIGN_FIELDS["design_count"]))[1])
            if "max_count" not in ov:
                scene["max_count"] = max(int(scene.get("max_count", 0)), hi)
            scene["count_probs"] = None
        probs = scene.get("count_probs")
        m = ov.get("max_count")
        if m is not None and isinstance(probs, (list, tuple)) and len(probs) != m + 1:
            scene["count_probs"] = ((0.0,) + (1.0 / m,) * m) if probs[0] == 0 and m > 0 else None
        d["scene"], d["sources"] = scene, sources
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "DatasetConfig":
        return dataclasses.replace(self, **changes)


def load_config_file(path: str) -> dict:
    """The mapping in a YAML or JSON config file (``.json``: JSON, else YAML).

    Bounded input: a regular file of at most ``MAX_CONFIG_BYTES``, and YAML of at most
    ``MAX_CONFIG_NODES`` nodes with every alias expanded (counted on the composed node
    graph before anything is built, so an alias bomb is refused in milliseconds);
    recursive aliases are refused.

    Raises
    ------
    ValueError
        Naming ``--config PATH`` and why.
    """
    import yaml

    from ._io import read_text_bounded

    try:
        text = read_text_bounded(path, MAX_CONFIG_BYTES, "config file")
        if str(path).lower().endswith(".json"):
            d = json.loads(text)
        else:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None:
                    _count_nodes(node, path)
                d = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as e:
        first = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"--config {path}: cannot read it ({first[:200]})") from None
    if not isinstance(d, dict):
        raise ValueError(f"--config {path}: must hold a mapping of DatasetConfig fields, got {type(d).__name__}")
    return d


def _count_nodes(root, path: str) -> int:
    """Nodes of a composed YAML document with aliases expanded (each use of an anchor
    counts its whole subtree); ``ValueError`` past ``MAX_CONFIG_NODES`` or on a cycle."""
    import yaml

    sizes: dict = {}
    on_path: set = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise ValueError("recursive YAML aliases are not allowed in a config")
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [x for pair in node.value for x in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_NODES:
                raise ValueError(f"more than {MAX_CONFIG_NODES:,} values once YAML aliases are expanded "
                                 f"(an alias bomb?)")
        on_path.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _tuples(d: dict) -> dict:
    """JSON/YAML give lists; the dataclasses hold tuples (hashable, comparable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# Named scene presets. ``paper``: the authors' pretraining setting; ``regression``:
# paper section 4.4 (no overlap, sizes varying modestly); ``decorrelated``: A drawn
# independently of N; ``binary``: Stoianov & Zorzi style stimuli; ``fsc``: counting
# past subitizing, FSC-147 style (0..20 small targets among 0..10 distractors of other
# identities, t = 0.8 for both).
PRESETS = {
    "paper": dict(),
    "sos-occlusion": dict(min_visible=(1.0, 0.5, 0.5, 0.6, 0.7)),
    "regression": dict(min_visible=1.0, ref_side_range=(0.3, 0.45), scale_jitter=(0.9, 1.1)),
    # area_fraction_range: the default (0.04, 0.16), left unset so that distractors shrink it.
    "decorrelated": dict(min_visible=1.0, area_mode="decorrelated", scale_jitter=(0.95, 1.05)),
    "binary": dict(size=(48, 48), stimulus="binary", max_count=8,
                   count_probs=(0.0,) + (1.0 / 8,) * 8, mode="mixed", blend="hard",
                   rotation_range=(0.0, 0.0), flip_p=0.0, min_visible=1.0, min_gap=1,
                   area_mode="decorrelated", area_fraction_range=(0.06, 0.18), scale_jitter=(0.7, 1.3)),
    "fsc": dict(max_count=20, count_probs=None, distractors=(0, 10), ref_side_range=(0.1, 0.18),
                min_visible=0.8, distractor_min_visible=0.8),
    # Stoianov & Zorzi 2012: 30 x 30 binary images of 1..32 items, cumulative area drawn
    # independently of N (log-uniform over 3.5-20% of the image: 32-180 px).
    "stoianov-zorzi": dict(size=(30, 30), stimulus="binary", max_count=32, count_probs=(0.0,) + (1.0 / 32,) * 32,
                           mode="mixed", blend="hard", rotation_range=(0.0, 0.0), flip_p=0.0, min_visible=1.0,
                           min_gap=1, area_mode="decorrelated", area_fraction_range=(0.035, 0.2),
                           scale_jitter=(0.8, 1.2)),
    # A DeWind et al. 2015 space of binary items (log N, log Size, log Spacing independent).
    "dewind": dict(size=(64, 64), stimulus="binary", max_count=16, mode="mixed", blend="hard",
                   rotation_range=(0.0, 0.0), flip_p=0.0, min_visible=1.0, min_gap=1, design="dewind",
                   scale_jitter=(0.9, 1.1), design_count=(4, 16), item_area_range=(0.003, 0.006),
                   field_area_range=(0.15, 0.3)),
}


def preset(name: str, **overrides: Any) -> SceneConfig:
    """A SceneConfig from a named preset (see ``PRESETS``) with overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {_show(name)}")
    return SceneConfig(**{**PRESETS[name], **overrides})
