"""Numerosity and area units: the regression of paper Eq. 3 (after Stoianov & Zorzi 2012).

For every latent unit i, over the images of a regression set,

    z_i = b_n log N + b_a log A + e,

with z_i, log N and log A each standardised (mean 0, standard deviation 1), fitted
by ordinary least squares for all units at once in closed form. A unit is a
*numerosity unit* when R^2 >= r2_min and |b_a| < coef_cut, an *area unit* when
R^2 >= r2_min and |b_n| < coef_cut (paper: r2_min 0.05; Stoianov & Zorzi: 0.1;
coef_cut 0.1 in both).

log 0 is undefined, and the authors' log(N + 1e-6) made N = 0 a huge outlier. Here
the choice is explicit: ``log_n="exclude-zero"`` (default) drops images with N = 0
(their A is 0 too) and reports how many; ``log_n="plus1"`` uses log(N + 1) and
log(A + 1) for every image. No epsilon anywhere.

A permutation baseline refits with the rows of (log N, log A) shuffled jointly
across images (their mutual correlation is kept, their link to the latents broken)
and counts how many units the same criteria select by chance.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Optional

import numpy as np

from synthcount._io import atomic_write, write_json_atomic

__all__ = ["LOG_N_MODES", "DESIGNS", "log_predictors", "fit_units", "select_units", "permutation_baseline",
           "regression_arrays", "run_regression", "summary_text", "summarize"]

LOG_N_MODES = ("exclude-zero", "plus1")


def log_predictors(count: np.ndarray, area: np.ndarray, log_n: str = "exclude-zero"):
    """Log N and log A for the fit, and which images enter it.

    Parameters
    ----------
    count : array_like of int, shape (n,)
        Objects per image, >= 0.
    area : array_like of number, shape (n,)
        Cumulative visible object area in pixels, >= 0.
    log_n : {"exclude-zero", "plus1"}
        ``exclude-zero``: log N and log A over images with N > 0 and A > 0;
        ``plus1``: log(N + 1) and log(A + 1) over all images.

    Returns
    -------
    x : numpy.ndarray of float64, shape (m, 2)
        Columns log N, log A of the images used.
    used : numpy.ndarray of bool, shape (n,)
    info : dict
        ``n_total``, ``n_used``, ``n_excluded_zero_count``, ``n_excluded_zero_area``, ``log_n``.
    """
    if log_n not in LOG_N_MODES:
        raise ValueError(f"log_n must be one of {LOG_N_MODES}, got {log_n!r}")
    n = np.asarray(count, dtype=np.float64)
    a = np.asarray(area, dtype=np.float64)
    if n.ndim != 1 or n.shape != a.shape:
        raise ValueError(f"count and area must be 1-D of equal length, got {n.shape} and {a.shape}")
    if n.size and (n.min() < 0 or a.min() < 0):
        raise ValueError(f"count and area must be >= 0, got minima {n.min()} and {a.min()}")
    if log_n == "exclude-zero":
        used = (n > 0) & (a > 0)
        x = np.stack([np.log(n[used]), np.log(a[used])], axis=1)
    else:
        used = np.ones(n.shape, dtype=bool)
        x = np.stack([np.log1p(n), np.log1p(a)], axis=1)
    info = {"n_total": int(n.size), "n_used": int(used.sum()), "log_n": log_n,
            "n_excluded_zero_count": int(np.sum(n == 0)) if log_n == "exclude-zero" else 0,
            "n_excluded_zero_area": int(np.sum((n > 0) & (a <= 0))) if log_n == "exclude-zero" else 0}
    return x, used, info


def _standardise(a: np.ndarray):
    mean = a.mean(axis=0)
    std = a.std(axis=0)
    return a - mean, std


def fit_units(z: np.ndarray, x: np.ndarray) -> Dict[str, np.ndarray]:
    """OLS of every standardised column of ``z`` on the standardised columns of ``x``.

    Parameters
    ----------
    z : numpy.ndarray of float, shape (n, d)
        Latent values, one column per unit.
    x : numpy.ndarray of float, shape (n, 2)
        Predictors (log N, log A).

    Returns
    -------
    dict of numpy.ndarray
        ``beta`` (2, d) standardised coefficients (row 0 b_n, row 1 b_a), ``r2`` (d,),
        ``se`` (2, d) standard errors (residual variance over n - 3 degrees of
        freedom: two slopes and the mean removed by standardising), ``constant``
        (d,) bool: units without variance, reported with R^2 = 0, b = 0, se = NaN.
    """
    z = np.asarray(z, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if z.ndim != 2 or x.ndim != 2 or x.shape[0] != z.shape[0] or x.shape[1] < 1:
        raise ValueError(f"z must be (n, d) and x (n, p) with equal n, got {z.shape} and {x.shape}")
    n, p = x.shape
    if n < p + 2:
        raise ValueError(f"need at least {p + 2} images for the fit, got {n}")
    xc, xs = _standardise(x)
    if np.any(xs <= 1e-12 * (1 + np.abs(x).max(axis=0))):
        raise ValueError(f"a predictor is constant over the images used (std {xs.tolist()}); "
                         "the fit needs N and A to vary")
    xn = xc / xs
    gram = xn.T @ xn  # (p, p) = n * correlation matrix
    if np.linalg.cond(gram) > 1e10:
        raise ValueError("log N and log A are collinear in these images; the fit cannot separate them")
    zc, zs = _standardise(z)
    constant = zs <= 1e-12 * (1 + np.abs(z).max(axis=0))
    zn = zc / np.where(constant, 1.0, zs)
    zn[:, constant] = 0.0
    beta = np.linalg.solve(gram, xn.T @ zn)  # (p, d)
    resid = zn - xn @ beta  # (n, d)
    sse = np.einsum("ij,ij->j", resid, resid)
    sst = np.where(constant, 1.0, float(n))  # standardised: sum of squares = n
    r2 = np.where(constant, 0.0, 1.0 - sse / sst)
    sigma2 = sse / (n - p - 1)
    se = np.sqrt(np.outer(np.diag(np.linalg.inv(gram)), sigma2))
    se[:, constant] = np.nan
    return {"beta": beta, "r2": r2, "se": se, "constant": constant}


def select_units(r2: np.ndarray, b_n: np.ndarray, b_a: np.ndarray, *, r2_min: float = 0.05,
                 coef_cut: float = 0.1):
    """Stoianov & Zorzi's criteria.

    Returns
    -------
    numerosity, area : numpy.ndarray of int
        Unit indices with R^2 >= r2_min and |b_a| < coef_cut (numerosity), or
        R^2 >= r2_min and |b_n| < coef_cut (area).
    """
    if not 0.0 <= r2_min <= 1.0:
        raise ValueError(f"r2_min must be in [0, 1], got {r2_min}")
    if not coef_cut > 0.0:
        raise ValueError(f"coef_cut must be > 0, got {coef_cut}")
    r2, b_n, b_a = (np.asarray(v, dtype=np.float64) for v in (r2, b_n, b_a))
    ok = r2 >= r2_min
    return np.flatnonzero(ok & (np.abs(b_a) < coef_cut)), np.flatnonzero(ok & (np.abs(b_n) < coef_cut))


def permutation_baseline(z: np.ndarray, x: np.ndarray, rng: np.random.Generator, *, permutations: int = 20,
                         r2_min: float = 0.05, coef_cut: float = 0.1) -> dict:
    """Units selected when the rows of ``x`` are shuffled across images.

    Parameters
    ----------
    z : numpy.ndarray, shape (n, d)
    x : numpy.ndarray, shape (n, 2)
        Shuffled jointly (a row keeps its log N with its log A).
    rng : numpy.random.Generator
    permutations : int
        Number of shuffles K (0 gives an empty baseline).

    Returns
    -------
    dict
        ``permutations``, per-shuffle ``numerosity`` and ``area`` counts,
        ``mean_selected`` / ``max_selected`` (both kinds together),
        ``mean_numerosity``, ``mean_area``, ``max_r2`` (per shuffle, the largest R^2).
    """
    if not isinstance(permutations, (int, np.integer)) or permutations < 0:
        raise ValueError(f"permutations must be a non-negative integer, got {permutations!r}")
    num, area, max_r2 = [], [], []
    for _ in range(int(permutations)):
        fit = fit_units(z, x[rng.permutation(x.shape[0])])
        nu, au = select_units(fit["r2"], fit["beta"][0], fit["beta"][1], r2_min=r2_min, coef_cut=coef_cut)
        num.append(int(nu.size))
        area.append(int(au.size))
        max_r2.append(float(fit["r2"].max()))
    tot = np.add(num, area) if permutations else np.zeros(0)
    return {
        "permutations": int(permutations),
        "numerosity": num,
        "area": area,
        "mean_selected": float(tot.mean()) if tot.size else None,
        "max_selected": int(tot.max()) if tot.size else None,
        "mean_numerosity": float(np.mean(num)) if num else None,
        "mean_area": float(np.mean(area)) if area else None,
        "max_r2": max_r2,
    }


def _best(units: list, own: str, other: str, coef_cut: float) -> Optional[dict]:
    """The unit with the largest |b_own| among those with |b_other| < coef_cut (R^2 aside)."""
    cands = [u for u in units if abs(u[other]) < coef_cut and not u["constant"]]
    return max(cands, key=lambda u: abs(u[own])) if cands else None


def regression_arrays(mu: np.ndarray, count: np.ndarray, area: np.ndarray, *, r2_min: float = 0.05,
                      coef_cut: float = 0.1, log_n: str = "exclude-zero", permutations: int = 20,
                      seed: int = 0) -> dict:
    """Eq. 3 for all units of ``mu``, selection, permutation baseline and summary facts.

    Parameters
    ----------
    mu : numpy.ndarray of float, shape (n, d)
    count, area : numpy.ndarray, shape (n,)
        N and cumulative visible area A (pixels) per image.
    r2_min : float in [0, 1]
    coef_cut : float > 0
    log_n : {"exclude-zero", "plus1"}
    permutations : int >= 0
    seed : int
        Seeds the shuffles.

    Returns
    -------
    dict
        The contents of ``regression.json`` (see :func:`run_regression`).
    """
    mu = np.asarray(mu)
    if mu.ndim != 2 or mu.shape[0] != np.asarray(count).shape[0]:
        raise ValueError(f"mu must be (n, d) with one row per count, got {mu.shape} and {np.asarray(count).shape}")
    if np.any(np.asarray(area) < 0):
        raise ValueError("cumulative_area holds negative values (unknown area?); "
                         "the regression needs A for every image")
    x, used, info = log_predictors(count, area, log_n)
    z = mu[used]
    fit = fit_units(z, x)
    b_n, b_a = fit["beta"]
    nu, au = select_units(fit["r2"], b_n, b_a, r2_min=r2_min, coef_cut=coef_cut)
    units = [{"index": i, "r2": float(fit["r2"][i]), "b_n": float(b_n[i]), "b_a": float(b_a[i]),
              "se_n": None if math.isnan(fit["se"][0, i]) else float(fit["se"][0, i]),
              "se_a": None if math.isnan(fit["se"][1, i]) else float(fit["se"][1, i]),
              "constant": bool(fit["constant"][i])} for i in range(mu.shape[1])]
    perm = permutation_baseline(z, x, np.random.default_rng(seed), permutations=permutations, r2_min=r2_min,
                                coef_cut=coef_cut)
    corr = float(np.corrcoef(x[:, 0], x[:, 1])[0, 1])
    area_signs = ["+" if units[i]["b_a"] > 0 else "-" for i in au]
    top = sorted((u for u in units if not u["constant"]), key=lambda u: -u["r2"])[:5]
    return {
        "units": units,
        "numerosity_units": nu.tolist(),
        "area_units": au.tolist(),
        "r2_min": float(r2_min),
        "coef_cut": float(coef_cut),
        "n_used": info["n_used"],
        "n_total": info["n_total"],
        "n_excluded_zero_count": info["n_excluded_zero_count"],
        "n_excluded_zero_area": info["n_excluded_zero_area"],
        "log_n": log_n,
        "corr_log_n_log_a": corr,
        "permutation_mean_selected": perm["mean_selected"],
        "permutation": perm,
        "area_unit_signs": area_signs,
        "area_units_opposite_signs": bool("+" in area_signs and "-" in area_signs),
        "numerosity_unit_signs": ["+" if units[i]["b_n"] > 0 else "-" for i in nu],
        # candidates whatever their R^2: says how far from the criteria the best units are
        "best_numerosity_candidate": _best(units, "b_n", "b_a", coef_cut),
        "best_area_candidate": _best(units, "b_a", "b_n", coef_cut),
        "top_r2_units": top,
        "latent_dim": int(mu.shape[1]),
        "constant_units": int(fit["constant"].sum()),
    }


def _unit_text(u: Optional[dict]) -> str:
    if u is None:
        return "none"
    return f"z_{u['index']} (R^2 {u['r2']:.3f}, b_n {u['b_n']:+.3f}, b_a {u['b_a']:+.3f})"


def summary_text(res: dict) -> str:
    """A few plain sentences on what the regression found (including nothing).

    ``summarize`` is the same function under its old name (not to be confused with
    :func:`synthcount.stats.summarize`, which returns a dataset's statistics)."""
    nu, au = res["numerosity_units"], res["area_units"]
    by = {u["index"]: u for u in res["units"]}
    lines = [
        f"{len(nu)} numerosity unit(s) and {len(au)} area unit(s) at R^2 >= {res['r2_min']:g} "
        f"(complementary |b| < {res['coef_cut']:g}), out of {res['latent_dim']} units.",
    ]
    if nu:
        lines.append("Numerosity units: " + "; ".join(_unit_text(by[i]) for i in nu) + ".")
    if au:
        opposite = "; opposite signs present" if res["area_units_opposite_signs"] else ""
        lines.append("Area units: " + "; ".join(_unit_text(by[i]) for i in au) + " (signs of b_a: "
                     + " ".join(res["area_unit_signs"]) + opposite + ").")
    lines.append(f"Best candidate for number (largest |b_n| with |b_a| < {res['coef_cut']:g}): "
                 f"{_unit_text(res['best_numerosity_candidate'])}; for area (largest |b_a| with |b_n| < "
                 f"{res['coef_cut']:g}): {_unit_text(res['best_area_candidate'])}.")
    p = res["permutation"]
    if p["permutations"]:
        lines.append(f"Permutation baseline ({p['permutations']} joint shuffles of N and A): "
                     f"{p['mean_selected']:.2f} units selected on average (max {p['max_selected']}); "
                     f"largest R^2 under shuffling {max(p['max_r2']):.4f}.")
    excl = (f"; {res['n_excluded_zero_count']} images with N = 0 excluded" if res["log_n"] == "exclude-zero"
            else "; log(N + 1), log(A + 1) on all images")
    if res.get("n_excluded_zero_area"):
        excl += f", {res['n_excluded_zero_area']} with N > 0 but A = 0 excluded"
    lines.append(f"Fit on {res['n_used']} of {res['n_total']} images{excl}; corr(log N, log A) = "
                 f"{res['corr_log_n_log_a']:.3f} in these images.")
    return "\n".join(lines)


summarize = summary_text  # the old name, kept for compatibility


DESIGNS = ("auto", "eq3", "dewind")


def run_regression(latents_h5: str, out_dir: str, *, r2_min: float = 0.05, coef_cut: float = 0.1,
                   log_n: str = "exclude-zero", permutations: int = 20, seed: int = 0,
                   figures: bool = True, design: str = "auto", untrained: Optional[str] = None,
                   pca: bool = False) -> dict:
    """Fit Eq. 3 on a latents file; write ``regression.json``, ``regression.md`` and figures.

    Parameters
    ----------
    latents_h5 : str
        Output of :func:`vae.encode.encode_dataset` with ``mu``, ``count`` and
        ``cumulative_area``.
    out_dir : str
        Created if needed.
    r2_min, coef_cut, log_n, permutations, seed
        See :func:`regression_arrays`.
    figures : bool
        Draw ``fig4_profiles.png`` (response profiles of the selected units, or of
        the best candidates when none is selected) and ``coefficients.png`` (and
        ``dewind.png`` with the DeWind fit).
    design : {"auto", "eq3", "dewind"}
        Besides Eq. 3, the three-axis fit on log N, log size and log spacing
        (:func:`vae.dewind.dewind_arrays`, stored under ``dewind``): ``auto`` when the
        latents carry what it needs (else ``dewind`` holds the reason), ``dewind``
        always (bad input when it cannot), ``eq3`` never.
    untrained : str, optional
        Latents of the same images under the untrained weights: fitted the same way
        (no permutations), compact results under ``controls["untrained"]``.
    pca : bool
        The same for PCA of the images' pixels (``controls["pca"]``; see
        :func:`vae.numbersense.load_representations`).

    Returns
    -------
    dict
        ``units`` ([{"index", "r2", "b_n", "b_a", "se_n", "se_a", "constant"}]),
        ``numerosity_units``, ``area_units``, ``r2_min``, ``n_used``,
        ``permutation_mean_selected``, ``corr_log_n_log_a`` and more.
    """
    from .probe import load_latents

    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    lat = load_latents(latents_h5)
    if "cumulative_area" not in lat:
        raise ValueError(f"latents file {latents_h5!r} has no cumulative_area; the regression needs A")
    res = regression_arrays(lat["mu"], lat["count"], lat["cumulative_area"], r2_min=r2_min, coef_cut=coef_cut,
                            log_n=log_n, permutations=permutations, seed=seed)
    res["latents"] = os.path.abspath(latents_h5)
    if design != "eq3":
        from .dewind import dewind_arrays

        try:
            res["dewind"] = dewind_arrays(lat["mu"], lat, r2_min=r2_min, coef_cut=coef_cut,
                                          permutations=permutations, seed=seed)
        except ValueError as e:
            if design == "dewind":
                raise ValueError(f"latents file {latents_h5!r}: {e}") from None
            res["dewind"] = {"error": str(e)}
    if untrained is not None or pca:
        res["controls"] = _controls(latents_h5, lat, res, untrained=untrained, pca=pca, r2_min=r2_min,
                                    coef_cut=coef_cut, log_n=log_n, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    if figures:
        from . import figures as figs

        res["figures"] = figs.regression_figures(lat["mu"], lat["count"], lat["cumulative_area"], res, out_dir)
        if "units" in res.get("dewind", {}):
            from .dewind import dewind_figure

            dewind_figure(res["dewind"], os.path.join(out_dir, "dewind.png"))
            res["figures"]["dewind"] = "dewind.png"
    write_json_atomic(os.path.join(out_dir, "regression.json"), res, indent=2)
    with atomic_write(os.path.join(out_dir, "regression.md"), "w") as f:
        f.write("# Eq. 3 regression\n\n" + summary_text(res) + "\n" + _dewind_md(res) + _controls_md(res))
    return res


def _controls(latents_h5: str, lat: dict, res: dict, *, untrained, pca, r2_min, coef_cut, log_n, seed) -> dict:
    """Eq. 3 (and the DeWind fit when the model got one) for the untrained control and PCA, compactly."""
    from .dewind import dewind_arrays
    from .numbersense import load_representations

    reps, _ = load_representations(latents_h5, untrained=untrained, pca=pca)
    out = {}
    for name, mu in reps.items():
        if name == "trained":
            continue
        r = regression_arrays(mu, lat["count"], lat["cumulative_area"], r2_min=r2_min, coef_cut=coef_cut,
                              log_n=log_n, permutations=0, seed=seed)
        c = {k: r[k] for k in ("numerosity_units", "area_units", "best_numerosity_candidate", "best_area_candidate")}
        if "units" in res.get("dewind", {}):
            d = dewind_arrays(mu, lat, r2_min=r2_min, coef_cut=coef_cut, permutations=0, seed=seed)
            c["dewind"] = {k: d[k] for k in ("n_units", "sz_units", "sp_units")}
            c["dewind"]["angle_deg"] = [u["angle_deg"] for u in d["units"]]
        out[name] = c
    return out


def _controls_md(res: dict) -> str:
    """The controls' table of ``regression.md`` ('' without controls)."""
    if not res.get("controls"):
        return ""
    dw = "units" in res.get("dewind", {})
    rows = [("trained", {**res, "dewind": res.get("dewind")})] + list(res["controls"].items())
    L = ["", "## Beside the controls", "",
         "| representation | numerosity units | area units" + (" | DeWind N / Sz / Sp units |" if dw else " |"),
         "|---|---|---|" + ("---|" if dw else "")]
    for name, c in rows:
        line = f"| {name} | {c['numerosity_units'] or '–'} | {c['area_units'] or '–'} |"
        if dw:
            d = c["dewind"]
            line += f" {d['n_units'] or '–'} / {d['sz_units'] or '–'} / {d['sp_units'] or '–'} |"
        L.append(line)
    return "\n".join(L) + "\n"


def _dewind_md(res: dict) -> str:
    """The DeWind section of ``regression.md`` ('' without the fit)."""
    d = res.get("dewind")
    if d is None:
        return ""
    if "error" in d:
        return f"\n## DeWind axes\n\nNot fitted: {d['error']}.\n"
    from .dewind import dewind_text

    fig = "\n![DeWind axes](dewind.png)\n" if res.get("figures", {}).get("dewind") else ""
    return ("\n## DeWind axes (after DeWind et al. 2015; angles as Testolin et al. 2020)\n\n" + dewind_text(d) + "\n"
            + fig)
