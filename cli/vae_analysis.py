"""``synthcount vae encode | probe | regress | tuning | compare`` (thin over vae.encode, vae.probe,
vae.regress, vae.numbersense).

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr, never a
traceback); 1 the run failed.
"""

from __future__ import annotations

import click

from ._errors import fail

__all__ = ["COMMANDS", "encode", "probe", "regress", "tuning", "compare"]


def _run(fn, *args, **kwargs):
    """Call into the library: ValueError is bad input (2), anything else a failed run (1)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        fail(e, 2)
    except (OSError, RuntimeError) as e:
        fail(f"{type(e).__name__}: {e}", 1)


def _which(text: str):
    if text in ("last", "init"):
        return text
    try:
        ep = int(text)
    except ValueError:
        raise click.BadParameter(f"must be last, init or an epoch number, got {text!r}", param_hint="--which") from None
    if ep < 0:
        raise click.BadParameter(f"an epoch number must be >= 0, got {ep}", param_hint="--which")
    return ep


def _hidden(text: str):
    if text.strip() in ("", "0", "none"):
        return ()
    return _positive_ints(text, "--hidden", "comma-separated positive widths such as 160,160 (or 'none')")


def _positive_ints(text: str, flag: str, what: str) -> tuple:
    """``"8,16"`` -> (8, 16); anything else is a usage error naming ``flag``."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise click.BadParameter(f"must be {what}, got {text!r}", param_hint=flag)
    return vals


@click.command("encode")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dataset", type=click.Path(exists=True))
@click.argument("out_h5", type=click.Path(dir_okay=False))
@click.option("--which", default="last", show_default=True,
              help="Checkpoint: last, init (the untrained initial weights, the control) or an epoch number.")
@click.option("--split", type=click.Choice(["all", "train", "test"]), default="all", show_default=True,
              help="For an SOS folder (imgIdx.mat): which split to encode.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Encode only the first N images.  [default: all]")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes.")
def encode(run_dir, dataset, out_h5, which, split, batch_size, device, limit, workers):
    """Write mu and sigma of every image of DATASET (shard dataset, SOS folder or image folder) to OUT_H5.

    OUT_H5 (replaced if present) also holds count, cumulative_area (-1 where unknown) and
    the image ids.
    """
    from vae.encode import encode_dataset

    res = _run(encode_dataset, run_dir, dataset, out_h5, which=_which(which), split=split, batch_size=batch_size,
               device=device, limit=limit, workers=workers, progress=True)
    click.echo(f"wrote {res['num_images']} latents (dim {res['latent_dim']}, checkpoint {res['checkpoint']}) "
               f"to {out_h5}")


@click.command("probe")
@click.argument("train_latents", type=click.Path(exists=True, dir_okay=False))
@click.argument("test_latents", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--hidden", default="160,160", show_default=True,
              help="Hidden widths of the MLP (paper: 160,160); 'none' for a linear softmax.")
@click.option("--unweighted", is_flag=True, help="Plain cross-entropy instead of class-weighted (paper).")
@click.option("--max-epochs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def probe(train_latents, test_latents, out_dir, seed, hidden, unweighted, max_epochs, device):
    """Train the count probe (classes 0,1,2,3,4+) on TRAIN_LATENTS, score it on TEST_LATENTS (Table 1)."""
    from vae.device import resolve_device
    from vae.probe import run_probe

    res = _run(run_probe, train_latents, test_latents, out_dir, seed=seed, hidden=_hidden(hidden),
               weighted=not unweighted, device=resolve_device(device), max_epochs=max_epochs, progress=True)
    click.echo(f"mean count AP (VOC 11-pt) {res['mean_ap_voc11']:.3f}, mean AP {res['mean_ap']:.3f}, "
               f"mean per-class accuracy {res['mean_accuracy']:.3f} (chance: label frequency "
               f"{res['chance']['mean_frequency']:.3f}); logistic regression: mean per-class accuracy "
               f"{res['logistic']['mean_accuracy']:.3f}, mean AP {res['logistic']['mean_ap']:.3f}; "
               f"wrote {out_dir}/probe.json and table1.md")


def _controls(f):
    """--untrained and --pca, shared by tuning and compare."""
    f = click.option("--pca", is_flag=True,
                     help="Also PCA of the pixels of the same images (needs the synthcount dataset LATENTS was "
                          "encoded from).")(f)
    return click.option("--untrained", type=click.Path(exists=True, dir_okay=False), default=None,
                        help="Latents of the same images under the untrained weights (vae encode --which init), "
                             "analysed beside LATENTS.  [default: none]")(f)


@click.command("regress", short_help="Fit Eq. 3 per latent unit; select number and area units.")
@click.argument("latents", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--r2-min", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="R^2 threshold (paper 0.05; Stoianov & Zorzi 0.1).")
@click.option("--coef-cut", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="The complementary coefficient must be below this in absolute value.")
@click.option("--log-n", type=click.Choice(["exclude-zero", "plus1"]), default="exclude-zero", show_default=True,
              help="exclude-zero: drop N = 0 images; plus1: log(N+1) and log(A+1).")
@click.option("--permutations", type=click.IntRange(min=0), default=20, show_default=True,
              help="Joint shuffles of (N, A) for the chance baseline.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@_controls
@click.option("--design", type=click.Choice(["auto", "eq3", "dewind"]), default="auto", show_default=True,
              help="Also fit z_i on DeWind's log N, log size, log spacing (units coding one axis, angle in the "
                   "size-spacing plane): auto when the latents carry field areas or log_size/log_spacing; "
                   "dewind: required; eq3: Eq. 3 only.")
def regress(latents, out_dir, r2_min, coef_cut, log_n, permutations, seed, no_figures, design, untrained, pca):
    """Fit Eq. 3 (z_i = b_n log N + b_a log A) for every latent unit of LATENTS; select number/area units."""
    from vae.dewind import dewind_text
    from vae.regress import run_regression, summary_text

    res = _run(run_regression, latents, out_dir, r2_min=r2_min, coef_cut=coef_cut, log_n=log_n,
               permutations=permutations, seed=seed, figures=not no_figures, design=design, untrained=untrained,
               pca=pca)
    click.echo(summary_text(res))
    if "units" in res.get("dewind", {}):
        click.echo(dewind_text(res["dewind"]))
    elif res.get("dewind"):
        click.echo(f"DeWind axes not fitted: {res['dewind']['error']}")
    for name, c in res.get("controls", {}).items():
        d = c.get("dewind")
        click.echo(f"{name}: {len(c['numerosity_units'])} numerosity and {len(c['area_units'])} area unit(s)"
                   + (f"; DeWind N / Sz / Sp units {len(d['n_units'])} / {len(d['sz_units'])} / {len(d['sp_units'])}"
                      if d else "") + ".")
    click.echo(f"wrote {out_dir}/regression.json")


@click.command("tuning", short_help="Number-selective units (ANOVA), tuning curves, Gaussian fits.")
@click.argument("latents", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@_controls
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="Significance level of the numerosity, set and interaction terms (Nasr et al.: 0.01).")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
def tuning(latents, out_dir, untrained, pca, alpha, no_figures):
    """Two-way ANOVA (numerosity x stimulus set) per latent unit of LATENTS, after Nasr et al. (2019).

    Selective: p_N < alpha with neither the set nor the interaction significant (a
    one-way ANOVA when the images hold one stimulus set). Writes tuning.json, tuning.md,
    the histogram of preferred numerosities, average tuning curves and Gaussian widths.
    """
    from vae.numbersense import run_tuning
    from vae.tuning import tuning_text

    res = _run(run_tuning, latents, out_dir, untrained=untrained, pca=pca, alpha=alpha, figures=not no_figures)
    reps = res["representations"]
    click.echo(next(iter(reps.values()))["note"])
    for k, r in reps.items():
        click.echo(tuning_text(r, k))
    click.echo(f"wrote {out_dir}/tuning.json and tuning.md")


def _references(text: str):
    if text.strip().lower() in ("", "all", "none"):
        return None
    return _positive_ints(text, "--references", "'all' or comma-separated numerosities >= 1 such as 8,16")


@click.command("compare", short_help="Numerosity comparison read-out and Weber fraction.")
@click.argument("latents", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@_controls
@click.option("--references", default="all", show_default=True,
              help="Reference numerosities such as 8,16 (Stoianov & Zorzi): each pair holds one; 'all': pairs over "
                   "the whole range.")
@click.option("--pairs", type=click.IntRange(min=10), default=20000, show_default=True,
              help="Training pairs, and as many test pairs.")
@click.option("--max-ratio", type=click.FloatRange(min=1, min_open=True), default=None,
              help="Only pairs whose larger / smaller N is at most this.  [default: no limit]")
@click.option("--bootstrap", type=click.IntRange(min=0), default=200, show_default=True,
              help="Bootstrap resamples of the test pairs for the interval on w.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-figures", is_flag=True, help="Skip the PNG figure.")
def compare(latents, out_dir, untrained, pca, references, pairs, max_ratio, bootstrap, seed, no_figures):
    """Which of two images has more? A logistic read-out on the pair's latents, and its Weber fraction w.

    Trained on pairs from one half of the images, tested on pairs from the other half;
    w is fitted to P(correct) = 1 - 0.5 erfc(|n1-n2| / (sqrt(2) w sqrt(n1^2+n2^2))).
    Writes compare.json, compare.md and compare_psychometric.png.
    """
    from vae.compare import compare_text
    from vae.numbersense import run_compare

    res = _run(run_compare, latents, out_dir, untrained=untrained, pca=pca, references=_references(references),
               pairs=pairs, max_ratio=max_ratio, bootstrap=bootstrap, seed=seed, figures=not no_figures)
    for k, r in res["representations"].items():
        click.echo(compare_text(r, k))
    click.echo(f"wrote {out_dir}/compare.json and compare.md (Stoianov & Zorzi 2012, published: w = "
               f"{res['published_w']:.2f})")


COMMANDS = [encode, probe, regress, tuning, compare]
