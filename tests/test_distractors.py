"""Counting past subitizing: distractors, per-class counts and exemplar boxes.

Label maps separate targets (1..N) from distractors (N+1..N+K), stored counts equal
the target labels present, every area and box of a distractor equals its pixels,
exemplars are real target boxes, and the options keep determinism, pieces, verify
and the decorrelated design.
"""

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from synthcount.compose import Composer, check_feasible
from synthcount.config import SceneConfig, SourceConfig, preset
from synthcount.pack import AssetPack
from synthcount.reader import open_dataset
from synthcount.shards import verify_shard
from synthcount.sources import resolve_sources
from synthcount.stats import _outline, corr_log_n_log_a, preview, summarize
from synthcount.survey import survey_layouts

# Small, crowded enough that distractors overlap targets at t < 1.
SMALL = dict(size=(96, 96), max_count=6, ref_side_range=(0.2, 0.3), min_visible=0.6,
             distractors=(1, 4), distractor_min_visible=0.7)


@pytest.fixture(scope="module")
def builtin():
    return resolve_sources(SourceConfig())


def _check_image(img, lab, rec, scene):
    """Everything the records claim about targets and distractors, from the pixels."""
    n, k = int(rec["count"]), int(rec["num_distractors"])
    m = scene.max_objects
    assert rec["object_role"].shape == (m,)
    np.testing.assert_array_equal(rec["object_role"], [0] * n + [1] * k + [-1] * (m - n - k))
    hist = np.bincount(lab.ravel(), minlength=m + 1)
    np.testing.assert_array_equal(hist[1:], rec["object_areas"])
    # The count is the number of target labels present, and no label beyond N + K.
    present = set(np.unique(lab).tolist()) - {0}
    assert len(present & set(range(1, n + 1))) == n and max(present, default=0) <= n + k
    assert rec["cumulative_area"] == hist[1:n + 1].sum()
    for j in range(n + k):
        ys, xs = np.nonzero(lab == j + 1)
        assert tuple(rec["object_boxes"][j]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert np.allclose(rec["object_centroids"][j], (ys.mean(), xs.mean()), atol=1e-3)
    frac = rec["object_areas"][:n + k] / rec["object_full_areas"][:n + k]
    t_d = scene.distractor_threshold(n)
    assert np.all(frac[:n] >= scene.visible_threshold(n)) and np.all(frac[n:] >= t_d)
    # Exemplars: min(3, visible targets) boxes, each the box of a target, in label order.
    ex = [tuple(b) for b in rec["exemplar_boxes"] if b[0] != -1]
    targets = [tuple(b) for b in rec["object_boxes"][:n]]
    assert len(ex) == min(3, n) and all(b in targets for b in ex)
    assert [targets.index(b) for b in ex] == sorted(targets.index(b) for b in ex)
    return frac


@pytest.mark.parametrize("mode", ["same", "mixed"])
def test_labels_separate_targets_from_distractors(builtin, mode):
    scene = SceneConfig(mode=mode, **SMALL)
    comp = Composer(scene, *builtin)
    overlapped = False
    for i in range(60):
        img, lab, rec = comp.compose(4, i)
        frac = _check_image(img, lab, rec, scene)
        n, k = int(rec["count"]), int(rec["num_distractors"])
        assert 1 <= k <= 4
        targets, distractors = set(rec["object_ids"][:n].tolist()), set(rec["object_ids"][n:n + k].tolist())
        assert not targets & distractors  # never one of the identities the image counts
        if mode == "same":
            assert rec["target_id"] >= 0 and (n == 0 or targets == {int(rec["target_id"])})
            assert int(rec["target_id"]) not in distractors
        else:
            assert rec["target_id"] == -1
        overlapped |= bool(np.any(frac[:n] < 1))
        i2, l2 = comp.replay(rec)
        assert np.array_equal(i2, img) and np.array_equal(l2, lab)
    assert overlapped  # distractors do cover targets, within t


def test_targets_are_those_of_the_image_without_distractors(builtin):
    """Distractors come from the image's own child stream, after the targets: where
    they fit into the first target layout, the targets are unchanged."""
    plain = Composer(SceneConfig(**{**SMALL, "distractors": 0}), *builtin)
    with_d = Composer(SceneConfig(**SMALL), *builtin)
    same = 0
    for i in range(30):
        _, _, a = plain.compose(4, i)
        _, _, b = with_d.compose(4, i)
        assert (a["count"], a["background_id"], a["target_id"]) == (b["count"], b["background_id"], b["target_id"])
        if a["layout_tries"] == b["layout_tries"] == 1:
            n = int(a["count"])
            for key in ("object_ids", "object_position", "object_scale", "object_angle"):
                np.testing.assert_array_equal(a[key][:n], b[key][:n])
            same += 1
    assert same >= 15


def test_classes_count_per_class(builtin):
    scene = SceneConfig(mode="mixed", classes=3, max_count=8, ref_side_range=(0.15, 0.25), size=(96, 96),
                        distractors=2)
    comp = Composer(scene, *builtin)
    seen_multi = False
    for i in range(40):
        img, lab, rec = comp.compose(1, i)
        _check_image(img, lab, rec, scene)
        n = int(rec["count"])
        cls, cc = rec["class_ids"], rec["class_counts"]
        assert len(set(cls.tolist())) == 3 and cc.sum() == n  # count is the total
        for c in range(3):
            assert cc[c] == np.count_nonzero(rec["object_ids"][:n] == cls[c])
        assert not set(rec["object_ids"][n:n + 2].tolist()) & set(cls.tolist())
        seen_multi |= int(np.count_nonzero(cc)) > 1
    assert seen_multi


def test_distractor_pack_never_repeats_a_target(builtin):
    """A distractor pack holding the targets' own objects (here reversed) excludes the
    image's target by content, not by index."""
    objs = builtin[0]
    rev = AssetPack(objects=list(reversed(objs.objects)))
    scene = SceneConfig(size=(96, 96), ref_side_range=(0.2, 0.3), distractors=3, max_count=3)
    comp = Composer(scene, objs, builtin[1], distractor_objects=rev)
    last = len(objs.objects) - 1
    for i in range(40):
        _, _, rec = comp.compose(0, i)
        n = int(rec["count"])
        assert int(rec["target_id"]) not in [last - j for j in rec["object_ids"][n:n + 3]]


def test_decorrelated_stays_decorrelated_with_distractors(builtin):
    scene = SceneConfig(area_mode="decorrelated", scale_jitter=(0.95, 1.05), distractors=(0, 3), min_visible=0.7)
    comp = Composer(scene, *builtin)
    recs = [comp.compose(9, i)[2] for i in range(200)]
    assert sum(r["num_distractors"] for r in recs) > 200  # they are there
    r = corr_log_n_log_a([r["count"] for r in recs], [r["cumulative_area"] for r in recs])
    assert abs(r) < 0.15


def test_survey_lays_out_the_most_distractors(builtin):
    """Targets that fit alone but not beside the most distractors are found unfit."""
    objs = AssetPack(objects=[builtin[0].objects[i] for i in (0, 2)])  # a disc and a rounded square
    base = dict(size=(48, 48), max_count=2, count_probs=(0, 0, 1.0), ref_side_range=(0.45, 0.5))
    assert survey_layouts(Composer(SceneConfig(**base), objs, builtin[1])).unfit == {}
    crowded = survey_layouts(Composer(SceneConfig(**base, distractors=(0, 4)), objs, builtin[1]))
    assert crowded.unfit.get(2) == [0, 1]


def test_config_checks():
    assert SceneConfig(distractors=3).distractors == (3, 3)
    with pytest.raises(ValueError, match="distractors must be 0 <= A <= B"):
        SceneConfig(distractors=(4, 2))
    with pytest.raises(ValueError, match="distractors must be at most 235"):
        SceneConfig(max_count=20, distractors=(0, 236))
    with pytest.raises(ValueError, match="classes must be null unless mode is 'mixed'"):
        SceneConfig(classes=2)
    with pytest.raises(ValueError, match="distractor_min_visible must be"):
        SceneConfig(distractors=1, distractor_min_visible=1.5)
    with pytest.raises(ValueError, match="min_gap"):
        SceneConfig(distractors=1, min_gap=1, distractor_min_visible=0.5)
    one = AssetPack(objects=resolve_sources(SourceConfig())[0].objects[:1])
    with pytest.raises(ValueError, match="leaving none to draw distractors from"):
        check_feasible(SceneConfig(distractors=1), one)
    assert preset("fsc").max_objects == 30


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


GEN = ["--preset", "fsc", "--size", "80", "--max-count", "8", "--distractors", "0:4", "--min-visible", "0.8",
       "--distractor-min-visible", "0.9", "--num-images", "24", "--shard-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("distractors")
    r = _run("generate", root / "one", *GEN, "--workers", "1")
    assert r.exit_code == 0, r.output
    return root


def test_determinism_pieces_and_verify(made):
    two, pieces = made / "two", made / "pieces"
    assert _run("generate", two, *GEN, "--workers", "2").exit_code == 0
    for sl in ("2:3", "0:2"):
        assert _run("generate", pieces, *GEN, "--shards", sl).exit_code == 0
    sums = [[s["sha256"] for s in json.loads((d / "manifest.json").read_text())["shards"]]
            for d in (made / "one", two, pieces)]
    assert len(sums[0]) == 3 and sums[0] == sums[1] == sums[2]
    r = _run("verify", made / "one")
    assert r.exit_code == 0 and "OK" in r.output
    with open_dataset(made / "one") as ds:
        lab = ds.labels
        assert lab["num_distractors"].max() == 4 and ds.fields["object_role"][1] == (12,)
        for rec in ds:
            _check_image(rec["image"], rec["label_map"], rec, ds.dataset_config.scene)


def test_verify_catches_a_corrupted_role(made, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(made / "one", bad)
    shard = bad / "shard-00001.h5"
    with h5py.File(shard, "r+") as f:
        role = f["object_role"][()]
        i = int(np.argmax(f["num_distractors"][()] > 0))
        role[i, int(f["count"][i])] = 0  # a distractor claimed as a target
        f["object_role"][...] = role
    problems = verify_shard(str(shard))
    assert any("object_role" in p and "shard-00001.h5" in p for p in problems)
    r = _run("verify", bad)
    assert r.exit_code == 1 and "shard-00001.h5" in r.output


def test_inspect_and_preview_report_distractors(made, tmp_path):
    r = _run("inspect", made / "one", "--json")
    s = json.loads(r.output)
    d = s["distractors"]
    assert sum(d["histogram"].values()) == s["num_images"] == 24 and 0 < d["mean"] <= 4
    assert d["visible_fraction"] >= 0.9 and sum(s["exemplars_per_image"].values()) == 24
    assert "distractors:" in _run("inspect", made / "one").output
    png = tmp_path / "sheet.png"
    assert _run("preview", made / "one", png, "--n", "4").exit_code == 0
    with open_dataset(made / "one") as ds:
        preview(ds, str(png), n=len(ds), tile=None)  # every image, in index order, at native size
        cols, (h, w) = 5, ds.image_size
        sheet = np.asarray(Image.open(png))
        dashed = plain = 0
        for i in range(len(ds)):
            r, c = divmod(i, cols)
            y = 2 + r * (h + 14 + 2) + 14  # below the tile's caption strip
            tile = sheet[y:y + h, 2 + c * (w + 2):2 + c * (w + 2) + w]
            lab, n = ds[i]["label_map"], int(ds[i]["count"])
            edge = _outline(lab)
            black = np.all(tile == 0, axis=-1)
            plain += int(np.count_nonzero(black & edge & (lab <= n)))
            dashed += int(np.count_nonzero(black & edge & (lab > n)))
        assert plain == 0 and dashed > 0  # only distractor outlines have gaps


def test_datasets_without_the_new_fields_still_verify_and_inspect(made, tmp_path):
    """A shard made before object_role existed: every object is a target."""
    src = made / "one" / "shard-00000.h5"
    old = tmp_path / "shard-00000.h5"
    with h5py.File(src, "r") as f, h5py.File(old, "w") as g:
        n = f["count"][()]
        keep = f["object_areas"][()] * (np.arange(12)[None, :] < n[:, None])
        for key in f:
            if key not in ("object_role", "num_distractors", "exemplar_boxes", "target_id"):
                g.create_dataset(key, data=keep if key == "object_areas" else f[key][()])
        g["label_maps"][...] = np.where(f["label_maps"][()] > n[:, None, None], 0, f["label_maps"][()])
        for a, v in f.attrs.items():
            g.attrs[a] = v
    assert verify_shard(str(old)) == []
    with open_dataset(str(old)) as ds:
        assert "distractors" not in summarize(ds)


def test_distractor_pack_of_its_own(tmp_path):
    """--distractor-objects builtin (here the targets' own objects): the names of the
    distractor pack go into the shard, and no distractor is the image's target."""
    out = tmp_path / "own"
    r = _run("generate", out, "--preset", "fsc", "--size", "64", "--max-count", "3", "--distractors", "2",
             "--distractor-objects", "builtin", "--num-images", "10", "--quiet")
    assert r.exit_code == 0, r.output
    assert _run("verify", out).exit_code == 0
    with open_dataset(out) as ds:
        assert ds.distractor_object_names == ds.object_names and len(ds.object_names) == 27
        for rec in ds:
            n = int(rec["count"])
            assert int(rec["target_id"]) not in rec["object_ids"][n:n + 2]
    with h5py.File(out / "shard-00000.h5", "r") as f:
        assert "distractor_object_names" in f and f["object_role"].attrs["axes"] == "object"


def test_bad_flags_exit_2_and_write_nothing(tmp_path):
    for flags in (["--distractors", "3:x"], ["--distractors", "5:2"], ["--classes", "2"],
                  ["--distractor-min-visible", "2"], ["--distractor-objects", tmp_path / "nope"],
                  ["--mode", "mixed", "--classes", "99"]):
        r = _run("generate", tmp_path / "out", "--num-images", "4", "--quiet", *flags)
        assert r.exit_code == 2, (flags, r.output)
        assert len(r.output.strip().splitlines()[-1]) > 0 and "Traceback" not in r.output
        assert not (tmp_path / "out").exists()


def test_coco_export_carries_distractors_and_exemplars(made, tmp_path):
    """COCO: targets and distractors each annotated with their visible mask and role,
    image count = targets, exemplar flags on exactly the targets whose boxes are the
    image's exemplar_boxes; read back through pycocotools."""
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    dest = tmp_path / "coco"
    r = _run("export", made / "one", dest, "--format", "coco")
    assert r.exit_code == 0, r.output
    coco = COCO(str(dest / "instances.json"))
    with open_dataset(made / "one") as ds:
        assert len(coco.getImgIds()) == len(ds)
        for rec in ds:
            i, n, k = int(rec["index"]), int(rec["count"]), int(rec["num_distractors"])
            img = coco.loadImgs(i)[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=i))
            roles = [a["role"] for a in anns]
            assert img["count"] == n == roles.count("target")
            assert img["num_distractors"] == k == roles.count("distractor")
            for a in anns:
                assert int(mask_util.area(a["segmentation"])) == a["area"] == int(rec["object_areas"][a["label"] - 1])
            ex = [b for b in rec["exemplar_boxes"].tolist() if min(b) >= 0]
            flagged = [a["bbox"] for a in anns if a.get("exemplar")]
            assert len(img["exemplar_boxes"]) == len(ex) and sorted(flagged) == sorted(img["exemplar_boxes"])
