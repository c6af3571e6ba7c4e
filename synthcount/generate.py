"""Make a dataset: plan shards, run them (optionally in a fork pool), resume, report.

Image ``i`` depends only on ``(config.seed, i)`` and the config (the compositor seeds
it with :func:`synthcount.rng.image_rng`), shards hold consecutive images and are
written with no timestamps, so the dataset is byte-identical for any ``workers``,
and its images and labels are identical for any ``shard_size``.

Resume and pieces: ``OUT_DIR/dataset.json`` records the dataset's identity (config,
number of shards, synthcount version, asset-pack fingerprints). A run into a folder
with the same identity keeps finished shards and makes the missing ones; a
different identity is refused unless ``overwrite``. ``shards=(i, j)`` makes only
shards ``i..j-1``, so pieces made by several processes or machines add up to the
single-run dataset. The manifest is rewritten at the end of every run, under a lock
file, from the finished shards present.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

from . import __version__
from .config import DatasetConfig
from .shards import FORMAT_VERSION, pack_names, shard_index_of, shard_name, write_manifest, write_shard

__all__ = ["GenerateResult", "GenerationPlan", "plan_generation", "run_plan", "generate_dataset", "IDENTITY_FILE"]

IDENTITY_FILE = "dataset.json"
_log = logging.getLogger(__name__)  # "synthcount.generate": library messages, silent unless configured
_PROGRESS_EVERY = 50  # images between progress messages from a worker


@dataclass
class GenerateResult:
    """What a ``generate_dataset`` run did.

    Attributes
    ----------
    out_dir : str
    images_written : int
        Images made by this run (finished shards kept from earlier runs not counted).
    seconds : float
        Wall time of the generation (sources resolved before the clock starts).
    images_per_second : float
    shards_made, shards_skipped : list of int
        Shard indices made by this run / already finished and kept.
    layout_resamples : int
        Whole layouts the compositor threw away and redrew (sum of layout_tries - 1).
    max_layout_tries : int
        Most layouts any one image needed.
    corr_log_n_log_a : float or None
        Pearson correlation of log N and log A over the images with N >= 1 of the
        shards in the requested range (None if fewer than 3 such images or no spread).
    skipped_sources : list of (str, str)
        Source files skipped as unusable, with the reason.
    num_images, num_shards : int
        Size of the whole dataset as planned.
    complete : bool
        Whether every shard of the dataset now exists in ``out_dir``.
    """

    out_dir: str
    images_written: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    shards_made: List[int] = field(default_factory=list)
    shards_skipped: List[int] = field(default_factory=list)
    layout_resamples: int = 0
    max_layout_tries: int = 0
    corr_log_n_log_a: Optional[float] = None
    skipped_sources: List[Tuple[str, str]] = field(default_factory=list)
    num_images: int = 0
    num_shards: int = 0
    complete: bool = False


@dataclass
class GenerationPlan:
    """Everything validated and resolved before anything is written (see :func:`plan_generation`)."""

    out_dir: str
    config: DatasetConfig
    shard_range: Tuple[int, int]
    identity: dict
    objects: object
    backgrounds: object
    overwrite: bool
    existing_identity: Optional[dict]


def _identity(config: DatasetConfig, objects, backgrounds) -> dict:
    """What must match to resume: content, not where the sources happen to be mounted
    (the pack fingerprints identify the assets; another machine may see another path)."""
    cfg = json.loads(config.to_json())
    cfg["sources"].pop("objects", None)
    cfg["sources"].pop("backgrounds", None)
    return {
        "format_version": FORMAT_VERSION,
        "synthcount_version": __version__,
        "num_shards": config.num_shards,
        "objects_fingerprint": objects.fingerprint(),
        "backgrounds_fingerprint": backgrounds.fingerprint(),
        "config": cfg,
    }


def _differences(old, new, prefix: str = "") -> List[str]:
    """Dotted names of the entries that differ between two nested dicts (e.g. ``config.seed``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix or "(all)"] if old != new else []
    out: List[str] = []
    for k in sorted(set(old) | set(new), key=str):
        out += _differences(old.get(k), new.get(k), f"{prefix}{k}.") if isinstance(new.get(k), dict) \
            else ([f"{prefix}{k}"] if old.get(k) != new.get(k) else [])
    return [d.rstrip(".") for d in out]


def plan_generation(out_dir: str, config: DatasetConfig, *, shards: Optional[Tuple[int, int]] = None,
                    overwrite: bool = False) -> GenerationPlan:
    """Validate a generation request and resolve its sources; writes nothing.

    Raises
    ------
    ValueError
        Bad ``shards`` range, sources unusable (``SourceError``), objects that cannot
        fit (``check_feasible``), ``out_dir`` not a folder, or ``out_dir`` holding a
        different dataset while ``overwrite`` is False.
    """
    from .compose import check_feasible
    from .sources import resolve_sources

    if not isinstance(config, DatasetConfig):
        raise TypeError(f"config must be a DatasetConfig, got {type(config).__name__}")
    out_dir = os.fspath(out_dir)
    n_sh = config.num_shards
    if shards is None:
        shards = (0, n_sh)
    i, j = (int(v) for v in shards)
    if not 0 <= i < j <= n_sh:
        raise ValueError(f"shards must be I:J with 0 <= I < J <= {n_sh} (the dataset has {n_sh} shards), got {i}:{j}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"OUT_DIR must be a folder, got an existing file {out_dir!r}")
    parent = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"OUT_DIR {out_dir!r} cannot be created: {parent!r} is not a writable folder")
    objects, backgrounds = resolve_sources(config.sources, config.scene.stimulus)
    check_feasible(config.scene, objects)
    ident = _identity(config, objects, backgrounds)
    existing = None
    id_path = os.path.join(out_dir, IDENTITY_FILE)
    if os.path.isfile(id_path):
        try:
            with open(id_path) as f:
                existing = json.load(f)
        except (OSError, json.JSONDecodeError):
            existing = {"unreadable": True}
        if existing != ident and not overwrite:
            diff = _differences(existing, ident)
            raise ValueError(f"{out_dir} holds a different dataset (differs in {', '.join(diff)}); "
                             f"use --overwrite (overwrite=True) to replace it")
    elif os.path.isdir(out_dir) and not overwrite:
        if any(shard_index_of(n) is not None for n in os.listdir(out_dir)):
            raise ValueError(f"{out_dir} holds shards but no {IDENTITY_FILE}; use --overwrite to replace them")
    return GenerationPlan(out_dir, config, (i, j), ident, objects, backgrounds, overwrite, existing)


# ----------------------------------------------------------------------------- workers

# Set in the parent before the pool forks; children inherit it (no pickling of packs).
_STATE: dict = {}


def _buffers(composer, shard_size: int, n: int):
    """Per-process batch arrays, reused from shard to shard.

    Fresh arrays would pay a page fault per 4 KiB on first touch for every shard
    (about a third of the cost of an image at 161x161); the records are refilled
    with their "absent" values because ``compose_into`` writes only present fields.
    """
    from .compose import new_records

    h, w = composer.scene.size
    key = ((h, w), tuple((k, dt.str, shape) for k, (dt, shape) in composer.record_spec.items()))
    buf = _STATE.get("buffers")
    if buf is None or buf[0] != key or buf[1].shape[0] < n:
        size = max(shard_size, n)
        buf = (key, np.empty((size, h, w, 3), np.uint8), np.empty((size, h, w), np.uint8),
               new_records(composer.record_spec, size))
        _STATE["buffers"] = buf
    else:
        fresh = new_records(composer.record_spec, 1)
        for name, arr in buf[3].items():
            arr[:n] = fresh[name][0]
    _, images, maps, recs = buf
    return images[:n], maps[:n], {key: arr[:n] for key, arr in recs.items()}


def _make_shard(k: int) -> dict:
    """Compose every image of shard ``k`` in memory and write the shard in one go."""
    cfg: DatasetConfig = _STATE["config"]
    composer = _STATE["composer"]
    q = _STATE.get("queue")
    parent = _STATE.get("parent_pid")
    first, end = cfg.shard_range(k)
    n = end - first
    images, maps, records = _buffers(composer, cfg.shard_size, n)
    done = 0
    for j in range(n):
        if parent is not None and os.getppid() != parent:
            os._exit(1)  # the parent died (e.g. kill -9): do not finish orphaned work
        composer.compose_into(cfg.seed, first + j, images, maps, records, j)
        if (j + 1) % _PROGRESS_EVERY == 0:
            _report(q, j + 1 - done)
            done = j + 1
    attrs = {
        "format_version": FORMAT_VERSION,
        "synthcount_version": __version__,
        "config": cfg.to_json(),
        "seed": cfg.seed,
        "shard_index": k,
        "first_image_index": first,
        "end_image_index": end,
    }
    # Stable dataset order: the index first, then the record keys in the spec's order.
    ordered = {"index": records.pop("index")}
    ordered.update(records)
    digest = write_shard(os.path.join(_STATE["out_dir"], shard_name(k)), images, maps, ordered, attrs,
                         compression=cfg.compression, label_compression=cfg.label_compression,
                         names=_STATE.get("names"))  # format 2: pack names in every shard
    _report(q, n - done)
    tries = ordered.get("layout_tries")
    return {"shard": k, "n": n, "sha256": digest,
            "resamples": int(np.maximum(tries.astype(np.int64) - 1, 0).sum()) if tries is not None else 0,
            "max_tries": int(tries.max()) if tries is not None else 0}


def _worker_init(parent: int) -> None:
    """Pool worker start: die with the parent (Linux prctl PR_SET_PDEATHSIG), best effort.

    A run killed with SIGKILL must not leave orphans finishing shards in the background
    (the ``os.getppid`` check in ``_make_shard`` covers systems without prctl).
    """
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _report(q, n: int) -> None:
    if n <= 0:
        return
    if q is None:
        bar = _STATE.get("bar")
        if bar is not None:
            bar.update(n)
    else:
        q.put(n)


# ----------------------------------------------------------------------------- run


def _remove(paths) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _tmp_files(out_dir: str, lo: int, hi: int) -> List[str]:
    """Temp files of shards lo..hi-1 (shard and sidecar) left by a killed run."""
    out = []
    for k in range(lo, hi):
        stem = os.path.join(glob.escape(out_dir), shard_name(k))  # a folder name may hold [ ] * ?
        out += glob.glob(stem + ".tmp-*") + glob.glob(stem[:-3] + ".sha256.tmp-*")
    return out


def _update_manifest(out_dir: str, num_shards: int) -> dict:
    # A lock so that pieces finishing at the same moment cannot drop each other's shards.
    with open(os.path.join(out_dir, ".manifest.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Under the lock no one else is writing the manifest: its temp files are stale.
            _remove(glob.glob(os.path.join(glob.escape(out_dir), "manifest.json.tmp-*")))
            return write_manifest(out_dir, num_shards)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _corr(out_dir: str, lo: int, hi: int) -> Optional[float]:
    import h5py

    ns, as_ = [], []
    for k in range(lo, hi):
        p = os.path.join(out_dir, shard_name(k))
        if os.path.isfile(p):
            with h5py.File(p, "r") as f:
                ns.append(f["count"][()])
                as_.append(f["cumulative_area"][()])
    return corr_log_n_log_a(np.concatenate(ns) if ns else np.zeros(0), np.concatenate(as_) if as_ else np.zeros(0))


def corr_log_n_log_a(count: np.ndarray, area: np.ndarray) -> Optional[float]:
    """Pearson r of log N and log A over images with N >= 1 and A > 0 (None if undefined)."""
    count, area = np.asarray(count, np.float64), np.asarray(area, np.float64)
    keep = (count >= 1) & (area > 0)
    if keep.sum() < 3:
        return None
    x, y = np.log(count[keep]), np.log(area[keep])
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def run_plan(plan: GenerationPlan, *, workers: int = 1,
             progress: bool = False) -> GenerateResult:  # progress: off in the API, on in the CLI
    """Make the missing shards of ``plan`` and rewrite the manifest.

    Raises
    ------
    synthcount.compose.PlacementError
        An image could not be laid out; finished shards are kept, no temp file is left.
    """
    from tqdm import tqdm

    from .compose import Composer

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    cfg, out_dir = plan.config, plan.out_dir
    lo, hi = plan.shard_range
    if plan.overwrite and os.path.isdir(out_dir):
        # Drop the old dataset entirely: its shards may even be in range but of another config.
        old = [os.path.join(out_dir, n) for n in os.listdir(out_dir)
               if shard_index_of(n) is not None or n.startswith("shard-") and (".tmp-" in n or n.endswith(".sha256"))
               or n in ("manifest.json", IDENTITY_FILE)]
        if plan.existing_identity != plan.identity:
            _remove(old)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    id_path = os.path.join(out_dir, IDENTITY_FILE)
    if not os.path.isfile(id_path) or plan.existing_identity != plan.identity:
        from .shards import write_json_atomic

        write_json_atomic(id_path, plan.identity)
    # Temp files of our shards are leftovers of a killed run (a live writer would be a
    # second run of the same shards, which the user did not mean).
    _remove(_tmp_files(out_dir, lo, hi))
    todo = [k for k in range(lo, hi) if not os.path.isfile(os.path.join(out_dir, shard_name(k)))]
    skipped = [k for k in range(lo, hi) if k not in todo]
    total = sum(cfg.shard_range(k)[1] - cfg.shard_range(k)[0] for k in todo)
    res = GenerateResult(out_dir=out_dir, shards_skipped=skipped, num_images=cfg.num_images,
                         num_shards=cfg.num_shards,
                         skipped_sources=list(plan.objects.skipped) + list(plan.backgrounds.skipped))
    composer = Composer(cfg.scene, plan.objects, plan.backgrounds)
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               desc=f"generate {os.path.basename(os.path.normpath(out_dir))}")
    t0 = time.perf_counter()
    nproc = min(workers, len(todo))
    _STATE.clear()
    _STATE.update(config=cfg, composer=composer, out_dir=out_dir, bar=bar,
                  names=pack_names(plan.objects, plan.backgrounds))  # format 2: pack names in every shard
    # One OpenCV thread per process: its thread pool buys no wall time on these small
    # images (measured 365 vs 395 images/s at t = 1, 747 vs 740 at t = 0.5) but burns
    # half a core more, and it would oversubscribe the cores under --workers.
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if nproc <= 1:
            for k in todo:
                _collect(res, _make_shard(k))
        else:
            _run_pool(res, todo, nproc, bar)
    except BaseException:
        _remove(_tmp_files(out_dir, lo, hi))  # pool workers killed mid-write leave temp files
        if created and not res.shards_made and not any(shard_index_of(n) is not None for n in os.listdir(out_dir)):
            # A run that made the folder and finished nothing leaves nothing behind.
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            _update_manifest(out_dir, cfg.num_shards)
        raise
    finally:
        bar.close()
        _STATE.clear()
        cv2.setNumThreads(cv_threads)
    res.seconds = time.perf_counter() - t0
    res.images_written = sum(cfg.shard_range(k)[1] - cfg.shard_range(k)[0] for k in res.shards_made)
    res.images_per_second = res.images_written / res.seconds if res.seconds > 0 else 0.0
    res.shards_made.sort()
    man = _update_manifest(out_dir, cfg.num_shards)
    res.complete = bool(man["complete"])
    res.corr_log_n_log_a = _corr(out_dir, lo, hi)
    _log.info("%s: %d images in %d shards (%d kept) in %.1f s, %d source files skipped", out_dir,
              res.images_written, len(res.shards_made), len(res.shards_skipped), res.seconds,
              len(res.skipped_sources))  # logging: library messages go to the "synthcount" logger
    return res


def _collect(res: GenerateResult, out: dict) -> None:
    res.shards_made.append(out["shard"])
    res.layout_resamples += out["resamples"]
    res.max_layout_tries = max(res.max_layout_tries, out["max_tries"])


def _run_pool(res: GenerateResult, todo: List[int], nproc: int, bar) -> None:
    ctx = mp.get_context("fork")  # children inherit the packs and the composer: no pickling
    q = ctx.Queue()
    _STATE.update(queue=q, parent_pid=os.getpid(), bar=None)
    pool = ctx.Pool(nproc, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        pending = [pool.apply_async(_make_shard, (k,)) for k in todo]
        while pending:
            try:
                bar.update(q.get(timeout=0.2))
            except queue_mod.Empty:
                pass
            still = []
            for r in pending:
                if r.ready():
                    _collect(res, r.get())  # re-raises a worker's exception here
                else:
                    still.append(r)
            pending = still
        while True:  # drain the last progress messages
            try:
                bar.update(q.get_nowait())
            except queue_mod.Empty:
                break
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def generate_dataset(out_dir: str, config: DatasetConfig, *, workers: int = 1,
                     shards: Optional[Tuple[int, int]] = None, overwrite: bool = False,
                     progress: bool = False) -> GenerateResult:  # progress: off in the API, on in the CLI
    """Generate (or resume, or add pieces to) a dataset in ``out_dir``.

    Parameters
    ----------
    out_dir : str
        Dataset folder; created if absent.
    config : DatasetConfig
        What to generate. ``config.num_images`` images in shards of ``config.shard_size``.
    workers : int, >= 1
        Processes (fork pool, one task per shard). Never changes the output.
    shards : (int, int) or None
        Make only shards ``i..j-1`` of the dataset (``0 <= i < j <= num_shards``).
    overwrite : bool
        Replace a different dataset already in ``out_dir`` instead of refusing.
    progress : bool
        Show a tqdm progress bar on stderr (off by default; the CLI turns it on).

    Returns
    -------
    GenerateResult

    Raises
    ------
    ValueError
        Bad request (see :func:`plan_generation`); nothing is written then.
    synthcount.compose.PlacementError
        An image could not be laid out; finished shards are kept.
    """
    plan = plan_generation(out_dir, config, shards=shards, overwrite=overwrite)
    return run_plan(plan, workers=workers, progress=progress)
