"""Number-sense analyses with planted signals: selective units (ANOVA), Weber fraction, DeWind axes, CLI."""

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("scipy")

from vae import compare, dewind, tuning  # noqa: E402
from vae.encode import write_latents  # noqa: E402


def _two_set_stimuli(rng, reps=40):
    """N 1..8 in a standard set (items of one size: TSA grows with N) and a control set (TSA constant)."""
    n = np.repeat(np.arange(1, 9), 2 * reps)
    s = np.tile([0, 1], 8 * reps)
    tsa = np.where(s == 0, n * rng.uniform(80, 120, n.size), 600 * rng.uniform(0.9, 1.1, n.size))
    return n, s, tsa


def _std(a):
    return (a - a.mean()) / a.std()


def test_log_gaussian_unit_is_selective_and_a_tsa_unit_is_not():
    rng = np.random.default_rng(1)
    n, s, tsa = _two_set_stimuli(rng)
    tuned = np.exp(-(np.log2(n) - 2.0) ** 2 / (2 * 0.5 ** 2))  # log-Gaussian around N = 4
    z = np.column_stack([tuned + 0.1 * rng.normal(size=n.size),
                         _std(np.log(tsa)) + 0.1 * rng.normal(size=n.size),  # follows total surface area
                         -tuned + 0.1 * rng.normal(size=n.size),  # the same tuning coded by a dip
                         rng.normal(size=n.size)])  # noise
    res = tuning.tuning_arrays(z, n, s)
    u = res["units"]
    assert res["two_way"] and res["df"] == {"n": 7, "set": 1, "interaction": 7, "error": n.size - 16}
    assert u[0]["selective"] and u[0]["preferred"] == 4 and u[0]["p_n"] < 1e-10
    assert u[0]["p_set"] > 0.05 and u[0]["p_int"] > 0.05
    # the TSA unit responds to N in the standard set, but the control set exposes it
    assert not u[1]["selective"] and u[1]["p_n"] < 0.01 and (u[1]["p_set"] < 0.01 or u[1]["p_int"] < 0.01)
    assert u[2]["selective"] and u[2]["preferred"] == 4 and u[2]["sign"] == -1  # oriented, not missed
    assert not u[3]["selective"]
    assert res["selective_units"] == [0, 2] and res["share_selective"] == 0.5
    assert res["preferred_histogram"][4] == 2 and sum(res["preferred_histogram"].values()) == 2
    assert res["monotonic_selective_units"] == []
    curve = np.array(res["average_curves"][4])
    assert curve.argmax() == 3 and curve.max() == 1.0
    fit = res["gaussian_fits"][4]
    assert fit["log"]["r2"] > fit["linear"]["r2"] and fit["log"]["r2"] > 0.99  # Weber-Fechner: log axis fits better
    assert abs(fit["log"]["mu"] - 2.0) < 0.1 and abs(fit["log"]["sigma"] - 0.5) < 0.1
    # one stimulus set with TSA drawn independently of N: a one-way ANOVA, and the TSA unit is not selective
    tsa1 = rng.uniform(300, 900, n.size)
    z1 = np.column_stack([tuned + 0.1 * rng.normal(size=n.size), _std(np.log(tsa1)) + 0.1 * rng.normal(size=n.size)])
    one = tuning.tuning_arrays(z1, n)
    assert not one["two_way"] and "one-way" in one["note"]
    assert one["units"][0]["selective"] and not one["units"][1]["selective"]
    # one set in which TSA grows with N: the one-way ANOVA is fooled by the TSA unit, the covariate test is not
    fa = rng.uniform(800, 2000, n.size)
    tsa2 = tsa[s == 0].repeat(2)  # the standard set's areas, aligned with n (pairs of rows share N)
    z2 = np.column_stack([tuned + 0.1 * rng.normal(size=n.size), _std(np.log(tsa2)) + 0.1 * rng.normal(size=n.size)])
    cov = tuning.visual_covariates({"cumulative_area": tsa2, "field_area": fa})
    both = tuning.tuning_arrays(z2, n, covariates=cov)
    assert both["selective_units"] == [0, 1] and both["covariate_selective_units"] == [0]
    assert both["covariates"]["names"] == ["log TSA", "log FA"] and both["units"][1]["p_covariates"] < 1e-10


def test_anova_equals_the_textbook_sums_of_squares():
    from scipy import stats

    rng = np.random.default_rng(2)
    n = np.repeat(np.arange(1, 5), 30)
    s = np.tile([0, 1, 2], 40)
    z = rng.normal(size=(n.size, 3)) + np.column_stack([0.3 * n, 0.4 * s, 0.3 * (n == 2) * (s == 1)])
    one = tuning.anova_units(z, n)
    for j in range(3):
        f, p = stats.f_oneway(*(z[n == k, j] for k in range(1, 5)))
        assert np.isclose(one["f_n"][j], f) and np.isclose(one["p_n"][j], p)
    two = tuning.anova_units(z, n, s)  # balanced: Type II = the classic decomposition
    for j in range(3):
        y = z[:, j]
        g = y.mean()
        mn = np.array([y[n == k].mean() for k in range(1, 5)])
        ms = np.array([y[s == k].mean() for k in range(3)])
        cell = np.array([[y[(n == a) & (s == b)].mean() for b in range(3)] for a in range(1, 5)])
        ss_n, ss_s = 30 * ((mn - g) ** 2).sum(), 40 * ((ms - g) ** 2).sum()
        ss_i = 10 * ((cell - mn[:, None] - ms[None, :] + g) ** 2).sum()
        mse = sum(((y[(n == a) & (s == b)] - cell[a - 1, b]) ** 2).sum() for a in range(1, 5)
                  for b in range(3)) / (n.size - 12)
        assert np.isclose(two["f_n"][j], ss_n / 3 / mse)
        assert np.isclose(two["f_set"][j], ss_s / 2 / mse)
        assert np.isclose(two["f_int"][j], ss_i / 6 / mse)
    assert two["p_set"][1] < 0.01 and two["p_n"][0] < 1e-4


def test_weber_fraction_of_planted_comparison_noise():
    # scalar variability: the code of N has noise proportional to N, so comparing two codes
    # gives exactly P(correct) = 1 - 0.5 erfc(|n1-n2| / (sqrt(2) w sqrt(n1^2+n2^2))) with w = 0.2
    rng = np.random.default_rng(3)
    n = rng.integers(1, 17, 6000)
    z = np.column_stack([rng.normal(size=(n.size, 2)), n * (1 + 0.2 * rng.normal(size=n.size))])
    whole = compare.compare_arrays(z, n, pairs=10000, bootstrap=50, seed=0)
    assert abs(whole["w"] - 0.2) < 0.03 and whole["at_bound"] is None
    assert whole["ci95"][0] < whole["w"] < whole["ci95"][1]
    refs = compare.compare_arrays(z, n, references=(8, 16), pairs=10000, bootstrap=0, seed=1)
    assert abs(refs["w"] - 0.2) < 0.03 and refs["references"] == [8, 16]
    assert all(8 in (b["n1"], b["n2"]) or 16 in (b["n1"], b["n2"]) for b in refs["by_pair"])
    # latents that know nothing about N: comparisons at chance, w at the top of its range
    noise = compare.compare_arrays(rng.normal(size=(n.size, 3)), n, pairs=4000, bootstrap=0, seed=0)
    assert noise["w"] > 2 and abs(noise["test_accuracy"] - 0.5) < 0.05


def test_fit_weber_recovers_w_from_model_outcomes():
    rng = np.random.default_rng(4)
    n1 = rng.integers(5, 33, 20000)
    n2 = rng.integers(5, 33, 20000)
    keep = n1 != n2
    n1, n2 = n1[keep], n2[keep]
    correct = rng.random(n1.size) < compare.weber_p_correct(n1, n2, 0.15)
    fit = compare.fit_weber(n1, n2, correct, bootstrap=100, seed=0)
    assert abs(fit["w"] - 0.15) < 0.01 and fit["ci95"][0] <= 0.15 <= fit["ci95"][1]
    with pytest.raises(ValueError, match="different"):
        compare.fit_weber(np.array([3, 4]), np.array([3, 5]), np.array([True, False]))


def _dewind_props(rng, n_img=3000):
    """Independent log N, log Sz, log Sp, realised as counts, total areas and field areas."""
    n = rng.integers(1, 17, n_img)
    lsz = rng.uniform(np.log(2000), np.log(20000), n_img)
    lsp = rng.uniform(np.log(20000), np.log(200000), n_img)
    tsa = np.exp((lsz + np.log(n)) / 2)  # log TSA = (log N + log Sz) / 2
    fa = np.exp((lsp + np.log(n)) / 2)   # log FA = (log N + log Sp) / 2
    return n, lsz, lsp, tsa, fa


def test_dewind_units_and_angles_from_planted_coefficients():
    rng = np.random.default_rng(5)
    n, lsz, lsp, tsa, fa = _dewind_props(rng)
    x = np.column_stack([_std(np.log(n)), _std(lsz), _std(lsp)])
    coef = np.array([[1, 0, 0, 0.7, 0.7], [0, 1, 0, 0.7, 0], [0, 0, -1, 0, 0.7]])  # (3, units)
    z = x @ coef + 0.5 * rng.normal(size=(n.size, 5))
    rec = dewind.dewind_arrays(z, {"count": n, "log_size": lsz, "log_spacing": lsp}, permutations=3)
    assert rec["source"] == "record" and rec["n_units"] == [0] and rec["sz_units"] == [1] and rec["sp_units"] == [2]
    ang = [u["angle_deg"] for u in rec["units"]]
    assert abs(ang[1]) < 10 and abs(ang[2] + 90) < 10 and abs(ang[4] - 90) < 10
    assert max(abs(v) for v in rec["axis_correlations"].values()) < 0.05
    assert rec["permutation_mean_selected"] < 1
    # the same axes computed from total and field area (old records)
    comp = dewind.dewind_arrays(z, {"count": n, "cumulative_area": tsa, "field_area": fa}, permutations=0)
    assert comp["source"] == "computed" and comp["n_units"] == [0] and comp["sz_units"] == [1]
    assert np.allclose([u["b_sz"] for u in comp["units"]], [u["b_sz"] for u in rec["units"]], atol=1e-9)
    with pytest.raises(ValueError, match="log_size"):
        dewind.dewind_arrays(z, {"count": n, "cumulative_area": tsa}, permutations=0)


def _latents(path, mu, count, **extra):
    arrays = {"mu": mu, "sigma": np.ones_like(mu), "count": count, "cumulative_area": extra.pop("tsa"),
              "index": np.arange(len(count)), **extra}
    write_latents(str(path), arrays, {"dataset": str(path.parent / "gone"), "data_kind": "shards"})


def test_cli_tuning_compare_and_regress_dewind(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    rng = np.random.default_rng(6)
    n, lsz, lsp, tsa, fa = _dewind_props(rng, 1200)
    s = rng.integers(0, 2, n.size)
    mu = np.column_stack([n * (1 + 0.2 * rng.normal(size=n.size)), rng.normal(size=(n.size, 3))]).astype(np.float32)
    lat, unt = tmp_path / "lat.h5", tmp_path / "unt.h5"
    _latents(lat, mu, n, tsa=tsa.round().astype(np.int64), field_area=fa.astype(np.float32), stimulus_set=s,
             stimulus_set_names=["standard", "total-area"])
    _latents(unt, rng.normal(size=mu.shape).astype(np.float32), n, tsa=tsa.round().astype(np.int64))
    r = CliRunner()
    res = r.invoke(main, ["vae", "tuning", str(lat), "--out", str(tmp_path / "t"), "--untrained", str(unt)])
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "t" / "tuning.json").read_text())
    assert set(t["representations"]) == {"trained", "untrained"}
    tr = t["representations"]["trained"]
    assert tr["two_way"] and tr["stimulus_set_names"] == ["standard", "total-area"] and 0 in tr["selective_units"]
    assert all((tmp_path / "t" / f).is_file() for f in t["figures"].values())
    assert "two-way ANOVA" in (tmp_path / "t" / "tuning.md").read_text()
    res = r.invoke(main, ["vae", "compare", str(lat), "--out", str(tmp_path / "c"), "--untrained", str(unt),
                          "--references", "4,8", "--pairs", "3000", "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    c = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert c["representations"]["trained"]["w"] < c["representations"]["untrained"]["w"]
    assert (tmp_path / "c" / "compare_psychometric.png").is_file() and "published" in (
        tmp_path / "c" / "compare.md").read_text()
    res = r.invoke(main, ["vae", "regress", str(lat), "--out", str(tmp_path / "r"), "--design", "dewind",
                          "--permutations", "1", "--untrained", str(unt)])
    assert res.exit_code == 0, res.output
    reg = json.loads((tmp_path / "r" / "regression.json").read_text())
    d = reg["dewind"]
    assert d["source"] == "computed" and 0 in d["n_units"] and (tmp_path / "r" / "dewind.png").is_file()
    assert 0 not in reg["controls"]["untrained"]["dewind"]["n_units"]  # the noise control has no N unit 0
    assert "Beside the controls" in (tmp_path / "r" / "regression.md").read_text()
    # bad input: one line, exit 2, nothing half-written
    for args, words in (
            (["vae", "regress", str(unt), "--out", str(tmp_path / "x"), "--design", "dewind"], "field_area"),
            (["vae", "compare", str(lat), "--out", str(tmp_path / "x"), "--references", "99"], "reference"),
            (["vae", "compare", str(lat), "--out", str(tmp_path / "x"), "--references", "a,b"], "--references"),
            (["vae", "tuning", str(lat), "--out", str(tmp_path / "x"), "--pca"], "--pca")):
        res = r.invoke(main, args)
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, (args, res.output)
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["mu"] = np.zeros((5, 4), np.float32)
        f["count"] = np.arange(5)
    res = r.invoke(main, ["vae", "tuning", str(lat), "--out", str(tmp_path / "x"), "--untrained",
                          str(tmp_path / "short.h5")])
    assert res.exit_code == 2 and "same images" in res.output


def test_encode_copies_the_records_visual_properties_and_pca_reads_their_images(tmp_path):
    import synthcount
    from synthcount.generate import generate_dataset
    from vae.encode import record_properties
    from vae.numbersense import load_representations

    data = str(tmp_path / "bin")
    generate_dataset(data, synthcount.DatasetConfig(scene=synthcount.preset("binary"), num_images=40, shard_size=20,
                                                    seed=2), workers=1, progress=False)
    ds = synthcount.open_dataset(data)
    idx = np.arange(40)[::-1]
    props = record_properties(ds, idx)
    assert np.array_equal(props["field_area"], ds.labels["field_area"][idx])
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(40, 6)).astype(np.float32)
    lab = ds.labels
    arrays = {"mu": mu, "sigma": mu, "count": lab["count"][idx], "cumulative_area": lab["cumulative_area"][idx],
              "index": idx, **props}
    write_latents(str(tmp_path / "lat.h5"), arrays, {"dataset": data, "data_kind": "shards"})
    reps, lat = load_representations(str(tmp_path / "lat.h5"), pca=True)
    assert np.array_equal(lat["field_area"], props["field_area"]) and reps["pca"].shape == (40, 6)
    from vae.baselines import pca_features

    assert np.allclose(reps["pca"], pca_features(ds.read_images(idx), 6))
