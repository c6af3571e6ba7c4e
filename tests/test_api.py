"""The Python API's conventions: top-level names, ``python -m synthcount``, the
``synthcount`` logger, progress off in the API and on in the CLI, packaging files."""

import configparser
import logging
import os
import subprocess
import sys

import synthcount
from synthcount.config import DatasetConfig, SceneConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_python_dash_m_synthcount_runs_the_cli(tmp_path):
    p = subprocess.run([sys.executable, "-m", "synthcount", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "Usage: synthcount" in p.stdout and "export" in p.stdout
    p = subprocess.run([sys.executable, "-m", "synthcount", "verify", str(tmp_path / "none")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_api_is_quiet_and_logs_to_the_synthcount_logger(tmp_path, capfd, caplog):
    from synthcount.generate import generate_dataset

    assert synthcount.generate_dataset is generate_dataset
    out = str(tmp_path / "ds")
    with caplog.at_level(logging.INFO, logger="synthcount"):
        synthcount.generate_dataset(out, DatasetConfig(num_images=4, shard_size=4, scene=SceneConfig(size=(32, 32))))
        synthcount.export_dataset(out, str(tmp_path / "folder"), "imagefolder")
    assert capfd.readouterr().err == ""  # no progress bar by default in the API
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("synthcount")]
    assert any("4 images in 1 shards" in m for m in messages) and any("exported 4 images" in m for m in messages)
    from click.testing import CliRunner

    from cli.main import main

    r = CliRunner().invoke(main, ["verify", out])  # the CLI shows progress (on stderr)
    assert r.exit_code == 0 and "verify ds" in r.stderr


def test_packaging_declares_license_typing_extras_and_ranges():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert cfg["metadata"]["license"] == "MIT"
    assert "MIT License" in open(os.path.join(ROOT, "LICENSE")).read()
    assert os.path.isfile(os.path.join(ROOT, "synthcount", "py.typed"))
    assert "py.typed" in cfg["options.package_data"]["synthcount"]
    extras = cfg["options.extras_require"]
    vae = extras["vae"].split()
    assert "torch>=2.2" in vae and "torchvision>=0.17" in vae and not any("==" in r for r in vae)
    for lib in ("pycocotools", "webdataset", "datasets"):
        assert any(r.startswith(lib) for r in extras["export"].split())
        assert any(r.startswith(lib) for r in extras["dev"].split())  # the tests need them
    pins = open(os.path.join(ROOT, "constraints.txt")).read().split()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    make = open(os.path.join(ROOT, "Makefile")).read()
    assert "-c constraints.txt" in make
