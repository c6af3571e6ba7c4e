"""Eq. 3 regression: planted coefficients, agreement with lstsq, criteria, log handling, permutation."""

import json
import os

import h5py
import numpy as np
import pytest

from vae import regress


def _counts_areas(rng, n, zero=True):
    count = rng.integers(0 if zero else 1, 5, n)
    area = np.where(count > 0, count * rng.uniform(80, 240, n), 0).round().astype(np.int64)
    return count, area


def _std(a):
    return (a - a.mean(0)) / a.std(0)


def test_recovers_planted_coefficients_and_matches_lstsq():
    rng = np.random.default_rng(0)
    n = 6000
    x = rng.normal(size=(n, 2))
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]  # correlated predictors, like log N and log A
    xs = _std(x)
    coef = np.array([[0.5, 0.0, 0.3, 0.0], [0.0, -0.4, 0.3, 0.0]])  # (2, d): b_n row, b_a row
    noise = rng.normal(size=(n, 4)) * np.array([1.0, 1.0, 0.5, 2.0])
    z = 3.0 + 2.0 * (xs @ coef + noise)  # offset and scale: standardisation removes both
    fit = regress.fit_units(z, x)
    true_std = coef / (xs @ coef + noise).std(0)  # coefficients on the standardised z
    assert np.allclose(fit["beta"], true_std, atol=0.03)
    # closed form == numpy.linalg.lstsq with an intercept on the standardised variables
    X = np.column_stack([np.ones(n), xs])
    zs = _std(z)
    sol, *_ = np.linalg.lstsq(X, zs, rcond=None)
    assert np.allclose(fit["beta"], sol[1:], rtol=0, atol=1e-8)
    assert np.allclose(sol[0], 0, atol=1e-8)
    resid = zs - X @ sol
    r2 = 1 - (resid ** 2).sum(0) / ((zs - zs.mean(0)) ** 2).sum(0)
    assert np.allclose(fit["r2"], r2, atol=1e-8)
    cov = np.linalg.inv(X.T @ X)
    se = np.sqrt(np.outer(np.diag(cov)[1:], (resid ** 2).sum(0) / (n - 3)))
    assert np.allclose(fit["se"], se, atol=1e-8)


def test_selection_criteria_hand_built():
    r2 = np.array([0.06, 0.06, 0.04, 0.20, 0.20, 0.05, 0.30])
    b_n = np.array([0.50, 0.05, 0.50, 0.50, 0.09, 0.40, 0.10])
    b_a = np.array([0.05, -0.50, 0.05, 0.30, -0.099, -0.10, 0.50])
    num, area = regress.select_units(r2, b_n, b_a, r2_min=0.05, coef_cut=0.1)
    # 0: number; 1: area; 2: R^2 too low; 3: both coefficients large; 4: both small -> both lists;
    # 5: R^2 at the threshold counts, |b_a| = 0.1 is not below the cut; 6: |b_n| = 0.1 not below
    assert num.tolist() == [0, 4]
    assert area.tolist() == [1, 4]
    num, area = regress.select_units(r2, b_n, b_a, r2_min=0.1)  # Stoianov & Zorzi
    assert num.tolist() == [4] and area.tolist() == [4]
    with pytest.raises(ValueError, match="r2_min"):
        regress.select_units(r2, b_n, b_a, r2_min=1.5)


def test_log_handling_never_uses_an_epsilon():
    count = np.array([0, 0, 1, 2, 3, 4])
    area = np.array([0, 0, 100, 210, 290, 400])
    x, used, info = regress.log_predictors(count, area)
    assert used.tolist() == [False, False, True, True, True, True]
    assert info["n_excluded_zero_count"] == 2 and info["n_used"] == 4
    assert np.allclose(x[:, 0], np.log([1, 2, 3, 4])) and np.allclose(x[:, 1], np.log([100, 210, 290, 400]))
    x, used, info = regress.log_predictors(count, area, "plus1")
    assert used.all() and info["n_excluded_zero_count"] == 0
    assert np.allclose(x[:, 0], np.log(count + 1.0)) and x[0, 1] == 0.0
    with pytest.raises(ValueError, match="log_n"):
        regress.log_predictors(count, area, "epsilon")


def test_constant_unit_collinear_predictors_and_permutation():
    rng = np.random.default_rng(1)
    count, area = _counts_areas(rng, 3000)
    x, used, _ = regress.log_predictors(count, area)
    z = rng.normal(size=(used.sum(), 6))
    z[:, 0] += 0.6 * _std(x)[:, 0]
    z[:, 5] = 2.5  # a collapsed unit
    fit = regress.fit_units(z, x)
    assert fit["constant"].tolist() == [False] * 5 + [True]
    assert fit["r2"][5] == 0 and fit["beta"][0, 5] == 0
    perm = regress.permutation_baseline(z, x, np.random.default_rng(0), permutations=10)
    assert len(perm["numerosity"]) == 10 and perm["mean_selected"] < 0.5
    assert max(perm["max_r2"]) < fit["r2"][0]
    with pytest.raises(ValueError, match="collinear"):
        regress.fit_units(z, np.column_stack([x[:, 0], 2 * x[:, 0] + 1]))


def test_run_regression_writes_contract_keys(tmp_path):
    rng = np.random.default_rng(2)
    n, d = 2500, 8
    count, area = _counts_areas(rng, n)
    mu = rng.normal(size=(n, d)).astype(np.float32)
    ln = np.log(np.maximum(count, 1))
    la = np.log(np.maximum(area, 1))
    # unit 1 follows log N, unit 2 follows log A (with opposite sign)
    mu[:, 1] += 1.5 * (ln - ln.mean()) / ln.std()
    mu[:, 2] -= 1.5 * (la - la.mean()) / la.std()
    lat = tmp_path / "lat.h5"
    with h5py.File(lat, "w") as f:
        f["mu"] = mu
        f["count"] = count
        f["cumulative_area"] = area
    res = regress.run_regression(str(lat), str(tmp_path / "out"), permutations=5, seed=0)
    data = json.loads((tmp_path / "out" / "regression.json").read_text())
    for key in ("units", "numerosity_units", "area_units", "r2_min", "n_used", "permutation_mean_selected",
                "corr_log_n_log_a"):
        assert key in data
    assert set(data["units"][0]) >= {"index", "r2", "b_n", "b_a"}
    assert data["n_used"] == int((count > 0).sum()) and data["r2_min"] == 0.05
    assert res["units"][1]["r2"] > 0.3 and res["units"][2]["b_a"] < -0.3
    assert res["numerosity_units"] == [1] and res["area_units"] == [2] and res["area_unit_signs"] == ["-"]
    assert res["best_numerosity_candidate"]["index"] == 1 and res["best_area_candidate"]["index"] == 2
    for name in ("fig4_profiles.png", "coefficients.png", "regression.md"):
        assert os.path.getsize(tmp_path / "out" / name) > 0
    assert "images with N = 0 excluded" in (tmp_path / "out" / "regression.md").read_text()


def test_a_failed_write_keeps_the_earlier_result_whole(tmp_path, monkeypatch):
    from synthcount._io import WriteError

    rng = np.random.default_rng(3)
    count, area = _counts_areas(rng, 400)
    lat = tmp_path / "lat.h5"
    with h5py.File(lat, "w") as f:
        f["mu"] = rng.normal(size=(400, 4)).astype(np.float32)
        f["count"] = count
        f["cumulative_area"] = area
    out = tmp_path / "out"
    regress.run_regression(str(lat), str(out), permutations=2, seed=0)
    before = (out / "regression.md").read_text()

    def full(*a, **k):  # the disk fills up while the report is written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(regress, "summary_text", full)
    with pytest.raises(WriteError, match="regression.md: No space left on device"):
        regress.run_regression(str(lat), str(out), permutations=2, seed=0)
    assert (out / "regression.md").read_text() == before
    assert json.loads((out / "regression.json").read_text())["n_used"] == int((count > 0).sum())  # whole
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_latents_that_are_not_finite_are_refused_before_any_fit(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    rng = np.random.default_rng(4)
    count, area = _counts_areas(rng, 300)
    mu = rng.normal(size=(300, 4)).astype(np.float32)
    mu[7, 1], mu[9, 0] = np.nan, np.inf  # what a diverged model encodes
    lat = tmp_path / "lat.h5"
    with h5py.File(lat, "w") as f:
        f["mu"], f["count"], f["cumulative_area"] = mu, count, area
    with pytest.raises(ValueError, match=r"mu is not finite in 2 of 300 images \(rows 7, 9\)"):
        regress.run_regression(str(lat), str(tmp_path / "out"), permutations=2)
    for args in (["vae", "regress", str(lat), "--out", str(tmp_path / "r")],
                 ["vae", "probe", str(lat), str(lat), "--out", str(tmp_path / "p")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "not finite" in r.output and "Traceback" not in r.output, r.output
    assert sorted(os.listdir(tmp_path)) == ["lat.h5"]  # no result folder written
