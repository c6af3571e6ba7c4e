"""The whole story in one call: generate, train, encode, probe, regress, control, figures, report.

:func:`run_demo` makes, in ``out_dir``:

- ``data/train`` and ``data/eval``: synthcount datasets on the built-in assets, the
  paper's regression scene (section 4.4: 0-4 copies of one object, no overlap, sizes
  varying modestly) at 64x64, or with ``binary=True`` Stoianov & Zorzi-style binary
  images (48x48, 1-8 shapes, area independent of number); the eval set has its own
  seed, so it is held out from training;
- ``run/``: the ``tiny`` VAE trained on CPU with the **pixel** (BCE) loss: no ImageNet
  VGG-19 weights are available here, so the paper's perceptual loss cannot be used;
  with pixel BCE summed over pixels, beta = 1 (the plain ELBO) replaces the paper's
  beta = 0.03, which was tuned for the perceptual loss. Training runs whole epochs
  until the time budget would be exceeded (or ``max_epochs``);
- latents of the eval set under the trained weights and under the run's initial,
  untrained weights (the control), and a PCA-of-pixels baseline;
- the count probe on a train/test split of the eval latents, the Eq. 3 regression
  on all of them with a permutation baseline, for every representation;
- ``report.md`` with the findings in plain words, ``demo.json``, ``table1.md``,
  per-representation ``probe_*.json`` / ``regression_*.json`` and PNG figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, Optional

import numpy as np

__all__ = ["run_demo", "SCALES", "pca_features", "write_report"]

# (train_images, eval_images, max_epochs, probe_epochs, permutations) per scale
SCALES = {
    "full": dict(train_images=10000, eval_images=6000, max_epochs=40, probe_epochs=200, permutations=20),
    "quick": dict(train_images=256, eval_images=300, max_epochs=1, probe_epochs=15, permutations=3),
}


class _Log:
    """Stage messages with elapsed time on stderr (progress bars come from each stage)."""

    def __init__(self, progress: bool):
        self.t0 = time.monotonic()
        self.progress = progress

    def __call__(self, msg: str) -> None:
        if self.progress:
            print(f"[demo {self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def pca_features(images: np.ndarray, k: int, side: int = 16) -> np.ndarray:
    """Top-``k`` principal components of the images' pixels (a no-learning baseline).

    Parameters
    ----------
    images : numpy.ndarray of uint8, shape (n, H, W, 3)
    k : int
        Components kept.
    side : int
        Images are area-averaged to side x side first (keeps the eigenproblem small).

    Returns
    -------
    numpy.ndarray of float32, shape (n, k)
    """
    import cv2

    x = np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])
    x = x.reshape(len(images), -1).astype(np.float64) / 255.0
    x -= x.mean(axis=0)
    cov = x.T @ x / max(len(x) - 1, 1)
    w, v = np.linalg.eigh(cov)
    comp = v[:, np.argsort(w)[::-1][:k]]
    return (x @ comp).astype(np.float32)


def _generate(path: str, preset: str, n: int, seed: int, size, progress: bool) -> dict:
    import synthcount
    from synthcount.generate import generate_dataset

    over = {} if size is None else {"size": size}
    cfg = synthcount.DatasetConfig(scene=synthcount.preset(preset, **over), num_images=n,
                                   shard_size=min(n, 1000), seed=seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    res = generate_dataset(path, cfg, workers=max(1, min(cores, cfg.num_shards)), progress=progress)
    return {"path": path, "preset": preset, "num_images": n, "seed": seed, "seconds": round(res.seconds, 2),
            "corr_log_n_log_a": res.corr_log_n_log_a}


def _train(data: str, run_dir: str, cfg, deadline: float, max_epochs: int, log: _Log, progress: bool) -> dict:
    """Whole epochs (resume after each) while the next one is expected to end before ``deadline``."""
    from vae.train import train

    res, last_epoch_s, epochs = None, None, 0
    while epochs < max_epochs:
        now = time.monotonic()
        if epochs and now + 1.1 * last_epoch_s > deadline:
            log(f"training stops after {epochs} epochs: another one (~{last_epoch_s:.0f}s) would pass the time budget")
            break
        res = train(data, run_dir, cfg.replace(epochs=epochs + 1), resume=epochs > 0, progress=progress)
        epochs += 1
        last_epoch_s = time.monotonic() - now
        row = res["last"]
        log(f"epoch {epochs}: loss {row['loss']:.1f} (kl {row['kl']:.1f}, rec {row['rec']:.1f}), "
            f"test {row['test_loss']:.1f}, {row['images_per_s']:.0f} img/s, {last_epoch_s:.0f}s")
    return {"epochs": epochs, "last": res["last"] if res else None, "best_test_loss": res["best_test_loss"] if res else None}


def _split(n: int, seed: int, test_fraction: float = 1 / 3):
    perm = np.random.default_rng([seed, 7]).permutation(n)
    k = int(round(n * test_fraction))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _analyse(name: str, mu: np.ndarray, count: np.ndarray, area: np.ndarray, split, out_dir: str, *,
             seed: int, probe_epochs: int, permutations: int, log: _Log, progress: bool) -> dict:
    from vae import figures, probe, regress

    tr, te = split
    p = probe.probe_arrays(mu[tr], count[tr], mu[te], count[te], seed=seed, max_epochs=probe_epochs,
                           progress=progress)
    p = probe.json_clean(p)
    with open(os.path.join(out_dir, f"probe_{name}.json"), "w") as f:
        json.dump(p, f, indent=2)
    r = regress.regression_arrays(mu, count, area, permutations=permutations, seed=seed)
    r["figures"] = figures.regression_figures(mu, count, area, r, out_dir, prefix=f"{name}_")
    r_sz = regress.regression_arrays(mu, count, area, r2_min=0.1, permutations=0, seed=seed)
    r["at_r2_0.1"] = {"numerosity_units": r_sz["numerosity_units"], "area_units": r_sz["area_units"]}
    with open(os.path.join(out_dir, f"regression_{name}.json"), "w") as f:
        json.dump(r, f, indent=2)
    log(f"{name}: probe mean per-class accuracy {p['mean_accuracy']:.3f}, mean AP {p['mean_ap']:.3f}; "
        f"{len(r['numerosity_units'])} numerosity / {len(r['area_units'])} area units at R^2 >= 0.05")
    return {"probe": p, "regression": r}


def run_demo(out_dir: str, *, minutes: float = 9.0, train_images: Optional[int] = None,
             eval_images: Optional[int] = None, max_epochs: Optional[int] = None, quick: bool = False,
             binary: bool = False, scene: str = "regression", seed: int = 0, batch_size: int = 64, device: str = "cpu",
             threads: Optional[int] = None, progress: bool = True) -> dict:
    """Run the end-to-end demo into ``out_dir`` and return its summary (also ``demo.json``).

    Parameters
    ----------
    out_dir : str
        Created if needed; must not already hold a demo (``report.md``).
    minutes : float > 0
        Wall-clock budget for the whole run; training gets what generation and a
        reserve for the analysis leave (whole epochs only).
    train_images, eval_images, max_epochs : int, optional
        Scale knobs; defaults from ``SCALES["quick" if quick else "full"]``.
    quick : bool
        A much smaller run (one epoch on a few hundred images) for tests.
    binary : bool
        Stoianov & Zorzi-style binary images (48x48, N in 1..8) instead of a
        cut-out scene.
    scene : {"regression", "decorrelated"}
        Cut-out scene (64x64, 0-4 copies of one built-in object, no overlap):
        ``regression`` is the paper's section 4.4 set (A grows with N);
        ``decorrelated`` draws the cumulative area independently of N, so Eq. 3 can
        tell number from area.
    seed : int
        Seeds datasets (train: seed, eval: seed + 1), training, probe and shuffles.
    batch_size : int >= 2
    device : {"cpu", "auto", "cuda"}
    threads : int >= 1, optional
        torch CPU threads for the run (restored afterwards). Default: the cores this
        process may use. Measured for the tiny model on an idle 2-core machine:
        338 img/s with one thread, 521 with two; on cores shared with other work one
        thread can be faster (330 against 65-135 img/s), so lower it there.
    progress : bool
        Stage messages and progress bars on stderr.

    Returns
    -------
    dict
        Settings, timings, and per representation (``trained``, ``untrained``,
        ``pca``) the probe and regression results.
    """
    import torch

    scale = dict(SCALES["quick" if quick else "full"])
    for k, v in (("train_images", train_images), ("eval_images", eval_images), ("max_epochs", max_epochs)):
        if v is not None:
            if not isinstance(v, int) or v < (2 if k != "max_epochs" else 1):
                raise ValueError(f"{k} must be an integer >= {2 if k != 'max_epochs' else 1}, got {v!r}")
            scale[k] = v
    if scale["eval_images"] < 30:
        raise ValueError(f"eval_images must be >= 30 (probe split and regression), got {scale['eval_images']}")
    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if scene not in ("regression", "decorrelated"):
        raise ValueError(f"scene must be 'regression' or 'decorrelated', got {scene!r}")
    if os.path.exists(os.path.join(out_dir, "report.md")):
        raise ValueError(f"out_dir {out_dir!r} already holds a demo (report.md); choose another folder")
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(out_dir, minutes=minutes, scale=scale, quick=quick, binary=binary, scene=scene, seed=seed,
                    batch_size=batch_size, device=device, progress=progress)
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: str, *, minutes: float, scale: dict, quick: bool, binary: bool, scene: str, seed: int, batch_size: int,
         device: str, progress: bool) -> dict:
    import torch

    from vae import figures
    from vae.checkpoint import load_model
    from vae.config import TrainConfig
    from vae.data import ShardImages
    from vae.encode import encode_model, resolve_device, write_latents

    dev = resolve_device(device)
    log = _Log(progress)
    deadline = log.t0 + 60.0 * minutes
    os.makedirs(out_dir, exist_ok=True)
    preset, size = ("binary", None) if binary else (scene, (64, 64))
    img_size = (48, 48) if binary else (64, 64)
    timings: Dict[str, float] = {}

    # ---------------------------------------------------------------- data
    log(f"1/6 generating {scale['train_images']} training and {scale['eval_images']} held-out images "
        f"(preset {preset!r}, built-in assets)")
    data_train = _generate(os.path.join(out_dir, "data", "train"), preset, scale["train_images"], seed, size, progress)
    data_eval = _generate(os.path.join(out_dir, "data", "eval"), preset, scale["eval_images"], seed + 1, size, progress)
    timings["generate_s"] = round(log.elapsed(), 1)

    # ---------------------------------------------------------------- train
    cfg = TrainConfig(preset="tiny", model_overrides={"image_size": img_size}, recon="pixel", pixel_loss="bce",
                      beta=1.0, batch_size=batch_size, seed=seed, workers=0, device=device, recon_every=0,
                      epochs=1)
    # reserve for encoding, probes, regressions and figures: measured 16 s at the full scale (6000 images)
    # on a shared 2-core machine with one thread; ~3x that for safety
    reserve = 10.0 if quick else 20.0 + scale["eval_images"] / 200.0
    t_train = time.monotonic()
    log(f"2/6 training the tiny VAE (pixel BCE, beta 1, batch {batch_size}, device {dev}) for up to "
        f"{scale['max_epochs']} epochs within {max(0.0, deadline - reserve - t_train) / 60:.1f} min")
    run_dir = os.path.join(out_dir, "run")
    tr = _train(data_train["path"], run_dir, cfg, deadline - reserve, scale["max_epochs"], log, progress)
    timings["train_s"] = round(time.monotonic() - t_train, 1)

    # ---------------------------------------------------------------- encode
    log("3/6 encoding the held-out set with the trained and the untrained (initial) weights")
    t_enc = time.monotonic()
    ds = ShardImages(data_eval["path"], train=False, image_size=img_size)
    models, lat = {}, {}
    for name, which in (("trained", "last"), ("untrained", "init")):
        model, mcfg, meta = load_model(run_dir, which)
        models[name] = model.to(dev)
        lat[name] = encode_model(model, ds, batch_size=256, device=dev, progress=progress, desc=f"encode {name}")
        write_latents(os.path.join(out_dir, f"latents_{name}.h5"), lat[name],
                      {"run_dir": os.path.abspath(run_dir), "checkpoint": which, "checkpoint_path": meta["path"],
                       "epoch": meta["epoch"], "dataset": os.path.abspath(data_eval["path"]), "data_kind": "shards",
                       "split": "all", "image_size": list(img_size), "latent_dim": int(mcfg.latent_dim),
                       "num_images": len(ds)})
    count, area = lat["trained"]["count"], lat["trained"]["cumulative_area"]
    images = ds.ds.read_images(np.arange(len(ds)))
    reps = {"trained": lat["trained"]["mu"], "untrained": lat["untrained"]["mu"],
            "pca": pca_features(images, int(mcfg.latent_dim))}
    timings["encode_s"] = round(time.monotonic() - t_enc, 1)

    # ---------------------------------------------------------------- probe + regression
    log("4/6 count probe and Eq. 3 regression for each representation (trained, untrained, PCA of pixels)")
    t_an = time.monotonic()
    split = _split(len(count), seed)
    results = {name: _analyse(name, mu, count, area, split, out_dir, seed=seed, probe_epochs=scale["probe_epochs"],
                              permutations=scale["permutations"], log=log, progress=progress)
               for name, mu in reps.items()}
    timings["analysis_s"] = round(time.monotonic() - t_an, 1)

    # ---------------------------------------------------------------- figures
    log("5/6 figures")
    figs = {}
    pick = np.arange(min(8, len(images)))
    figs["reconstructions"] = os.path.basename(figures.reconstruction_grid(
        models["trained"], images[pick], os.path.join(out_dir, "fig2_reconstructions.png"), device=dev,
        title="Held-out originals (top) and reconstructions from mu (bottom), trained VAE"))
    rows = figures.profile_units(results["trained"]["regression"], max_units=4)
    if not rows:  # nothing selected and no candidate: show the units with the highest R^2
        rows = [(u["index"], f"z_{u['index']}") for u in results["trained"]["regression"]["top_r2_units"][:3]]
    z_std = lat["trained"]["mu"].std(axis=0)
    # the traversal starts from an image with N = 2 when there is one (room to go up and down)
    start = int(np.flatnonzero(count == 2)[0]) if np.any(count == 2) else 0
    figs["traversal"] = os.path.basename(figures.traversal_grid(
        models["trained"], images[start], [r[0] for r in rows], os.path.join(out_dir, "fig3_traversal.png"),
        scale=z_std, device=dev, labels=[r[1].split(":")[0] for r in rows]))
    timings["total_s"] = round(log.elapsed(), 1)

    # ---------------------------------------------------------------- report
    log("6/6 writing report.md")
    summary = {
        "settings": {"binary": binary, "preset": preset, "image_size": list(img_size), "seed": seed,
                     "model_preset": "tiny", "latent_dim": int(mcfg.latent_dim), "recon": "pixel (BCE)", "beta": 1.0,
                     "batch_size": batch_size, "device": dev, "torch_threads": torch.get_num_threads(),
                     "minutes_budget": minutes, "quick": quick, **scale},
        "data": {"train": data_train, "eval": data_eval,
                 "eval_count_histogram": np.bincount(count).tolist(),
                 "probe_split": {"train": int(split[0].size), "test": int(split[1].size)}},
        "training": tr,
        "timings": timings,
        "results": {k: {"probe": {key: v["probe"][key] for key in ("ap_voc11", "ap", "accuracy", "mean_ap_voc11",
                                                                    "mean_ap", "mean_accuracy", "chance")},
                        "regression": {key: v["regression"][key] for key in (
                            "numerosity_units", "area_units", "r2_min", "n_used", "n_excluded_zero_count",
                            "corr_log_n_log_a", "permutation_mean_selected", "best_numerosity_candidate",
                            "best_area_candidate", "area_unit_signs", "at_r2_0.1", "top_r2_units", "figures")}}
                    for k, v in results.items()},
        "figures": figs,
    }
    with open(os.path.join(out_dir, "demo.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_report(out_dir, summary, results)
    log(f"done in {log.elapsed() / 60:.1f} min: {os.path.join(out_dir, 'report.md')}")
    return summary


_NAMES = {"trained": "trained VAE", "untrained": "untrained VAE (initial weights)", "pca": "PCA of pixels"}


def _unit(u: Optional[dict]) -> str:
    return "none" if u is None else f"z_{u['index']} (R² {u['r2']:.3f}, b_n {u['b_n']:+.2f}, b_a {u['b_a']:+.2f})"


def _probe_verdict(res: dict) -> str:
    a = {k: res[k]["probe"]["mean_accuracy"] for k in res}
    d = a["trained"] - a["untrained"]
    if d > 0.02:
        return (f"The trained encoder carries more count information than the same network with its initial "
                f"weights (+{100 * d:.1f} points of mean per-class accuracy); that difference, not the absolute "
                "score, is what training added.")
    if d >= -0.02:
        return (f"Training added no count information that the probe can find: the untrained network scores "
                f"about the same ({100 * d:+.1f} points).")
    return f"The trained encoder scores below its untrained initialisation ({100 * d:+.1f} points)."


def _pca_verdict(res: dict) -> str:
    d = res["trained"]["probe"]["mean_accuracy"] - res["pca"]["probe"]["mean_accuracy"]
    if d > 0.02:
        return f" It also beats PCA of the pixels (+{100 * d:.1f} points)."
    return (f" It does not beat PCA of the pixels ({100 * d:+.1f} points): the count information it carries is "
            "already plain in the image statistics.")


def _regress_verdict(res: dict) -> str:
    r, r0 = res["trained"]["regression"], res["untrained"]["regression"]
    k, k0 = len(r["numerosity_units"]), len(r0["numerosity_units"])
    p = r["permutation_mean_selected"]
    base = f"the untrained control has {k0}" + (f", shuffled labels select {p:.2f} units on average" if p is not None else "")
    if k == 0:
        return (f"No numerosity unit passes R² ≥ {r['r2_min']:g} with |b_a| < {r['coef_cut']:g} in the trained "
                f"network ({base}). Best candidate: {_unit(r['best_numerosity_candidate'])}.")
    verdict = ("more than" if k > k0 else "no more than")
    return (f"{k} numerosity unit(s) in the trained network, {verdict} in the untrained control ({base}).")


def write_report(out_dir: str, summary: dict, results: dict) -> str:
    """Write ``report.md`` and ``table1.md`` for a demo run; returns the report path."""
    from vae import probe, regress

    s, d, t, tr = summary["settings"], summary["data"], summary["timings"], summary["training"]
    r_tr = results["trained"]["regression"]
    corr = r_tr["corr_log_n_log_a"]
    kind = ("Stoianov & Zorzi-style binary images (48x48, 1-8 shapes, area drawn independently of number)"
            if s["binary"] else "the paper's regression scene (64x64, 0-4 copies of one object, no overlap)"
            if s["preset"] == "regression" else
            "the area-decorrelated scene (64x64, 0-4 copies of one object, no overlap, cumulative area drawn "
            "independently of number)")
    last = tr["last"] or {}
    rows = []
    for name in ("trained", "untrained", "pca"):
        rows += probe.table1_rows(results[name]["probe"], _NAMES[name])[(0 if name == "trained" else 2):]
    table = probe.format_table1(rows, title="Count probe on held-out latents (Table 1 layout, %)",
                                notes=probe.TABLE1_NOTES[:1] + (
                                    "Measured rows: demo images, not SOS; compare the measured rows with each other, "
                                    "not with the published ones.",) + probe.TABLE1_NOTES[2:])
    with open(os.path.join(out_dir, "table1.md"), "w") as f:
        f.write(table)
    pr = {k: results[k]["probe"] for k in results}
    ch = pr["trained"]["chance"]
    L = [
        "# synthcount demo: does a sense of number emerge in a small VAE?",
        "",
        f"**Setup.** {s['train_images']} training images of {kind}, built-in assets, seed {s['seed']}. "
        f"The `tiny` VAE (latent {s['latent_dim']}) trained for {tr['epochs']} epoch(s) in {t['train_s'] / 60:.1f} min "
        f"on {s['device']} ({s['torch_threads']} threads) with the **pixel BCE loss (beta 1)**, not the paper's "
        "VGG-19 perceptual loss: no ImageNet VGG-19 weights exist here. "
        f"Final train loss {last.get('loss', float('nan')):.1f} (KL {last.get('kl', float('nan')):.1f}), "
        f"test loss {last.get('test_loss', float('nan')):.1f}. "
        f"Held-out evaluation set: {s['eval_images']} images (seed {s['seed'] + 1}), counts per N "
        f"{d['eval_count_histogram']}; **corr(log N, log A) = {corr:.3f}** over its images with N ≥ 1. "
        f"Total time {t['total_s'] / 60:.1f} min. One seed: the spread over seeds is not measured here "
        "(run again with another `--seed` to see it; unit counts flicker between runs).",
        "",
        "## What was found",
        "",
        f"- **Count probe** (MLP 160-160 on mu, class-weighted; {d['probe_split']['train']} held-out images to "
        f"train it, {d['probe_split']['test']} to test): mean per-class accuracy "
        f"trained {pr['trained']['mean_accuracy']:.3f}, untrained {pr['untrained']['mean_accuracy']:.3f}, "
        f"PCA of pixels {pr['pca']['mean_accuracy']:.3f}; chance {ch['mean_frequency']:.3f} (label frequency). "
        f"Count AP (VOC 11-pt): {pr['trained']['mean_ap_voc11']:.3f} / {pr['untrained']['mean_ap_voc11']:.3f} / "
        f"{pr['pca']['mean_ap_voc11']:.3f} (random ranking {ch.get('mean_ap_voc11_random', float('nan')):.3f}). "
        + _probe_verdict(results) + _pca_verdict(results)
        + (" Binary images have N in 1..8: class 0 is absent (–) and class 4+ holds N = 4..8." if s["binary"] else ""),
        f"- **Eq. 3 regression** (trained): " + regress.summarize(r_tr).replace("\n", " "),
        f"- " + _regress_verdict(results),
    ]
    for name in ("untrained", "pca"):
        r = results[name]["regression"]
        L.append(f"- {_NAMES[name][0].upper() + _NAMES[name][1:]}: {len(r['numerosity_units'])} numerosity and {len(r['area_units'])} "
                 f"area unit(s) at R² ≥ {r['r2_min']:g}; best number candidate {_unit(r['best_numerosity_candidate'])}; "
                 f"best area candidate {_unit(r['best_area_candidate'])}.")
    z = {k: results[k]["regression"]["at_r2_0.1"] for k in results}
    L.append("- At Stoianov & Zorzi's R² ≥ 0.1: numerosity / area units: " + "; ".join(
        f"{_NAMES[k]} {len(z[k]['numerosity_units'])} / {len(z[k]['area_units'])}" for k in results) + ".")
    L += ["", "## Count probe", "", table, "## Eq. 3 regression", "",
          "| representation | numerosity units (R² ≥ 0.05) | area units | signs of area b_a | at R² ≥ 0.1 (num / area) "
          "| best number candidate | best area candidate | permutation baseline: mean selected |",
          "|---|---|---|---|---|---|---|---|"]
    for k in ("trained", "untrained", "pca"):
        r = results[k]["regression"]
        pm = r["permutation_mean_selected"]
        L.append(f"| {_NAMES[k]} | {r['numerosity_units'] or '–'} | {r['area_units'] or '–'} | "
                 f"{' '.join(r['area_unit_signs']) or '–'} | {len(z[k]['numerosity_units'])} / {len(z[k]['area_units'])} | "
                 f"{_unit(r['best_numerosity_candidate'])} | {_unit(r['best_area_candidate'])} | "
                 f"{'–' if pm is None else f'{pm:.2f}'} |")
    L += ["", f"Fit on {r_tr['n_used']} images ({r_tr['n_excluded_zero_count']} with N = 0 excluded: log 0 is "
          "undefined; no epsilon). Trained network, units with the highest R²:", "",
          "| unit | R² | b_n ± se | b_a ± se |", "|---|---|---|---|"]
    for u in r_tr["top_r2_units"]:
        L.append(f"| z_{u['index']} | {u['r2']:.4f} | {u['b_n']:+.3f} ± {u['se_n']:.3f} | {u['b_a']:+.3f} ± {u['se_a']:.3f} |")
    L += ["", "## Figures", "",
          f"Fig. 2 style, reconstructions: ![reconstructions]({summary['figures']['reconstructions']})", "",
          f"Fig. 3 style, latent traversal (steps in standard deviations of each unit over the held-out set): "
          f"![traversal]({summary['figures']['traversal']})", ""]
    for k in ("trained", "untrained", "pca"):
        f = results[k]["regression"]["figures"]
        if "profiles" in f:
            L.append(f"Fig. 4 style, response profiles, {_NAMES[k]}: ![profiles {k}]({f['profiles']})")
            L.append("")
        L.append(f"Coefficients per unit, {_NAMES[k]}: ![coefficients {k}]({f['coefficients']})")
        L.append("")
    L += ["## Files", "",
          "`demo.json` (everything above), `table1.md`, `probe_{trained,untrained,pca}.json`, "
          "`regression_{trained,untrained,pca}.json` (every unit's R², b_n, b_a, standard errors), "
          "`latents_{trained,untrained}.h5` (`synthcount vae probe/regress` read them), `run/` (checkpoints, "
          "metrics.csv), `data/train`, `data/eval` (synthcount datasets).", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    return path
