"""Summaries and contact sheets of a dataset (``synthcount inspect`` / ``preview``)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .reader import Dataset

__all__ = ["summarize", "format_summary", "preview", "corr_log_n_log_a", "distractor_summary", "property_correlations"]


def corr_log_n_log_a(count: np.ndarray, area: np.ndarray) -> Optional[float]:
    """Pearson r of log N and log A over images with N >= 1 and A > 0 (None if undefined)."""
    count, area = np.asarray(count, np.float64), np.asarray(area, np.float64)
    keep = (count >= 1) & (area > 0)
    if keep.sum() < 3:
        return None
    x, y = np.log(count[keep]), np.log(area[keep])
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def _tail(x: np.ndarray) -> dict:
    """Mean, 99th percentile and maximum of layouts per image."""
    x = np.asarray(x, np.float64)
    return {"mean": float(x.mean()), "p99": float(np.percentile(x, 99)), "max": int(x.max())}


def _layout_budget(ds: Dataset) -> Optional[int]:
    """Layouts an image could draw: stored per shard since the layout survey, else the
    config's fixed ``max_layouts`` (200 before it)."""
    try:
        v = ds.shard_attrs(0).get("layout_budget")
    except (OSError, ValueError):
        v = None
    if v is not None:
        return int(v)
    m = ds.config.get("scene", {}).get("max_layouts", 200) if isinstance(ds.config, dict) else None
    return int(m) if isinstance(m, int) else None


def _config_mismatches(ds: Dataset) -> list:
    """Shards whose ``config`` attribute differs from the folder's ``dataset.json``."""
    import json
    import os

    from .shards import _identity_config

    if not os.path.isdir(ds.path):
        return []
    want = _identity_config(ds.path, [])
    if want is None:
        return []
    from .shards import _strip_sources

    bad = []
    for k in range(ds.num_shards):
        try:
            cfg = json.loads(ds.shard_attrs(k).get("config", "null"))
        except (TypeError, ValueError):
            cfg = None
        if _strip_sources(cfg) != want:
            bad.append(os.path.basename(ds.files[k]))
    return bad


def summarize(ds: Dataset) -> dict:
    """Summary of a dataset from its label table (images are not read).

    Returns
    -------
    dict
        ``num_images``, ``num_shards``, ``image_size`` [H, W], ``count_histogram``
        {count (str): images}, ``cumulative_area`` stats (mean/std/min/max, pixels),
        ``cumulative_area_by_count`` {count: stats}, ``corr_log_n_log_a`` (Pearson r of
        log N and log A over the images with N >= 1; ``corr_note`` says so; None if
        undefined), ``field_area`` and ``mean_item_area`` stats when stored, ``seed``,
        ``layouts_by_count`` {count: {mean, p99, max}} with ``layout_budget`` (layouts
        an image could draw) and ``most_layouts``, ``shards_config_mismatch`` (shards
        whose config differs from ``dataset.json``), and ``shards``: one row per shard
        (file, first index, images, count mean, area mean). Counts, areas and their
        correlation are about the targets. Where the dataset has them: ``distractors``
        (see :func:`distractor_summary`), ``classes`` (C, identities per image, mean
        targets per class) and ``exemplars_per_image`` {exemplars: images}. Always (older
        datasets compute them on read): ``property_correlations`` (see
        :func:`property_correlations`); with more than one stimulus set,
        ``stimulus_sets`` {name: images}.
    """
    if len(ds) == 0:
        return {"num_images": 0, "num_shards": int(ds.num_shards), "image_size": None, "seed": None,
                "count_histogram": {}, "cumulative_area": _stats(np.zeros(0)), "cumulative_area_by_count": {},
                "corr_log_n_log_a": None, "corr_note": "no images", "shards": []}
    lab = ds.labels
    count = lab["count"].astype(np.int64)
    area = lab["cumulative_area"].astype(np.int64)
    hist = {str(int(c)): int(n) for c, n in zip(*np.unique(count, return_counts=True))}
    by_count = {str(int(c)): _stats(area[count == c]) for c in np.unique(count)}
    # Mean item area and layouts per N show when object size is confounded with N
    # (layouts resampled until copies fit favour smaller copies at larger N).
    item = lab["mean_item_area"] if "mean_item_area" in lab.dtype.names else None
    tries = lab["layout_tries"] if "layout_tries" in lab.dtype.names else None
    counts = np.unique(count)
    item_by_count = {str(int(c)): float(item[count == c].mean()) for c in counts if c > 0} if item is not None else {}
    tries_by_count = {str(int(c)): float(tries[count == c].mean()) for c in counts} if tries is not None else {}
    layouts = {str(int(c)): _tail(tries[count == c]) for c in np.unique(count)} if tries is not None else {}
    budget = _layout_budget(ds)
    out = {
        "num_images": int(len(ds)),
        "num_shards": int(ds.num_shards),
        "image_size": list(ds.image_size) if len(ds) else None,
        "seed": ds.config.get("seed") if len(ds) else None,
        "count_histogram": hist,
        "cumulative_area": _stats(area),
        "cumulative_area_by_count": by_count,
        "mean_item_area_by_count": item_by_count,
        "layouts_per_image_by_count": tries_by_count,
        "layouts_by_count": layouts,
        "layout_budget": budget,
        "most_layouts": int(tries.max()) if tries is not None else None,
        "shards_config_mismatch": _config_mismatches(ds),
        "corr_log_n_log_a": corr_log_n_log_a(count, area),
        "corr_note": "Pearson r of log N and log A over images with N >= 1 (N = 0 has no log)",
    }
    for name in ("field_area", "mean_item_area"):
        if name in lab.dtype.names:
            out[name] = _stats(lab[name])
    out.update(_object_summaries(ds))
    pc = property_correlations(ds)
    if pc is not None:
        out["property_correlations"] = pc
    if "stimulus_set" in lab.dtype.names and len(ds.stimulus_sets) > 1:
        names = ds.stimulus_sets
        out["stimulus_sets"] = {names[int(v)] if 0 <= v < len(names) else str(int(v)): int(c)
                                for v, c in zip(*np.unique(lab["stimulus_set"], return_counts=True))}
    rows = []
    for k in range(ds.num_shards):
        sel = lab["shard"] == k
        rows.append({"file": ds.files[k].rsplit("/", 1)[-1],
                     "first_image_index": int(lab["index"][sel][0]) if sel.any() else None,
                     "num_images": int(sel.sum()), "count_mean": float(count[sel].mean()) if sel.any() else None,
                     "cumulative_area_mean": float(area[sel].mean()) if sel.any() else None})
    out["shards"] = rows
    return out


# Columns of the property correlation matrix: (label, field, take its log).
_PROPERTY_AXES = (("log N", "count", True), ("log TSA", "total_surface_area", True),
                  ("log ISA", "item_surface_area", True), ("log FA", "field_area", True),
                  ("log Sparsity", "sparsity", True), ("log Coverage", "coverage", True),
                  ("log Perimeter", "total_perimeter", True), ("log Size", "log_size", False),
                  ("log Spacing", "log_spacing", False))


def property_correlations(ds: Dataset) -> Optional[dict]:
    """Pearson correlation matrix of log N and the logs of the visual properties
    (``synthcount.properties``), over the images where all are finite (N >= 1,
    field area > 0); None when fewer than 3 images are. A constant column (a matched
    property, say) has no correlation: NaN, written null.

    Returns
    -------
    dict or None
        ``names`` (the axes, log N first), ``matrix`` (rows of floats or None) and
        ``images`` (how many went in).
    """
    lab = ds.labels
    if len(ds) == 0 or any(f not in lab.dtype.names for _, f, _ in _PROPERTY_AXES):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = [np.log(lab[f].astype(np.float64)) if lg else lab[f].astype(np.float64) for _, f, lg in _PROPERTY_AXES]
    x = np.stack(cols, axis=1)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 3:
        return None
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 1e-12 * np.maximum(np.abs(x).max(axis=0), 1), sd, np.nan)
    r = z.T @ z / len(x)
    return {"names": [a for a, _, _ in _PROPERTY_AXES], "images": int(len(x)),
            "matrix": [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in r]}


def format_property_correlations(pc: dict) -> list:
    """Text lines of :func:`property_correlations`'s matrix."""
    names = pc["names"]
    short = [n.replace("log ", "") for n in names]
    lines = [f"visual properties: correlations of the logs over {pc['images']} images with N >= 1 "
             f"(DeWind axes: Size = TSA x ISA, Spacing = FA x Sparsity)",
             " " * 14 + "".join(f"{s:>10}" for s in short)]
    for name, row in zip(names, pc["matrix"]):
        lines.append(f"{name:<14}" + "".join(f"{'-' if v is None else format(v, '.2f'):>10}" for v in row))
    return lines


def distractor_summary(ds: Dataset) -> Optional[dict]:
    """Distractor statistics, or None when no image has any.

    Returns
    -------
    dict or None
        ``histogram`` {K: images}, ``mean`` K, ``images_with_distractors``,
        ``visible_area`` stats of one distractor's visible pixels,
        ``visible_fraction`` its mean visible / full pixels (and
        ``target_visible_fraction`` beside it), and ``mean_by_count`` {N: mean K}.
    """
    if "num_distractors" not in ds.fields or len(ds) == 0:
        return None
    k = ds.labels["num_distractors"].astype(np.int64)
    if not k.any():
        return None
    count = ds.labels["count"].astype(np.int64)
    role, areas, full = ds.column("object_role"), ds.column("object_areas"), ds.column("object_full_areas")
    d, tg = role == 1, role == 0
    frac = areas / np.maximum(full, 1)
    return {"histogram": {str(int(v)): int(c) for v, c in zip(*np.unique(k, return_counts=True))},
            "mean": float(k.mean()), "images_with_distractors": int(np.count_nonzero(k)),
            "visible_area": _stats(areas[d]), "visible_fraction": float(frac[d].mean()),
            "target_visible_fraction": float(frac[tg].mean()) if tg.any() else None,
            "mean_by_count": {str(int(c)): float(k[count == c].mean()) for c in np.unique(count)}}


def _object_summaries(ds: Dataset) -> dict:
    """The summary entries of the fields added for counting past subitizing, where present."""
    out = {}
    d = distractor_summary(ds)
    if d is not None:
        out["distractors"] = d
    if "class_counts" in ds.fields:
        cc = ds.column("class_counts").astype(np.int64)
        ids = np.count_nonzero(cc, axis=1)
        out["classes"] = {"classes": int(cc.shape[1]),
                          "identities_per_image": {str(int(v)): int(c) for v, c in zip(*np.unique(ids,
                                                                                                  return_counts=True))},
                          "mean_per_class": [float(v) for v in cc.mean(axis=0)]}
    if "exemplar_boxes" in ds.fields:
        e = np.count_nonzero((ds.column("exemplar_boxes") != -1).any(axis=2), axis=1)
        out["exemplars_per_image"] = {str(int(v)): int(c) for v, c in zip(*np.unique(e, return_counts=True))}
    return out


def _format_objects(s: dict) -> list:
    """Text lines for the distractor, class and exemplar entries of a summary."""
    lines = []
    d = s.get("distractors")
    if d:
        va = d["visible_area"]
        lines.append(f"distractors: {d['mean']:.2f} per image on average, in {d['images_with_distractors']} images; "
                     f"K histogram {d['histogram']}; visible area per distractor mean {va['mean']:.1f} px "
                     f"(std {va['std']:.1f}); visible fraction {d['visible_fraction']:.3f} (targets "
                     f"{'-' if d['target_visible_fraction'] is None else format(d['target_visible_fraction'], '.3f')})"
                     f"; counts and areas above are the targets'")
    c = s.get("classes")
    if c:
        lines.append(f"classes (C = {c['classes']}): identities per image {c['identities_per_image']}; mean targets "
                     f"per class column {[round(v, 2) for v in c['mean_per_class']]}")
    if s.get("exemplars_per_image"):
        lines.append(f"exemplar boxes per image: {s['exemplars_per_image']}")
    return lines


def format_summary(s: dict, max_shard_rows: int = 20) -> str:
    """Human-readable text of :func:`summarize`'s dict."""
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"images: {s['num_images']} in {s['num_shards']} shards, size {s['image_size']}, seed {s['seed']}", "",
             "count  images  area mean    std     min     max  item area  layouts mean    p99    max"]
    for c, n in s["count_histogram"].items():
        st = s["cumulative_area_by_count"][c]
        item = s.get("mean_item_area_by_count", {}).get(c)
        lay = s.get("layouts_by_count", {}).get(c)
        lay_txt = "-" if lay is None else f"{lay['mean']:>12.2f} {lay['p99']:>6.0f} {lay['max']:>6d}"
        lines.append(f"{c:>5}  {n:>6}  {f(st['mean']):>9} {f(st['std']):>7} {f(st['min']):>7} {f(st['max']):>7}"
                     f"  {f(item):>9}  {lay_txt:>26}")
    a = s["cumulative_area"]
    lines.append(f"  all  {s['num_images']:>6}  {f(a['mean']):>9} {f(a['std']):>7} {f(a['min']):>7} {f(a['max']):>7}")
    r = s["corr_log_n_log_a"]
    lines += ["", f"corr(log N, log A) = {'undefined' if r is None else f'{r:.3f}'}  ({s['corr_note']})"]
    if s.get("most_layouts") is not None and s.get("layout_budget"):
        m, b = s["most_layouts"], s["layout_budget"]
        lines.append(f"layouts: the most any image needed was {m} of the {b} allowed ({100 * m / b:.1f}% of the cap)")
    if s.get("shards_config_mismatch"):
        bad = s["shards_config_mismatch"]
        lines.append(f"WARNING: {len(bad)} shard(s) were made with another config than dataset.json: "
                     f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} (run synthcount verify)")
    for name in ("field_area", "mean_item_area"):
        if name in s:
            st = s[name]
            lines.append(f"{name}: mean {f(st['mean'])}, std {f(st['std'])}, min {f(st['min'])}, max {f(st['max'])}")
    lines += _format_objects(s)
    if s.get("property_correlations"):
        lines += [""] + format_property_correlations(s["property_correlations"])
    if s.get("stimulus_sets"):
        lines.append(f"stimulus sets: {s['stimulus_sets']}")
    lines += ["", "shard               first  images  count mean  area mean"]
    rows = s["shards"]
    for row in rows[:max_shard_rows]:
        lines.append(f"{row['file']:<18} {row['first_image_index']:>6} {row['num_images']:>7} "
                     f"{f(row['count_mean']):>11} {f(row['cumulative_area_mean']):>10}")
    if len(rows) > max_shard_rows:
        lines.append(f"... {len(rows) - max_shard_rows} more shards (see --json)")
    return "\n".join(lines)


def _outline(label_map: np.ndarray) -> np.ndarray:
    """Boolean (H, W): object pixels with a 4-neighbour carrying another label."""
    lm = label_map
    edge = np.zeros(lm.shape, bool)
    edge[1:, :] |= lm[1:, :] != lm[:-1, :]
    edge[:-1, :] |= lm[:-1, :] != lm[1:, :]
    edge[:, 1:] |= lm[:, 1:] != lm[:, :-1]
    edge[:, :-1] |= lm[:, :-1] != lm[:, 1:]
    return edge & (lm > 0)


# Outline colours of objects 1, 2, 3, ... (cycled): distinct hues that stand out on photos.
# Targets: object k in _PALETTE[(k - 1) % 9]; distractors all in _DISTRACTOR_COLOUR
# (white, which no target takes), dashed.
_PALETTE = np.array([(255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (0, 128, 255),
                     (255, 0, 0), (160, 255, 160), (255, 160, 200)], np.uint8)
_DISTRACTOR_COLOUR = np.array((255, 255, 255), np.uint8)
_CAPTION_H = 14  # the caption strip above each tile (never over the image)


def _dashed(mask: np.ndarray, period: int = 3) -> np.ndarray:
    """``mask`` cut into diagonal dashes: every other run of ``period`` pixels along
    x + y, so a distractor's outline reads as dashed whatever its colour."""
    y, x = np.indices(mask.shape)
    return mask & (((y + x) // period) % 2 == 0)


def preview(ds: Dataset, out_png: str, n: int = 64, seed: int = 0, tile: Optional[int] = 160) -> str:
    """Write a contact sheet of ``n`` random images with outlines, counts and indices.

    Each target's outline (from the label map: what the labels claim) is drawn in its
    own colour (target k in ``_PALETTE[(k - 1) % 9]``); distractors (labels above
    the image's count) are all outlined in white, a colour no target takes, and
    dashed (every other run of 3 pixels black). Above each tile, on a strip of its
    own that covers no pixel of the image, the caption ``#<global image index>
    N=<count>`` (``+Kd`` for K distractors), so a suspect image can be looked up with
    ``ds[index]``.

    Parameters
    ----------
    ds : Dataset
    out_png : str
        PNG path to write.
    n : int, >= 1
        Tiles (at most the dataset size); drawn without replacement with
        ``numpy.random.default_rng(seed)``, shown in index order.
    seed : int
        Seed of the tile selection.
    tile : int or None
        Longer side of a tile in pixels (None: native size).

    Returns
    -------
    str
        ``out_png``.
    """
    from PIL import Image, ImageDraw

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if len(ds) == 0:
        raise ValueError(f"{ds.path}: the dataset holds no images")
    n = min(int(n), len(ds))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    imgs, maps = ds.read_images(idx), ds.read_label_maps(idx)
    counts = ds.labels["count"][idx]
    gidx = ds.labels["index"][idx]
    nd = ds.labels["num_distractors"][idx] if "num_distractors" in ds.labels.dtype.names else np.zeros_like(counts)
    h, w = imgs.shape[1:3]
    scale = 1.0 if tile is None else tile / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    cap = _CAPTION_H
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + cap + pad) + pad), (32, 32, 32))
    for t in range(n):
        im = imgs[t].copy()
        edge = _outline(maps[t])
        im[edge] = _PALETTE[(maps[t][edge].astype(np.int64) - 1) % len(_PALETTE)]  # target k in its own colour
        dis = edge & (maps[t] > counts[t])  # distractors (labels N+1..N+K): white, dashed
        im[dis] = _DISTRACTOR_COLOUR
        im[dis & ~_dashed(edge)] = 0
        pil = Image.fromarray(im)
        if (th, tw) != (h, w):
            pil = pil.resize((tw, th), Image.NEAREST)
        strip = Image.new("RGB", (tw, cap), (0, 0, 0))
        text = f"#{int(gidx[t])} N={int(counts[t])}" + (f" +{int(nd[t])}d" if nd[t] else "")
        ImageDraw.Draw(strip).text((2, 1), text, fill=(255, 255, 255))
        r, c = divmod(t, cols)
        x, y = pad + c * (tw + pad), pad + r * (th + cap + pad)
        sheet.paste(strip, (x, y))
        sheet.paste(pil, (x, y + cap))
    import io

    from ._io import write_bytes_atomic

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out_png, buf.getbuffer())
    return out_png
