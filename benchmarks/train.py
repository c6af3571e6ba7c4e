"""Training throughput of the VAE presets on the current device, data time vs compute time.

``python -m benchmarks.train [--quick] [--out FILE.json] [--presets tiny,paper] [--steps S]
[--batch-tiny B] [--batch-paper B] [--vgg-weights PATH|random] [--threads T] [--device cpu|cuda]``

For each preset: a synthcount dataset (161x161, paper scene, t = 0.5) read through
``vae.data.ShardImages`` with training augmentation, resized to the preset's input
size, a ``DataLoader`` with 0 workers (so that waiting for data and computing do
not overlap and can be timed apart), and the training step of ``vae.train``:
forward, ``VAELoss`` (alpha = 1, beta = 0.03), backward, Adam (lr 0.0015).
Per step, ``data_s`` is the time to get the next batch and ``compute_s`` the time
of the step (synchronised on CUDA). Medians over the timed steps (after one warm-up
step). Reconstruction loss: pixel BCE unless ``--vgg-weights`` is given (no
pretrained VGG-19 exists here; ``random`` times the perceptual path with an
untrained VGG, which costs the same). The result records which was used.

Also reported: parameters, forward FLOPs per image (counted with hooks on every
conv / transposed conv / linear layer, 2 FLOPs per multiply-add) and the training
FLOPs per image (about 3x forward for the VAE, plus 3x the VGG forward for the
perceptual loss), which ``benchmarks.load`` uses for its GPU-class estimate.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from synthcount import DatasetConfig, preset
from synthcount.generate import generate_dataset
from vae.config import model_preset
from vae.data import ShardImages
from vae.losses import VAELoss
from vae.model import VAE, num_parameters

from ._common import emit, format_table, machine, parser, peak_rss_mb, rate, reset_peak

__all__ = ["forward_flops", "training_flops_per_image", "preset_flops", "time_training", "main"]


def forward_flops(module: nn.Module, x: torch.Tensor) -> float:
    """FLOPs (2 per multiply-add) of conv, transposed-conv and linear layers in one forward, per image."""
    total = [0.0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total[0] += 2.0 * out.numel() * k
        elif isinstance(m, nn.ConvTranspose2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            total[0] += 2.0 * inp[0].numel() * k
        elif isinstance(m, nn.Linear):
            total[0] += 2.0 * out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d,
                                                                                    nn.Linear))]
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hs:
            h.remove()
        module.train(was)
    return total[0] / x.shape[0]


def training_flops_per_image(model: nn.Module, image_size, vgg: Optional[nn.Module] = None) -> Dict[str, float]:
    """Forward and training FLOPs per image of a VAE (training ~ 3x forward).

    With a ``vgg`` (perceptual loss), the VGG-19 up to relu3_1 runs forward on the
    input and on the reconstruction and backward (input gradient only) through the
    latter: about 3x one VGG forward.
    """
    x = torch.rand(1, 3, *image_size, device=next(model.parameters()).device)
    vae_fwd = forward_flops(model, x)
    vgg_fwd = forward_flops(vgg, x) if vgg is not None else 0.0
    return {"vae_forward_flops": vae_fwd, "vgg_forward_flops": vgg_fwd,
            "training_flops": 3.0 * vae_fwd + 3.0 * vgg_fwd}


def preset_flops(preset_name: str, perceptual: bool) -> Dict[str, float]:
    """:func:`training_flops_per_image` of a freshly built preset (random VGG if ``perceptual``)."""
    cfg = model_preset(preset_name)
    vgg = None
    if perceptual:
        from vae.vgg import VGGFeatures

        vgg = VGGFeatures(None)
    return training_flops_per_image(VAE(cfg), cfg.image_size, vgg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(dataset: str, preset_name: str, *, batch_size: int, steps: int, vgg_weights: Optional[str],
                  device: torch.device, seed: int = 0) -> Dict[str, object]:
    """Time ``steps`` training steps (after one warm-up step) of ``preset_name`` on ``dataset``."""
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    reset_peak()
    cfg = model_preset(preset_name)
    ds = ShardImages(dataset, train=True, image_size=cfg.image_size, seed=seed)
    if len(ds) < batch_size * (steps + 1):
        raise ValueError(f"dataset has {len(ds)} images, need {batch_size * (steps + 1)}")
    vgg = None
    if vgg_weights is not None:
        from vae.vgg import build_vgg, resolve_vgg_weights

        vgg = build_vgg(resolve_vgg_weights(vgg_weights))
    recon = "perceptual" if vgg is not None else "pixel"
    loss_fn = VAELoss(recon, "bce", 1.0, 0.03, "batch-mean", vgg).to(device)
    model = VAE(cfg).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.0015)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    it = iter(loader)
    data_s: List[float] = []
    compute_s: List[float] = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        x, _ = next(it)
        x = x.to(device)
        _sync(device)
        t1 = time.perf_counter()
        recon_x, mu, sigma = model(x)
        loss = loss_fn(x, recon_x, mu, sigma)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        if not torch.isfinite(loss):
            raise RuntimeError(f"{preset_name}: loss not finite at step {step}: {loss.item()}")
        if step > 0:  # step 0 warms up allocators and kernels
            data_s.append(t1 - t0)
            compute_s.append(t2 - t1)
    d, c = statistics.median(data_s), statistics.median(compute_s)
    out = {"preset": preset_name, "device": str(device), "threads": torch.get_num_threads(),
           "batch_size": batch_size, "steps": steps, "recon": recon,
           "vgg_weights": vgg_weights if vgg_weights is not None else "none (pixel BCE)",
           "image_size": list(cfg.image_size), "parameters": num_parameters(model),
           "data_s_per_step": d, "compute_s_per_step": c,
           "images_per_s": rate(batch_size, d + c), "compute_images_per_s": rate(batch_size, c),
           "data_images_per_s": rate(batch_size, d), "data_share": d / (d + c) if d + c > 0 else 0.0,
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    out.update(training_flops_per_image(model, cfg.image_size, vgg))
    out["achieved_gflops"] = out["training_flops"] * out["compute_images_per_s"] / 1e9
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,paper", help="comma-separated VAE presets (default tiny,paper)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per preset (default 20, paper 5; quick 3, paper 1)")
    p.add_argument("--batch-tiny", type=int, default=None, help="batch size for tiny (default 64, quick 16)")
    p.add_argument("--batch-paper", type=int, default=None, help="batch size for paper (default 8, quick 2)")
    p.add_argument("--vgg-weights", default=None, help="VGG-19 weights file or 'random' (default: pixel loss)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = p.parse_args(argv)
    mach = machine()  # before the work: the load average says how busy the machine was
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    presets = [s.strip() for s in a.presets.split(",") if s.strip()]
    for s in presets:
        try:
            model_preset(s)
        except ValueError as e:
            p.error(f"--presets: {e}")
    # Quick: the paper preset (~140M parameters, ~23 GFLOP per training image) gets one timed step.
    steps_of = lambda s: a.steps or ((1 if s == "paper" else 3) if a.quick else (5 if s == "paper" else 20))  # noqa: E731
    batches = {"tiny": a.batch_tiny or (16 if a.quick else 64), "paper": a.batch_paper or (2 if a.quick else 8)}
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    need = max(batches.get(s, 16) * (steps_of(s) + 1) for s in presets)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        path = os.path.join(tmp, "ds")
        generate_dataset(path, DatasetConfig(scene=preset("paper", min_visible=0.5), num_images=max(need, 32),
                                             shard_size=256), progress=False)
        for s in presets:
            rows.append(time_training(path, s, batch_size=batches.get(s, 16), steps=steps_of(s),
                                      vgg_weights=a.vgg_weights, device=device))
    res = {"benchmark": "train", "quick": a.quick, "machine": mach,
           "settings": {"dataset": "synthcount 161x161 paper scene t=0.5, augmented", "loader_workers": 0,
                        "optimizer": "Adam lr 0.0015", "loss": "alpha*KL + 0.03*rec"},
           "presets": rows}
    cols = ["preset", "device", "threads", "batch_size", "recon", "images_per_s", "compute_images_per_s",
            "data_images_per_s", "data_share", "training_flops", "achieved_gflops", "parameters", "peak_rss_mb"]
    emit(res, [format_table(rows, cols, "VAE training throughput (medians per step)")], a.out)


if __name__ == "__main__":
    main()
