"""Reliability at full scale: concurrent runs, interrupted pieces, a full disk, malformed
files, unfit objects, bad names and bad numbers. Each case ends in a clean exit that
names what went wrong, and nothing already finished is lost."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from synthcount.config import DatasetConfig, SceneConfig, SourceConfig
from synthcount.generate import generate_dataset, plan_generation
from synthcount.rng import image_rng
from synthcount.shards import verify_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = [sys.executable, "-m", "cli.main", "generate"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _popen(*args):
    return subprocess.Popen(GEN + [str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _tmp_files(folder):
    return [n for n in os.listdir(folder) if ".tmp-" in n]


# ----------------------------------------------------------------------------- one writer per folder

def test_two_runs_with_different_seeds_never_both_succeed(tmp_path):
    """The race of the report: both used to exit 0 with one seed's shards under the
    other's dataset.json. Now one is refused (exit 2, naming the holder or the
    difference) and the folder holds one consistent dataset."""
    out = tmp_path / "d"
    common = ["--num-images", "300", "--size", "64", "--shard-size", "25", "--quiet"]
    a, b = _popen(out, *common, "--seed", "1"), _popen(out, *common, "--seed", "2")
    ra, rb = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (ra, rb)
    loser = ra if a.returncode == 2 else rb
    assert "pid" in loser[1] or "different dataset" in loser[1], loser
    assert len(loser[1].strip().splitlines()) == 1  # one line, no traceback
    assert verify_dataset(str(out)) == []
    seed = json.load(open(out / "dataset.json"))["config"]["seed"]
    import h5py

    for name in sorted(os.listdir(out)):
        if name.endswith(".h5"):
            with h5py.File(out / name, "r") as f:
                assert int(f.attrs["seed"]) == seed


def test_second_run_into_a_busy_folder_exits_2_naming_the_pid(tmp_path, msra_dir, sun_dir):
    from synthcount.locks import FolderLock

    out = tmp_path / "busy"
    out.mkdir()
    with FolderLock(str(out), exclusive=True):
        r = _run("generate", out, "--num-images", "10", "--size", "48", "--quiet")
    assert r.exit_code == 2 and f"pid {os.getpid()}" in r.output and "--wait" in r.output
    assert not (out / "dataset.json").exists()
    # Pieces share the folder; a whole run is kept out while one works.
    with FolderLock(str(out), exclusive=False):
        r = _run("generate", out, "--num-images", "10", "--size", "48", "--shard-size", "5", "--shards", "0:1",
                 "--quiet")
        assert r.exit_code == 0, r.output
        r = _run("generate", out, "--num-images", "10", "--size", "48", "--shard-size", "5", "--quiet")
        assert r.exit_code == 2 and "pid" in r.output


def test_concurrent_overlapping_pieces_make_each_shard_once(tmp_path):
    """Pieces 0:8 and 4:12 at once into one folder add up to the single-run dataset,
    byte for byte (per-shard locks: a shard is never made twice or half)."""
    common = ["--num-images", "240", "--size", "48", "--shard-size", "20", "--quiet"]
    ref = tmp_path / "ref"
    assert subprocess.run(GEN + [str(ref)] + common, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "pieces"
    a, b = _popen(out, *common, "--shards", "0:8"), _popen(out, *common, "--shards", "4:12")
    ra, rb = a.communicate(timeout=300), b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (ra, rb)
    # A last run lists everything (each piece rewrote the manifest when it ended).
    assert _run("generate", out, *common).exit_code == 0
    want = json.load(open(ref / "manifest.json"))["shards"]
    got = json.load(open(out / "manifest.json"))["shards"]
    assert [(s["file"], s["sha256"]) for s in got] == [(s["file"], s["sha256"]) for s in want]
    assert not _tmp_files(out) and verify_dataset(str(out)) == []


def test_interrupted_piece_leaves_the_folder_to_the_other(tmp_path):
    """Two pieces start together into a new folder; the first is interrupted (Ctrl-C)
    early. It must not delete the folder or the other's files: the other completes."""
    out = tmp_path / "pieces"
    common = ["--num-images", "400", "--size", "96", "--shard-size", "200", "--quiet"]
    a = _popen(out, *common, "--shards", "0:1")
    b = _popen(out, *common, "--shards", "1:2")
    deadline = time.time() + 60
    while not (out / ".locks").is_dir() and time.time() < deadline:
        time.sleep(0.02)
    a.send_signal(signal.SIGINT)
    a.communicate(timeout=120)
    rb = b.communicate(timeout=300)
    assert b.returncode == 0, rb
    assert (out / "shard-00001.h5").exists() and not _tmp_files(out)
    assert verify_dataset(str(out)) == []


def test_failed_fresh_run_removes_only_its_own_empty_folder(tmp_path, monkeypatch, msra_dir, sun_dir):
    from synthcount import compose

    def boom(self, *a, **k):
        raise compose.PlacementError("image 0: test failure")

    monkeypatch.setattr(compose.Composer, "compose_into", boom)
    cfg = DatasetConfig(scene=SceneConfig(size=(48, 48)), num_images=4, shard_size=2)
    fresh = tmp_path / "fresh"
    with pytest.raises(compose.PlacementError):
        generate_dataset(str(fresh), cfg)
    assert not fresh.exists()  # made by the run, nothing else in it: removed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(compose.PlacementError):
        generate_dataset(str(kept), cfg)
    assert (kept / "notes.txt").read_text() == "mine"  # not made by the run: kept as it was


# ----------------------------------------------------------------------------- the layout budget

def _cutouts(folder, shapes):
    """RGBA cut-outs: name -> (h, w) opaque rectangles on a transparent margin."""
    os.makedirs(folder, exist_ok=True)
    for name, (h, w) in shapes.items():
        rgba = np.zeros((h + 4, w + 4, 4), np.uint8)
        rgba[2:-2, 2:-2] = (200, 60, 30, 255)
        path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else name.encode())
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        with open(path, "wb") as f:
            f.write(buf.tobytes())
    return folder


def _unfit_config(objects, **kw):
    # Two copies of a 35-38 px square cannot sit side by side in 64 px (t = 1); two
    # thin bars of that length fit easily.
    scene = SceneConfig(size=(64, 64), max_count=2, count_probs=(0.0, 0.5, 0.5), min_visible=1.0,
                        ref_side_range=(0.55, 0.6), scale_jitter=(1.0, 1.0), rotation_range=(0.0, 0.0), flip_p=0.0,
                        **kw)
    return DatasetConfig(scene=scene, sources=SourceConfig(objects=objects), num_images=200, shard_size=100, seed=4)


def test_unfit_object_refused_at_plan_time_or_redrawn(tmp_path):
    objects = _cutouts(str(tmp_path / "cut"), {"bar.png": (6, 100), "square.png": (60, 60)})
    with pytest.raises(ValueError, match=r"'square.png' cannot be laid out 2 times.*--object-size"):
        plan_generation(str(tmp_path / "no"), _unfit_config(objects))
    assert not (tmp_path / "no").exists()
    r = _run("generate", tmp_path / "no", "--config", _write_cfg(tmp_path, _unfit_config(objects)), "--quiet")
    assert r.exit_code == 2 and "square.png" in r.output and "--unfit redraw" in r.output

    cfg = _unfit_config(objects, unfit="redraw")
    res = generate_dataset(str(tmp_path / "yes"), cfg)
    assert res.complete and res.layout_survey["unfit"] == {"2": [1]}
    from synthcount.reader import open_dataset

    with open_dataset(str(tmp_path / "yes")) as ds:
        lab, ids = ds.labels, ds.column("object_ids")
    two = lab["count"] == 2
    assert (ids[two] == 0).all()  # N = 2 images hold only the bar
    assert (lab["unfit_redraws"][two] > 0).any() and (lab["unfit_redraws"][~two] == 0).all()
    # N comes first from each image's stream and is never changed by a redraw.
    probs = np.array(cfg.scene.count_distribution())
    want = [int(image_rng(cfg.seed, i).choice(3, p=probs)) for i in range(cfg.num_images)]
    assert lab["count"].tolist() == want
    assert verify_dataset(str(tmp_path / "yes")) == []


def _write_cfg(tmp_path, cfg):
    p = tmp_path / "cfg.json"
    p.write_text(cfg.to_json())
    return p


def test_layout_budget_follows_the_failure_probability():
    from synthcount.survey import POISSON_LOWER_4, budget_for

    b = budget_for(POISSON_LOWER_4 / 186, 1e-12)  # 4 fits in 186 trials
    p = POISSON_LOWER_4 / 186
    assert (1 - p) ** b <= 1e-12 < (1 - p) ** (b - 1)
    assert budget_for(1.0, 1e-12) == 1


def test_paper_preset_at_full_survey_budget_recorded(tmp_path):
    """The default (paper) config: the budget comes from the survey, is stored in every
    shard and dataset.json, and inspect shows the layout tail against it."""
    cfg = DatasetConfig(num_images=60, shard_size=30, seed=1)
    res = generate_dataset(str(tmp_path / "p"), cfg)
    assert res.layout_budget > 1000 and res.max_layout_tries <= res.layout_budget
    ident = json.load(open(tmp_path / "p" / "dataset.json"))
    assert ident["layout_survey"]["budget"] == res.layout_budget and ident["layout_survey"]["unfit"] == {}
    r = _run("inspect", tmp_path / "p", "--json")
    s = json.loads(r.output)
    assert s["layout_budget"] == res.layout_budget and set(s["layouts_by_count"]["4"]) == {"mean", "p99", "max"}
    assert "of the" in _run("inspect", tmp_path / "p").output


# ----------------------------------------------------------------------------- full disk

def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.decode().strip()[:80]}); the fault-injection test covers it")
    return path


@pytest.fixture
def small_disk(tmp_path):
    path = _mount_tmpfs(str(tmp_path / "small"), "3m")
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)


def test_generate_and_prepare_on_a_full_disk(small_disk, tmp_path, msra_dir):
    out = os.path.join(small_disk, "ds")
    p = subprocess.run(GEN + [out, "--num-images", "200", "--size", "96", "--shard-size", "20", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    assert "No space left on device" in p.stderr and "shard-" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not _tmp_files(out)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["shards"] and verify_dataset(out) == []  # finished shards intact and listed
    # prepare into the full disk: exit 1, no pack, no report, no temp file.
    st = os.statvfs(small_disk)
    with open(os.path.join(small_disk, "filler"), "wb") as f:  # leave 16 KiB free
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (16 << 10)))
    pack = os.path.join(small_disk, "objects.h5")
    r = subprocess.run([sys.executable, "-m", "cli.main", "prepare", msra_dir, pack, "--kind", "objects", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "No space left" in r.stderr and "Traceback" not in r.stderr
    assert not [n for n in os.listdir(small_disk) if n.startswith("objects.h5")]


def test_write_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    """Fault injection (works where no tmpfs can be mounted): the third shard finds no
    space for its reservation; in a second run an I/O error hits a shard after HDF5
    wrote it."""
    import synthcount.shards as shards_mod

    real_reserve, real_trunc = shards_mod.reserve_space, shards_mod.truncate_to_eoa
    calls = {"n": 0}

    def no_space(fd, nbytes, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise shards_mod.WriteError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real_reserve(fd, nbytes, path)

    monkeypatch.setattr(shards_mod, "reserve_space", no_space)
    out = tmp_path / "d"
    args = ["generate", out, "--num-images", "50", "--size", "48", "--shard-size", "10", "--quiet"]
    r = _run(*args)
    assert r.exit_code == 1 and "shard-00002.h5: No space left" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert sorted(n for n in os.listdir(out) if n.endswith(".h5")) == ["shard-00000.h5", "shard-00001.h5"]
    assert not _tmp_files(out) and verify_dataset(str(out)) == []

    def io_error(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(shards_mod, "reserve_space", real_reserve)
    monkeypatch.setattr(shards_mod, "truncate_to_eoa", io_error)
    r = _run(*args)
    assert r.exit_code == 1 and "cannot write" in r.output and "shard-00002.h5" in r.output
    assert not _tmp_files(out) and verify_dataset(str(out)) == []
    monkeypatch.setattr(shards_mod, "truncate_to_eoa", real_trunc)
    assert _run(*args).exit_code == 0 and verify_dataset(str(out)) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    from synthcount._io import WriteError, atomic_write, write_json_atomic

    p = str(tmp_path / "x.json")
    write_json_atomic(p, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.load(open(p)) == {"a": None, "b": [1.0, None]}  # strict JSON: null, never NaN
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as f:
            f.write("partial")
            raise RuntimeError("killed midway")
    assert json.load(open(p))["a"] is None and os.listdir(tmp_path) == ["x.json"]
    with pytest.raises(WriteError, match="cannot write .*nope"):
        with atomic_write(str(tmp_path / "missing" / "nope"), "w"):
            pass


# ----------------------------------------------------------------------------- malformed input

@pytest.mark.parametrize("entry, words", [
    ({"file": "../other/shard-00000.h5", "num_images": 5, "sha256": None}, "shard name"),
    ({"file": "/abs/shard-00000.h5", "num_images": 5, "sha256": None}, "shard name"),
    ("shard-00000.h5", "must be an object"),
    ({"file": "shard-00000.h5", "num_images": "5", "sha256": None}, "num_images"),
    ({"file": "shard-00000.h5", "num_images": 5, "sha256": 12}, "sha256"),
])
def test_malformed_manifest_entries_are_one_line_errors(tmp_path, entry, words):
    out = tmp_path / "d"
    assert _run("generate", out, "--num-images", "5", "--size", "48", "--quiet").exit_code == 0
    man = json.load(open(out / "manifest.json"))
    man["shards"][0] = entry
    (out / "manifest.json").write_text(json.dumps(man))
    r = _run("verify", out)
    assert r.exit_code == 1 and words in r.output
    r = _run("inspect", out)
    assert r.exit_code == 2 and words in r.output
    from synthcount.reader import open_dataset

    with pytest.raises(ValueError, match=words):
        open_dataset(str(out))


def test_truncated_shard_named_on_resume_and_read(tmp_path):
    out = tmp_path / "d"
    assert _run("generate", out, "--num-images", "20", "--size", "48", "--shard-size", "10", "--quiet").exit_code == 0
    shard = out / "shard-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    r = _run("generate", out, "--num-images", "20", "--size", "48", "--shard-size", "10", "--quiet")
    assert r.exit_code == 1 and "shard-00001.h5" in r.output and "unreadable" in r.output
    from synthcount.reader import ShardReadError, open_dataset

    with open_dataset(str(out)) as ds:
        with pytest.raises(ShardReadError, match="shard-00001.h5"):
            ds.read_images(range(20))


def test_non_utf8_file_names_are_recorded_escaped(tmp_path):
    src = _cutouts(str(tmp_path / "cut"), {b"bar\xff.png": (6, 30), "disc.png": (20, 20)})
    out = tmp_path / "d"
    r = _run("generate", out, "--objects", src, "--num-images", "10", "--size", "64", "--quiet")
    assert r.exit_code == 0, r.output
    pack = tmp_path / "objects.h5"
    r = _run("prepare", src, pack, "--kind", "objects", "--quiet")
    assert r.exit_code == 0, r.output
    from synthcount.pack import load_pack

    names = [o.name for o in load_pack(str(pack)).objects]
    assert names == ["bar\\xff.png", "disc.png"]
    json.load(open(str(pack) + ".report.json"))  # valid JSON
    r = _run("generate", tmp_path / "d2", "--objects", pack, "--num-images", "10", "--size", "64", "--quiet")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, words", [
    (["", "--num-images", "3"], "must not be empty"),
    (["{out}", "--num-images", "1000", "--size", "1024", "--shard-size", "1000", "--workers", "2"], "--shard-size"),
])
def test_bad_requests_exit_2_and_write_nothing(tmp_path, monkeypatch, args, words):
    import synthcount.generate as gen

    monkeypatch.setattr(gen, "mem_available", lambda: 100 << 20)  # a machine with 100 MiB free
    args = [a.replace("{out}", str(tmp_path / "d")) for a in args]
    r = _run("generate", *args, "--quiet")
    assert r.exit_code == 2 and words in r.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("scene, words", [
    ({"max_tries_per_object": 100000000}, "max_tries_per_object"),
    ({"max_layouts": 10**9}, "max_layouts"),
    ({"layout_failure_prob": 0.5}, "layout_failure_prob"),
    ({"unfit": "skip"}, "unfit"),
])
def test_config_numbers_have_sane_bounds(tmp_path, scene, words):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"num_images": 5, "scene": scene}))
    r = _run("generate", tmp_path / "d", "--config", p, "--quiet")
    assert r.exit_code == 2 and words in r.output and not (tmp_path / "d").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_exits_2(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _run("generate", ro, "--num-images", "3", "--quiet")
        assert r.exit_code == 2 and "not writable" in r.output
    finally:
        ro.chmod(0o755)


def test_one_large_image_uses_memory_for_one_image(tmp_path):
    """Memory is sized by blocks of images, never by the shard size (a 1-image shard at
    1024x1024 used to reserve shard_size = 1000 images of that size)."""
    from synthcount.config import DatasetConfig
    from synthcount.generate import shard_memory

    assert shard_memory(DatasetConfig(num_images=10**6, shard_size=10**5)) < 400 << 20
    out = tmp_path / "big"
    r = _run("generate", out, "--num-images", "1", "--size", "1024", "--quiet")
    assert r.exit_code == 0, r.output
    assert verify_dataset(str(out)) == []
