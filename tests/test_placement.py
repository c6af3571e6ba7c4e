"""Placement: exact feasibility, uniform sampling over feasible positions, transforms."""

import cv2
import numpy as np
import pytest

from synthcount.pack import ObjectAsset
from synthcount.placement import Layout, min_visible_pixels
from synthcount.transforms import MipAsset, transform_patch


def _brute_feasible(layout, fp):
    h, w = fp.shape
    return np.array([[layout.fits(fp, y, x) for x in range(layout.w - w + 1)] for y in range(layout.h - h + 1)])


def _disc(r):
    m = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
    cv2.circle(m, (r, r), r, 1, -1)
    return m.astype(bool)


@pytest.mark.parametrize("t", [1.0, 0.7, 0.3])
def test_feasible_map_matches_brute_force(t):
    rng = np.random.default_rng(3)
    lay = Layout(40, 50, t)
    for r in (8, 6, 5):
        fp = _disc(r)
        ok = lay.feasible_map(fp)
        assert np.array_equal(ok, _brute_feasible(lay, fp))
        pos = lay.find(rng, fp, blind_tries=4)
        assert pos is not None and lay.fits(fp, *pos)
        lay.add(fp, *pos)


def test_find_is_uniform_over_feasible_positions():
    # A layout where about a third of positions are feasible, so both the blind
    # phase and the map phase run; their mixture must be uniform.
    lay = Layout(30, 30, 1.0)
    lay.add(_disc(9), 5, 5)
    fp = _disc(4)
    feas = _brute_feasible(lay, fp)
    n_feas = int(feas.sum())
    assert 0 < n_feas < feas.size
    rng = np.random.default_rng(0)
    hits = np.zeros_like(feas, dtype=np.int64)
    draws = 20 * n_feas
    for _ in range(draws):
        y, x = lay.find(rng, fp, blind_tries=1)
        hits[y, x] += 1
    assert hits[~feas].sum() == 0
    expected = draws / n_feas
    chi2 = float((((hits[feas] - expected) ** 2) / expected).sum())
    dof = n_feas - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)  # within 5 sigma of the chi-square mean


def test_find_returns_none_when_nothing_fits():
    lay = Layout(20, 20, 1.0)
    lay.add(np.ones((20, 12), bool), 0, 0)
    assert lay.find(np.random.default_rng(0), np.ones((5, 9), bool), blind_tries=3) is None
    assert lay.maps_computed == 1


def test_min_visible_pixels_exact():
    for full in range(1, 400):
        for t in (0.0, 0.1, 0.5, 0.6, 0.7, 0.95, 1.0):
            v = min_visible_pixels(full, t)
            assert v / full >= t and (v == 0 or (v - 1) / full < t)


def _rect_asset(h, w):
    a = np.full((h, w), 255, np.uint8)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = 255  # left half white: shows flips
    return MipAsset(ObjectAsset(rgb, a, "rect"))


def test_transform_geometry():
    mip = _rect_asset(40, 100)
    p = transform_patch(mip, 1.0, 0.0, False, "hard")
    assert p.footprint.shape == (40, 100) and p.footprint.all()
    p90 = transform_patch(mip, 1.0, 90.0, False, "hard")
    assert abs(p90.footprint.shape[0] - 100) <= 1 and abs(p90.footprint.shape[1] - 40) <= 1
    half = transform_patch(mip, 0.5, 0.0, False, "hard")
    assert abs(half.footprint.sum() - 1000) <= 60
    small = transform_patch(mip, 0.2, 30.0, False, "soft")
    assert abs(small.footprint.sum() - 0.04 * 4000) <= 25
    left = transform_patch(mip, 1.0, 0.0, False, "hard").rgb()
    flipped = transform_patch(mip, 1.0, 0.0, True, "hard").rgb()
    assert left[:, 10].mean() > 200 and flipped[:, 10].mean() < 50
    assert np.allclose(flipped, left[:, ::-1], atol=1)


def test_rotation_expands_canvas_without_cutting():
    mip = _rect_asset(60, 60)
    for angle in (-10.0, 10.0, 45.0):
        p = transform_patch(mip, 1.0, angle, False, "soft")
        assert abs(p.footprint.sum() - 3600) < 3600 * 0.03  # nothing cut off
        # alpha touches the trimmed box on all four sides
        nz = p.alpha > 0
        assert nz[0].any() and nz[-1].any() and nz[:, 0].any() and nz[:, -1].any()


def test_feather_blurs_and_pads():
    mip = _rect_asset(30, 30)
    p = transform_patch(mip, 1.0, 0.0, False, "feather", feather_sigma=2.0)
    assert p.alpha.shape[0] > 30  # blur spills past the object, inside the padded canvas
    assert p.alpha.min() < 0.1 and p.alpha.max() > 0.99
    nz = p.alpha > 0  # the tail reaches every side of the trimmed box
    assert nz[0].any() and nz[-1].any() and nz[:, 0].any() and nz[:, -1].any()
    assert np.array_equal(p.footprint, p.alpha >= 0.5)


@pytest.mark.parametrize("t", [1.0, 0.6])
def test_coarse_superset_contains_every_feasible_position(t):
    rng = np.random.default_rng(5)
    for trial in range(6):
        lay = Layout(int(rng.integers(30, 60)), int(rng.integers(30, 60)), t)
        for _ in range(3):
            r = int(rng.integers(4, 10))
            fp = _disc(r)
            if trial % 2:
                fp = np.ascontiguousarray(fp[:, : r + 2])  # odd shapes, odd phases
            sup = lay.coarse_superset(fp)
            feas = _brute_feasible(lay, fp)
            assert sup.shape == feas.shape
            assert not np.any(feas & ~sup)
            pos = lay.find(rng, fp, blind_tries=2)
            if pos is None:
                assert not feas.any()
                break
            lay.add(fp, *pos)


def test_coarse_superset_proves_infeasible_cheaply():
    lay = Layout(40, 40, 1.0)
    lay.add(np.ones((40, 22), bool), 0, 0)
    assert lay.find(np.random.default_rng(0), _disc(10), blind_tries=2) is None
    assert lay.coarse_maps == 1 and lay.maps_computed == 0


def _old_coarse(lay, fp):
    """The superset as 0.2.0 computed it (an INTER_AREA resize of each mask per call, float
    correlation): the reference for the cached cell sums and the uint8 correlation."""
    h, w = fp.shape
    ny, nx = lay.h - h + 1, lay.w - w + 1
    core = cv2.erode(fp.view(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)[0::2, 0::2]
    if not core.any():
        return None
    core = core.astype(np.float32)
    ay, ax = (ny + 1) // 2, (nx + 1) // 2
    ry, rx = ay + core.shape[0] - 1, ax + core.shape[1] - 1
    ok = np.ones((ay, ax), bool)
    masks, limits = ([lay.occ], [0]) if lay.exclusive else (lay.vis, lay.slack)
    for m, lim in zip(masks, limits):
        src = m[:2 * ry, :2 * rx].view(np.uint8)
        src = cv2.copyMakeBorder(src, 0, 2 * ry - src.shape[0], 0, 2 * rx - src.shape[1], cv2.BORDER_CONSTANT, value=0)
        cnt = cv2.resize(src.astype(np.float32), (rx, ry), interpolation=cv2.INTER_AREA) * np.float32(4)
        ok &= cv2.matchTemplate(cnt, core, cv2.TM_CCORR) < lim + 0.5
    return ok


@pytest.mark.parametrize("t,gap", [(1.0, 0), (1.0, 2), (0.6, 0), (0.2, 0)])
def test_cached_cells_give_the_superset_of_a_fresh_computation(t, gap):
    # Odd and even sides, blobs of odd and even shapes, superset asked for after every
    # add and after several: the cached 2x2 sums must equal sums of the masks as they are.
    rng = np.random.default_rng(11)
    for trial in range(8):
        lay = Layout(int(rng.integers(31, 70)), int(rng.integers(31, 70)), t, gap)
        for step in range(6):
            fp = _disc(int(rng.integers(3, 9)))
            if trial % 2:
                fp = np.ascontiguousarray(fp[:, 1:])
            if step % 2 == 0:  # ask only every other step, so several adds queue up
                got, want = lay._coarse(fp), _old_coarse(lay, fp)
                assert (got is None) == (want is None)
                assert got is None or np.array_equal(got, want)
            pos = lay.find(rng, fp, blind_tries=2)
            if pos is None:
                break
            lay.add(fp, *pos)
        lay._refresh_cells()
        masks = [lay.occ] if lay.exclusive else lay.vis
        for cells, m in zip(lay._cells, masks):
            pad = np.zeros((2 * cells.shape[0], 2 * cells.shape[1]), np.int64)
            pad[:m.shape[0], :m.shape[1]] = m
            assert np.array_equal(cells, pad.reshape(cells.shape[0], 2, cells.shape[1], 2).sum(axis=(1, 3)))


@pytest.mark.parametrize("t", [1.0, 0.5])
def test_feasible_map_in_a_box_is_the_full_map_there(t):
    rng = np.random.default_rng(4)
    lay = Layout(48, 57, t)
    for r in (9, 7):
        fp = _disc(r)
        lay.add(fp, *lay.find(rng, fp, blind_tries=3))
    fp = _disc(5)
    full = lay.feasible_map(fp)
    assert full.any()
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    assert np.array_equal(lay.feasible_map(fp, box), full)
    part = lay.feasible_map(fp, (2, 9, 3, 20))
    assert np.array_equal(part[2:9, 3:20], full[2:9, 3:20]) and not part[:2].any() and not part[9:].any()


def test_empty_superset_draws_what_the_blind_tries_would():
    # The proven-empty path draws the blind tries' numbers in one call: the stream
    # after find() must be where the one-by-one draws leave it.
    lay = Layout(40, 40, 1.0)
    lay.add(np.ones((40, 22), bool), 0, 0)
    fp = _disc(10)
    ny, nx = 40 - fp.shape[0] + 1, 40 - fp.shape[1] + 1
    rng, ref = np.random.default_rng(8), np.random.default_rng(8)
    assert lay.find(rng, fp, blind_tries=4) is None
    for _ in range(4):
        ref.integers(ny), ref.integers(nx)
    assert rng.integers(2**40) == ref.integers(2**40) and rng.random() == ref.random()
