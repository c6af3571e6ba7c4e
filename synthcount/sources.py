"""Object and background sources: folders (or prepared packs) -> in-memory asset packs.

Objects
    * THUS10000 / MSRA10K layout, searched recursively: ``<stem>.jpg`` (or
      ``.jpeg``) with a same-stem grayscale ``<stem>.png`` mask in the same folder
      (0..255; soft edges are kept as alpha).
    * RGBA PNG cut-outs: a ``.png`` with no same-stem JPEG whose alpha is the mask.

    Each object is cropped to the bounding box of ``alpha >= mask_threshold * 255``
    (soft alpha inside the box is kept), then downscaled with ``cv2.INTER_AREA`` so
    its longer side is at most ``max_side``.

Backgrounds
    A SUN397 tree (``<root>/<letter>/<class>[/<sub>...]/*.jpg`` with an optional
    ``ClassName.txt``) filtered by class path, or any image folder (recursive);
    downscaled so the shorter side is at most ``max_side``.

Grayscale, palette, RGBA/LA, CMYK and 16-bit files are converted to RGB uint8
(16-bit values v become round(v * 255 / 65535)); EXIF orientation is applied.
Bad files are skipped and listed in ``AssetPack.skipped`` as ``(relative path,
reason)``; each reason starts with a fixed phrase (see ``REASONS``). Order is
deterministic (sorted relative paths) and names are relative POSIX paths, so the
pack -- and its fingerprint -- is the same for any ``workers``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageOps

from ._io import remove_stale_tmps, write_json_atomic
from ._system import mem_available
from .config import SourceConfig
from .pack import AssetPack, ObjectAsset, load_pack, pack_decoded_bytes, save_pack

__all__ = [
    "SourceError",
    "load_objects",
    "load_backgrounds",
    "resolve_sources",
    "resolve_distractor_objects",
    "prepare",
    "MAX_IMAGE_PIXELS",
    "REASONS",
]

# Images with more pixels than this are refused as decompression bombs (checked on
# the header, before decoding). PIL's own default; lower it in tests, or pass
# ``max_pixels=`` to the loaders (a parameter also reaches pool workers).
MAX_IMAGE_PIXELS = 89_478_485

# The fixed opening phrase of every skip reason (details follow it).
REASONS = (
    "unreadable image",
    "truncated image",
    "decompression bomb",
    "unsupported pixel mode",
    "missing mask",
    "unreadable mask",
    "mask size differs",
    "empty mask",
    "mask covers the whole image",
    "no alpha channel",
    "unsupported file type",
)

JPEG_EXT = (".jpg", ".jpeg")
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
# Files that belong to a dataset layout and are not images (not reported as skipped).
_LAYOUT_FILES = {"classname.txt", "readme.txt", "readme.md", "thumbs.db", "desc.ion"}
# Errors a broken or hostile image file can raise from PIL / cv2 while decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
                  Image.DecompressionBombError, Image.DecompressionBombWarning, cv2.error)


class SourceError(ValueError):
    """A source is unusable: path missing, wrong pack kind, no usable file left."""


class _Bad(Exception):
    """A file to skip; the message is the reason (internal)."""


# --------------------------------------------------------------------------- decode

def _open(path: str, max_pixels: int, target=None) -> Image.Image:
    """Open, check the pixel count, optionally draft, decode fully, apply EXIF orientation.

    ``target`` is a callable ``(w, h) -> (tw, th)`` giving the final size, used only
    to let the JPEG decoder skip resolution it will not need (``Image.draft``).
    """
    try:
        with warnings.catch_warnings():
            # PIL warns between 1x and 2x its limit and raises above: both are bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as src:  # closes the file on every path, errors included
                w, h = src.size
                if w * h > max_pixels:
                    raise _Bad(f"decompression bomb ({w}x{h} = {w * h} pixels > limit {max_pixels})")
                if target is not None and src.format == "JPEG":
                    src.draft(src.mode, target(w, h))
                src.load()
                im = ImageOps.exif_transpose(src)  # a decoded copy, upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Bad(f"decompression bomb ({e})") from None
    except _DECODE_ERRORS as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = msg.replace(path, os.path.basename(path))  # reasons name files relatively
        if isinstance(e, EOFError) or "truncated" in msg.lower():
            raise _Bad(f"truncated image ({msg})") from None
        raise _Bad(f"unreadable image ({type(e).__name__}: {msg})") from None
    return im


def _to_uint8(im: Image.Image) -> Image.Image:
    """Integer modes deeper than 8 bit (I;16*, I) -> L, scaled from 0..65535."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        a = np.clip(a, 0, 65535)
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
    if im.mode == "F":
        raise _Bad("unsupported pixel mode 'F' (32-bit float)")
    return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info


def _rgb(im: Image.Image) -> np.ndarray:
    """Any supported image -> RGB uint8 (h, w, 3); alpha is dropped."""
    im = _to_uint8(im)
    try:
        if im.mode != "RGB":
            if _has_alpha(im):
                im = im.convert("RGBA")  # palette transparency resolved before dropping alpha
            im = im.convert("RGB")
    except ValueError as e:
        raise _Bad(f"unsupported pixel mode {im.mode!r} ({e})") from None
    return np.asarray(im, dtype=np.uint8)


def _gray(im: Image.Image) -> np.ndarray:
    """A mask image -> uint8 (h, w) 0..255 (luminance; any alpha ignored)."""
    im = _to_uint8(im)
    try:
        if im.mode != "L":
            im = im.convert("L") if im.mode in ("1", "P", "LA", "La") else im.convert("RGB").convert("L")
    except ValueError as e:
        raise _Bad(f"unsupported pixel mode {im.mode!r} ({e})") from None
    return np.asarray(im, dtype=np.uint8)


def _crop_object(rgb: np.ndarray, alpha: np.ndarray, mask_threshold: float, max_side: int) -> Tuple[np.ndarray,
                                                                                                    np.ndarray]:
    """Crop to the bbox of alpha >= threshold*255, then downscale the longer side to max_side."""
    thr = mask_threshold * 255.0
    on = alpha >= thr
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        raise _Bad(f"empty mask (no pixel >= {thr:g})")
    if on.all():
        raise _Bad(f"mask covers the whole image (every pixel >= {thr:g})")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    h, w = alpha.shape
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(1, min(max_side, round(w * s))), max(1, min(max_side, round(h * s))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)


def _decode_object(task):
    """Worker: one object entry -> ("ok", rgb, alpha, name) or ("skip", name, reason)."""
    root, rel, mask_rel, kind, mask_threshold, max_side, max_pixels = task
    try:
        if kind == "skip":
            raise _Bad(mask_rel)  # discovery already knows the reason
        im = _open(os.path.join(root, rel), max_pixels)
        if kind == "pair":
            rgb = _rgb(im)
            try:
                mask_im = _open(os.path.join(root, mask_rel), max_pixels)
                alpha = _gray(mask_im)
            except _Bad as e:
                raise _Bad(f"unreadable mask {os.path.basename(mask_rel)} ({e})") from None
            if alpha.shape != rgb.shape[:2]:
                raise _Bad(f"mask size differs: mask {alpha.shape[1]}x{alpha.shape[0]}, "
                           f"image {rgb.shape[1]}x{rgb.shape[0]}")
        else:  # RGBA cut-out
            if not _has_alpha(im):
                raise _Bad(f"no alpha channel (mode {im.mode}; a .png cut-out needs alpha, "
                           "or a same-stem .jpg to be its mask)")
            try:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
            except ValueError as e:
                raise _Bad(f"unsupported pixel mode {im.mode!r} ({e})") from None
            rgb, alpha = rgba[..., :3], rgba[..., 3]
        rgb, alpha = _crop_object(rgb, alpha, mask_threshold, max_side)
        return ("ok", rgb, alpha, display_name(rel))
    except _Bad as e:
        return ("skip", display_name(rel), display_name(str(e)))


def _decode_background(task):
    """Worker: one background file -> ("ok", rgb, name) or ("skip", name, reason)."""
    root, rel, max_side, max_pixels = task

    def target(w, h):
        s = min(1.0, max_side / min(w, h))
        return max(1, round(w * s)), max(1, round(h * s))

    try:
        im = _open(os.path.join(root, rel), max_pixels, target=target)
        rgb = _rgb(im)
        h, w = rgb.shape[:2]
        if min(h, w) > max_side:
            # Final size from the decoded (oriented) size so it never depends on draft.
            if w <= h:
                size = (max_side, max(1, round(h * max_side / w)))
            else:
                size = (max(1, round(w * max_side / h)), max_side)
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return ("ok", np.ascontiguousarray(rgb), display_name(rel))
    except _Bad as e:
        return ("skip", display_name(rel), display_name(str(e)))


# --------------------------------------------------------------------------- discovery

def display_name(rel: str) -> str:
    """A file name as text that any UTF-8 writer accepts: bytes that are not UTF-8
    (``os.walk`` hands them over as surrogate escapes) are shown as ``\\xNN``. Files
    are always opened by their real name; this is only the name recorded."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _walk(root: str) -> List[str]:
    """All non-hidden files under root as sorted relative POSIX paths."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for f in files:
            if not f.startswith("."):
                out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return sorted(out)


def _ext(rel: str) -> str:
    return os.path.splitext(rel)[1].lower()


def _object_tasks(root: str) -> List[tuple]:
    """(rel, mask_rel_or_reason, kind) per object candidate: pairs, cut-outs, skips."""
    files = _walk(root)
    by_stem = {}
    for rel in files:
        by_stem.setdefault(os.path.splitext(rel)[0], []).append(rel)
    tasks = []
    for rel in files:
        stem, ext = os.path.splitext(rel)
        siblings = by_stem[stem]
        if ext.lower() in JPEG_EXT:
            masks = [s for s in siblings if _ext(s) == ".png"]
            if masks:
                tasks.append((rel, masks[0], "pair"))
            else:
                tasks.append((rel, f"missing mask (no {os.path.basename(stem)}.png next to it)", "skip"))
        elif ext.lower() == ".png":
            if not any(_ext(s) in JPEG_EXT for s in siblings):
                tasks.append((rel, None, "cutout"))  # else: it is a JPEG's mask
        elif os.path.basename(rel).lower() not in _LAYOUT_FILES:
            tasks.append((rel, f"unsupported file type {ext or '(none)'!r} (objects are .jpg+.png pairs or RGBA .png)",
                          "skip"))
    return tasks


def _class_path(rel: str) -> str:
    """SUN397 class path of a file: its folder, e.g. '/f/forest/needleleaf'."""
    d = os.path.dirname(rel)
    return "/" + d if d else "/"


def _norm_class(c: str) -> str:
    c = "/" + str(c).strip().strip("/")
    return c


def _select_classes(root: str, files: List[str], classes: Sequence[str]) -> List[str]:
    """Keep files whose class path equals or lies under one of ``classes``."""
    if not classes:
        return files
    known = {_class_path(f) for f in files if _ext(f) in IMAGE_EXT} - {"/"}
    listing = os.path.join(root, "ClassName.txt")
    if os.path.isfile(listing):
        with open(listing, encoding="utf-8", errors="replace") as fh:
            known |= {_norm_class(line) for line in fh if line.strip()}
    wanted = [_norm_class(c) for c in classes]
    under = lambda p, c: p == c or p.startswith(c.rstrip("/") + "/")  # noqa: E731
    for c in wanted:
        if not any(under(k, c) for k in known):
            few = ", ".join(sorted(known)[:5])
            raise SourceError(f"{root}: unknown background class {c!r} (valid ones include {few}, ...)")
    return [f for f in files if any(under(_class_path(f), c) for c in wanted)]


# --------------------------------------------------------------------------- running

def _check_args(max_side: int, workers: int, mask_threshold: float = 0.5) -> None:
    if not (isinstance(max_side, (int, np.integer)) and max_side >= 1):
        raise ValueError(f"max_side must be an integer >= 1, got {max_side!r}")
    if not (isinstance(workers, (int, np.integer)) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not 0.0 < float(mask_threshold) <= 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1], got {mask_threshold!r}")


def _run(fn, tasks: list, workers: int, progress: bool, desc: str) -> list:
    """Map fn over tasks in order (a process pool when workers > 1)."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit="file", file=sys.stderr, disable=not progress)
    try:
        if workers == 1 or len(tasks) < 2:
            out = []
            for t in tasks:
                out.append(fn(t))
                bar.update()
            return out
        import multiprocessing as mp

        out = []
        chunk = max(1, min(64, len(tasks) // (4 * workers)))
        with mp.get_context().Pool(min(workers, len(tasks))) as pool:
            for r in pool.imap(fn, tasks, chunksize=chunk):  # imap keeps task order
                out.append(r)
                bar.update()
        return out
    finally:
        bar.close()


# A run holds its decoded sources about twice over: the pack, and the compositor's
# prescaled copies (or, in ``prepare``, the flat copy written to the file). Measured:
# 3,000 backgrounds of 786 MB decoded took 1.9 GB more memory for a run with 8 workers.
SOURCE_MEMORY_FACTOR = 2.0
_MEMORY_SAMPLE = 64  # headers read to estimate a folder's decoded size


def _check_source_memory(path: str, what: str, n: int, decoded: float, how: str, remedy: str) -> None:
    """Refuse sources whose decoded pixels cannot fit in memory: one line before the
    first decode instead of an out-of-memory kill after minutes of decoding."""
    avail = mem_available()
    if avail is None or SOURCE_MEMORY_FACTOR * decoded <= avail:
        return
    raise SourceError(f"{path}: {n:,} {what} take about {_human(decoded)} once decoded ({how}) and a run holds "
                      f"about {SOURCE_MEMORY_FACTOR:g} times that, more than the {_human(avail)} of memory "
                      f"available; {remedy}")


def _human(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _sampled_decoded_bytes(paths: List[str], per_image) -> float:
    """Mean decoded bytes per file over up to ``_MEMORY_SAMPLE`` evenly spaced files,
    from their headers alone (``per_image(w, h)``); unreadable ones are left out."""
    if not paths:
        return 0.0
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(_MEMORY_SAMPLE, len(paths))).round().astype(int)))
    sizes = []
    for i in picks:
        try:
            with Image.open(paths[i]) as im:
                sizes.append(per_image(*im.size))
        except Exception:  # a broken file: the decode will skip and report it
            continue
    return float(np.mean(sizes)) if sizes else 0.0


def _pack_file(path: str) -> Optional[AssetPack]:
    """An existing path: None for a folder, the loaded pack for a file; else SourceError."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        return None
    n, decoded = pack_decoded_bytes(path)
    _check_source_memory(path, "assets", n, decoded, "from the pack's stored shapes",
                         "make a smaller pack (synthcount prepare of fewer files, or with a smaller --max-side)")
    try:
        return load_pack(path)
    except ValueError as e:
        raise SourceError(f"{path}: not a folder nor an asset pack ({e})") from None


def _no_usable(path: str, what: str, skipped: list) -> SourceError:
    eg = f", e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    return SourceError(f"{path}: no usable {what} ({len(skipped)} files skipped{eg})")


def load_objects(path: str, *, mask_threshold: float = 0.5, max_side: int = 256, workers: int = 1,
                 progress: bool = False, max_pixels: Optional[int] = None) -> AssetPack:
    """Load object cut-outs from a folder or an objects pack made by ``prepare``.

    Parameters
    ----------
    path : str
        MSRA10K/THUS10000-layout folder (``<stem>.jpg`` + ``<stem>.png`` mask),
        a folder of RGBA PNG cut-outs, or an objects pack ``.h5``.
    mask_threshold : float in (0, 1]
        Mask pixels with alpha >= mask_threshold * 255 define the crop box and the
        empty / whole-image mask checks; alpha itself stays soft (uint8 0..255).
    max_side : int >= 1
        Longer side of every object after downscaling (cv2.INTER_AREA), pixels.
    workers : int >= 1
        Decoding processes; the result is identical for any value.
    progress : bool
        Show a tqdm bar on stderr.
    max_pixels : int, optional
        Decompression-bomb limit in pixels; default ``MAX_IMAGE_PIXELS``.

    Returns
    -------
    AssetPack
        ``objects`` in sorted relative-path order; ``skipped`` lists bad files.

    Raises
    ------
    SourceError
        Missing path, a pack without objects, or no usable object in the folder.
    """
    _check_args(max_side, workers, mask_threshold)
    pack = _pack_file(path)
    if pack is not None:
        if not pack.objects:
            raise SourceError(f"{path}: not an objects pack (0 objects, {len(pack.backgrounds)} backgrounds)")
        return AssetPack(objects=pack.objects, skipped=pack.skipped, source=pack.source)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    tasks = [(path, rel, m, kind, float(mask_threshold), int(max_side), limit)
             for rel, m, kind in _object_tasks(path)]
    decodable = [os.path.join(path, t[1]) for t in tasks if t[3] != "skip"]

    def rgba_bytes(w, h):  # at most the whole image (before the crop to the mask), RGB + alpha
        s = min(1.0, max_side / max(w, h))
        return 4 * max(1, round(w * s)) * max(1, round(h * s))

    per = _sampled_decoded_bytes(decodable, rgba_bytes)
    _check_source_memory(path, "objects", len(decodable), per * len(decodable),
                         f"at most {per / 1024:,.0f} KB each at longer side {max_side}, from "
                         f"{min(len(decodable), _MEMORY_SAMPLE)} sampled headers",
                         "use part of the folder, or a smaller object_max_side (--config)")
    objects, skipped = [], []
    for r in _run(_decode_object, tasks, workers, progress, "objects"):
        if r[0] == "ok":
            objects.append(ObjectAsset(r[1], r[2], r[3]))
        else:
            skipped.append((r[1], r[2]))
    if not objects:
        raise _no_usable(path, "object", skipped)
    return AssetPack(objects=objects, skipped=skipped, source=os.path.abspath(path))


def load_backgrounds(path: str, *, classes: Sequence[str] = (), max_side: int = 256, workers: int = 1,
                     progress: bool = False, max_pixels: Optional[int] = None) -> AssetPack:
    """Load backgrounds from a SUN397 tree, any image folder, or a backgrounds pack.

    Parameters
    ----------
    path : str
        Folder searched recursively (SUN397: ``<letter>/<class>[/<sub>]/*.jpg``
        with optional ``ClassName.txt``) or a backgrounds pack ``.h5``.
    classes : sequence of str
        Class paths such as ``"/f/forest/needleleaf"`` (leading slash optional); a
        file is kept if its folder equals or lies under one of them. Empty = all.
        Ignored for packs.
    max_side : int >= 1
        Shorter side of every background after downscaling (cv2.INTER_AREA).
    workers, progress, max_pixels
        As in ``load_objects``.

    Returns
    -------
    AssetPack
        ``backgrounds`` (RGB uint8) and ``background_names`` in sorted order.

    Raises
    ------
    SourceError
        Missing path, unknown class, a pack without backgrounds, or no usable image.
    """
    _check_args(max_side, workers)
    if isinstance(classes, str):
        classes = (classes,)
    pack = _pack_file(path)
    if pack is not None:
        if not pack.backgrounds:
            raise SourceError(f"{path}: not a backgrounds pack (0 backgrounds, {len(pack.objects)} objects)")
        return AssetPack(backgrounds=pack.backgrounds, background_names=pack.background_names,
                         skipped=pack.skipped, source=pack.source)
    files = _select_classes(path, _walk(path), classes)
    skipped, tasks = [], []
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    for rel in files:
        if _ext(rel) in IMAGE_EXT:
            tasks.append((path, rel, int(max_side), limit))
        elif os.path.basename(rel).lower() not in _LAYOUT_FILES:
            skipped.append((display_name(rel), display_name(f"unsupported file type {_ext(rel) or '(none)'!r}")))

    def rgb_bytes(w, h):
        s = min(1.0, max_side / min(w, h))
        return 3 * max(1, round(w * s)) * max(1, round(h * s))

    per = _sampled_decoded_bytes([os.path.join(path, t[1]) for t in tasks], rgb_bytes)
    _check_source_memory(path, "backgrounds", len(tasks), per * len(tasks),
                         f"{per / 1024:,.0f} KB each at shorter side {max_side}, from "
                         f"{min(len(tasks), _MEMORY_SAMPLE)} sampled headers",
                         "choose classes (--background-classes), use part of the folder, or a smaller "
                         "background_max_side (--config)")
    bgs, names = [], []
    for r in _run(_decode_background, tasks, workers, progress, "backgrounds"):
        if r[0] == "ok":
            bgs.append(r[1])
            names.append(r[2])
        else:
            skipped.append((r[1], r[2]))
    skipped.sort()
    if not bgs:
        where = f" in classes {list(classes)}" if classes else ""
        raise _no_usable(path + where, "background", skipped)
    return AssetPack(backgrounds=bgs, background_names=names, skipped=skipped, source=os.path.abspath(path))


def resolve_sources(src: SourceConfig, stimulus: str = "cutout") -> Tuple[AssetPack, AssetPack]:
    """(objects_pack, backgrounds_pack) for a SourceConfig; None paths -> built-in packs.

    ``stimulus="binary"`` selects the binary (white shapes on black) built-ins.
    """
    from . import assets

    if stimulus not in ("cutout", "binary"):
        raise ValueError(f"stimulus must be 'cutout' or 'binary', got {stimulus!r}")
    binary = stimulus == "binary"
    if src.objects is None:
        objects = assets.binary_objects() if binary else assets.builtin_objects()
    else:
        objects = load_objects(src.objects, mask_threshold=src.mask_threshold, max_side=src.object_max_side)
    if src.backgrounds is None:
        backgrounds = assets.binary_backgrounds() if binary else assets.builtin_backgrounds()
    else:
        backgrounds = load_backgrounds(src.backgrounds, classes=src.background_classes,
                                       max_side=src.background_max_side)
    return objects, backgrounds


def resolve_distractor_objects(src: SourceConfig, stimulus: str = "cutout") -> Optional[AssetPack]:
    """The distractor pack of a SourceConfig: None when distractors come from the
    object pool itself (``distractor_objects`` None), the built-in objects for
    ``"builtin"`` (the binary ones for ``stimulus="binary"``), else the folder or pack
    loaded like ``objects``."""
    from . import assets

    d = src.distractor_objects
    if d is None:
        return None
    if d == "builtin":
        return assets.binary_objects() if stimulus == "binary" else assets.builtin_objects()
    return load_objects(d, mask_threshold=src.mask_threshold, max_side=src.object_max_side)


def prepare(src: str, out: str, kind: str, *, max_side: int = 256, mask_threshold: float = 0.5, classes=(),
            workers: int = 1, progress: bool = False, max_pixels: Optional[int] = None) -> AssetPack:
    """Decode a source folder once into an asset pack file plus a report.

    Writes ``out`` (HDF5, via ``pack.save_pack``) and ``out + ".report.json"``:
    ``{"source", "kind", "params", "num_loaded", "num_skipped", "skipped":
    [{"file", "reason"}], "fingerprint"}``.

    Parameters
    ----------
    kind : {"objects", "backgrounds"}
    Other parameters as in ``load_objects`` / ``load_backgrounds``.

    Returns
    -------
    AssetPack
        The pack written.
    """
    if kind not in ("objects", "backgrounds"):
        raise ValueError(f"kind must be 'objects' or 'backgrounds', got {kind!r}")
    if kind == "objects":
        pack = load_objects(src, mask_threshold=mask_threshold, max_side=max_side, workers=workers,
                            progress=progress, max_pixels=max_pixels)
        params = {"max_side": max_side, "mask_threshold": mask_threshold}
        n = len(pack.objects)
    else:
        pack = load_backgrounds(src, classes=classes, max_side=max_side, workers=workers,
                                progress=progress, max_pixels=max_pixels)
        params = {"max_side": max_side, "classes": list(classes) if not isinstance(classes, str) else [classes]}
        n = len(pack.backgrounds)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    report = {
        "source": display_name(pack.source), "kind": kind, "params": params, "num_loaded": n,
        "num_skipped": len(pack.skipped),
        "skipped": [{"file": f, "reason": r} for f, r in pack.skipped],
        "fingerprint": pack.fingerprint(),
    }
    # Temporary files of an earlier prepare to the same pack killed outright (kill -9)
    # go first: only ours (``<out>.tmp-<pid>-<hex>``, the pid gone), never a foreign file.
    report_path = out + ".report.json"
    for path in (out, report_path):
        remove_stale_tmps(path)
    # The pack first, the report last (both atomic): a report on disk always describes
    # the pack beside it (a prepare killed in between leaves the pack without a report,
    # never a report without its pack), and a failed report write removes the new pack.
    with contextlib.suppress(OSError):
        os.remove(report_path)  # the old report describes the old pack, which goes now
    save_pack(pack, out)
    try:
        write_json_atomic(report_path, report)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(out)
        raise
    return pack
