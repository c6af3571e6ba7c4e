"""The newcomer's first hour (issue 22): help that shows every default and whole
one-liners, an interrupted run that says what it kept and how to resume, no lock file
left looking held, and a warning for images too small for their objects."""

import os
import signal
import subprocess
import sys
import time

import click
from click.testing import CliRunner

from cli.main import main
from synthcount.config import SceneConfig


def _commands(cmd, path=()):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, path + (name,))
    else:
        yield path, cmd


def test_help_shows_every_default_and_whole_one_liners():
    missing = []
    for path, cmd in _commands(main):
        ctx = click.Context(cmd, info_name=path[-1])
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and p.name != "help":
                rec = p.get_help_record(ctx)
                if "default" not in rec[1] and not p.required:  # required ones say [required]
                    missing.append(f"{' '.join(path)} {p.opts[0]}")
                if isinstance(p.type, click.Choice):  # the choices are listed
                    assert all(c in rec[0] for c in p.type.choices), (path, p.opts)
    assert not missing, missing
    for args in ([], ["vae"]):
        out = CliRunner().invoke(main, args + ["--help"]).output
        listing = out.split("Commands:")[1]
        assert "..." not in listing, listing  # click cuts derived one-liners at 45 characters
    gen = CliRunner().invoke(main, ["generate", "--help"]).output
    for flag in ("--blend", "--area-mode", "--min-gap", "--unfit"):
        assert "[default:" in gen.split(flag, 1)[1].split("\n  --", 1)[0], flag


def test_sigterm_says_what_is_kept_and_how_to_resume(tmp_path):
    out = str(tmp_path / "d")
    args = ["generate", out, "--num-images", "3000", "--shard-size", "40", "--size", "48", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, "-m", "synthcount", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    while not (os.path.isfile(os.path.join(out, "shard-00001.h5"))) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "of 75 finished shard(s) are kept" in lines[0]
    assert f"`synthcount generate {out} --num-images 3000" in lines[0] and "resumes" in lines[0]
    kept = sorted(n for n in os.listdir(out) if n.endswith(".h5"))
    assert len(kept) >= 2 and not [n for n in os.listdir(out) if ".tmp" in n or n == ".lock"]
    # The same command resumes (here for the first 3 shards only, to stay quick).
    r = CliRunner().invoke(main, args + ["--shards", "0:3"], catch_exceptions=False)
    assert r.exit_code == 0 and f"({min(len(kept), 3)} kept)" in r.output, r.output


def test_finished_dataset_holds_no_lock_file(tmp_path):
    out = tmp_path / "d"
    for extra in ([], ["--shards", "0:1"], ["--shards", "1:2"]):
        r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "4", "--shard-size", "2", "--size", "48",
                                      "--quiet", *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert not {".lock", ".manifest.lock", ".locks"} & set(os.listdir(out)), os.listdir(out)


def test_images_too_small_for_their_objects_warn():
    assert SceneConfig().size_warning() is None and SceneConfig(size=32).size_warning() is None
    w = SceneConfig(size=16).size_warning()
    assert w.startswith("--size 16: the smallest objects are about 5 px") and "--size 24 or more" in w
    assert SceneConfig(size=24).size_warning() is None  # the size it names is enough
    r = CliRunner().invoke(main, ["generate", "/nonexistent/dir/d", "--num-images", "1", "--size", "16"])
    assert "Warning: --size 16" in r.output


def test_make_run_says_how_to_call_the_tool():
    text = open("Makefile").read().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "source $(BIN)/activate" in text and "$(BIN)/synthcount" in text
