"""Shard format 2: readable by any HDF5 tool, self-describing (names, axes, units), and
format 1 still read (``tests/data/v1``: a dataset written by synthcount 0.1.0's
format-1 writer, 6 images of 32 x 32 in 2 shards, LZF label maps)."""

import json
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest

import synthcount
from synthcount.assets.builtin import builtin_backgrounds, builtin_objects
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.generate import generate_dataset
from synthcount.shards import FORMAT_VERSION, NAME_DATASETS, shard_name, verify_dataset, write_shard

V1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "v1")


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    """A default-settings dataset (built-in assets), 2 shards."""
    out = str(tmp_path_factory.mktemp("v2") / "ds")
    generate_dataset(out, DatasetConfig(num_images=10, shard_size=6, scene=SceneConfig(size=(40, 48))))
    return out


def test_default_shard_readable_by_h5dump(v2, tmp_path):
    """Every dataset of a default shard, dumped by HDF5's own h5dump, equals h5py's values."""
    if shutil.which("h5dump") is None:
        pytest.skip("h5dump not installed (Debian: apt-get install hdf5-tools)")
    path = os.path.join(v2, shard_name(0))
    with h5py.File(path, "r") as f:
        assert f["label_maps"].compression == "gzip"
        for key, d in f.items():
            if key in NAME_DATASETS:
                text = subprocess.run(["h5dump", "-d", f"/{key}", path], capture_output=True, text=True,
                                      check=True).stdout
                for name in d.asstr()[()]:
                    assert f'"{name}"' in text, (key, name)
                continue
            out = tmp_path / f"{key}.bin"
            p = subprocess.run(["h5dump", "-d", f"/{key}", "-b", "LE", "-o", str(out), path],
                               capture_output=True, text=True)
            assert p.returncode == 0 and "error" not in p.stderr.lower(), (key, p.stderr)
            want = np.ascontiguousarray(d[()]).astype(d.dtype.newbyteorder("<")).tobytes()
            assert out.read_bytes() == want, key
    # The same check fails on a format-1 shard: LZF is a filter only h5py has.
    p = subprocess.run(["h5dump", "-d", "/label_maps", "-b", "LE", "-o", str(tmp_path / "v1.bin"),
                        os.path.join(V1, shard_name(0))], capture_output=True, text=True)
    assert p.returncode != 0 and (tmp_path / "v1.bin").stat().st_size == 0


def test_names_axes_and_units_are_stored(v2):
    with h5py.File(os.path.join(v2, shard_name(1)), "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 2
        assert list(f["object_names"].asstr()[()]) == [o.name for o in builtin_objects().objects]
        assert list(f["background_names"].asstr()[()]) == builtin_backgrounds().background_names
        assert int(f["object_ids"][()].max()) < len(f["object_names"])
        per_object = [k for k, d in f.items() if k.startswith("object_") and k not in NAME_DATASETS]
        assert len(per_object) >= 10
        for k in per_object:
            assert f[k].attrs["axes"], k  # every per-object dataset says what its last axis holds
        a = {k: dict(f[k].attrs) for k in f}
    assert a["object_boxes"]["axes"] == "y0,x0,y1,x1" and a["object_boxes"]["units"] == "pixels"
    assert a["object_centroids"]["axes"] == "y,x" and a["object_position"]["axes"] == "y,x"
    assert a["object_patch_size"]["axes"] == "h,w" and a["bg_crop"]["axes"] == "y,x,h,w"
    assert a["object_areas"]["axes"] == "object" and a["object_areas"]["units"] == "pixels"
    assert a["object_angle"]["units"] == "degrees" and "units" not in a["object_scale"]
    assert a["cumulative_area"]["units"] == "pixels"
    with synthcount.open_dataset(v2) as ds:
        assert ds.object_names == [o.name for o in builtin_objects().objects]
        assert ds.background_names[0] == "builtin/skimage/grass"
        assert not set(NAME_DATASETS) & set(ds.fields)  # names are not per-image fields
        rec = ds[7]
        assert not set(NAME_DATASETS) & set(rec) and rec["object_areas"].shape == (4,)


def test_format_1_is_still_read():
    assert verify_dataset(V1) == []
    with synthcount.open_dataset(V1) as ds:
        assert len(ds) == 6 and ds.num_shards == 2 and ds.shard_attrs(1)["format_version"] == 1
        assert ds.object_names is None and ds.background_names is None
        assert ds.config["label_compression"] == "lzf"
        recs = list(ds)
        assert [int(r["index"]) for r in recs] == list(range(6))
        for r in recs:  # the labels agree with the pixels, as written
            hist = np.bincount(r["label_map"].ravel(), minlength=5)[1:]
            np.testing.assert_array_equal(hist, r["object_areas"])
        assert ds.read_images([5, 0]).shape == (2, 32, 32, 3)


def test_newer_format_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "shard-00000.h5")
    n = 2
    recs = {"index": np.arange(n), "count": np.zeros(n, np.int32), "cumulative_area": np.zeros(n, np.int64),
            "object_areas": np.zeros((n, 1), np.int32), "object_full_areas": np.zeros((n, 1), np.int32)}
    attrs = {"format_version": 99, "synthcount_version": "9", "config": "{}", "seed": 0, "shard_index": 0,
             "first_image_index": 0, "end_image_index": n}
    write_shard(path, np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4), np.uint8), recs, attrs)
    with pytest.raises(ValueError, match="format_version 99.*upgrade synthcount"):
        synthcount.open_dataset(path)[0]  # refused at the open (the reader's gate) or at the first read
    assert any("format_version 99" in p for p in verify_dataset(path))


def test_verify_checks_the_names(tmp_path):
    path = str(tmp_path / "shard-00000.h5")
    n = 3
    recs = {"index": np.arange(n), "count": np.ones(n, np.int32), "cumulative_area": np.zeros(n, np.int64),
            "object_areas": np.zeros((n, 1), np.int32), "object_full_areas": np.ones((n, 1), np.int32),
            "object_ids": np.array([[0], [4], [1]], np.int32)}
    attrs = {"format_version": 2, "synthcount_version": "t", "config": json.dumps({}), "seed": 0, "shard_index": 0,
             "first_image_index": 0, "end_image_index": n}
    write_shard(path, np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4), np.uint8), recs, attrs,
                names={"object_names": ["a", "b"], "background_names": ["bg"]})
    problems = verify_dataset(path)
    assert any("object_ids holds 4 but object_names has only 2 entries" in p for p in problems), problems
    with pytest.raises(ValueError, match="names must be keyed by"):
        write_shard(path, np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4), np.uint8), recs, attrs,
                    names={"objects": ["a"]})
