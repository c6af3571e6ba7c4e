"""Number-selective units by the neurophysiologists' test (Nasr, Viswanathan & Nieder 2019).

Nasr et al. showed a network a standard stimulus set and control sets, each holding
a different visual property constant across numerosity, and called a unit
*number-selective* when a two-way ANOVA of its response (numerosity x stimulus set)
gives p < 0.01 for numerosity while neither the stimulus set nor the interaction is
significant. Here the response of unit i to an image is its posterior mean z_i.

The ANOVA is computed for every unit at once from least-squares fits of nested
models with dummy-coded factors (Type II sums of squares, so unequal cell sizes are
handled; with a balanced design they equal the textbook ones): SS_N = RSS(set) -
RSS(N + set), SS_set = RSS(N) - RSS(N + set), SS_NxSet = RSS(N + set) - RSS(cells),
each F against RSS(cells) over n - cells degrees of freedom. With one stimulus set
the test is a one-way ANOVA on N, which cannot rule out a unit that follows a
correlate of N; the results say so. Where the records give total and field area, a
covariate test is added (:func:`covariate_test`): N must matter after log TSA and log
FA, and they must not after N, the single-set counterpart of the control sets.

A latent unit has no sign (a unit may code N by going down), so each unit's tuning
curve (mean z_i per N) is oriented to make its most extreme mean a peak: the
*preferred numerosity* is the N whose mean lies farthest from the unit's mean over N,
and the curve is flipped when that mean is below it. Curves are normalised to [0, 1]
(min to max) and averaged per preferred N, as in Nieder & Miller (2003) and Nasr et
al. (2019). Gaussians are fitted to each average curve on a linear and on a log N
axis; the Weber-Fechner signature is a better fit on the log axis and, on it, a
width that does not grow with the preferred N.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np

__all__ = ["anova_units", "covariate_test", "visual_covariates", "tuning_curves", "fit_gaussian", "tuning_arrays",
           "tuning_text", "tuning_figures"]


def _rss(design: np.ndarray, z: np.ndarray):
    """Residual sum of squares of every column of z on ``design`` and the design's rank."""
    coef, _, rank, _ = np.linalg.lstsq(design, z, rcond=None)
    r = z - design @ coef
    return np.einsum("ij,ij->j", r, r), int(rank)


def _dummies(codes: np.ndarray, k: int) -> np.ndarray:
    """Columns for levels 1..k-1 (level 0 is absorbed by the intercept)."""
    return (codes[:, None] == np.arange(1, k)[None, :]).astype(np.float64)


def anova_units(z: np.ndarray, numerosity: np.ndarray, stimulus_set: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Two-way (numerosity x stimulus set) or one-way (numerosity) ANOVA for every column of ``z``.

    Parameters
    ----------
    z : numpy.ndarray of float, shape (n, d)
        Responses, one column per unit.
    numerosity : numpy.ndarray of int, shape (n,)
    stimulus_set : numpy.ndarray of int, shape (n,), optional
        None or a single level: one-way ANOVA.

    Returns
    -------
    dict
        ``two_way`` (bool); ``p_n``, ``f_n``, ``eta2_n`` (partial eta squared of N)
        arrays (d,); with two factors also ``p_set``, ``f_set``, ``p_int``,
        ``f_int``; ``df`` (degrees of freedom of each term and of the error).
        A constant unit gets p = 1.
    """
    from scipy import stats

    z = np.asarray(z, dtype=np.float64)
    num = np.asarray(numerosity)
    if z.ndim != 2 or num.shape != (z.shape[0],):
        raise ValueError(f"z must be (n, d) and numerosity (n,), got {z.shape} and {num.shape}")
    sets = np.zeros(num.shape, dtype=np.int64) if stimulus_set is None else np.asarray(stimulus_set)
    if sets.shape != num.shape:
        raise ValueError(f"stimulus_set must be (n,) like numerosity, got {sets.shape}")
    nv, ni = np.unique(num, return_inverse=True)
    sv, si = np.unique(sets, return_inverse=True)
    if nv.size < 2:
        raise ValueError(f"the ANOVA needs at least two numerosities, got {nv.tolist()}")
    n = z.shape[0]
    zc = z - z.mean(axis=0)
    one = np.ones((n, 1))
    cell = ni * sv.size + si
    cells, ci = np.unique(cell, return_inverse=True)
    # RSS of the cell-means model: within-cell sums of squares
    sums = np.zeros((cells.size, z.shape[1]))
    np.add.at(sums, ci, zc)
    size = np.bincount(ci).astype(np.float64)
    rss_cells = np.einsum("ij,ij->j", zc, zc) - np.einsum("ij,ij->j", sums, sums / size[:, None])
    df_err = n - cells.size
    if df_err < 1:
        raise ValueError("the ANOVA needs more than one image in some cell (numerosity x set)")
    dn = _dummies(ni, nv.size)
    rss_n, rank_n = _rss(np.hstack([one, dn]), zc)
    const = zc.std(axis=0) <= 1e-12 * (1 + np.abs(z).max(axis=0))
    mse = np.maximum(rss_cells, 0) / df_err
    tiny = np.where(mse > 0, mse, np.inf)
    out: Dict[str, object] = {"two_way": sv.size > 1, "numerosities": nv.tolist(), "stimulus_sets": sv.tolist()}
    if sv.size == 1:
        ss_n = np.einsum("ij,ij->j", zc, zc) - rss_n
        df_n = rank_n - 1
        f_n = np.where(const, 0.0, (ss_n / df_n) / tiny)
        out.update(f_n=f_n, p_n=np.where(const, 1.0, stats.f.sf(f_n, df_n, df_err)),
                   eta2_n=np.where(const, 0.0, ss_n / np.maximum(ss_n + rss_cells, 1e-300)),
                   df={"n": int(df_n), "error": int(df_err)})
        return out
    ds_ = _dummies(si, sv.size)
    rss_s, rank_s = _rss(np.hstack([one, ds_]), zc)
    rss_ns, rank_ns = _rss(np.hstack([one, dn, ds_]), zc)
    df_n, df_s = rank_ns - rank_s, rank_ns - rank_n
    df_i = cells.size - rank_ns
    res = {}
    for key, ss, df in (("n", rss_s - rss_ns, df_n), ("set", rss_n - rss_ns, df_s), ("int", rss_ns - rss_cells, df_i)):
        if df < 1:  # e.g. no cell shares a numerosity with another set: the term cannot be tested
            res[key] = (np.zeros(z.shape[1]), np.ones(z.shape[1]), np.maximum(ss, 0))
            continue
        f = np.where(const, 0.0, (np.maximum(ss, 0) / df) / tiny)
        res[key] = (f, np.where(const, 1.0, stats.f.sf(f, df, df_err)), np.maximum(ss, 0))
    out.update(f_n=res["n"][0], p_n=res["n"][1], f_set=res["set"][0], p_set=res["set"][1],
               f_int=res["int"][0], p_int=res["int"][1],
               eta2_n=np.where(const, 0.0, res["n"][2] / np.maximum(res["n"][2] + rss_cells, 1e-300)),
               df={"n": int(df_n), "set": int(df_s), "interaction": int(df_i), "error": int(df_err)})
    return out


def covariate_test(z: np.ndarray, numerosity: np.ndarray, covariates: np.ndarray) -> Dict[str, object]:
    """Numerosity against continuous visual covariates, for every column of ``z`` (an ANCOVA).

    The single-set counterpart of Nasr et al.'s control sets: N (a factor) is tested
    after the covariates (e.g. log total area and log field area, which with N span
    DeWind's size and spacing axes), and the covariates jointly after N.

    Parameters
    ----------
    z : numpy.ndarray, shape (n, d)
    numerosity : numpy.ndarray of int, shape (n,)
    covariates : numpy.ndarray of float, shape (n, c)

    Returns
    -------
    dict
        ``p_n`` (N after the covariates), ``p_cov`` (the covariates after N), arrays
        (d,); ``df``.
    """
    from scipy import stats

    z = np.asarray(z, dtype=np.float64)
    cov = np.asarray(covariates, dtype=np.float64)
    num = np.asarray(numerosity)
    if cov.ndim != 2 or cov.shape[0] != z.shape[0] or num.shape != (z.shape[0],):
        raise ValueError(f"z (n, d), numerosity (n,) and covariates (n, c) must share n, got {z.shape}, {num.shape} "
                         f"and {cov.shape}")
    nv, ni = np.unique(num, return_inverse=True)
    zc = z - z.mean(axis=0)
    one = np.ones((z.shape[0], 1))
    covc = (cov - cov.mean(axis=0)) / np.where(cov.std(axis=0) > 0, cov.std(axis=0), 1)
    dn = _dummies(ni, nv.size)
    rss_c, rank_c = _rss(np.hstack([one, covc]), zc)
    rss_n, rank_n = _rss(np.hstack([one, dn]), zc)
    rss_nc, rank_nc = _rss(np.hstack([one, dn, covc]), zc)
    df_err = z.shape[0] - rank_nc
    if df_err < 1 or rank_nc <= rank_c or rank_nc <= rank_n:
        raise ValueError("numerosity and the covariates cannot be separated in these images")
    mse = np.maximum(rss_nc, 0) / df_err
    const = zc.std(axis=0) <= 1e-12 * (1 + np.abs(z).max(axis=0))
    tiny = np.where(mse > 0, mse, np.inf)
    out = {"df": {"n": rank_nc - rank_c, "covariates": rank_nc - rank_n, "error": int(df_err)}}
    for key, ss, df in (("p_n", rss_c - rss_nc, rank_nc - rank_c), ("p_cov", rss_n - rss_nc, rank_nc - rank_n)):
        f = np.where(const, 0.0, (np.maximum(ss, 0) / df) / tiny)
        out[key] = np.where(const, 1.0, stats.f.sf(f, df, df_err))
    return out


def visual_covariates(props: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
    """log total surface area and log field area per image from a latents file's fields (None without them).

    With N, the two span DeWind's size and spacing axes (log ISA = log TSA - log N,
    log Sparsity = log FA - log N). Images where either is not > 0 get NaN.
    """
    tsa = props.get("total_surface_area", props.get("cumulative_area"))
    fa = props.get("field_area")
    if tsa is None or fa is None:
        return None
    out = {}
    for name, v in (("log TSA", tsa), ("log FA", fa)):
        v = np.asarray(v, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(v > 0, np.log(np.where(v > 0, v, 1)), np.nan)
    return out


def tuning_curves(z: np.ndarray, numerosity: np.ndarray):
    """Mean response per numerosity, oriented and normalised, and the preferred numerosity.

    Returns
    -------
    values : numpy.ndarray of int, shape (k,)
        The numerosities, ascending.
    means : numpy.ndarray, shape (k, d)
        Raw mean of each unit per numerosity.
    curves : numpy.ndarray, shape (k, d)
        Oriented (peak up) and scaled to [0, 1]; 0 for a flat unit.
    preferred : numpy.ndarray of int, shape (d,)
        The preferred numerosity of each unit.
    sign : numpy.ndarray of {-1, +1}, shape (d,)
        -1 where the unit's curve was flipped (it codes its preferred N by a minimum).
    """
    z = np.asarray(z, dtype=np.float64)
    vals, inv = np.unique(np.asarray(numerosity), return_inverse=True)
    sums = np.zeros((vals.size, z.shape[1]))
    np.add.at(sums, inv, z)
    means = sums / np.bincount(inv)[:, None]
    dev = means - means.mean(axis=0)
    k = np.abs(dev).argmax(axis=0)
    sign = np.where(dev[k, np.arange(z.shape[1])] < 0, -1.0, 1.0)
    o = means * sign
    lo, hi = o.min(axis=0), o.max(axis=0)
    span = hi - lo
    curves = np.where(span > 0, (o - lo) / np.where(span > 0, span, 1), 0.0)
    return vals, means, curves, vals[k], sign


def _gauss(x, a, mu, s, c):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c


def fit_gaussian(x: np.ndarray, y: np.ndarray, centre: float) -> Optional[dict]:
    """Least-squares Gaussian a exp(-(x - mu)^2 / (2 s^2)) + c through (x, y).

    Returns
    -------
    dict or None
        ``mu``, ``sigma`` (> 0), ``a``, ``c``, ``r2`` (goodness of fit); None when
        fewer than 5 points (four parameters would fit 4 points exactly) or the fit
        does not converge.
    """
    from scipy.optimize import curve_fit

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 5:
        return None
    span = float(x.max() - x.min()) or 1.0
    # narrower than half the closest spacing, a "Gaussian" only threads one point
    lo_s = max(float(np.diff(np.unique(x)).min()) / 2, span / 200) if np.unique(x).size > 1 else span / 200
    try:
        p, _ = curve_fit(_gauss, x, y, p0=(1.0, centre, max(span / 4, 2 * lo_s), 0.0), maxfev=5000,
                         bounds=([0, x.min() - span, lo_s, -1], [2, x.max() + span, 4 * span, 1]))
    except (RuntimeError, ValueError):
        return None
    pred = _gauss(x, *p)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")
    return {"a": float(p[0]), "mu": float(p[1]), "sigma": float(p[2]), "c": float(p[3]), "r2": r2}


def tuning_arrays(mu: np.ndarray, count: np.ndarray, stimulus_set: Optional[np.ndarray] = None, *,
                  alpha: float = 0.01, set_names: Optional[List[str]] = None,
                  covariates: Optional[Dict[str, np.ndarray]] = None) -> dict:
    """The selectivity test, tuning curves and Gaussian fits for every unit of ``mu``.

    Parameters
    ----------
    mu : numpy.ndarray, shape (n, d)
    count : numpy.ndarray of int, shape (n,)
        Numerosity; images with N = 0 are left out (no log axis for them).
    stimulus_set : numpy.ndarray of int, shape (n,), optional
    alpha : float in (0, 1)
        Significance level for all three terms (Nasr et al.: 0.01).
    set_names : list of str, optional
        Names of the stimulus sets by code, for the report.
    covariates : dict of numpy.ndarray, optional
        Continuous visual properties per image (:func:`visual_covariates`): adds the
        covariate test (:func:`covariate_test`) over the images where all are finite.

    Returns
    -------
    dict
        ``selective_units``, ``share_selective``, ``n_responsive_units`` (p_N < alpha,
        whatever the set terms), ``monotonic_selective_units`` (selective units whose
        mean rises or falls monotonically with N: they peak at an end of the range),
        ``preferred_histogram`` ({N: units}),
        ``average_curves`` ({N: normalised mean curve over the numerosities}),
        ``gaussian_fits`` ({N: {"linear": fit, "log": fit}}), ``fit_summary`` (mean
        R^2 on each axis), ``units`` (per unit p values, eta^2, preferred N, sign),
        ``two_way``, ``note``; with covariates also ``covariate_selective_units``
        (p_N < alpha after the covariates, the covariates p >= alpha after N),
        ``share_covariate_selective``, ``covariates``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    mu = np.asarray(mu, dtype=np.float64)
    count = np.asarray(count)
    if mu.ndim != 2 or count.shape != (mu.shape[0],):
        raise ValueError(f"mu must be (n, d) and count (n,), got {mu.shape} and {count.shape}")
    keep = count > 0
    sets = None if stimulus_set is None else np.asarray(stimulus_set)[keep]
    z, num = mu[keep], count[keep]
    an = anova_units(z, num, sets)
    p_n = an["p_n"]
    if an["two_way"]:
        sel = (p_n < alpha) & (an["p_set"] >= alpha) & (an["p_int"] >= alpha)
        note = (f"two-way ANOVA (numerosity x stimulus set, {len(an['stimulus_sets'])} sets): selective = p_N < "
                f"{alpha:g}, p_set >= {alpha:g} and p_interaction >= {alpha:g} (Nasr et al. 2019)")
    else:
        sel = p_n < alpha
        note = (f"one stimulus set only: one-way ANOVA on numerosity, selective = p_N < {alpha:g}; without control "
                "sets this cannot rule out units that follow a visual correlate of N")
    vals, means, curves, pref, sign = tuning_curves(z, num)
    step = np.sign(np.diff(means, axis=0))
    # monotonic: the mean only rises or only falls with N (summation coding, as Stoianov & Zorzi's units)
    monotonic = (np.all(step >= 0, axis=0) | np.all(step <= 0, axis=0)) if vals.size > 1 else np.ones(z.shape[1], bool)
    idx = np.flatnonzero(sel)
    hist = {int(v): int(np.sum(pref[idx] == v)) for v in vals}
    avg, fits = {}, {}
    for v in vals:
        members = idx[pref[idx] == v]
        if members.size == 0:
            continue
        c = curves[:, members].mean(axis=1)
        avg[int(v)] = c.tolist()
        fits[int(v)] = {"units": int(members.size),
                        "linear": fit_gaussian(vals, c, float(v)),
                        "log": fit_gaussian(np.log2(vals), c, math.log2(v))}

    def mean_r2(axis):
        r = [f[axis]["r2"] for f in fits.values() if f[axis] is not None and np.isfinite(f[axis]["r2"])]
        return float(np.mean(r)) if r else None

    cov_res = None
    if covariates:
        c = np.column_stack([np.asarray(v, dtype=np.float64)[keep] for v in covariates.values()])
        fin = np.isfinite(c).all(axis=1)
        cov_res = covariate_test(z[fin], num[fin], c[fin])
        cov_res["n_used"] = int(fin.sum())
        cov_sel = (cov_res["p_n"] < alpha) & (cov_res["p_cov"] >= alpha)
    units = []
    for i in range(mu.shape[1]):
        u = {"index": i, "p_n": float(p_n[i]), "eta2_n": float(an["eta2_n"][i]), "preferred": int(pref[i]),
             "sign": int(sign[i]), "selective": bool(sel[i]), "monotonic": bool(monotonic[i])}
        if an["two_way"]:
            u.update(p_set=float(an["p_set"][i]), p_int=float(an["p_int"][i]))
        if cov_res is not None:
            u.update(p_n_given_covariates=float(cov_res["p_n"][i]), p_covariates=float(cov_res["p_cov"][i]))
        units.append(u)
    extra = {} if cov_res is None else {
        "covariate_selective_units": np.flatnonzero(cov_sel).tolist(),
        "share_covariate_selective": float(cov_sel.sum() / mu.shape[1]),
        "covariates": {"names": list(covariates), "n_used": cov_res["n_used"], "df": cov_res["df"]}}
    return {**extra,
        "selective_units": idx.tolist(),
        "share_selective": float(idx.size / mu.shape[1]),
        "n_responsive_units": int(np.sum(p_n < alpha)),
        "monotonic_selective_units": [int(i) for i in idx if monotonic[i]],
        "alpha": float(alpha),
        "two_way": bool(an["two_way"]),
        "stimulus_sets": an["stimulus_sets"],
        "stimulus_set_names": list(set_names) if set_names else None,
        "df": an["df"],
        "numerosities": vals.tolist(),
        "preferred_histogram": hist,
        "average_curves": avg,
        "gaussian_fits": fits,
        "fit_summary": {"mean_r2_linear": mean_r2("linear"), "mean_r2_log": mean_r2("log"),
                        "curves": len(fits)},
        "units": units,
        "n_used": int(keep.sum()),
        "n_total": int(count.size),
        "latent_dim": int(mu.shape[1]),
        "note": note,
    }


def tuning_text(res: dict, name: str = "") -> str:
    """A few sentences on one representation's tuning result."""
    who = f"{name}: " if name else ""
    k = len(res["selective_units"])
    fs = res["fit_summary"]
    hist = ", ".join(f"N={v}: {c}" for v, c in res["preferred_histogram"].items() if c)
    s = (f"{who}{k} of {res['latent_dim']} units number-selective ({100 * res['share_selective']:.0f}%; "
         f"{len(res['monotonic_selective_units'])} of them monotonic in N; "
         f"{res['n_responsive_units']} with p_N < {res['alpha']:g} whatever the set terms). "
         f"Preferred numerosities: {hist or 'none'}.")
    if "covariate_selective_units" in res:
        s += (f" Controlling for {' and '.join(res['covariates']['names'])} (N significant after them, they not "
              f"after N): {len(res['covariate_selective_units'])} units "
              f"({100 * res['share_covariate_selective']:.0f}%).")
    if fs["curves"]:
        lin, log = fs["mean_r2_linear"], fs["mean_r2_log"]
        s += (f" Gaussian fits to the {fs['curves']} average curve(s): mean R^2 linear "
              f"{'n/a' if lin is None else f'{lin:.3f}'}, log {'n/a' if log is None else f'{log:.3f}'}.")
    return s


def tuning_figures(results: Dict[str, dict], out_dir: str, prefix: str = "") -> Dict[str, str]:
    """``tuning_histogram.png`` (preferred N per representation), ``tuning_curves.png``
    (average normalised curves per preferred N with their Gaussian fits, on linear and
    log2 N) and ``tuning_widths.png`` (Gaussian
    width against preferred N, linear and log axes). Returns their file names."""
    import os

    from .figures import _save, plt

    names = list(results)
    out = {}
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, nm in zip(axes[0], names):
        r = results[nm]
        h = r["preferred_histogram"]
        ax.bar([int(v) for v in h], list(h.values()), color="C0")
        ax.set_xticks(r["numerosities"])
        ax.set_title(f"{nm}: {len(r['selective_units'])}/{r['latent_dim']} selective", fontsize=8)
        ax.set_xlabel("preferred N", fontsize=8)
        ax.set_ylabel("units", fontsize=8)
    fig.tight_layout()
    out["histogram"] = f"{prefix}tuning_histogram.png"
    _save(fig, os.path.join(out_dir, out["histogram"]))
    plt.close(fig)

    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 5.4), squeeze=False)
    for j, nm in enumerate(names):
        r = results[nm]
        vals = np.array(r["numerosities"], dtype=np.float64)
        for row, (xv, lab) in enumerate(((vals, "N"), (np.log2(vals), "log2 N"))):
            ax = axes[row, j]
            fine = np.linspace(xv.min(), xv.max(), 100)
            for k, (v, c) in enumerate(r["average_curves"].items()):
                col = plt.cm.viridis(k / max(1, len(r["average_curves"]) - 1))
                ax.plot(xv, c, "o", ms=3, color=col, label=f"pref {v}")
                g = r["gaussian_fits"][v]["linear" if row == 0 else "log"]
                if g:  # the fitted Gaussian, with its R^2 in the legend of the log row
                    ax.plot(fine, _gauss(fine, g["a"], g["mu"], g["sigma"], g["c"]), "-", lw=1, color=col)
            ax.set_xlabel(lab, fontsize=8)
            ax.set_ylim(-0.05, 1.05)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"{nm}: normalised tuning, Gaussian fits", fontsize=8)
            if r["average_curves"] and row == 0:
                ax.legend(fontsize=6)
    fig.tight_layout()
    out["curves"] = f"{prefix}tuning_curves.png"
    _save(fig, os.path.join(out_dir, out["curves"]))
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8))
    for k, nm in enumerate(names):
        for ax, axis in zip(axes, ("linear", "log")):
            pts = [(int(v), f[axis]["sigma"]) for v, f in results[nm]["gaussian_fits"].items() if f[axis]]
            if pts:
                ax.plot(*zip(*pts), "o-", color=f"C{k}", ms=4, label=nm)
    for ax, axis in zip(axes, ("linear", "log")):
        ax.set_xlabel("preferred N", fontsize=8)
        ax.set_ylabel(f"Gaussian sigma ({'N' if axis == 'linear' else 'log2 N'})", fontsize=8)
        ax.set_title(f"{axis} axis", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    out["widths"] = f"{prefix}tuning_widths.png"
    _save(fig, os.path.join(out_dir, out["widths"]))
    plt.close(fig)
    return out
