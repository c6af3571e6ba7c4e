"""The ``synthcount`` console script.

Commands live in small modules, each a thin layer over a documented Python function:
``cli.gen`` (generate, prepare, inspect, preview, verify), ``cli.export`` (export), ``cli.vae_train``
(vae train, vae vgg-slim), ``cli.vae_analysis`` (vae encode, probe, regress) and
``cli.demo`` (demo). The ``vae`` commands and ``demo`` need the ``[vae]`` extra.
"""

from __future__ import annotations

import click

from synthcount import __version__

from ._errors import require_torch  # noqa: F401 (re-exported: cli.main.require_torch)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthcount")
def main() -> None:
    """Synthetic counting datasets by cut-and-paste, and a VAE that asks whether number emerges."""


@main.group()
def vae() -> None:
    """Train, encode and analyse the paper's VAE (needs the [vae] extra)."""
    require_torch()


def _register() -> None:
    from . import demo, export, gen, vae_analysis, vae_train

    for cmd in gen.COMMANDS + export.COMMANDS:
        main.add_command(cmd)
    for cmd in vae_train.COMMANDS + vae_analysis.COMMANDS:
        vae.add_command(cmd)
    for cmd in demo.COMMANDS:
        main.add_command(cmd)
    _whole_short_help(main)


def _whole_short_help(cmd: click.Command) -> None:
    """Give every command its docstring's first paragraph, whole, as the one-liner of
    the command lists (click cuts a derived one after 45 characters, mid-sentence)."""
    if cmd.short_help is None and cmd.help:
        cmd.short_help = " ".join(cmd.help.split("\n\n")[0].split())
    for sub in getattr(cmd, "commands", {}).values():
        _whole_short_help(sub)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
