"""How every command ends when something is wrong: one line on stderr, the right exit code.

Exit codes (docs/scale.md, "Exit codes"): 0 success; 2 bad usage or bad input, nothing
written; 1 a check failed or the run failed. Never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Iterator

import click

__all__ = ["fail", "usage", "require_torch", "exit_codes"]


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def fail(msg, code: int = 1) -> None:
    """Print ``Error: msg`` (one line) on stderr and exit ``code``."""
    click.echo(f"Error: {_one_line(msg)}", err=True)
    sys.exit(code)


def usage(msg) -> None:
    """A usage error (exit 2) in click's format."""
    raise click.UsageError(_one_line(msg))


def require_torch() -> None:
    """Exit 2 with one line when torch is missing (the ``[vae]`` extra)."""
    if "torch" in sys.modules:  # a blocked import (None) counts as missing
        missing = sys.modules["torch"] is None
    else:
        missing = importlib.util.find_spec("torch") is None
    if missing:
        fail("this command needs the [vae] extra (torch, torchvision): pip install 'synthcount[vae]'", 2)


@contextlib.contextmanager
def exit_codes(what: str = "") -> Iterator[None]:
    """Run a command body: ``ValueError``/``TypeError`` (bad input) exit 2, ``OSError``
    and ``RuntimeError`` (a failed run) exit 1, each as one line (``what`` prefixes
    the failure)."""
    try:
        yield
    except (ValueError, TypeError) as e:
        fail(e, 2)
    except (OSError, RuntimeError) as e:
        fail(f"{what}{': ' if what else ''}{e}", 1)
