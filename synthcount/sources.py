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

Source modes (``SOURCE_MODES``): ``memory`` decodes every asset up front (refused,
in one line, when the decoded pixels will not fit); ``stream`` reads them per image
through a bounded cache (``synthcount.stream``): a pack from its file, a folder by
decoding its files again after one scan that finds the usable ones, their shapes
and the fingerprint. ``auto`` keeps what fits in memory and streams the rest. The
assets, and so every dataset byte, are the same in all modes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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
from .pack import AssetPack, ObjectAsset, load_pack, pack_decoded_bytes
from .stream import FINGERPRINT_SEPARATOR, LazyAssets, PackWriter, _hash_background, _hash_object, open_pack_stream

__all__ = [
    "SourceError",
    "load_objects",
    "load_backgrounds",
    "resolve_sources",
    "resolve_distractor_objects",
    "prepare",
    "MAX_IMAGE_PIXELS",
    "REASONS",
    "SOURCE_MODES",
    "PARTIAL_SUFFIX",
]

SOURCE_MODES = ("auto", "memory", "stream")
# An unfinished pack of ``prepare`` (kept on interruption; a rerun resumes from it).
PARTIAL_SUFFIX = ".partial"
CHECKPOINT_BYTES = 64 << 20  # decoded bytes between two checkpoints of prepare (its memory bound)

log = logging.getLogger("synthcount")

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
    return list(_iter_run(fn, tasks, workers, progress, desc))


def _iter_run(fn, tasks: list, workers: int, progress: bool, desc: str, done: int = 0):
    """Yield fn over tasks in order (a process pool when workers > 1), holding only a
    few results at a time; the bar starts at ``done`` (a resumed run)."""
    from tqdm import tqdm

    bar = tqdm(total=done + len(tasks), initial=done, desc=desc, unit="file", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1 or len(tasks) < 2:
            for t in tasks:
                yield fn(t)
                bar.update()
            return
        import multiprocessing as mp

        chunk = max(1, min(64, len(tasks) // (4 * workers)))
        with mp.get_context().Pool(min(workers, len(tasks))) as pool:
            for r in pool.imap(fn, tasks, chunksize=chunk):  # imap keeps task order
                yield r
                bar.update()
    finally:
        bar.close()


# A run holds its decoded sources about twice over: the pack, and the compositor's
# prescaled copies (or, in ``prepare``, the flat copy written to the file). Measured:
# 3,000 backgrounds of 786 MB decoded took 1.9 GB more memory for a run with 8 workers.
SOURCE_MEMORY_FACTOR = 2.0
_MEMORY_SAMPLE = 64  # headers read to estimate a folder's decoded size


def _fits(decoded: float, share: float = 1.0) -> bool:
    """Whether sources of ``decoded`` bytes fit in ``share`` of the available memory."""
    avail = mem_available()
    return avail is None or SOURCE_MEMORY_FACTOR * decoded <= share * avail


def _stream(mode: str, decoded: float) -> bool:
    """Whether to stream: asked to, or ``auto`` and the source would take more than
    half of the available memory (objects and backgrounds may both be large)."""
    return mode == "stream" or (mode == "auto" and not _fits(decoded, 0.5))


def _check_source_memory(path: str, what: str, n: int, decoded: float, how: str, remedy: str) -> None:
    """Refuse sources whose decoded pixels cannot fit in memory (``memory`` mode): one
    line before the first decode instead of an out-of-memory kill after minutes."""
    if _fits(decoded):
        return
    raise SourceError(f"{path}: {n:,} {what} take about {_human(decoded)} once decoded ({how}) and a run holds "
                      f"about {SOURCE_MEMORY_FACTOR:g} times that, more than the {_human(mem_available())} of "
                      f"memory available; {remedy}, or stream them (--source-mode stream)")


def _check_mode(mode: str) -> None:
    if mode not in SOURCE_MODES:
        raise ValueError(f"source_mode must be one of {', '.join(SOURCE_MODES)}, got {mode!r}")


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


def _pack_file(path: str, mode: str = "memory") -> Optional[AssetPack]:
    """An existing path: None for a folder, the pack for a file (loaded, or streamed
    as ``mode`` says); else SourceError."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        return None
    n, decoded = pack_decoded_bytes(path)
    if mode == "memory":
        _check_source_memory(path, "assets", n, decoded, "from the pack's stored shapes",
                             "make a smaller pack (synthcount prepare of fewer files, or with a smaller --max-side)")
    try:
        if _stream(mode, decoded):
            return open_pack_stream(path)
        return load_pack(path)
    except ValueError as e:
        raise SourceError(f"{path}: not a folder nor an asset pack ({e})") from None


def _no_usable(path: str, what: str, skipped: list) -> SourceError:
    eg = f", e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    return SourceError(f"{path}: no usable {what} ({len(skipped)} files skipped{eg})")


def load_objects(path: str, *, mask_threshold: float = 0.5, max_side: int = 256, workers: int = 1,
                 progress: bool = False, max_pixels: Optional[int] = None, mode: str = "memory") -> AssetPack:
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
    mode : {"memory", "stream", "auto"}
        Decode every object now (refused when they will not fit in memory), read
        them on demand (``objects`` is then a ``synthcount.stream.LazyAssets``), or
        whichever fits (see ``SOURCE_MODES``). The objects are the same in all.

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
    _check_mode(mode)
    pack = _pack_file(path, mode)
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
    if _stream(mode, per * len(decodable)):
        return _scan_folder(path, "objects", tasks, [], workers, progress)
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
                     progress: bool = False, max_pixels: Optional[int] = None, mode: str = "memory") -> AssetPack:
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
    workers, progress, max_pixels, mode
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
    _check_mode(mode)
    if isinstance(classes, str):
        classes = (classes,)
    pack = _pack_file(path, mode)
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
    if _stream(mode, per * len(tasks)):
        pack = _scan_folder(path, "backgrounds", tasks, skipped, workers, progress)
        if not len(pack.backgrounds):
            where = f" in classes {list(classes)}" if classes else ""
            raise _no_usable(path + where, "background", pack.skipped)
        return pack
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


def resolve_sources(src: SourceConfig, stimulus: str = "cutout", *, workers: int = 1,
                    progress: bool = False) -> Tuple[AssetPack, AssetPack]:
    """(objects_pack, backgrounds_pack) for a SourceConfig; None paths -> built-in packs.

    ``stimulus="binary"`` selects the binary (white shapes on black) built-ins.
    ``src.source_mode`` says whether folders and packs are held in memory or
    streamed (see ``SOURCE_MODES``); ``workers`` processes decode (or scan) folders.
    """
    from . import assets

    if stimulus not in ("cutout", "binary"):
        raise ValueError(f"stimulus must be 'cutout' or 'binary', got {stimulus!r}")
    binary = stimulus == "binary"
    if src.objects is None:
        objects = assets.binary_objects() if binary else assets.builtin_objects()
    else:
        objects = load_objects(src.objects, mask_threshold=src.mask_threshold, max_side=src.object_max_side,
                               mode=src.source_mode, workers=workers, progress=progress)
    if src.backgrounds is None:
        backgrounds = assets.binary_backgrounds() if binary else assets.builtin_backgrounds()
    else:
        backgrounds = load_backgrounds(src.backgrounds, classes=src.background_classes,
                                       max_side=src.background_max_side, mode=src.source_mode, workers=workers,
                                       progress=progress)
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
    return load_objects(d, mask_threshold=src.mask_threshold, max_side=src.object_max_side, mode=src.source_mode)


def _scan_folder(path: str, kind: str, tasks: list, skipped: list, workers: int, progress: bool) -> AssetPack:
    """A folder as a streamed pack: one pass decodes every file to find the usable
    ones, their shapes (and footprints) and the fingerprint, keeping none of them."""
    from .transforms import ALPHA_THRESHOLD_U8

    h = hashlib.sha256()
    kept, names, shapes, fps, skipped = [], [], [], [], list(skipped)
    if kind == "backgrounds":
        h.update(FINGERPRINT_SEPARATOR)
    fn = _decode_object if kind == "objects" else _decode_background
    for t, r in zip(tasks, _iter_run(fn, tasks, workers, progress, f"scan {kind}")):
        if r[0] != "ok":
            skipped.append((r[1], r[2]))
            continue
        kept.append(t)
        if kind == "objects":
            o = ObjectAsset(r[1], r[2], r[3])
            _hash_object(h, o)
            names.append(o.name)
            shapes.append(o.rgb.shape)
            fps.append(int(np.count_nonzero(o.alpha >= ALPHA_THRESHOLD_U8)))
        else:
            _hash_background(h, r[1], r[2])
            names.append(r[2])
            shapes.append(r[1].shape)
    if kind == "objects":
        h.update(FINGERPRINT_SEPARATOR)
        if not kept:
            raise _no_usable(path, "object", skipped)
    meta = {"shapes": np.array(shapes, np.int64).reshape(-1, 3)}
    if kind == "objects":
        meta["footprints"] = np.array(fps, np.int64)
    seq = LazyAssets(len(kept), _FolderLoader(kind, kept), names=names, meta=meta, cache_bytes=32 << 20)
    if kind == "objects":
        pack = AssetPack(objects=seq, skipped=skipped, source=os.path.abspath(path))
    else:
        skipped.sort()
        pack = AssetPack(backgrounds=seq, background_names=names, skipped=skipped, source=os.path.abspath(path))
    pack._fingerprint = h.hexdigest()
    return pack


class _FolderLoader:
    """Decode item ``i`` of a scanned folder again (picklable, for Dask)."""

    def __init__(self, kind: str, tasks: list):
        self.kind, self.tasks = kind, tasks

    def __call__(self, i: int):
        t = self.tasks[i]
        r = (_decode_object if self.kind == "objects" else _decode_background)(t)
        if r[0] != "ok":
            raise SourceError(f"{os.path.join(t[0], t[1])}: unusable since the folder was scanned ({r[2]})")
        return ObjectAsset(r[1], r[2], r[3]) if self.kind == "objects" else r[1]


def prepare(src: str, out: str, kind: str, *, max_side: int = 256, mask_threshold: float = 0.5, classes=(),
            workers: int = 1, progress: bool = False, max_pixels: Optional[int] = None) -> AssetPack:
    """Decode a source folder once into an asset pack file plus a report, in bounded memory.

    Writes ``out`` (HDF5, format 2, see ``synthcount.stream.PackWriter``) and
    ``out + ".report.json"``: ``{"source", "kind", "params", "num_loaded",
    "num_skipped", "skipped": [{"file", "reason"}], "fingerprint"}``.

    Decoded assets go to ``out + PARTIAL_SUFFIX`` as they come (never all in
    memory), with a checkpoint about every 64 MiB. An interrupted run (Ctrl-C, a
    kill) leaves that file, and the same call resumes from its last checkpoint; a
    different call starts it afresh. The result is the same bytes either way. A
    write error (disk full) removes it.

    Parameters
    ----------
    kind : {"objects", "backgrounds"}
    Other parameters as in ``load_objects`` / ``load_backgrounds``.

    Returns
    -------
    AssetPack
        The pack written, streamed from ``out`` (``synthcount.stream``).
    """
    if kind not in ("objects", "backgrounds"):
        raise ValueError(f"kind must be 'objects' or 'backgrounds', got {kind!r}")
    _check_args(max_side, workers, mask_threshold)
    if not os.path.isdir(src):
        raise SourceError(f"{src}: no such folder" if not os.path.exists(src) else f"{src}: not a folder")
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    if isinstance(classes, str):
        classes = (classes,)
    if kind == "objects":
        tasks = [(src, rel, m, k, float(mask_threshold), int(max_side), limit) for rel, m, k in _object_tasks(src)]
        params = {"max_side": max_side, "mask_threshold": mask_threshold}
        skipped0, fn = [], _decode_object
    else:
        skipped0, tasks = [], []
        for rel in _select_classes(src, _walk(src), classes):
            if _ext(rel) in IMAGE_EXT:
                tasks.append((src, rel, int(max_side), limit))
            elif os.path.basename(rel).lower() not in _LAYOUT_FILES:
                skipped0.append((display_name(rel),
                                 display_name(f"unsupported file type {_ext(rel) or '(none)'!r}")))
        params = {"max_side": max_side, "classes": list(classes)}
        fn = _decode_background
    source = os.path.abspath(src)
    files = hashlib.sha256("\0".join(t[1] for t in tasks).encode("utf-8", "surrogateescape")).hexdigest()
    ident = {"source": display_name(source), "kind": kind, "params": params, "max_pixels": limit, "files": files}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    partial = out + PARTIAL_SUFFIX
    writer = PackWriter.resume(partial, ident) if os.path.exists(partial) else None
    if writer is not None:
        log.info("prepare: resuming %s at file %d of %d", partial, writer.tasks_done, len(tasks))
    else:
        writer = _new_writer(partial, ident)
    done, skipped = writer.tasks_done, list(writer.skipped)
    try:
        i = done
        for r in _iter_run(fn, tasks[done:], workers, progress, f"{kind} (resumed)" if done else kind, done=done):
            i += 1
            if r[0] != "ok":
                skipped.append((r[1], r[2]))
            elif kind == "objects":
                writer.add_object(ObjectAsset(r[1], r[2], r[3]))
            else:
                writer.add_background(r[1], r[2])
            if writer.buffered_bytes >= CHECKPOINT_BYTES:
                writer.checkpoint(i, skipped)
        writer.checkpoint(i, skipped)
        n = writer.f[f"{kind}/rgb_shapes"].shape[0]
        skipped = skipped0 + skipped
        if kind == "backgrounds":
            skipped.sort()
        if n == 0:
            writer.close()
            os.remove(partial)
            where = f" in classes {list(classes)}" if classes and kind == "backgrounds" else ""
            raise _no_usable(src + where, "object" if kind == "objects" else "background", skipped)
        fingerprint = writer.finish(skipped, source)
    except OSError as e:  # disk full, ...: the partial file may be damaged; leave nothing
        writer.close()
        with contextlib.suppress(OSError):
            os.remove(partial)
        from ._io import WriteError, _describe

        raise WriteError(e.errno, _describe(out, e)) from e
    except BaseException:
        writer.close()  # interrupted: the partial file resumes from its last checkpoint
        raise
    report = {
        "source": display_name(source), "kind": kind, "params": params, "num_loaded": n,
        "num_skipped": len(skipped),
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
        "fingerprint": fingerprint,
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
    from ._io import fsync_path

    fsync_path(partial)
    os.replace(partial, out)
    try:
        write_json_atomic(report_path, report)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(out)
        raise
    return open_pack_stream(out)


def _new_writer(partial: str, ident: dict) -> PackWriter:
    try:
        return PackWriter(partial, ident)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(partial)
        from ._io import WriteError, _describe

        raise WriteError(e.errno, _describe(partial, e)) from e
