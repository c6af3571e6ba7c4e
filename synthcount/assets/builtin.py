"""Built-in asset packs, used when no source folder is named. No download.

Objects (27, 22 kinds)
    20 procedural shapes (disc, ellipse, rounded square, triangle, 5- and 6-point
    stars, heart, cross, crescent, ring, hexagon, pentagon, octagon, diamond,
    arrow, flower, teardrop, semicircle, trapezoid, lightning bolt) drawn 4x
    supersampled and area-downsampled, so their alpha has soft, anti-aliased
    edges, each filled with its own texture (stripes, checker, gradients, dots,
    smooth noise, crops of scikit-image photographs); the horse silhouette of
    scikit-image (its bundled ``horse.png`` keeps anti-aliased edges); 6 coins
    segmented from ``skimage.data.coins()``. Longer side 128 px; each object is
    cropped to the bounding box of alpha > 0.

Backgrounds (12, 256 x 256, free of salient objects)
    scikit-image's grass, gravel and brick textures (tinted; two at close range), and
    procedural linear / diagonal / radial gradients, smooth noise, fractal
    (1/f) noise and fine "sand" noise.

Binary stimuli (Stoianov & Zorzi 2012)
    White (255, 255, 255) discs and rectangles of aspect ratios 1:1, 2:1, 3:1,
    3:2 (and transposed) with hard 0/255 alpha, longer side 64 px; one black
    64 x 64 background.

Every random choice comes from ``SeedSequence(BUILTIN_SEED, spawn_key=(i,))`` per
asset, so the packs (and ``AssetPack.fingerprint()``) are identical across calls
and processes. Each pack is built once per process (``functools.lru_cache``);
treat the arrays as read-only.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from ..pack import AssetPack, ObjectAsset

__all__ = ["builtin_objects", "builtin_backgrounds", "binary_objects", "binary_backgrounds", "BUILTIN_SEED"]

BUILTIN_SEED = 20_180_611
OBJECT_SIDE = 128  # longer side of built-in objects, px
BACKGROUND_SIDE = 256
_SS = 4  # supersampling factor of the procedural shapes


def _rng(i: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(BUILTIN_SEED, spawn_key=(i,))))


# --------------------------------------------------------------------------- shapes
# Each shape: (name, (w, h) in px, draw(canvas)) where canvas is a zeroed uint8
# (h*_SS, w*_SS) array and draw fills the shape with 255. Coordinates in helpers
# are fractions of the box, so shapes are defined once, independent of size.

def _poly(c: np.ndarray, pts) -> None:
    H, W = c.shape
    p = np.round(np.asarray(pts, np.float64) * [W - 1, H - 1]).astype(np.int32)
    cv2.fillPoly(c, [p], 255)


def _circle(c: np.ndarray, cx, cy, r, value=255) -> None:
    H, W = c.shape
    cv2.circle(c, (round(cx * (W - 1)), round(cy * (H - 1))), round(r * min(H, W)), value, -1)


def _ellipse(c, cx=0.5, cy=0.5, ax=0.5, ay=0.5, value=255, a0=0, a1=360) -> None:
    H, W = c.shape
    cv2.ellipse(c, (round(cx * (W - 1)), round(cy * (H - 1))), (round(ax * (W - 1)), round(ay * (H - 1))),
                0, a0, a1, value, -1)


def _star(n: int, inner: float):
    t = np.arange(2 * n) * np.pi / n - np.pi / 2
    r = np.where(np.arange(2 * n) % 2 == 0, 0.5, 0.5 * inner)
    return np.stack([0.5 + r * np.cos(t), 0.5 + r * np.sin(t)], 1)


def _regular(n: int, rot: float = -np.pi / 2):
    t = np.arange(n) * 2 * np.pi / n + rot
    return np.stack([0.5 + 0.5 * np.cos(t), 0.5 + 0.5 * np.sin(t)], 1)


def _heart():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([(x + 16) / 32, (y + 17) / 29.5], 1)


def _crescent(c):
    _ellipse(c)
    _ellipse(c, cx=0.72, cy=0.42, ax=0.42, ay=0.42, value=0)


def _ring(c):
    _ellipse(c)
    _ellipse(c, ax=0.27, ay=0.27, value=0)


def _flower(c):
    for k in range(5):
        t = k * 2 * np.pi / 5 - np.pi / 2
        _circle(c, 0.5 + 0.27 * np.cos(t), 0.5 + 0.27 * np.sin(t), 0.22)
    _circle(c, 0.5, 0.5, 0.25)


def _teardrop(c):
    _circle(c, 0.5, 0.66, 0.33)
    _poly(c, [(0.5, 0.0), (0.19, 0.55), (0.81, 0.55)])


def _rounded_square(c):
    H, W = c.shape
    r = 0.2
    _poly(c, [(r, 0), (1 - r, 0), (1, r), (1, 1 - r), (1 - r, 1), (r, 1), (0, 1 - r), (0, r)])
    for cx in (r, 1 - r):
        for cy in (r, 1 - r):
            cv2.circle(c, (round(cx * (W - 1)), round(cy * (H - 1))), round(r * (W - 1)), 255, -1)


SHAPES = [
    ("disc", (128, 128), lambda c: _ellipse(c)),
    ("ellipse", (128, 80), lambda c: _ellipse(c)),
    ("rounded_square", (112, 112), _rounded_square),
    ("triangle", (128, 112), lambda c: _poly(c, [(0.5, 0), (1, 1), (0, 1)])),
    ("star5", (128, 122), lambda c: _poly(c, _star(5, 0.42))),
    ("star6", (128, 128), lambda c: _poly(c, _star(6, 0.55))),
    ("heart", (128, 118), lambda c: _poly(c, _heart())),
    ("cross", (120, 120), lambda c: _poly(c, [(0.35, 0), (0.65, 0), (0.65, 0.35), (1, 0.35), (1, 0.65), (0.65, 0.65),
                                             (0.65, 1), (0.35, 1), (0.35, 0.65), (0, 0.65), (0, 0.35), (0.35, 0.35)])),
    ("crescent", (120, 120), _crescent),
    ("ring", (128, 128), _ring),
    ("hexagon", (128, 112), lambda c: _poly(c, _regular(6, 0.0))),
    ("pentagon", (124, 120), lambda c: _poly(c, _regular(5))),
    ("octagon", (120, 120), lambda c: _poly(c, _regular(8, np.pi / 8))),
    ("diamond", (96, 128), lambda c: _poly(c, [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)])),
    ("arrow", (128, 80), lambda c: _poly(c, [(0, 0.32), (0.6, 0.32), (0.6, 0), (1, 0.5), (0.6, 1), (0.6, 0.68),
                                             (0, 0.68)])),
    ("flower", (128, 128), _flower),
    ("teardrop", (96, 128), _teardrop),
    ("semicircle", (128, 66), lambda c: _ellipse(c, cy=1.0, ay=1.0, a0=180, a1=360)),
    ("trapezoid", (128, 88), lambda c: _poly(c, [(0.25, 0), (0.75, 0), (1, 1), (0, 1)])),
    ("bolt", (80, 128), lambda c: _poly(c, [(0.55, 0), (0.05, 0.58), (0.45, 0.58), (0.3, 1), (0.95, 0.38),
                                            (0.55, 0.38), (0.8, 0)])),
]


# --------------------------------------------------------------------------- textures

def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated, mid-to-bright colour as float RGB in [0, 1] (salient on scenes)."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(170, 256), rng.integers(150, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255


def _mix(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours a -> b by t in [0, 1] -> uint8 RGB."""
    out = a * (1 - t[..., None]) + b * t[..., None]
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _smooth_noise(rng, h, w, cells=6) -> np.ndarray:
    g = rng.random((cells, cells)).astype(np.float32)
    n = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip((n - n.min()) / max(float(n.max() - n.min()), 1e-6), 0, 1)


def _fractal(rng, h, w, beta=2.0) -> np.ndarray:
    """1/f^(beta/2) amplitude noise, normalised to [0, 1]."""
    f = np.fft.fft2(rng.standard_normal((h, w)))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    k = np.sqrt(fx ** 2 + fy ** 2)
    k[0, 0] = 1.0
    n = np.real(np.fft.ifft2(f / k ** (beta / 2)))
    return (n - n.min()) / max(float(n.max() - n.min()), 1e-9)


def _photo_crop(rng, h, w, name) -> np.ndarray:
    img = _skimage(name)
    s = rng.uniform(0.3, 0.6) * min(img.shape[:2])
    y, x = rng.integers(0, img.shape[0] - int(s)), rng.integers(0, img.shape[1] - int(s))
    return cv2.resize(img[y:y + int(s), x:x + int(s)], (w, h), interpolation=cv2.INTER_AREA)


def _texture(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "stripes":
        th, period = rng.uniform(0, np.pi), rng.uniform(10, 24)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
    elif kind == "checker":
        s = int(rng.integers(10, 22))
        t = ((yy // s + xx // s) % 2).astype(np.float64)
    elif kind == "gradient":
        th = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(th) + yy * np.sin(th)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-9)
    elif kind == "radial":
        t = np.clip(np.hypot(yy - h / 2, xx - w / 2) / (0.6 * max(h, w)), 0, 1)
    elif kind == "dots":
        s = int(rng.integers(14, 24))
        t = (np.hypot((yy % s) - s / 2, (xx % s) - s / 2) < s / 3.2).astype(np.float64)
    elif kind == "noise":
        t = _smooth_noise(rng, h, w, cells=int(rng.integers(4, 9)))
    elif kind.startswith("photo:"):
        return _photo_crop(rng, h, w, kind[6:])
    else:
        raise ValueError(f"texture kind unknown: {kind!r}")
    return _mix(t, a, b)


TEXTURES = ("stripes", "checker", "gradient", "noise", "photo:chelsea.png", "dots", "radial", "photo:coffee.png",
            "stripes", "noise", "checker", "photo:rocket.jpg", "gradient", "dots", "photo:astronaut.png", "radial",
            "noise", "stripes", "gradient", "checker")


# --------------------------------------------------------------------------- skimage data

@functools.lru_cache(maxsize=None)
def _skimage(name: str) -> np.ndarray:
    """An image bundled with scikit-image (its package data folder: offline), RGB or gray uint8.

    Read with cv2 straight from the package: ``skimage.data.horse()`` would
    binarise the horse's anti-aliased edges and takes ~0.2 s to import helpers.
    """
    from skimage import data

    path = os.path.join(os.path.dirname(data.__file__), name)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"scikit-image data file missing: {path}")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def _crop_alpha(rgb: np.ndarray, alpha: np.ndarray):
    ys, xs = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    sl = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    return rgb[sl], alpha[sl]


def _fit(rgb: np.ndarray, alpha: np.ndarray, side: int = OBJECT_SIDE):
    h, w = alpha.shape
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
            cv2.resize(alpha, size, interpolation=cv2.INTER_AREA))


def _horse(rng) -> ObjectAsset:
    gray = _skimage("horse.png")[..., 0]
    alpha = 255 - gray  # the horse is drawn black on white, edges anti-aliased
    h, w = alpha.shape
    shade = _smooth_noise(rng, h, w, cells=5)
    rgb = _mix(shade, np.array([0.45, 0.27, 0.12]), np.array([0.70, 0.48, 0.25]))
    rgb, alpha = _crop_alpha(rgb, alpha)
    rgb, alpha = _fit(rgb, alpha)
    return ObjectAsset(rgb, alpha, "builtin/skimage/horse")


def _coins(n: int = 6):
    """n coins segmented from skimage's coins image (local-contrast threshold)."""
    img = _skimage("coins.png")
    blur = cv2.GaussianBlur(img, (0, 0), 1.5).astype(np.int16)
    local = cv2.blur(img, (61, 61)).astype(np.int16)  # uneven illumination: compare to local mean
    fg = ((blur - local) > 10).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    coins = []
    for cnt in contours:
        x, y, w, h = cv2.boundingRect(cnt)
        area = cv2.contourArea(cnt)
        # coin-sized and round (area / box area near pi / 4), away from the border
        inside = x > 2 and y > 2 and x + w < img.shape[1] - 2 and y + h < img.shape[0] - 2
        if area > 900 and 0.7 < area / (w * h) < 0.85 and inside:
            coins.append((y // 60, x, cnt))  # row-major order, rows ~60 px apart
    coins.sort(key=lambda c: (c[0], c[1]))
    picked = coins[:: max(1, len(coins) // n)][:n]
    out = []
    for k, (_, _, cnt) in enumerate(picked):
        m = np.zeros(img.shape, np.uint8)
        cv2.drawContours(m, [cnt], -1, 255, -1)  # filled: no holes
        m = cv2.GaussianBlur(m, (0, 0), 0.8)  # soft, anti-aliased rim
        tint = np.array([1.0, 0.78, 0.55]) if k % 2 == 0 else np.array([0.92, 0.95, 1.0])  # copper / silver
        rgb = np.clip(img[..., None].astype(np.float64) * tint * 1.1, 0, 255).astype(np.uint8)
        rgb, alpha = _crop_alpha(rgb, m)
        rgb, alpha = _fit(rgb, alpha, side=96)
        out.append(ObjectAsset(rgb, alpha, f"builtin/skimage/coin_{k:02d}"))
    return out


# --------------------------------------------------------------------------- packs

def _shape(i: int, name: str, size, draw) -> ObjectAsset:
    rng = _rng(i)
    w, h = size
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    draw(canvas)
    alpha = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)  # area mean = anti-aliasing
    rgb = _texture(TEXTURES[i % len(TEXTURES)], rng, h, w)
    rgb, alpha = _crop_alpha(rgb, alpha)
    return ObjectAsset(rgb, alpha, f"builtin/shape/{name}")


@functools.lru_cache(maxsize=None)
def builtin_objects() -> AssetPack:
    """The built-in objects (see module docstring): 27 cut-outs, 22 kinds, soft alpha.

    Returns
    -------
    AssetPack
        ``objects`` with RGB uint8 (h, w, 3) and alpha uint8 (h, w) in 0..255;
        no backgrounds. Cached per process; identical in every process.
    """
    objs = [_shape(i, name, size, draw) for i, (name, size, draw) in enumerate(SHAPES)]
    objs.append(_horse(_rng(100)))
    objs.extend(_coins())
    return AssetPack(objects=objs, source="builtin")


def _tinted(name: str, tint, crop: int = 512) -> np.ndarray:
    g = _skimage(name)[:crop, :crop].astype(np.float64)
    g = cv2.resize(g, (BACKGROUND_SIDE, BACKGROUND_SIDE), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(g[..., None] * np.asarray(tint)), 0, 255).astype(np.uint8)


def _palette(t: np.ndarray, colours) -> np.ndarray:
    """Piecewise-linear colour map of t in [0, 1] through ``colours`` (RGB 0..255)."""
    c = np.asarray(colours, np.float64) / 255
    x = t * (len(c) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(c) - 2)
    f = x - i
    out = c[i] * (1 - f[..., None]) + c[i + 1] * f[..., None]
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def builtin_backgrounds() -> AssetPack:
    """The built-in backgrounds: 12 RGB uint8 256 x 256 textures without salient objects.

    Returns
    -------
    AssetPack
        ``backgrounds`` and ``background_names``; no objects. Cached per process.
    """
    S = BACKGROUND_SIDE
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) / (S - 1)
    r = lambda k: _rng(200 + k)  # noqa: E731
    bgs = {
        "skimage/grass": _tinted("grass.png", (0.62, 0.85, 0.40)),
        "skimage/gravel": _tinted("gravel.png", (0.95, 0.88, 0.78)),
        "skimage/brick": _tinted("brick.png", (1.05, 0.70, 0.55)),
        "skimage/brick_close": _tinted("brick.png", (0.90, 0.75, 0.65), crop=256),
        "skimage/grass_close": _tinted("grass.png", (0.80, 0.85, 0.45), crop=256),
        "procedural/gradient_sky": _palette(yy, [(70, 120, 200), (170, 200, 235), (225, 235, 245)]),
        "procedural/gradient_diagonal": _palette((xx + yy) / 2, [(200, 170, 120), (120, 140, 90)]),
        "procedural/gradient_radial": _palette(np.clip(np.hypot(xx - 0.5, yy - 0.5) / 0.71, 0, 1),
                                               [(235, 225, 200), (140, 120, 100)]),
        "procedural/smooth_noise": _palette(_smooth_noise(r(0), S, S, cells=5), [(90, 120, 80), (170, 160, 110)]),
        "procedural/fractal_clouds": _palette(_fractal(r(1), S, S, 2.2), [(60, 110, 190), (230, 235, 245)]),
        "procedural/fractal_earth": _palette(_fractal(r(2), S, S, 2.0), [(80, 60, 40), (130, 110, 70), (160, 150,
                                                                                                        110)]),
        "procedural/sand": _palette(np.clip(0.5 * _smooth_noise(r(3), S, S, 8) + 0.5 * r(4).random((S, S)), 0, 1),
                                    [(190, 165, 120), (225, 205, 160)]),
    }
    return AssetPack(backgrounds=list(bgs.values()), background_names=[f"builtin/{k}" for k in bgs], source="builtin")


def _binary(name: str, w: int, h: int, disc: bool) -> ObjectAsset:
    if disc:
        yy, xx = np.mgrid[0:h, 0:w]
        on = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1.0
        alpha = np.where(on, 255, 0).astype(np.uint8)
    else:
        alpha = np.full((h, w), 255, np.uint8)
    rgb = np.full((h, w, 3), 255, np.uint8)
    return ObjectAsset(rgb, alpha, f"binary/{name}")


@functools.lru_cache(maxsize=None)
def binary_objects() -> AssetPack:
    """Binary stimuli: a white disc and white rectangles (1:1, 2:1, 1:2, 3:1, 1:3, 3:2, 2:3).

    Alpha is hard (0 or 255), rgb is (255, 255, 255), longer side 64 px.
    """
    objs = [_binary("disc", 64, 64, True)]
    for a, b in ((1, 1), (2, 1), (1, 2), (3, 1), (1, 3), (3, 2), (2, 3)):
        s = 64 / max(a, b)
        objs.append(_binary(f"rect_{a}x{b}", round(a * s), round(b * s), False))
    return AssetPack(objects=objs, source="builtin-binary")


@functools.lru_cache(maxsize=None)
def binary_backgrounds() -> AssetPack:
    """One black 64 x 64 RGB background for the binary stimuli."""
    return AssetPack(backgrounds=[np.zeros((64, 64, 3), np.uint8)], background_names=["binary/black"],
                     source="builtin-binary")
