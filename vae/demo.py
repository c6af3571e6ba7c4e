"""The whole story in one call: generate, train, encode, probe, regress, control, report.

:func:`run_demo` runs one *study* per seed (``DemoConfig.seeds``), all within one
wall-clock budget. A study makes, in ``out_dir`` (the first study with the plain
names below, study k > 0 with ``_seed{S}`` after each name, S its seed):

- ``data/train`` and ``data/eval``: synthcount datasets on the built-in assets, the
  paper's regression scene (section 4.4: 0-4 copies of one object, no overlap, sizes
  varying modestly) at 64x64, or with ``binary=True`` Stoianov & Zorzi-style binary
  images (48x48, 1-8 shapes, area independent of number); the eval set has its own
  seed, so it is held out from training;
- ``run/``: a small VAE trained on CPU with the **pixel** (BCE) loss, following the
  demo *recipe* (``RECIPES``): no ImageNet VGG-19 weights are available here, so the
  paper's perceptual loss cannot be used; training runs whole epochs until the
  study's share of the budget would be exceeded (or ``max_epochs``);
- latents of the eval set under the trained weights and under the run's initial,
  untrained weights (the control), and a PCA-of-pixels baseline (``vae.baselines``);
- the count probe (MLP and logistic) on a train/test split of the eval latents, and
  the Eq. 3 regression at R^2 >= 0.05 (with a permutation baseline) and >= 0.1, for
  every representation; ``probe_*.json``, ``regression_*.json`` and figures.

``demo.json`` keeps the first study's results under the keys a single-seed demo has
always had, and adds ``per_seed`` (one compact record per study) and ``summary``
(mean and range over seeds, and whether the trained model beats both controls in
every seed). ``report.md`` says it in words (:mod:`vae.report`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from synthcount._io import write_json_atomic
from synthcount._system import usable_cores
from synthcount.config import _check, _is_int  # the project's one 'name must be rule, got value' check
from synthcount.locks import hold_folder
from vae.baselines import pca_features
from vae.numbersense import demo_numbersense

__all__ = ["DemoConfig", "RECIPES", "CUTOUT_RECIPE", "SCALES", "run_demo", "pca_features", "study_seed"]

# (train_images, eval_images, max_epochs, probe_epochs, permutations) per scale
SCALES = {
    "full": dict(train_images=10000, eval_images=6000, max_epochs=200, probe_epochs=200, permutations=20),
    "quick": dict(train_images=256, eval_images=300, max_epochs=1, probe_epochs=15, permutations=3),
}

# Training recipes: the choices that depart from the paper's defaults, by name, so that
# demo.json can record which was used. ``tiny-pixel``: the tiny preset with the pixel
# BCE loss and the plain ELBO (alpha = beta = 1), the paper's augmentation. ``sz``: the same
# with the ``sz`` model (48x48, latent 32, translation-invariant encoder) for Stoianov &
# Zorzi-style binary images, chosen by the one-factor-at-a-time search in
# benchmarks/README.md ("Emergence: one factor at a time").
RECIPES: Dict[str, dict] = {
    "tiny-pixel": dict(model_preset="tiny", model_overrides={}, recon="pixel", pixel_loss="bce", alpha=1.0, beta=1.0,
                       lr=0.0015, augment=True,
                       departure="a CPU-sized model (the tiny preset at 64x64) and the pixel BCE loss with the plain "
                                 "ELBO instead of the paper's 161x161 network and VGG-19 perceptual loss; the encoder "
                                 "flattens its last feature map as the paper's does"),
    "tiny-mean": dict(model_preset="tiny", model_overrides={"enc_pool": "mean"}, recon="pixel", pixel_loss="bce",
                      alpha=1.0, beta=1.0, lr=0.0015, augment=True,
                      departure="a CPU-sized model (the tiny preset at 64x64) and the pixel BCE loss with the "
                                "plain ELBO instead of the paper's 161x161 network and VGG-19 perceptual loss, and an "
                                "encoder that averages its last feature map over positions (translation-invariant) "
                                "where the paper's flattens it"),
    "sz": dict(model_preset="sz", model_overrides={}, recon="pixel", pixel_loss="bce", alpha=1.0, beta=1.0,
               lr=0.0015, augment=True,
               departure="a CPU-sized model and the pixel BCE loss with the plain ELBO, as tiny-pixel, and an encoder "
                         "that averages its last feature map over positions (translation-invariant) where the "
                         "paper's flattens it"),
}

# The cut-out scenes' default, chosen by the worst seed of the one-factor-at-a-time table
# on those scenes (benchmarks/README.md, "Emergence on the cut-out scene").
CUTOUT_RECIPE = "tiny-mean"
# What that table found, said in every cut-out report beside the run's own figures.
CUTOUT_EVIDENCE = (
    "On this scene no recipe tried so far shows numerosity units. The one-factor-at-a-time search "
    "(benchmarks/README.md, \"Emergence on the cut-out scene\": the paper's flattening encoder and a mean-pooled "
    "one, the regression and the decorrelated scene, same and mixed objects, latent 32 and 64, KL weight 0.1, "
    "the perceptual loss with random VGG-19 layers, 48x48 input, 3 seeds a row where the budget allowed) found "
    "0 units at R² ≥ 0.05 in every seed of every row, trained, untrained and PCA alike, with the best "
    "number candidate at R² 0.03 at most (the paper: 0.06 ± 0.02). The mean-pooled encoder was chosen "
    "because its worst seed reads the count best: logistic probe 0.40 against 0.24 for PCA of the pixels (the "
    "flattening encoder: 0.27); its MLP probe stays within a few points of PCA's. The best number candidate moves "
    "the background's colour, not the objects (see the unit traversal below): with the pixel loss on photographs "
    "the code is spent on the background.")


@dataclass(frozen=True)
class DemoConfig:
    """One demo run (see :func:`run_demo`).

    Attributes
    ----------
    minutes : float > 0
        Wall-clock budget for the whole run, every seed together; training gets what
        generation and a reserve for the analysis leave (whole epochs only).
    seeds : int >= 1
        Whole studies (data, training, controls), with seeds ``seed``, ``seed + 1``, ...
        (each the same as a one-seed demo run with that ``--seed``).
    seed : int >= 0
        The first study's seed.
    binary : bool
        Stoianov & Zorzi-style binary images (48x48, N in 1..8) instead of a cut-out scene.
    scene : {"regression", "decorrelated"}
        Cut-out scene (64x64, 0-4 copies of one built-in object, no overlap):
        ``regression`` is the paper's section 4.4 set (A grows with N); ``decorrelated``
        draws the cumulative area independently of N, so Eq. 3 can tell number from area.
    recipe : str or None
        A name from ``RECIPES``; None = ``DEFAULT_RECIPE[binary]`` (``sz`` for binary
        images, ``CUTOUT_RECIPE`` for the cut-out scenes).
    quick : bool
        A much smaller run (one epoch on a few hundred images) for tests.
    train_images, eval_images, max_epochs : int, optional
        Scale knobs per study; defaults from ``SCALES["quick" if quick else "full"]``.
    batch_size : int >= 2
    device : {"cpu", "auto", "cuda"}
    threads : int >= 1, optional
        torch CPU threads (restored afterwards). Default: the cores this process may use.
        Measured for the tiny model on an idle 2-core machine: 338 img/s with one
        thread, 521 with two; on cores shared with other work one thread can be faster.
    progress : bool
        Stage messages and progress bars on stderr.
    """

    minutes: float = 9.0
    seeds: int = 1
    seed: int = 0
    binary: bool = False
    scene: str = "regression"
    recipe: Optional[str] = None
    quick: bool = False
    train_images: Optional[int] = None
    eval_images: Optional[int] = None
    max_epochs: Optional[int] = None
    batch_size: int = 64
    device: str = "cpu"
    threads: Optional[int] = None
    progress: bool = True

    def __post_init__(self) -> None:
        _check(isinstance(self.minutes, (int, float)) and not isinstance(self.minutes, bool) and self.minutes > 0,
               "minutes", "> 0", self.minutes)
        for name, lo in (("seeds", 1), ("seed", 0), ("batch_size", 2), ("train_images", 2), ("eval_images", 30),
                         ("max_epochs", 1), ("threads", 1)):
            v = getattr(self, name)
            _check(v is None or (_is_int(v) and v >= lo), name, f"an integer >= {lo}", v)
        _check(self.scene in ("regression", "decorrelated"), "scene", "'regression' or 'decorrelated'", self.scene)
        _check(self.recipe is None or self.recipe in RECIPES, "recipe", f"one of {sorted(RECIPES)}", self.recipe)
        _check(self.device in ("cpu", "auto", "cuda"), "device", "'cpu', 'auto' or 'cuda'", self.device)

    @property
    def recipe_name(self) -> str:
        return self.recipe or ("sz" if self.binary else CUTOUT_RECIPE)

    @property
    def scale(self) -> dict:
        s = dict(SCALES["quick" if self.quick else "full"])
        s.update({k: getattr(self, k) for k in ("train_images", "eval_images", "max_epochs")
                  if getattr(self, k) is not None})
        return s

    @property
    def scene_preset(self) -> str:
        return "binary" if self.binary else self.scene

    @property
    def image_size(self) -> tuple:
        return (48, 48) if self.binary else (64, 64)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def study_seed(seed: int, name: str) -> int:
    """A seed for one named stream of a study, independent of every other name and seed.

    Stream ``demo.{name}`` of :mod:`vae.seeds`, as a 31-bit int (synthcount and the
    split take plain ints): the train and eval sets of study ``seed`` never share a
    stream with any set of study ``seed + 1`` (``seed + 1`` would).
    """
    from vae import seeds

    return int(seeds.sequence(seed, f"demo.{name}").generate_state(1)[0] >> 1)


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


def run_demo(out_dir: str, config: Optional[DemoConfig] = None, **kwargs) -> dict:
    """Run the demo into ``out_dir`` and return its summary (also ``demo.json``).

    Parameters
    ----------
    out_dir : str
        Created if needed; must not already hold a demo (``report.md``).
    config : DemoConfig, optional
        Everything about the run; or give its fields as keyword arguments
        (``run_demo(out, binary=True, seeds=2, minutes=20)``).

    Returns
    -------
    dict
        The contents of ``demo.json``: ``settings``, ``data``, ``training``,
        ``timings``, ``results`` (per representation ``trained``, ``untrained``,
        ``pca``: probe and regression) for the first study, ``per_seed`` and
        ``summary``.
    """
    import torch

    if config is not None and kwargs:
        raise ValueError("give either a DemoConfig or keyword arguments, not both")
    cfg = config if config is not None else DemoConfig(**kwargs)
    _check_out_dir(out_dir)
    old_threads = torch.get_num_threads()
    with hold_folder(out_dir, "demo"):  # one demo per folder; the kernel drops the lock if the holder dies
        _check_out_dir(out_dir)  # again under the lock
        torch.set_num_threads(cfg.threads or usable_cores())
        try:
            return _run(out_dir, cfg)
        finally:
            torch.set_num_threads(old_threads)


def _check_out_dir(out_dir: str) -> None:
    """Refuse a folder holding a finished demo, or the data and runs of one that was
    interrupted (a rerun would stop at its training run, whose folder is taken)."""
    if os.path.exists(os.path.join(out_dir, "report.md")):
        raise ValueError(f"out_dir {out_dir!r} already holds a demo (report.md); choose another folder")
    if not os.path.isdir(out_dir):
        return
    left = sorted(n for n in os.listdir(out_dir) if n in ("data", "run", "demo.json")
                  or n.startswith(("data_seed", "run_seed")))
    if left:
        raise ValueError(f"out_dir {out_dir!r} holds an interrupted demo ({', '.join(left)}; no report.md); "
                         "remove it or choose another folder")


def _generate(path: str, preset: str, n: int, seed: int, size, progress: bool) -> dict:
    import synthcount
    from synthcount.generate import generate_dataset

    over = {} if size is None else {"size": size}
    cfg = synthcount.DatasetConfig(scene=synthcount.preset(preset, **over), num_images=n,
                                   shard_size=min(n, 1000), seed=seed)
    res = generate_dataset(path, cfg, workers=max(1, min(usable_cores(), cfg.num_shards)), progress=progress)
    return {"path": path, "preset": preset, "num_images": n, "seed": seed, "seconds": round(res.seconds, 2),
            "corr_log_n_log_a": res.corr_log_n_log_a}


def _train_config(cfg: DemoConfig, seed: int):
    from vae.config import TrainConfig

    r = RECIPES[cfg.recipe_name]
    return TrainConfig(preset=r["model_preset"], model_overrides={"image_size": cfg.image_size, **r["model_overrides"]},
                       recon=r["recon"], pixel_loss=r["pixel_loss"], alpha=r["alpha"], beta=r["beta"], lr=r["lr"],
                       augment=r["augment"], batch_size=cfg.batch_size, seed=seed, workers=0, device=cfg.device,
                       recon_every=0, epochs=1)


def _train(data: str, run_dir: str, tcfg, deadline: float, max_epochs: int, n_train: int, log: _Log,
           progress: bool) -> dict:
    """Whole epochs, one ``vae.train.train`` call, until the next one would end after ``deadline``."""
    from vae.train import train

    res = train(data, run_dir, tcfg.replace(epochs=max_epochs), progress=progress, deadline=deadline)
    if res["stopped_early"]:
        log(f"training stopped after {res['epochs_done']} epochs: another one would pass the time budget")
    return {"epochs": res["epochs_done"], "stopped_by_budget": res["stopped_early"],
            "images_seen": res["epochs_done"] * n_train, "last": res["last"], "best_test_loss": res["best_test_loss"]}


def _analyse(name: str, mu: np.ndarray, count: np.ndarray, area: np.ndarray, split, paths, *,
             seed: int, probe_epochs: int, permutations: int, log: _Log, progress: bool) -> dict:
    from vae import figures, probe, regress

    tr, te = split
    p = probe.probe_arrays(mu[tr], count[tr], mu[te], count[te], seed=seed, max_epochs=probe_epochs,
                           progress=progress)
    # Table 1's classes merge N >= 4; the exact count (every N its own class) is read out as well
    p["exact_count"] = probe.exact_count_probe(mu[tr], count[tr], mu[te], count[te])
    p = probe.json_clean(p)
    write_json_atomic(paths(f"probe_{name}", ".json"), p)
    r = regress.regression_arrays(mu, count, area, permutations=permutations, seed=seed)
    # figures: {name}{suffix}_coefficients.png etc.
    r["figures"] = figures.regression_figures(mu, count, area, r, os.path.dirname(paths(name, "")),
                                              prefix=os.path.basename(paths(name, "_")))
    # Stoianov & Zorzi's R^2 >= 0.1: the same fit, selected again (no refit)
    fit = {k: np.array([u[k] for u in r["units"]]) for k in ("r2", "b_n", "b_a")}
    nu, au = regress.select_units(fit["r2"], fit["b_n"], fit["b_a"], r2_min=0.1, coef_cut=r["coef_cut"])
    r["at_r2_0.1"] = {"numerosity_units": nu.tolist(), "area_units": au.tolist()}
    write_json_atomic(paths(f"regression_{name}", ".json"), r)
    log(f"{name}: probe mean per-class accuracy MLP {p['mean_accuracy']:.3f}, logistic "
        f"{p['logistic']['mean_accuracy']:.3f}, exact-count logistic {p['exact_count']['mean_accuracy']:.3f}; "
        f"numerosity units {len(r['numerosity_units'])} at R^2 >= 0.05, "
        f"{len(nu)} at 0.1")
    return {"probe": p, "regression": r}


def _study(out_dir: str, cfg: DemoConfig, k: int, seed: int, deadline: float, log: _Log) -> dict:
    """One whole study (data, training, controls, analysis, figures) for one seed."""
    from vae import figures
    from vae.checkpoint import load_model
    from vae.data import ShardImages, split_indices
    from vae.device import resolve_device
    from vae.encode import encode_model, record_properties, write_latents

    suffix = "" if k == 0 else f"_seed{seed}"

    def paths(stem: str, ext: str) -> str:
        return os.path.join(out_dir, f"{stem}{suffix}{ext}")

    scale, progress, img_size = cfg.scale, cfg.progress, cfg.image_size
    dev = resolve_device(cfg.device)
    t0 = time.monotonic()
    timings: Dict[str, float] = {}
    tag = f"study {k + 1}/{cfg.seeds} (seed {seed})"

    log(f"{tag} 1/5 generating {scale['train_images']} training and {scale['eval_images']} held-out images "
        f"(preset {cfg.scene_preset!r}, built-in assets)")
    size = None if cfg.binary else img_size
    data_dir = os.path.join(out_dir, "data" + suffix)
    data_train = _generate(os.path.join(data_dir, "train"), cfg.scene_preset, scale["train_images"],
                           study_seed(seed, "train-data"), size, progress)
    data_eval = _generate(os.path.join(data_dir, "eval"), cfg.scene_preset, scale["eval_images"],
                          study_seed(seed, "eval-data"), size, progress)
    timings["generate_s"] = round(time.monotonic() - t0, 1)

    tcfg = _train_config(cfg, seed)
    # reserve for encoding, probes, regressions and figures: measured 16 s at the full scale (6000 images)
    # on a shared 2-core machine with one thread; ~3x that for safety
    reserve = 10.0 if cfg.quick else 20.0 + scale["eval_images"] / 200.0
    reserve += 15.0 if cfg.binary and not cfg.quick else 0.0  # number sense: 6 s measured for 6000 images, load 5
    t_train = time.monotonic()
    log(f"{tag} 2/5 training ({cfg.recipe_name} recipe: {tcfg.preset} model, pixel BCE, alpha {tcfg.alpha:g}, "
        f"beta {tcfg.beta:g}, lr {tcfg.lr:g}, augment {tcfg.augment}, batch {cfg.batch_size}, device {dev}) for up to "
        f"{scale['max_epochs']} epochs within {max(0.0, deadline - reserve - t_train) / 60:.1f} min")
    run_dir = os.path.join(out_dir, "run" + suffix)
    n = scale["train_images"]
    n_train = n - min(n - 1, max(1, round(n * tcfg.test_fraction)))  # vae.data.split_indices' training share
    tr = _train(data_train["path"], run_dir, tcfg, deadline - reserve, scale["max_epochs"], n_train, log, progress)
    timings["train_s"] = round(time.monotonic() - t_train, 1)

    log(f"{tag} 3/5 encoding the held-out set with the trained and the untrained (initial) weights")
    t_enc = time.monotonic()
    ds = ShardImages(data_eval["path"], train=False, image_size=img_size)
    models, lat = {}, {}
    for name, which in (("trained", "last"), ("untrained", "init")):
        model, mcfg, meta = load_model(run_dir, which)
        models[name] = model.to(dev)
        lat[name] = encode_model(model, ds, batch_size=256, device=dev, progress=progress, desc=f"encode {name}")
        lat[name].update(record_properties(ds.ds, lat[name]["index"]))  # visual properties for vae tuning etc.
        write_latents(paths(f"latents_{name}", ".h5"), lat[name],
                      {"run_dir": os.path.abspath(run_dir), "checkpoint": which, "checkpoint_path": meta["path"],
                       "epoch": meta["epoch"], "dataset": os.path.abspath(data_eval["path"]), "data_kind": "shards",
                       "split": "all", "image_size": list(img_size), "latent_dim": int(mcfg.latent_dim),
                       "num_images": len(ds)})
    count, area = lat["trained"]["count"], lat["trained"]["cumulative_area"]
    images = ds.ds.read_images(np.arange(len(ds)))
    reps = {"trained": lat["trained"]["mu"], "untrained": lat["untrained"]["mu"],
            "pca": pca_features(images, int(mcfg.latent_dim))}
    timings["encode_s"] = round(time.monotonic() - t_enc, 1)

    log(f"{tag} 4/5 count probe and Eq. 3 regression for each representation (trained, untrained, PCA of pixels)")
    t_an = time.monotonic()
    # two thirds of the held-out images train the probe, a third tests it (one split for every representation)
    split = split_indices(len(count), 1 / 3, study_seed(seed, "probe-split"))
    results = {name: _analyse(name, mu, count, area, split, paths, seed=seed, probe_epochs=scale["probe_epochs"],
                              permutations=scale["permutations"], log=log, progress=progress)
               for name, mu in reps.items()}
    # the binary demo's number sense: Weber fraction, selective units, DeWind axes (vae.numbersense)
    ns = demo_numbersense(reps, lat["trained"], paths, seed=seed, quick=cfg.quick) if cfg.binary else None
    timings["analysis_s"] = round(time.monotonic() - t_an, 1)

    log(f"{tag} 5/5 figures")
    figs = {}
    pick = np.arange(min(8, len(images)))
    figs["reconstructions"] = os.path.basename(figures.reconstruction_grid(
        models["trained"], images[pick], paths("fig2_reconstructions", ".png"), device=dev,
        title="Held-out originals (top) and reconstructions from mu (bottom), trained VAE"))
    rows = figures.profile_units(results["trained"]["regression"], max_units=4)
    if not rows:  # nothing selected and no candidate: show the units with the highest R^2
        rows = [(u["index"], f"z_{u['index']}") for u in results["trained"]["regression"]["top_r2_units"][:3]]
    z_std = lat["trained"]["mu"].std(axis=0)
    # the traversal starts from an image with N = 2 when there is one (room to go up and down)
    start = int(np.flatnonzero(count == 2)[0]) if np.any(count == 2) else 0
    figs["traversal"] = os.path.basename(figures.traversal_grid(
        models["trained"], images[start], [r[0] for r in rows], paths("fig3_traversal", ".png"),
        scale=z_std, device=dev, labels=[r[1].split(":")[0] for r in rows]))
    # the paper's Fig. 3: the best number and the best area candidate moved from the mean code (every other
    # unit at its mean over the held-out set), so a reader sees what the unit does
    reg = results["trained"]["regression"]
    picks = [(kind, u) for kind, u in (("number", reg["best_numerosity_candidate"]),
                                       ("area", reg["best_area_candidate"])) if u is not None]
    if picks:
        figs["unit_traversal"] = os.path.basename(figures.traversal_grid(
            models["trained"], None, [u["index"] for _, u in picks], paths("fig3_units", ".png"), scale=z_std,
            base=lat["trained"]["mu"].mean(axis=0), device=dev,
            labels=[f"{kind}: z_{u['index']}\nR² {u['r2']:.2f}\nb_n {u['b_n']:+.2f} b_a {u['b_a']:+.2f}"
                    for kind, u in picks],
            title=f"seed {seed}: best number and area candidates, from the mean code, steps in sd of each unit"))
    timings["total_s"] = round(time.monotonic() - t0, 1)
    return {"seed": seed, "suffix": suffix, "device": str(dev), "latent_dim": int(mcfg.latent_dim),
            "train_config": tcfg.to_dict(),
            "data": {"train": data_train, "eval": data_eval, "eval_count_histogram": np.bincount(count).tolist(),
                     "probe_split": {"train": int(split[0].size), "test": int(split[1].size)}},
            "training": tr, "timings": timings, "results": results, "figures": figs, "numbersense": ns}


_PROBE_KEYS = ("ap_voc11", "ap", "accuracy", "mean_ap_voc11", "mean_ap", "mean_accuracy", "chance")
_REGRESSION_KEYS = ("numerosity_units", "area_units", "r2_min", "n_used", "n_excluded_zero_count", "corr_log_n_log_a",
                    "permutation_mean_selected", "best_numerosity_candidate", "best_area_candidate",
                    "area_unit_signs", "at_r2_0.1", "top_r2_units", "figures")


def _run(out_dir: str, cfg: DemoConfig) -> dict:
    import torch

    from vae import report

    log = _Log(cfg.progress)
    deadline = log.t0 + 60.0 * cfg.minutes
    os.makedirs(out_dir, exist_ok=True)
    studies = []
    for k in range(cfg.seeds):
        # each remaining study gets an equal share of the time left
        now = time.monotonic()
        studies.append(_study(out_dir, cfg, k, cfg.seed + k, now + (deadline - now) / (cfg.seeds - k), log))
    first = studies[0]
    per_seed = [report.seed_record(s) for s in studies]
    summary = {
        "settings": {"binary": cfg.binary, "preset": cfg.scene_preset, "image_size": list(cfg.image_size),
                     "seed": cfg.seed, "seeds": cfg.seeds, "recipe": cfg.recipe_name,
                     "recipe_settings": RECIPES[cfg.recipe_name], "model_preset": first["train_config"]["preset"],
                     "latent_dim": first["latent_dim"], "recon": "pixel (BCE)", "alpha": first["train_config"]["alpha"],
                     "beta": first["train_config"]["beta"], "batch_size": cfg.batch_size,
                     "device": first["device"],
                     "torch_threads": torch.get_num_threads(), "minutes_budget": cfg.minutes, "quick": cfg.quick,
                     "config": cfg.to_dict(), **cfg.scale},
        "data": first["data"],
        "training": first["training"],
        "timings": {**first["timings"], "all_seeds_total_s": round(log.elapsed(), 1)},
        "results": {k: {"probe": {key: v["probe"][key] for key in _PROBE_KEYS + ("logistic", "exact_count")},
                        "regression": {key: v["regression"][key] for key in _REGRESSION_KEYS}}
                    for k, v in first["results"].items()},
        "figures": first["figures"],
        "per_seed": per_seed,
        "summary": report.summarize_seeds(per_seed, binary=cfg.binary),
        "numbersense": [{"seed": s["seed"], **s["numbersense"]} for s in studies if s["numbersense"]],
    }
    write_json_atomic(os.path.join(out_dir, "demo.json"), summary)
    report.write_report(out_dir, summary, studies)
    log(f"done in {log.elapsed() / 60:.1f} min: {os.path.join(out_dir, 'report.md')}")
    return summary
