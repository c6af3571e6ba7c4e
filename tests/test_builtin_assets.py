"""Built-in asset packs: counts, determinism across processes, soft alpha, binary stimuli."""

import json
import re
import subprocess
import sys

import numpy as np

from synthcount.assets import binary_backgrounds, binary_objects, builtin_backgrounds, builtin_objects

# Run in a fresh interpreter with sockets disabled: proves no network is touched,
# measures the cold build time, and gives fingerprints from another process.
_CHILD = r"""
import json, socket, time
def _no_net(*a, **k):
    raise RuntimeError("network access attempted")
socket.socket = _no_net
socket.create_connection = _no_net
t = time.perf_counter()
from synthcount.assets import builtin_objects, builtin_backgrounds, binary_objects, binary_backgrounds
fps = [f().fingerprint() for f in (builtin_objects, builtin_backgrounds, binary_objects, binary_backgrounds)]
print(json.dumps({"fps": fps, "seconds": time.perf_counter() - t}))
"""


def test_counts_and_formats():
    objs, bgs = builtin_objects(), builtin_backgrounds()
    kinds = {re.sub(r"_\d+$", "", o.name) for o in objs.objects}
    assert len(kinds) >= 20 and len({o.name for o in objs.objects}) == len(objs.objects)
    assert any("horse" in k for k in kinds) and sum("coin" in o.name for o in objs.objects) >= 3
    for o in objs.objects:
        assert o.rgb.dtype == np.uint8 and o.alpha.dtype == np.uint8 and 32 <= max(o.alpha.shape) <= 256
        assert o.alpha.max() == 255 and (o.alpha >= 128).mean() < 1.0
    assert len(bgs.backgrounds) >= 10 and len(set(bgs.background_names)) == len(bgs.backgrounds)
    for b in bgs.backgrounds:
        assert b.dtype == np.uint8 and b.shape[2] == 3 and min(b.shape[:2]) >= 256 and b.std() > 3
    assert not objs.backgrounds and not bgs.objects


def test_cached_and_deterministic_across_processes():
    assert builtin_objects() is builtin_objects()
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    here = [f().fingerprint() for f in (builtin_objects, builtin_backgrounds, binary_objects, binary_backgrounds)]
    assert child["fps"] == here
    assert child["seconds"] < 3.0  # cold import + build; ~0.3 s measured on an idle core


def test_procedural_shapes_have_soft_alpha():
    shapes = [o for o in builtin_objects().objects if o.name.startswith("builtin/shape/")]
    assert len(shapes) >= 18
    soft = [o.name for o in shapes if np.count_nonzero((o.alpha > 0) & (o.alpha < 255)) > 20]
    # only shapes with all edges on the pixel grid (e.g. the cross) may lack soft edges
    assert len(soft) >= len(shapes) - 2
    disc = next(o for o in shapes if o.name.endswith("/disc"))
    assert 0.75 < (disc.alpha / 255.0).mean() < 0.82  # pi / 4 of its box


def test_binary_stimuli():
    objs = binary_objects().objects
    assert len(objs) >= 4
    ratios = set()
    for o in objs:
        assert set(np.unique(o.alpha)) <= {0, 255} and np.all(o.rgb == 255)
        assert max(o.alpha.shape) == 64
        ratios.add(round(o.alpha.shape[1] / o.alpha.shape[0], 1))
    assert any(o.alpha.min() == 0 for o in objs)  # a disc
    assert len(ratios) >= 3
    (bg,) = binary_backgrounds().backgrounds
    assert bg.shape[2] == 3 and bg.max() == 0
