"""Units on DeWind's three axes: numerosity, size and spacing (DeWind et al. 2015; Testolin et al. 2020).

DeWind, Adams, Platt & Brannon (2015, Cognition) describe a dot array by three
orthogonal log axes:

- numerosity, log N;
- size, log Sz = log TSA + log ISA (total and item surface area);
- spacing, log Sp = log FA + log Sparsity (field area, and Sparsity = FA / N).

Every other magnitude of the array is a direction in that space (with N fixed, TSA
and ISA move along Sz only, FA and Sparsity along Sp only, coverage TSA / FA along
Sz - Sp). For every latent unit i, over the images,

    z_i = b_n log N + b_sz log Sz + b_sp log Sp + e,

all standardised, fitted by ordinary least squares (:func:`vae.regress.fit_units`).
A unit codes N when R^2 >= r2_min and |b_sz|, |b_sp| < coef_cut; codes Sz when |b_n|,
|b_sp| < coef_cut; codes Sp when |b_n|, |b_sz| < coef_cut (the complementary
coefficients below 0.1, as in Stoianov & Zorzi's two-axis criteria). Testolin,
Dolfi, Rochus & Zorzi (2020) read a unit's preference for non-numerical magnitudes
from the direction of its coefficients in the (Sz, Sp) plane: the angle
atan2(b_sp, b_sz) is reported for every unit (0 deg: size-like, e.g. TSA or ISA;
90 deg: spacing-like, e.g. field area; -45 deg: coverage; 180 deg: smaller items).

The axes come from the per-image record fields ``log_size`` and ``log_spacing``
when the latents carry them, or are computed from ``cumulative_area`` (TSA),
``count`` and ``field_area``: Sz = TSA^2 / N and Sp = FA^2 / N. Images with N = 0
or a zero TSA or FA have no logarithm and are left out (and counted).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from .regress import fit_units

__all__ = ["AXES", "REFERENCE_ANGLES", "dewind_axes", "select_dewind_units", "unit_angles", "dewind_arrays",
           "dewind_text", "dewind_figure"]

AXES = ("n", "sz", "sp")

# direction of a magnitude in the (Sz, Sp) plane at fixed N, in degrees (atan2(sp, sz)):
# log TSA = (log N + log Sz) / 2, log ISA = (log Sz - log N) / 2, log FA = (log N + log Sp) / 2,
# log Sparsity = (log Sp - log N) / 2, log coverage = log TSA - log FA, density = N / FA
REFERENCE_ANGLES = {"TSA, ISA": 0.0, "FA, sparsity": 90.0, "coverage": -45.0, "density": -90.0}


def dewind_axes(props: Dict[str, np.ndarray]):
    """Log N, log Sz and log Sp per image, from the record fields a latents file carries.

    Parameters
    ----------
    props : dict of numpy.ndarray
        ``count`` and either ``log_size`` and ``log_spacing``, or ``cumulative_area``
        and ``field_area`` (pixels; -1 or NaN = unknown).

    Returns
    -------
    x : numpy.ndarray of float64, shape (m, 3)
        Columns log N, log Sz, log Sp of the images used.
    used : numpy.ndarray of bool, shape (n,)
    info : dict
        ``source`` ("record" or "computed"), ``n_total``, ``n_used``, ``n_excluded``.

    Raises
    ------
    ValueError
        When neither pair of fields is there (a latents file from before these fields,
        or of natural images).
    """
    n = np.asarray(props["count"], dtype=np.float64)
    if "log_size" in props and "log_spacing" in props:
        lsz = np.asarray(props["log_size"], dtype=np.float64)
        lsp = np.asarray(props["log_spacing"], dtype=np.float64)
        source = "record"
        ok = (n > 0) & np.isfinite(lsz) & np.isfinite(lsp)
    elif "cumulative_area" in props and "field_area" in props:
        tsa = np.asarray(props["cumulative_area"], dtype=np.float64)
        fa = np.asarray(props["field_area"], dtype=np.float64)
        ok = (n > 0) & (tsa > 0) & (fa > 0) & np.isfinite(fa)
        with np.errstate(divide="ignore", invalid="ignore"):
            lsz = np.where(ok, 2 * np.log(np.where(ok, tsa, 1)) - np.log(np.where(ok, n, 1)), np.nan)
            lsp = np.where(ok, 2 * np.log(np.where(ok, fa, 1)) - np.log(np.where(ok, n, 1)), np.nan)
        source = "computed"
    else:
        raise ValueError("the DeWind axes need log_size and log_spacing, or cumulative_area and field_area, per image; "
                         "these latents have neither (encode a synthcount dataset with this version)")
    with np.errstate(divide="ignore"):
        x = np.stack([np.log(n[ok]), lsz[ok], lsp[ok]], axis=1)
    return x, ok, {"source": source, "n_total": int(n.size), "n_used": int(ok.sum()),
                   "n_excluded": int(n.size - ok.sum())}


def select_dewind_units(r2: np.ndarray, beta: np.ndarray, *, r2_min: float = 0.05,
                        coef_cut: float = 0.1) -> Dict[str, np.ndarray]:
    """Units coding one axis only: R^2 >= r2_min and both other |b| < coef_cut.

    Parameters
    ----------
    r2 : numpy.ndarray, shape (d,)
    beta : numpy.ndarray, shape (3, d)
        Rows b_n, b_sz, b_sp.

    Returns
    -------
    dict
        ``n``, ``sz``, ``sp``: sorted unit indices.
    """
    if not 0.0 <= r2_min <= 1.0:
        raise ValueError(f"r2_min must be in [0, 1], got {r2_min}")
    if not coef_cut > 0.0:
        raise ValueError(f"coef_cut must be > 0, got {coef_cut}")
    r2 = np.asarray(r2, dtype=np.float64)
    small = np.abs(np.asarray(beta, dtype=np.float64)) < coef_cut
    out = {}
    for k, name in enumerate(AXES):
        others = [j for j in range(3) if j != k]
        out[name] = np.flatnonzero((r2 >= r2_min) & small[others[0]] & small[others[1]])
    return out


def unit_angles(beta: np.ndarray):
    """Angle (degrees, in (-180, 180]) and length of each unit's (b_sz, b_sp)."""
    beta = np.asarray(beta, dtype=np.float64)
    return np.degrees(np.arctan2(beta[2], beta[1])), np.hypot(beta[1], beta[2])


def dewind_arrays(mu: np.ndarray, props: Dict[str, np.ndarray], *, r2_min: float = 0.05, coef_cut: float = 0.1,
                  permutations: int = 20, seed: int = 0) -> dict:
    """The three-axis regression for every unit, its selection, angles and a permutation baseline.

    Parameters
    ----------
    mu : numpy.ndarray, shape (n, d)
    props : dict of numpy.ndarray
        Per-image fields (see :func:`dewind_axes`).
    r2_min, coef_cut : float
    permutations : int >= 0
        Joint shuffles of the rows of (log N, log Sz, log Sp) across images; the mean
        number of units selected is the chance level.
    seed : int

    Returns
    -------
    dict
        ``units`` ([{"index", "r2", "b_n", "b_sz", "b_sp", "angle_deg", "sz_sp_norm",
        "constant"}]), ``n_units``, ``sz_units``, ``sp_units``, ``axis_correlations``
        (the three pairwise correlations of the axes over the images used),
        ``permutation_mean_selected``, ``source``, ``n_used``, ``n_total``,
        ``n_excluded``, ``r2_min``, ``coef_cut``.
    """
    mu = np.asarray(mu)
    x, used, info = dewind_axes(props)
    if mu.ndim != 2 or mu.shape[0] != used.size:
        raise ValueError(f"mu must be (n, d) with one row per image, got {mu.shape} for {used.size} images")
    if not isinstance(permutations, (int, np.integer)) or permutations < 0:
        raise ValueError(f"permutations must be a non-negative integer, got {permutations!r}")
    z = mu[used]
    try:
        fit = fit_units(z, x)
    except ValueError as e:
        raise ValueError(f"DeWind axes (log N, log Sz, log Sp): {e}") from None
    beta, r2 = fit["beta"], fit["r2"]
    sel = select_dewind_units(r2, beta, r2_min=r2_min, coef_cut=coef_cut)
    ang, norm = unit_angles(beta)
    units = [{"index": i, "r2": float(r2[i]), "b_n": float(beta[0, i]), "b_sz": float(beta[1, i]),
              "b_sp": float(beta[2, i]), "angle_deg": float(ang[i]), "sz_sp_norm": float(norm[i]),
              "constant": bool(fit["constant"][i])} for i in range(mu.shape[1])]
    rng = np.random.default_rng(seed)
    chance = []
    for _ in range(int(permutations)):
        f = fit_units(z, x[rng.permutation(x.shape[0])])
        s = select_dewind_units(f["r2"], f["beta"], r2_min=r2_min, coef_cut=coef_cut)
        chance.append(sum(int(v.size) for v in s.values()))
    c = np.corrcoef(x, rowvar=False)
    return {
        "units": units,
        "n_units": sel["n"].tolist(), "sz_units": sel["sz"].tolist(), "sp_units": sel["sp"].tolist(),
        "axis_correlations": {"n_sz": float(c[0, 1]), "n_sp": float(c[0, 2]), "sz_sp": float(c[1, 2])},
        "permutations": int(permutations),
        "permutation_mean_selected": float(np.mean(chance)) if chance else None,
        "r2_min": float(r2_min), "coef_cut": float(coef_cut),
        "source": info["source"], "n_used": info["n_used"], "n_total": info["n_total"],
        "n_excluded": info["n_excluded"], "latent_dim": int(mu.shape[1]),
        "reference_angles_deg": dict(REFERENCE_ANGLES),
    }


def _u(u: dict) -> str:
    return (f"z_{u['index']} (R^2 {u['r2']:.3f}, b_n {u['b_n']:+.2f}, b_sz {u['b_sz']:+.2f}, b_sp {u['b_sp']:+.2f}, "
            f"angle {u['angle_deg']:+.0f} deg)")


def dewind_text(res: dict) -> str:
    """Plain sentences on the three-axis result."""
    by = {u["index"]: u for u in res["units"]}
    c = res["axis_correlations"]
    lines = [f"DeWind axes (log N, log Sz, log Sp; {res['source']} per image): {len(res['n_units'])} unit(s) code N, "
             f"{len(res['sz_units'])} size, {len(res['sp_units'])} spacing, at R^2 >= {res['r2_min']:g} with the "
             f"other two |b| < {res['coef_cut']:g}, out of {res['latent_dim']} units."]
    for key, name in (("n_units", "N"), ("sz_units", "Sz"), ("sp_units", "Sp")):
        if res[key]:
            lines.append(f"{name} units: " + "; ".join(_u(by[i]) for i in res[key]) + ".")
    top = sorted((u for u in res["units"] if not u["constant"]), key=lambda u: -u["r2"])[:3]
    if top:
        lines.append("Highest R^2: " + "; ".join(_u(u) for u in top) + ".")
    if res["permutation_mean_selected"] is not None:
        lines.append(f"Permutation baseline ({res['permutations']} joint shuffles): "
                     f"{res['permutation_mean_selected']:.2f} units selected on average.")
    lines.append(f"Fit on {res['n_used']} of {res['n_total']} images ({res['n_excluded']} without a log: N, TSA or "
                 f"FA = 0); axis correlations N-Sz {c['n_sz']:+.3f}, N-Sp {c['n_sp']:+.3f}, Sz-Sp {c['sz_sp']:+.3f} "
                 "(a designed DeWind set has them near 0; large ones make the coefficients hard to separate).")
    return "\n".join(lines)


def dewind_figure(res: dict, out_png: str, *, title: Optional[str] = None) -> str:
    """Every unit's (b_sz, b_sp) with its b_n as colour, R^2 >= r2_min ringed, reference directions drawn."""
    from .figures import finish_scatter, plt

    units = res["units"]
    bsz = np.array([u["b_sz"] for u in units])
    bsp = np.array([u["b_sp"] for u in units])
    bn = np.array([u["b_n"] for u in units])
    r2 = np.array([u["r2"] for u in units])
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    lim = max(0.3, float(np.abs(np.r_[bsz, bsp]).max()) * 1.15) if units else 1.0
    for name, deg in REFERENCE_ANGLES.items():
        t = math.radians(deg)
        ax.plot([0, lim * math.cos(t)], [0, lim * math.sin(t)], color="0.6", lw=0.8, ls="--")
        ax.annotate(name, (0.92 * lim * math.cos(t), 0.92 * lim * math.sin(t)), fontsize=7, color="0.4",
                    ha="center")
    m = max(0.1, float(np.abs(bn).max())) if units else 1.0
    sc = ax.scatter(bsz, bsp, c=bn, cmap="coolwarm", vmin=-m, vmax=m, s=16)
    hi = r2 >= res["r2_min"]
    ax.scatter(bsz[hi], bsp[hi], s=70, facecolors="none", edgecolors="k", lw=0.8, label=f"R² ≥ {res['r2_min']:g}")
    for key in ("n_units", "sz_units", "sp_units"):
        for i in res[key]:
            ax.annotate(f"z_{i}", (bsz[i], bsp[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.axhline(0, color="0.85", lw=0.5)
    ax.axvline(0, color="0.85", lw=0.5)
    ax.set_xlabel("b_sz (log size)")
    ax.set_ylabel("b_sp (log spacing)")
    ax.set_title(title or "DeWind axes per unit (colour: b_n)", fontsize=9)
    return finish_scatter(fig, ax, sc, "b_n (log N)", hi, out_png)
