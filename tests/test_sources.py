"""Loading objects and backgrounds from folders and packs (synthcount.sources)."""

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from synthcount import sources
from synthcount.config import SourceConfig
from synthcount.pack import load_pack
from synthcount.sources import SourceError, load_backgrounds, load_objects, prepare, resolve_sources
from tests import fixtures as F


def _by_name(pack):
    return {o.name: o for o in pack.objects}


def _read(path, mode=None):
    with Image.open(path) as im:
        return np.asarray(im if mode is None else im.convert(mode))


# --------------------------------------------------------------------------- objects

def test_good_objects_load_in_sorted_order(msra_dir):
    pack = load_objects(msra_dir)
    assert [o.name for o in pack.objects] == list(F.MSRA_GOOD)
    assert pack.skipped == []
    for o in pack.objects:
        assert o.rgb.dtype == np.uint8 and o.rgb.ndim == 3 and o.rgb.shape[2] == 3
        assert o.alpha.dtype == np.uint8 and o.alpha.shape == o.rgb.shape[:2]
        # cropped to the mask's box: every border row/column holds an object pixel
        on = o.alpha >= 128
        assert on[0].any() and on[-1].any() and on[:, 0].any() and on[:, -1].any()


def test_crop_equals_drawn_ellipse_bbox(msra_dir):
    o = _by_name(load_objects(msra_dir))[F.ELLIPSE_NAME]
    y0, y1, x0, x1 = F.ELLIPSE_BBOX
    img = _read(os.path.join(msra_dir, F.ELLIPSE_NAME))
    mask = _read(os.path.join(msra_dir, F.ELLIPSE_NAME[:-4] + ".png"))
    assert o.rgb.shape == (y1 - y0, x1 - x0, 3)
    np.testing.assert_array_equal(o.rgb, img[y0:y1, x0:x1])
    np.testing.assert_array_equal(o.alpha, mask[y0:y1, x0:x1])


def test_soft_mask_edges_kept_and_threshold_sets_box(msra_dir):
    soft = _by_name(load_objects(msra_dir))[F.SOFT_NAME]
    assert np.count_nonzero((soft.alpha > 10) & (soft.alpha < 245)) > 100
    # a higher threshold shrinks the box of a soft (blurred) mask
    tight = _by_name(load_objects(msra_dir, mask_threshold=0.9))[F.SOFT_NAME]
    assert tight.alpha.shape[0] < soft.alpha.shape[0] and tight.alpha.shape[1] < soft.alpha.shape[1]


def test_max_side_downscales_with_inter_area(msra_dir):
    pack = load_objects(msra_dir, max_side=48)
    assert all(max(o.alpha.shape) == 48 for o in pack.objects)  # every fixture object is larger
    big = _by_name(pack)[F.BIG_NAME]
    assert big.alpha.shape == (48, 48)  # disc of radius 90: a 181 x 181 box
    img = _read(os.path.join(msra_dir, F.BIG_NAME))[10:191, 10:191]
    np.testing.assert_array_equal(big.rgb, cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA))


def test_bad_files_skipped_with_reasons(bad_msra_dir):
    pack = load_objects(bad_msra_dir)
    assert [o.name for o in pack.objects] == list(F.BAD_MSRA_GOOD)
    skipped = dict(pack.skipped)
    assert sorted(skipped) == sorted(F.BAD_MSRA_REASONS)
    for name, phrase in F.BAD_MSRA_REASONS.items():
        assert skipped[name].startswith(phrase), (name, skipped[name])
        assert "\n" not in skipped[name]


def test_lowered_pixel_limit_flags_bombs(msra_dir, monkeypatch):
    limit = 160 * 120  # the ellipse image is exactly this size; larger ones are "bombs"
    pack = load_objects(msra_dir, max_pixels=limit)
    for name, reason in pack.skipped:
        w, h = _read(os.path.join(msra_dir, name)).shape[1::-1]
        assert w * h > limit and reason.startswith("decompression bomb")
    assert F.ELLIPSE_NAME in _by_name(pack) and len(pack.skipped) >= 2
    # the module constant is the default limit
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SourceError, match=r"no usable object \(6 files skipped"):
        load_objects(msra_dir)


def test_rgba_cutouts_alpha_is_mask(rgba_dir):
    pack = load_objects(rgba_dir)
    assert [o.name for o in pack.objects] == list(F.RGBA_FILES) and pack.skipped == []
    objs = _by_name(pack)
    horse = objs["horse.png"]
    assert np.all(horse.rgb[horse.alpha > 200] == (120, 80, 40))
    assert np.count_nonzero((horse.alpha > 0) & (horse.alpha < 255)) > 20  # soft edges kept
    moon = objs["la_moon.png"]  # LA: gray + alpha
    assert np.array_equal(moon.rgb[..., 0], moon.rgb[..., 2])
    pal = objs["palette.png"]  # palette index 0 is transparent
    assert set(np.unique(pal.alpha)) <= {0, 255} and pal.alpha.min() == 0


def test_workers_give_identical_pack(bad_msra_dir):
    one = load_objects(bad_msra_dir)
    two = load_objects(bad_msra_dir, workers=2)
    assert one.fingerprint() == two.fingerprint() and one.skipped == two.skipped


def test_no_usable_object_is_a_one_line_error(tmp_path, bad_msra_dir):
    d = tmp_path / "only_bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"junk")
    (d / "a.png").write_bytes(b"junk")
    with open(os.path.join(bad_msra_dir, "Imgs/nomask.jpg"), "rb") as fh:
        (d / "b.jpg").write_bytes(fh.read())
    with pytest.raises(SourceError) as e:
        load_objects(str(d))
    msg = str(e.value)
    assert str(d) in msg and "2 files skipped" in msg and "\n" not in msg
    with pytest.raises(SourceError, match="no such file"):
        load_objects(str(tmp_path / "missing"))
    junk = tmp_path / "junk_only"
    junk.mkdir()
    (junk / "x.jpg").write_bytes(b"junk")
    with pytest.raises(SourceError, match=r"no usable background \(1 files skipped"):
        load_backgrounds(str(junk))
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(SourceError, match="not a folder nor an asset pack"):
        load_objects(str(tmp_path / "x.h5"))


@pytest.mark.parametrize("kw", [dict(workers=0), dict(max_side=0), dict(mask_threshold=0.0), dict(mask_threshold=1.5)])
def test_bad_arguments_name_the_argument(msra_dir, kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        load_objects(msra_dir, **kw)


# --------------------------------------------------------------------------- backgrounds

def test_sun397_conversions_give_rgb_uint8(sun_dir):
    pack = load_backgrounds(sun_dir)
    assert pack.background_names == list(F.SUN_FILES) and pack.skipped == []
    bgs = dict(zip(pack.background_names, pack.backgrounds))
    for name, b in bgs.items():
        assert b.dtype == np.uint8 and b.ndim == 3 and b.shape[2] == 3 and b.std() > 5, name
    assert bgs[F.SUN_EXIF_NAME].shape == (120, 80, 3)  # EXIF orientation 6 applied
    gray = bgs["b/beach/sun_gray.jpg"]
    assert np.array_equal(gray[..., 0], gray[..., 1])
    raw16 = _read(os.path.join(sun_dir, "g/grass/sun_16bit.png")).astype(np.int64)
    assert raw16.max() > 255  # really stored as 16 bit
    np.testing.assert_array_equal(bgs["g/grass/sun_16bit.png"][..., 0], np.round(raw16 * 255 / 65535))
    grass = cv2.resize(data.grass(), (150, 110), interpolation=cv2.INTER_AREA).astype(int)
    cmyk_src = np.dstack([grass // 3, grass, grass // 2])  # what make_sun_dir saved as CMYK
    assert np.abs(bgs["f/forest/needleleaf/sun_cmyk.jpg"] - cmyk_src).mean() < 6  # JPEG error only
    rgba = _read(os.path.join(sun_dir, "f/forest/needleleaf/sun_rgba.png"))
    np.testing.assert_array_equal(bgs["f/forest/needleleaf/sun_rgba.png"], rgba[..., :3])  # alpha dropped
    pal = _read(os.path.join(sun_dir, "g/grass/sun_palette.png"), "RGB")
    np.testing.assert_array_equal(bgs["g/grass/sun_palette.png"], pal)


def test_class_filter(sun_dir):
    needle = F.SUN_CLASSES["/f/forest/needleleaf"]
    assert load_backgrounds(sun_dir, classes=["/f/forest/needleleaf"]).background_names == list(needle)
    assert load_backgrounds(sun_dir, classes=["f/forest"]).background_names == list(needle)  # prefix, no slash
    both = load_backgrounds(sun_dir, classes=("/b/beach", "/g/grass")).background_names
    assert both == sorted(F.SUN_CLASSES["/b/beach"] + F.SUN_CLASSES["/g/grass"])
    with pytest.raises(SourceError, match=r"unknown background class '/f/fores'.*/b/beach"):
        load_backgrounds(sun_dir, classes=["/f/fores"])


def test_background_max_side_is_shorter_side(sun_dir):
    pack = load_backgrounds(sun_dir, max_side=50, workers=2)
    shapes = dict(zip(pack.background_names, (b.shape for b in pack.backgrounds)))
    assert all(min(s[:2]) == 50 for s in shapes.values())
    assert shapes["b/beach/sun_rgb.jpg"] == (50, 75, 3)  # 180 x 120, JPEG draft then INTER_AREA
    assert shapes[F.SUN_EXIF_NAME] == (75, 50, 3)


# --------------------------------------------------------------------------- prepare / resolve

def test_prepare_writes_pack_and_report(bad_msra_dir, sun_dir, tmp_path):
    out = str(tmp_path / "objects.h5")
    pack = prepare(bad_msra_dir, out, "objects", max_side=64, progress=False)
    assert load_pack(out).fingerprint() == pack.fingerprint()
    assert load_objects(out).fingerprint() == pack.fingerprint()
    with open(out + ".report.json") as fh:
        report = json.load(fh)
    assert report["num_loaded"] == len(F.BAD_MSRA_GOOD) and report["num_skipped"] == len(F.BAD_MSRA_REASONS)
    assert {s["file"] for s in report["skipped"]} == set(F.BAD_MSRA_REASONS)
    assert report["fingerprint"] == pack.fingerprint() and report["params"]["max_side"] == 64
    with pytest.raises(SourceError, match="not a backgrounds pack"):
        load_backgrounds(out)
    bout = str(tmp_path / "bg.h5")
    bpack = prepare(sun_dir, bout, "backgrounds", classes=("/g/grass",), progress=False)
    assert load_backgrounds(bout).background_names == list(F.SUN_CLASSES["/g/grass"])
    assert load_pack(bout).fingerprint() == bpack.fingerprint()
    with pytest.raises(SourceError, match="not an objects pack"):
        load_objects(bout)
    with pytest.raises(ValueError, match="kind"):
        prepare(sun_dir, bout, "scenes")


def test_resolve_sources(msra_dir, sun_dir):
    from synthcount import assets

    objs, bgs = resolve_sources(SourceConfig())
    assert objs is assets.builtin_objects() and bgs is assets.builtin_backgrounds()
    objs, bgs = resolve_sources(SourceConfig(), stimulus="binary")
    assert objs is assets.binary_objects() and bgs is assets.binary_backgrounds()
    cfg = SourceConfig(objects=msra_dir, backgrounds=sun_dir, background_classes=("/g/grass",),
                       object_max_side=40, background_max_side=60)
    objs, bgs = resolve_sources(cfg)
    assert len(objs.objects) == len(F.MSRA_GOOD) and max(max(o.alpha.shape) for o in objs.objects) == 40
    assert bgs.background_names == list(F.SUN_CLASSES["/g/grass"])
    assert all(min(b.shape[:2]) == 60 for b in bgs.backgrounds)


def test_sources_that_cannot_fit_in_memory_are_refused_before_any_decode(msra_dir, sun_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main

    pack = str(tmp_path / "bg.h5")
    prepare(sun_dir, pack, "backgrounds")
    decoded = sum(b.nbytes for b in load_backgrounds(sun_dir).backgrounds)
    monkeypatch.setattr(sources, "mem_available", lambda: int(1.5 * decoded))  # < twice the decoded pixels
    calls = []
    monkeypatch.setattr(sources, "_decode_background", lambda t: calls.append(t))
    with pytest.raises(SourceError, match=r"backgrounds take about .* MiB once decoded .* choose classes") as e:
        load_backgrounds(sun_dir)
    assert str(e.value).startswith(f"{sun_dir}: ") and calls == []
    with pytest.raises(SourceError, match=r"7 assets take about .* MiB once decoded \(from the pack's stored shapes\)"):
        load_backgrounds(pack)
    monkeypatch.undo()
    # The estimate from the headers (every file sampled here) against what decoding gives:
    # the same sizes, plus the files the decode will skip.
    files = [os.path.join(sun_dir, f) for f in sources._walk(sun_dir) if sources._ext(f) in sources.IMAGE_EXT]
    per = sources._sampled_decoded_bytes(files, lambda w, h: 3 * w * h * min(1.0, 256 / min(w, h)) ** 2)
    assert decoded <= per * len(files) <= 1.5 * decoded
    objects = load_objects(msra_dir).objects
    monkeypatch.setattr(sources, "mem_available", lambda: sum(o.rgb.size // 3 * 4 for o in objects))
    with pytest.raises(SourceError, match=r"objects take about .* use part of the folder"):
        load_objects(msra_dir)
    r = CliRunner().invoke(main, ["generate", str(tmp_path / "ds"), "--num-images", "4", "--backgrounds", sun_dir,
                                  "--source-mode", "memory", "--quiet"])
    assert r.exit_code == 2 and "backgrounds take about" in r.output and "--source-mode stream" in r.output
    assert not (tmp_path / "ds").exists(), r.output
    # auto (the default) streams what does not fit instead of refusing it
    r = CliRunner().invoke(main, ["generate", str(tmp_path / "ds"), "--num-images", "4", "--backgrounds", sun_dir,
                                  "--quiet"])
    assert r.exit_code == 0 and "4 images" in r.output, r.output
