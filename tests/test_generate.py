"""Determinism, parallelism, pieces, resume after kill -9, identity checks, run failures."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from synthcount.config import DatasetConfig, SceneConfig, SourceConfig
from synthcount.generate import generate_dataset
from synthcount.reader import open_dataset
from synthcount.shards import FORMAT_VERSION, verify_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(msra_dir, sun_dir, **kw):
    base = dict(scene=SceneConfig(size=(64, 64), min_visible=0.5),
                sources=SourceConfig(objects=msra_dir, backgrounds=sun_dir),
                num_images=30, shard_size=10, seed=3)
    base.update(kw)
    return DatasetConfig(**base)


def _hashes(folder):
    man = json.load(open(os.path.join(folder, "manifest.json")))
    return man["num_images"], [(s["file"], s["num_images"], s["sha256"]) for s in man["shards"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, msra_dir, sun_dir):
    """The uninterrupted single-process run every other run is compared with."""
    out = str(tmp_path_factory.mktemp("gen") / "ref")
    res = generate_dataset(out, _cfg(msra_dir, sun_dir), workers=1, progress=False)
    assert res.images_written == 30 and res.shards_made == [0, 1, 2] and res.complete
    return out


def test_schema_attributes_and_areas_from_pixels(reference, msra_dir, sun_dir):
    assert verify_dataset(reference) == []
    import h5py

    with h5py.File(os.path.join(reference, "shard-00001.h5"), "r") as f:
        a = dict(f.attrs)
        assert a["shard_index"] == 1 and a["first_image_index"] == 10 and a["end_image_index"] == 20
        assert a["seed"] == 3 and a["format_version"] == FORMAT_VERSION == 2
        assert json.loads(a["config"]) == json.loads(_cfg(msra_dir, sun_dir).to_json())
        assert f["images"].chunks == (1, 64, 64, 3) and f["label_maps"].dtype == np.uint8
    with open_dataset(reference) as ds:
        assert len(ds) == 30
        for r in ds:  # stored areas are label-map pixel counts
            hist = np.bincount(r["label_map"].ravel(), minlength=r["object_areas"].size + 1)
            np.testing.assert_array_equal(hist[1:], r["object_areas"])
            assert r["cumulative_area"] == r["object_areas"].sum()
            assert np.count_nonzero(hist[1:]) <= r["count"]
        assert set(np.unique(ds.labels["count"])) <= set(range(5))


def test_workers_and_shard_size_do_not_change_output(reference, tmp_path, msra_dir, sun_dir):
    two = str(tmp_path / "two")
    res = generate_dataset(two, _cfg(msra_dir, sun_dir), workers=2, progress=False)
    assert res.shards_made == [0, 1, 2]
    assert _hashes(two) == _hashes(reference)  # byte-identical shard files
    seven = str(tmp_path / "seven")
    generate_dataset(seven, _cfg(msra_dir, sun_dir, shard_size=7), workers=2, progress=False)
    with open_dataset(reference) as a, open_dataset(seven) as b:
        assert b.num_shards == 5 and len(b) == len(a) == 30
        idx = np.arange(30)
        np.testing.assert_array_equal(a.read_images(idx), b.read_images(idx))
        np.testing.assert_array_equal(a.read_label_maps(idx), b.read_label_maps(idx))
        for name in ("count", "object_areas", "object_full_areas", "object_boxes", "object_angle"):
            np.testing.assert_array_equal(a.column(name), b.column(name))


def test_pieces_add_up_and_resume_keeps_shards(reference, tmp_path, msra_dir, sun_dir):
    out = str(tmp_path / "pieces")
    r1 = generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(2, 3), progress=False)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert r1.shards_made == [2] and not r1.complete and man["num_images"] == 10 and not man["complete"]
    r2 = generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(0, 2), workers=2, progress=False)
    assert r2.shards_made == [0, 1] and r2.complete
    assert _hashes(out) == _hashes(reference)
    mtime = os.stat(os.path.join(out, "shard-00001.h5")).st_mtime_ns
    r3 = generate_dataset(out, _cfg(msra_dir, sun_dir), progress=False)  # nothing left to do
    assert r3.shards_made == [] and r3.shards_skipped == [0, 1, 2] and r3.images_written == 0
    assert os.stat(os.path.join(out, "shard-00001.h5")).st_mtime_ns == mtime
    with pytest.raises(ValueError, match="shards must be"):
        generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(2, 4), progress=False)


def test_different_config_refused_overwrite_replaces(reference, tmp_path, msra_dir, sun_dir):
    out = str(tmp_path / "ow")
    generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(0, 1), progress=False)
    before = sorted(os.listdir(out))
    with pytest.raises(ValueError, match="different dataset.*seed"):
        generate_dataset(out, _cfg(msra_dir, sun_dir, seed=4), progress=False)
    assert sorted(os.listdir(out)) == before
    res = generate_dataset(out, _cfg(msra_dir, sun_dir, seed=4, num_images=10), overwrite=True, progress=False)
    assert res.shards_made == [0] and res.complete
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["num_images"] == 10 and man["shards"][0]["sha256"] != _hashes(reference)[1][0][2]
    with open_dataset(out) as ds:
        assert ds.config["seed"] == 4


_KILL_SCRIPT = r"""
import sys, time
from synthcount import compose
from synthcount.config import DatasetConfig
from synthcount.generate import generate_dataset
orig = compose.Composer.compose
def slow(self, seed, index):  # slows the run down so it can be killed mid-way; output unchanged
    time.sleep(0.03)
    return orig(self, seed, index)
compose.Composer.compose = slow
generate_dataset(sys.argv[1], DatasetConfig.from_json(sys.argv[2]), workers=int(sys.argv[3]), progress=False)
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_kill_9_matches_uninterrupted(tmp_path, msra_dir, sun_dir, workers):
    # Six shards, so that the run is still busy when the first one lands.
    cfg = _cfg(msra_dir, sun_dir, num_images=240, shard_size=40)
    ref = str(tmp_path / "ref")
    generate_dataset(ref, cfg, progress=False)
    out = str(tmp_path / "killed")
    p = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, out, cfg.to_json(), str(workers)], cwd=ROOT)
    first = os.path.join(out, "shard-00000.h5")
    t0 = time.time()
    while not os.path.exists(first) and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    time.sleep(0.2)  # orphaned pool workers notice the dead parent and exit
    missing = [k for k in range(6) if not os.path.exists(os.path.join(out, f"shard-{k:05d}.h5"))]
    assert missing, "every shard was finished before the kill"
    stale = missing[-1]
    open(os.path.join(out, f"shard-{stale:05d}.h5.tmp-999999"), "wb").write(b"half a shard")  # stale temp file
    res = generate_dataset(out, cfg, progress=False)
    assert 0 in res.shards_skipped and stale in res.shards_made
    assert _hashes(out) == _hashes(ref)
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_placement_error_keeps_finished_shards(tmp_path, msra_dir, sun_dir, monkeypatch):
    from synthcount import compose

    orig = compose.Composer.compose_into

    def failing(self, seed, index, *args):
        if index == 25:
            raise compose.PlacementError("could not lay out image 25 (test)")
        return orig(self, seed, index, *args)

    monkeypatch.setattr(compose.Composer, "compose_into", failing)
    out = str(tmp_path / "fail")
    with pytest.raises(compose.PlacementError, match="image 25"):
        generate_dataset(out, _cfg(msra_dir, sun_dir), workers=2, progress=False)
    names = os.listdir(out)
    assert "shard-00002.h5" not in names and not [n for n in names if ".tmp-" in n]
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert [s["file"] for s in man["shards"]] == sorted(n for n in names if n.endswith(".h5"))
    assert verify_dataset(out) == []


def test_pieces_from_sources_at_another_path_resume(tmp_path, reference, msra_dir, sun_dir):
    """A cluster node may mount the same sources elsewhere: identity is content, not path."""
    import shutil

    moved = str(tmp_path / "moved-msra")
    shutil.copytree(msra_dir, moved)
    out = str(tmp_path / "pieces")
    generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(0, 1), progress=False)
    generate_dataset(out, _cfg(moved, sun_dir), shards=(1, 3), progress=False)
    with open_dataset(out) as a, open_dataset(reference) as b:
        assert len(a) == len(b) == 30
        np.testing.assert_array_equal(a.read_images(range(30)), b.read_images(range(30)))


def test_bytes_do_not_depend_on_the_cpus_simd(tmp_path):
    """OpenCV picks SIMD code by CPU (AVX2/FMA or SSE only): the shards must not change.

    Two subprocesses make the same dataset, one with OpenCV's dispatch to AVX, AVX2,
    FMA3 and SSE4 switched off, as on an older or different CPU.
    """
    cfg = ('{"num_images": 60, "shard_size": 30, "scene": {"size": [96, 96], "min_visible": 0.6, '
           '"color_jitter": 0.3, "blend": "feather"}}')
    path = tmp_path / "cfg.json"
    path.write_text(cfg)
    sums = []
    for k, disable in enumerate(("", "SSE4_1,SSE4_2,AVX,AVX2,FMA3,POPCNT,F16C,FP16")):
        env = dict(os.environ, OPENCV_CPU_DISABLE=disable)
        out = str(tmp_path / f"d{k}")
        p = subprocess.run([sys.executable, "-m", "cli.main", "generate", out, "--config", str(path), "--quiet"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        sums.append(_hashes(out))
    assert sums[0] == sums[1]
