"""HDF5 shard schema, atomic writer, manifest, verify, and the reader (no compositor needed)."""

import json
import multiprocessing as mp
import os
import pickle

import h5py
import numpy as np
import pytest

from synthcount.reader import open_dataset
from synthcount.shards import (
    REQUIRED_ATTRS,
    read_sidecar,
    sha256_file,
    shard_name,
    verify_dataset,
    verify_shard,
    write_manifest,
    write_shard,
)

H, W, M = 12, 10, 3


def _fake_shard(k, n, first, seed=0):
    """Consistent synthetic shard content: rectangles in the label maps, areas from pixels."""
    rng = np.random.default_rng(seed + k)
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    maps = np.zeros((n, H, W), np.uint8)
    count = rng.integers(0, M + 1, n).astype(np.int32)
    for i in range(n):
        for j in range(count[i]):
            y, x = 4 * j, int(rng.integers(0, 5))
            maps[i, y:y + 3, x:x + 4] = j + 1
    areas = np.stack([(maps == j + 1).sum(axis=(1, 2)) for j in range(M)], axis=1).astype(np.int32)
    records = {
        "index": np.arange(first, first + n, dtype=np.int64),
        "count": count,
        "cumulative_area": areas.sum(axis=1).astype(np.int64),
        "object_areas": areas,
        "object_full_areas": areas + (areas > 0),
        "field_area": rng.random(n).astype(np.float32),
    }
    attrs = {"format_version": 1, "synthcount_version": "test", "config": json.dumps({"seed": 5}), "seed": 5,
             "shard_index": k, "first_image_index": first, "end_image_index": first + n}
    return images, maps, records, attrs


def _fake_dataset(folder, sizes=(5, 7, 3)):
    os.makedirs(folder, exist_ok=True)
    first = 0
    for k, n in enumerate(sizes):
        write_shard(os.path.join(folder, shard_name(k)), *_fake_shard(k, n, first), label_compression="lzf")
        first += n
    write_manifest(folder, len(sizes))
    return folder


def test_write_shard_schema_atomic_and_deterministic(tmp_path):
    content = _fake_shard(0, 6, 0)
    p1, p2 = str(tmp_path / "a" / "shard-00000.h5"), str(tmp_path / "b" / "shard-00000.h5")
    os.makedirs(os.path.dirname(p1)), os.makedirs(os.path.dirname(p2))
    d1 = write_shard(p1, *content, compression="lzf")
    d2 = write_shard(p2, *content, compression="lzf")
    assert d1 == d2 == sha256_file(p1) == sha256_file(p2) == read_sidecar(p1)  # byte-identical, no timestamps
    assert sorted(os.listdir(os.path.dirname(p1))) == ["shard-00000.h5", "shard-00000.sha256"]
    with h5py.File(p1, "r") as f:
        assert set(REQUIRED_ATTRS) <= set(f.attrs)
        assert f["images"].dtype == np.uint8 and f["images"].shape == (6, H, W, 3)
        assert f["images"].chunks == (1, H, W, 3) and f["images"].compression == "lzf"
        assert f["label_maps"].chunks == (1, H, W)
        assert f["object_areas"].shape == (6, M)
        np.testing.assert_array_equal(f["count"][()], content[2]["count"])
    assert verify_shard(p1) == []


def test_write_shard_failure_leaves_no_temp_file(tmp_path):
    images, maps, records, attrs = _fake_shard(0, 4, 0)
    records["bad"] = np.array([object()] * 4, dtype=object)  # h5py cannot store it
    p = str(tmp_path / "shard-00000.h5")
    with pytest.raises(TypeError):
        write_shard(p, images, maps, records, attrs)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="first axis"):
        write_shard(p, images, maps, {"count": np.zeros(3)}, attrs)


def test_reader_len_access_labels_iteration(tmp_path):
    folder = _fake_dataset(str(tmp_path / "ds"))
    man = json.load(open(os.path.join(folder, "manifest.json")))
    assert man["num_images"] == 15 and [s["num_images"] for s in man["shards"]] == [5, 7, 3] and man["complete"]
    with open_dataset(folder) as ds:
        assert len(ds) == 15 and ds.image_size == (H, W) and ds.config == {"seed": 5}
        _, maps1, rec1, _ = _fake_shard(1, 7, 5)
        r = ds[8]  # shard 1, local 3
        assert r["index"] == 8 and r["count"] == rec1["count"][3]
        np.testing.assert_array_equal(r["label_map"], maps1[3])
        np.testing.assert_array_equal(r["object_areas"], rec1["object_areas"][3])
        assert ds[-1]["index"] == 14 and ds[-15]["index"] == 0
        with pytest.raises(IndexError):
            ds[15]
        lab = ds.labels
        # The stored scalars, and the visual properties a shard without them gets on read.
        from synthcount.reader import _COMPUTED

        computed = {k for k, (_dt, shape) in _COMPUTED.items() if shape == ()}
        assert set(lab.dtype.names) == {"index", "count", "cumulative_area", "field_area", "shard"} | computed
        np.testing.assert_array_equal(lab["index"], np.arange(15))
        np.testing.assert_array_equal(lab["shard"], [0] * 5 + [1] * 7 + [2] * 3)
        seen = [r["index"] for r in ds]
        assert seen == list(range(15))
        idx = [14, 2, 8, 2, -1]
        batch = ds.read_images(idx)
        assert batch.shape == (5, H, W, 3)
        for b, i in zip(batch, idx):
            np.testing.assert_array_equal(b, ds[i]["image"])
        assert ds.column("object_areas").shape == (15, M)


def _worker_read(i):
    ds = _DS["ds"]
    r = ds[i]
    return int(r["index"]), int(r["image"].astype(np.int64).sum()), os.getpid()


_DS = {}


def test_reader_in_forked_workers_and_pickled(tmp_path):
    folder = _fake_dataset(str(tmp_path / "ds"))
    ds = open_dataset(folder)
    expected = [int(ds[i]["image"].astype(np.int64).sum()) for i in range(len(ds))]  # parent opens handles first
    _DS["ds"] = ds
    try:
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(_worker_read, list(range(15)) * 2, chunksize=3)
    finally:
        _DS.clear()
    assert [g[0] for g in got] == list(range(15)) * 2
    assert [g[1] for g in got] == expected * 2
    assert all(g[2] != os.getpid() for g in got)
    assert ds[3]["index"] == 3  # parent's handles still good after the children
    ds2 = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(ds2[9]["image"], ds[9]["image"])
    ds.close()


def test_verify_names_bad_shard(tmp_path):
    folder = _fake_dataset(str(tmp_path / "ds"))
    assert verify_dataset(folder) == []
    bad = os.path.join(folder, shard_name(1))
    with h5py.File(bad, "r+") as f:  # label map no longer agrees with object_areas
        lm = f["label_maps"][2]
        lm[0, 0] = 1 if lm[0, 0] != 1 else 2
        f["label_maps"][2] = lm
    single = verify_shard(bad)
    assert len(single) == 1 and "shard-00001.h5" in single[0] and "image 2" in single[0]
    problems = verify_dataset(folder)
    assert len(problems) == 1 and problems[0].startswith("shard-00001.h5: sha256")
    with h5py.File(os.path.join(folder, shard_name(2)), "r+") as f:
        f["cumulative_area"][0] += 1
    assert "cumulative_area" in verify_shard(os.path.join(folder, shard_name(2)))[0]
    os.remove(os.path.join(folder, shard_name(0)))
    assert any(p.startswith("shard-00000.h5: missing") for p in verify_dataset(folder))


def test_reader_keeps_a_bounded_number_of_files_open(tmp_path):
    import subprocess
    import sys

    from synthcount.config import DatasetConfig, SceneConfig
    from synthcount.generate import generate_dataset
    from synthcount.reader import Dataset

    out = str(tmp_path / "ds")
    generate_dataset(out, DatasetConfig(num_images=120, shard_size=1, seed=3, scene=SceneConfig(size=(16, 16))))
    ref = open_dataset(out)
    want = [ref[i] for i in range(120)]
    ref.close()
    ds = Dataset(out, max_open=3)
    order = np.random.default_rng(0).permutation(120)
    for i in order:  # random access over 120 shards, 3 files open at most
        np.testing.assert_array_equal(ds[int(i)]["image"], want[i]["image"])
        assert len(ds._handles) <= 3
    # iterating while other shards are read between the records: the iterator's file
    # may be closed under it and is opened again
    for j, rec in enumerate(ds.iter_records()):
        np.testing.assert_array_equal(rec["label_map"], want[j]["label_map"])
        ds[int(order[j])]
    np.testing.assert_array_equal(ds.read_images(order), np.stack([want[i]["image"] for i in order]))
    assert len(ds.labels) == 120 and len(ds._handles) <= 3
    # Under a limit of 64 descriptors (a quarter of macOS's 256), every image still reads.
    code = ("import resource, sys, synthcount\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "ds = synthcount.open_dataset(sys.argv[1])\n"
            "print(sum(int(r['count']) for r in ds), sum(int(ds[i]['count']) for i in range(len(ds))))")
    p = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120)
    total = sum(int(r["count"]) for r in want)
    assert p.returncode == 0 and p.stdout.split() == [str(total)] * 2, p.stderr[-2000:]
