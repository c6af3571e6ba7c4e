"""``synthcount vae encode | probe | regress`` (thin over vae.encode, vae.probe, vae.regress).

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr, never a
traceback); 1 the run failed.
"""

from __future__ import annotations

import click

from ._errors import fail

__all__ = ["COMMANDS", "encode", "probe", "regress"]


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
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise click.BadParameter(f"must be comma-separated positive widths such as 160,160 (or 'none'), got {text!r}",
                                 param_hint="--hidden")
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
def regress(latents, out_dir, r2_min, coef_cut, log_n, permutations, seed, no_figures):
    """Fit Eq. 3 (z_i = b_n log N + b_a log A) for every latent unit of LATENTS; select number/area units."""
    from vae.regress import run_regression, summary_text

    res = _run(run_regression, latents, out_dir, r2_min=r2_min, coef_cut=coef_cut, log_n=log_n,
               permutations=permutations, seed=seed, figures=not no_figures)
    click.echo(summary_text(res))
    click.echo(f"wrote {out_dir}/regression.json")


COMMANDS = [encode, probe, regress]
