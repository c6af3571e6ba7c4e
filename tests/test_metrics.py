"""Count AP (VOC 11-point), non-interpolated AP and per-class accuracy on hand-computed cases."""

import math

import numpy as np
import pytest

from vae import metrics


def test_ap_hand_computed_no_ties():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    p = np.array([1, 0, 1, 0, 0, 1])
    # positives at ranks 1, 3, 6: precision 1, 2/3, 1/2 at each recall step of 1/3
    assert metrics.average_precision(s, p) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3, abs=1e-12)
    # 11-pt: t = 0..0.3 -> 1 (rec 1/3); t = 0.4..0.6 -> 2/3; t = 0.7..1 -> 1/2
    assert metrics.voc11_average_precision(s, p) == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 0.5) / 11, abs=1e-12)


def test_ap_sklearn_doc_example():
    # scikit-learn's documented example: average_precision_score -> 0.8333...
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.average_precision(s, y) == pytest.approx(0.8333333333333333, abs=1e-12)
    # 11-pt: rec 0.5 at prec 1, rec 1 at prec 2/3 -> (6 * 1 + 5 * 2/3) / 11
    assert metrics.voc11_average_precision(s, y) == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)


def test_ties_ranked_as_a_group_and_order_free():
    s = np.array([1.0, 1.0, 0.5, 0.5])
    p = np.array([1, 0, 0, 1])
    # sklearn: thresholds 1 (P 1/2, R 1/2) and 0.5 (P 1/2, R 1) -> 0.5
    assert metrics.average_precision(s, p) == pytest.approx(0.5)
    assert metrics.voc11_average_precision(s, p) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, 60).astype(float)
    p = rng.random(60) < 0.3
    ref = metrics.average_precision(s, p), metrics.voc11_average_precision(s, p)
    for _ in range(5):
        o = rng.permutation(60)
        assert metrics.average_precision(s[o], p[o]) == pytest.approx(ref[0], abs=1e-12)
        assert metrics.voc11_average_precision(s[o], p[o]) == pytest.approx(ref[1], abs=1e-12)


def test_ap_equals_mean_precision_at_positives_without_ties():
    rng = np.random.default_rng(0)
    s = rng.random(200)
    p = rng.random(200) < 0.2
    order = np.argsort(-s)
    hits = np.cumsum(p[order])
    ranks = np.flatnonzero(p[order]) + 1
    expected = np.mean(hits[ranks - 1] / ranks)
    assert metrics.average_precision(s, p) == pytest.approx(expected, abs=1e-12)
    assert 0 <= metrics.voc11_average_precision(s, p) <= 1


def test_extremes_and_no_positive():
    s = np.array([0.4, 0.3, 0.2, 0.1])
    assert metrics.average_precision(s, [1, 1, 0, 0]) == 1.0
    assert metrics.voc11_average_precision(s, [1, 1, 0, 0]) == 1.0
    # the only positive ranked last: precision 1/4 at every recall level
    assert metrics.average_precision(s, [0, 0, 0, 1]) == pytest.approx(0.25)
    assert metrics.voc11_average_precision(s, [0, 0, 0, 1]) == pytest.approx(0.25)
    assert math.isnan(metrics.average_precision(s, [0, 0, 0, 0]))
    with pytest.raises(ValueError, match="equal length"):
        metrics.average_precision(s, [1, 0])


def test_per_class_accuracy_and_count_metrics():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    acc = metrics.per_class_accuracy(y, pred, 5)
    assert acc[:3].tolist() == [0.5, 1.0, 0.0]
    assert np.isnan(acc[3]) and np.isnan(acc[4])
    scores = np.eye(5)[pred] * 0.9 + 0.02  # arg-max = pred
    m = metrics.count_metrics(y, scores)
    assert m["accuracy"][:3] == [0.5, 1.0, 0.0]
    assert m["mean_accuracy"] == pytest.approx(0.5)  # NaN classes left out of the mean
    assert m["overall_accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"][0] == [1, 1, 0, 0, 0] and m["support"] == [2, 2, 1, 0, 0]
    # class 1 scores: 0.02, 0.92, 0.92, 0.92, 0.02 -> one tied group of 3 holding both positives
    assert m["ap"][1] == pytest.approx(2 / 3)
    assert len(m["ap_voc11"]) == 5 and m["ap_voc11"][3] != m["ap_voc11"][3]  # NaN: class absent


def test_to_classes_and_chance():
    assert metrics.to_classes(np.array([0, 1, 4, 7, 3])).tolist() == [0, 1, 4, 4, 3]
    with pytest.raises(ValueError, match="non-negative"):
        metrics.to_classes(np.array([-1, 2]))
    y = np.array([0] * 5 + [1] * 3 + [4] * 2)
    ch = metrics.chance_rows(y, 5, rng=np.random.default_rng(0), repeats=50)
    assert ch["frequency"] == pytest.approx([0.5, 0.3, np.nan, np.nan, 0.2], nan_ok=True)
    assert ch["mean_frequency"] == pytest.approx(1 / 3)  # over the 3 classes present, like the measured rows
    assert ch["accuracy_uniform"] == [0.2] * 5
    # 11-point interpolation lifts a random ranking above the class frequency
    assert ch["ap_voc11_random"][0] > 0.5 and np.isnan(ch["ap_voc11_random"][2])
