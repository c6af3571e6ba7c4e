"""Train the VAE on synthcount shards (and optionally natural images).

``train(dataset_path, run_dir, cfg)`` reads top to bottom: checks (VGG weights, the
dataset, the run folder; nothing is written before they pass) -> setup (device,
distributed, seed) -> :func:`_build_run` (data split, model, loss, Adam,
ReduceLROnPlateau on the test loss, resume) into one :class:`_Run` -> the epoch loop:
``row = _train_epoch(run, epoch)`` then :func:`_end_epoch` (checkpoint, metrics,
reconstruction grid).

Run directory::

    RUN_DIR/config.json       {"model": ModelConfig, "train": TrainConfig, "dataset": path}
    RUN_DIR/metadata.json     versions, device, reconstruction loss, VGG weights (path +
                              sha256, or "random" with a warning), data sizes
    RUN_DIR/split.json        the held-out shard indices (vae.data.split_indices)
    RUN_DIR/metrics.csv       one row per epoch (METRIC_COLUMNS)
    RUN_DIR/recon/epoch-XXX.png   inputs (top row) and reconstructions (bottom row)
    RUN_DIR/checkpoints/init.pt, last.pt[, epoch-XXX.pt, interrupted.pt]

Reproducibility: torch is seeded once from ``cfg.seed``; shuffling, worker seeds and
main-process augmentation are named streams of (seed, epoch) (:mod:`vae.seeds`), and
the checkpoint keeps the torch RNG state, so ``resume`` continues exactly as an
uninterrupted run would (bit-identical on CPU for the same worker count).

Time budget: ``deadline`` (a ``time.monotonic()`` instant) stops the run after a
whole epoch when the next one, at 1.1 x the last epoch's duration, would end after it.

Multi-GPU: under ``torchrun`` (env RANK / WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel, data split with DistributedSampler, metrics all-reduced;
rank 0 alone logs and writes. ``batch_size`` is per process.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import io
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

from synthcount._io import atomic_write, write_json_atomic
from synthcount.locks import hold_folder

from . import seeds
from .checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import EpochView, NaturalImages, ShardImages, epoch_indices, natural_share, split_indices
from .device import resolve_device
from .losses import VAELoss
from .model import VAE, num_parameters
from .vgg import build_vgg, resolve_vgg_weights

__all__ = ["train", "TrainingDiverged", "Terminated", "METRIC_COLUMNS", "resolve_device", "default_workers"]

METRIC_COLUMNS = ["epoch", "loss", "kl", "rec", "test_loss", "lr", "images_per_s", "data_s", "compute_s",
                  "test_kl", "test_rec", "natural_share", "natural_images", "test_loss_natural"]
# TrainConfig fields that may change on resume: they do not change the result
# (workers: augmentation is seeded per sample; vgg_weights: where the file lies may
# change, its sha256 is compared instead).
RESUMABLE_CHANGES = {"epochs", "workers", "device", "recon_every", "checkpoint_every", "vgg_weights"}
# The next epoch is assumed to take this many times the last one (deadline).
EPOCH_MARGIN = 1.1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def default_workers() -> int:
    """DataLoader workers when not given: one per spare CPU, at most 8."""
    from synthcount._system import usable_cores

    return min(8, max(0, usable_cores() - 1))


# ---------------------------------------------------------------------- the run object


@dataclasses.dataclass
class _Data:
    """The dataset, opened once, and what the run reads from it."""

    path: str                        # as given (absolute in the files written)
    num_images: int
    image_size: List[int]            # the dataset's (H, W)
    train_idx: np.ndarray
    test_idx: np.ndarray
    syn_train: ShardImages
    syn_test: ShardImages
    parts: list                      # EpochView parts: [synthetic train, natural train?]
    nat_labels: Optional[np.ndarray] = None
    nat_test: Optional[NaturalImages] = None
    nat_summary: Optional[dict] = None


@dataclasses.dataclass
class _Run:
    """Everything one training run holds; ``state()`` is its checkpoint."""

    cfg: TrainConfig
    run_dir: str
    device: torch.device
    rank: int
    world: int
    data: _Data
    model: VAE
    loss_fn: VAELoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config_dict: dict
    vgg_info: Optional[dict]
    net: Any = None                  # the model, or its DistributedDataParallel wrapper
    start: int = 0                   # epochs done before this call
    best: float = math.inf
    rows: List[dict] = dataclasses.field(default_factory=list)
    epoch: int = 0                   # the epoch being trained (0-based) ...
    step: int = 0                    # ... and its step, for the messages and interrupted.pt

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def amp(self) -> bool:
        """bf16 autocast and channels_last, on GPU only."""
        return self.device.type == "cuda"

    @property
    def workers(self) -> int:
        return _workers(self.cfg)

    def file(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def state(self, epoch: int, **extra) -> dict:
        """The checkpoint after ``epoch`` epochs."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": int(epoch),
                "config": self.config_dict, "best_test_loss": float(self.best), **extra}


# ---------------------------------------------------------------------- train


def train(dataset_path: str, run_dir: str, cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          deadline: Optional[float] = None) -> dict:
    """Train a VAE; see the module docstring for the run directory.

    Parameters
    ----------
    dataset_path : str
        synthcount dataset folder (or one shard file).
    run_dir : str
        Output folder; must not hold a run unless ``resume``.
    cfg : TrainConfig
    resume : bool
        Continue ``run_dir`` from ``checkpoints/last.pt`` up to ``cfg.epochs``; from
        ``checkpoints/init.pt`` when it was interrupted during its first epoch; afresh
        when nothing was saved yet (killed during setup). SIGTERM, like Ctrl-C, writes
        ``checkpoints/interrupted.pt`` and raises :class:`Terminated` (a KeyboardInterrupt).
    progress : bool
        tqdm bars (stderr) with images/s.
    deadline : float, optional
        A ``time.monotonic()`` instant. Whole epochs only: after each epoch, training
        stops early when the next one, taken as 1.1 x the last epoch's duration, would
        end after ``deadline``. At least one epoch runs. ``resume`` continues later.

    Returns
    -------
    dict
        ``run_dir``, ``epochs_done``, ``last`` (the final metrics row), ``best_test_loss``,
        ``device``, ``world_size``, ``num_parameters``, ``status`` ("completed", "nothing
        to do" or "stopped early"), ``stopped_early`` (bool) and ``epochs_run`` (epochs
        trained by this call).

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
    # One training run per RUN_DIR (rank 0 holds it for all ranks under torchrun): a second
    # run, or a --resume while the first trains, would mix its checkpoints into the first's.
    with hold_folder(run_dir, "training run") if _dist_env()[0] == 0 else contextlib.nullcontext(), \
            _sigterm_interrupts():
        source = None
        if resume:
            source = _check_resume(run_dir, cfg, vgg_info)
            if _dist_env()[0] == 0:
                _remove_debris(run_dir)
            if source is None:
                print(f"--resume: nothing was saved in {run_dir} yet (no checkpoint): starting the run afresh",
                      file=sys.stderr)
        elif os.path.exists(os.path.join(run_dir, "config.json")) or os.path.exists(checkpoint_path(run_dir, "last")):
            raise ValueError(f"run_dir {run_dir} already holds a run: use --resume or another folder")
        return _train(dataset_path, run_dir, cfg, source, progress, deadline, vgg_weights, vgg_info)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm sends before SIGKILL) during training: handled like Ctrl-C
    (``checkpoints/interrupted.pt`` is written, ``--resume`` continues)."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Turn SIGTERM into :class:`Terminated` for the block (main thread only; the
    previous handler is restored after)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum} (SIGTERM)")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _remove_debris(run_dir: str) -> None:
    """Temporary files of the run's own files left by a process killed outright (kill -9
    while it wrote them): a resume removes them."""
    from synthcount._io import remove_stale_tmps

    for name in ("config.json", "metadata.json", "split.json", "metrics.csv"):
        remove_stale_tmps(os.path.join(run_dir, name))
    ckpt = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(ckpt):
        for name in os.listdir(ckpt):
            if name.endswith(".pt"):
                remove_stale_tmps(os.path.join(ckpt, name))
        for which in ("last", "init", "interrupted"):
            remove_stale_tmps(checkpoint_path(run_dir, which))


def _train(dataset_path: str, run_dir: str, cfg: TrainConfig, source: Optional[str], progress: bool,
           deadline: Optional[float], vgg_weights, vgg_info: Optional[dict]) -> dict:
    """The body of :func:`train`, once the checks passed and RUN_DIR is held. ``source``:
    the checkpoint a resume continues from ("last" or "init"), None for a new run."""
    resume = source is not None
    dataset = _open_dataset(dataset_path)  # the one handle of the run
    try:
        if resume:
            _check_resume_dataset(run_dir, dataset_path, dataset)
        device, rank, world = _setup_device(cfg)
        torch.manual_seed(cfg.seed)
        try:
            run = _build_run(cfg, run_dir, dataset_path, dataset, device=device, rank=rank, world=world,
                             vgg_weights=vgg_weights, vgg_info=vgg_info)
            if resume:
                _load_state(run, source)
            if run.main:
                _write_run_files(run, resume)
            if run.distributed:
                run.net = torch.nn.parallel.DistributedDataParallel(
                    run.model, device_ids=[device.index] if device.type == "cuda" else None)
            stopped = _epochs(run, progress, deadline)
            if run.distributed:
                dist.barrier()
            return _summary(run, stopped)
        finally:
            if world > 1 and dist.is_initialized():
                dist.destroy_process_group()
    finally:
        dataset.close()


def _epochs(run: _Run, progress: bool, deadline: Optional[float]) -> bool:
    """The epoch loop; True when the deadline stopped it before ``cfg.epochs``."""
    cfg = run.cfg
    grid_x = torch.stack([run.data.syn_test[i][0] for i in range(min(8, len(run.data.syn_test)))]).to(run.device)
    run.epoch = run.start
    try:
        for epoch in range(run.start, cfg.epochs):
            t0 = time.monotonic()
            row = _train_epoch(run, epoch, progress)
            stop = (deadline is not None and epoch + 1 < cfg.epochs
                    and _agree(run, time.monotonic() + EPOCH_MARGIN * (time.monotonic() - t0) > deadline))
            _end_epoch(run, epoch, row, grid_x, progress, final=stop or epoch + 1 == cfg.epochs)
            if stop:
                return True
    except KeyboardInterrupt:
        if run.main:
            path = checkpoint_path(run.run_dir, "interrupted")
            save_checkpoint(path, run.state(run.epoch, interrupted=True, step=run.step))
            whole = "last" if os.path.isfile(checkpoint_path(run.run_dir, "last")) else "init"
            done = run.epoch if whole == "last" else 0
            print(f"\ninterrupted: weights at the interruption saved to {path}; "
                  f"--resume continues from checkpoints/{whole}.pt (epoch {done}) so the result "
                  "matches an uninterrupted run", file=sys.stderr)
        raise
    return False


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict:
    """One epoch: train on its shuffled view, evaluate, step the scheduler; the metrics row."""
    cfg, data = run.cfg, run.data
    run.epoch, run.step = epoch, 0
    index = epoch_indices(epoch, len(data.syn_train), data.nat_labels, cfg.seed, warmup=cfg.warmup_epochs,
                          ramp=cfg.natural_ramp, schedule=cfg.natural_schedule, drop_fraction=cfg.drop_fraction)
    view = EpochView(data.parts, index)
    if run.distributed:
        sampler = DistributedSampler(view, num_replicas=run.world, rank=run.rank, shuffle=True,
                                     seed=seeds.torch_seed(cfg.seed, "ddp-shuffle") & 0x7FFFFFFF)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(view, generator=torch.Generator().manual_seed(
            seeds.torch_seed(cfg.seed, "shuffle", epoch)))
    view.reseed(seeds.torch_seed(cfg.seed, "epoch-augment", epoch))  # per-sample streams: any worker count
    per_rank = len(sampler)
    loader = _loader(view, cfg.batch_size, sampler, run.workers, seeds.torch_seed(cfg.seed, "loader", epoch, run.rank),
                     run.device, drop_last=per_rank >= cfg.batch_size and per_rank % cfg.batch_size == 1)
    lr = run.optimizer.param_groups[0]["lr"]
    sums = torch.zeros(6, dtype=torch.float64)  # loss*b, kl*b, rec*b, images, data_s, compute_s
    run.net.train()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", file=sys.stderr,
               disable=not (progress and run.main), leave=False, dynamic_ncols=True)
    t_wait = time.perf_counter()
    for x, _ in loader:
        t0 = time.perf_counter()
        parts = _train_step(run, x)
        t1 = time.perf_counter()
        b = x.shape[0]
        lv, kv, rv = (float(parts[k].detach()) for k in ("loss", "kl", "rec"))
        w = _batch_weight(cfg, b)
        sums += torch.tensor([lv * w, kv * w, rv * w, b, t0 - t_wait, t1 - t0], dtype=torch.float64)
        run.step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4g}", img_s=f"{b * run.world / max(t1 - t_wait, 1e-9):.0f}")
        t_wait = time.perf_counter()
    bar.close()
    if run.distributed:
        dist.all_reduce(sums)
        sums[4:] /= run.world  # seconds: mean over ranks
    n = max(sums[3].item(), 1.0)
    test = _evaluate(run, data.syn_test, seeds.torch_seed(cfg.seed, "eval-loader", epoch))
    share = natural_share(epoch, cfg.warmup_epochs, cfg.natural_ramp, cfg.natural_schedule) if cfg.natural else 0.0
    test_nat = (_evaluate(run, data.nat_test, seeds.torch_seed(cfg.seed, "eval-natural-loader", epoch))
                if data.nat_test is not None and share > 0 else None)
    if not math.isfinite(test["loss"]):
        raise TrainingDiverged(_diverged_msg(run.run_dir, epoch, run.step, test["loss"]))
    run.scheduler.step(test["loss"])
    run.best = min(run.best, test["loss"])
    secs = sums[4].item() + sums[5].item()
    return {"epoch": epoch + 1, "loss": sums[0].item() / n, "kl": sums[1].item() / n, "rec": sums[2].item() / n,
            "test_loss": test["loss"], "lr": lr, "images_per_s": sums[3].item() / max(secs, 1e-9),
            "data_s": sums[4].item(), "compute_s": sums[5].item(), "test_kl": test["kl"], "test_rec": test["rec"],
            "natural_share": share, "natural_images": int((index[:, 0] == 1).sum()),
            "test_loss_natural": "" if test_nat is None else test_nat["loss"]}


def _train_step(run: _Run, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Forward, NaN check (on every rank), backward, Adam step; the loss terms."""
    x = _to_device(x, run.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        recon, mu, sigma = run.net(x)
        parts = run.loss_fn(x, recon, mu, sigma)
    loss = parts["loss"]
    finite = torch.isfinite(loss.detach()).float()
    if run.distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        raise TrainingDiverged(_diverged_msg(run.run_dir, run.epoch, run.step, float(loss.detach())))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return parts


def _end_epoch(run: _Run, epoch: int, row: dict, grid_x: torch.Tensor, progress: bool, final: bool) -> None:
    """Rank 0: checkpoints, metrics.csv, the reconstruction grid, the log line."""
    if not run.main:
        return
    cfg = run.cfg
    save_checkpoint(checkpoint_path(run.run_dir, "last"), run.state(epoch + 1))
    if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0:
        save_checkpoint(checkpoint_path(run.run_dir, epoch + 1), run.state(epoch + 1))
    run.rows.append(row)
    _write_metrics(run.file("metrics.csv"), run.rows)
    if cfg.recon_every and ((epoch + 1) % cfg.recon_every == 0 or epoch == run.start or final):
        _save_grid(run.model, grid_x, run.file("recon", f"epoch-{epoch + 1:03d}.png"))
    if progress:
        tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.5g}  kl {row['kl']:.4g}  "
                   f"rec {row['rec']:.4g}  test {row['test_loss']:.5g}  lr {row['lr']:.3g}  "
                   f"{row['images_per_s']:.0f} img/s", file=sys.stderr)


def _agree(run: _Run, flag: bool) -> bool:
    """``flag`` on any rank -> True on every rank (the ranks stop together)."""
    if not run.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=run.device if run.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _summary(run: _Run, stopped: bool) -> dict:
    cfg = run.cfg
    epochs_done = run.epoch + 1 if stopped else max(run.start, cfg.epochs)
    status = "stopped early" if stopped else ("completed" if run.start < cfg.epochs else "nothing to do")
    return {"run_dir": run.run_dir, "epochs_done": epochs_done, "last": run.rows[-1] if run.rows else None,
            "best_test_loss": run.best, "device": str(run.device), "world_size": run.world,
            "num_parameters": num_parameters(run.model), "status": status,
            "stopped_early": stopped, "epochs_run": max(0, epochs_done - run.start)}


# ---------------------------------------------------------------------- setup


def _dist_env() -> tuple:
    """(rank, world_size, local_rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _setup_device(cfg: TrainConfig) -> tuple:
    """(device, rank, world_size); joins the process group under torchrun."""
    device = resolve_device(cfg.device)
    rank, world, local_rank = _dist_env()
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def _open_dataset(path: str):
    import synthcount

    ds = synthcount.open_dataset(path)
    if len(ds) < 2:
        ds.close()
        raise ValueError(f"dataset {path} must hold at least 2 images (train + test), got {len(ds)}")
    return ds


def _open_data(dataset_path: str, dataset, cfg: TrainConfig, image_size) -> _Data:
    """The held-out split, the synthetic (and natural) train and test sets."""
    n = len(dataset)
    train_idx, test_idx = split_indices(n, cfg.test_fraction, cfg.seed)
    aug = dict(scale=cfg.aug_scale, color_shift=cfg.color_shift)
    syn_train = ShardImages(dataset, train_idx, train=cfg.augment, image_size=image_size, **aug)
    syn_test = ShardImages(dataset, test_idx, train=False, image_size=image_size)
    data = _Data(dataset_path, n, list(dataset.image_size), train_idx, test_idx, syn_train, syn_test, [syn_train])
    if cfg.natural:
        from .sos import load_natural

        nat = load_natural(cfg.natural)
        nat_train = NaturalImages(nat.train, train=cfg.augment, image_size=image_size, **aug)
        data.parts.append(nat_train)
        data.nat_labels = nat_train.labels
        data.nat_test = NaturalImages(nat.test, image_size=image_size) if nat.test else None
        data.nat_summary = nat.summary()
    return data


def _build_run(cfg: TrainConfig, run_dir: str, dataset_path: str, dataset, *, device: torch.device, rank: int,
               world: int, vgg_weights, vgg_info: Optional[dict]) -> _Run:
    """Data, model, loss, optimiser and scheduler (in this order: it fixes the random numbers)."""
    model_cfg = cfg.model_config()
    data = _open_data(dataset_path, dataset, cfg, model_cfg.image_size)
    model = VAE(model_cfg)
    vgg = build_vgg(vgg_weights) if vgg_weights is not None else None
    loss_fn = VAELoss(cfg.recon, cfg.pixel_loss, cfg.alpha, cfg.beta, cfg.reduction, vgg).to(device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    return _Run(cfg=cfg, run_dir=run_dir, device=device, rank=rank, world=world, data=data, model=model,
                loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, net=model, vgg_info=vgg_info,
                config_dict={"model": model_cfg.to_dict(), "train": cfg.to_dict()})


def _load_state(run: _Run, source: str = "last") -> None:
    """Continue from ``checkpoints/<source>.pt`` (``last``, or ``init`` when the first
    epoch never finished): weights, optimiser, scheduler, RNG, metrics."""
    st = load_checkpoint(checkpoint_path(run.run_dir, source), map_location=run.device)
    run.model.load_state_dict(st["model"])
    run.optimizer.load_state_dict(st["optimizer"])
    run.scheduler.load_state_dict(st["scheduler"])
    set_rng_state(st["rng"])
    run.start, run.best = int(st["epoch"]), float(st.get("best_test_loss", math.inf))
    run.rows = _read_metrics(run.file("metrics.csv"), run.start)


def _write_run_files(run: _Run, resume: bool) -> None:
    """metadata.json, config.json, split.json and (new runs) checkpoints/init.pt."""
    cfg, data = run.cfg, run.data
    os.makedirs(run.file("checkpoints"), exist_ok=True)
    write_json_atomic(run.file("metadata.json"), _metadata(run, resume))
    write_json_atomic(run.file("config.json"), {**run.config_dict, "dataset": os.path.abspath(data.path)})
    write_json_atomic(run.file("split.json"), {"num_images": int(len(data.train_idx) + len(data.test_idx)),
                                               "test_fraction": cfg.test_fraction, "seed": cfg.seed,
                                               "test_indices": data.test_idx.tolist()})
    if not resume:
        save_checkpoint(checkpoint_path(run.run_dir, "init"), run.state(0))
    if run.vgg_info is not None and run.vgg_info["source"] == "random":
        print("WARNING: --vgg-weights random: the perceptual loss uses an UNTRAINED VGG-19 "
              "(not the paper's loss); recorded in metadata.json", file=sys.stderr)


def _versions() -> Dict[str, str]:
    import h5py
    import torchvision

    import synthcount

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "h5py": h5py.__version__, "synthcount": synthcount.__version__,
            "platform": platform.platform()}


def _metadata(run: _Run, resume: bool) -> dict:
    path = run.file("metadata.json")
    old = {}
    if resume and os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    cfg, data, vgg_info, device = run.cfg, run.data, run.vgg_info, run.device
    if vgg_info is not None and vgg_info["source"] == "random":
        vgg_entry: Any = {**vgg_info, "warning": "random: UNTRAINED VGG-19, not the paper's perceptual loss"}
    else:
        vgg_entry = vgg_info
    return {
        "created": old.get("created", now),
        "resumed": old.get("resumed", []) + ([now] if resume else []),
        "versions": _versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "world_size": run.world,
        "autocast": "bfloat16" if run.amp else None,
        "channels_last": run.amp,
        "recon": cfg.recon,
        "pixel_loss": cfg.pixel_loss if cfg.recon in ("pixel", "both") else None,
        "reduction": cfg.reduction,
        "alpha": cfg.alpha,
        "beta": cfg.beta,
        "vgg_weights": vgg_entry,
        "num_parameters": num_parameters(run.model),
        "dataset": {"path": os.path.abspath(data.path), "num_images": data.num_images, "image_size": data.image_size,
                    "train": int(len(data.train_idx)), "test": int(len(data.test_idx))},
        "natural": data.nat_summary,
    }


def _check_resume(run_dir: str, cfg: TrainConfig, vgg_info: Optional[dict]) -> Optional[str]:
    """The checkpoint a resume continues from: ``"last"`` (the last whole epoch),
    ``"init"`` (interrupted during the first epoch: the state before its first step), or
    None when nothing was saved (the run starts afresh). Refuses a resume that would
    change the result: other settings or VGG weights."""
    path = os.path.join(run_dir, "config.json")
    last, init = (os.path.isfile(checkpoint_path(run_dir, w)) for w in ("last", "init"))
    if not os.path.isfile(path):
        if last:
            raise ValueError(f"--resume: {run_dir} has checkpoints/last.pt but no config.json (not a whole run)")
        return None
    if not (last or init):
        return None
    try:
        with open(path) as f:
            stored = json.load(f)
    except ValueError as e:
        raise ValueError(f"--resume: {path} is not readable JSON ({e})") from None
    # Compare as JSON (tuples and lists alike), the form config.json keeps.
    old = json.loads(json.dumps(TrainConfig.from_dict(stored["train"]).to_dict()))
    new = json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in old if k not in RESUMABLE_CHANGES and old[k] != new[k])
    if diff:
        raise ValueError(f"--resume: settings differ from the run in {run_dir}: "
                         + ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff))
    old_meta = _old_metadata(run_dir)
    old_vgg = old_meta.get("vgg_weights") or {}
    if vgg_info is not None and old_meta and old_vgg.get("sha256") != vgg_info.get("sha256"):
        raise ValueError(f"--resume: VGG weights differ from the run's ({old_vgg.get('sha256')} -> "
                         f"{vgg_info.get('sha256')})")
    return "last" if last else "init"


def _check_resume_dataset(run_dir: str, dataset_path: str, dataset) -> None:
    """The held-out split is by index: another dataset (or another size of it) would
    silently mix test images into training."""
    old_ds = _old_metadata(run_dir).get("dataset") or {}
    now = {"num_images": len(dataset), "image_size": list(dataset.image_size)}
    for key, val in now.items():
        if old_ds.get(key) is not None and old_ds.get(key) != val:
            raise ValueError(f"--resume: DATASET {dataset_path} has {key} {val}, the run was trained on "
                             f"{old_ds.get('path')} with {old_ds.get(key)}")


def _old_metadata(run_dir: str) -> dict:
    path = os.path.join(run_dir, "metadata.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------- helpers


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
                      prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=_worker_ignores_sigterm if workers > 0 else None)


def _worker_ignores_sigterm(_worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process (Slurm signals every process
    of the job): a worker that died of it first would surface as a RuntimeError in the
    main process instead of the interrupt that saves ``interrupted.pt``. They still end
    with the main process (torch's watchdog) or at the SIGKILL that follows."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _evaluate(run: _Run, ds, seed: int) -> Dict[str, float]:
    """Mean test loss terms (eval mode: z = mu, no augmentation), summed over ranks.

    ``run`` needs ``model``, ``loss_fn``, ``cfg``, ``device``, ``amp``, ``rank`` and ``world``.
    """
    cfg, device = run.cfg, run.device
    rows = np.stack([np.zeros(len(ds), np.int64), np.arange(len(ds), dtype=np.int64)], 1)[run.rank::run.world]
    view = EpochView([ds], rows)
    loader = _loader(view, cfg.batch_size, SequentialSampler(view), _workers(cfg), seed, device, False)
    sums = torch.zeros(4, dtype=torch.float64)
    model = run.model
    model.eval()
    with torch.no_grad():
        for x, _ in loader:
            x = _to_device(x, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
                recon, mu, sigma = model(x)
                parts = run.loss_fn(x, recon, mu, sigma)
            b = x.shape[0]
            w = _batch_weight(cfg, b)
            sums += torch.tensor([float(parts[k]) * w for k in ("loss", "kl", "rec")] + [b], dtype=torch.float64)
    model.train()
    if run.world > 1:
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
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METRIC_COLUMNS})
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def _diverged_msg(run_dir: str, epoch: int, step: int, value: float) -> str:
    last = checkpoint_path(run_dir, "last")
    kept = (f"the last good checkpoint {last} (epoch {epoch}) is kept" if os.path.isfile(last)
            else f"no epoch finished; the initial weights are in {checkpoint_path(run_dir, 'init')}")
    return (f"loss became {value} at epoch {epoch + 1}, step {step + 1}: training stopped; {kept}. "
            "Try a lower --lr or --beta, or --recon pixel --pixel-loss mse.")
