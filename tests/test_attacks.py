"""The attacker's reproductions (issue 23): crafted shards and manifests, FIFOs and
devices in place of files, YAML bombs, bad Dask addresses, interrupted training, kill -9
leftovers. Each must end in one line naming the file or flag with the documented exit
code (README "Exit codes"), within seconds, with nothing inconsistent written.

``small`` is ``synthcount generate small --num-images 400 --shard-size 100 --size 64``,
made once per session; each test tampers with its own copy.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from synthcount._io import sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "cli.main"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _cli(*args, timeout=60, **kw):
    """The CLI in a process of its own (a hang fails the test at ``timeout``, not the suite)."""
    return subprocess.run(CLI + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          **kw)


def _one_line_error(res, code, *words):
    """``res`` (CliRunner result or CompletedProcess) exited ``code`` with one ``Error:``
    line on stderr holding ``words``, and no traceback."""
    rc = res.exit_code if hasattr(res, "exit_code") else res.returncode
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert rc == code, (rc, err, getattr(res, "exception", None))
    assert "Traceback" not in err and not isinstance(getattr(res, "exception", None), (AssertionError, TypeError)), err
    errors = [ln for ln in err.splitlines() if "Error" in ln]
    assert len(errors) == 1, err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture(scope="session")
def small_src(tmp_path_factory):
    from synthcount.config import DatasetConfig, SceneConfig
    from synthcount.generate import generate_dataset

    out = str(tmp_path_factory.mktemp("attack") / "small")
    cfg = DatasetConfig(num_images=400, shard_size=100, scene=SceneConfig(size=(64, 64)))
    generate_dataset(out, cfg, progress=False)
    return out


@pytest.fixture
def small(small_src, tmp_path):
    dst = str(tmp_path / "small")
    shutil.copytree(small_src, dst)
    return dst


def _tamper(folder, k, change):
    """Apply ``change(h5py file)`` to shard ``k`` and re-record its sha256 (sidecar and
    manifest), as an attacker who rewrites them would: only the content checks can tell."""
    path = os.path.join(folder, f"shard-{k:05d}.h5")
    with h5py.File(path, "r+") as f:
        change(f)
    digest = sha256_file(path)
    with open(path[:-3] + ".sha256", "w") as s:
        s.write(digest + "\n")
    mp = os.path.join(folder, "manifest.json")
    with open(mp) as f:
        man = json.load(f)
    man["shards"][k]["sha256"] = digest
    with open(mp, "w") as f:
        json.dump(man, f)
    return path


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _replace(f, key, data=None, **kw):
    del f[key]
    if data is None:
        f.create_group(key)
    else:
        f.create_dataset(key, data=data, **kw)


# ----------------------------------------------------------------------------- 3, 4: crafted shards


CRAFTED = {
    "images-group": (lambda f: _replace(f, "images"), "images must be datasets"),
    "images-scalar": (lambda f: _replace(f, "images", np.uint8(3)), "images must be uint8"),
    "images-50-rows": (lambda f: _replace(f, "images", f["images"][:50]), "images' first axis 50"),
    "all-emptied": (lambda f: [_replace(f, k, f[k][:0]) for k in list(f.keys())], "images must be uint8 (n >= 1"),
    "object-ids-2^31-1": (lambda f: f["object_ids"].__setitem__((slice(None), 0), 2**31 - 1),
                          "object_ids holds 2147483647"),
    "4-channel": (lambda f: _replace(f, "images", np.zeros(f["images"].shape[:3] + (4,), np.uint8)),
                  "images must be uint8"),
    "float-labels": (lambda f: _replace(f, "label_maps", f["label_maps"][()].astype(np.float32)),
                     "label_maps must be uint8"),
    "negative-count": (lambda f: f["count"].__setitem__(0, -5), "count + num_distractors outside"),
    "other-size": (lambda f: [_replace(f, "images", np.zeros((100, 32, 32, 3), np.uint8)),
                              _replace(f, "label_maps", np.zeros((100, 32, 32), np.uint8))], "32x32"),
}


@pytest.mark.parametrize("attack", sorted(CRAFTED))
def test_crafted_shard_is_refused_by_verify_and_every_reader(small, tmp_path, attack):
    change, words = CRAFTED[attack]
    _tamper(small, 1, change)
    v = _run("verify", small, "--quiet")
    _one_line_error(v, 1, "shard-00001.h5")
    said = [v.output]
    for args in (("export", small, tmp_path / "coco", "--format", "coco", "--quiet"),
                 ("export", small, tmp_path / "wds", "--format", "webdataset", "--quiet"),
                 ("preview", small, tmp_path / "p.png", "--n", "400"),
                 ("inspect", small)):
        r = _run(*args)
        said.append(_one_line_error(r, 1, "shard-00001.h5", "run synthcount verify"))
    assert words in " ".join(said), said
    assert not os.path.exists(tmp_path / "coco") and not os.path.exists(tmp_path / "wds")
    assert not os.path.exists(tmp_path / "p.png")


def test_shard_whose_labels_disagree_is_never_exported(small, tmp_path):
    """Schema intact, sha256 re-recorded, but a label map says other areas: verify rejects
    it, and every export format stops at that map with nothing published (not only
    COCO's own RLE check)."""
    def recolour(f):
        lm = f["label_maps"][()]
        lm[3] = 0
        f["label_maps"][...] = lm
    _tamper(small, 2, recolour)
    assert "label map of image 3" in _run("verify", small, "--quiet").output
    for fmt in ("webdataset", "imagefolder", "hf"):
        if fmt == "hf" and not _has("datasets"):
            continue
        r = _run("export", small, tmp_path / fmt, "--format", fmt, "--quiet")
        _one_line_error(r, 1, "shard-00002.h5: image 3", "label map has object pixel counts")
        assert not os.path.exists(tmp_path / fmt)


def test_vae_data_loading_goes_through_the_gate(small):
    pytest.importorskip("torch")
    from vae.data import ShardImages

    _tamper(small, 0, CRAFTED["float-labels"][0])
    with pytest.raises(OSError, match="shard-00000.h5: schema: label_maps must be uint8"):
        ShardImages(small, image_size=(64, 64))[0]


# ----------------------------------------------------------------------------- 5: huge numbers


@pytest.mark.parametrize("where", ["total", "entry"])
def test_manifest_with_num_images_10_to_the_30(small, where):
    mp = os.path.join(small, "manifest.json")
    with open(mp) as f:
        man = json.load(f)
    if where == "total":
        man["num_images"] = 10**30
    else:
        man["shards"][0]["num_images"] = 10**30
    with open(mp, "w") as f:
        json.dump(man, f)
    for args in (("inspect", small), ("inspect", small, "--json")):
        _one_line_error(_run(*args), 2, "manifest.json", "num_images")
    _one_line_error(_run("verify", small, "--quiet"), 1, "num_images")


# ----------------------------------------------------------------------------- 8: not regular files


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_shard_replaced_by_a_fifo_or_dev_zero(small, tmp_path, kind):
    """inspect hung on the FIFO and export hashed /dev/zero forever: those two run in a
    process of their own (a regression fails at the timeout instead of hanging the suite)."""
    path = os.path.join(small, "shard-00001.h5")
    os.remove(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink("/dev/zero", path)
    what = "FIFO" if kind == "fifo" else "device"
    t0 = time.monotonic()
    if kind == "fifo":
        _one_line_error(_cli("inspect", small, timeout=30), 1, "shard-00001.h5", what)
    else:
        _one_line_error(_cli("export", small, tmp_path / "x", "--format", "webdataset", "--quiet", timeout=30), 1,
                        "shard-00001.h5", what)
    assert time.monotonic() - t0 < 30
    for args in (("inspect", small), ("export", small, tmp_path / "x", "--format", "coco", "--quiet"),
                 ("preview", small, tmp_path / "p.png", "--n", "400"), ("verify", small, "--quiet")):
        _one_line_error(_run(*args), 1, "shard-00001.h5", what)
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "p.png")
    if kind == "fifo":
        # A resume takes it for a missing shard and makes it again (the FIFO replaced).
        g = _run("generate", small, "--num-images", "400", "--shard-size", "100", "--size", "64", "--quiet")
        assert g.exit_code == 0 and "1 shards (3 kept)" in g.output, g.output
        assert os.path.isfile(path) and _run("verify", small, "--quiet").exit_code == 0


def test_manifest_replaced_by_dev_zero_is_not_read_without_bound(small):
    os.remove(os.path.join(small, "manifest.json"))
    os.symlink("/dev/zero", os.path.join(small, "manifest.json"))
    _one_line_error(_cli("inspect", small, timeout=30), 2, "manifest.json", "not a regular file")


# ----------------------------------------------------------------------------- 6: YAML bombs


@pytest.mark.parametrize("key", ["sources.background_classes", "scene.count_probs"])
def test_yaml_alias_bomb_in_a_known_key_is_refused_in_under_a_second(tmp_path, key):
    section, field = key.split(".")
    anchors = ['  x0: &x0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        anchors.append(f"  x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]")
    text = "defs:\n" + "\n".join(anchors) + f"\n{section}:\n  {field}: *x8\nnum_images: 10\n"
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(text)
    assert cfg.stat().st_size < 1500
    t0 = time.monotonic()
    res = _run("generate", tmp_path / "out", "--config", cfg)
    took = time.monotonic() - t0
    line = _one_line_error(res, 2, "--config", str(cfg), "alias bomb")
    assert len(line) < 600 and took < 1.0, (took, line)
    assert not os.path.exists(tmp_path / "out")


def test_config_bounds_size_cycles_and_quoted_values(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("num_images: 10\n# " + "x" * (2 << 20) + "\n")
    _one_line_error(_run("generate", tmp_path / "o", "--config", big), 2, "--config", "larger than")
    cyc = tmp_path / "cycle.yaml"
    cyc.write_text("num_images: 10\nscene: &s {mode: *s}\n")
    _one_line_error(_run("generate", tmp_path / "o", "--config", cyc), 2, "--config", "recursive")
    long = tmp_path / "long.yaml"
    long.write_text("num_images: 10\nscene:\n  mode: " + "m" * 100_000 + "\n")
    line = _one_line_error(_run("generate", tmp_path / "o", "--config", long), 2, "mode must be")
    assert len(line) < 600, len(line)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    _one_line_error(_cli("generate", tmp_path / "o", "--config", fifo, timeout=30), 2, "FIFO")
    assert not os.path.exists(tmp_path / "o")


# ----------------------------------------------------------------------------- 7: Dask addresses


def _refused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("attack", ["garbage-scheme", "garbage-file", "file-refused-port", "file-no-address"])
def test_bad_dask_address_fails_fast_in_one_line(tmp_path, attack):
    pytest.importorskip("distributed")
    sched = tmp_path / "scheduler.json"
    if attack == "garbage-scheme":
        address, words = "garbage://x", "unknown scheme 'garbage'"
    else:
        address = str(sched)
        text, words = {"garbage-file": ("garbage{", "not a Dask scheduler file"),
                       "file-refused-port": (json.dumps({"address": f"tcp://127.0.0.1:{_refused_port()}"}),
                                             "cannot reach a Dask scheduler"),
                       "file-no-address": ("[1, 2]", "no \"address\"")}[attack]
        sched.write_text(text)
    args = ("generate", tmp_path / "out", "--num-images", "10", "--size", "32", "--quiet", "--dask", address)
    t0 = time.monotonic()
    if attack.startswith("garbage"):  # these hung at exit (a Client's destructor): a process of their own
        res = _cli(*args, timeout=60)
        assert "Exception ignored" not in res.stderr, res.stderr
    else:
        res = _run(*args)
    took = time.monotonic() - t0
    _one_line_error(res, 2, "--dask", words)
    assert took < 20, took
    assert not os.path.exists(tmp_path / "out")


# ----------------------------------------------------------------------------- 1: interrupted first epoch

# The tiny preset at 32x32, 8 latent units, 32 images of 32x32: 4 training steps per epoch.
STEPS = (1, 2, 4)
_TRAIN = ["--preset", "tiny", "--image-size", "32", "--latent-dim", "8", "--batch-size", "8", "--recon", "pixel",
          "--workers", "0", "--recon-every", "0", "--device", "cpu", "--quiet"]
# One process imports torch once and forks a training per kill point (no torch work in
# the parent, so forking is safe); each child sends itself SIGKILL at its training step.
_KILLER = """
import os, signal, sys
import torch
from vae import train as vtrain
from cli.main import main
args = sys.argv[2:]
for i, at in enumerate(int(v) for v in sys.argv[1].split(",")):
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
        class Killer(vtrain.VAELoss):
            calls = 0
            def forward(self, *a):
                if torch.is_grad_enabled():
                    Killer.calls += 1
                    if Killer.calls == at:
                        os.kill(os.getpid(), signal.SIGKILL)
                return super().forward(*a)
        vtrain.VAELoss = Killer
        try:
            main(args + (["--resume"] if i else []))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    print("killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else f"status {status}")
"""


def _weights(run):
    import torch

    return torch.load(os.path.join(run, "checkpoints", "last.pt"), weights_only=True)["model"]


@pytest.fixture(scope="module")
def train_ref(tmp_path_factory):
    """A first epoch that nothing interrupted: what every recovered run must equal."""
    torch = pytest.importorskip("torch")
    from tests.test_vae_data import make_dataset

    ds = make_dataset(n=32, size=32, shard_size=16)
    run = str(tmp_path_factory.mktemp("ref") / "run")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _run("vae", "train", ds, run, "--epochs", "1", *_TRAIN).exit_code == 0
    finally:
        torch.set_num_threads(old)
    return ds, _weights(run)


def _resumes_to_the_reference(ds, run, ref):
    import torch

    assert not os.path.exists(os.path.join(run, "checkpoints", "last.pt"))
    r = _run("vae", "train", ds, run, "--epochs", "1", "--resume", *_TRAIN)
    assert r.exit_code == 0, r.output
    got = _weights(run)
    assert all(torch.equal(got[k], ref[k]) for k in ref), "the recovered run differs from an uninterrupted one"
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if ".tmp-" in n]


def _signalled(monkeypatch, sig, step):
    """Make the next training send itself ``sig`` at its ``step``-th training step."""
    import torch

    from vae import train as vtrain

    calls = {"n": 0}

    class Signaller(vtrain.VAELoss):
        def forward(self, *a):
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] == step:
                    os.kill(os.getpid(), getattr(signal, sig))
            return super().forward(*a)

    monkeypatch.setattr(vtrain, "VAELoss", Signaller)


@pytest.fixture
def default_signals():
    """Ctrl-C reaches Python as KeyboardInterrupt and SIGTERM kills, whatever the process
    inherited (a job started in the background of a non-interactive shell ignores SIGINT)
    or an earlier test left behind; the handlers are put back afterwards."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_at_three_points_of_the_first_epoch_then_resume(train_ref, tmp_path, monkeypatch, sig,
                                                               one_torch_thread, default_signals):
    """Ctrl-C or Slurm's SIGTERM at the first, a middle and the last step of epoch 1 (a
    requeued job hit again each time): each writes interrupted.pt and says the checkpoint
    --resume really uses (init.pt), each --resume accepts the folder, and the last one
    gives the run an uninterrupted one would have."""
    ds, ref = train_ref
    run = str(tmp_path / "run")
    for i, step in enumerate(STEPS):
        _signalled(monkeypatch, sig, step)
        r = CliRunner().invoke(main, ["vae", "train", ds, run, "--epochs", "1", *_TRAIN] + (["--resume"] if i else []))
        assert r.exit_code == (130 if sig == "SIGINT" else 143), r.output
        assert "--resume continues from checkpoints/init.pt (epoch 0)" in r.output
        assert os.path.isfile(os.path.join(run, "checkpoints", "interrupted.pt"))
        monkeypatch.undo()
    _resumes_to_the_reference(ds, run, ref)


def test_kill_9_at_three_points_of_the_first_epoch_then_resume(train_ref, tmp_path, one_torch_thread):
    ds, ref = train_ref
    run = str(tmp_path / "run")
    p = subprocess.run([sys.executable, "-c", _KILLER, ",".join(map(str, STEPS)), "vae", "train", ds, run,
                        "--epochs", "1", *_TRAIN], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and p.stdout.split() == ["killed"] * len(STEPS), (p.stdout, p.stderr)
    _resumes_to_the_reference(ds, run, ref)


def test_sigterm_during_setup_then_resume_starts_afresh(train_ref, tmp_path, monkeypatch, one_torch_thread):
    """Killed after config.json, before any checkpoint: --resume starts the run afresh
    (a fresh run without --resume is still refused: the folder holds its settings)."""
    from vae import train as vtrain

    ds, ref = train_ref
    real = vtrain.save_checkpoint

    def save(path, state):
        if path.endswith("init.pt"):
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, state)

    monkeypatch.setattr(vtrain, "save_checkpoint", save)
    run = str(tmp_path / "run")
    assert CliRunner().invoke(main, ["vae", "train", ds, run, "--epochs", "1", *_TRAIN]).exit_code == 143
    assert os.path.isfile(os.path.join(run, "config.json"))
    assert not os.path.exists(os.path.join(run, "checkpoints", "init.pt"))
    monkeypatch.undo()
    assert "already holds a run" in _run("vae", "train", ds, run, "--epochs", "1", *_TRAIN).output
    _resumes_to_the_reference(ds, run, ref)


# ----------------------------------------------------------------------------- kill -9 leftovers (issue 22)

_KILL_AT_RENAME = """
import os, signal, sys
real = os.replace
def replace(src, dst, *a, **k):
    if dst.endswith(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is complete, the rename never happens
    return real(src, dst, *a, **k)
os.replace = replace
from cli.main import main
main(sys.argv[2:])
"""


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_prepare_killed_at_the_rename_then_rerun_removes_its_leftovers(tmp_path, msra_dir):
    pack = str(tmp_path / "objs.h5")
    p = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, "objs.h5", "prepare", msra_dir, pack, "--kind",
                        "objects", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = sorted(os.listdir(tmp_path))
    # no report without its pack; the pack itself stays resumable (prepare writes it as OUT.h5.partial)
    assert left and "objs.h5.report.json" not in left and "objs.h5" not in left, left
    assert all(n.startswith("objs.h5.tmp-") or n == "objs.h5.partial" for n in left), left
    foreign = ["objs.h5.tmp-notes", "objs.h5.tmp-1-zzzzzzzz", f"objs.h5.tmp-{os.getpid()}-0123abcd", "other.tmp-1-ab"]
    for n in foreign:  # not ours, or a live writer's: kept
        (tmp_path / n).write_text("x")
    assert _run("prepare", msra_dir, pack, "--kind", "objects", "--quiet").exit_code == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["objs.h5", "objs.h5.report.json"] + foreign)


def test_encode_rerun_removes_a_killed_encode_leftover(tmp_path):
    pytest.importorskip("torch")
    from vae.encode import write_latents

    out = tmp_path / "lat.h5"
    dead = tmp_path / f"lat.h5.tmp-{_dead_pid()}-0badcafe"
    dead.write_bytes(b"\x89HDF half a file")
    keep = tmp_path / "lat.h5.tmp-mine"
    keep.write_text("x")
    arrays = {"mu": np.zeros((2, 3)), "sigma": np.ones((2, 3)), "count": np.zeros(2), "cumulative_area": np.zeros(2),
              "index": np.arange(2)}
    write_latents(str(out), arrays, {})
    assert sorted(os.listdir(tmp_path)) == ["lat.h5", "lat.h5.tmp-mine"]


# ----------------------------------------------------------------------------- probe / regress inputs


def _latents(path, mu, count, area=None):
    with h5py.File(path, "w") as f:
        f["mu"] = mu
        f["count"] = count
        f["cumulative_area"] = np.arange(len(count)) * 10 + 5 if area is None else area
    return str(path)


@pytest.mark.parametrize("attack", ["float-counts", "one-class", "zero-width-mu", "negative-count"])
def test_bad_latents_are_refused_naming_the_file(tmp_path, attack):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    mu, count = rng.normal(size=(40, 4)), np.arange(40) % 5
    bad = {"float-counts": (mu, count + 0.5, "whole numbers"),
           "one-class": (mu, np.full(40, 2), "only one class"),
           "zero-width-mu": (np.zeros((40, 0)), count, "d >= 1"),
           "negative-count": (mu, count - 3, "count must be >= 0")}
    m, c, words = bad[attack]
    good = _latents(tmp_path / "good.h5", mu, count)
    worse = _latents(tmp_path / "bad.h5", m, c)
    r = _run("vae", "probe", good, worse, "--out", tmp_path / "probe", "--max-epochs", "1")
    _one_line_error(r, 2, "bad.h5", words)
    if attack != "one-class":  # regress needs no classes
        r = _run("vae", "regress", worse, "--out", tmp_path / "reg", "--no-figures", "--permutations", "0")
        _one_line_error(r, 2, "bad.h5", words)
    assert not os.path.exists(tmp_path / "probe") and not os.path.exists(tmp_path / "reg")


# ----------------------------------------------------------------------------- 2: a full disk under hf


def test_hf_export_on_a_full_disk_is_one_line(small, tmp_path):
    """datasets wraps ENOSPC in its DatasetGenerationError (a 60-line traceback before);
    now one line naming DEST, exit 1, nothing left. A 2 MB tmpfs where mounting works,
    else a 2 MB file-size limit (EFBIG takes the same path)."""
    pytest.importorskip("datasets")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    try:
        def limit():
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

        dest = disk / "hf"
        args = ("export", small, dest, "--format", "hf", "--quiet")
        r = _run(*args) if mounted else _cli(*args, timeout=120, preexec_fn=limit)
        _one_line_error(r, 1, "export failed", "cannot write", str(dest))
        assert not os.listdir(disk)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ----------------------------------------------------------------------------- smaller findings


def test_rerun_after_a_killed_overwrite_says_it_put_the_export_back(small, tmp_path):
    """A killed --overwrite leaves the earlier export moved aside in its workspace. The
    next export puts it back and says so, also when it then refuses (no --overwrite)."""
    dest = tmp_path / "out"
    assert _run("export", small, dest, "--format", "imagefolder", "--limit", "5", "--quiet").exit_code == 0
    work = tmp_path / "out.tmp-999999-0123abcd"  # what kill -9 between the two renames leaves
    work.mkdir()
    (work / "out").mkdir()
    os.rename(dest, work / "old")
    r = _run("export", small, dest, "--format", "imagefolder", "--limit", "5", "--quiet")
    assert r.exit_code == 2 and "put back the earlier export" in r.output, r.output
    assert os.path.isfile(dest / "export.json") and not work.exists()


def test_dataset_without_a_manifest_yet(small):
    """While a run writes (or after a killed first run) there is no manifest.json yet:
    readers say so (exit 2) instead of "not a synthcount dataset", and verify checks the
    finished shards against their sidecars (exit 0, saying the manifest is missing)."""
    os.remove(os.path.join(small, "manifest.json"))
    _one_line_error(_run("inspect", small), 2, "no manifest.json yet (4 finished shards)", "rerun the same generate")
    v = _run("verify", small, "--quiet")
    assert v.exit_code == 0 and "OK" in v.output and "400 images in 4 shards" in v.output, v.output
    assert "no manifest.json yet" in v.output
    _tamper_no_manifest = os.path.join(small, "shard-00002.sha256")
    with open(_tamper_no_manifest, "w") as f:
        f.write("0" * 64 + "\n")
    _one_line_error(_run("verify", small, "--quiet"), 1, "shard-00002.h5", "sha256")


def test_the_gate_runs_once_per_shard_not_per_image(small, monkeypatch):
    import synthcount
    from synthcount import reader

    calls = []
    real = reader.check_schema
    monkeypatch.setattr(reader, "check_schema", lambda f, name, *a: calls.append(name) or real(f, name, *a))
    with synthcount.open_dataset(small) as ds:
        for i in range(0, len(ds), 7):
            ds[i]
        ds.close()  # handles reopened later are not checked again
        sum(1 for _ in ds.iter_records())
        ds.labels
    assert sorted(os.path.basename(c) for c in calls) == [f"shard-{k:05d}.h5" for k in range(4)]
