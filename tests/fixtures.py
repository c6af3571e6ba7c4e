"""Fixture folders built from scikit-image's bundled images (no download).

Each ``make_*`` function writes a small folder (images <= 200 px) under ``root``
and returns its path; the module constants describe what a correct loader must
find there. ``tests/conftest.py`` wraps them as session-scoped pytest fixtures
(``msra_dir``, ``bad_msra_dir``, ``sun_dir``, ``rgba_dir``); other test modules
may import the constants from here.

Layouts
    ``make_msra_dir``: ``<root>/Imgs/<stem>.jpg`` + ``<stem>.png`` (MSRA10K), with a
    nested ``Imgs/more/`` folder; 6 good objects.
    ``make_bad_msra_dir``: 2 good objects plus one file per skip reason.
    ``make_sun_dir``: ``<root>/SUN397/<letter>/<class>[/<sub>]/*.jpg|png`` and
    ``ClassName.txt``; 3 classes (one nested), 7 files in odd pixel modes.
    ``make_rgba_dir``: RGBA / LA / palette-with-transparency PNG cut-outs.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image
from skimage import data

__all__ = [
    "make_msra_dir", "make_bad_msra_dir", "make_sun_dir", "make_rgba_dir",
    "MSRA_GOOD", "ELLIPSE_NAME", "ELLIPSE_BBOX", "SOFT_NAME", "BIG_NAME", "BAD_MSRA_REASONS",
    "BAD_MSRA_GOOD", "SUN_CLASSES", "SUN_FILES", "SUN_EXIF_NAME", "RGBA_FILES",
]

# Good objects of make_msra_dir (sorted relative paths = load order).
ELLIPSE_NAME = "Imgs/ellipse_chelsea.jpg"
# Hard ellipse mask, centre (x=80, y=60), semi-axes (40, 25) on a 160x120 image:
# its bounding box as (y0, y1, x0, x1), ends exclusive.
ELLIPSE_BBOX = (35, 86, 40, 121)
SOFT_NAME = "Imgs/soft_coffee.jpg"  # Gaussian-blurred mask: soft alpha edges
BIG_NAME = "Imgs/more/big_astronaut.jpg"  # 200x200, disc mask of radius 90
MSRA_GOOD = tuple(sorted([ELLIPSE_NAME, SOFT_NAME, "Imgs/coins.jpg", "Imgs/horse.jpg",
                          "Imgs/more/rocket.jpg", BIG_NAME]))

# make_bad_msra_dir: file -> the opening phrase of the reason it must be skipped for.
BAD_MSRA_REASONS = {
    "Imgs/truncated.jpg": "truncated image",
    "Imgs/nomask.jpg": "missing mask",
    "Imgs/wrongsize.jpg": "mask size differs",
    "Imgs/empty.jpg": "empty mask",
    "Imgs/full.jpg": "mask covers the whole image",
    "Imgs/bomb.jpg": "decompression bomb",
    "Imgs/garbage.jpg": "unreadable image",
    "Imgs/notes.txt": "unsupported file type",
    "Imgs/orphan_mask.png": "no alpha channel",
}
BAD_MSRA_GOOD = (ELLIPSE_NAME, "Imgs/more/rocket.jpg")

# make_sun_dir: class path -> files (relative to the returned SUN397 root).
SUN_CLASSES = {
    "/b/beach": ("b/beach/sun_exif.jpg", "b/beach/sun_gray.jpg", "b/beach/sun_rgb.jpg"),
    "/f/forest/needleleaf": ("f/forest/needleleaf/sun_cmyk.jpg", "f/forest/needleleaf/sun_rgba.png"),
    "/g/grass": ("g/grass/sun_16bit.png", "g/grass/sun_palette.png"),
}
SUN_FILES = tuple(sorted(f for fs in SUN_CLASSES.values() for f in fs))
# Stored 120 wide x 80 high with EXIF orientation 6: loads as 80 wide x 120 high.
SUN_EXIF_NAME = "b/beach/sun_exif.jpg"

RGBA_FILES = ("coin.png", "horse.png", "la_moon.png", "palette.png")


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _save(arr: np.ndarray, path: str, mode: str | None = None, **kw) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(path, **kw)


def _ellipse_mask(w, h, centre, axes, blur=0.0) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, centre, axes, 0, 0, 360, 255, -1)
    if blur:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    return m


def _horse(w: int) -> np.ndarray:
    """The horse silhouette as a mask (255 = horse), ``w`` pixels wide."""
    h = (~data.horse()).astype(np.uint8) * 255
    return _resize(h, w, round(h.shape[0] * w / h.shape[1]))


def _good_objects(imgs: str, which=None) -> None:
    objs = {
        ELLIPSE_NAME: (_resize(data.chelsea(), 160, 120), _ellipse_mask(160, 120, (80, 60), (40, 25))),
        SOFT_NAME: (_resize(data.coffee(), 150, 100), _ellipse_mask(150, 100, (75, 50), (50, 30), blur=3.0)),
        "Imgs/more/rocket.jpg": (_resize(data.rocket(), 180, 120),
                                 cv2.rectangle(np.zeros((120, 180), np.uint8), (30, 20), (149, 99), 255, -1)),
        BIG_NAME: (_resize(data.astronaut(), 200, 200), cv2.circle(np.zeros((200, 200), np.uint8), (100, 100), 90, 255,
                                                                   -1)),
    }
    coins = data.coins()[20:120, 10:140]
    objs["Imgs/coins.jpg"] = (np.dstack([coins] * 3), np.where(coins > 120, 255, 0).astype(np.uint8))
    horse = _horse(160)
    objs["Imgs/horse.jpg"] = (_resize(data.astronaut(), *horse.shape[::-1]), horse)
    for name, (img, mask) in objs.items():
        if which is None or name in which:
            _save(img, os.path.join(imgs, name), quality=95)
            _save(mask, os.path.join(imgs, name[:-4] + ".png"))


def make_msra_dir(root: str) -> str:
    """MSRA10K-layout folder with the 6 good objects of ``MSRA_GOOD``; returns root."""
    _good_objects(root)
    return root


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_bad_msra_dir(root: str) -> str:
    """MSRA10K-layout folder: ``BAD_MSRA_GOOD`` plus one bad file per reason in
    ``BAD_MSRA_REASONS``; returns root."""
    _good_objects(root, which=BAD_MSRA_GOOD)
    imgs = os.path.join(root, "Imgs")
    img = _resize(data.coffee(), 120, 80)
    mask = _ellipse_mask(120, 80, (60, 40), (30, 20))
    jpg = _jpeg_bytes(img)

    def put(name, content: bytes, with_mask=mask):
        with open(os.path.join(imgs, name), "wb") as fh:
            fh.write(content)
        if with_mask is not None:
            _save(with_mask, os.path.join(imgs, name[:-4] + ".png"))

    put("truncated.jpg", jpg[: len(jpg) // 2])
    put("nomask.jpg", jpg, with_mask=None)
    put("wrongsize.jpg", jpg, with_mask=_ellipse_mask(100, 80, (50, 40), (30, 20)))
    put("empty.jpg", jpg, with_mask=np.zeros((80, 120), np.uint8))
    put("full.jpg", jpg, with_mask=np.full((80, 120), 255, np.uint8))
    # A real decompression bomb: the JPEG header (SOF0) claims 30000 x 30000 pixels.
    sof = jpg.index(b"\xff\xc0")
    bomb = bytearray(jpg)
    bomb[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    put("bomb.jpg", bytes(bomb))
    put("garbage.jpg", b"this is not an image\n" * 20)
    with open(os.path.join(imgs, "notes.txt"), "w") as fh:
        fh.write("not an image\n")
    _save(mask, os.path.join(imgs, "orphan_mask.png"))  # a mask whose JPEG is missing
    return root


def make_sun_dir(root: str) -> str:
    """SUN397-layout tree at ``<root>/SUN397`` (see ``SUN_CLASSES``); returns that folder."""
    sun = os.path.join(root, "SUN397")
    j = lambda rel: os.path.join(sun, rel)  # noqa: E731
    _save(_resize(data.coffee(), 180, 120), j("b/beach/sun_rgb.jpg"), quality=90)
    _save(_resize(data.moon(), 160, 120), j("b/beach/sun_gray.jpg"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    os.makedirs(os.path.dirname(j(SUN_EXIF_NAME)), exist_ok=True)
    Image.fromarray(_resize(data.astronaut(), 120, 80)).save(j(SUN_EXIF_NAME), quality=90, exif=exif.tobytes())
    grass = _resize(data.grass(), 150, 110)
    _save(np.dstack([grass // 3, grass, grass // 2]), j("f/forest/needleleaf/sun_cmyk.jpg"), mode="CMYK", quality=90)
    rgba = np.dstack([_resize(data.chelsea(), 140, 100), np.full((100, 140), 200, np.uint8)])
    _save(rgba, j("f/forest/needleleaf/sun_rgba.png"))
    _save(_resize(data.gravel(), 130, 100).astype(np.uint16) * 257, j("g/grass/sun_16bit.png"))
    _save(_resize(data.astronaut(), 100, 90), j("g/grass/sun_palette.png"), mode="P")
    with open(j("ClassName.txt"), "w") as fh:
        fh.write("".join(c + "\n" for c in SUN_CLASSES))
    return sun


def make_rgba_dir(root: str) -> str:
    """Folder of PNG cut-outs whose alpha is the mask (``RGBA_FILES``); returns root."""
    horse = _horse(150)
    rgb = np.zeros(horse.shape + (3,), np.uint8)
    rgb[:] = (120, 80, 40)
    _save(np.dstack([rgb, horse]), os.path.join(root, "horse.png"))
    coin = data.coins()[20:80, 125:185]
    alpha = cv2.circle(np.zeros((60, 60), np.uint8), (30, 30), 24, 255, -1, lineType=cv2.LINE_AA)
    _save(np.dstack([coin, coin, coin, alpha]), os.path.join(root, "coin.png"))
    moon = _resize(data.moon(), 100, 100)
    _save(np.dstack([moon, _ellipse_mask(100, 100, (50, 50), (40, 30), blur=2.0)]), os.path.join(root, "la_moon.png"))
    pal = Image.fromarray(_resize(data.chelsea(), 90, 60)).convert("P")
    pal.info["transparency"] = 0
    arr = np.asarray(pal).copy()
    arr[:10] = 0  # top rows and the border use palette index 0, made transparent
    arr[:, :8] = 0
    pal2 = Image.fromarray(arr, "P")
    pal2.putpalette(pal.getpalette())
    pal2.save(os.path.join(root, "palette.png"), transparency=0)
    return root
