"""PyTorch datasets over synthcount shards, torchvision style, for counting and
detection models.

Part of the ``[vae]`` side (torch, torchvision): ``synthcount`` itself never imports
torch. (Until 0.2.0's release candidate this lived at ``synthcount.torch``.)

Example::

    import torch
    from torchvision.transforms import v2
    from vae.counting import CountingDataset

    ds = CountingDataset("out/reg", transform=v2.ToDtype(torch.float32, scale=True))
    x, n = ds[0]                      # (3, H, W) float in [0, 1], count
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)

Detection targets follow torchvision's detection datasets: with ``target="detection"``
the target is a dict of tv_tensors, and a joint ``transforms`` (e.g.
``v2.Compose([v2.RandomHorizontalFlip(), v2.RandomResizedCrop(128)])``) moves the
image, boxes, masks and points together.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset as _TorchDataset
    from torchvision import tv_tensors
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise ImportError("vae.counting needs torch and torchvision (the [vae] extra): "
                      "pip install 'synthcount[vae]'") from _e

from synthcount.export._common import objects_of
from synthcount.reader import open_dataset

__all__ = ["CountingDataset", "detection_collate"]

TARGETS = ("count", "detection")


class CountingDataset(_TorchDataset):
    """A synthcount dataset as a map-style torch ``Dataset`` of ``(image, target)``.

    Parameters
    ----------
    path : str
        Dataset folder or shard file.
    transform : callable, optional
        Applied to the image alone (a ``tv_tensors.Image``, uint8 (3, H, W)), as in
        torchvision's ``ImageFolder``.
    target_transform : callable, optional
        Applied to the target alone.
    target : {"count", "detection"}
        ``"count"``: the number of objects N (int). ``"detection"``: a dict with
        ``boxes`` (``tv_tensors.BoundingBoxes`` float32 (N, 4), x0, y0, x1, y1 in pixel
        edges, x1 = last column + 1), ``labels`` (int64 (N,), object id + 1: 0 stays
        free for the background), ``masks`` (``tv_tensors.Mask`` uint8 (N, H, W), the
        visible pixels), ``points`` (``tv_tensors.KeyPoints`` float32 (N, 2), the
        visible-pixel centroid x, y in pixel-index coordinates), ``area`` (int64 (N,)
        visible pixels), ``count`` (int64 scalar tensor) and ``image_id`` (the global
        image index). Needs torchvision >= 0.23 (``KeyPoints``).
    transforms : callable, optional
        Applied to ``(image, target)`` together after ``transform`` and
        ``target_transform`` (torchvision's joint transforms, as in ``CocoDetection``):
        use it for geometric augmentation of detection targets.

    Notes
    -----
    Index with an integer. ``ds[2:5]`` and ``ds[[1, 4]]`` raise ``TypeError``: use
    ``torch.utils.data.Subset(ds, indices)`` for a view, or the reader's
    ``read_images(indices)`` for a batch of arrays. Safe in DataLoader workers (fork
    or spawn): the reader opens shard files per process.
    """

    def __init__(self, path: str, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, target: str = "count",
                 transforms: Optional[Callable] = None) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if target == "detection" and not hasattr(tv_tensors, "KeyPoints"):
            import torchvision

            raise ImportError(f"target='detection' needs torchvision >= 0.23 (tv_tensors.KeyPoints), "
                              f"found {torchvision.__version__}")
        self.path = str(path)
        self.data = open_dataset(self.path)
        self.transform, self.target_transform, self.transforms = transform, target_transform, transforms
        self.target = target

    def __len__(self) -> int:
        return len(self.data)

    @property
    def categories(self) -> List[str]:
        """Name of each label: ``categories[label - 1]`` (object names; ``object_<id>`` for format-1 shards)."""
        from synthcount.export._common import categories

        return categories(self.data)

    def _index(self, i: Any) -> int:
        if isinstance(i, (slice, list, tuple, np.ndarray)) or (torch.is_tensor(i) and i.ndim > 0):
            raise TypeError(f"CountingDataset takes one integer index, got {type(i).__name__}; use "
                            f"torch.utils.data.Subset(ds, indices) for a view, or ds.data.read_images(indices) "
                            f"for a batch of images as a numpy array")
        try:
            return operator.index(i)
        except TypeError:
            raise TypeError(f"CountingDataset index must be an integer, got {type(i).__name__}") from None

    def __getitem__(self, i: Any) -> Tuple[Any, Any]:
        rec = self.data[self._index(i)]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rec["image"].transpose(2, 0, 1))))
        target = int(rec["count"]) if self.target == "count" else self._detection(rec)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @staticmethod
    def _detection(rec: dict) -> dict:
        n, areas, boxes_xywh, points, cats = objects_of(rec)
        h, w = rec["label_map"].shape
        xyxy = boxes_xywh.astype(np.float32)
        xyxy[:, 2:] += xyxy[:, :2]  # x0, y0, w, h -> x0, y0, x1, y1
        labels = np.arange(1, n + 1, dtype=np.uint8)
        masks = (rec["label_map"][None] == labels[:, None, None]).astype(np.uint8)  # (N, H, W)
        return {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(xyxy).reshape(n, 4), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(cats),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "points": tv_tensors.KeyPoints(torch.from_numpy(points.astype(np.float32)).reshape(n, 2),
                                           canvas_size=(h, w)),
            "area": torch.from_numpy(areas),
            "count": torch.tensor(n, dtype=torch.int64),
            "image_id": int(rec["index"]),
        }

    def __repr__(self) -> str:
        return f"CountingDataset({self.path!r}, images={len(self)}, target={self.target!r})"


def detection_collate(batch):
    """``collate_fn`` for detection targets (a varying number of objects per image):
    returns ``(images, targets)`` as two tuples, as torchvision's detection references do."""
    return tuple(zip(*batch))
