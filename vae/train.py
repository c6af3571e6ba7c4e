"""Train the VAE on synthcount shards (and optionally natural images).

``train(dataset_path, run_dir, cfg)`` reads top to bottom in blocks: setup (device,
distributed, seeds) -> loss (VGG weights resolved before anything is written) ->
data (held-out split, curriculum) -> model and optimiser (Adam, ReduceLROnPlateau on
the test loss) -> resume -> the epoch loop (train, evaluate, schedule, checkpoint,
log, reconstruction grid).

Run directory::

    RUN_DIR/config.json       {"model": ModelConfig, "train": TrainConfig, "dataset": path}
    RUN_DIR/metadata.json     versions, device, reconstruction loss, VGG weights (path +
                              sha256, or "random" with a warning), data sizes
    RUN_DIR/split.json        the held-out shard indices (vae.data.split_indices)
    RUN_DIR/metrics.csv       one row per epoch (METRIC_COLUMNS)
    RUN_DIR/recon/epoch-XXX.png   inputs (top row) and reconstructions (bottom row)
    RUN_DIR/checkpoints/init.pt, last.pt[, epoch-XXX.pt, interrupted.pt]

Reproducibility: torch is seeded once from ``cfg.seed``; shuffling, worker seeds and
main-process augmentation are derived from (seed, epoch), and the checkpoint keeps
the torch RNG state, so ``resume`` continues exactly as an uninterrupted run would
(bit-identical on CPU for the same worker count).

Multi-GPU: under ``torchrun`` (env RANK / WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel, data split with DistributedSampler, metrics all-reduced;
rank 0 alone logs and writes. ``batch_size`` is per process.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from synthcount.shards import write_json_atomic

from .checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import EpochView, NaturalImages, ShardImages, derive_seed, epoch_indices, natural_share, split_indices
from .losses import VAELoss
from .model import VAE, num_parameters
from .vgg import build_vgg, resolve_vgg_weights

__all__ = ["train", "TrainingDiverged", "METRIC_COLUMNS", "resolve_device", "default_workers"]

METRIC_COLUMNS = ["epoch", "loss", "kl", "rec", "test_loss", "lr", "images_per_s", "data_s", "compute_s",
                  "test_kl", "test_rec", "natural_share", "natural_images", "test_loss_natural"]
# TrainConfig fields that may change on resume: they do not change the result
# (workers: augmentation is seeded per sample; vgg_weights: where the file lies may
# change, its sha256 is compared instead).
RESUMABLE_CHANGES = {"epochs", "workers", "device", "recon_every", "checkpoint_every", "vgg_weights"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA if available else CPU; "cuda" without a GPU is an error."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """DataLoader workers when not given: one per spare CPU, at most 8."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def _dist_env() -> tuple:
    """(rank, world_size, local_rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _versions() -> Dict[str, str]:
    import h5py
    import torchvision

    import synthcount

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "h5py": h5py.__version__, "synthcount": synthcount.__version__,
            "platform": platform.platform()}


def _check_resume(run_dir: str, cfg: TrainConfig, vgg_info: Optional[dict], dataset_path: str) -> dict:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path) or not os.path.isfile(checkpoint_path(run_dir, "last")):
        raise ValueError(f"--resume: {run_dir} holds no run to resume (config.json and checkpoints/last.pt needed)")
    with open(path) as f:
        stored = json.load(f)
    # Compare as JSON (tuples and lists alike), the form config.json keeps.
    old = json.loads(json.dumps(TrainConfig.from_dict(stored["train"]).to_dict()))
    new = json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in old if k not in RESUMABLE_CHANGES and old[k] != new[k])
    if diff:
        raise ValueError(f"--resume: settings differ from the run in {run_dir}: "
                         + ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff))
    meta_path = os.path.join(run_dir, "metadata.json")
    old_meta = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            old_meta = json.load(f)
    # The held-out split is by index: another dataset (or another size of it) would
    # silently mix test images into training.
    old_ds = old_meta.get("dataset") or {}
    if old_ds:
        import synthcount

        with synthcount.open_dataset(dataset_path) as ds:
            now = {"num_images": len(ds), "image_size": list(ds.image_size)}
        for key, val in now.items():
            if old_ds.get(key) is not None and old_ds.get(key) != val:
                raise ValueError(f"--resume: DATASET {dataset_path} has {key} {val}, the run was trained on "
                                 f"{old_ds.get('path')} with {old_ds.get(key)}")
    if vgg_info is not None and old_meta:
        old_vgg = old_meta.get("vgg_weights") or {}
        if old_vgg.get("sha256") != vgg_info.get("sha256"):
            raise ValueError(f"--resume: VGG weights differ from the run's ({old_vgg.get('sha256')} -> {vgg_info.get('sha256')})")
    return stored


def _save_grid(model: VAE, x: torch.Tensor, path: str) -> None:
    from torchvision.utils import save_image

    was = model.training
    model.eval()
    with torch.no_grad():
        r = model(x)[0].float()
    model.train(was)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_image(torch.cat([x.float().cpu(), r.cpu()]), path, nrow=x.shape[0], padding=2)


def _loader(ds, batch_size: int, sampler, workers: int, seed: int, device: torch.device, drop_last: bool) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)  # base seed of the workers (torch derives one per worker)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      pin_memory=device.type == "cuda", generator=gen,
                      prefetch_factor=4 if workers > 0 else None)


def _evaluate(model, loss_fn, ds, cfg, device, amp, rank: int, world: int, seed: int) -> Dict[str, float]:
    """Mean test loss terms (eval mode: z = mu, no augmentation), summed over ranks."""
    rows = np.stack([np.zeros(len(ds), np.int64), np.arange(len(ds), dtype=np.int64)], 1)[rank::world]
    view = EpochView([ds], rows)
    loader = _loader(view, cfg.batch_size, SequentialSampler(view), _workers(cfg), seed, device, False)
    sums = torch.zeros(4, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for x, _ in loader:
            x = _to_device(x, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                recon, mu, sigma = model(x)
                parts = loss_fn(x, recon, mu, sigma)
            b = x.shape[0]
            w = _batch_weight(cfg, b)
            sums += torch.tensor([float(parts[k]) * w for k in ("loss", "kl", "rec")] + [b], dtype=torch.float64)
    model.train()
    if world > 1:
        dist.all_reduce(sums)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "kl": sums[1].item() / n, "rec": sums[2].item() / n}


def _batch_weight(cfg: TrainConfig, b: int) -> float:
    """Weight of one batch's loss in the epoch sums, which are divided by the images.

    ``sum`` losses are already summed over the batch; the other reductions are
    per-image (``batch-mean``) or per-element (``mean``) averages. Either way the
    logged figures are per image (per element for ``mean``), whatever the batch size.
    """
    return 1.0 if cfg.reduction == "sum" else float(b)


def _workers(cfg: TrainConfig) -> int:
    return default_workers() if cfg.workers is None else cfg.workers


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _read_metrics(path: str, upto: int) -> List[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["epoch"]) <= upto]


def _write_metrics(path: str, rows: List[dict]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in METRIC_COLUMNS})
    os.replace(tmp, path)


def train(dataset_path: str, run_dir: str, cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train a VAE; see the module docstring for the run directory.

    Parameters
    ----------
    dataset_path : str
        synthcount dataset folder (or one shard file).
    run_dir : str
        Output folder; must not hold a run unless ``resume``.
    cfg : TrainConfig
    resume : bool
        Continue ``run_dir`` from ``checkpoints/last.pt`` up to ``cfg.epochs``.
    progress : bool
        tqdm bars (stderr) with images/s.

    Returns
    -------
    dict
        ``run_dir``, ``epochs_done``, ``last`` (the final metrics row), ``best_test_loss``,
        ``device``, ``world_size``, ``num_parameters``, ``status``.

    Raises
    ------
    ValueError
        Bad input (dataset, run_dir, settings); nothing is written then.
    vae.vgg.VGGWeightsMissing
        Perceptual loss asked for and no VGG weights found (before anything is written).
    TrainingDiverged
        NaN/inf loss; ``checkpoints/last.pt`` (the last good epoch) is kept.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    run_dir = os.path.abspath(run_dir)
    # ---------------------------------------------------------------- checks first
    vgg_weights = resolve_vgg_weights(cfg.vgg_weights) if cfg.recon in ("perceptual", "both") else None
    vgg_info = vgg_weights.to_dict() if vgg_weights is not None else None
    if resume:
        _check_resume(run_dir, cfg, vgg_info, dataset_path)
    elif os.path.exists(os.path.join(run_dir, "config.json")) or os.path.exists(checkpoint_path(run_dir, "last")):
        raise ValueError(f"run_dir {run_dir} already holds a run: use --resume or another folder")
    model_cfg = cfg.model_config()
    device = resolve_device(cfg.device)
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    amp = device.type == "cuda"  # bf16 autocast + channels_last on GPU only
    torch.manual_seed(cfg.seed)
    try:
        # ------------------------------------------------------------ data
        train_idx, test_idx = split_indices(_dataset_len(dataset_path), cfg.test_fraction, cfg.seed)
        aug = dict(scale=cfg.aug_scale, color_shift=cfg.color_shift)
        syn_train = ShardImages(dataset_path, train_idx, train=cfg.augment, image_size=model_cfg.image_size, **aug)
        syn_test = ShardImages(dataset_path, test_idx, train=False, image_size=model_cfg.image_size)
        parts: list = [syn_train]
        nat_labels = nat_test = nat_summary = None
        if cfg.natural:
            from .sos import load_natural

            nat = load_natural(cfg.natural)
            nat_train = NaturalImages(nat.train, train=cfg.augment, image_size=model_cfg.image_size, **aug)
            nat_labels = nat_train.labels
            parts.append(nat_train)
            nat_test = NaturalImages(nat.test, image_size=model_cfg.image_size) if nat.test else None
            nat_summary = nat.summary()
        # ------------------------------------------------------------ model, loss, optimiser
        model = VAE(model_cfg)
        vgg = build_vgg(vgg_weights) if vgg_weights is not None else None
        loss_fn = VAELoss(cfg.recon, cfg.pixel_loss, cfg.alpha, cfg.beta, cfg.reduction, vgg).to(device)
        model.to(device)
        if amp:
            model.to(memory_format=torch.channels_last)
            loss_fn.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_factor,
                                                               patience=cfg.lr_patience)
        config_dict = {"model": model_cfg.to_dict(), "train": cfg.to_dict()}
        ckpt_dir = os.path.join(run_dir, "checkpoints")

        def state(epoch: int, best: float, **extra) -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": int(epoch),
                    "config": config_dict, "best_test_loss": float(best), **extra}

        start, best, rows = 0, math.inf, []
        metrics_path = os.path.join(run_dir, "metrics.csv")
        if resume:
            st = load_checkpoint(checkpoint_path(run_dir, "last"), map_location=device)
            model.load_state_dict(st["model"])
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            set_rng_state(st["rng"])
            start, best = int(st["epoch"]), float(st.get("best_test_loss", math.inf))
            rows = _read_metrics(metrics_path, start)
        if main:
            os.makedirs(ckpt_dir, exist_ok=True)
            meta = _metadata(run_dir, resume, cfg, device, world, amp, vgg_info, dataset_path, train_idx, test_idx,
                             nat_summary, model)
            write_json_atomic(os.path.join(run_dir, "metadata.json"), meta)
            write_json_atomic(os.path.join(run_dir, "config.json"), {**config_dict, "dataset": os.path.abspath(dataset_path)})
            write_json_atomic(os.path.join(run_dir, "split.json"), {"num_images": int(len(train_idx) + len(test_idx)),
                                                               "test_fraction": cfg.test_fraction, "seed": cfg.seed,
                                                               "test_indices": test_idx.tolist()})
            if not resume:
                save_checkpoint(checkpoint_path(run_dir, "init"), state(0, best))
            if vgg_info is not None and vgg_info["source"] == "random":
                print("WARNING: --vgg-weights random: the perceptual loss uses an UNTRAINED VGG-19 "
                      "(not the paper's loss); recorded in metadata.json", file=sys.stderr)
        net = model
        if distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        grid_x = torch.stack([syn_test[i][0] for i in range(min(8, len(syn_test)))]).to(device)
        workers = _workers(cfg)
        # ------------------------------------------------------------ epochs
        step_info = {"epoch": start, "step": 0}
        try:
            for epoch in range(start, cfg.epochs):
                step_info.update(epoch=epoch, step=0)
                index = epoch_indices(epoch, len(syn_train), nat_labels, cfg.seed, warmup=cfg.warmup_epochs,
                                      ramp=cfg.natural_ramp, schedule=cfg.natural_schedule,
                                      drop_fraction=cfg.drop_fraction)
                view = EpochView(parts, index)
                if distributed:
                    sampler = DistributedSampler(view, num_replicas=world, rank=rank, shuffle=True,
                                                 seed=derive_seed(cfg.seed, 1) & 0x7FFFFFFF)
                    sampler.set_epoch(epoch)
                else:
                    sampler = RandomSampler(view, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, 2, epoch)))
                view.reseed(derive_seed(cfg.seed, 4, epoch))  # per-sample streams: any worker count
                per_rank = len(sampler)
                loader = _loader(view, cfg.batch_size, sampler, workers, derive_seed(cfg.seed, 3, epoch, rank), device,
                                 drop_last=per_rank >= cfg.batch_size and per_rank % cfg.batch_size == 1)
                lr = optimizer.param_groups[0]["lr"]
                sums = torch.zeros(6, dtype=torch.float64)  # loss*b, kl*b, rec*b, images, data_s, compute_s
                net.train()
                bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", file=sys.stderr,
                           disable=not (progress and main), leave=False, dynamic_ncols=True)
                t_wait = time.perf_counter()
                for x, _ in loader:
                    t0 = time.perf_counter()
                    x = _to_device(x, device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        recon, mu, sigma = net(x)
                        parts_ = loss_fn(x, recon, mu, sigma)
                    loss = parts_["loss"]
                    finite = torch.isfinite(loss.detach()).float()
                    if distributed:
                        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                    if finite.item() < 1:
                        raise TrainingDiverged(_diverged_msg(run_dir, epoch, step_info["step"], float(loss.detach())))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t1 = time.perf_counter()
                    b = x.shape[0]
                    lv, kv, rv = (float(parts_[k].detach()) for k in ("loss", "kl", "rec"))
                    w = _batch_weight(cfg, b)
                    sums += torch.tensor([lv * w, kv * w, rv * w, b, t0 - t_wait, t1 - t0], dtype=torch.float64)
                    step_info["step"] += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{lv:.4g}", img_s=f"{b * world / max(t1 - t_wait, 1e-9):.0f}")
                    t_wait = time.perf_counter()
                bar.close()
                if distributed:
                    dist.all_reduce(sums)
                    sums[4:] /= world  # seconds: mean over ranks
                n = max(sums[3].item(), 1.0)
                test = _evaluate(model, loss_fn, syn_test, cfg, device, amp, rank, world, derive_seed(cfg.seed, 5, epoch))
                share = natural_share(epoch, cfg.warmup_epochs, cfg.natural_ramp, cfg.natural_schedule) if cfg.natural else 0.0
                test_nat = (_evaluate(model, loss_fn, nat_test, cfg, device, amp, rank, world, derive_seed(cfg.seed, 6, epoch))
                            if nat_test is not None and share > 0 else None)
                if not math.isfinite(test["loss"]):
                    raise TrainingDiverged(_diverged_msg(run_dir, epoch, step_info["step"], test["loss"]))
                scheduler.step(test["loss"])
                best = min(best, test["loss"])
                secs = sums[4].item() + sums[5].item()
                row = {"epoch": epoch + 1, "loss": sums[0].item() / n, "kl": sums[1].item() / n, "rec": sums[2].item() / n,
                       "test_loss": test["loss"], "lr": lr, "images_per_s": sums[3].item() / max(secs, 1e-9),
                       "data_s": sums[4].item(), "compute_s": sums[5].item(), "test_kl": test["kl"],
                       "test_rec": test["rec"], "natural_share": share,
                       "natural_images": int((index[:, 0] == 1).sum()),
                       "test_loss_natural": "" if test_nat is None else test_nat["loss"]}
                if main:
                    save_checkpoint(checkpoint_path(run_dir, "last"), state(epoch + 1, best))
                    if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0:
                        save_checkpoint(checkpoint_path(run_dir, epoch + 1), state(epoch + 1, best))
                    rows.append(row)
                    _write_metrics(metrics_path, rows)
                    if cfg.recon_every and ((epoch + 1) % cfg.recon_every == 0 or epoch == start or epoch + 1 == cfg.epochs):
                        _save_grid(model, grid_x, os.path.join(run_dir, "recon", f"epoch-{epoch + 1:03d}.png"))
                    if progress:
                        tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.5g}  kl {row['kl']:.4g}  "
                                   f"rec {row['rec']:.4g}  test {row['test_loss']:.5g}  lr {lr:.3g}  "
                                   f"{row['images_per_s']:.0f} img/s", file=sys.stderr)
        except KeyboardInterrupt:
            if main:
                path = checkpoint_path(run_dir, "interrupted")
                save_checkpoint(path, state(step_info["epoch"], best, interrupted=True, step=step_info["step"]))
                print(f"\ninterrupted: weights at the interruption saved to {path}; "
                      f"--resume continues from checkpoints/last.pt (epoch {step_info['epoch']}) so the result "
                      "matches an uninterrupted run", file=sys.stderr)
            raise
        if distributed:
            dist.barrier()
        return {"run_dir": run_dir, "epochs_done": max(start, cfg.epochs), "last": rows[-1] if rows else None,
                "best_test_loss": best, "device": str(device), "world_size": world,
                "num_parameters": num_parameters(model), "status": "completed" if start < cfg.epochs else "nothing to do"}
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _dataset_len(path: str) -> int:
    import synthcount

    n = len(synthcount.open_dataset(path))
    if n < 2:
        raise ValueError(f"dataset {path} must hold at least 2 images (train + test), got {n}")
    return n


def _diverged_msg(run_dir: str, epoch: int, step: int, value: float) -> str:
    last = checkpoint_path(run_dir, "last")
    kept = (f"the last good checkpoint {last} (epoch {epoch}) is kept" if os.path.isfile(last)
            else f"no epoch finished; the initial weights are in {checkpoint_path(run_dir, 'init')}")
    return (f"loss became {value} at epoch {epoch + 1}, step {step + 1}: training stopped; {kept}. "
            "Try a lower --lr or --beta, or --recon pixel --pixel-loss mse.")


def _metadata(run_dir, resume, cfg, device, world, amp, vgg_info, dataset_path, train_idx, test_idx, nat_summary,
              model) -> dict:
    import synthcount

    path = os.path.join(run_dir, "metadata.json")
    old = {}
    if resume and os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    ds = synthcount.open_dataset(dataset_path)
    if vgg_info is not None and vgg_info["source"] == "random":
        vgg_entry: Any = {**vgg_info, "warning": "random: UNTRAINED VGG-19, not the paper's perceptual loss"}
    else:
        vgg_entry = vgg_info
    meta = {
        "created": old.get("created", now),
        "resumed": old.get("resumed", []) + ([now] if resume else []),
        "versions": _versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "world_size": world,
        "autocast": "bfloat16" if amp else None,
        "channels_last": amp,
        "recon": cfg.recon,
        "pixel_loss": cfg.pixel_loss if cfg.recon in ("pixel", "both") else None,
        "reduction": cfg.reduction,
        "alpha": cfg.alpha,
        "beta": cfg.beta,
        "vgg_weights": vgg_entry,
        "num_parameters": num_parameters(model),
        "dataset": {"path": os.path.abspath(dataset_path), "num_images": len(ds), "image_size": list(ds.image_size),
                    "train": int(len(train_idx)), "test": int(len(test_idx))},
        "natural": nat_summary,
    }
    return meta
