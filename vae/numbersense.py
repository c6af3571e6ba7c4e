"""The number-sense analyses on latents files, side by side for a model and its controls.

- :func:`run_tuning` - number-selective units and tuning curves (:mod:`vae.tuning`,
  Nasr et al. 2019): ``tuning.json``, ``tuning.md``, ``tuning_*.png``.
- :func:`run_compare` - numerosity comparison and Weber fraction (:mod:`vae.compare`,
  Stoianov & Zorzi 2012): ``compare.json``, ``compare.md``, ``compare_psychometric.png``.
- :func:`demo_numbersense` and :func:`report_lines` - the binary demo's hook: w,
  selective-unit shares and DeWind-axis units (:mod:`vae.dewind`) for the trained
  model, the untrained control and PCA of the pixels, and their section of
  ``report.md``.

A trained model's latents mean little alone: the untrained network (``vae encode
--which init``) and PCA of the same images' pixels (:func:`vae.baselines.pca_features`)
are run beside it when given.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from synthcount._io import atomic_write, write_json_atomic

__all__ = ["load_representations", "run_tuning", "run_compare", "demo_numbersense", "report_lines",
           "PUBLISHED"]

# published reference figures (not measured here)
PUBLISHED = {
    "weber_fraction_stoianov_zorzi_2012": 0.15,
    "selective_share_nasr_2019": 0.096,  # 3,601 of 37,632 units of the last convolutional layer, ImageNet-trained
}

_NAMES = {"trained": "trained VAE", "untrained": "untrained VAE (initial weights)", "pca": "PCA of pixels"}


def load_representations(latents: str, *, untrained: Optional[str] = None, pca: bool = False):
    """The trained latents, and the controls asked for, over the same images.

    Parameters
    ----------
    latents : str
        Latents file (``vae encode``) of the model.
    untrained : str, optional
        Latents file of the same images under the untrained weights (``--which init``).
    pca : bool
        Add PCA of the pixels of the same images (as many components as latent units);
        needs the latents' dataset (a synthcount dataset) where it was encoded.

    Returns
    -------
    reps : dict
        ``{"trained": mu, "untrained": mu, "pca": features}`` (those given).
    lat : dict
        The trained latents file's arrays (:func:`vae.probe.load_latents`): count,
        the visual properties, attrs.
    """
    from .probe import load_latents

    lat = load_latents(latents)
    reps = {"trained": lat["mu"]}
    if untrained is not None:
        u = load_latents(untrained)
        if u["mu"].shape[0] != lat["mu"].shape[0] or not np.array_equal(u["count"], lat["count"]) or (
                "index" in u and "index" in lat and not np.array_equal(u["index"], lat["index"])):
            raise ValueError(f"--untrained {untrained!r} does not hold the same images as {latents!r} "
                             f"({u['mu'].shape[0]} vs {lat['mu'].shape[0]} rows, or other counts / indices)")
        reps["untrained"] = u["mu"]
    if pca:
        from .baselines import pca_features

        a = lat["attrs"]
        data = str(a.get("dataset", ""))
        if str(a.get("data_kind", "")) != "shards" or not os.path.exists(data) or "index" not in lat:
            raise ValueError(f"--pca needs the synthcount dataset that {latents!r} was encoded from; its dataset "
                             f"{data!r} is not a synthcount dataset here")
        import synthcount

        try:
            images = synthcount.open_dataset(data).read_images(lat["index"])
        except (ValueError, OSError, IndexError) as e:
            raise ValueError(f"--pca needs the images {latents!r} was encoded from: {e}") from None
        reps["pca"] = pca_features(images, min(int(lat["mu"].shape[1]), 16 * 16 * images.shape[3]))
    return reps, lat


def run_tuning(latents: str, out_dir: str, *, untrained: Optional[str] = None, pca: bool = False,
               alpha: float = 0.01, figures: bool = True) -> dict:
    """Selectivity test and tuning curves for each representation; writes ``tuning.json``, ``tuning.md`` and figures.

    The stimulus sets are the latents' ``stimulus_set`` field (``--match`` datasets);
    without it, or with one set, a one-way ANOVA is used and the output says so.

    Returns
    -------
    dict
        ``representations`` ({name: :func:`vae.tuning.tuning_arrays` result}),
        ``latents``, ``figures``.
    """
    from . import tuning

    reps, lat = load_representations(latents, untrained=untrained, pca=pca)
    sets = lat.get("stimulus_set")
    cov = tuning.visual_covariates(lat)
    res = {"representations": {k: tuning.tuning_arrays(mu, lat["count"], sets, alpha=alpha,
                                                       set_names=lat.get("stimulus_set_names"), covariates=cov)
                               for k, mu in reps.items()},
           "latents": os.path.abspath(latents), "untrained": untrained and os.path.abspath(untrained), "pca": pca}
    os.makedirs(out_dir, exist_ok=True)
    if figures:
        res["figures"] = tuning.tuning_figures(res["representations"], out_dir)
    _write_results(out_dir, "tuning", res, _tuning_md(res))
    return res


def _write_results(out_dir: str, stem: str, res: dict, lines: List[str]) -> None:
    """``STEM.json`` and ``STEM.md`` in ``out_dir``, each through the atomic write."""
    write_json_atomic(os.path.join(out_dir, f"{stem}.json"), res, indent=1)
    with atomic_write(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _tuning_md(res: dict) -> List[str]:
    from . import tuning

    reps = res["representations"]
    first = next(iter(reps.values()))
    names = first.get("stimulus_set_names")
    L = ["# Number-selective units (after Nasr, Viswanathan & Nieder 2019)", "", first["note"] + ".",
         f"Stimulus sets: {names or first['stimulus_sets']}; {first['n_used']} of {first['n_total']} images (N > 0).",
         "", "| representation | selective units | share | monotonic | p_N < alpha (any set terms) | selective "
         "with visual covariates | mean R² Gaussian, linear N | mean R² Gaussian, log N |",
         "|---|---|---|---|---|---|---|---|"]
    for k, r in reps.items():
        fs = r["fit_summary"]
        f = (lambda v: "–" if v is None else f"{v:.3f}")  # noqa: E731
        cs = r.get("covariate_selective_units")
        L.append(f"| {_NAMES.get(k, k)} | {len(r['selective_units'])} / {r['latent_dim']} | "
                 f"{100 * r['share_selective']:.1f}% | {len(r['monotonic_selective_units'])} | "
                 f"{r['n_responsive_units']} | {'–' if cs is None else len(cs)} | {f(fs['mean_r2_linear'])} | "
                 f"{f(fs['mean_r2_log'])} |")
    L += [""] + [tuning.tuning_text(r, _NAMES.get(k, k)) for k, r in reps.items()]
    L += ["", "Published, not measured: Nasr et al. (2019) found 9.6% of the units of an ImageNet-trained network's "
          "last convolutional layer number-selective, with tuning curves better fitted on a log axis.", ""]
    for key, what in (("histogram", "preferred numerosities"), ("curves", "average tuning curves"),
                      ("widths", "Gaussian width against preferred N")):
        if res.get("figures", {}).get(key):
            L.append(f"![{what}]({res['figures'][key]})")
    return L


def run_compare(latents: str, out_dir: str, *, untrained: Optional[str] = None, pca: bool = False,
                references: Optional[Sequence[int]] = None, pairs: int = 20000, max_ratio: Optional[float] = None,
                bootstrap: int = 200, seed: int = 0, figures: bool = True) -> dict:
    """Comparison read-out and Weber fraction for each representation; writes ``compare.json``,
    ``compare.md`` and ``compare_psychometric.png``.

    Returns
    -------
    dict
        ``representations`` ({name: :func:`vae.compare.compare_arrays` result}),
        ``published_w`` (Stoianov & Zorzi 2012), ``figures``.
    """
    from . import compare

    reps, lat = load_representations(latents, untrained=untrained, pca=pca)
    res = {"representations": {k: compare.compare_arrays(mu, lat["count"], references=references, pairs=pairs,
                                                         max_ratio=max_ratio, bootstrap=bootstrap, seed=seed)
                               for k, mu in reps.items()},
           "published_w": PUBLISHED["weber_fraction_stoianov_zorzi_2012"],
           "latents": os.path.abspath(latents), "untrained": untrained and os.path.abspath(untrained), "pca": pca}
    os.makedirs(out_dir, exist_ok=True)
    if figures:
        res["figures"] = {"psychometric": compare.compare_figure(
            res["representations"], os.path.join(out_dir, "compare_psychometric.png"))}
    _write_results(out_dir, "compare", res, _compare_md(res))
    return res


def _compare_md(res: dict) -> List[str]:
    from . import compare

    reps = res["representations"]
    first = next(iter(reps.values()))
    how = (f"one image at reference N {first['references']} against one at another N" if first["references"]
           else "two images of different N over the whole range")
    L = ["# Numerosity comparison and Weber fraction (after Stoianov & Zorzi 2012)", "",
         f"Logistic read-out on the concatenated latents of a pair ({how}"
         + (f", ratio at most {first['max_ratio']:g}" if first["max_ratio"] else "") + "), trained on pairs from one "
         "half of the images and tested on pairs from the other half; w fitted by maximum likelihood to "
         "P(correct) = 1 - 0.5 erfc(|n1 - n2| / (sqrt(2) w sqrt(n1² + n2²))), 95% interval from "
         f"{first['bootstrap']} bootstrap resamples of the test pairs.", "",
         "| representation | w | 95% interval | test accuracy | train accuracy | test pairs |",
         "|---|---|---|---|---|---|"]
    for k, r in reps.items():
        ci = r["ci95"]
        L.append(f"| {_NAMES.get(k, k)} | {r['w']:.3f}{' (bound)' if r['at_bound'] else ''} | "
                 f"{'–' if ci is None else f'{ci[0]:.3f}–{ci[1]:.3f}'} | {r['test_accuracy']:.3f} | "
                 f"{r['train_accuracy']:.3f} | {r['pairs_test']} |")
    L.append(f"| Stoianov & Zorzi 2012 (published, not measured) | {res['published_w']:.2f} | | | | |")
    L += [""] + [compare.compare_text(r, _NAMES.get(k, k)) for k, r in reps.items()]
    if res.get("figures"):
        L += ["", f"![psychometric curves]({res['figures']['psychometric']})"]
    return L


def demo_numbersense(reps: Dict[str, np.ndarray], props: Dict[str, np.ndarray], paths: Callable[[str, str], str], *,
                     seed: int = 0, quick: bool = False) -> dict:
    """The binary demo's number-sense analyses for every representation, with figures.

    Parameters
    ----------
    reps : dict
        ``{"trained": mu, "untrained": mu, "pca": features}``.
    props : dict of numpy.ndarray
        ``count``, ``cumulative_area`` and the record fields of
        :func:`vae.encode.record_properties` (``field_area`` at least, for the DeWind axes).
    paths : callable
        The demo's ``paths(stem, ext)`` (adds the study's seed suffix).
    seed : int
    quick : bool
        Fewer pairs and resamples (tests).

    Returns
    -------
    dict
        Per representation ``weber`` (w, ci95, test_accuracy), ``tuning`` (selective
        units and share, mean Gaussian R^2 linear / log), ``dewind`` (N, Sz and Sp
        units, or the reason it could not run); ``figures``; ``note``. Also written to
        ``numbersense.json``.
    """
    from . import compare, dewind, tuning

    count = props["count"]
    out: dict = {"representations": {}, "figures": {}}
    full_t, full_c = {}, {}
    for name, mu in reps.items():
        c = compare.compare_arrays(mu, count, pairs=2000 if quick else 20000, bootstrap=20 if quick else 200,
                                   seed=seed)
        t = tuning.tuning_arrays(mu, count, props.get("stimulus_set"), covariates=tuning.visual_covariates(props))
        full_t[name], full_c[name] = t, c
        rec = {"weber": {k: c[k] for k in ("w", "ci95", "at_bound", "test_accuracy", "pairs_test")},
               "tuning": {"selective_units": t["selective_units"], "share_selective": t["share_selective"],
                          "monotonic_selective_units": t["monotonic_selective_units"],
                          "covariate_selective_units": t.get("covariate_selective_units"),
                          "two_way": t["two_way"], "preferred_histogram": t["preferred_histogram"],
                          **t["fit_summary"]}}
        try:
            d = dewind.dewind_arrays(mu, props, permutations=0 if quick else 5, seed=seed)
            rec["dewind"] = {k: d[k] for k in ("n_units", "sz_units", "sp_units", "axis_correlations", "source",
                                               "n_used")}
            rec["dewind"]["angles_deg"] = [round(u["angle_deg"], 1) for u in d["units"]]
            fig = paths(f"dewind_{name}", ".png")
            dewind.dewind_figure(d, fig, title=f"DeWind axes per unit, {_NAMES.get(name, name)}")
            out["figures"][f"dewind_{name}"] = os.path.basename(fig)
        except ValueError as e:  # no field area in these records: say why, keep the rest
            rec["dewind"] = {"error": str(e)}
        out["representations"][name] = rec
    out["note"] = next(iter(full_t.values()))["note"]
    out["figures"]["psychometric"] = compare.compare_figure(full_c, paths("compare_psychometric", ".png"))
    stem = paths("numbersense", "_")  # numbersense_ or numbersense_seed{S}_ before each figure name
    figs = tuning.tuning_figures(full_t, os.path.dirname(stem) or ".", prefix=os.path.basename(stem))
    out["figures"].update({f"tuning_{k}": v for k, v in figs.items()})
    write_json_atomic(paths("numbersense", ".json"), out)
    return out


def _ns_row(seed, name: str, r: dict) -> str:
    w, t, d = r["weber"], r["tuning"], r["dewind"]
    ci = w["ci95"]
    cs = "–" if t.get("covariate_selective_units") is None else str(len(t["covariate_selective_units"]))
    dw = ("–" if "error" in d else f"{len(d['n_units'])} / {len(d['sz_units'])} / {len(d['sp_units'])}")
    return (f"| {seed} | {_NAMES.get(name, name)} | {w['w']:.3f}{' (bound)' if w['at_bound'] else ''} "
            f"({'–' if ci is None else f'{ci[0]:.3f}–{ci[1]:.3f}'}) | {w['test_accuracy']:.3f} | "
            f"{len(t['selective_units'])} ({100 * t['share_selective']:.0f}%; "
            f"{len(t['monotonic_selective_units'])} monotonic) | {cs} | {dw} |")


def report_lines(studies: List[dict]) -> List[str]:
    """The report.md section of the number-sense analyses, one table row per seed and representation.

    ``studies`` are the demo's study records; those without ``numbersense`` are skipped
    (returns [] when none has it)."""
    have = [s for s in studies if s.get("numbersense")]
    if not have:
        return []
    ns0 = have[0]["numbersense"]
    L = ["", "## Number sense: Weber fraction, number-selective units, DeWind axes", "",
         "Comparison (\"which has more?\"): a logistic read-out on the latents of a pair of held-out images, trained "
         "on pairs from one half of the images and tested on the other half; w is the Weber fraction of P(correct) = "
         "1 - 0.5 erfc(|n1 - n2| / (sqrt(2) w sqrt(n1² + n2²))) with its 95% bootstrap interval (Stoianov & Zorzi "
         f"2012). Selective units: {ns0['note']}. With visual covariates: N still significant after log total area "
         "and log field area, and they not after N (p ≥ 0.01). DeWind axes: units coding log N, log size or log "
         "spacing alone (R² ≥ 0.05, the other two |b| < 0.1; size and spacing from TSA, field area and N).", "",
         "| seed | representation | w (95% interval) | comparison accuracy | number-selective units | "
         "selective with visual covariates | DeWind units N / Sz / Sp |", "|---|---|---|---|---|---|---|"]
    for s in have:
        for name, r in s["numbersense"]["representations"].items():
            L.append(_ns_row(s["seed"], name, r))
    L += ["", f"Published, not measured: Stoianov & Zorzi (2012) w = "
          f"{PUBLISHED['weber_fraction_stoianov_zorzi_2012']:.2f} (in the range of human adults); Nasr et al. (2019) "
          f"{100 * PUBLISHED['selective_share_nasr_2019']:.1f}% of units number-selective (ImageNet-trained network, "
          "standard and two control sets). A single stimulus set cannot exclude units that follow a visual correlate "
          "of N; a `--match` dataset with control sets can.", ""]
    f = ns0["figures"]
    for key, what in (("psychometric", "psychometric curves"), ("tuning_histogram", "preferred numerosities"),
                      ("tuning_curves", "average tuning curves"), ("tuning_widths", "Gaussian widths"),
                      ("dewind_trained", "DeWind axes, trained"), ("dewind_untrained", "DeWind axes, untrained"),
                      ("dewind_pca", "DeWind axes, PCA")):
        if f.get(key):
            L += [f"{what[0].upper() + what[1:]}: ![{what}]({f[key]})", ""]
    return L
