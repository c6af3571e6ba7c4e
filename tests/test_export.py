"""``synthcount export``: a 300-image dataset exported to every format and read back
through the real readers (pycocotools, webdataset, datasets, torchvision's
ImageFolder), masks, areas, counts and points included; selection, density maps,
atomicity and exit codes."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import synthcount
from cli.main import main
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.export import MARKER, density_map, export_dataset
from synthcount.generate import generate_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 48, 64  # not square: a swapped x and y shows
# pycocotools' annToMask calls numpy 2 in a deprecated way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def ds300(tmp_path_factory):
    """300 images in 3 shards, N different objects per image, overlap allowed (t = 0.5)."""
    out = str(tmp_path_factory.mktemp("ds300") / "ds")
    generate_dataset(out, DatasetConfig(num_images=300, shard_size=100, seed=7,
                                        scene=SceneConfig(size=(H, W), mode="mixed", min_visible=0.5)))
    with synthcount.open_dataset(out) as ds:
        recs = list(ds)
    assert {int(r["count"]) for r in recs} == {0, 1, 2, 3, 4}
    assert any((r["object_areas"] < r["object_full_areas"]).any() for r in recs)  # some objects are occluded
    return out, recs


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _check_objects(rec, areas, boxes_xywh, points, category_ids):
    """Per-object values of one exported image against the shard's record."""
    n = int(rec["count"])
    assert len(areas) == len(boxes_xywh) == len(category_ids) == n
    np.testing.assert_array_equal(areas, rec["object_areas"][:n])
    y0, x0, y1, x1 = rec["object_boxes"][:n].T
    np.testing.assert_array_equal(np.asarray(boxes_xywh, np.int64).reshape(n, 4),
                                  np.stack([x0, y0, x1 - x0, y1 - y0], 1))
    np.testing.assert_allclose(np.asarray(points, np.float64).reshape(n, 2), rec["object_centroids"][:n, ::-1],
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(category_ids) - 1, rec["object_ids"][:n])


def test_coco_loads_with_pycocotools(ds300, tmp_path):
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    path, recs = ds300
    dest = str(tmp_path / "coco")
    res = export_dataset(path, dest, "coco", points=True, density=2.0)
    assert res.num_images == 300 and res.num_objects == sum(int(r["count"]) for r in recs)
    coco = COCO(os.path.join(dest, "instances.json"))
    names = synthcount.open_dataset(path).object_names
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names
    assert sorted(coco.getImgIds()) == list(range(300))
    for r in recs:
        i = int(r["index"])
        img = coco.loadImgs(i)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=i))
        assert len(anns) == img["count"] == int(r["count"]) and img["cumulative_area"] == int(r["cumulative_area"])
        assert (img["width"], img["height"]) == (W, H) and img["split"] == "train"
        np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(dest, img["file_name"]))), r["image"])
        anns.sort(key=lambda a: a["label"])
        for k, a in enumerate(anns):
            mask = coco.annToMask(a)
            np.testing.assert_array_equal(mask, r["label_map"] == k + 1)  # the visible pixels, exactly
            assert mask_util.area(a["segmentation"]) == a["area"] == mask.sum()
            np.testing.assert_array_equal(mask_util.toBbox(a["segmentation"]), a["bbox"])
        _check_objects(r, [a["area"] for a in anns], [a["bbox"] for a in anns], [a["point"] for a in anns],
                       [a["category_id"] for a in anns])
        np.testing.assert_allclose(np.reshape(img["points"], (-1, 2)), np.reshape([a["point"] for a in anns], (-1, 2)))
        dens = np.load(os.path.join(dest, img["density_file"]))
        assert dens.dtype == np.float32 and dens.shape == (H, W) and abs(dens.sum() - int(r["count"])) < 1e-3
    info = json.load(open(os.path.join(dest, MARKER)))
    assert info["num_images"] == 300 and info["options"]["density_sigma"] == 2.0
    # instances.json is assembled from entries streamed to scratch files; its text is
    # still exactly one json.dumps of the whole document (key order, separators).
    text = open(os.path.join(dest, "instances.json"), encoding="utf-8").read()
    assert text == json.dumps(json.loads(text), allow_nan=False) + "\n"
    assert list(json.loads(text)) == ["info", "licenses", "categories", "images", "annotations"]


def test_coco_of_a_prefix_ending_in_an_empty_image(ds300, tmp_path):
    path, recs = ds300
    first_empty = next(i for i, r in enumerate(recs) if int(r["count"]) == 0)
    dest = str(tmp_path / "c1")
    export_dataset(path, dest, "coco", limit=first_empty + 1)
    text = open(os.path.join(dest, "instances.json"), encoding="utf-8").read()
    doc = json.loads(text)
    assert text == json.dumps(doc) + "\n" and len(doc["images"]) == first_empty + 1
    assert len(doc["annotations"]) == sum(int(r["count"]) for r in recs[:first_empty + 1])


def test_webdataset_reads_back(ds300, tmp_path):
    import webdataset as wds

    path, recs = ds300
    dest = str(tmp_path / "wds")
    export_dataset(path, dest, "webdataset", points=True, density=3.0, tar_size=128, test_fraction=0.25)
    tars = sorted(f for f in os.listdir(dest) if f.endswith(".tar"))
    assert tars == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples = list(wds.WebDataset(os.path.join(dest, "shard-{000000..000002}.tar"), shardshuffle=False).decode())
    assert len(samples) == 300
    splits = set()
    for s, r in zip(samples, recs):
        assert s["__key__"] == f"{int(r['index']):09d}"
        np.testing.assert_array_equal(_png(s["png"]), r["image"])
        np.testing.assert_array_equal(_png(s["mask.png"]), r["label_map"])
        meta = s["json"]
        n = int(r["count"])
        assert meta["count"] == n and meta["cumulative_area"] == int(r["cumulative_area"])
        for key, value in r.items():  # every per-image field of the shard
            if key in ("image", "label_map"):
                continue
            want = value[:n] if key.startswith("object_") and np.ndim(value) >= 1 else value
            want = np.asarray(want)
            got = np.asarray(meta[key], dtype=np.float64 if want.dtype.kind == "f" else None).reshape(want.shape)
            np.testing.assert_allclose(got, want.astype(got.dtype), rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(np.asarray(meta["points"]).reshape(n, 2), r["object_centroids"][:n, ::-1], rtol=1e-6)
        assert abs(s["density.npy"].sum() - n) < 1e-3
        splits.add(meta["split"])
    assert splits == {"train", "test"}
    again = str(tmp_path / "wds2")  # reproducible to the byte
    export_dataset(path, again, "webdataset", points=True, density=3.0, tar_size=128, test_fraction=0.25)
    for t in tars:
        assert open(os.path.join(dest, t), "rb").read() == open(os.path.join(again, t), "rb").read()


def test_hf_load_from_disk_gives_the_same_values(ds300, tmp_path):
    import datasets

    path, recs = ds300
    dest = str(tmp_path / "hf")
    export_dataset(path, dest, "hf", points=True)
    hf = datasets.load_from_disk(dest)
    assert len(hf) == 300 and not os.path.exists(os.path.expanduser("~/.cache/huggingface/datasets/generator"))
    f = hf.features
    assert isinstance(f["image"], datasets.Image) and isinstance(f["count"], datasets.ClassLabel)
    assert f["count"].names == ["0", "1", "2", "3", "4"]
    assert f["objects"]["category"].feature.names == synthcount.open_dataset(path).object_names
    for i in range(0, 300, 7):
        row, r = hf[i], recs[i]
        n = int(r["count"])
        np.testing.assert_array_equal(np.asarray(row["image"]), r["image"])
        np.testing.assert_array_equal(np.asarray(row["label_map"]), r["label_map"])
        assert row["count"] == n and row["index"] == int(r["index"])
        np.testing.assert_array_equal(row["object_areas"], r["object_areas"][:n])
        np.testing.assert_array_equal(np.asarray(row["object_boxes"]).reshape(n, 4), r["object_boxes"][:n])
        o = row["objects"]
        _check_objects(r, o["area"], o["bbox"], row["points"], np.asarray(o["category"]) + 1)
        masks = [np.asarray(row["label_map"]) == k + 1 for k in range(n)]
        assert [int(m.sum()) for m in masks] == o["area"]


def test_imagefolder_with_torchvision_and_the_vae_csv_reader(ds300, tmp_path):
    from torchvision.datasets import ImageFolder

    from vae.sos import load_labeled_csv

    path, recs = ds300
    dest = str(tmp_path / "folder")
    export_dataset(path, dest, "imagefolder", points=True, density=2.0)
    with open(os.path.join(dest, "labels.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "count", "cumulative_area", "split"] and len(rows) == 300
    for row, r in zip(rows, recs):
        assert row["file"] == f"{int(r['count'])}/{int(r['index']):09d}.png"
        assert int(row["count"]) == int(r["count"]) and int(row["cumulative_area"]) == int(r["cumulative_area"])
    folder = ImageFolder(dest)
    assert folder.classes == ["0", "1", "2", "3", "4"] and len(folder) == 300
    by_file = {row["file"]: int(row["count"]) for row in rows}
    for p, target in folder.samples:
        assert by_file[os.path.relpath(p, dest)] == target
    ns = load_labeled_csv(dest)
    assert len(ns.train) == 300 and not ns.test
    pts = json.load(open(os.path.join(dest, "points.json")))
    r = recs[5]
    stem = f"{int(r['count'])}/{int(r['index']):09d}"
    np.testing.assert_allclose(np.asarray(pts[stem + ".png"]).reshape(-1, 2),
                               r["object_centroids"][:int(r["count"]), ::-1], rtol=1e-6)
    assert abs(np.load(os.path.join(dest, stem + ".density.npy")).sum() - int(r["count"])) < 1e-3
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(dest, stem + ".png"))), r["image"])


def test_shards_and_limit_select_images(ds300, tmp_path):
    path, _ = ds300
    res = export_dataset(path, str(tmp_path / "sel"), "imagefolder", shards=(1, 3), limit=150, image_format="jpg")
    assert (res.first_index, res.end_index, res.num_images) == (100, 250, 150)
    with open(tmp_path / "sel" / "labels.csv") as fh:
        files = [row["file"] for row in csv.DictReader(fh)]
    assert files[0].endswith("/000000100.jpg") and files[-1].endswith("/000000249.jpg")
    with pytest.raises(ValueError, match="shards must be I:J"):
        export_dataset(path, str(tmp_path / "bad"), "coco", shards=(2, 5))
    assert not (tmp_path / "bad").exists()


def test_density_map_sums_to_n_even_at_the_border():
    pts = np.array([[0.0, 0.0], [63.0, 47.0], [30.5, 20.25], [np.nan, np.nan]])  # x, y; the last one hidden
    d = density_map(pts, (H, W), 4.0)
    assert d.dtype == np.float32 and d.shape == (H, W)
    assert abs(float(d.sum(dtype=np.float64)) - 3.0) < 1e-5
    assert d[0, 0] > d[0, 8] and d[47, 63] > d[40, 63]  # mass stays at the corners, where the points are
    single = density_map(pts[2:3], (H, W), 4.0)
    ys, xs = np.mgrid[0:H, 0:W]
    assert abs((single * xs).sum() - 30.5) < 1e-3 and abs((single * ys).sum() - 20.25) < 1e-3
    assert density_map(np.zeros((0, 2)), (H, W), 1.0).sum() == 0


def test_failed_export_leaves_dest_as_it_was(ds300, tmp_path, monkeypatch):
    from synthcount.export import _common, webdataset

    path, _ = ds300
    dest = str(tmp_path / "out")
    calls = {"n": 0}
    real = _common.encode_image

    def failing(arr, fmt="png"):
        calls["n"] += 1
        if calls["n"] > 40:
            raise OSError(28, "No space left on device")
        return real(arr, fmt)

    monkeypatch.setattr(webdataset, "encode_image", failing)
    with pytest.raises(OSError):
        export_dataset(path, dest, "webdataset", tar_size=8)
    assert os.listdir(tmp_path) == []  # no DEST, no workspace
    monkeypatch.setattr(webdataset, "encode_image", real)
    export_dataset(path, dest, "webdataset", limit=5)
    before = sorted(os.listdir(dest))
    calls["n"] = 0
    monkeypatch.setattr(webdataset, "encode_image", failing)
    with pytest.raises(OSError):
        export_dataset(path, dest, "webdataset", overwrite=True)
    assert sorted(os.listdir(dest)) == before and json.load(open(os.path.join(dest, MARKER)))["num_images"] == 5
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_cli_export_exit_codes(ds300, tmp_path):
    path, _ = ds300
    run = CliRunner().invoke
    dest = str(tmp_path / "c")
    r = run(main, ["export", path, dest, "--format", "coco", "--limit", "12", "--quiet"])
    assert r.exit_code == 0 and "12 images" in r.output and os.path.isfile(os.path.join(dest, "instances.json"))
    for args, words in [(["--format", "coco"], "exists; use --overwrite"),
                        (["--format", "coco", "--shards", "1:9"], "--shards"),
                        (["--format", "coco", "--shards", "x"], "--shards"),
                        (["--format", "coco", "--density", "0"], "--density"),
                        (["--format", "tiff"], "--format")]:
        r = run(main, ["export", path, dest, *args])
        assert r.exit_code == 2 and words in r.output, (args, r.output)
    other = tmp_path / "mine"
    other.mkdir()
    r = run(main, ["export", path, str(other), "--format", "hf", "--overwrite"])
    assert r.exit_code == 2 and "not a synthcount export" in r.output
    r = run(main, ["export", path, os.path.dirname(path), "--format", "coco", "--overwrite"])
    assert r.exit_code == 2 and "is (or holds) the dataset" in r.output and os.path.isdir(path)
    r = run(main, ["export", str(tmp_path / "nothing"), str(tmp_path / "d2"), "--format", "coco"])
    assert r.exit_code == 2 and not (tmp_path / "d2").exists()


def test_cli_export_of_a_corrupt_shard_exits_1_and_writes_nothing(ds300, tmp_path):
    import shutil

    path, _ = ds300
    bad = str(tmp_path / "bad")
    shutil.copytree(path, bad)
    shard = os.path.join(bad, "shard-00001.h5")
    with open(shard, "r+b") as f:  # overwrite the middle of the file: image chunks no longer decode or match
        f.seek(os.path.getsize(shard) // 2)
        f.write(b"\xff" * 4096)
    dest = str(tmp_path / "out")
    r = CliRunner().invoke(main, ["export", bad, dest, "--format", "coco", "--quiet"])
    assert r.exit_code == 1 and "export failed" in r.output, r.output
    assert not os.path.exists(dest) and sorted(os.listdir(tmp_path)) == ["bad"]


def test_missing_extra_says_which_to_install(ds300, tmp_path):
    path, _ = ds300
    code = ("import sys; sys.modules['pycocotools'] = None; sys.modules['datasets'] = None\n"
            "from cli.main import main\nsys.argv = ['synthcount'] + sys.argv[1:]\nmain()")
    for fmt in ("coco", "hf"):
        p = subprocess.run([sys.executable, "-c", code, "export", path, str(tmp_path / fmt), "--format", fmt],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "[export] extra" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / fmt).exists()


def test_an_object_hidden_entirely_keeps_its_annotation_without_a_point():
    from synthcount.export._common import objects_of

    rec = {"count": np.int32(2), "object_areas": np.array([6, 0, 0], np.int32),
           "object_boxes": np.array([[1, 2, 3, 5], [-1, -1, -1, -1], [-1, -1, -1, -1]], np.int32),
           "object_centroids": np.array([[1.5, 3.0], [np.nan, np.nan], [np.nan, np.nan]], np.float32),
           "object_ids": np.array([4, 7, -1], np.int32)}
    n, areas, boxes, points, cats = objects_of(rec)
    assert n == 2 and areas.tolist() == [6, 0] and cats.tolist() == [5, 8]
    assert boxes.tolist() == [[2, 1, 3, 2], [0, 0, 0, 0]]  # [x, y, w, h]
    assert points[0].tolist() == [3.0, 1.5] and np.isnan(points[1]).all()
    assert abs(density_map(points, (H, W), 2.0).sum() - 1.0) < 1e-5  # the hidden one adds nothing


# ---------------------------------------------------------------- one export per DEST; debris of killed ones

def test_a_second_export_to_the_same_dest_is_refused_naming_the_first(ds300, tmp_path):
    from synthcount.export._staging import dest_lock
    from synthcount.locks import FolderBusy

    path, _ = ds300
    dest = str(tmp_path / "sub" / "out")
    with dest_lock(dest):  # as a running export holds it
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
            export_dataset(path, dest, "imagefolder", limit=3)
        r = CliRunner().invoke(main, ["export", path, dest, "--format", "imagefolder", "--quiet"])
        assert r.exit_code == 2 and "being exported by another synthcount run" in r.output, r.output
        assert sorted(os.listdir(tmp_path / "sub")) == ["out.lock"]  # nothing of the refused runs
    assert not (tmp_path / "sub").exists()  # the holder made the folder for an export that never came
    export_dataset(path, dest, "imagefolder", limit=3)
    assert sorted(os.listdir(tmp_path / "sub")) == ["out"]  # published; the lock file is gone


_SLOW_EXPORT = """
import sys, time
from synthcount.export import _common, webdataset
real = _common.encode_image
def slow(arr, fmt="png"):
    time.sleep(0.02)
    return real(arr, fmt)
webdataset.encode_image = slow
from synthcount.export import export_dataset
export_dataset(sys.argv[1], sys.argv[2], "webdataset", tar_size=10)
"""


def test_an_export_killed_outright_leaves_debris_that_the_next_one_clears(ds300, tmp_path):
    import signal
    import time

    path, recs = ds300
    dest = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, path, dest], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # until its first tar is on disk
            work = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
            if work and any(n.endswith(".tar") for n in os.listdir(tmp_path / work[0] / "out")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the export wrote no tar within 60 s")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    left = sorted(os.listdir(tmp_path))
    assert left == ["out.lock", work[0]]  # no DEST: only the workspace and the lock file
    r = CliRunner().invoke(main, ["export", path, dest, "--format", "webdataset", "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"removed {tmp_path / work[0]}, left by an export to {dest} that did not finish" in r.output
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert json.load(open(os.path.join(dest, MARKER)))["num_images"] == len(recs)


def test_an_earlier_export_moved_aside_by_a_killed_overwrite_is_put_back(ds300, tmp_path):
    path, _ = ds300
    dest = str(tmp_path / "out")
    export_dataset(path, dest, "imagefolder", limit=4)
    before = sorted(os.listdir(dest))
    # The state a kill -9 leaves between the two renames of an --overwrite: the earlier
    # export moved into the workspace, the new one not yet in place.
    work = tmp_path / "out.tmp-4242-0badc0de"
    (work / "out").mkdir(parents=True)
    (work / "scratch").mkdir()
    os.rename(dest, work / "old")
    with pytest.raises(ValueError, match="exists; use --overwrite"):
        export_dataset(path, dest, "imagefolder", limit=2)  # refused: the earlier export is back
    assert sorted(os.listdir(dest)) == before and not work.exists()
    assert json.load(open(os.path.join(dest, MARKER)))["num_images"] == 4
    (work / "out").mkdir(parents=True)  # the same state again, this time answered with --overwrite
    os.rename(dest, work / "old")
    res = export_dataset(path, dest, "imagefolder", limit=2, overwrite=True)
    assert res.recovered[0].startswith("put back the earlier export") and len(res.recovered) == 2
    assert json.load(open(os.path.join(dest, MARKER)))["num_images"] == 2
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_folders_that_are_not_a_dead_export_workspace_are_left_alone(ds300, tmp_path):
    path, _ = ds300
    keep = [tmp_path / "out.tmp-12-0badc0de", tmp_path / "out.tmp-notours", tmp_path / "out.tmp-13-0badc0dex"]
    (keep[0] / "mine.txt").parent.mkdir()
    (keep[0] / "mine.txt").write_text("a user's file")  # the right name, but holds something else
    keep[1].mkdir()
    keep[2].mkdir()
    res = export_dataset(path, str(tmp_path / "out"), "imagefolder", limit=2)
    assert res.recovered == [] and all(k.exists() for k in keep)
