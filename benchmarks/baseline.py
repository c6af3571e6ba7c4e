"""The common cut-paste generator, rebuilt as a baseline for ``benchmarks.generate``.

What published cut-paste generators do (among them ``image_generator.py``, the
synthetic-data script of Wever & Runia's *Subitizing with Variational Autoencoders*
code), on the same built-in assets synthcount uses:

- the assets live as files: each object a JPEG with a same-stem PNG mask in the
  MSRA10K layout (``Imgs/<stem>.jpg`` + ``Imgs/<stem>.png``), backgrounds as JPEGs;
- per composite, the background and the object files are decoded (PIL), the object
  is cropped to its mask's bounding box, the background random-resized-cropped;
- per copy: scale U(0.85, 1.15) x a reference side U(0.4, 0.8) x H, rotation
  U(-10, 10) degrees with the canvas expanded, horizontal flip with p = 0.5;
- placement: blind uniform positions, ``TRIES_PER_COPY`` tries per copy, then the
  whole layout (sizes and positions) is drawn again; overlap is checked with Python
  sets of pixel indices (every object keeps >= t of its pixels visible, later
  copies on top);
- soft paste ``out = bg * (1 - m) + obj * m`` and one JPEG per image named
  ``<idx>-<count>.jpg`` (the label lives only in the file name).

It is favoured, not handicapped: the object files are the pack's 128 px cut-outs
(MSRA10K photographs are ~300 x 400 px and slower to decode), each object is
decoded once per composite (not once per copy), and pixel sets are built with
numpy (``set(array.tolist())``) rather than Python loops.

Run alone: ``python -m benchmarks.baseline [--quick] [--t 0.5] [--seconds 20]``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ._common import emit, format_table, machine, parser, rate

__all__ = ["write_assets", "BaselineGenerator", "run_baseline", "TRIES_PER_COPY"]

TRIES_PER_COPY = 5  # the authors tried 4-5 placements per copy, then resampled the layout
JPEG_QUALITY = 95


def write_assets(folder: str, objects, backgrounds) -> Tuple[List[str], List[str]]:
    """Write asset packs as files, the way the baseline expects its sources.

    Parameters
    ----------
    folder : str
        Created if absent; receives ``Imgs/obj-XXXX.jpg|png`` and ``backgrounds/bg-XXXX.jpg``.
    objects, backgrounds : synthcount.pack.AssetPack

    Returns
    -------
    (object stems, background files) : lists of absolute paths
    """
    imgs, bgs = os.path.join(folder, "Imgs"), os.path.join(folder, "backgrounds")
    os.makedirs(imgs, exist_ok=True)
    os.makedirs(bgs, exist_ok=True)
    stems, files = [], []
    for i, o in enumerate(objects.objects):
        stem = os.path.join(imgs, f"obj-{i:04d}")
        Image.fromarray(o.rgb).save(stem + ".jpg", quality=JPEG_QUALITY)
        Image.fromarray(o.alpha).save(stem + ".png")
        stems.append(stem)
    for i, b in enumerate(backgrounds.backgrounds):
        p = os.path.join(bgs, f"bg-{i:04d}.jpg")
        Image.fromarray(b).save(p, quality=JPEG_QUALITY)
        files.append(p)
    return stems, files


def _decode(path: str, mode: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert(mode)


class BaselineGenerator:
    """Per-composite decode, blind placement with pixel-index sets, one JPEG per image.

    Parameters
    ----------
    object_stems, background_files : list of str
        From :func:`write_assets`.
    size : (int, int)
        Output (height, width).
    t : float in [0, 1]
        Every object keeps at least this fraction of its pixels visible.
    max_count : int
        N is uniform in 0..max_count.
    """

    def __init__(self, object_stems: List[str], background_files: List[str], size: Tuple[int, int], t: float,
                 max_count: int = 4):
        if not object_stems or not background_files:
            raise ValueError("object_stems and background_files must be non-empty")
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t!r}")
        self.stems, self.bgs = object_stems, background_files
        self.H, self.W = size
        self.t, self.max_count = float(t), int(max_count)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        bg = _decode(self.bgs[int(rng.integers(len(self.bgs)))], "RGB")
        wb, hb = bg.size
        frac = rng.uniform(0.5, 1.0)
        r = self.W / self.H
        ch = min(hb, math.sqrt(frac * hb * wb / r))
        cw = min(wb, ch * r)
        ch = cw / r
        y, x = rng.uniform(0, hb - ch), rng.uniform(0, wb - cw)
        crop = bg.resize((self.W, self.H), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        return np.asarray(crop, np.float32)

    def _object(self, rng: np.random.Generator) -> Tuple[Image.Image, Image.Image]:
        stem = self.stems[int(rng.integers(len(self.stems)))]
        rgb, mask = _decode(stem + ".jpg", "RGB"), _decode(stem + ".png", "L")
        box = mask.getbbox()  # crop to the mask's bounding box (mask > 0)
        return rgb.crop(box), mask.crop(box)

    def _copy(self, rng: np.random.Generator, rgb: Image.Image, mask: Image.Image, ref: float):
        s = ref * rng.uniform(0.85, 1.15) / max(rgb.size)
        size = (max(1, round(rgb.size[0] * s)), max(1, round(rgb.size[1] * s)))
        angle = rng.uniform(-10.0, 10.0)
        flip = rng.random() < 0.5
        out = []
        for im in (rgb, mask):
            im = im.resize(size, Image.BILINEAR).rotate(angle, Image.BILINEAR, expand=True)
            out.append(im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im)
        a = np.asarray(out[1], np.float32) / 255.0
        return np.asarray(out[0], np.float32), a

    def make(self, index: int, rng: np.random.Generator, out_dir: str, deadline: float = math.inf) -> Optional[dict]:
        """Compose image ``index`` and write ``out_dir/<index>-<count>.jpg``.

        Returns ``{"count", "layouts"}``, or None when ``deadline`` (a
        ``time.perf_counter`` value) passed before a layout fitted.
        """
        H, W = self.H, self.W
        n = int(rng.integers(0, self.max_count + 1))
        image = self._background(rng)
        rgb, mask = self._object(rng)
        layouts = 0
        while True:
            layouts += 1
            if time.perf_counter() > deadline:
                return None
            ref = rng.uniform(0.4, 0.8) * H
            copies = [self._copy(rng, rgb, mask, ref) for _ in range(n)]
            visible: List[set] = []  # visible pixel indices of each placed copy
            full: List[int] = []
            placed = []
            for c_rgb, c_a in copies:
                h, w = c_a.shape
                if h > H or w > W:
                    break
                ys, xs = np.nonzero(c_a > 0.5)
                for _ in range(TRIES_PER_COPY):
                    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
                    pix = set(((ys + y) * W + (xs + x)).tolist())
                    # The new copy lies on top: every earlier one must keep >= t visible.
                    if all(len(v - pix) >= self.t * f for v, f in zip(visible, full)):
                        visible = [v - pix for v in visible] + [pix]
                        full.append(len(pix))
                        placed.append((c_rgb, c_a, y, x))
                        break
                else:
                    break
            if len(placed) == n:
                break
        for c_rgb, c_a, y, x in placed:
            h, w = c_a.shape
            m = c_a[..., None]
            win = image[y:y + h, x:x + w]
            image[y:y + h, x:x + w] = win * (1.0 - m) + c_rgb * m
        Image.fromarray(np.rint(image).astype(np.uint8)).save(os.path.join(out_dir, f"{index}-{n}.jpg"),
                                                             quality=JPEG_QUALITY)
        return {"count": n, "layouts": layouts}


def run_baseline(stems: List[str], bg_files: List[str], size: Tuple[int, int], t: float, *, seconds: float,
                 max_images: int, seed: int = 0, out_dir: Optional[str] = None) -> Dict[str, object]:
    """Make images until ``max_images`` are done or ``seconds`` have passed.

    The rate counts finished images over the time up to the last finished one (an
    image abandoned at the deadline is not charged), which favours the baseline.

    Returns
    -------
    dict
        ``images``, ``seconds`` (wall), ``cpu_s``, ``images_per_s``,
        ``cpu_images_per_s``, ``layouts_per_image``, ``abandoned`` (an image was cut
        off by the deadline), ``time_limit_s``.
    """
    gen = BaselineGenerator(stems, bg_files, size, t)
    rng = np.random.default_rng(seed)
    own = out_dir is None
    tmp = tempfile.TemporaryDirectory(prefix="baseline-") if own else None
    out = tmp.name if own else out_dir
    done, layouts, abandoned = 0, 0, False
    w0, c0 = time.perf_counter(), time.process_time()
    w_last, c_last = w0, c0
    deadline = w0 + seconds
    try:
        for i in range(max_images):
            r = gen.make(i, rng, out, deadline)
            if r is None:
                abandoned = True
                break
            done += 1
            layouts += r["layouts"]
            w_last, c_last = time.perf_counter(), time.process_time()
            if w_last > deadline:
                break
    finally:
        if tmp is not None:
            tmp.cleanup()
    wall, cpu = w_last - w0, c_last - c0
    return {"size": list(size), "t": t, "images": done, "seconds": round(wall, 3), "cpu_s": round(cpu, 3),
            "images_per_s": rate(done, wall), "cpu_images_per_s": rate(done, cpu),
            "layouts_per_image": layouts / done if done else None, "abandoned": abandoned,
            "time_limit_s": seconds}


def main(argv=None) -> None:
    from synthcount.assets import builtin_backgrounds, builtin_objects

    p = parser("Baseline cut-paste generator (per-composite decode, pixel-index sets, one JPEG per image)")
    p.add_argument("--t", type=float, default=0.5, help="visible fraction threshold (default 0.5)")
    p.add_argument("--size", type=int, default=161)
    p.add_argument("--seconds", type=float, default=20.0, help="time limit (default 20 s)")
    a = p.parse_args(argv)
    mach = machine()  # before the work: the load average says how busy the machine was
    seconds, max_images = (2.0, 20) if a.quick else (a.seconds, 100_000)
    with tempfile.TemporaryDirectory(prefix="baseline-assets-") as d:
        stems, bgs = write_assets(d, builtin_objects(), builtin_backgrounds())
        r = run_baseline(stems, bgs, (a.size, a.size), a.t, seconds=seconds, max_images=max_images)
    res = {"benchmark": "baseline", "quick": a.quick, "machine": mach, "baseline": [r]}
    emit(res, [format_table([r], ["t", "images", "seconds", "images_per_s", "cpu_images_per_s", "layouts_per_image"],
                            "baseline cut-paste generator")], a.out)


if __name__ == "__main__":
    main()
