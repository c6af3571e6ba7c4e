"""The layout survey: which (object, N) pairs can be laid out, and how many layouts an
image may need.

An image keeps its N and its objects and redraws whole layouts (sizes, rotations,
positions) until one fits, so the layouts it needs follow a geometric law with the
pair's success rate p. A fixed cap is wrong both ways: too low, and a feasible
request dies at paper scale (a cap of 200 failed a few images per 10,000 at t = 1);
unbounded, and an impossible pair loops forever.

So before anything is written, every object is tried at every N with P(N) > 0 on
its own random stream (independent of the dataset seed and of every image's
stream): trial layouts are drawn with the compositor's own code until
``SUCCESSES`` of them fit, or ``MAX_TRIALS`` were drawn.

- A pair with fewer than ``SUCCESSES`` fits in ``MAX_TRIALS`` trials is *unfit*
  (p below about 1/500): the request is refused naming the object and N, or, with
  ``unfit="redraw"``, images redraw another object (see ``SceneConfig.unfit``).
- For the others, the 99.9% lower confidence bound of p (Poisson, ``SUCCESSES``
  fits in M trials: ``POISSON_LOWER_4 / M``) gives the layouts B an image needs for
  ``P(fail) = (1 - p)**B < layout_failure_prob``; the budget is B of the hardest pair.

In ``decorrelated`` area mode an image keeps its drawn cumulative area A across
layouts, so pairs are tried at the largest A the config allows (the hardest case);
in ``mixed`` mode each trial draws the object's N - 1 partners afresh (with
``classes``, the object is one of the image's classes and the others and the class
of every other copy are drawn as an image draws them).

With distractors, every trial lays out the most distractors an image can have (B of
``distractors``, the hardest case), drawn afresh per trial from the pool less the
trial's target identities, sized and placed as in an image (in decorrelated mode at
the largest item area their draw allows, A_max / the smallest N): the success rates,
the unfit pairs and the budget are those of images with B distractors, which images
with fewer need no more layouts than. Images with N = 0 are not surveyed when some N > 0
is: their distractors alone are a subset of what an image with the smallest N lays
out, at sizes no larger than the survey's (pure clutter, ``max_count`` 0, is surveyed
as N = 0).
A designed scene (``SceneConfig.design``) is surveyed at the smallest and the largest
N of its ``design_count``, each pair at every (item area, field area) corner the design
can draw at that N (``Composer.design_extremes``); the pair's result is its hardest
corner's.
Failing trial layouts are cheap (a copy is warped only when its turn comes), so the
survey costs about ``SUCCESSES / p`` layouts per pair. Images larger than
``SURVEY_MAX_SIDE`` pixels on their shorter side are surveyed on the scene scaled
down to it (object sizes and areas are fractions of the image; ``surveyed_at``
records the size used).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .compose import DISTRACTOR_REDRAW_AFTER

__all__ = ["LayoutSurvey", "PairResult", "survey_layouts", "budget_for", "feasible_sizes", "resized_scene",
           "size_fields", "SUCCESSES", "MAX_TRIALS"]

SUCCESSES = 4
MAX_TRIALS = 2000
# 99.9% one-sided lower confidence limit of a Poisson mean after observing 4 events:
# chi2.ppf(0.001, 2 * 4) / 2.
POISSON_LOWER_4 = 0.42855
# Streams of the survey: spawn keys (SURVEY_KEY, object, N) of a fixed entropy, so
# that the survey is the same for every dataset seed and never shares a stream with
# an image (images use spawn_key=(index,)).
SURVEY_ENTROPY = 0x5C0FFEE
# Images larger than this on their shorter side are surveyed on the same scene scaled
# down to it: trial layouts cost about the image area, and sizes are relative.
SURVEY_MAX_SIDE = 256
SURVEY_KEY = 0x5A11


@dataclass
class PairResult:
    """Trial layouts of one (object, N) pair: ``fits`` of ``trials`` fitted."""

    object_index: int
    n: int
    trials: int
    fits: int

    @property
    def fit(self) -> bool:
        return self.fits >= SUCCESSES

    @property
    def p_lower(self) -> float:
        """99.9% lower confidence bound of the pair's per-layout success rate."""
        return POISSON_LOWER_4 / self.trials if self.fit else 0.0


@dataclass
class LayoutSurvey:
    """Result of :func:`survey_layouts`.

    Attributes
    ----------
    budget : int
        Layouts an image may draw (for the hardest fit pair, P(fail) < failure_prob).
    failure_prob : float
    unfit : dict of int -> list of int
        N -> object indices that cannot be laid out N times.
    hardest : dict or None
        The pair that set the budget: object index and name, N, trials, fits.
    trials : int
        Trial layouts drawn in all.
    seconds : float
    surveyed_at : [int, int] or None
        The image size the trials were drawn at, when the images are larger than
        ``SURVEY_MAX_SIDE`` on their shorter side (else None: at the real size).
    complete : bool
        False when the survey stopped at the first unfit pair (``stop_at_unfit``).
    """

    budget: int
    failure_prob: float
    unfit: Dict[int, List[int]] = field(default_factory=dict)
    hardest: Optional[dict] = None
    trials: int = 0
    seconds: float = 0.0
    surveyed_at: Optional[List[int]] = None
    complete: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unfit"] = {str(n): ids for n, ids in sorted(self.unfit.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayoutSurvey":
        if not isinstance(d, dict) or not isinstance(d.get("budget"), int) or d["budget"] < 1:
            raise ValueError("layout survey: 'budget' must be a positive integer")
        unfit = d.get("unfit") or {}
        if not isinstance(unfit, dict) or not all(isinstance(v, list) for v in unfit.values()):
            raise ValueError("layout survey: 'unfit' must map N to a list of object indices")
        return cls(budget=int(d["budget"]), failure_prob=float(d.get("failure_prob", 0.0)),
                   unfit={int(n): [int(i) for i in ids] for n, ids in unfit.items()},
                   hardest=d.get("hardest"), trials=int(d.get("trials", 0)), seconds=float(d.get("seconds", 0.0)),
                   surveyed_at=d.get("surveyed_at"), complete=bool(d.get("complete", True)))

    def unfit_pairs(self, names: Sequence[str]) -> List[str]:
        """Human-readable 'name at N = k' for every unfit pair."""
        return [f"{names[i]!r} at N = {n}" for n, ids in sorted(self.unfit.items()) for i in ids]


def budget_for(p_lower: float, failure_prob: float) -> int:
    """Smallest B with (1 - p_lower)**B <= failure_prob."""
    if p_lower >= 1.0:
        return 1
    return max(1, math.ceil(math.log(failure_prob) / math.log1p(-p_lower)))


def _pair_rng(obj: int, n: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(SURVEY_ENTROPY, spawn_key=(SURVEY_KEY, obj, n))))


def _trial_ids(sc, rng: np.random.Generator, obj: int, n: int, others: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The targets of one trial of (obj, n), and the identities its distractors exclude."""
    if sc.mode == "same" or others.size == 0:
        ids = np.full(n, obj, np.int64)
        return ids, np.array([obj])
    if sc.classes:
        classes = np.concatenate([[obj], rng.choice(others, size=min(sc.classes - 1, others.size), replace=False)])
        assign = np.concatenate([[0], rng.integers(classes.size, size=n - 1)]) if n else np.zeros(0, np.int64)
        return classes[assign].astype(np.int64), classes
    if n <= 1:
        ids = np.full(n, obj, np.int64)
        return ids, ids
    ids = np.concatenate([[obj], rng.choice(others, size=n - 1, replace=n - 1 > others.size)])
    return ids, ids


def _smallest_count(sc) -> int:
    """The smallest N >= 1 the count distribution can draw (1 if none)."""
    probs = sc.count_distribution()
    return min([n for n in range(1, sc.max_count + 1) if probs[n] > 0], default=1)


def _try_pair(composer, obj: int, n: int, max_trials: int = MAX_TRIALS) -> PairResult:
    sc = composer.scene
    if sc.design is not None:
        return _try_design_pair(composer, obj, n)
    H, W = sc.size
    rng = _pair_rng(obj, n)
    t = sc.visible_threshold(n)
    target = sc.area_fraction_range[1] * H * W if sc.area_mode == "decorrelated" else math.nan
    others = np.array([i for i in range(len(composer.mips)) if i != obj], np.int64)
    fits = trials = 0
    while trials < max_trials and fits < SUCCESSES:
        ids, exclude = _trial_ids(sc, rng, obj, n, others)
        dis = None
        if sc.max_distractors:
            # The hardest case: the most distractors, at the largest item area an
            # image can draw for them (decorrelated mode: A_max / the smallest N).
            dis = composer.draw_distractors(rng, n, exclude, k=sc.max_distractors)
            if sc.area_mode == "decorrelated":
                dis.item_area = sc.area_fraction_range[1] * H * W / _smallest_count(sc)
        copies, _, _ = composer.try_layout(rng, ids, t, target, dis, rng)
        trials += 1
        fits += copies is not None
    return PairResult(obj, n, trials, fits)


def _try_design_pair(composer, obj: int, n: int) -> PairResult:
    """A designed scene: trials at each (ISA, FA) corner of the design for this N
    (``Composer.design_extremes``); the hardest corner is the pair's result."""
    sc = composer.scene
    rng = _pair_rng(obj, n)
    others = np.array([i for i in range(len(composer.mips)) if i != obj], np.int64)
    worst = None
    for isa, fa in composer.design_extremes(n):
        fits = trials = 0
        while trials < MAX_TRIALS and fits < SUCCESSES:
            ids, _ = _trial_ids(sc, rng, obj, n, others)
            fits += composer.design_layout(rng, ids, isa, fa)[0] is not None
            trials += 1
        r = PairResult(obj, n, trials, fits)
        if worst is None or (r.fit, r.p_lower) < (worst.fit, worst.p_lower):
            worst = r
    return worst


def _survey_object(composer, obj: int, counts: Sequence[int], monotone: bool, stop_at_unfit: bool = False,
                   max_trials: int = MAX_TRIALS) -> List[PairResult]:
    """Pairs of one object, hardest N first. Where p cannot grow with N (independent
    sizes, t not falling with N), every N below a fit N fits at least as often, and
    is not tried. ``stop_at_unfit``: stop at the first unfit pair."""
    out = []
    for n in sorted(counts, reverse=True):
        r = _try_pair(composer, obj, n, max_trials)
        out.append(r)
        if (r.fit and monotone) or (stop_at_unfit and not r.fit):
            break
    return out


_POOL_COMPOSER = None


def _pool_task(args):
    return _survey_object(_POOL_COMPOSER, *args)


def survey_layouts(composer, *, failure_prob: Optional[float] = None, workers: int = 1,
                   progress=None, stop_at_unfit: bool = False, max_trials: int = MAX_TRIALS) -> LayoutSurvey:
    """Try every (object, N) pair of ``composer``'s config (see the module docstring).

    Parameters
    ----------
    composer : synthcount.compose.Composer
    failure_prob : float, optional
        Target probability that an image exhausts its layouts; default the scene's
        ``layout_failure_prob``.
    workers : int
        Processes (fork) to spread the objects over; the result does not depend on it.
    progress : callable or None
        Called with the number of objects finished, as they finish.
    stop_at_unfit : bool
        Stop at the first unfit pair found (a request that refuses unfit pairs is
        refused then, whatever the other pairs do): ``unfit`` then holds that pair,
        ``budget`` is meaningless, and ``complete`` is False.
    max_trials : int
        Trial layouts after which a pair with fewer than ``SUCCESSES`` fits is unfit.

    Returns
    -------
    LayoutSurvey
    """
    global _POOL_COMPOSER
    surveyed_at = None
    if min(composer.scene.size) > SURVEY_MAX_SIDE:
        composer = _scaled(composer)
        surveyed_at = list(composer.scene.size)
    sc = composer.scene
    fp = float(sc.layout_failure_prob if failure_prob is None else failure_prob)
    probs = sc.count_distribution()
    counts = [n for n in range(1, sc.max_count + 1) if probs[n] > 0]
    if sc.design is not None:
        # A design is surveyed at its extreme N, at every corner of its sizes and
        # fields (``_try_design_pair``): the hardest layouts are there.
        counts = sorted(set(sc.design_count))
    if not counts and sc.max_distractors:
        counts = [0]  # pure clutter: the distractors alone
    t0 = time.perf_counter()
    if not counts:
        return LayoutSurvey(budget=1, failure_prob=fp)
    ts = [sc.visible_threshold(n) for n in counts]
    monotone = sc.area_mode == "independent" and sc.design is None and all(a <= b for a, b in zip(ts, ts[1:]))
    tasks = [(i, counts, monotone, stop_at_unfit, max_trials) for i in range(len(composer.mips))]
    results: List[PairResult] = []
    stopped = False
    if workers > 1 and len(tasks) > 1:
        _POOL_COMPOSER = composer  # inherited by the forked workers: no pickling
        try:
            with mp.get_context("fork").Pool(min(workers, len(tasks))) as pool:
                for rs in pool.imap_unordered(_pool_task, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
                    results += rs
                    if progress:
                        progress(1)
                    if stop_at_unfit and not rs[-1].fit:
                        stopped = True
                        break  # leaving the with block terminates the pool
        finally:
            _POOL_COMPOSER = None
    else:
        for task in tasks:
            results += _survey_object(composer, *task)
            if progress:
                progress(1)
            if stop_at_unfit and not results[-1].fit:
                stopped = True
                break
    results.sort(key=lambda r: (r.object_index, r.n))
    unfit: Dict[int, List[int]] = {}
    for r in results:
        if not r.fit:
            unfit.setdefault(r.n, []).append(r.object_index)
    fit = [r for r in results if r.fit]
    from .stream import object_names

    names = object_names(composer.objects.objects)  # a streamed pack: without loading pixels
    if fit:
        worst = min(fit, key=lambda r: (r.p_lower, r.object_index, r.n))
        # With distractors an image may spend DISTRACTOR_REDRAW_AFTER layouts on the
        # distractor objects it drew first (see compose.Composer._sample) before its
        # layouts are independent draws like the survey's trials.
        budget = budget_for(worst.p_lower, fp) + (DISTRACTOR_REDRAW_AFTER if sc.max_distractors else 0)
        hardest = {"object_index": worst.object_index, "object": names[worst.object_index], "n": worst.n,
                   "trials": worst.trials, "fits": worst.fits}
    else:
        budget, hardest = 1, None
    return LayoutSurvey(budget=budget, failure_prob=fp, unfit={n: sorted(v) for n, v in sorted(unfit.items())},
                        hardest=hardest, trials=sum(r.trials for r in results),
                        seconds=round(time.perf_counter() - t0, 3), surveyed_at=surveyed_at, complete=not stopped)


# The search for sizes that fit (``feasible_sizes``): candidate side factors
# SUGGEST_STEP**k, k = 1..SUGGEST_STEPS, each surveyed with SUGGEST_TRIALS trials per
# pair (stricter than the survey's MAX_TRIALS: the sizes suggested pass it with room).
SUGGEST_STEP = 0.9
SUGGEST_STEPS = 22
SUGGEST_TRIALS = 400


def size_fields(scene) -> Tuple[str, str, Tuple[float, float]]:
    """The sizes a scene's objects follow: (config field, flag, value)."""
    if scene.area_mode == "decorrelated":
        return "area_fraction_range", "--area-fraction", scene.area_fraction_range
    return "ref_side_range", "--object-size", scene.ref_side_range


def resized_scene(scene, f: float):
    """``scene`` with its object sides times ``f`` (areas times f**2)."""
    import dataclasses

    name, _, (a, b) = size_fields(scene)
    k = f * f if name == "area_fraction_range" else f
    return dataclasses.replace(scene, **{name: (round(a * k, 4), round(b * k, 4))})


def feasible_sizes(composer, hard: Optional[Tuple[int, int]] = None):
    """The largest object sizes on a grid below the scene's at which every (object, N)
    pair fits: side factors ``SUGGEST_STEP**k``, each candidate surveyed (stopping at
    its first unfit pair) with ``SUGGEST_TRIALS`` trials per pair.

    Parameters
    ----------
    composer : synthcount.compose.Composer
    hard : (object index, N), optional
        A pair known not to fit: tried first at each candidate, which rules most out
        in a few hundred trial layouts.

    Returns
    -------
    (float, float) or None
        The value of the scene's size field (``size_fields``) at those sizes, or None
        when even sides ``SUGGEST_STEP**SUGGEST_STEPS`` (about 0.1) times the scene's
        do not fit.
    """
    from .compose import Composer
    from .pack import AssetPack

    if min(composer.scene.size) > SURVEY_MAX_SIDE:
        composer = _scaled(composer)
    bgs = AssetPack(backgrounds=composer.backgrounds.backgrounds[:1],
                    background_names=composer.backgrounds.background_names[:1])
    hard = [hard]

    def fits(k: int) -> Optional[Tuple[float, float]]:
        scene = resized_scene(composer.scene, SUGGEST_STEP ** k)
        c = Composer(scene, composer.objects, bgs, distractor_objects=composer.distractor_objects)
        if hard[0] is not None and not _try_pair(c, hard[0][0], hard[0][1], SUGGEST_TRIALS).fit:
            return None
        s = survey_layouts(c, stop_at_unfit=True, max_trials=SUGGEST_TRIALS)
        if s.complete and not s.unfit:
            return size_fields(scene)[2]
        n, ids = next(iter(s.unfit.items()))
        hard[0] = (ids[0], n)
        return None

    # Start where the default sizing rule with distractors would put the sizes (see
    # config.distractor_size_factor), then walk the grid up while candidates fit or
    # down until one does: smaller objects never fit less often.
    from .config import distractor_size_factor

    k = min(SUGGEST_STEPS, max(1, math.floor(math.log(distractor_size_factor(composer.scene)) /
                                             math.log(SUGGEST_STEP))))
    best = fits(k)
    if best is not None:
        while k > 1:
            up = fits(k - 1)
            if up is None:
                break
            best, k = up, k - 1
        return best
    for k in range(k + 1, SUGGEST_STEPS + 1):
        best = fits(k)
        if best is not None:
            return best
    return None


def _scaled(composer):
    """The composer's scene shrunk so its shorter side is ``SURVEY_MAX_SIDE``: sizes and
    areas are fractions of the image, so the geometry is the same; gaps and the
    feathering blur are scaled with it."""
    import dataclasses

    from .compose import Composer

    sc = composer.scene
    f = SURVEY_MAX_SIDE / min(sc.size)
    small = dataclasses.replace(sc, size=(max(8, round(sc.size[0] * f)), max(8, round(sc.size[1] * f))),
                                min_gap=int(round(sc.min_gap * f)), feather_sigma=max(0.05, sc.feather_sigma * f))
    from .pack import AssetPack

    return Composer(small, composer.objects, AssetPack(backgrounds=composer.backgrounds.backgrounds[:1],
                                                         background_names=composer.backgrounds.background_names[:1]),
                    distractor_objects=composer.distractor_objects)
