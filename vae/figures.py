"""Figures in the style of the paper (matplotlib, Agg backend, PNG files).

- :func:`reconstruction_grid` - Fig. 2: originals above their reconstructions.
- :func:`traversal_grid` - Fig. 3: one latent unit moved at a time, decoded.
- :func:`response_profiles` - Fig. 4: mean and spread of z_i per N and per log-A bin.
- :func:`coefficient_plot` - every unit's (b_n, b_a) with the selection regions.

The model functions take a VAE with ``encode(x) -> (mu, sigma)`` and
``decode(z) -> x_hat`` working on float tensors (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthcount._io import atomic_write  # noqa: E402

__all__ = ["reconstruction_grid", "traversal_grid", "response_profiles", "coefficient_plot", "regression_figures",
           "profile_units"]


def _to_tensor(images: np.ndarray):
    import torch

    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f"images must be (B, H, W, 3) uint8 or (B, 3, H, W) float, got shape {a.shape}")
    if a.dtype == np.uint8:
        if a.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got shape {a.shape}")
        a = a.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _save(fig, out_png: str) -> None:
    """PNG through the project's atomic write (a full disk never leaves half a figure)."""
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _show(ax, chw) -> None:
    ax.imshow(np.clip(chw.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def reconstruction_grid(model, images: np.ndarray, out_png: str, *, device: str = "cpu",
                        title: str = "Originals (top) and reconstructions from mu (bottom)") -> str:
    """Fig. 2 style: each original above the decoding of its latent mean.

    Parameters
    ----------
    model : VAE
    images : numpy.ndarray, (B, H, W, 3) uint8 or (B, 3, H, W) float in [0, 1]
        B up to about 16 keeps the figure legible.
    """
    import torch

    x = _to_tensor(images)
    with torch.no_grad():
        mu, _ = model.encode(x.to(device))
        rec = model.decode(mu).cpu().numpy()
    b = x.shape[0]
    fig, axes = plt.subplots(2, b, figsize=(1.2 * b, 2.6), squeeze=False)
    for j in range(b):
        _show(axes[0, j], x[j].numpy())
        _show(axes[1, j], rec[j])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def traversal_grid(model, image: Optional[np.ndarray], units: Sequence[int], out_png: str, *,
                   deltas: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3), scale: Optional[np.ndarray] = None,
                   device: str = "cpu", labels: Optional[Sequence[str]] = None, base: Optional[np.ndarray] = None,
                   title: Optional[str] = None) -> str:
    """Fig. 3 style: decode z0 + delta * scale_i * e_i for each chosen unit i.

    Parameters
    ----------
    image : numpy.ndarray, (H, W, 3) uint8 or (3, H, W) float in [0, 1], or None
        The image whose latent mean is z0 (shown in a first column); None with ``base``.
    units : sequence of int
        One row per unit.
    deltas : sequence of float
        Steps, in units of ``scale`` (delta 0 decodes z0 itself).
    scale : numpy.ndarray of float, shape (d,), optional
        Per-unit step size, e.g. the standard deviation of mu over a dataset;
        default 1 for every unit.
    labels : sequence of str, optional
        Row labels (default ``z_i``).
    base : numpy.ndarray of float, shape (d,), optional
        z0 itself instead of an image's code, e.g. the mean of mu over a dataset, so
        that every other unit sits at its mean (the paper's Fig. 3).
    title : str, optional
        Figure title.
    """
    import torch

    if len(units) == 0:
        raise ValueError("units must name at least one latent unit")
    if (image is None) == (base is None):
        raise ValueError("give either an image or a base code, not both or neither")
    x = None if image is None else _to_tensor(np.asarray(image)[None])
    with torch.no_grad():
        if x is not None:
            mu, _ = model.encode(x.to(device))
        else:
            mu = torch.as_tensor(np.asarray(base, dtype=np.float32)[None], device=device)
        d = mu.shape[1]
        if any(not 0 <= int(u) < d for u in units):
            raise ValueError(f"units must be in 0..{d - 1}, got {list(units)}")
        sc = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
        rows = []
        for u in units:
            z = mu.repeat(len(deltas), 1)
            z[:, int(u)] += torch.tensor([float(t) * sc[int(u)] for t in deltas], dtype=z.dtype, device=z.device)
            rows.append(model.decode(z).cpu().numpy())
    c0 = 0 if x is None else 1  # the original's column
    width = max(len(labels[0]) if labels else 4, 4)  # room for long row labels
    fig, axes = plt.subplots(len(units), len(deltas) + c0,
                             figsize=(1.2 * (len(deltas) + c0) + 0.05 * width, 1.3 * len(units) + 0.6),
                             squeeze=False)
    for r, u in enumerate(units):
        if x is not None:
            _show(axes[r, 0], x[0].numpy())
        axes[r, 0].set_ylabel(labels[r] if labels else f"z_{int(u)}", fontsize=7)
        for c, t in enumerate(deltas):
            _show(axes[r, c + c0], rows[r][c])
            if r == 0:
                axes[r, c + c0].set_title(f"{float(t):+g}" + ("σ" if scale is not None else ""), fontsize=8)
    if x is not None:
        axes[0, 0].set_title("original", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def response_profiles(mu: np.ndarray, count: np.ndarray, area: np.ndarray, units: Sequence[int], out_png: str, *,
                      labels: Optional[Sequence[str]] = None, area_bins: int = 8,
                      n_label: str = "N (objects)") -> str:
    """Fig. 4 style: for each unit, z_i against N (left) and against binned log A (right).

    Mean (dots) with +-1 standard deviation (bars) and the 10-90 percentile band
    (shaded). Area bins are quantiles of log10 A over the images with A > 0.

    Parameters
    ----------
    mu : numpy.ndarray of float, shape (n, d)
    count, area : numpy.ndarray, shape (n,)
    units : sequence of int
        One row per unit.
    labels : sequence of str, optional
        Row titles.
    n_label : str
        x-axis label of the N panels.
    """
    if len(units) == 0:
        raise ValueError("units must name at least one latent unit")
    mu = np.asarray(mu, dtype=np.float64)
    count = np.asarray(count)
    area = np.asarray(area, dtype=np.float64)
    ns = np.unique(count)
    pos = area > 0
    la = np.log10(area[pos])
    edges = np.unique(np.quantile(la, np.linspace(0, 1, area_bins + 1))) if pos.any() else np.zeros(0)
    fig, axes = plt.subplots(len(units), 2, figsize=(7.0, 2.2 * len(units) + 0.3), squeeze=False)
    for r, u in enumerate(units):
        z = mu[:, int(u)]
        ax = axes[r, 0]
        stats = [(z[count == k].mean(), z[count == k].std(), *np.percentile(z[count == k], [10, 90])) for k in ns]
        m, s, lo, hi = (np.array(v) for v in zip(*stats))
        ax.fill_between(ns, lo, hi, color="C0", alpha=0.15, lw=0)
        ax.errorbar(ns, m, yerr=s, fmt="o-", color="C0", ms=4, capsize=3)
        ax.set_xticks(ns)
        ax.set_xlabel(n_label, fontsize=8)
        ax.set_ylabel(f"z_{int(u)}", fontsize=8)
        ax.set_title(labels[r] if labels else f"z_{int(u)}", fontsize=8, loc="left")
        ax = axes[r, 1]
        if edges.size >= 2:
            zb = z[pos]
            which = np.clip(np.searchsorted(edges, la, side="right") - 1, 0, edges.size - 2)
            cen, st = [], []
            for b in range(edges.size - 1):
                sel = zb[which == b]
                if sel.size:
                    cen.append(0.5 * (edges[b] + edges[b + 1]))
                    st.append((sel.mean(), sel.std(), *np.percentile(sel, [10, 90])))
            m, s, lo, hi = (np.array(v) for v in zip(*st))
            ax.fill_between(cen, lo, hi, color="C1", alpha=0.15, lw=0)
            ax.errorbar(cen, m, yerr=s, fmt="o-", color="C1", ms=4, capsize=3)
        ax.set_xlabel("log10 cumulative area A (pixels)", fontsize=8)
        for a in axes[r]:
            a.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def coefficient_plot(res: dict, out_png: str, *, title: str = "") -> str:
    """Every unit's standardised (b_n, b_a), coloured by R^2, with the selection bands.

    Units above ``r2_min`` are ringed; numerosity units lie in the horizontal band
    |b_a| < cut, area units in the vertical band |b_n| < cut.
    """
    units = res["units"]
    bn = np.array([u["b_n"] for u in units])
    ba = np.array([u["b_a"] for u in units])
    r2 = np.array([u["r2"] for u in units])
    cut = res.get("coef_cut", 0.1)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    lim = max(0.3, float(np.abs(np.r_[bn, ba]).max()) * 1.1) if units else 1.0
    ax.axhspan(-cut, cut, color="C0", alpha=0.08, lw=0)
    ax.axvspan(-cut, cut, color="C1", alpha=0.08, lw=0)
    vmax = max(float(r2.max()) if units else 0, res["r2_min"])
    sc = ax.scatter(bn, ba, c=r2, cmap="viridis", s=14, vmin=0, vmax=vmax)
    hi = r2 >= res["r2_min"]
    ax.scatter(bn[hi], ba[hi], s=70, facecolors="none", edgecolors="red", lw=1.0, label=f"R² ≥ {res['r2_min']:g}")
    for i in list(res["numerosity_units"]) + list(res["area_units"]):
        ax.annotate(f"z_{i}", (bn[i], ba[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("b_n (log N)")
    ax.set_ylabel("b_a (log A)")
    ax.set_title(title or f"Eq. 3 per unit (corr(log N, log A) = {res['corr_log_n_log_a']:.2f})", fontsize=9)
    return finish_scatter(fig, ax, sc, "R²", hi, out_png)


def finish_scatter(fig, ax, sc, colour_label: str, marked: np.ndarray, out_png: str) -> str:
    """The end of a per-unit coefficient scatter: colour bar, a legend when units are
    marked, layout, the PNG through the atomic write; returns ``out_png``."""
    fig.colorbar(sc, ax=ax, label=colour_label)
    if marked.any():
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return out_png


def profile_units(res: dict, max_units: int = 6) -> List[tuple]:
    """Units worth a Fig. 4 row: the selected ones, else the best candidates (labelled so)."""
    by = {u["index"]: u for u in res["units"]}
    rows = []
    txt = lambda u: f"R²={u['r2']:.3f} b_n={u['b_n']:+.2f} b_a={u['b_a']:+.2f}"  # noqa: E731
    for kind, key in (("numerosity", "numerosity_units"), ("area", "area_units")):
        for i in res[key][: max_units // 2]:
            rows.append((i, f"z_{i}: {kind} unit ({txt(by[i])})"))
    if not res["numerosity_units"] and res.get("best_numerosity_candidate"):
        u = res["best_numerosity_candidate"]
        rows.append((u["index"], f"z_{u['index']}: best number candidate, NOT selected ({txt(u)})"))
    if not res["area_units"] and res.get("best_area_candidate"):
        u = res["best_area_candidate"]
        rows.append((u["index"], f"z_{u['index']}: best area candidate, NOT selected ({txt(u)})"))
    return rows[:max_units]


def regression_figures(mu: np.ndarray, count: np.ndarray, area: np.ndarray, res: dict, out_dir: str,
                       prefix: str = "") -> Dict[str, str]:
    """``fig4_profiles.png`` and ``coefficients.png`` for a regression result; returns their file names."""
    out: Dict[str, str] = {}
    rows = profile_units(res)
    if rows:
        name = f"{prefix}fig4_profiles.png"
        note = " (N = 0 shown, not in the fit)" if res.get("log_n") == "exclude-zero" and np.any(count == 0) else ""
        response_profiles(mu, count, area, [r[0] for r in rows], os.path.join(out_dir, name),
                          labels=[r[1] for r in rows], n_label="N (objects)" + note)
        out["profiles"] = name
    name = f"{prefix}coefficients.png"
    coefficient_plot(res, os.path.join(out_dir, name))
    out["coefficients"] = name
    return out
