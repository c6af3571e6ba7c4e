"""Does a numerosity code emerge? One training run of a demo scene with one factor changed.

``python -m benchmarks.emergence --out F.json [--preset binary|regression|decorrelated]
[--set FIELD=VALUE ...] [--scene FIELD=VALUE ...]`` trains the demo's VAE on
Stoianov & Zorzi-style binary images (``binary``, the default) or on the cut-out
scenes of the default demo (64x64 unless ``--scene size=...``) for ``--minutes`` and,
after every epoch, encodes a held-out set and counts the Eq. 3 numerosity units
(R^2 >= 0.05 and >= 0.1, |b_a| < 0.1) and area units, with the best candidate. At the
end the same is done for the untrained (initial) weights and PCA of the pixels, and the
count probes (the exact-count logistic read-out, and the demo's Table 1 MLP and
logistic probes with classes 0-4+) are fitted on each representation.

Analysis-side factors are measured on every checkpoint of the same run (no
retraining): the regression on mu or on one sample z ~ q(z|x), on the first 1,000 /
3,000 / all held-out images, with A measured as the cumulative visible object
area (the label) or as the summed pixel intensity of the image, and with N = 0
excluded (the default) or log(N + 1), log(A + 1) (``mu_plus1``).

Training-side factors go through ``--set`` (TrainConfig fields, or ``model.FIELD`` for
ModelConfig overrides, e.g. ``model.latent_dim=16``) and ``--scene`` (SceneConfig
fields of the chosen preset, e.g. ``max_count=4`` or ``mode=mixed``). ``--table`` prints
one row per result file, ``--seed-table`` one row per factor over its seeds (files
named ``ROW_s{SEED}.json``). The tables are in benchmarks/README.md ("Emergence: one
factor at a time", and "... on the cut-out scene").
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

import numpy as np

from benchmarks._common import emit, format_table, machine
from synthcount._io import write_json_atomic


def _parse(items):
    out = {}
    for it in items or ():
        k, _, v = it.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _units(z, count, area, r2_min, log_n="exclude-zero"):
    from vae import regress

    r = regress.regression_arrays(z, count, area, r2_min=r2_min, permutations=0, log_n=log_n)
    b, ba = r["best_numerosity_candidate"], r["best_area_candidate"]
    return {"numerosity": len(r["numerosity_units"]), "area": len(r["area_units"]),
            "area_opposite_pair": r["area_units_opposite_signs"], "area_signs": "".join(r["area_unit_signs"]),
            "best": None if b is None else {k: round(b[k], 4) for k in ("index", "r2", "b_n", "b_a")},
            "best_area": None if ba is None else {k: round(ba[k], 4) for k in ("index", "r2", "b_n", "b_a")}}


def analyse(mu, sigma, count, area, pixsum, rng) -> dict:
    """Unit counts under every analysis-side variant."""
    out = {}
    n = len(count)
    for name, z, a, k in (("mu", mu, area, n), ("sample", mu + sigma * rng.standard_normal(mu.shape), area, n),
                          ("mu_1000", mu, area, min(1000, n)), ("mu_3000", mu, area, min(3000, n)),
                          ("mu_pixsum", mu, pixsum, n)):
        out[name] = {f"r2_{t}": _units(z[:k], count[:k], a[:k], t) for t in (0.05, 0.1)}
    out["mu_plus1"] = {f"r2_{t}": _units(mu, count, area, t, "plus1") for t in (0.05, 0.1)}
    return out


def table1_probes(z, count, seed=0) -> dict:
    """The demo's Table 1 probes (MLP and logistic, classes 0-4+), same split as ``exact_probe``."""
    from vae.probe import probe_arrays

    te = np.ones(len(count), bool)
    te[::3] = False
    p = probe_arrays(z[~te], count[~te], z[te], count[te], seed=seed, max_epochs=100)
    return {"mlp": round(p["mean_accuracy"], 4), "logistic": round(p["logistic"]["mean_accuracy"], 4)}


def exact_probe(z, count) -> float:
    """Exact-count logistic read-out (vae.probe.exact_count_probe): every third image trains, the rest test."""
    from vae.probe import exact_count_probe

    te = np.ones(len(count), bool)
    te[::3] = False
    return round(exact_count_probe(z[~te], count[~te], z[te], count[te])["mean_accuracy"], 4)


def _data_dir(root: str, scene_over: dict, split: str, n: int, seed: int) -> str:
    """Where a generated set lives: one folder per scene overrides, split, size and seed (reused)."""
    tag = "-".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in sorted(scene_over.items()))
    return os.path.join(root, f"{tag or 'default'}-{split}-{n}-s{seed}")


def rescore(path: str) -> None:
    """Recompute the final probes of a result file from its run's checkpoints (``PATH.run``)."""
    from vae.baselines import pca_features
    from vae.checkpoint import load_model
    from vae.data import ShardImages
    from vae.encode import encode_model

    d = json.load(open(path))
    size = tuple(d["train_config"]["model_overrides"]["image_size"])
    over = d["scene_overrides"] if d.get("preset", "binary") == "binary" else {"preset": d["preset"],
                                                                             **d["scene_overrides"]}
    ds = ShardImages(_data_dir("out/emergence-data", over, "eval", d["eval_images"], d["seed"] + 1),
                     image_size=size)
    reps = {}
    for name, which in (("trained", "last"), ("untrained", "init")):
        model, _, _ = load_model(path + ".run", which)
        lat = encode_model(model, ds, progress=False)
        reps[name] = lat["mu"]
    reps["pca"] = pca_features(ds.ds.read_images(np.arange(len(ds))), reps["trained"].shape[1])
    for name, z in reps.items():
        d["final"][name]["linear_probe"] = exact_probe(z, lat["count"])
    d["probe"] = "exact-count logistic (vae.probe.exact_count_probe)"
    write_json_atomic(path, d)


def table(paths) -> str:
    """Markdown rows, one per result file: trained units at the end and over the last half of the epochs."""
    rows = ["| run | change | epochs (images seen) | trained: units R² ≥ 0.05 / 0.1, last epoch | units 0.1, range "
            "over the 2nd half | best number R² (b_a) | untrained units 0.1 | exact-N probe trained / untrained / "
            "PCA | mu vs sample, 1,000 vs 6,000 images, A as pixel sum (units 0.1) |", "|" + "---|" * 9]
    for p in paths:
        d = json.load(open(p))
        ep, f = d["epochs"], d["final"]
        last = ep[-1]
        half = [e["mu"]["r2_0.1"]["numerosity"] for e in ep[len(ep) // 2:]]
        b = last["mu"]["r2_0.05"]["best"]
        best = "none" if b is None else f"{b['r2']:.3f} ({b['b_a']:+.3f})"
        change = ", ".join(f"{k}={v}" for k, v in d.get("changes", {}).items()) or "—"
        var = " / ".join(str(last[k]["r2_0.1"]["numerosity"]) for k in ("mu", "sample", "mu_1000", "mu_pixsum"))
        rows.append(f"| {os.path.basename(p)[:-5]} | {change} | {len(ep)} ({ep[-1]['images_seen']:,.0f}) | "
                    f"{last['mu']['r2_0.05']['numerosity']} / {last['mu']['r2_0.1']['numerosity']} | "
                    f"{min(half)}–{max(half)} | {best} | "
                    f"{f['untrained']['units']['r2_0.1']['numerosity']} | "
                    f"{f['trained']['linear_probe']:.3f} / {f['untrained']['linear_probe']:.3f} / "
                    f"{f['pca']['linear_probe']:.3f} | {var} |")
    return "\n".join(rows)


def _row_name(path: str) -> str:
    base = os.path.basename(path)[:-5]
    stem, _, seed = base.rpartition("_s")
    return stem if stem and seed.isdigit() else base


def seed_table(paths) -> str:
    """Markdown, one row per factor (files ``ROW_s{SEED}.json``), every figure given per seed (``a, b, c``).

    Units: Eq. 3 numerosity units of mu (|b_a| < 0.1) at R² >= 0.05 and >= 0.1, trained /
    untrained / PCA; area units at 0.05 and whether they include an opposite-sign pair;
    the best number candidate at the last epoch; probes (mean per-class accuracy) as
    trained / untrained / PCA, the worst seed's figure first, then the mean.
    """
    rows = {}
    for p in paths:
        rows.setdefault(_row_name(p), []).append(json.load(open(p)))

    def per(ds, f):
        return ", ".join(str(f(d)) for d in ds)

    def probe(ds, key):
        out = []
        for rep in ("trained", "untrained", "pca"):
            v = [key(d["final"][rep]) for d in ds]
            out.append(f"{min(v):.3f} ({np.mean(v):.3f})")
        return " / ".join(out)

    def best(d):
        b = d["final"]["trained"]["units"]["r2_0.05"]["best"]
        return "none" if b is None else f"{b['r2']:.3f} ({b['b_n']:+.2f}, {b['b_a']:+.2f})"

    hdr = ("| row | change | seeds | epochs | num. units 0.05: trained; untrained; PCA | num. units 0.1: trained; "
           "untrained; PCA | area units 0.05 (opposite pair) | best number unit R² (b_n, b_a) | "
           "MLP probe worst (mean): trained / untrained / PCA | logistic probe | exact-count probe | "
           "units 0.05 with log(N+1) / sample / A = pixel sum |")
    out = [hdr, "|" + "---|" * 12]
    for name, ds in rows.items():
        ds.sort(key=lambda d: d["seed"])
        f = [d["final"] for d in ds]
        u = {t: "; ".join(per(f, lambda x, r=r, t=t: x[r]["units"][f"r2_{t}"]["numerosity"])
                          for r in ("trained", "untrained", "pca")) for t in ("0.05", "0.1")}
        area = per(f, lambda x: f"{x['trained']['units']['r2_0.05']['area']}"
                                f"{' (pair)' if x['trained']['units']['r2_0.05']['area_opposite_pair'] else ''}")
        var = " / ".join(per(f, lambda x, k=k: x["trained"][k]["r2_0.05"]["numerosity"])
                         for k in ("units_plus1", "units_sample", "units_pixsum"))
        change = ", ".join(f"{k}={v}" for k, v in ds[0].get("changes", {}).items()) or "—"
        out.append(f"| {name} | {ds[0].get('preset', 'binary')}{': ' + change if change != '—' else ''} | "
                   f"{per(ds, lambda d: d['seed'])} | {per(ds, lambda d: len(d['epochs']))} | {u['0.05']} | "
                   f"{u['0.1']} | {area} | {per(ds, best)} | "
                   f"{probe(ds, lambda x: x['table1_probe']['mlp'])} | "
                   f"{probe(ds, lambda x: x['table1_probe']['logistic'])} | "
                   f"{probe(ds, lambda x: x['linear_probe'])} | {var} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", nargs="+", help="Print the markdown table of these result files and exit.")
    ap.add_argument("--rescore", nargs="+", help="Recompute the final probes of these result files and exit.")
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="Seconds-long smoke run (64 / 60 images, 1 epoch).")
    ap.add_argument("--data", default="out/emergence-data", help="Folder for the generated sets (reused).")
    ap.add_argument("--minutes", type=float, default=5.0, help="Training budget (whole epochs).")
    ap.add_argument("--epochs", type=int, default=None,
                    help="Train exactly this many epochs (images seen fixed; --minutes ignored).")
    ap.add_argument("--train-images", type=int, default=10000)
    ap.add_argument("--eval-images", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="TrainConfig FIELD=VALUE or model.FIELD=VALUE")
    ap.add_argument("--preset", default="binary", choices=("binary", "regression", "decorrelated"),
                    help="Scene preset: the binary demo's, or a cut-out scene of the default demo (64x64).")
    ap.add_argument("--scene", nargs="*", default=[], help="SceneConfig FIELD=VALUE over the preset")
    ap.add_argument("--seed-table", nargs="+", help="Print the per-factor table over seeds of these files and exit.")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    if args.seed_table:
        print(seed_table(args.seed_table))
        return 0
    if args.rescore:
        for p in args.rescore:
            rescore(p)
        return 0
    if not args.out:
        ap.error("--out is required")
    if args.quick:
        args.train_images, args.eval_images, args.epochs = 64, 60, 1

    import torch

    import synthcount
    from synthcount.generate import generate_dataset
    from vae.checkpoint import load_model
    from vae.config import TrainConfig
    from vae.data import ShardImages
    from vae.demo import pca_features
    from vae.encode import encode_model
    from vae.train import train

    torch.set_num_threads(args.threads)
    scene_over = _parse(args.scene)
    tr_over = _parse(args.set)
    model_over = {k[6:]: tuple(v) if isinstance(v, list) else v for k, v in tr_over.items() if k.startswith("model.")}
    tr_over = {k: v for k, v in tr_over.items() if not k.startswith("model.")}
    if args.preset != "binary":
        scene_over.setdefault("size", (64, 64))  # the cut-out demo's size
    scene = synthcount.preset(args.preset, **{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in scene_over.items()})
    img_size = tuple(model_over.pop("image_size", scene.size))
    paths = {}
    for split, n, seed in (("train", args.train_images, args.seed), ("eval", args.eval_images, args.seed + 1)):
        p = _data_dir(args.data, {"preset": args.preset, **scene_over} if args.preset != "binary" else scene_over,
                      split, n, seed)
        if not os.path.exists(os.path.join(p, "manifest.json")):
            cfg = synthcount.DatasetConfig(scene=scene, num_images=n, shard_size=min(n, 1000), seed=seed)
            generate_dataset(p, cfg, workers=2, progress=False)
        paths[split] = p

    base = dict(preset="tiny", model_overrides={"image_size": img_size}, recon="pixel", pixel_loss="bce", beta=1.0,
                batch_size=64, seed=args.seed, workers=0, device="cpu", recon_every=0, epochs=1)
    base.update(tr_over)
    base["model_overrides"] = {**base["model_overrides"], **model_over}
    cfg = TrainConfig(**base)
    run_dir = args.out + ".run"
    if os.path.exists(run_dir):
        import shutil
        shutil.rmtree(run_dir)

    n_train = len(ShardImages(paths["train"], image_size=img_size)) * (1 - cfg.test_fraction)
    ds = ShardImages(paths["eval"], train=False, image_size=img_size)
    images = ds.ds.read_images(np.arange(len(ds)))
    pixsum = images.astype(np.float64).sum(axis=(1, 2, 3)) / 3.0 / 255.0
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes
    rows, last, epoch = [], None, 0
    while True:
        e0 = time.monotonic()
        if args.epochs is not None and epoch >= args.epochs:
            break
        if args.epochs is None and epoch and e0 + 1.1 * last > deadline:
            break
        res = train(paths["train"], run_dir, cfg.replace(epochs=epoch + 1), resume=epoch > 0, progress=False)
        epoch += 1
        last = time.monotonic() - e0
        model, _, _ = load_model(run_dir, "last")
        lat = encode_model(model, ds, progress=False)
        row = {"epoch": epoch, "elapsed_s": round(time.monotonic() - t0, 1),
               "images_seen": epoch * n_train,
               "loss": round(res["last"]["loss"], 2), "kl": round(res["last"]["kl"], 2),
               "img_per_s": round(res["last"]["images_per_s"]),
               "active_units": int(np.sum(lat["mu"].std(0) > 0.1)),
               **analyse(lat["mu"], lat["sigma"], lat["count"], lat["cumulative_area"], pixsum, rng)}
        rows.append(row)
        m = row["mu"]
        print(f"epoch {epoch} {row['elapsed_s']:.0f}s loss {row['loss']} kl {row['kl']} active {row['active_units']} "
              f"num@.05 {m['r2_0.05']['numerosity']} num@.1 {m['r2_0.1']['numerosity']} best {m['r2_0.05']['best']}",
              file=sys.stderr, flush=True)
    count, area = lat["count"], lat["cumulative_area"]
    reps = {"trained": lat["mu"]}
    m0, _, _ = load_model(run_dir, "init")
    lat0 = encode_model(m0, ds, progress=False)
    reps["untrained"] = lat0["mu"]
    reps["pca"] = pca_features(images, lat["mu"].shape[1])
    final = {}
    for k, z in reps.items():
        sig = lat["sigma"] if k == "trained" else (lat0["sigma"] if k == "untrained" else np.zeros_like(z))
        an = analyse(z, sig, count, area, pixsum, rng)
        final[k] = {"units": an["mu"], "units_plus1": an["mu_plus1"], "units_pixsum": an["mu_pixsum"],
                    "units_sample": an["sample"], "linear_probe": exact_probe(z, count),
                    "table1_probe": table1_probes(z, count, seed=args.seed)}
    out = {"benchmark": "emergence", "quick": args.quick, "machine": machine(), "train_config": cfg.to_dict(),
           "preset": args.preset, "scene_overrides": scene_over,
           "changes": {**_parse(args.scene), **_parse(args.set)},
           "train_images": args.train_images, "eval_images": args.eval_images,
           "minutes": args.minutes, "seed": args.seed, "epochs": rows, "final": final,
           "chance": round(1 / len(np.unique(count)), 4),
           "probe": "exact-count logistic (vae.probe.exact_count_probe)"}
    rows = [{"representation": k, "units_0.05": v["units"]["r2_0.05"]["numerosity"],
             "units_0.1": v["units"]["r2_0.1"]["numerosity"], "area_units_0.1": v["units"]["r2_0.1"]["area"],
             "exact_count_probe": v["linear_probe"]} for k, v in final.items()]
    title = f"after {epoch} epochs ({out['epochs'][-1]['images_seen']:,.0f} images seen); chance {out['chance']}"
    emit(out, [format_table(rows, list(rows[0]), title=title)], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
