"""Asset packs: decoded, cropped, downscaled objects and backgrounds held in memory.

A pack is what the compositor reads: it never decodes an image file per composite.
``synthcount prepare`` writes packs to HDF5 (see ``save_pack`` / ``load_pack``);
small folders are prepared in memory on the fly (``synthcount.sources``).

Objects are RGB ``uint8 (h, w, 3)`` cut-outs cropped to their mask's bounding box
with an alpha ``uint8 (h, w)`` in 0..255 (soft edges kept). Backgrounds are RGB
``uint8 (h, w, 3)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ObjectAsset", "AssetPack", "save_pack", "load_pack", "pack_decoded_bytes", "PACK_FORMAT_VERSION"]

PACK_FORMAT_VERSION = 1


def _name_bytes(name: str) -> bytes:
    """A name's bytes for hashing; names from file systems may hold undecodable bytes
    (as surrogate escapes), which plain ``str.encode`` refuses."""
    return name.encode("utf-8", "surrogateescape")


@dataclass
class ObjectAsset:
    """One object cut-out.

    Attributes
    ----------
    rgb : ndarray, uint8, shape (h, w, 3)
    alpha : ndarray, uint8, shape (h, w), 0..255
    name : str
        Where it came from (relative path or built-in name).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"object {self.name!r}: rgb must be uint8 (h, w, 3), "
                             f"got {self.rgb.dtype} {self.rgb.shape}")
        if self.alpha.dtype != np.uint8 or self.alpha.shape != self.rgb.shape[:2]:
            raise ValueError(f"object {self.name!r}: alpha must be uint8 {self.rgb.shape[:2]}, "
                             f"got {self.alpha.dtype} {self.alpha.shape}")
        # C-contiguous arrays keep cv2 calls copy-free on the hot path.
        self.rgb = np.ascontiguousarray(self.rgb)
        self.alpha = np.ascontiguousarray(self.alpha)


@dataclass
class AssetPack:
    """Objects and/or backgrounds ready for composition.

    Attributes
    ----------
    objects : list of ObjectAsset
    backgrounds : list of ndarray, uint8, shape (h, w, 3)
    background_names : list of str
    skipped : list of (str, str)
        Source files that were skipped and why.
    source : str
        Human-readable description of where the pack came from.
    """

    objects: List[ObjectAsset] = field(default_factory=list)
    backgrounds: List[np.ndarray] = field(default_factory=list)
    background_names: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.background_names) != len(self.backgrounds):
            raise ValueError("background_names and backgrounds differ in length")
        self.backgrounds = [np.ascontiguousarray(b) for b in self.backgrounds]
        for b, n in zip(self.backgrounds, self.background_names):
            if b.dtype != np.uint8 or b.ndim != 3 or b.shape[2] != 3:
                raise ValueError(f"background {n!r}: must be uint8 (h, w, 3), got {b.dtype} {b.shape}")
        self._fingerprint: Optional[str] = None

    def fingerprint(self) -> str:
        """sha256 over every pixel and name: the identity of the pack's content."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for o in self.objects:
                h.update(_name_bytes(o.name) + b"\0" + np.asarray(o.rgb.shape, np.int64).tobytes())
                h.update(o.rgb.tobytes())
                h.update(o.alpha.tobytes())
            h.update(b"--backgrounds--")
            for b, n in zip(self.backgrounds, self.background_names):
                h.update(_name_bytes(n) + b"\0" + np.asarray(b.shape, np.int64).tobytes())
                h.update(b.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def summary(self) -> dict:
        return {
            "source": self.source,
            "num_objects": len(self.objects),
            "num_backgrounds": len(self.backgrounds),
            "num_skipped": len(self.skipped),
            "fingerprint": self.fingerprint(),
        }


def _flatten(arrays: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    if not arrays:  # reshape(0, -1) is ambiguous; an empty side still has 3-column shapes
        return np.zeros(0, np.uint8), np.zeros((0, 3), np.int64)
    shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(len(arrays), -1)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.uint8)
    return flat, shapes


def _unflatten(flat: np.ndarray, shapes: np.ndarray) -> List[np.ndarray]:
    out, pos = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[pos:pos + n].reshape(tuple(int(v) for v in s)))
        pos += n
    return out


def save_pack(pack: AssetPack, path: str, compression: str = "lzf") -> None:
    """Write ``pack`` to an HDF5 file at ``path`` (written to a temporary name first).

    Raises ``synthcount._io.WriteError`` (naming ``path``) when the file cannot be
    written; ``path`` is then left as it was.

    Layout: ``objects/rgb`` and ``objects/alpha`` hold every object's pixels
    concatenated as flat uint8 arrays, with shapes in ``objects/rgb_shapes``;
    ``backgrounds/rgb`` likewise; names as JSON attributes; ``skipped`` as JSON.
    """
    import io

    import h5py

    from ._io import atomic_write

    comp = None if compression == "none" else compression
    # Built in memory, then written atomically with plain file I/O: a full disk is one
    # OSError naming the file (HDF5 itself can crash on it), and a pack file on disk
    # is always complete.
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["pack_format_version"] = PACK_FORMAT_VERSION
        f.attrs["source"] = pack.source
        f.attrs["skipped"] = json.dumps(pack.skipped)
        g = f.create_group("objects")
        rgb, rgb_shapes = _flatten([o.rgb for o in pack.objects])
        al, _ = _flatten([o.alpha for o in pack.objects])
        g.create_dataset("rgb", data=rgb, compression=comp, chunks=True if rgb.size else None)
        g.create_dataset("alpha", data=al, compression=comp, chunks=True if al.size else None)
        g.create_dataset("rgb_shapes", data=rgb_shapes)
        g.attrs["names"] = json.dumps([o.name for o in pack.objects])
        g = f.create_group("backgrounds")
        bg, bg_shapes = _flatten(pack.backgrounds)
        g.create_dataset("rgb", data=bg, compression=comp, chunks=True if bg.size else None)
        g.create_dataset("rgb_shapes", data=bg_shapes)
        g.attrs["names"] = json.dumps(list(pack.background_names))
    with atomic_write(path, "wb") as out:
        out.write(buf.getbuffer())


def pack_decoded_bytes(path: str) -> Tuple[int, int]:
    """(assets, bytes) of the pack at ``path`` once loaded, from the stored shapes alone
    (no pixels are read); (0, 0) when the file is not a pack."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            n = total = 0
            for group, channels in (("objects", 4), ("backgrounds", 3)):  # objects: RGB + alpha
                if f"{group}/rgb_shapes" in f:
                    shapes = f[f"{group}/rgb_shapes"][()].reshape(-1, 3).astype(np.int64)
                    n += len(shapes)
                    total += int(shapes[:, 0] @ shapes[:, 1]) * channels
            return n, total
    except (OSError, KeyError, ValueError):
        return 0, 0


def load_pack(path: str) -> AssetPack:
    """Read an asset pack written by ``save_pack``.

    Raises
    ------
    ValueError
        If ``path`` is not a synthcount asset pack.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 asset pack ({e})") from None
    with f:
        if "pack_format_version" not in f.attrs:
            raise ValueError(f"{path}: not a synthcount asset pack (no pack_format_version attribute)")
        version = int(f.attrs["pack_format_version"])
        if version > PACK_FORMAT_VERSION:
            raise ValueError(f"{path}: pack format {version} is newer than this synthcount ({PACK_FORMAT_VERSION})")
        g = f["objects"]
        shapes = g["rgb_shapes"][()].reshape(-1, 3)
        rgbs = _unflatten(g["rgb"][()], shapes)
        alphas = _unflatten(g["alpha"][()], shapes[:, :2])
        names = json.loads(g.attrs["names"])
        objects = [ObjectAsset(r, a, n) for r, a, n in zip(rgbs, alphas, names)]
        g = f["backgrounds"]
        bgs = _unflatten(g["rgb"][()], g["rgb_shapes"][()].reshape(-1, 3))
        bg_names = json.loads(g.attrs["names"])
        skipped = [tuple(s) for s in json.loads(f.attrs.get("skipped", "[]"))]
        source = str(f.attrs.get("source", path))
    return AssetPack(objects, bgs, bg_names, skipped, source)
