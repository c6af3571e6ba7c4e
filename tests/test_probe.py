"""The count probe: learns separable latents, is deterministic, writes probe.json and table1.md."""

import json

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vae import probe  # noqa: E402


def _latents(rng, n, d=12):
    count = rng.integers(0, 7, n)  # 5, 6 -> class 4+
    cls = np.minimum(count, 4)
    centres = rng.normal(size=(5, d)) * 3.0
    mu = centres[cls] + rng.normal(size=(n, d))
    return mu.astype(np.float32), count


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_probe_learns_separable_latents_and_is_deterministic():
    rng = np.random.default_rng(0)
    mu, count = _latents(rng, 1500)
    kw = dict(seed=3, max_epochs=40, patience=10)
    res = probe.probe_arrays(mu[:1000], count[:1000], mu[1000:], count[1000:], **kw)
    chance = res["chance"]["mean_frequency"]
    assert res["mean_accuracy"] > 0.9 > 2 * chance
    assert res["mean_ap"] > 0.9 and res["mean_ap_voc11"] > 0.9
    assert all(0 <= v <= 1 for v in res["ap"] + res["ap_voc11"] + res["accuracy"])
    again = probe.probe_arrays(mu[:1000], count[:1000], mu[1000:], count[1000:], **kw)
    assert again["ap"] == res["ap"] and again["accuracy"] == res["accuracy"]
    # shuffled labels: nothing to learn
    noise = probe.probe_arrays(mu[:1000], rng.permutation(count[:1000]), mu[1000:], count[1000:], **kw)
    assert noise["mean_accuracy"] < 0.4


def test_class_weights_balance_the_classes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    y = np.array([0] * 100 + [1] * 50 + [2] * 30 + [3] * 20)  # class 4 absent: weight 0
    _, info = probe.fit_probe(x, y, rng, max_epochs=1, val_fraction=0.0)
    w = np.array(info["class_weights"])
    assert np.allclose(w[:4] * np.array([100, 50, 30, 20]), 50.0) and w[4] == 0


def test_run_probe_files(tmp_path):
    rng = np.random.default_rng(2)
    mu, count = _latents(rng, 900)
    for name, sl in (("train.h5", slice(0, 600)), ("test.h5", slice(600, 900))):
        with h5py.File(tmp_path / name, "w") as f:
            f["mu"] = mu[sl]
            f["count"] = count[sl]
    res = probe.run_probe(str(tmp_path / "train.h5"), str(tmp_path / "test.h5"), str(tmp_path / "out"),
                          max_epochs=20, progress=False)
    data = json.loads((tmp_path / "out" / "probe.json").read_text())
    for key in ("ap_voc11", "ap", "accuracy"):
        assert len(data[key]) == 5
    for key in ("mean_ap_voc11", "mean_ap", "mean_accuracy"):
        assert 0 <= data[key] <= 1
    assert data["mean_accuracy"] == res["mean_accuracy"]
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "CNN_FT [45] — *published, not measured* | 93.6" in table
    assert "per-class accuracy" in table and "VOC 11-pt" in table and "non-interpolated" in table
    assert "VAE + logistic regression: per-class accuracy" in table and "Logistic regression rows" in table
    assert 0 <= data["logistic"]["mean_accuracy"] <= 1 and len(data["logistic"]["ap"]) == 5
    with pytest.raises(ValueError, match="does not exist"):
        probe.run_probe(str(tmp_path / "nope.h5"), str(tmp_path / "test.h5"), str(tmp_path / "o2"))


# ---------------------------------------------------------------- the logistic-regression probe (linear control)

def test_probe_arrays_adds_logistic_beside_the_mlp():
    rng = np.random.default_rng(4)
    mu, count = _latents(rng, 900)
    kw = dict(seed=1, max_epochs=10, patience=5)
    res = probe.probe_arrays(mu[:600], count[:600], mu[600:], count[600:], **kw)
    lo = res["logistic"]
    for key in ("ap_voc11", "ap", "accuracy"):
        assert len(lo[key]) == 5
    for key in ("mean_ap_voc11", "mean_ap", "mean_accuracy"):
        assert 0 <= lo[key] <= 1
    assert lo["chance"] == res["chance"] and lo["probe"]["kind"] == "logistic"
    # the MLP's result is what it was without the logistic probe
    alone = probe.probe_arrays(mu[:600], count[:600], mu[600:], count[600:], logistic=False, **kw)
    assert "logistic" not in alone
    assert {k: v for k, v in res.items() if k != "logistic"} == alone
    # table rows: the old ones unchanged, then three logistic rows
    old = probe.table1_rows(res, "Trained")
    both = probe.table1_rows_with_logistic(res, "Trained")
    assert both[:len(old)] == old and len(both) == len(old) + 3
    assert both[-1][0].startswith("Trained (logistic): per-class accuracy") and both[-1][2] == lo["mean_accuracy"]
    assert probe.table1_rows_with_logistic(res, "VAE + MLP")[-1][0].startswith("VAE + logistic regression:")
    assert len(probe.table1_rows_with_logistic(res, "T", chance=False)) == 6


def test_logistic_separable_high_random_near_chance_and_deterministic():
    rng = np.random.default_rng(5)
    mu, count = _latents(rng, 3000, d=32)
    y = np.minimum(count, 4)
    predict, info = probe.fit_logistic(mu[:2000], y[:2000])
    assert (predict(mu[2000:]).argmax(1) == y[2000:]).mean() > 0.95
    assert np.allclose(predict(mu[:5]).sum(1), 1.0)
    again, info2 = probe.fit_logistic(mu[:2000], y[:2000])
    assert np.array_equal(again(mu[2000:]), predict(mu[2000:])) and info2 == info
    noise = rng.normal(size=mu.shape)
    res = probe.probe_arrays(noise[:2000], count[:2000], noise[2000:], count[2000:], seed=0, max_epochs=2)
    assert abs(res["logistic"]["mean_accuracy"] - 0.2) < 0.08  # 5 balanced-weighted classes: chance 1/5


def test_logistic_class_balance_beats_majority_on_imbalanced_data():
    rng = np.random.default_rng(6)
    n, d = 4000, 8
    y = rng.choice(5, size=n, p=[0.84, 0.04, 0.04, 0.04, 0.04])
    centres = rng.normal(size=(5, d)) * 0.8  # overlapping classes: the unweighted fit favours class 0
    x = centres[y] + rng.normal(size=(n, d))
    tr, te = slice(0, 3000), slice(3000, n)
    from vae import metrics

    def mean_acc(weighted):
        predict, _ = probe.fit_logistic(x[tr], y[tr], weighted=weighted)
        return float(np.nanmean(metrics.per_class_accuracy(y[te], predict(x[te]).argmax(1), 5)))

    majority = 1 / 5  # always class 0: per-class accuracy 1, 0, 0, 0, 0
    balanced, plain = mean_acc(True), mean_acc(False)
    assert balanced > majority + 0.2 and balanced > plain
    _, info = probe.fit_logistic(x[tr], y[tr])
    sup = np.bincount(y[tr], minlength=5)
    assert np.allclose(np.array(info["class_weights"]) * sup, 3000 / 5)
