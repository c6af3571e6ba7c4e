"""One-call GPU check of the ``paper`` VAE preset (161x161, perceptual loss, random VGG-19).

``python -m benchmarks.gpu [--out FILE.json] [--steps 300] [--images 4000] [--batch-size 32]
[--amp-steps 20] [--ddp-epochs 2] [--no-ddp] [--device cuda|cpu] [--quick]``  (or ``make gpu-check``)

On a CUDA machine, in one run of a few minutes:

1. generates a fresh synthcount set (paper scene preset, 161x161, t = 0.5, ``--images``
   images, one worker per usable core) in a temporary folder;
2. trains the ``paper`` preset as ``vae.train`` does (``ShardImages`` with training
   augmentation, ``DataLoader`` with ``vae.train.default_workers()`` workers and pinned
   memory, Adam lr 0.0015, alpha KL + 0.03 perceptual, bf16 autocast and channels_last,
   one CUDA synchronise per step) for ``--steps`` steps and reports images/s (median
   over the steps after warm-up), peak GPU memory (allocated and reserved) and the
   data-wait fraction (time blocked on the DataLoader / total time of the timed steps);
3. bf16-vs-fp32 agreement: from the same initial weights, on the same ``--amp-steps``
   batches, trains once in fp32 (TF32 off) and once under bf16 autocast and gives the
   relative difference of the loss per step;
4. DDP: ``torchrun --standalone --nproc_per_node=N -m cli.main vae train`` over the N
   visible GPUs for ``--ddp-epochs`` epochs on the same set; images/s of its last epoch
   from ``metrics.csv``. With one GPU ``vae.train`` does not wrap the model in DDP
   (WORLD_SIZE 1), which the JSON says; a failure is recorded with its reason;
5. projects the paper's 140 epochs x 80,000 images at the measured rate.

VGG-19 weights are random (``vgg_weights="random"``): the same cost as the pretrained
network, so fine for speed, recorded as ``"random (speed check only)"``.

Without CUDA (and no ``--device cpu``) it exits at once with code 2 (README "Exit
codes": wrong usage or input, nothing written) and one line on stderr.
``--device cpu`` is a logic smoke test only (CI): the same code path with tiny sizes
(64x64, 3 steps, 64 images, batch 4 unless given), DDP skipped; its figures mean nothing.
``--quick`` on CUDA takes the same small sizes with batch 32 (a seconds-long sanity run;
``--size 64`` skips the torchrun run, which trains at 161 only).
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from ._common import machine, parser

__all__ = ["main", "NO_CUDA_MESSAGE", "PAPER_EPOCHS", "PAPER_IMAGES"]

NO_CUDA_MESSAGE = ("benchmarks.gpu: no CUDA device (torch.cuda.is_available() is False); this check needs a GPU "
                   "(--device cpu runs a logic smoke test only)")
PAPER_EPOCHS = 140
PAPER_IMAGES = 80_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(image_size, device, seed: int):
    """Model, loss (perceptual, random VGG) and the model's initial weights, as vae.train builds them."""
    import torch

    from vae.config import model_preset
    from vae.losses import VAELoss
    from vae.model import VAE
    from vae.vgg import build_vgg, resolve_vgg_weights

    torch.manual_seed(seed)
    cfg = model_preset("paper", image_size=tuple(image_size))
    model = VAE(cfg)
    loss_fn = VAELoss("perceptual", "bce", 1.0, 0.03, "batch-mean", build_vgg(resolve_vgg_weights("random")))
    model.to(device)
    loss_fn.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return cfg, model, loss_fn, init


def _to_device(x, device):
    import torch

    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _step(model, loss_fn, opt, x, amp: bool, device) -> float:
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        recon, mu, sigma = model(x)
        loss = loss_fn(x, recon, mu, sigma)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def throughput(dataset: str, image_size, *, batch_size: int, steps: int, warmup: int, workers: int, device,
               seed: int = 0) -> Dict[str, Any]:
    """``steps`` training steps after ``warmup``; per step the DataLoader wait and the (synchronised) compute."""
    import torch
    from torch.utils.data import DataLoader

    from vae.data import ShardImages
    from vae.model import num_parameters

    cfg, model, loss_fn, _ = _build(image_size, device, seed)
    model.train()
    ds = ShardImages(dataset, train=True, image_size=cfg.image_size, seed=seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(seed))
    if len(loader) < 1:
        raise ValueError(f"{len(ds)} images make no batch of {batch_size}")
    opt = torch.optim.Adam(model.parameters(), lr=0.0015)
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    it = iter(loader)
    data_s: List[float] = []
    compute_s: List[float] = []
    losses: List[float] = []
    t_start = time.perf_counter()
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            x, _ = next(it)
        except StopIteration:  # next epoch
            it = iter(loader)
            x, _ = next(it)
        x = _to_device(x, device)
        t1 = time.perf_counter()
        loss = _step(model, loss_fn, opt, x, amp, device)
        _sync(device)
        t2 = time.perf_counter()
        lv = float(loss.detach())
        if lv != lv or lv in (float("inf"), float("-inf")):
            raise RuntimeError(f"loss not finite at step {step}: {lv}")
        losses.append(lv)
        if step >= warmup:
            data_s.append(t1 - t0)
            compute_s.append(t2 - t1)
        if (step + 1) % 50 == 0 or step + 1 == warmup + steps:
            _log(f"throughput step {step + 1}/{warmup + steps}, loss {lv:.4g}")
    total = sum(data_s) + sum(compute_s)
    step_s = [d + c for d, c in zip(data_s, compute_s)]
    out: Dict[str, Any] = {
        "preset": "paper", "image_size": list(cfg.image_size), "batch_size": batch_size, "loader_workers": workers,
        "steps_timed": steps, "warmup_steps": warmup, "parameters": num_parameters(model),
        "autocast": "bf16" if amp else "none (fp32)", "channels_last": device.type == "cuda",
        "images_per_s": batch_size / statistics.median(step_s),
        "images_per_s_mean": batch_size * steps / total if total > 0 else 0.0,
        "compute_images_per_s": batch_size / statistics.median(compute_s),
        "median_step_s": statistics.median(step_s), "median_data_wait_s": statistics.median(data_s),
        "median_compute_s": statistics.median(compute_s),
        "data_wait_fraction": sum(data_s) / total if total > 0 else 0.0,
        "wall_s": time.perf_counter() - t_start, "loss_first": losses[0], "loss_last": losses[-1],
    }
    if device.type == "cuda":
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
        out["gpu_total_mib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**20, 1)
    else:
        out["peak_gpu_allocated_mib"] = out["peak_gpu_reserved_mib"] = None
    del it, loader
    return out


def amp_agreement(dataset: str, image_size, *, batch_size: int, steps: int, device, seed: int = 0) -> Dict[str, Any]:
    """Same initial weights, same batches: the loss per step in fp32 (TF32 off) and under bf16 autocast."""
    import torch

    from vae.data import ShardImages

    cfg, model, loss_fn, init = _build(image_size, device, seed)
    model.train()
    ds = ShardImages(dataset, train=False, image_size=cfg.image_size)  # no augmentation: fixed batches
    n = min(len(ds), batch_size * steps)
    if n < batch_size:
        raise ValueError(f"{len(ds)} images make no batch of {batch_size}")
    xs = [torch.stack([ds[i][0] for i in range(s, s + batch_size)]) for s in range(0, n - batch_size + 1, batch_size)]
    xs = [_to_device(x, device) for x in xs]
    # The same reparameterisation noise in both runs, drawn once in float32 (randn_like under
    # autocast could draw in another dtype): z = mu + sigma * eps with eps fixed per step.
    gen = torch.Generator().manual_seed(seed + 1)
    eps = [torch.randn(x.shape[0], cfg.latent_dim, generator=gen).to(device) for x in xs]
    current = [0]
    model.reparameterize = lambda mu, sigma: mu + sigma * eps[current[0]].to(sigma.dtype)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    runs: Dict[str, List[float]] = {}
    try:
        for name, amp in (("fp32", False), ("bf16", True)):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            model.load_state_dict(init)
            opt = torch.optim.Adam(model.parameters(), lr=0.0015)
            t0 = time.perf_counter()
            runs[name] = []
            for i, x in enumerate(xs):
                current[0] = i
                runs[name].append(float(_step(model, loss_fn, opt, x, amp, device).detach()))
            _sync(device)
            _log(f"amp check: {name} {len(xs)} steps in {time.perf_counter() - t0:.1f} s")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    rel = [abs(b - a) / max(abs(a), 1e-12) for a, b in zip(runs["fp32"], runs["bf16"])]
    return {"steps": len(xs), "batch_size": batch_size, "fp32_reference": "float32, TF32 off (matmul and cuDNN)",
            "autocast_dtype": "bfloat16", "same_init_same_batches_same_noise": True,
            "loss_fp32": runs["fp32"], "loss_bf16": runs["bf16"], "relative_difference": rel,
            "relative_difference_step1": rel[0], "relative_difference_max": max(rel),
            "relative_difference_median": statistics.median(rel)}


def ddp_run(dataset: str, tmp: str, *, gpus: int, batch_size: int, epochs: int, workers: int,
            timeout_s: float, device: str = "cuda", image_size: Optional[int] = None) -> Dict[str, Any]:
    """``torchrun`` over ``gpus`` processes of the real ``synthcount vae train``; images/s of its last epoch.

    ``device`` / ``image_size`` other than cuda / 161 only to check the command itself on a CPU.
    """
    run_dir = os.path.join(tmp, "ddp-run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "cli.main", "vae", "train", dataset, run_dir, "--preset", "paper", "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--vgg-weights", "random", "--device", device, "--workers", str(workers),
           "--recon-every", "0", "--quiet"] + (["--image-size", str(image_size)] if image_size else [])
    shown = "torchrun " + " ".join(cmd[3:])
    out: Dict[str, Any] = {"command": shown, "nproc_per_node": gpus, "batch_size_per_process": batch_size,
                           "epochs": epochs, "loader_workers_per_process": workers,
                           "ddp_wrapped": gpus > 1,
                           "note": None if gpus > 1 else ("one visible GPU: vae.train wraps the model in DDP only "
                                                          "when WORLD_SIZE > 1, so this is the torchrun launch "
                                                          "path without DistributedDataParallel")}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    _log(f"DDP: {shown}")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out.update(status="skipped", reason=f"torchrun did not finish within {timeout_s:.0f} s")
        return out
    out["wall_s"] = time.perf_counter() - t0
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or "").strip().splitlines() if ln.strip()]
        out.update(status="skipped", reason=f"torchrun exit {p.returncode}: " + (lines[-1] if lines else "no output"),
                   stderr_tail=lines[-15:])
        return out
    try:
        with open(os.path.join(run_dir, "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        out.update(status="skipped", reason=f"no metrics.csv after torchrun: {e}")
        return out
    out.update(status="ok", epochs_images_per_s=[float(r["images_per_s"]) for r in rows],
               images_per_s=float(rows[-1]["images_per_s"]),
               last_epoch_data_s=float(rows[-1]["data_s"]), last_epoch_compute_s=float(rows[-1]["compute_s"]),
               last_epoch_data_wait_fraction=float(rows[-1]["data_s"]) / max(
                   float(rows[-1]["data_s"]) + float(rows[-1]["compute_s"]), 1e-9),
               loss_last=float(rows[-1]["loss"]), test_loss_last=float(rows[-1]["test_loss"]))
    return out


def projection(images_per_s: Optional[float]) -> Dict[str, Any]:
    if not images_per_s:
        return {"epochs": PAPER_EPOCHS, "images_per_epoch": PAPER_IMAGES, "images_per_s": None, "hours": None}
    s = PAPER_EPOCHS * PAPER_IMAGES / images_per_s
    return {"epochs": PAPER_EPOCHS, "images_per_epoch": PAPER_IMAGES, "images_per_s": images_per_s,
            "seconds": s, "hours": s / 3600.0, "note": "training steps only: no evaluation or checkpoints"}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: logic smoke test only (tiny sizes, DDP skipped), figures meaningless")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 300; cpu/quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 20; cpu/quick 1)")
    p.add_argument("--images", type=int, default=None, help="images generated (default 4000; cpu/quick 64)")
    p.add_argument("--size", type=int, default=None,
                   help="image side (default 161, the paper's; cpu/quick 64); not 161: not the paper preset")
    p.add_argument("--batch-size", type=int, default=None, help="per step (default 32, as TrainConfig; cpu 4)")
    p.add_argument("--amp-steps", type=int, default=None, help="bf16-vs-fp32 steps (default 20; cpu/quick 2)")
    p.add_argument("--ddp-epochs", type=int, default=2, help="epochs of the torchrun run (default 2)")
    p.add_argument("--ddp-timeout", type=float, default=240.0, help="seconds allowed to the torchrun run")
    p.add_argument("--no-ddp", action="store_true", help="skip the torchrun run")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (default vae.train.default_workers(): CPUs - 1, at most 8)")
    a = p.parse_args(argv)

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        sys.exit(2)
    small = a.quick or a.device == "cpu"
    steps = a.steps if a.steps is not None else (3 if small else 300)
    warmup = a.warmup if a.warmup is not None else (1 if small else 20)
    images = a.images if a.images is not None else (64 if small else 4000)
    size = a.size if a.size is not None else (64 if small else 161)
    batch = a.batch_size if a.batch_size is not None else (4 if a.device == "cpu" else 32)
    amp_steps = a.amp_steps if a.amp_steps is not None else (2 if small else 20)
    for name, v, lo in (("--steps", steps, 1), ("--warmup", warmup, 0), ("--images", images, 2),
                        ("--batch-size", batch, 2), ("--amp-steps", amp_steps, 1), ("--ddp-epochs", a.ddp_epochs, 1)):
        if v < lo:
            p.error(f"{name} must be >= {lo}, got {v}")
    if images < batch:
        p.error(f"--images ({images}) must be >= --batch-size ({batch})")

    from synthcount import DatasetConfig, preset
    from synthcount._io import write_json_atomic
    from synthcount._system import usable_cores
    from synthcount.generate import generate_dataset
    from vae.config import model_preset
    from vae.train import default_workers

    try:
        model_preset("paper", image_size=(size, size))
    except ValueError as e:
        p.error(f"--size {size}: {e}")
    t_all = time.perf_counter()
    mach = machine()
    device = torch.device(a.device)
    cores = usable_cores()
    workers = a.workers if a.workers is not None else (0 if a.device == "cpu" else default_workers())
    dev: Dict[str, Any] = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        dev.update(name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
                   capability=f"{props.major}.{props.minor}", total_memory_mib=round(props.total_memory / 2**20, 1),
                   bf16_supported=torch.cuda.is_bf16_supported())
        torch.backends.cudnn.benchmark = True
    else:
        dev.update(name="cpu (logic smoke test only: figures meaningless)", count=0)
    _log(f"device {dev['name']}; torch {dev['torch']}, CUDA {dev['cuda']}; {cores} usable cores")
    res: Dict[str, Any] = {"benchmark": "gpu", "quick": bool(a.quick), "smoke_test_only": device.type != "cuda",
                           "machine": mach, "device": dev,
                           "settings": {"preset": "paper", "image_size": [size, size], "paper_size": size == 161,
                                        "recon": "perceptual", "vgg_weights": "random (speed check only)",
                                        "loss": "1.0 * KL + 0.03 * perceptual (batch-mean)",
                                        "optimizer": "Adam lr 0.0015", "batch_size": batch, "steps": steps,
                                        "warmup_steps": warmup, "images": images, "amp_steps": amp_steps,
                                        "loader_workers": workers, "generator_workers": cores,
                                        "cudnn_benchmark": device.type == "cuda"}}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        ds = os.path.join(tmp, "ds")
        _log(f"generating {images} images (paper scene, 161x161, t = 0.5) with {cores} workers")
        t0 = time.perf_counter()
        generate_dataset(ds, DatasetConfig(scene=preset("paper", min_visible=0.5), num_images=images,
                                           shard_size=max(16, min(500, -(-images // (2 * cores))))),
                         workers=max(1, min(cores, 16)), progress=False)
        g = time.perf_counter() - t0
        res["generation"] = {"images": images, "seconds": g, "images_per_s": images / g if g > 0 else None,
                             "workers": max(1, min(cores, 16)), "scene": "paper preset, min_visible 0.5, 161x161"}
        _log(f"generated in {g:.1f} s; training throughput: {warmup} warm-up + {steps} timed steps of {batch}")
        res["throughput"] = throughput(ds, (size, size), batch_size=batch, steps=steps, warmup=warmup,
                                       workers=workers, device=device)
        tp = res["throughput"]
        _log(f"{tp['images_per_s']:.1f} img/s (median), data wait {100 * tp['data_wait_fraction']:.1f}%, "
             f"peak allocated {tp['peak_gpu_allocated_mib']} MiB")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _log(f"bf16 vs fp32: {amp_steps} steps each from the same weights")
        res["amp_agreement"] = amp_agreement(ds, (size, size), batch_size=batch, steps=amp_steps, device=device)
        _log(f"bf16 vs fp32 relative loss difference: max {res['amp_agreement']['relative_difference_max']:.2e}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if a.no_ddp:
            res["ddp"] = {"status": "skipped", "reason": "--no-ddp"}
        elif device.type != "cuda":
            res["ddp"] = {"status": "skipped", "reason": "--device cpu: logic smoke test, no torchrun run"}
        elif size != 161:
            res["ddp"] = {"status": "skipped", "reason": f"--size {size}: the torchrun run trains the paper preset "
                                                         "at 161x161 only"}
        else:
            n = torch.cuda.device_count()
            res["ddp"] = ddp_run(ds, tmp, gpus=n, batch_size=batch, epochs=a.ddp_epochs,
                                 workers=max(1, min(8, (cores - 1) // n)) if a.workers is None else a.workers,
                                 timeout_s=a.ddp_timeout)
            msg = (f"{res['ddp']['images_per_s']:.1f} img/s over {n} process(es)" if res["ddp"]["status"] == "ok"
                   else f"skipped: {res['ddp']['reason']}")
            _log(f"DDP: {msg}")
    res["projection_paper_140x80000"] = projection(tp["images_per_s"])
    if res["ddp"].get("status") == "ok":
        res["projection_paper_140x80000_ddp"] = projection(res["ddp"]["images_per_s"])
    res["total_wall_s"] = time.perf_counter() - t_all
    pr = res["projection_paper_140x80000"]
    _log(f"projected 140 x 80,000 images: {pr['hours']:.2f} h at {pr['images_per_s']:.1f} img/s; "
         f"total {res['total_wall_s']:.0f} s")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        write_json_atomic(a.out, res)
    import json

    from synthcount._io import strict_json

    sys.stdout.write(json.dumps(strict_json(res)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
