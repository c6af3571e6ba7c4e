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
    with pytest.raises(ValueError, match="does not exist"):
        probe.run_probe(str(tmp_path / "nope.h5"), str(tmp_path / "test.h5"), str(tmp_path / "o2"))
