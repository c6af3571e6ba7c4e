"""``synthcount vae train`` and ``synthcount vae vgg-slim``: thin layers over
:func:`vae.train.train` and :func:`vae.vgg.slim_vgg_state_dict`.

Exit codes: 0 success; 2 bad usage or input (one line on stderr, e.g. missing VGG
weights, a bad dataset, a resume with different settings, RUN_DIR in use by another
run); 1 the run failed (loss became NaN/inf, or a file could not be written, a full
disk say: the last good checkpoint is kept); 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM, as Slurm sends), each after saving checkpoints/interrupted.pt. torch is
imported only inside the commands, so the CLI loads without the [vae] extra.
"""

from __future__ import annotations

import json
import os
import sys

import click

from vae.config import PIXEL_LOSSES, PRESETS, RECONS, REDUCTIONS, SCHEDULES, TrainConfig

from ._errors import fail

# CLI option name -> TrainConfig field (options absent here are not config).
_FIELDS = {
    "preset": "preset", "epochs": "epochs", "batch_size": "batch_size", "recon": "recon",
    "vgg_weights": "vgg_weights", "device": "device", "lr": "lr", "workers": "workers", "seed": "seed",
    "test_fraction": "test_fraction", "pixel_loss": "pixel_loss", "alpha": "alpha", "beta": "beta",
    "reduction": "reduction", "natural": "natural", "warmup_epochs": "warmup_epochs",
    "natural_ramp": "natural_ramp", "natural_schedule": "natural_schedule", "drop_fraction": "drop_fraction",
    "recon_every": "recon_every", "checkpoint_every": "checkpoint_every", "model_overrides": "model_overrides",
}
_D = TrainConfig()


@click.command("train")
@click.argument("dataset", type=click.Path())
@click.argument("run_dir", type=click.Path())
@click.option("--preset", type=click.Choice(["auto"] + sorted(PRESETS)), default="auto", show_default=True,
              help="Model: paper (161x161), paper5 (authors' 5-stage encoder), tiny (64x64, CPU demos), sz (48x48); "
                   "auto: paper on a CUDA GPU, tiny on the CPU.")
@click.option("--epochs", type=click.IntRange(min=1), default=_D.epochs, show_default=True,
              help="Total epochs; with --resume, continue up to this many.")
@click.option("--batch-size", type=click.IntRange(min=2), default=_D.batch_size, show_default=True,
              help="Images per step (per process under torchrun).")
@click.option("--recon", type=click.Choice(("auto",) + RECONS), default="auto", show_default=True,
              help="Reconstruction loss: VGG-19 feature-perceptual (the paper's), pixel, or both; auto: perceptual "
                   "when VGG-19 weights are found (--vgg-weights or torchvision's cache), else pixel.")
@click.option("--vgg-weights", default=None, metavar="PATH|random",
              help="torchvision vgg19 state_dict (full or from vgg-slim); default: torchvision's cache file. "
                   "'random' = untrained VGG (recorded, not the paper's loss).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR from its last checkpoint up to --epochs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=_D.device, show_default=True,
              help="auto: CUDA when a GPU is visible, else the CPU.")
@click.option("--lr", type=float, default=_D.lr, show_default=True, help="Adam learning rate.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader workers [default: CPUs - 1, at most 8].")
@click.option("--seed", type=click.IntRange(min=0), default=_D.seed, show_default=True, help="Root seed.")
@click.option("--test-fraction", type=float, default=_D.test_fraction, show_default=True,
              help="Held-out share of the shards.")
@click.option("--pixel-loss", type=click.Choice(PIXEL_LOSSES), default=_D.pixel_loss, show_default=True,
              help="The pixel reconstruction term (--recon pixel or both).")
@click.option("--alpha", type=float, default=_D.alpha, show_default=True, help="Weight of the KL term.")
@click.option("--beta", type=float, default=_D.beta, show_default=True, help="Weight of the reconstruction term.")
@click.option("--reduction", type=click.Choice(REDUCTIONS), default=_D.reduction, show_default=True,
              help="batch-mean: sum over elements, mean over batch; sum: the authors'; mean: over all elements.")
@click.option("--natural", type=click.Path(), default=None,
              help="Natural images: SOS folder (imgIdx.mat) or a folder/CSV with file,count[,split] columns.  "
                   "[default: none, synthetic only]")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=_D.warmup_epochs, show_default=True,
              help="Synthetic-only epochs before natural images enter.")
@click.option("--natural-ramp", type=click.IntRange(min=1), default=_D.natural_ramp, show_default=True,
              help="Epochs over which the natural share rises to all of them.")
@click.option("--natural-schedule", type=click.Choice(SCHEDULES), default=_D.natural_schedule, show_default=True,
              help="How the natural share rises over --natural-ramp epochs.")
@click.option("--drop-fraction", type=float, default=_D.drop_fraction, show_default=True,
              help="Share of the most frequent natural class dropped each epoch.")
@click.option("--recon-every", type=click.IntRange(min=0), default=_D.recon_every, show_default=True,
              help="Reconstruction grid every k epochs (0: never).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=_D.checkpoint_every, show_default=True,
              help="Keep checkpoints/epoch-XXX.pt every k epochs (last.pt is written every epoch).")
@click.option("--image-size", default=None, metavar="S|HxW",
              help="Model input size instead of the preset's (images are resized to it).  [default: the preset's]")
@click.option("--latent-dim", type=click.IntRange(min=1), default=None,
              help="Latent size instead of the preset's.  [default: the preset's]")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def train_cmd(ctx: click.Context, dataset: str, run_dir: str, resume: bool, quiet: bool, image_size, latent_dim,
              **opts) -> None:
    """Train the VAE on the synthcount DATASET, writing the run to RUN_DIR."""
    given = {k: v for k, v in opts.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    overrides = {}
    if image_size is not None:
        from synthcount.config import parse_size

        try:
            overrides["image_size"] = list(parse_size(image_size))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--image-size") from None
    if latent_dim is not None:
        overrides["latent_dim"] = latent_dim
    if overrides:
        opts["model_overrides"] = given["model_overrides"] = overrides
    try:
        if resume:
            for k in ("preset", "recon"):  # auto on a resume: the stored choice
                if given.get(k) == "auto":
                    del given[k]
            # The stored settings, with only the options given now replacing them.
            path = os.path.join(run_dir, "config.json")
            if os.path.isfile(path):
                with open(path) as f:
                    stored = json.load(f)["train"]
                if "model_overrides" in given:
                    given["model_overrides"] = {**stored.get("model_overrides", {}), **given["model_overrides"]}
                stored.update({_FIELDS[k]: v for k, v in given.items()})
                cfg = TrainConfig.from_dict(stored)
            else:  # interrupted before its settings were saved: train() starts it afresh
                cfg = TrainConfig(**{_FIELDS[k]: v for k, v in opts.items()})
        else:
            notes = _auto_choices(opts)
            if notes and int(os.environ.get("RANK", "0")) == 0:
                click.echo(f"vae train: {'; '.join(notes)}", err=True)
            cfg = TrainConfig(**{_FIELDS[k]: v for k, v in opts.items()})
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
        fail(e, 2)
    from synthcount._io import WriteError
    from vae.train import TrainingDiverged, train

    try:
        summary = train(dataset, run_dir, cfg, resume=resume, progress=not quiet)
    except (TrainingDiverged, WriteError) as e:  # the run failed (a full disk, say): exit 1
        fail(e, 1)
    except (ValueError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__, 2)
    except KeyboardInterrupt as e:
        from vae.train import Terminated

        if isinstance(e, Terminated):
            click.echo("terminated (SIGTERM)", err=True)
            sys.exit(143)
        click.echo("interrupted", err=True)
        sys.exit(130)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 reports
    last = summary["last"] or {}
    click.echo(json.dumps({"run_dir": summary["run_dir"], "status": summary["status"],
                           "epochs_done": summary["epochs_done"], "test_loss": last.get("test_loss"),
                           "best_test_loss": summary["best_test_loss"], "device": summary["device"]}))


def _auto_choices(opts: dict) -> list:
    """Resolve ``--preset auto`` and ``--recon auto`` in ``opts`` (the README's CPU
    path: no GPU, the tiny model; no VGG-19 weights, the pixel loss). Returns what was
    chosen away from the paper's setting, one phrase each, for the one line printed."""
    notes = []
    if opts["preset"] == "auto":
        from vae.device import resolve_device

        cuda = resolve_device(opts["device"]).type == "cuda"
        opts["preset"] = "paper" if cuda else "tiny"
        if not cuda:
            notes.append("--preset tiny (no CUDA GPU: the CPU-sized model; --preset paper for the paper's)")
    if opts["recon"] == "auto":
        from vae.vgg import VGGWeightsMissing, resolve_vgg_weights

        try:
            resolve_vgg_weights(opts["vgg_weights"])
            opts["recon"] = "perceptual"
        except VGGWeightsMissing:
            if opts["vgg_weights"] is not None:
                raise  # a path given and not there: say so
            opts["recon"] = "pixel"
            notes.append("--recon pixel (no VGG-19 weights found; --vgg-weights PATH for the paper's perceptual loss)")
    return notes


@click.command("vgg-slim")
@click.argument("full_vgg19", type=click.Path())
@click.argument("out", type=click.Path())
def vgg_slim_cmd(full_vgg19: str, out: str) -> None:
    """Write the few-MB VGG-19 layers the perceptual loss needs (features 0-11) from a full
    torchvision vgg19 state_dict FULL_VGG19.pth to OUT.pth."""
    from vae.vgg import slim_vgg_state_dict

    if not os.path.isfile(full_vgg19):
        fail(f"FULL_VGG19: no file at {full_vgg19!r}", 2)
    try:
        info = slim_vgg_state_dict(full_vgg19, out)
    except (ValueError, OSError) as e:
        fail(e, 2)
    click.echo(json.dumps({"out": os.path.abspath(out), **info}))


COMMANDS = [train_cmd, vgg_slim_cmd]
