"""Every command of the ```bash blocks of README.md and docs/, run as written, with small sizes
(issue 22): a README example that stops working fails here.

How a command is made small (the README's "Checking the README" names this file):

- ``SMALL``: regular-expression substitutions applied to every command, in order:
  fewer images, one worker, a tiny VAE for a few epochs, the fixture folders in place
  of THUS10000 and SUN397 (same layouts, made by ``tests/fixtures.py``).
- ``SKIP``: commands that need what a test run does not have (data that must be
  downloaded, several hosts, GPUs, minutes of training), each with the reason; a
  README command that is neither run nor listed here fails the test.

The commands run in order, in one temporary folder (so later ones find what earlier
ones made), through the ``synthcount`` click entry point, and each must exit 0.
Marked ``readme`` (``pytest -m readme`` runs it alone).
"""

import os
import re
import shlex

import pytest
from click.testing import CliRunner

from cli.main import main

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

SMALL = [
    # fsc's N runs to 20: enough images that the number-sense examples find N = 8 and 16
    (r"--preset fsc --num-images \d+", "--preset fsc --num-images=120 --shard-size 40"),
    (r"--num-images \d+", "--num-images 24 --shard-size 8"),
    (r"--workers \d+", "--workers 1"),
    (r"--limit \d+", "--limit 5"),
    (r"--epochs \d+", "--epochs 2"),
    (r"(vae train \S+ \S+)(?!.*--epochs)", r"\1 --epochs 1"),
    (r"--preset paper( --epochs| --vgg| *$)", r"--preset tiny --image-size 32 --latent-dim 8 --batch-size 8 "
                                              r"--workers 0 --recon-every 0\1"),
    (r"--vgg-weights vgg19-slim\.pth", "--recon pixel"),
    (r"THUS10000/Imgs", "{msra}"),
    (r"--backgrounds SUN397", "--backgrounds {sun}"),
]

SKIP = {
    "make run": "sets up .venv (pip); the commands it runs are run here",
    "make test": "runs this test suite",
    "hostA$": "a Dask cluster over several hosts",
    "hostB$": "a Dask cluster over several hosts",
    "torchrun": "several processes with DistributedDataParallel",
    "--dask local": "starts a Dask LocalCluster (5-50 s here); tests/test_distributed.py runs a local:2 cluster",
    "vae vgg-slim": "needs the ImageNet VGG-19 file (a download)",
    " SOS ": "the Salient Object Subitizing data set (a download)",
    "vae probe latents/sos": "needs the SOS latents above",
    "demo out/": "minutes of training; tests/test_encode_demo.py runs the demo small",
}


DOCS = [README] + [os.path.join(os.path.dirname(README), "docs", n) for n in
                   ("generation.md", "dataset.md", "export.md", "scale.md", "vae.md", "speed.md")]


def readme_commands():
    """The bash commands of README.md, then of the docs/ pages in reading order."""
    out = []
    for path in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", open(path).read(), re.S):
            for cmd in block.replace("\\\n", " ").splitlines():
                if cmd.strip():
                    out.append(" ".join(cmd.split()))
    return out


def small(cmd: str, **paths) -> str:
    for pat, rep in SMALL:
        cmd = re.sub(pat, rep, cmd)
    return cmd.format(**paths)


@pytest.mark.readme
def test_every_readme_command_runs(tmp_path, monkeypatch, msra_dir, sun_dir):
    commands = readme_commands()
    assert len(commands) > 20
    monkeypatch.chdir(tmp_path)
    ran = []
    for cmd in commands:
        why = next((w for k, w in SKIP.items() if k in f" {cmd} "), None)
        if why:
            continue
        args = shlex.split(small(cmd, msra=msra_dir, sun=sun_dir), comments=True)
        assert args[0] == "synthcount", f"README command of an unknown tool, neither run nor in SKIP: {cmd}"
        r = CliRunner().invoke(main, args[1:] + (["--quiet"] if args[1] in ("generate",) else []))
        assert r.exit_code == 0, f"{cmd}\n  ran as: {' '.join(args)}\n  exit {r.exit_code}: {r.output[-2000:]}"
        ran.append(args[1])
    assert {"generate", "inspect", "preview", "verify", "export", "vae"} <= set(ran)
