"""The compositor: exact bookkeeping, occlusion rule, determinism, replay."""

import math

import cv2
import numpy as np
import pytest

from synthcount.compose import Composer, PlacementError, check_feasible, field_area
from synthcount.config import SceneConfig
from synthcount.pack import AssetPack, ObjectAsset


def _ellipse_object(h, w, rgb, hole=False, name="o"):
    a = np.zeros((h, w), np.uint8)
    cv2.ellipse(a, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1, cv2.LINE_AA)
    if hole:
        cv2.circle(a, (w // 2, h // 2), min(h, w) // 5, 0, -1, cv2.LINE_AA)
    ys, xs = np.nonzero(a)
    a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    img = np.empty(a.shape + (3,), np.uint8)
    img[...] = rgb
    return ObjectAsset(img, a, name)


@pytest.fixture(scope="module")
def packs():
    rng = np.random.default_rng(7)
    objs = []
    for i in range(8):
        h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        o = _ellipse_object(h, w, tuple(int(v) for v in rng.integers(0, 256, 3)), hole=i % 3 == 0, name=f"e{i}")
        o.rgb[...] = rng.integers(0, 256, o.rgb.shape, dtype=np.uint8)  # textured
        objs.append(o)
    bgs = [rng.integers(0, 256, (int(rng.integers(100, 300)), int(rng.integers(100, 300)), 3),
                        dtype=np.uint8) for _ in range(4)]
    return AssetPack(objects=objs), AssetPack(backgrounds=bgs, background_names=[f"b{i}" for i in range(4)])


def _check_bookkeeping(img, lab, rec, scene):
    n = int(rec["count"])
    assert img.shape == scene.size + (3,) and img.dtype == np.uint8
    assert lab.shape == scene.size and lab.dtype == np.uint8
    assert lab.max() <= n
    counts = np.bincount(lab.ravel(), minlength=scene.max_count + 1)
    assert np.array_equal(rec["object_areas"][:n], counts[1:n + 1])
    assert np.all(rec["object_areas"][n:] == 0) and np.all(rec["object_full_areas"][n:] == 0)
    assert rec["cumulative_area"] == counts[1:].sum() == rec["object_areas"].sum()
    assert np.all(rec["object_full_areas"][:n] >= rec["object_areas"][:n])
    for k in range(n):
        ys, xs = np.nonzero(lab == k + 1)
        if ys.size:
            assert tuple(rec["object_boxes"][k]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
            assert np.allclose(rec["object_centroids"][k], (ys.mean(), xs.mean()), atol=1e-3)
    return counts


@pytest.mark.parametrize("t", [1.0, 0.5, 0.8])
def test_visible_fraction_and_areas(packs, t):
    scene = SceneConfig(min_visible=t, mode="mixed")
    comp = Composer(scene, *packs)
    seen_overlap = False
    for i in range(150):
        img, lab, rec = comp.compose(11, i)
        _check_bookkeeping(img, lab, rec, scene)
        n = int(rec["count"])
        frac = rec["object_areas"][:n] / rec["object_full_areas"][:n]
        assert np.all(frac >= t), (i, frac)
        if t == 1.0:
            # No footprint pixel of any object is covered: zero shared pixels.
            assert np.array_equal(rec["object_areas"][:n], rec["object_full_areas"][:n])
        seen_overlap |= bool(np.any(frac < 1))
    if t < 1.0:
        assert seen_overlap  # the rule is exercised, not vacuous


def test_min_visible_per_count(packs):
    ts = (1.0, 1.0, 0.5, 0.6, 0.7)
    comp = Composer(SceneConfig(min_visible=ts), *packs)
    for i in range(80):
        _, _, rec = comp.compose(2, i)
        n = int(rec["count"])
        assert rec["min_visible"] == np.float32(ts[n])
        assert np.all(rec["object_areas"][:n] / np.maximum(rec["object_full_areas"][:n], 1) >= ts[n])


def test_min_gap_keeps_objects_apart(packs):
    gap = 3
    scene = SceneConfig(min_visible=1.0, min_gap=gap, ref_side_range=(0.25, 0.4))
    comp = Composer(scene, *packs)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    for i in range(60):
        _, lab, rec = comp.compose(5, i)
        n = int(rec["count"])
        for a in range(1, n + 1):
            grown = cv2.dilate((lab == a).astype(np.uint8), k).astype(bool)
            others = (lab > 0) & (lab != a)
            assert not np.any(grown & others)


def test_deterministic_and_replay(packs):
    scene = SceneConfig(min_visible=0.6, color_jitter=0.3, blend="feather", mode="mixed")
    a, b = Composer(scene, *packs), Composer(scene, *packs)
    for i in (0, 3, 17, 99):
        i1, l1, r1 = a.compose(42, i)
        i2, l2, r2 = b.compose(42, i)
        assert np.array_equal(i1, i2) and np.array_equal(l1, l2)
        for key in r1:
            assert np.array_equal(np.asarray(r1[key]), np.asarray(r2[key]), equal_nan=True), key
        i3, l3 = a.replay(r1)
        assert np.array_equal(i1, i3) and np.array_equal(l1, l3)
    x, _, _ = a.compose(42, 5)
    y, _, _ = a.compose(43, 5)
    assert not np.array_equal(x, y)


def test_count_distribution(packs):
    probs = (0.1, 0.2, 0.3, 0.4)
    comp = Composer(SceneConfig(max_count=3, count_probs=probs, ref_side_range=(0.2, 0.3)), *packs)
    counts = np.bincount([int(comp.compose(0, i)[2]["count"]) for i in range(600)], minlength=4)
    expected = np.array(probs) * 600
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # chi-square, 3 dof, p = 0.001


def test_decorrelated_area_mode_separates_n_and_a(packs):
    def corr(scene):
        comp = Composer(scene, *packs)
        n, a = [], []
        for i in range(300):
            _, _, rec = comp.compose(9, i)
            if rec["count"] > 0:
                n.append(np.log(rec["count"]))
                a.append(np.log(rec["cumulative_area"]))
        return np.corrcoef(n, a)[0, 1]

    assert corr(SceneConfig()) > 0.5  # the paper's design: A grows with N
    assert abs(corr(SceneConfig(area_mode="decorrelated", scale_jitter=(0.95, 1.05)))) < 0.15


def test_blend_rules_exact():
    obj = _ellipse_object(80, 60, (200, 200, 200))
    bg = np.full((120, 120, 3), 50, np.uint8)
    packs = (AssetPack(objects=[obj]), AssetPack(backgrounds=[bg], background_names=["flat"]))
    hard = Composer(SceneConfig(size=(100, 100), blend="hard", rotation_range=(0, 0)), *packs)
    for i in range(20):
        img, lab, rec = hard.compose(0, i)
        assert np.all(img[lab > 0] == 200)
        assert np.all(img[lab == 0] == 50)  # hard alpha never spills outside the footprint
    soft = Composer(SceneConfig(size=(100, 100), blend="soft"), *packs)
    mixed_edge = False
    for i in range(20):
        img, lab, rec = soft.compose(0, i)
        assert np.all(img[lab > 0] >= 125)  # alpha >= 0.5: at least halfway to the object
        mixed_edge |= bool(np.any((img[..., 0] > 50) & (img[..., 0] < 125)))
    assert mixed_edge  # soft edges exist outside the labelled pixels


def test_field_area_is_convex_hull_of_object_pixels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lab = (rng.random((40, 50)) < 0.02).astype(np.uint8)
        pts = cv2.findNonZero(lab)
        expected = cv2.contourArea(cv2.convexHull(pts)) if pts is not None and len(pts) >= 3 else 0.0
        assert field_area(lab) == pytest.approx(expected)
    assert field_area(np.zeros((5, 5), np.uint8)) == 0.0


def test_check_feasible_rejects_impossible_requests(packs):
    objs = packs[0]
    check_feasible(SceneConfig(), objs)
    with pytest.raises(ValueError, match="cannot fit"):
        check_feasible(SceneConfig(size=(20, 20), ref_side_range=(0.9, 1.0), scale_jitter=(1.5, 2.0)), objs)
    with pytest.raises(ValueError, match="cannot fit"):
        check_feasible(SceneConfig(max_count=40, ref_side_range=(0.6, 0.8), count_probs=None), objs)


def test_placement_error_is_bounded(packs):
    scene = SceneConfig(max_count=12, count_probs=(0,) * 12 + (1.0,), ref_side_range=(0.3, 0.35), max_layouts=3)
    comp = Composer(scene, *packs)
    with pytest.raises(PlacementError, match="no layout"):
        for i in range(5):
            comp.compose(0, i)


def test_binary_like_hard_shapes():
    disc = np.zeros((64, 64), np.uint8)
    cv2.circle(disc, (32, 32), 31, 255, -1)
    packs = (AssetPack(objects=[ObjectAsset(np.full((64, 64, 3), 255, np.uint8), disc, "disc")]),
             AssetPack(backgrounds=[np.zeros((64, 64, 3), np.uint8)], background_names=["black"]))
    scene = SceneConfig(size=(48, 48), max_count=8, count_probs=(0,) + (1 / 8,) * 8, blend="hard", rotation_range=(0,
                                                                                                                   0),
                        flip_p=0, min_gap=1, area_mode="decorrelated", area_fraction_range=(0.06, 0.18),
                        scale_jitter=(0.7, 1.3))
    comp = Composer(scene, *packs)
    for i in range(100):
        img, lab, rec = comp.compose(0, i)
        assert set(np.unique(img)) <= {0, 255}
        assert np.array_equal(img[..., 0] == 255, lab > 0)
        assert math.isfinite(rec["target_area"])
