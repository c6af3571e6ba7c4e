"""Count-classification metrics for Table 1 (numpy only, no scikit-learn).

Three per-class numbers, each named for what it is:

``ap_voc11``
    Zhang et al.'s "count AP": one-vs-rest, test images ranked by that class's
    score, PASCAL VOC 2007 11-point interpolated average precision.
``ap``
    Non-interpolated average precision, the same quantity as scikit-learn's
    ``average_precision_score``: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct
    score thresholds.
``accuracy``
    Per-class accuracy (the fraction of class-k images predicted as k, i.e. the
    per-class recall of the arg-max decision), which is what the paper authors'
    probe code printed under the Table 1 caption.

Ties in the scores are handled as scikit-learn does: precision and recall are
evaluated only at distinct score values (a tied group enters the ranking as a
whole), so the result does not depend on the order of tied items. A class absent
from ``y_true`` has an undefined AP, returned as NaN (and written as ``null`` in
JSON); means are taken over the defined classes.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = [
    "precision_recall",
    "average_precision",
    "voc11_average_precision",
    "per_class_accuracy",
    "count_metrics",
    "chance_rows",
    "to_classes",
]


def to_classes(count: np.ndarray, num_classes: int = 5) -> np.ndarray:
    """Map object counts to classes 0..num_classes-1, the last one meaning "K-1 or more".

    Parameters
    ----------
    count : array_like of int, shape (n,)
        Non-negative counts.
    num_classes : int
        Number of classes; counts >= num_classes - 1 go to the last class (4+).

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    c = np.asarray(count)
    if c.ndim != 1:
        raise ValueError(f"count must be 1-D, got shape {c.shape}")
    if c.size and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0):
        raise ValueError(f"count must hold non-negative integers, got dtype {c.dtype} min {c.min()}")
    return np.minimum(c.astype(np.int64), num_classes - 1)


def _check_binary(scores: np.ndarray, positives: np.ndarray):
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positives).astype(bool)
    if s.ndim != 1 or s.shape != p.shape:
        raise ValueError(f"scores and positives must be 1-D of equal length, got {s.shape} and {p.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, p


def precision_recall(scores: np.ndarray, positives: np.ndarray):
    """Precision and recall at every distinct score threshold, highest score first.

    Parameters
    ----------
    scores : array_like of float, shape (n,)
        Higher means more likely positive.
    positives : array_like of bool, shape (n,)
        Ground truth.

    Returns
    -------
    precision, recall : numpy.ndarray of float64, shape (t,)
        One entry per distinct score (t <= n), in decreasing-score order; recall
        rises from its first value to 1. Empty arrays if there are no positives.
    """
    s, p = _check_binary(scores, positives)
    if not p.any():
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-s, kind="mergesort")
    s, p = s[order], p[order]
    # last position of each tied group: a group is ranked as a whole
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(p)[ends].astype(np.float64)
    seen = (ends + 1).astype(np.float64)
    return tp / seen, tp / tp[-1]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated average precision (equal to sklearn's ``average_precision_score``).

    Returns
    -------
    float in [0, 1], or NaN when there is no positive.
    """
    prec, rec = precision_recall(scores, positives)
    if rec.size == 0:
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def voc11_average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """PASCAL VOC 2007 11-point interpolated average precision.

    The mean over recall levels t = 0, 0.1, ..., 1 of the highest precision reached
    at recall >= t (0 when that recall is never reached), with the levels computed in
    binary floating point as the VOC devkit's Python code does,
    ``numpy.arange(0, 1.1, 0.1)``: a recall of exactly 3/10 does not reach
    t = 0.30000000000000004. That is the usual published figure, flaw included
    (MATLAB's ``0:0.1:1`` differs from it at 0.7, 0.8 and 0.9 only in the last bit).

    Returns
    -------
    float in [0, 1], or NaN when there is no positive.
    """
    prec, rec = precision_recall(scores, positives)
    if rec.size == 0:
        return float("nan")
    total = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        hit = rec >= t
        total += prec[hit].max() if hit.any() else 0.0
    return float(total / 11.0)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 5) -> np.ndarray:
    """Fraction of the images of each class that were predicted as that class.

    Returns
    -------
    numpy.ndarray of float64, shape (num_classes,)
        Values in [0, 1]; NaN for a class with no image.
    """
    t = np.asarray(y_true)
    q = np.asarray(y_pred)
    if t.shape != q.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {q.shape}")
    out = np.full(num_classes, np.nan)
    for k in range(num_classes):
        m = t == k
        if m.any():
            out[k] = float(np.mean(q[m] == k))
    return out


def count_metrics(y_true: np.ndarray, scores: np.ndarray) -> Dict[str, object]:
    """All three per-class metrics and their means for class scores.

    Parameters
    ----------
    y_true : array_like of int, shape (n,)
        Classes in 0..K-1.
    scores : array_like of float, shape (n, K)
        Class scores (probabilities or logits); the prediction is the arg-max.

    Returns
    -------
    dict
        ``ap_voc11``, ``ap``, ``accuracy`` (lists of K floats, NaN where undefined),
        ``mean_ap_voc11``, ``mean_ap``, ``mean_accuracy`` (means over defined
        classes), ``overall_accuracy`` (fraction correct over all images),
        ``confusion`` (K x K list, rows true, columns predicted), ``support``.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or y.ndim != 1 or s.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be (n, K) and y_true (n,), got {s.shape} and {y.shape}")
    k = s.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y_true must hold classes in 0..{k - 1}, got range {y.min()}..{y.max()}")
    pred = np.argmax(s, axis=1)
    ap11 = np.array([voc11_average_precision(s[:, c], y == c) for c in range(k)])
    ap = np.array([average_precision(s[:, c], y == c) for c in range(k)])
    acc = per_class_accuracy(y, pred, k)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    return {
        "ap_voc11": ap11.tolist(),
        "ap": ap.tolist(),
        "accuracy": acc.tolist(),
        "mean_ap_voc11": float(np.nanmean(ap11)),
        "mean_ap": float(np.nanmean(ap)),
        "mean_accuracy": float(np.nanmean(acc)),
        "overall_accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
        "confusion": conf.tolist(),
        "support": np.bincount(y, minlength=k).tolist(),
    }


def chance_rows(y_true: np.ndarray, num_classes: int = 5, rng: Optional[np.random.Generator] = None,
                repeats: int = 200) -> Dict[str, object]:
    """What a classifier without information scores on these labels.

    Parameters
    ----------
    y_true : array_like of int, shape (n,)
        Test classes.
    num_classes : int
        K.
    rng : numpy.random.Generator, optional
        For the random-ranking estimate; None skips it.
    repeats : int
        Random rankings averaged for ``ap_voc11_random``.

    Returns
    -------
    dict
        ``frequency``: label frequencies (the expected non-interpolated AP of a
        random ranking, and the per-class accuracy of guessing by frequency);
        ``ap_voc11_random``: 11-point AP of uniformly random scores, averaged over
        ``repeats`` rankings (interpolation lifts it above the frequency);
        ``accuracy_uniform``: 1/K for every class; plus the means of each.
    """
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    counts = np.bincount(y, minlength=num_classes)[:num_classes]
    # A class absent from the test set has no chance figure (NaN), as the measured
    # rows; the mean runs over the classes present, as theirs does.
    freq = np.where(counts > 0, counts / y.size, np.nan)
    out: Dict[str, object] = {
        "frequency": freq.tolist(),
        "mean_frequency": float(np.nanmean(freq)),
        "accuracy_uniform": [1.0 / num_classes] * num_classes,
    }
    if rng is not None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        acc = np.zeros(num_classes)
        for _ in range(repeats):
            s = rng.random(y.size)
            acc += [voc11_average_precision(s, y == c) if np.any(y == c) else np.nan for c in range(num_classes)]
        acc /= repeats
        out["ap_voc11_random"] = acc.tolist()
        out["mean_ap_voc11_random"] = float(np.nanmean(acc))
    return out
