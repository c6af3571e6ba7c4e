"""``synthcount demo OUT_DIR``: the end-to-end story in one command (thin over vae.demo.run_demo)."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "demo"]

# the names of vae.demo.RECIPES, listed here so that --help works without torch
_RECIPES = ("sz", "tiny-mean", "tiny-pixel")


@click.command("demo")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--binary", is_flag=True,
              help="Stoianov & Zorzi-style binary images (48x48, N 1..8, area independent of N).")
@click.option("--scene", type=click.Choice(["regression", "decorrelated"]), default="regression", show_default=True,
              help="Cut-out scene: the paper's regression set (A grows with N) or A drawn independently of N.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Whole studies (data, training, controls), seeds SEED, SEED+1, ...; --minutes covers them all.")
@click.option("--recipe", type=click.Choice(_RECIPES), default=None,
              help="Training recipe (vae.demo.RECIPES) [default: sz with --binary, else tiny-mean].")
@click.option("--quick", is_flag=True, help="A much smaller run (one epoch on a few hundred images), for tests.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=9.0, show_default=True,
              help="Wall-clock budget for every seed together; training runs whole epochs within it.")
@click.option("--train-images", type=click.IntRange(min=2), default=None,
              help="Training images per seed.  [default: 10000]")
@click.option("--eval-images", type=click.IntRange(min=30), default=None,
              help="Held-out images per seed.  [default: 6000]")
@click.option("--max-epochs", type=click.IntRange(min=1), default=None, help="Most epochs per seed.  [default: 200]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The first study's seed.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "auto", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: the usable cores; 1 can be faster on cores shared with other work].")
def demo(out_dir, binary, scene, seeds, recipe, quick, minutes, train_images, eval_images, max_epochs, seed,
         batch_size, device, threads):
    """Generate data, train a small VAE, encode, probe, regress, compare with the controls, report.

    Writes OUT_DIR/report.md with its figures and JSON beside it.
    """
    from cli._errors import exit_codes, require_torch

    require_torch()
    from vae.demo import DemoConfig, run_demo

    with exit_codes("demo failed"):
        cfg = DemoConfig(minutes=minutes, seeds=seeds, seed=seed, binary=binary, scene=scene, recipe=recipe,
                         quick=quick, train_images=train_images, eval_images=eval_images, max_epochs=max_epochs,
                         batch_size=batch_size, device=device, threads=threads, progress=True)
        res = run_demo(out_dir, cfg)
    click.echo(f"report: {out_dir}/report.md ({res['timings']['all_seeds_total_s'] / 60:.1f} min)")


COMMANDS = [demo]
