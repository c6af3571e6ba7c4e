"""Numerosity comparison read out of the latents, and its Weber fraction (after Stoianov & Zorzi 2012).

Stoianov & Zorzi trained a linear decision unit on their network's hidden
representation of two images to say which holds more items, and fitted the
classic psychophysical model to its accuracy (Pica et al. 2004; Halberda et al.
2008),

    P(correct | n1, n2) = 1 - 0.5 erfc(|n1 - n2| / (sqrt(2) w sqrt(n1^2 + n2^2))),

finding a Weber fraction w = 0.15, in the range of human adults (published figure).

Here the decision unit is a logistic model on the concatenated latents of the pair
(z_1, z_2), standardised, with a small L2 penalty, fitted by Newton's method. The
images are split into two halves first: training pairs are drawn within one half
and test pairs within the other, so no test image was seen in training (half the
pairs train the model, the rest test it). Pairs are either one image at a
reference numerosity against one at any other numerosity (``references=(8, 16)``,
as Stoianov & Zorzi) or two images of different numerosities over the whole range
(``references=None``). w is the maximum-likelihood fit of the model above to the
test pairs' correct / wrong outcomes, with a bootstrap interval over test pairs.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["weber_p_correct", "fit_weber", "make_pairs", "logistic_fit", "compare_arrays", "compare_text",
           "compare_figure"]


def weber_p_correct(n1, n2, w: float) -> np.ndarray:
    """The Weber model's probability of a correct comparison of n1 and n2 with Weber fraction w."""
    from scipy.special import erfc

    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    return 1.0 - 0.5 * erfc(np.abs(n1 - n2) / (math.sqrt(2.0) * w * np.sqrt(n1 ** 2 + n2 ** 2)))


def _nll(w: float, d: np.ndarray, k: np.ndarray, m: np.ndarray) -> float:
    """Negative log likelihood of k correct of m per distinct ratio term d = |n1-n2|/sqrt(n1^2+n2^2)."""
    from scipy.special import log_ndtr

    t = d / w
    return -float(np.sum(k * log_ndtr(t) + (m - k) * log_ndtr(-t)))


def fit_weber(n1: np.ndarray, n2: np.ndarray, correct: np.ndarray, *, bootstrap: int = 200, seed: int = 0,
              bounds=(0.01, 5.0)) -> dict:
    """Maximum-likelihood Weber fraction of pairwise comparisons, with a bootstrap interval.

    Parameters
    ----------
    n1, n2 : numpy.ndarray, shape (m,)
        The two numerosities of each pair (different, > 0).
    correct : numpy.ndarray of bool, shape (m,)
    bootstrap : int >= 0
        Resamples of the pairs (with replacement) for the 95% interval.
    seed : int
    bounds : (float, float)
        Search range of w. A fit at the upper bound means the comparisons are at
        chance; at the lower bound, perfect.

    Returns
    -------
    dict
        ``w``, ``ci95`` ([lo, hi] or None), ``at_bound`` ("lower", "upper" or None),
        ``accuracy``, ``pairs``.
    """
    from scipy.optimize import minimize_scalar

    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if not (n1.shape == n2.shape == ok.shape) or n1.ndim != 1 or n1.size == 0:
        raise ValueError(f"n1, n2 and correct must be 1-D of one length > 0, got {n1.shape}, {n2.shape}, {ok.shape}")
    if np.any(n1 == n2) or np.any(np.minimum(n1, n2) <= 0):
        raise ValueError("every pair must hold two different numerosities > 0")
    d = np.abs(n1 - n2) / np.sqrt(n1 ** 2 + n2 ** 2)
    levels, inv = np.unique(np.round(d, 12), return_inverse=True)
    lo, hi = bounds

    def fit(counts_k, counts_m):
        r = minimize_scalar(_nll, bounds=(lo, hi), args=(levels, counts_k, counts_m), method="bounded",
                            options={"xatol": 1e-5})
        return float(r.x)

    k = np.bincount(inv, weights=ok, minlength=levels.size)
    m = np.bincount(inv, minlength=levels.size).astype(np.float64)
    w = fit(k, m)
    ci = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        ws = []
        for _ in range(int(bootstrap)):
            pick = rng.integers(0, ok.size, ok.size)
            ws.append(fit(np.bincount(inv[pick], weights=ok[pick], minlength=levels.size),
                          np.bincount(inv[pick], minlength=levels.size).astype(np.float64)))
        ci = [float(np.percentile(ws, 2.5)), float(np.percentile(ws, 97.5))]
    tol = 1e-3 * (hi - lo)
    at = "lower" if w - lo < tol else ("upper" if hi - w < tol else None)
    return {"w": w, "ci95": ci, "at_bound": at, "accuracy": float(ok.mean()), "pairs": int(ok.size)}


def make_pairs(count: np.ndarray, images: np.ndarray, n_pairs: int, rng: np.random.Generator,
               references: Optional[Sequence[int]] = None, max_ratio: Optional[float] = None):
    """Random pairs of images (positions into ``count``) with different numerosities.

    Parameters
    ----------
    count : numpy.ndarray of int, shape (n,)
    images : numpy.ndarray of int
        The positions pairs may use (one half of the split).
    n_pairs : int
    rng : numpy.random.Generator
    references : sequence of int, optional
        Each pair holds one image of a reference numerosity (references taking turns)
        and one of any other numerosity; None: both images drawn from the whole range.
    max_ratio : float, optional
        Keep pairs whose larger / smaller numerosity is at most this (S&Z's test
        numerosities lay within a ratio of 2 of the reference, for example).

    Returns
    -------
    a, b : numpy.ndarray of int, shape (m,)
        The two images of each pair, in random order (m <= n_pairs when the
        ratio limit or duplicates drop some).
    """
    count = np.asarray(count)
    images = np.asarray(images)
    images = images[count[images] > 0]
    if references:
        refs = [r for r in references if np.any(count[images] == r)]
        if not refs:
            raise ValueError(f"no image has a reference numerosity {list(references)}; numerosities present "
                             f"{sorted(set(count[images].tolist()))}")
        per = int(math.ceil(n_pairs / len(refs)))
        a_list, b_list = [], []
        for r in refs:
            at_r, other = images[count[images] == r], images[count[images] != r]
            if other.size == 0:
                continue
            a_list.append(rng.choice(at_r, per))
            b_list.append(rng.choice(other, per))
        a, b = np.concatenate(a_list), np.concatenate(b_list)
        swap = rng.random(a.size) < 0.5  # the reference is first or second at random
        a, b = np.where(swap, b, a), np.where(swap, a, b)
    else:
        a = rng.choice(images, 3 * n_pairs)
        b = rng.choice(images, 3 * n_pairs)
    keep = count[a] != count[b]
    if max_ratio is not None:
        hi = np.maximum(count[a], count[b])
        lo = np.minimum(count[a], count[b])
        keep &= hi <= max_ratio * lo
    a, b = a[keep][:n_pairs], b[keep][:n_pairs]
    return a, b


def logistic_fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method; returns weights with the bias last.

    The penalty (on the weights, not the bias) keeps the fit finite when the classes
    are separable.
    """
    x = np.hstack([np.asarray(x, dtype=np.float64), np.ones((len(x), 1))])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(x.shape[1])
    pen = np.full(x.shape[1], l2 * len(x))
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        g = x.T @ (p - y) + pen * w
        h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def compare_arrays(mu: np.ndarray, count: np.ndarray, *, references: Optional[Sequence[int]] = None,
                   pairs: int = 20000, max_ratio: Optional[float] = None, bootstrap: int = 200,
                   seed: int = 0) -> dict:
    """The comparison read-out and Weber fit for one representation.

    Parameters
    ----------
    mu : numpy.ndarray, shape (n, d)
    count : numpy.ndarray of int, shape (n,)
        Images with N = 0 take no part.
    references : sequence of int, optional
        Reference numerosities (S&Z: 8 and 16); None = the whole range.
    pairs : int
        Pairs drawn for training and as many for testing.
    max_ratio : float, optional
        See :func:`make_pairs`.
    bootstrap : int
        Resamples for the interval on w.
    seed : int
        Seeds the image split, the pairs and the bootstrap.

    Returns
    -------
    dict
        ``w``, ``ci95``, ``at_bound``, ``train_accuracy``, ``test_accuracy``,
        ``pairs_train``, ``pairs_test``, ``by_pair`` ([{"n1", "n2", "pairs",
        "correct", "p_second_larger"}], n1 <= n2 over the test pairs; p_second_larger
        is the share of pairs where the model judged n2 larger), ``by_ratio``,
        ``references``, ``max_ratio``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    count = np.asarray(count)
    if mu.ndim != 2 or count.shape != (mu.shape[0],):
        raise ValueError(f"mu must be (n, d) and count (n,), got {mu.shape} and {count.shape}")
    if pairs < 10:
        raise ValueError(f"pairs must be >= 10, got {pairs}")
    pos = np.flatnonzero(count > 0)
    if np.unique(count[pos]).size < 2:
        raise ValueError("the comparison needs images of at least two numerosities > 0")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pos)
    halves = perm[: perm.size // 2], perm[perm.size // 2:]
    mean, std = mu[halves[0]].mean(axis=0), mu[halves[0]].std(axis=0)  # from the training half only
    zs = (mu - mean) / np.where(std > 0, std, 1.0)
    sets = []
    for h in halves:
        a, b = make_pairs(count, h, pairs, rng, references, max_ratio)
        if a.size < 10:
            raise ValueError(f"only {a.size} pairs could be drawn (references {references}, max_ratio {max_ratio}); "
                             "too few images at these numerosities")
        sets.append((a, b, np.hstack([zs[a], zs[b]]), count[b] > count[a]))
    (a_tr, b_tr, x_tr, y_tr), (a_te, b_te, x_te, y_te) = sets
    wts = logistic_fit(x_tr, y_tr)

    def predict(x):
        return (x @ wts[:-1] + wts[-1]) > 0

    said_second = predict(x_te)
    correct = said_second == y_te
    n1, n2 = count[a_te], count[b_te]
    fitw = fit_weber(n1, n2, correct, bootstrap=bootstrap, seed=seed)
    lo, hi = np.minimum(n1, n2), np.maximum(n1, n2)
    said_hi = np.where(n2 > n1, said_second, ~said_second)  # the model chose the larger one
    by_pair = []
    for u, v in sorted(set(zip(lo.tolist(), hi.tolist()))):
        m = (lo == u) & (hi == v)
        by_pair.append({"n1": int(u), "n2": int(v), "pairs": int(m.sum()), "correct": float(correct[m].mean()),
                        "p_second_larger": float(said_hi[m].mean())})
    ratio = np.round(hi / lo, 6)
    by_ratio = [{"ratio": float(r), "pairs": int((ratio == r).sum()), "correct": float(correct[ratio == r].mean())}
                for r in np.unique(ratio)]
    return {**{k: fitw[k] for k in ("w", "ci95", "at_bound")},
            "train_accuracy": float((predict(x_tr) == y_tr).mean()), "test_accuracy": float(correct.mean()),
            "pairs_train": int(a_tr.size), "pairs_test": int(a_te.size), "by_pair": by_pair, "by_ratio": by_ratio,
            "references": list(references) if references else None, "max_ratio": max_ratio,
            "bootstrap": int(bootstrap), "latent_dim": int(mu.shape[1])}


def compare_text(res: dict, name: str = "") -> str:
    """One sentence for one representation."""
    who = f"{name}: " if name else ""
    ci = res["ci95"]
    bound = {"upper": " (at the search bound: comparisons at chance)",
             "lower": " (at the search bound: comparisons perfect)"}.get(res["at_bound"] or "", "")
    return (f"{who}Weber fraction w = {res['w']:.3f}" + (f" (95% bootstrap {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
            + bound + f"; comparison accuracy {res['test_accuracy']:.3f} on {res['pairs_test']} held-out pairs "
            f"(train {res['train_accuracy']:.3f}).")


def _log_ticks(ax, top: float) -> None:
    """A log x axis with plain numbers as tick labels."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if t <= top * 1.01]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def compare_figure(results: Dict[str, dict], out_png: str) -> str:
    """Psychometric curves: accuracy against the ratio larger / smaller for each representation, with the
    fitted Weber model; and, with references, P(judged larger than the reference) against the other N."""
    from .figures import _save, plt

    refs = next(iter(results.values()))["references"]
    ncol = 1 + (len(refs) if refs else 0)
    fig, axes = plt.subplots(1, ncol, figsize=(3.6 * ncol, 3.0), squeeze=False)
    ax = axes[0, 0]
    rr = np.linspace(1.0, max(max(b["ratio"] for b in r["by_ratio"]) for r in results.values()), 200)
    for k, (nm, r) in enumerate(results.items()):
        x = [b["ratio"] for b in r["by_ratio"]]
        y = [b["correct"] for b in r["by_ratio"]]
        ax.plot(x, y, "o", ms=3, color=f"C{k}")
        ax.plot(rr, weber_p_correct(rr, 1.0, r["w"]), "-", color=f"C{k}", lw=1, label=f"{nm} (w={r['w']:.2f})")
    _log_ticks(ax, rr[-1])
    ax.set_xlabel("ratio larger / smaller", fontsize=8)
    ax.set_ylabel("P(correct)", fontsize=8)
    ax.set_ylim(0.4, 1.02)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    for j, ref in enumerate(refs or []):
        ax = axes[0, j + 1]
        for k, (nm, r) in enumerate(results.items()):
            pts = []
            for b in r["by_pair"]:
                if ref in (b["n1"], b["n2"]):
                    other = b["n2"] if b["n1"] == ref else b["n1"]
                    # P(the other one judged larger than the reference)
                    p = b["p_second_larger"] if b["n1"] == ref else 1 - b["p_second_larger"]
                    pts.append((other, p))
            if pts:
                pts.sort()
                ax.plot(*zip(*pts), "o", ms=3, color=f"C{k}", label=nm)
                xs = np.linspace(min(p[0] for p in pts), max(p[0] for p in pts), 200)
                pc = weber_p_correct(xs, ref, r["w"])
                ax.plot(xs, np.where(xs > ref, pc, 1 - pc), "-", color=f"C{k}", lw=1)
        ax.axvline(ref, color="0.7", lw=0.6)
        _log_ticks(ax, max(ref * 4, 2))
        ax.set_xlabel(f"numerosity (reference {ref})", fontsize=8)
        ax.set_ylabel("P(judged larger)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return os.path.basename(out_png)
