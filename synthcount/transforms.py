"""Per-copy object transforms: sample the parameters, then apply them (pure).

``sample_color`` draws its random numbers from the Generator it is given (the
compositor draws the same numbers itself, with the rest of a layout's, in one call);
``transform_patch`` draws none, so recorded parameters replay a patch exactly.

A transformed copy is a ``Patch``: a blend alpha ``float32 (h, w)`` in [0, 1] and its
footprint (alpha >= 0.5), trimmed to the box of non-zero alpha so that "fully
inside the image" means every pixel the object touches is inside; its RGB
(``float32 (h, w, 3)``, 0..255) is warped only when the layout is known to fit.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .pack import ObjectAsset
from .rng import uniform_from

__all__ = ["MipAsset", "Patch", "transform_patch", "sample_color", "ALPHA_THRESHOLD", "ALPHA_THRESHOLD_U8",
           "footprint_threshold"]

# Alpha at or above which a pixel belongs to an object (the label-map rule), and
# the same rule on uint8 alpha: 128 is the first of 0..255 with a / 255 >= 0.5.
ALPHA_THRESHOLD = 0.5
ALPHA_THRESHOLD_U8 = 128
footprint_threshold = ALPHA_THRESHOLD  # the name before 0.2
# Replicated border around the RGBA pyramid levels (see MipAsset).
RGBA_PAD = 2


class MipAsset:
    """An object asset with a cached pyramid of halvings (RGBA and alpha, uint8).

    Scaling from the nearest level at or above the target size keeps the bilinear
    warp's scale in [0.5, 1], which avoids aliasing without a per-copy INTER_AREA
    resize of the full-size asset.
    """

    def __init__(self, asset: ObjectAsset):
        rgba = [np.ascontiguousarray(np.dstack([asset.rgb, asset.alpha]))]
        self.alpha: List[np.ndarray] = [asset.alpha]
        while min(self.alpha[-1].shape) >= 8:
            h, w = self.alpha[-1].shape
            size = ((w + 1) // 2, (h + 1) // 2)
            rgba.append(cv2.resize(rgba[-1], size, interpolation=cv2.INTER_AREA))
            self.alpha.append(cv2.resize(self.alpha[-1], size, interpolation=cv2.INTER_AREA))
        # Colours are kept as RGBA (OpenCV warps 4 channels much faster than 3) with a
        # replicated border of RGBA_PAD pixels, so a constant-border warp (faster than
        # a replicating one) never blends black into edge pixels.
        p = RGBA_PAD
        self.rgba: List[np.ndarray] = [cv2.copyMakeBorder(x, p, p, p, p, cv2.BORDER_REPLICATE) for x in rgba]
        self.height, self.width = asset.alpha.shape
        self.long_side = max(self.height, self.width)
        # Footprint pixels at scale 1: a copy at scale s covers about s**2 times this.
        self.footprint_area = int(np.count_nonzero(asset.alpha >= ALPHA_THRESHOLD_U8))

    def level_for(self, scale: float) -> Tuple[int, float]:
        """The pyramid level to warp from and the scale left to apply (>= 0.5 where possible)."""
        i = 0
        while i + 1 < len(self.alpha) and scale * (2 ** i) < 0.5:
            i += 1
        # The level's true width (rounded up at every halving) gives its exact scale.
        return i, scale * self.width / self.alpha[i].shape[1]


def sample_color(rng: np.random.Generator, strength: float) -> Tuple[float, float, float]:
    """Brightness, contrast and saturation factors, each U(1 - s, 1 + s); (1, 1, 1) when s = 0."""
    if strength <= 0:
        return (1.0, 1.0, 1.0)
    b, c, s = uniform_from(rng.random(3), 1 - strength, 1 + strength)
    return (float(b), float(c), float(s))


def _apply_color(rgb8: np.ndarray, a8: np.ndarray, color: Tuple[float, float, float]) -> np.ndarray:
    """Brightness, contrast (about the object's alpha-weighted mean colour) and
    saturation on uint8 RGB; returns float32 in 0..255.

    The mean is an exact integer ratio (not a float reduction, whose summation order
    numpy may vary with the CPU's SIMD), so the bytes do not depend on the machine.
    """
    b, c, s = color
    wsum = int(a8.sum(dtype=np.int64))
    mean = b * int((rgb8.astype(np.int64) * a8[..., None]).sum()) / max(3 * wsum, 1)
    out = rgb8.astype(np.float32) * np.float32(b)
    out = (out - np.float32(mean)) * np.float32(c) + np.float32(mean)
    # Elementwise (not a BLAS matmul, whose summation order may vary by CPU).
    gray = out[..., 0] * np.float32(0.299) + out[..., 1] * np.float32(0.587) + out[..., 2] * np.float32(0.114)
    out = gray[..., None] + (out - gray[..., None]) * np.float32(s)
    return np.clip(out, 0, 255, out=out)


def _maps(inv: Tuple[Tuple[float, float, float], Tuple[float, float, float]], x0: int, y0: int,
          w: int, h: int, shift: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed-point ``cv2.remap`` maps for output pixels [x0, x0 + w) x [y0, y0 + h):
    source = ``inv`` @ (x, y, 1) (+ ``shift`` pixels).

    ``cv2.warpAffine`` (and ``remap`` given float maps) compute sample positions with
    whatever SIMD the CPU offers (FMA or not), which moves some samples by 1/32 pixel
    from one machine to another. Here the positions come from separate IEEE float32
    multiplies and adds in numpy (the same on every machine) and ``convertMaps`` only
    scales them by 32 (exact) and rounds, so every machine computes the same maps and
    the same pixels (checked with OpenCV's AVX2/FMA/SSE4 dispatch switched off).
    """
    (a, b, c), (d, e, f) = inv
    xs = _ARANGE[x0:x0 + w] if 0 <= x0 and x0 + w <= _ARANGE.size else np.arange(x0, x0 + w, dtype=np.float32)
    ys = _ARANGE[y0:y0 + h] if 0 <= y0 and y0 + h <= _ARANGE.size else np.arange(y0, y0 + h, dtype=np.float32)
    f32 = np.float32
    mx = np.add.outer(ys * f32(b) + f32(c + shift), xs * f32(a))
    my = np.add.outer(ys * f32(e) + f32(f + shift), xs * f32(d))
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    return m1, m2


# 0, 1, 2, ... as float32: the pixel coordinates _maps slices instead of making them.
_ARANGE = np.arange(4096, dtype=np.float32)


class Patch:
    """One transformed copy: its footprint now, its colours only when rendered.

    Attributes
    ----------
    footprint : ndarray, bool, (h, w)
        alpha >= 0.5: the pixels the object claims in the label map.
    full_area : int
        Pixels in the footprint.
    alpha : ndarray, float32, (h, w), [0, 1]
        Blend alpha, trimmed to the bounding box of alpha > 0 (computed on demand).
    """

    def __init__(self, mip: MipAsset, level: int, maps: Tuple[np.ndarray, np.ndarray], box: Tuple[int, int, int, int],
                 a8: Optional[np.ndarray], alpha: Optional[np.ndarray]):
        self._mip, self._level, self._maps, self._box = mip, level, maps, box
        # uint8 alpha (soft), bool alpha (hard) or float alpha (feather)
        self._a8, self._alpha = a8, alpha
        self.hard = a8 is not None and a8.dtype == bool
        if self.hard:
            self.footprint = a8
        else:
            self.footprint = a8 >= ALPHA_THRESHOLD_U8 if a8 is not None else alpha >= ALPHA_THRESHOLD
        self.full_area = int(np.count_nonzero(self.footprint))
        self.shape = self.footprint.shape

    @property
    def alpha(self) -> np.ndarray:
        if self._alpha is None:
            a = self._a8.astype(np.float32)
            self._alpha = a if self.hard else a * np.float32(1.0 / 255.0)
        return self._alpha

    @property
    def alpha3(self) -> np.ndarray:
        """The alpha repeated over 3 channels (for OpenCV's per-element blend)."""
        a = self.alpha
        return cv2.merge([a, a, a])

    def rgb(self, color: Tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """RGB (h, w, 3) warped with the same geometry as the alpha: uint8 when no
        colour change is asked for, else float32 in 0..255."""
        y0, y1, x0, x1 = self._box
        # The alpha's maps over the trimmed box; source coordinates shift by the pad
        # (an exact integer shift of the whole-pixel part).
        m1, m2 = self._maps
        m1 = m1[y0:y1, x0:x1] + np.int16(RGBA_PAD)
        warped = cv2.remap(self._mip.rgba[self._level], m1, m2[y0:y1, x0:x1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        rgb = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
        if tuple(color) == (1.0, 1.0, 1.0):
            return rgb
        a8 = self._a8.view(np.uint8) * np.uint8(255) if self.hard else self._a8
        return _apply_color(rgb, a8, color)

    def paste(self, image: np.ndarray, y: int, x: int, color: Tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        """Blend onto ``image`` (uint8, (H, W, 3)) at top-left (y, x), in place:
        out = bg * (1 - a) + obj * a, rounded to nearest."""
        h, w = self.shape
        win = image[y:y + h, x:x + w]
        rgb = self.rgb(color)
        if self.hard:
            win[self.footprint] = rgb[self.footprint] if rgb.dtype == np.uint8 else np.rint(rgb[self.footprint])
            return
        d = cv2.subtract(rgb, win, dtype=cv2.CV_32F) if rgb.dtype == np.uint8 else rgb - win
        # The float32 sum rounded to nearest (ties to even) and saturated: the same
        # bytes as np.rint, and as an add straight to uint8 (whose mixed-type path is
        # slower). The sum is never below -0, so the absolute value changes nothing.
        cv2.convertScaleAbs(cv2.add(cv2.multiply(d, self.alpha3), win, dtype=cv2.CV_32F), dst=win)


def transform_patch(
    mip: MipAsset,
    scale: float,
    angle: float,
    flip: bool,
    blend: str = "soft",
    feather_sigma: float = 1.0,
) -> Optional[Patch]:
    """Scale, rotate (expanding the canvas) and flip one object's alpha.

    Parameters
    ----------
    mip : MipAsset
    scale : float
        Size factor relative to the asset (> 0).
    angle : float
        Rotation in degrees, counter-clockwise.
    flip : bool
        Horizontal flip (applied before rotation).
    blend : {"soft", "hard", "feather"}
        How the blend alpha is derived from the mask (see ``SceneConfig``).
    feather_sigma : float
        Gaussian sigma in pixels for ``feather``.

    Returns
    -------
    Patch or None
        None when the object vanishes at this scale. Only the alpha is warped here;
        ``Patch.rgb`` warps the colours when the layout is known to fit.
    """
    level, s = mip.level_for(scale)
    h, w = mip.alpha[level].shape
    a = math.radians(angle)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    margin = int(math.ceil(3 * feather_sigma)) + 1 if blend == "feather" else 1
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    fx = -1.0 if flip else 1.0
    # dst = R S F (p - c) + d: F flips x about the centre, R rotates counter-clockwise
    # on screen (y points down). Source pixel edges span [-0.5, w - 0.5].
    m00, m01, m10, m11 = cos * fx, sin, -sin * fx, cos
    xs = [m00 * px + m01 * py for px in (-0.5 - cx, w - 0.5 - cx) for py in (-0.5 - cy, h - 0.5 - cy)]
    ys = [m10 * px + m11 * py for px in (-0.5 - cx, w - 0.5 - cx) for py in (-0.5 - cy, h - 0.5 - cy)]
    lox, loy = min(xs), min(ys)
    out_size = (int(math.ceil(max(xs) - lox)) + 2 * margin, int(math.ceil(max(ys) - loy)) + 2 * margin)
    dx, dy = margin - 0.5 - lox, margin - 0.5 - loy  # lowest mapped edge at margin - 0.5
    tx, ty = dx - (m00 * cx + m01 * cy), dy - (m10 * cx + m11 * cy)
    # Inverse map (output pixel -> source pixel), in Python floats: the same on every machine.
    det = m00 * m11 - m01 * m10
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    inv = ((i00, i01, -(i00 * tx + i01 * ty)), (i10, i11, -(i10 * tx + i11 * ty)))
    m1, m2 = _maps(inv, 0, 0, out_size[0], out_size[1])
    a8 = cv2.remap(mip.alpha[level], m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if blend == "hard":
        a8 = a8 >= ALPHA_THRESHOLD_U8
    elif blend == "feather":
        # OpenCV's 8-bit Gaussian blur is bit-exact (fixed point), unlike its float one.
        a8 = cv2.GaussianBlur(a8, (0, 0), feather_sigma, borderType=cv2.BORDER_CONSTANT)
    bx, by, bw, bh = cv2.boundingRect(a8.view(np.uint8))
    if bw == 0:
        return None
    box = (by, by + bh, bx, bx + bw)
    return Patch(mip, level, (m1, m2), box, np.ascontiguousarray(a8[by:by + bh, bx:bx + bw]), None)
