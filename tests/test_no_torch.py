"""The installed generator imports, generates and reads back with torch absent."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import sys

class _NoTorch:
    # A meta-path finder that makes ``import torch`` (and torchvision) fail, as on a
    # machine where only ``pip install synthcount`` (no [vae] extra) was run.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorch())
sys.modules["torch"] = None

import synthcount
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.generate import generate_dataset
from synthcount import stats, shards, reader, sources, compose, export  # noqa: F401  every generator module

out = sys.argv[1]
res = generate_dataset(out, DatasetConfig(num_images=6, shard_size=4, scene=SceneConfig(size=(48, 48))),
                       workers=2, progress=False)
assert res.images_written == 6 and res.complete, res
assert synthcount.generate_dataset is generate_dataset  # the top-level name
ds = synthcount.open_dataset(out)
assert len(ds) == 6 and ds[5]["image"].shape == (48, 48, 3)
assert shards.verify_dataset(out) == []
synthcount.export_dataset(out, out + "-wds", "webdataset")  # exporters that need no library
synthcount.export_dataset(out, out + "-folder", "imagefolder")
assert sys.modules.get("torch") is None, "torch was imported"
assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
print("NO-TORCH-OK")
"""


def test_generator_works_without_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "ds")], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "NO-TORCH-OK" in p.stdout
    # The CLI's generator commands load without torch too (cli.main registers every module).
    code = ("import sys; sys.modules['torch'] = None\n"
            "from click.testing import CliRunner\nfrom cli.main import main\n"
            "r = CliRunner().invoke(main, ['generate', '--help'])\nassert r.exit_code == 0, r.output\n"
            "assert sys.modules.get('torch') is None\nprint('CLI-OK')")
    p = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "CLI-OK" in p.stdout, p.stderr[-3000:]


_CLI = r"""
import sys
sys.modules["torch"] = None
from cli.main import main
sys.argv = ["synthcount"] + sys.argv[1:]
main()
"""


def test_vae_commands_without_torch_say_so_and_exit_2(tmp_path):
    for args in (["vae", "train", str(tmp_path), str(tmp_path / "run")], ["demo", str(tmp_path / "demo")]):
        p = subprocess.run([sys.executable, "-c", _CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "[vae] extra" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()
