"""Distractors on any scene (issue 22): default sizes that leave room for them, the
size flags, refusals that name sizes which fit, and images that never exhaust their
layouts on the distractors they drew first."""

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from synthcount.compose import DISTRACTOR_REDRAW_AFTER, Composer
from synthcount.config import DatasetConfig, SceneConfig, SourceConfig, preset
from synthcount.generate import _unfit_message
from synthcount.pack import AssetPack
from synthcount.sources import resolve_distractor_objects, resolve_sources
from synthcount.survey import feasible_sizes, survey_layouts
from tests.test_reliability import _cutouts


@pytest.fixture(scope="module")
def builtin():
    return resolve_sources(SourceConfig())


def test_default_sizes_shrink_only_with_distractors():
    assert SceneConfig().ref_side_range == (0.4, 0.8)  # the paper's scene is untouched
    assert preset("decorrelated").area_fraction_range == (0.04, 0.16)
    f = math.sqrt(4 / (4 + 3))  # N_max 4 and 3 distractors take the area 4 targets had
    assert SceneConfig(distractors=(1, 3)).ref_side_range == pytest.approx((0.4 * f, 0.8 * f), abs=1e-4)
    assert preset("decorrelated", distractors=5).area_fraction_range == pytest.approx((0.04 * 4 / 9, 0.16 * 4 / 9),
                                                                                       abs=1e-5)
    assert SceneConfig(distractors=3, ref_side_range=(0.4, 0.8)).ref_side_range == (0.4, 0.8)  # given: kept
    assert preset("fsc").ref_side_range == (0.1, 0.18)
    # The resolved sizes are what the config stores, so a stored config reads back the same.
    cfg = DatasetConfig(scene=SceneConfig(distractors=(2, 5)))
    assert DatasetConfig.from_json(cfg.to_json()) == cfg


def test_size_flags_reach_the_config(tmp_path):
    out = tmp_path / "d"
    r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "2", "--size", "48", "--quiet",
                                  "--object-size", "0.3:0.5", "--scale-jitter", "1:1", "--rotation", "25",
                                  "--flip", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    scene = json.loads((out / "dataset.json").read_text())["config"]["scene"]
    assert (scene["ref_side_range"], scene["scale_jitter"], scene["rotation_range"], scene["flip_p"]) == \
        ([0.3, 0.5], [1.0, 1.0], [-25.0, 25.0], 0.0)
    for bad, flag in ((["--object-size", "0.5"], "--object-size"), (["--object-size", "0.9:0.1"], "--object-size"),
                      (["--area-fraction", "2:3"], "--area-fraction"), (["--flip", "2"], "--flip")):
        r = CliRunner().invoke(main, ["generate", str(tmp_path / "no"), "--num-images", "2", *bad])
        assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output, (bad, r.output)
    assert not (tmp_path / "no").exists()


def test_refusal_names_sizes_that_fit(builtin):
    """Two targets beside 4 distractors at sides 0.45-0.5 of a 48 px image cannot be laid
    out; the survey stops at the first unfit pair and the refusal names --object-size
    values at which every pair fits (checked here by surveying at them)."""
    objs = AssetPack(objects=[builtin[0].objects[i] for i in (0, 2)])  # a disc and a rounded square
    scene = SceneConfig(size=(48, 48), max_count=2, count_probs=(0, 0, 1.0), ref_side_range=(0.45, 0.5),
                        distractors=(0, 4))
    comp = Composer(scene, objs, builtin[1])
    s = survey_layouts(comp, stop_at_unfit=True)
    assert not s.complete and s.unfit == {2: [0]}  # stopped at the first object
    msg = _unfit_message(comp, s)
    m = re.search(r"--object-size ([\d.]+):([\d.]+) fits every object", msg)
    assert msg.startswith("--object-size 0.45:0.5 ") and "'builtin/shape/disc' cannot be laid out 2 times" in msg, msg
    a, b = float(m.group(1)), float(m.group(2))
    assert b < 0.5 and b / a == pytest.approx(0.5 / 0.45, rel=1e-3)
    ok = survey_layouts(Composer(SceneConfig(**{**scene.__dict__, "ref_side_range": (a, b)}), objs, builtin[1]))
    assert ok.complete and ok.unfit == {}
    # One step larger (the grid is 10% on the sides) does not fit at the search's rule.
    assert feasible_sizes(Composer(SceneConfig(**{**scene.__dict__, "ref_side_range": (a / 0.9, b / 0.9)}), objs,
                                   builtin[1])) == pytest.approx((a, b), abs=2e-4)


def test_distractors_that_never_fit_are_redrawn(tmp_path, builtin):
    """A distractor square beside a target square of the same size never fits in 64 px;
    a bar does. An image that drew the square tries other distractor objects after
    DISTRACTOR_REDRAW_AFTER layouts instead of exhausting its budget on it."""
    _cutouts(str(tmp_path / "t"), {"square60.png": (60, 60)})
    _cutouts(str(tmp_path / "d"), {"square50.png": (50, 50), "bar.png": (6, 100)})
    src = SourceConfig(objects=str(tmp_path / "t"), distractor_objects=str(tmp_path / "d"))
    objs = resolve_sources(src)[0]
    dpack = resolve_distractor_objects(src, "cutout")
    scene = SceneConfig(size=(64, 64), max_count=1, count_probs=(0, 1.0), ref_side_range=(0.55, 0.6),
                        scale_jitter=(1.0, 1.0), rotation_range=(0.0, 0.0), flip_p=0.0, distractors=1)
    comp = Composer(scene, objs, builtin[1], layout_budget=264, distractor_objects=dpack)
    recs = [comp.compose(3, i)[2] for i in range(12)]
    bar = [o.name for o in dpack.objects].index("bar.png")
    assert all(int(r["object_ids"][1]) == bar for r in recs)  # every image ends with the bar
    assert any(int(r["layout_tries"]) > DISTRACTOR_REDRAW_AFTER for r in recs)  # some drew the square first
    assert np.all([int(r["num_distractors"]) == 1 for r in recs])
