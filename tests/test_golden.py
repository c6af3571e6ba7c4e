"""Same pixels, labels and records as the reference: a guard for refactors and speed-ups.

``data/golden_arrays.json`` holds sha256 prefixes of the decoded arrays (images,
label maps and every record field) of 60 images per config, made by the code of
commit f8754d7 (synthcount 0.1.0) on the built-in assets. A change that moves one
pixel, one label or one recorded number of any of these configs fails here. Fields
added since then are not in the file and are not compared.

``data/golden_arrays_v020.json`` does the same for options that 0.1.0 did not have
(distractors, exemplars, classes, the ``fsc`` preset), made by the code of commit
5ac73d8 (synthcount 0.2.0 before the speed-ups of issue 14), every record field included.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from synthcount.compose import Composer
from synthcount.config import SceneConfig, SourceConfig, preset
from synthcount.sources import resolve_sources

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "golden_arrays.json")
GOLDEN_V020 = os.path.join(os.path.dirname(__file__), "data", "golden_arrays_v020.json")
CASES = {
    "paper": dict(),
    "paper_t05_jitter_feather": dict(min_visible=0.5, color_jitter=0.3, blend="feather"),
    "sos": dict(min_visible=(1.0, 0.5, 0.5, 0.6, 0.7)),
    "regression_hard": dict(min_visible=1.0, ref_side_range=(0.3, 0.45), scale_jitter=(0.9, 1.1), blend="hard"),
    "decorrelated_mixed": dict(min_visible=1.0, area_mode="decorrelated", scale_jitter=(0.95, 1.05), mode="mixed"),
    "binary": "binary",
    "gap_96x128": dict(size=(96, 128), min_gap=2, ref_side_range=(0.2, 0.3)),
}


def array_hashes(scene: SceneConfig, n: int = 60, seed: int = 7) -> dict:
    o, b = resolve_sources(SourceConfig(), scene.stimulus)
    c = Composer(scene, o, b)
    hs = {}
    for i in range(n):
        img, lm, rec = c.compose(seed, i)
        for k, v in [("image", img), ("label_map", lm)] + sorted(rec.items()):
            hs.setdefault(k, hashlib.sha256()).update(np.ascontiguousarray(v).tobytes())
    return {k: h.hexdigest()[:16] for k, h in hs.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decoded_arrays_match_the_reference(name):
    with open(GOLDEN) as f:
        want = json.load(f)[name]
    kw = CASES[name]
    got = array_hashes(preset("binary") if kw == "binary" else SceneConfig(**kw))
    differ = sorted(k for k in want if got.get(k) != want[k])
    assert not differ, f"{name}: these arrays changed: {differ}"


# Record fields added after 0.2.0 (issue 25: visual properties and designs); the
# fields of 0.2.0 keep their bytes.
ADDED_SINCE_0_2_0 = {"total_surface_area", "item_surface_area", "sparsity", "coverage", "total_perimeter",
                     "log_size", "log_spacing", "stimulus_set", "design_target"}

CASES_V020 = {
    "fsc": preset("fsc"),
    "distractors_t1_jitter": SceneConfig(min_visible=1.0, distractors=(0, 3), ref_side_range=(0.2, 0.4),
                                         color_jitter=0.2),
    "classes_t05": SceneConfig(min_visible=0.5, mode="mixed", classes=2, max_count=6, ref_side_range=(0.2, 0.35),
                               distractors=(1, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES_V020))
def test_decoded_arrays_match_0_2_0(name):
    with open(GOLDEN_V020) as f:
        want = json.load(f)[name]
    got = array_hashes(CASES_V020[name])
    assert set(got) - set(want) == ADDED_SINCE_0_2_0 and set(want) <= set(got), \
        f"{name}: record fields changed: {sorted(set(got) ^ set(want))}"
    differ = sorted(k for k in want if got[k] != want[k])
    assert not differ, f"{name}: these arrays changed: {differ}"
