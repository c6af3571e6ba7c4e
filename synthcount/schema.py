"""The per-image record: every field a shard stores beside the images and label maps.

One source of truth for the compositor (which fills records), the generator (which
allocates them per shard) and readers: ``record_spec(max_count, max_distractors,
classes)`` maps each field to its dtype and per-image shape, ``new_records``
allocates arrays pre-filled with the field's "absent" value. Per-object fields have
M = ``max_count`` + ``max_distractors`` columns; column k-1 is object k (label k):
the N targets first, then the K distractors (``object_role`` tells them apart).
Absent objects hold 0 (areas, flips), -1 (integer ids, boxes, positions, roles) or
NaN (floats).

Fields added after synthcount 0.1.0 (``object_role``, ``num_distractors``,
``target_id``, ``exemplar_boxes``; ``class_counts`` and ``class_ids`` with
``classes``) are absent from datasets made before them: readers and ``verify``
treat a missing ``object_role`` as "every object is a target".
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["record_spec", "new_records", "fill_value", "MAX_EXEMPLARS", "ROLE_TARGET", "ROLE_DISTRACTOR",
           "ROLE_ABSENT"]

MAX_EXEMPLARS = 3  # exemplar boxes per image (FSC-147 gives three)
ROLE_TARGET, ROLE_DISTRACTOR, ROLE_ABSENT = 0, 1, -1  # values of ``object_role``


def record_spec(max_count: int, max_distractors: int = 0, classes: Optional[int] = None
                ) -> Dict[str, Tuple[np.dtype, tuple]]:
    """Every per-image record field -> (dtype, per-image shape).

    Parameters
    ----------
    max_count : int
        The most targets N an image can have.
    max_distractors : int
        The most distractors K an image can have; per-object fields have
        ``max_count + max_distractors`` columns (at least 1).
    classes : int or None
        With ``classes`` C (mixed mode), ``class_counts`` and ``class_ids`` (C,) are added.

    Absent objects hold 0 (areas), -1 (integer ids/boxes/positions/roles) or NaN (floats).
    """
    m = max(max_count + max_distractors, 1)
    i8, i32, i64, f32, u8 = (np.dtype(t) for t in ("int8", "int32", "int64", "float32", "uint8"))
    spec = {
        "index": (i64, ()),                # global image index
        "count": (i32, ()),                # N
        "cumulative_area": (i64, ()),      # A = sum of visible object pixels
        "object_areas": (i32, (m,)),       # visible pixels per object
        "object_full_areas": (i32, (m,)),  # pixels per object if nothing occluded it
        "object_ids": (i32, (m,)),         # index into the object pack
        "object_boxes": (i32, (m, 4)),     # visible-pixel box y0, x0, y1, x1 (end exclusive)
        "object_centroids": (f32, (m, 2)), # visible-pixel centroid y, x
        "object_position": (i32, (m, 2)),  # top-left y, x of the pasted patch
        "object_patch_size": (i32, (m, 2)),
        "object_scale": (f32, (m,)),       # size factor relative to the asset
        "object_angle": (f32, (m,)),       # degrees, counter-clockwise
        "object_flip": (u8, (m,)),         # horizontal flip
        "object_color": (f32, (m, 3)),     # brightness, contrast, saturation factors
        "field_area": (f32, ()),           # convex hull area of all object pixels
        "mean_item_area": (f32, ()),       # A / N (0 when N = 0)
        "background_id": (i32, ()),        # index into the background pack
        "bg_crop": (i32, (4,)),            # y, x, h, w of the crop in the prescaled background
        "min_visible": (f32, ()),          # t used for this image
        "ref_side": (f32, ()),             # reference longer side in pixels (independent mode)
        "target_area": (f32, ()),          # drawn cumulative area (decorrelated mode)
        "layout_tries": (i32, ()),         # layouts drawn (1 = first one fitted)
        "placement_maps": (i32, ()),       # exact feasible-position maps computed
        "unfit_redraws": (i32, ()),        # objects replaced as unable to fit N times (unfit="redraw")
        "object_role": (i8, (m,)),         # 0 target, 1 distractor, -1 absent
        "num_distractors": (i32, ()),      # K (labels N+1..N+K)
        "target_id": (i32, ()),            # same mode: the counted object (N = 0 too); -1 in mixed mode
        "exemplar_boxes": (i32, (MAX_EXEMPLARS, 4)),  # boxes of up to 3 visible targets, -1 where absent
        # DeWind et al.'s properties of the targets (synthcount.properties); NaN where undefined
        "total_surface_area": (i64, ()),   # TSA (= cumulative_area)
        "item_surface_area": (f32, ()),    # ISA = TSA / N (= mean_item_area)
        "sparsity": (f32, ()),             # FA / N
        "coverage": (f32, ()),             # TSA / FA
        "total_perimeter": (f32, ()),      # summed boundary length of the visible targets
        "log_size": (f32, ()),             # log TSA + log ISA
        "log_spacing": (f32, ()),          # log FA + log sparsity
        "stimulus_set": (i32, ()),         # set of a designed space (names: shard attribute stimulus_sets)
        "design_target": (f32, (3,)),      # designed log N, log size, log spacing aimed at; NaN without a design
    }
    if classes:
        spec["class_counts"] = (i32, (classes,))  # targets per class of the image
        spec["class_ids"] = (i32, (classes,))     # object pack index of each class
    return spec


_NAN_SCALARS = ("ref_side", "target_area", "sparsity", "coverage", "log_size", "log_spacing")


def fill_value(key: str, dtype: np.dtype, shape: tuple):
    """The "absent" value of a record field (see the module docstring)."""
    if dtype.kind == "f":
        return np.nan if (shape or key in _NAN_SCALARS) else 0.0
    if key == "target_id":
        return -1
    if key in ("object_areas", "object_full_areas", "object_flip", "class_counts") or not shape:
        return 0
    return -1


def new_records(spec: Dict[str, Tuple[np.dtype, tuple]], n: int) -> Dict[str, np.ndarray]:
    """Arrays for ``n`` records, pre-filled with the "absent" values of ``record_spec``."""
    return {k: np.full((n,) + shape, fill_value(k, dt, shape), dt) for k, (dt, shape) in spec.items()}
