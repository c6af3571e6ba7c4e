"""Asset packs: decoded, cropped, downscaled objects and backgrounds held in memory.

A pack is what the compositor reads: it never decodes an image file per composite.
``synthcount prepare`` writes packs to HDF5 (see ``save_pack`` / ``load_pack``);
small folders are prepared in memory on the fly (``synthcount.sources``). A pack's
``objects`` / ``backgrounds`` may instead be read on demand (``synthcount.stream``)
for sources larger than memory.

Objects are RGB ``uint8 (h, w, 3)`` cut-outs cropped to their mask's bounding box
with an alpha ``uint8 (h, w)`` in 0..255 (soft edges kept). Backgrounds are RGB
``uint8 (h, w, 3)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["ObjectAsset", "AssetPack", "save_pack", "load_pack", "pack_decoded_bytes", "PACK_FORMAT_VERSION"]

# 2: names as string datasets, objects' footprints, the fingerprint stored, written
# incrementally (synthcount.stream.PackWriter). Format 1 packs are still read.
PACK_FORMAT_VERSION = 2


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
        self._fingerprint: Optional[str] = None
        if _lazy(self.backgrounds):
            return  # streamed (synthcount.stream): items are checked as they are loaded
        self.backgrounds = [np.ascontiguousarray(b) for b in self.backgrounds]
        for b, n in zip(self.backgrounds, self.background_names):
            if b.dtype != np.uint8 or b.ndim != 3 or b.shape[2] != 3:
                raise ValueError(f"background {n!r}: must be uint8 (h, w, 3), got {b.dtype} {b.shape}")

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


def _lazy(seq) -> bool:
    """A sequence read on demand (``synthcount.stream.LazyAssets``)."""
    return hasattr(seq, "load") and hasattr(seq, "meta")


def save_pack(pack: AssetPack, path: str, compression: str = "none") -> None:
    """Write ``pack`` to an HDF5 file at ``path`` (written to a temporary name first).

    Pixels are stored uncompressed by default (``compression="lzf"`` to compress):
    decoded photos hardly shrink, and streamed packs are read per image.

    Raises ``synthcount._io.WriteError`` (naming ``path``) when the file cannot be
    written; ``path`` is then left as it was.

    Layout (format 2, see ``synthcount.stream.PackWriter``): ``objects/rgb`` and
    ``objects/alpha`` hold every object's pixels concatenated as flat uint8 arrays,
    with shapes in ``objects/rgb_shapes``; ``backgrounds/rgb`` likewise; names as
    string datasets; ``skipped`` as JSON; the fingerprint as an attribute.
    """
    from ._io import atomic_path
    from .stream import PackWriter

    with atomic_path(path) as tmp:
        w = PackWriter(tmp, {"saved": True}, compression=compression)
        try:
            for o in pack.objects:
                w.add_object(o)
                if w.buffered_bytes > 64 << 20:
                    w.checkpoint(0, [])
            for b, n in zip(pack.backgrounds, pack.background_names):
                w.add_background(b, n)
                if w.buffered_bytes > 64 << 20:
                    w.checkpoint(0, [])
            w.finish(pack.skipped, pack.source)
        finally:
            w.close()


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
    """Read an asset pack written by ``save_pack`` or ``prepare`` into memory.

    Raises
    ------
    ValueError
        If ``path`` is not a synthcount asset pack.
    """
    from .stream import PackReader

    r = PackReader(path)
    objects = [r.object(i) for i in range(len(r.object_names))]
    bgs = [r.background(i) for i in range(len(r.background_names))]
    if r._f is not None:
        r._f.close()
    pack = AssetPack(objects, bgs, list(r.background_names), r.skipped, r.source)
    if r.stored_fingerprint is not None:
        pack._fingerprint = r.stored_fingerprint  # hashed by the writer over these very items
    return pack
