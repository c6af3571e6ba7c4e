"""Loading throughput: shards through the vae Dataset vs a folder of JPEG files.

``python -m benchmarks.load [--quick] [--out FILE.json] [--images N] [--repeats R] [--gpu-tflops F]``

One synthcount dataset (161x161, paper scene, t = 0.5) is written as shards (images
uncompressed, and again with lzf) and the same images as JPEG files (quality 95) in
an ImageFolder layout (``root/<count>/<index>.jpg``). Each is read for one shuffled
epoch as float tensors (3, 161, 161) in [0, 1], batch 64, by a torch ``DataLoader``
with 0 and 2 worker processes:

- shards: ``vae.data.ShardImages`` (no augmentation; batched reads through
  ``__getitems__``, one HDF5 call per shard per batch);
- JPEG: ``torchvision.datasets.ImageFolder`` with ``transforms.ToTensor()`` (PIL
  decode + conversion), the plain torchvision way;
- and, to show where the time goes, both delivering uint8 instead of floats:
  :class:`ShardBatches` (one reader call per whole batch, no per-image work, no
  collate copy; the consumer converts on its device) against ImageFolder with
  ``transforms.PILToTensor()``.

Images/s are medians over ``--repeats`` epochs, loader start-up included; the
ratio is shards / JPEG for the same worker count.

GPU-class budget (an estimate, not a measurement; no GPU is used here): the
``paper`` preset's training FLOPs per image are counted (``benchmarks.train``), and
images/s = ``--gpu-tflops`` x 1e12 / FLOPs per image, for the pixel loss and for the
perceptual loss. The default 100 TFLOP/s is an assumption: dense bf16 convolutions
at about a third of an A100's 312 TFLOP/s peak.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

import synthcount
from synthcount import DatasetConfig, preset
from synthcount.generate import generate_dataset
from vae.data import ShardImages

from ._common import emit, format_table, machine, measure, parser, rate
from .train import preset_flops

__all__ = ["write_jpeg_folder", "ShardBatches", "epoch_images", "main"]

BATCH = 64


class ShardBatches(torch.utils.data.Dataset):
    """Whole shuffled batches of uint8 images straight from the shards (item k = batch k).

    The alternative to per-image float tensors: one reader call per batch, no
    per-image conversion, no collate copy; the consumer converts on its device
    (``x.permute(0, 3, 1, 2).float().div_(255)``). Items are ``(uint8 (B, H, W, 3),
    int64 counts (B,))``; the images of a batch are read in index order.
    """

    def __init__(self, path: str, batch_size: int, seed: int = 0):
        self.ds = synthcount.open_dataset(path)
        self.batch_size = int(batch_size)
        self.counts = np.asarray(self.ds.labels["count"], np.int64)
        self.perm = np.random.default_rng(seed).permutation(len(self.ds))

    def __len__(self) -> int:
        return -(-len(self.perm) // self.batch_size)

    def __getitem__(self, k: int):
        idx = np.sort(self.perm[k * self.batch_size:(k + 1) * self.batch_size])
        return torch.from_numpy(self.ds.read_images(idx)), torch.from_numpy(self.counts[idx])


def write_jpeg_folder(dataset: str, root: str, quality: int = 95) -> int:
    """Write every image of a synthcount dataset as ``root/<count>/<index>.jpg``; returns the number."""
    ds = synthcount.open_dataset(dataset)
    counts = ds.labels["count"]
    n = len(ds)
    for c in np.unique(counts):
        os.makedirs(os.path.join(root, str(int(c))), exist_ok=True)
    for s in range(0, n, 256):
        idx = list(range(s, min(n, s + 256)))
        for i, img in zip(idx, ds.read_images(idx)):
            Image.fromarray(img).save(os.path.join(root, str(int(counts[i])), f"{i:07d}.jpg"), quality=quality)
    ds.close()
    return n


def epoch_images(dataset, workers: int, seed: int = 0) -> int:
    """Read one shuffled epoch in batches of 64; returns the number of images delivered."""
    from torch.utils.data import DataLoader

    if isinstance(dataset, ShardBatches):  # already batched and shuffled
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    else:
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(seed))
    n = 0
    for x, _ in loader:
        if x.numel() != x.shape[0] * 3 * 161 * 161:
            raise RuntimeError(f"unexpected batch shape {tuple(x.shape)}")
        n += x.shape[0]
    return n


def main(argv=None) -> None:
    from torchvision import datasets, transforms

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images in the dataset (default 2048, quick 256)")
    p.add_argument("--repeats", type=int, default=None, help="epochs per configuration (default 3, quick 1)")
    p.add_argument("--gpu-tflops", type=float, default=100.0,
                   help="assumed sustained TFLOP/s of a GPU for the paper-preset estimate (default 100)")
    a = p.parse_args(argv)
    mach = machine()  # before the work: the load average says how busy the machine was
    n = a.images or (256 if a.quick else 2048)
    repeats = a.repeats or (1 if a.quick else 3)
    if n < BATCH or repeats < 1 or a.gpu_tflops <= 0:
        p.error(f"--images must be >= {BATCH}, --repeats >= 1, --gpu-tflops > 0; got {n}, {repeats}, {a.gpu_tflops}")
    torch.set_num_threads(1)  # the loaders do the work; keep torch's intra-op pool out of it
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        paths = {}
        for comp in ("none", "lzf"):
            paths[comp] = os.path.join(tmp, f"shards-{comp}")
            generate_dataset(paths[comp], DatasetConfig(scene=preset("paper", min_visible=0.5), num_images=n,
                                                        shard_size=256, compression=comp), progress=False)
        jroot = os.path.join(tmp, "jpeg")
        write_jpeg_folder(paths["none"], jroot)
        jpeg_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(jroot) for f in fs)
        sources = {"shards (none)": ShardImages(paths["none"]), "shards (lzf)": ShardImages(paths["lzf"]),
                   "jpeg folder": datasets.ImageFolder(jroot, transform=transforms.ToTensor()),
                   "shards uint8 batches (none)": ShardBatches(paths["none"], BATCH),
                   "shards uint8 batches (lzf)": ShardBatches(paths["lzf"], BATCH),
                   "jpeg folder uint8": datasets.ImageFolder(jroot, transform=transforms.PILToTensor())}
        for workers in (0, 2):
            for name, ds in sources.items():
                m = measure(lambda: epoch_images(ds, workers), repeats)
                if m["last"] != n:
                    raise RuntimeError(f"{name}: delivered {m['last']} images, expected {n}")
                rows.append({"source": name, "workers": workers, "images": n, "batch": BATCH,
                             "images_per_s": rate(n, m["wall_s"]), "cpu_images_per_s": rate(n, m["cpu_s"]),
                             "wall_runs_s": m["wall_runs"]})
    ratios = []
    pairs = (("shards (none)", "jpeg folder"), ("shards (lzf)", "jpeg folder"),
             ("shards uint8 batches (none)", "jpeg folder uint8"), ("shards uint8 batches (lzf)", "jpeg folder uint8"))
    for workers in (0, 2):
        for name, jname in pairs:
            j = next(r for r in rows if r["source"] == jname and r["workers"] == workers)
            s = next(r for r in rows if r["source"] == name and r["workers"] == workers)
            ratios.append({"workers": workers, "source": name, "versus": jname,
                           "shards_images_per_s": s["images_per_s"],
                           "jpeg_images_per_s": j["images_per_s"], "ratio": rate(s["images_per_s"], j["images_per_s"]),
                           "ratio_cpu": rate(s["cpu_images_per_s"], j["cpu_images_per_s"])})
    gpu = []
    for recon, perc in (("pixel", False), ("perceptual", True)):
        fl = preset_flops("paper", perc)
        need = a.gpu_tflops * 1e12 / fl["training_flops"]
        best = max(r["images_per_s"] for r in rows if r["source"].startswith("shards ("))
        best8 = max(r["images_per_s"] for r in rows if r["source"].startswith("shards uint8"))
        gpu.append({"preset": "paper", "recon": recon, "training_gflops_per_image": fl["training_flops"] / 1e9,
                    "assumed_gpu_tflops": a.gpu_tflops, "estimated_gpu_images_per_s": need,
                    "best_shard_loader_images_per_s": best, "loader_headroom": rate(best, need),
                    "best_uint8_batches_images_per_s": best8, "uint8_headroom": rate(best8, need)})
    res = {"benchmark": "load", "quick": a.quick, "machine": mach,
           "settings": {"images": n, "size": [161, 161], "batch": BATCH, "repeats": repeats,
                        "jpeg_quality": 95, "jpeg_bytes_per_image": jpeg_bytes / n},
           "loaders": rows, "ratios": ratios, "gpu_budget_estimate": gpu}
    tables = [format_table(rows, ["source", "workers", "images", "images_per_s", "cpu_images_per_s"],
                           "one shuffled epoch, batch 64, float (3,161,161) tensors (medians)"),
              format_table(ratios, ["workers", "source", "versus", "shards_images_per_s", "jpeg_images_per_s", "ratio",
                                    "ratio_cpu"], "shards / JPEG folder"),
              format_table(gpu, ["preset", "recon", "training_gflops_per_image", "assumed_gpu_tflops",
                                 "estimated_gpu_images_per_s", "best_shard_loader_images_per_s", "loader_headroom",
                                 "best_uint8_batches_images_per_s", "uint8_headroom"],
                           "paper preset consumption on a GPU-class budget (ESTIMATE from FLOPs, not measured)")]
    emit(res, tables, a.out)


if __name__ == "__main__":
    main()
