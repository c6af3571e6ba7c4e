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

One writer per folder: a run holds ``OUT_DIR/.lock`` from planning to its end
(exclusively for a whole dataset or an overwrite, shared for ``--shards`` pieces)
and makes each shard under its own lock (see :mod:`synthcount.locks`).
``dataset.json`` is created once and every later run or piece compares with it.

Before anything is written the layout survey (:mod:`synthcount.survey`) finds
(object, N) pairs that cannot be laid out and how many layouts an image may need.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import cv2
import numpy as np

from . import __version__
from ._io import is_tmp_name, write_bytes_atomic
from ._system import mem_available
from .config import DatasetConfig
from .locks import LOCK_FILE, LOCKS_DIR, FolderBusy, FolderLock, ShardLock
from .properties import stimulus_set_names
from .schema import new_records
from .shards import FORMAT_VERSION, ShardWriter, _strip_sources, pack_names, shard_index_of, shard_name, write_manifest
from .stats import corr_log_n_log_a  # noqa: F401 (also importable from here, as before 0.2)

__all__ = ["GenerateResult", "GenerationPlan", "plan_generation", "run_plan", "generate_dataset", "IDENTITY_FILE",
           "FolderBusy", "ShardError", "read_identity", "shard_memory"]

IDENTITY_FILE = "dataset.json"
SURVEY_KEY = "layout_survey"  # the layout survey, stored in dataset.json beside the identity
_PROGRESS_EVERY = 50  # images between progress messages from a worker
log = logging.getLogger("synthcount")


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
    shards_busy : list of int
        Shards this run left to another run that was making them at the same time.
    layout_budget : int
        Layouts an image could draw (see ``synthcount.survey``).
    layout_survey : dict or None
        The layout survey (budget, unfit pairs, hardest pair, trials, seconds).
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
    shards_busy: List[int] = field(default_factory=list)
    layout_budget: int = 0
    layout_survey: Optional[dict] = None


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
    composer: object = None
    survey: object = None


def _identity(config: DatasetConfig, objects, backgrounds, distractor_objects=None) -> dict:
    """What must match to resume: content, not where the sources happen to be mounted
    (the pack fingerprints identify the assets; another machine may see another path)."""
    ident = {
        "format_version": FORMAT_VERSION,
        "synthcount_version": __version__,
        "num_shards": config.num_shards,
        "objects_fingerprint": objects.fingerprint(),
        "backgrounds_fingerprint": backgrounds.fingerprint(),
        "config": _strip_sources(json.loads(config.to_json())),
    }
    if distractor_objects is not None:
        ident["distractor_objects_fingerprint"] = distractor_objects.fingerprint()
    return ident


def _same_dataset(a: Optional[dict], b: Optional[dict]) -> bool:
    """Identities compared without the layout survey stored beside them (derived data)."""
    strip = lambda d: {k: v for k, v in d.items() if k != SURVEY_KEY} if isinstance(d, dict) else d  # noqa: E731
    return strip(a) == strip(b)


def _differences(old, new, prefix: str = "") -> List[str]:
    """Dotted names of the entries that differ between two nested dicts (e.g. ``config.seed``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix or "(all)"] if old != new else []
    out: List[str] = []
    for k in sorted(set(old) | set(new), key=str):
        if k == SURVEY_KEY and not prefix:
            continue
        out += _differences(old.get(k), new.get(k), f"{prefix}{k}.") if isinstance(new.get(k), dict) \
            else ([f"{prefix}{k}"] if old.get(k) != new.get(k) else [])
    return [d.rstrip(".") for d in out]


def read_identity(out_dir: str) -> Optional[dict]:
    """``OUT_DIR/dataset.json``, None if absent, ``{"unreadable": True}`` if garbled."""
    from ._io import read_text_bounded

    path = os.path.join(out_dir, IDENTITY_FILE)
    if not os.path.lexists(path):
        return None
    try:
        d = json.loads(read_text_bounded(path, 16 << 20, "dataset.json"))  # a FIFO or /dev/zero: garbled
    except (OSError, ValueError, RecursionError):
        return {"unreadable": True}
    return d if isinstance(d, dict) else {"unreadable": True}


def shard_memory(config: DatasetConfig) -> int:
    """Bytes one process needs while it makes shards of ``config``: two blocks of
    images and label maps (one composed while the other is written) and the per-image
    records of two shards (the one composed and the one being finished). A shard's
    images are never all in memory, so this hardly grows with the shard size."""
    from .schema import record_spec

    n = min(config.shard_size, config.num_images)
    h, w = config.scene.size
    per_record = sum(np.dtype(dt).itemsize * int(np.prod(shape)) for dt, shape in
                     record_spec(config.scene.max_count).values())
    return 2 * _block_size((h, w)) * h * w * 4 + 2 * n * per_record + (64 << 20)


def _check_memory(config: DatasetConfig, workers: int) -> None:
    need, avail = shard_memory(config) * max(workers, 1), mem_available()
    if avail is not None and need > 0.8 * avail:
        n = min(config.shard_size, config.num_images)
        h, w = config.scene.size
        raise ValueError(f"--shard-size {config.shard_size}: making shards of {n} images of {h}x{w} needs about "
                         f"{need / 2**30:.1f} GiB over {workers} process(es), more than the "
                         f"{avail / 2**30:.1f} GiB available; lower --shard-size (or --workers, or --size)")


def plan_generation(out_dir: str, config: DatasetConfig, *, shards: Optional[Tuple[int, int]] = None,
                    overwrite: bool = False, workers: int = 1, progress: bool = False) -> GenerationPlan:
    """Validate a generation request, resolve its sources and survey its layouts; writes nothing.

    The layout survey (``synthcount.survey``) tries every (object, N) pair once per
    dataset (a resumed or pieced run reuses the one stored in ``dataset.json``): it
    sets how many layouts an image may draw, and finds pairs that cannot be laid out.

    Raises
    ------
    ValueError
        Bad ``shards`` range, ``out_dir`` empty, not a writable folder, or holding a
        different dataset while ``overwrite`` is False; a shard too large for the
        memory; sources unusable (``SourceError``); objects that cannot fit
        (``check_feasible``), or (object, N) pairs that cannot be laid out while
        ``scene.unfit`` is ``"error"``.
    """
    from .compose import Composer, check_feasible
    from .sources import resolve_distractor_objects, resolve_sources
    from .survey import LayoutSurvey, survey_layouts

    if not isinstance(config, DatasetConfig):
        raise TypeError(f"config must be a DatasetConfig, got {type(config).__name__}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out_dir = os.fspath(out_dir)
    if not out_dir.strip():
        raise ValueError("OUT_DIR must not be empty")
    n_sh = config.num_shards
    if shards is None:
        shards = (0, n_sh)
    i, j = (int(v) for v in shards)
    if not 0 <= i < j <= n_sh:
        raise ValueError(f"shards must be I:J with 0 <= I < J <= {n_sh} (the dataset has {n_sh} shards), got {i}:{j}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"OUT_DIR must be a folder, got an existing file {out_dir!r}")
    if os.path.isdir(out_dir):
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise ValueError(f"OUT_DIR {out_dir!r} is not writable")
    else:
        parent = os.path.dirname(os.path.abspath(out_dir))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"OUT_DIR {out_dir!r} cannot be created: {parent!r} is not a writable folder")
    _check_memory(config, workers)
    objects, backgrounds = resolve_sources(config.sources, config.scene.stimulus, workers=workers, progress=progress)
    distractor_objects = resolve_distractor_objects(config.sources, config.scene.stimulus)
    from .stream import is_streamed

    # How the sources are read is logged, not recorded: it never changes a byte.
    log.info("sources (--source-mode %s): objects %s, backgrounds %s", config.sources.source_mode,
             *("streamed" if is_streamed(seq) else "in memory" for seq in (objects.objects, backgrounds.backgrounds)))
    check_feasible(config.scene, objects, distractor_objects)
    ident = _identity(config, objects, backgrounds, distractor_objects)
    existing = read_identity(out_dir)
    if existing is not None:
        if not _same_dataset(existing, ident) and not overwrite:
            diff = _differences(existing, ident)
            raise ValueError(f"{out_dir} holds a different dataset (differs in {', '.join(diff)}); "
                             f"use --overwrite (overwrite=True) to replace it")
    elif os.path.isdir(out_dir) and not overwrite:
        if any(shard_index_of(n) is not None for n in os.listdir(out_dir)):
            raise ValueError(f"{out_dir} holds shards but no {IDENTITY_FILE}; use --overwrite to replace them")
    composer = Composer(config.scene, objects, backgrounds, distractor_objects=distractor_objects)
    survey = None
    if existing is not None and _same_dataset(existing, ident) and SURVEY_KEY in existing:
        try:
            survey = LayoutSurvey.from_dict(existing[SURVEY_KEY])
            if not survey.complete:
                survey = None  # stopped at an unfit pair: survey again
        except (ValueError, TypeError):
            survey = None  # garbled: survey again
    if survey is None:
        from tqdm import tqdm

        # unfit "error": the first unfit pair refuses the request, so the survey stops there.
        with tqdm(total=len(objects.objects), unit="obj", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True, desc="layout survey") as bar:
            survey = survey_layouts(composer, workers=workers, progress=bar.update,
                                    stop_at_unfit=config.scene.unfit == "error")
        log.info("layout survey: %d trial layouts in %.1f s; budget %d layouts per image; unfit pairs: %d",
                 survey.trials, survey.seconds, survey.budget, sum(len(v) for v in survey.unfit.values()))
    if survey.unfit and config.scene.unfit == "error":
        if config.scene.design is not None:
            from .stream import object_names

            pairs = survey.unfit_pairs(object_names(objects.objects))
            more = f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""
            raise ValueError(f"the design cannot be laid out (fewer than 4 of 2000 trial layouts fitted at its hardest "
                             f"item and field area): {'; '.join(pairs[:3])}{more}; narrow item_area_range / "
                             f"field_area_range / design_count (--item-area / --field-area / --design-count): small "
                             f"fields with large items are too dense, large fields do not fit the image")
        raise ValueError(_unfit_message(composer, survey))
    composer.set_layout_plan(survey.budget, survey.unfit if config.scene.unfit == "redraw" else None)
    ident[SURVEY_KEY] = survey.to_dict()
    return GenerationPlan(out_dir, config, (i, j), ident, objects, backgrounds, overwrite, existing, composer, survey)


def _unfit_message(composer, survey) -> str:
    """Why a request with an unfit pair is refused, and the object sizes (computed by
    ``survey.feasible_sizes``) that would fit."""
    from .survey import MAX_TRIALS, SUCCESSES, SUGGEST_TRIALS, feasible_sizes, size_fields

    sc = composer.scene
    n, ids = next(iter(sorted(survey.unfit.items())))
    from .stream import object_names

    name = object_names(composer.objects.objects)[ids[0]]
    with_d = f" with {sc.max_distractors} distractors" if sc.max_distractors else ""
    field, flag, (a, b) = size_fields(sc)
    head = (f"{flag} {a:g}:{b:g} (or {field} in --config): {name!r} cannot be laid out {n} times{with_d} "
            f"(fewer than {SUCCESSES} of {MAX_TRIALS} trial layouts fitted)")
    fit = feasible_sizes(composer, hard=(ids[0], n))
    if fit is None:
        return (f"{head}, nor at a tenth of these sizes; lower --max-count, --distractors or --min-visible, or "
                f"--unfit redraw to draw other objects for such images")
    return (f"{head}; {flag} {fit[0]:g}:{fit[1]:g} fits every object (the largest sizes on a 10% grid at which each "
            f"pair fits at least {SUCCESSES} of {SUGGEST_TRIALS} trial layouts), or --unfit redraw draws other "
            f"objects for such images")


# ----------------------------------------------------------------------------- workers

# Set in the parent before the pool forks; children inherit it (no pickling of packs).
_STATE: dict = {}


def _block_size(size) -> int:
    """Images per block handed to the writer: about 8 MiB, at least one image."""
    h, w = size
    return max(1, min(64, (8 << 20) // (h * w * 4)))


def _blocks(composer):
    """This process's two image blocks (composed into / being written), reused."""
    h, w = composer.scene.size
    b = _block_size((h, w))
    blocks = _STATE.get("blocks")
    if blocks is None or blocks[0][0].shape != (b, h, w, 3):
        blocks = [(np.empty((b, h, w, 3), np.uint8), np.empty((b, h, w), np.uint8)) for _ in range(2)]
        _STATE["blocks"] = blocks
    return blocks


def _debris(out_dir: str, k: int) -> List[str]:
    """Temporary files of shard ``k`` (shard and sidecar). Called with the shard's lock
    held, so they can only be left over by a dead run."""
    stem = os.path.join(glob.escape(out_dir), shard_name(k))  # a folder name may hold [ ] * ?
    return glob.glob(stem + ".tmp-*") + glob.glob(stem[:-3] + ".sha256.tmp-*")


def _make_shard(k: int) -> dict:
    """Make shard ``k`` under its lock, start to finish (compose and write).

    Returns ``{"shard": k, "n": ..., "sha256": ..., ...}``, or ``{"shard": k,
    "busy": holder}`` (another process holds the shard's lock) or ``{"shard": k,
    "exists": True}`` (finished meanwhile) when there was nothing to do.
    """
    out: List[dict] = []
    _make_shards([k], out.append)
    return out[0]


class _ShardMaker:
    """Makes shards one after another in this process. The composing thread fills one
    block of images while a writer thread writes the other into the shard file (h5py
    releases the GIL while it writes), and finishes a shard (hash, fsync, rename)
    while the next one is composed. Memory: two blocks of about 8 MiB, and the small
    per-image records of the shards in flight; never a whole shard of images.

    Each shard's lock is held until its file is renamed or removed.
    """

    def __init__(self) -> None:
        self._jobs: "queue_mod.Queue" = queue_mod.Queue()
        self._free: "queue_mod.Queue" = queue_mod.Queue()  # block slots the composer may fill
        for slot in (0, 1):
            self._free.put(slot)
        self._done: "queue_mod.Queue" = queue_mod.Queue()  # results of finished shards, in order
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="synthcount-writer")
        self._thread.start()

    # -- the writer thread ---------------------------------------------------
    def _run(self) -> None:
        writers = {}
        while True:
            job = self._jobs.get()
            if job is None:
                return
            kind, k = job[0], job[1]
            try:
                if kind == "open":
                    if self._error is None:
                        writers[k] = ShardWriter(*job[2], **job[3])
                elif kind == "write":
                    slot, start, b = job[2:]
                    if self._error is None and k in writers:
                        images, maps = _STATE["blocks"][slot]
                        writers[k].write(start, images[:b], maps[:b])
                    self._free.put(slot)
                elif kind == "finish":
                    records, result, lock = job[2:]
                    try:
                        w = writers.pop(k, None)
                        if self._error is None and w is not None:
                            self._done.put({**result, "sha256": w.finish(records)})
                        elif w is not None:
                            w.abort()
                    finally:
                        lock.release()
            except BaseException as e:  # noqa: BLE001 - handed to the composing thread
                if self._error is None:
                    self._error = e
                for w in writers.values():
                    w.abort()
                writers.clear()
                if kind == "write":
                    self._free.put(job[2])

    # -- the composing thread -------------------------------------------------
    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def make(self, k: int) -> Optional[dict]:
        """Compose shard ``k`` and queue it for writing; a note if there was nothing to
        do (busy, exists), else None (the result comes from :meth:`results`)."""
        self._check()
        cfg: DatasetConfig = _STATE["config"]
        composer = _STATE["composer"]
        out_dir = _STATE["out_dir"]
        lock = ShardLock(out_dir, shard_name(k))
        if not lock.acquired:
            return {"shard": k, "busy": lock.holder()}
        path = os.path.join(out_dir, shard_name(k))
        if os.path.isfile(path):
            lock.release()
            return {"shard": k, "exists": True}
        try:
            _remove(_debris(out_dir, k))
            first, end = cfg.shard_range(k)
            n = end - first
            records = new_records(composer.record_spec, n)
            attrs = {
                "format_version": FORMAT_VERSION,
                "synthcount_version": __version__,
                "config": cfg.to_json(),
                "seed": cfg.seed,
                "shard_index": k,
                "first_image_index": first,
                "end_image_index": end,
                "layout_budget": composer.layout_budget,
                "stimulus_sets": json.dumps(stimulus_set_names(cfg.scene)),
            }
            self._jobs.put(("open", k, (path, n, composer.scene.size, attrs),
                            dict(compression=cfg.compression, label_compression=cfg.label_compression,
                                 record_bytes=sum(a.nbytes for a in records.values()), names=_STATE.get("names"))))
            self._compose(k, cfg, composer, first, n, records)
        except BaseException:
            self._jobs.put(("finish", k, None, None, _Aborted(lock)))
            raise
        # Stable dataset order: the index first, then the record keys in the spec's order.
        ordered = {"index": records.pop("index")}
        ordered.update(records)
        tries = ordered["layout_tries"]
        result = {"shard": k, "n": n, "resamples": int(np.maximum(tries.astype(np.int64) - 1, 0).sum()),
                  "max_tries": int(tries.max())}
        self._jobs.put(("finish", k, ordered, result, lock))
        return None

    def _compose(self, k: int, cfg: DatasetConfig, composer, first: int, n: int, records: dict) -> None:
        q = _STATE.get("queue")
        parent = _STATE.get("parent_pid")
        blocks = _blocks(composer)
        bsize = len(blocks[0][0])
        for start in range(0, n, bsize):
            b = min(bsize, n - start)
            slot = self._free.get()
            self._check()
            images, maps = blocks[slot]
            for j in range(b):
                if parent is not None and os.getppid() != parent:
                    os._exit(1)  # the parent died (e.g. kill -9): do not finish orphaned work
                composer.compose_into(cfg.seed, first + start + j, images, maps, records, j, start + j)
            self._jobs.put(("write", k, slot, start, b))
            _report(q, b)

    def results(self) -> List[dict]:
        """Results of the shards finished since the last call (raises a writer's error)."""
        self._check()
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue_mod.Empty:
                return out

    def close(self) -> List[dict]:
        """Wait for the writer to finish everything queued; the last results."""
        self._jobs.put(None)
        self._thread.join()
        return self.results()


class _Aborted:
    """Stands in for a shard's lock in a "finish" job of a shard that failed while it
    was composed: the writer drops the file, then releases the lock."""

    def __init__(self, lock: ShardLock) -> None:
        self._lock = lock

    def release(self) -> None:
        self._lock.release()


def _make_shards(todo: Iterable[int], emit) -> None:
    """Make the shards ``todo`` in order in this process, writing while composing;
    ``emit(result)`` for each as it completes."""
    maker = _ShardMaker()
    try:
        for k in todo:
            note = maker.make(k)
            if note is not None:
                emit(note)
            for out in maker.results():
                emit(out)
        for out in maker.close():
            emit(out)
    except BaseException:
        with contextlib.suppress(BaseException):
            maker.close()  # the writer drops the unfinished shard and stops
        raise


def _worker_init(parent: int) -> None:
    """Pool worker start: die with the parent (Linux prctl PR_SET_PDEATHSIG), best effort.

    A run killed with SIGKILL must not leave orphans finishing shards in the background
    (the ``os.getppid`` check in ``_compose_shard`` covers systems without prctl).
    """
    import signal

    # Ctrl-C reaches the whole process group: the parent alone answers it (it kills the
    # workers and says what is kept); SIGTERM kills a worker outright, whatever handler
    # the parent had when it forked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes

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


def _update_manifest(out_dir: str, num_shards: int) -> dict:
    # A lock so that pieces finishing at the same moment cannot drop each other's shards.
    with open(os.path.join(out_dir, ".manifest.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return write_manifest(out_dir, num_shards)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create_identity(out_dir: str, ident: dict) -> bool:
    """Write ``dataset.json`` only if it does not exist yet (pieces on several machines
    may start at once: the first one's identity stands, the others compare with it).
    Returns True if this call wrote it; raises ValueError if another run's differs."""
    path = os.path.join(out_dir, IDENTITY_FILE)
    text = (json.dumps(ident, indent=1) + "\n").encode()
    tmp = path + f".tmp-{os.getpid()}-{os.urandom(4).hex()}"
    write_bytes_atomic(tmp, text)
    try:
        os.link(tmp, path)  # atomic, and fails if the name exists (unlike a rename)
        return True
    except FileExistsError:
        theirs = read_identity(out_dir)
        if not _same_dataset(theirs, ident):
            raise ValueError(f"{out_dir} now holds a different dataset, started by another run meanwhile "
                             f"(differs in {', '.join(_differences(theirs, ident))})") from None
        return False
    finally:
        _remove([tmp])


def _remove_old_dataset(out_dir: str) -> None:
    """``overwrite``: drop every file of the dataset the folder held (the caller holds
    the folder lock exclusively, so no other run is writing)."""
    old = []
    for n in os.listdir(out_dir):
        if shard_index_of(n) is not None or n in ("manifest.json", IDENTITY_FILE) or (
                n.startswith("shard-") and (is_tmp_name(n) or n.endswith(".sha256"))) or (
                n.startswith(("manifest.json", IDENTITY_FILE)) and is_tmp_name(n)):
            old.append(os.path.join(out_dir, n))
    _remove(old)


def _check_kept_shard(out_dir: str, k: int, cfg: DatasetConfig) -> None:
    """A finished shard kept by a resume must open and belong to this dataset (cheap:
    attributes only). Raises ShardError naming the file otherwise."""
    import h5py

    name = shard_name(k)
    path = os.path.join(out_dir, name)
    from ._io import check_regular

    try:
        check_regular(path, "shard")  # a FIFO in its place would hang h5py
        with h5py.File(path, "r") as f:
            a = f.attrs
            ok = (int(a["shard_index"]) == k and int(a["first_image_index"]) == cfg.shard_range(k)[0]
                  and _config_matches(a["config"], cfg))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ShardError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "it is not a complete shard of this dataset: move it away and run again to remake it"
                         ) from None
    if not ok:
        raise ShardError(f"{path}: made with another config or at another position than this dataset's shard {k}; "
                         f"move it away and run again to remake it")


def _config_matches(text, cfg: DatasetConfig) -> bool:
    """Whether a shard's ``config`` attribute describes ``cfg`` (source paths aside:
    the same assets may be mounted elsewhere)."""
    try:
        theirs = json.loads(text)
    except (TypeError, ValueError):
        return False
    return isinstance(theirs, dict) and _strip_sources(theirs) == _strip_sources(json.loads(cfg.to_json()))


class ShardError(OSError):
    """A finished shard in the folder is unreadable or belongs to another dataset."""


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


def run_plan(plan: GenerationPlan, *, workers: int = 1, progress: bool = False, wait: bool = False,
             client=None) -> GenerateResult:
    """Make the missing shards of ``plan`` and rewrite the manifest.

    With ``client`` (a ``distributed.Client``) the shards are tasks on its Dask cluster
    (:mod:`synthcount.distributed`; ``workers`` is then unused); everything else (the
    folder lock, ``dataset.json``, the manifest, the cleanup) stays in this process.

    The folder lock (``synthcount.locks``) is held for the whole run: exclusively for
    a whole-dataset run or an overwrite, shared for a ``--shards`` piece; each shard
    is made under its own lock, so pieces never make the same shard twice. A run
    removes only what it created (and temporary files of shards whose lock is free,
    which only a dead run can have left), and removes the folder only if it made it
    and nothing else was put there.

    Raises
    ------
    synthcount.locks.FolderBusy
        Another run holds the folder lock and ``wait`` is False (a ValueError).
    ValueError
        Another run meanwhile put a different dataset into the folder.
    ShardError
        A finished shard kept for the resume is unreadable or of another dataset.
    synthcount.compose.PlacementError
        An image could not be laid out (probability below ``layout_failure_prob``).
    OSError
        Writing failed (``synthcount._io.WriteError`` names the file: disk full, ...).
    synthcount.distributed.OutDirNotShared, VersionMismatch, DaskRunError
        With ``client``: see :func:`synthcount.distributed.run_shards`.
    In every case finished shards are kept and listed in the manifest, and no
    temporary file is left.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    cfg, out_dir = plan.config, plan.out_dir
    lo, hi = plan.shard_range
    created = _make_folder(out_dir)
    lock = FolderLock(out_dir, exclusive=(lo, hi) == (0, cfg.num_shards) or plan.overwrite, wait=wait)
    res = GenerateResult(out_dir=out_dir, num_images=cfg.num_images, num_shards=cfg.num_shards,
                         skipped_sources=list(plan.objects.skipped) + list(plan.backgrounds.skipped)
                         + list(getattr(plan.composer.distractor_objects, "skipped", [])),
                         layout_budget=plan.composer.layout_budget,
                         layout_survey=plan.survey.to_dict() if plan.survey is not None else None)
    wrote_identity = False
    todo: List[int] = []
    try:
        wrote_identity = _claim_folder(plan, lock)
        for k in range(lo, hi):
            if os.path.isfile(os.path.join(out_dir, shard_name(k))):
                _check_kept_shard(out_dir, k, cfg)
                res.shards_skipped.append(k)
            else:
                todo.append(k)
        _make_missing(plan, res, todo, workers, progress, client)
    except BaseException:
        _clean_up_failed(out_dir, cfg, todo, lock, created, wrote_identity)
        raise
    try:
        res.images_written = sum(cfg.shard_range(k)[1] - cfg.shard_range(k)[0] for k in res.shards_made)
        res.images_per_second = res.images_written / res.seconds if res.seconds > 0 else 0.0
        res.shards_made.sort()
        man = _update_manifest(out_dir, cfg.num_shards)
        res.complete = bool(man["complete"])
        res.corr_log_n_log_a = _corr(out_dir, lo, hi)
        log.info("%s: %d images in %d shards (%d kept) in %.1f s, %d source files skipped", out_dir,
                 res.images_written, len(res.shards_made), len(res.shards_skipped), res.seconds,
                 len(res.skipped_sources))
    finally:
        _release_folder(out_dir, lock)
    return res


def _release_folder(out_dir: str, lock: FolderLock) -> None:
    """Release the folder lock. The last run out removes the lock files (``.lock``,
    which names its holder, ``.manifest.lock`` and the emptied ``.locks/``), so that a
    dataset at rest holds nothing that looks like a run still going; a run that
    others still share the folder with leaves them to the last one."""
    if os.path.isdir(out_dir) and lock.fd is not None and lock.try_exclusive():
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out_dir, ".manifest.lock"))
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(out_dir, LOCKS_DIR))  # only if empty: a shard lock is another run's
        lock.release(remove=True)
    else:
        lock.release()


def _make_folder(out_dir: str) -> bool:
    """Create ``out_dir`` (and its parents) if missing; True if this call made it."""
    if os.path.isdir(out_dir):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    try:
        os.mkdir(out_dir)
        return True
    except FileExistsError:
        return False


def _claim_folder(plan: GenerationPlan, lock: FolderLock) -> bool:
    """Under the folder lock: check (or write) ``dataset.json``; True if this run wrote it."""
    out_dir = plan.out_dir
    current = read_identity(out_dir)  # again, under the lock: another run may have come first
    if current is not None and not _same_dataset(current, plan.identity):
        if not plan.overwrite:
            raise ValueError(f"{out_dir} now holds a different dataset, started by another run meanwhile "
                             f"(differs in {', '.join(_differences(current, plan.identity))})")
        _remove_old_dataset(out_dir)  # overwrite holds the lock exclusively
        current = None
    if current is None and plan.overwrite and lock.exclusive:
        _remove_old_dataset(out_dir)  # shards without a dataset.json
    return _create_identity(out_dir, plan.identity) if current is None else False


def _make_missing(plan: GenerationPlan, res: GenerateResult, todo: List[int], workers: int, progress: bool,
                  client) -> None:
    """Make the shards ``todo`` in this process, a fork pool or on Dask; fills ``res``."""
    from tqdm import tqdm

    cfg, out_dir, composer = plan.config, plan.out_dir, plan.composer
    total = sum(cfg.shard_range(k)[1] - cfg.shard_range(k)[0] for k in todo)
    stage_dir = None
    if client is None and composer.streamed():
        # Streamed sources: prescale / build pyramids once into a temporary folder (the
        # work memory mode does once, held on disk), removed at the end of the run.
        import tempfile

        stage_dir = tempfile.mkdtemp(prefix="synthcount-stage-")
        try:
            staged = composer.stage(stage_dir, total, workers=workers, progress=progress)
        except BaseException:
            _unstage(composer, stage_dir)
            raise
        log.info("streamed sources staged in %s: %s", stage_dir, ", ".join(staged) or "none")
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               desc=f"generate {os.path.basename(os.path.normpath(out_dir))}")
    t0 = time.perf_counter()
    nproc = min(workers, len(todo))
    _STATE.clear()
    _STATE.update(config=cfg, composer=composer, out_dir=out_dir, bar=bar,
                  names=pack_names(plan.objects, plan.backgrounds, composer.distractor_objects))  # format 2
    # One OpenCV thread per process: its thread pool buys no wall time on these small
    # images (measured 365 vs 395 images/s at t = 1, 747 vs 740 at t = 0.5) but burns
    # half a core more, and it would oversubscribe the cores under --workers.
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if client is not None:  # Dask (issue 11): one task per shard, same _make_shard
            from .distributed import run_shards

            run_shards(client, plan, todo, bar, lambda out: _collect(res, out))
        elif nproc <= 1:
            _make_shards(todo, lambda out: _collect(res, out))
        else:
            _run_pool(res, todo, nproc, bar)
    finally:
        bar.close()
        _STATE.clear()
        cv2.setNumThreads(cv_threads)
        if stage_dir is not None:
            _unstage(composer, stage_dir)
    res.seconds = time.perf_counter() - t0


def _unstage(composer, stage_dir: str) -> None:
    import shutil

    composer.unstage()
    shutil.rmtree(stage_dir, ignore_errors=True)


def _clean_up_failed(out_dir: str, cfg: DatasetConfig, todo: List[int], lock: FolderLock, created: bool,
                     wrote_identity: bool) -> None:
    """After a failed run: no temporary file of ours remains, finished shards stay and
    are listed, and a folder this run made is removed if nothing else is in it."""
    try:
        for k in todo:  # pool workers killed mid-write leave temporary files behind
            with ShardLock(out_dir, shard_name(k)) as sl:
                if sl.acquired:
                    _remove(_debris(out_dir, k))
        mine = {LOCK_FILE, LOCKS_DIR, ".manifest.lock",
                "manifest.json"} | ({IDENTITY_FILE} if wrote_identity else set())
        names = set(os.listdir(out_dir))
        locks_dir = os.path.join(out_dir, LOCKS_DIR)
        if created and names <= mine and "manifest.json" not in names and lock.try_exclusive():
            with contextlib.suppress(OSError):
                for n in os.listdir(locks_dir):
                    os.remove(os.path.join(locks_dir, n))
                os.rmdir(locks_dir)
            _remove([os.path.join(out_dir, n) for n in names - {LOCK_FILE, LOCKS_DIR}])
            lock.release(remove=True)
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only if empty: never removes what another run put there
        elif os.path.isdir(out_dir) and (wrote_identity or any(shard_index_of(n) is not None for n in names)):
            _update_manifest(out_dir, cfg.num_shards)
    except OSError as e:  # a full disk may refuse the manifest too: the shards themselves stay valid
        log.warning("cleaning up %s after a failed run: %s", out_dir, e)
    finally:
        _release_folder(out_dir, lock)


def _collect(res: GenerateResult, out: dict) -> None:
    if "busy" in out:
        res.shards_busy.append(out["shard"])
        log.info("shard %d is being made by another run (%s)", out["shard"], out["busy"])
        return
    if out.get("exists"):
        res.shards_skipped.append(out["shard"])
        return
    res.shards_made.append(out["shard"])
    res.layout_resamples += out["resamples"]
    res.max_layout_tries = max(res.max_layout_tries, out["max_tries"])


def _pool_worker(tasks, results, parent: int) -> None:
    """A forked worker process: take shard indices from ``tasks`` until None, make them
    pipelined (``_make_shards``), and report results, progress and errors on ``results``."""
    _worker_init(parent)
    _STATE.update(queue=results, parent_pid=parent, bar=None)

    def todo():
        while True:
            k = tasks.get()
            if k is None:
                return
            yield k

    try:
        _make_shards(todo(), lambda out: results.put(("result", out)))
        results.put(("done", os.getpid()))
    except BaseException as e:  # noqa: BLE001 - every failure goes to the parent, which decides
        try:
            results.put(("error", e))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            results.put(("error", RuntimeError(f"{type(e).__name__}: {e}")))


def _run_pool(res: GenerateResult, todo: List[int], nproc: int, bar) -> None:
    """``nproc`` forked workers pull shards from one queue (the fastest take the most),
    each writing a shard while composing the next."""
    ctx = mp.get_context("fork")  # children inherit the packs and the composer: no pickling
    tasks, results = ctx.Queue(), ctx.Queue()
    for k in todo:
        tasks.put(k)
    for _ in range(nproc):
        tasks.put(None)
    procs = [ctx.Process(target=_pool_worker, args=(tasks, results, os.getpid()), daemon=True,
                         name=f"synthcount-worker-{i}") for i in range(nproc)]
    for p in procs:
        p.start()
    finished = 0
    try:
        while finished < nproc:
            try:
                msg = results.get(timeout=0.2)
            except queue_mod.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a generate worker process died (exit code {dead[0].exitcode}); "
                                       "finished shards are kept: run the same command again to resume") from None
                continue
            if isinstance(msg, int):
                bar.update(msg)
            elif msg[0] == "result":
                _collect(res, msg[1])
            elif msg[0] == "done":
                finished += 1
            elif msg[0] == "error":
                raise msg[1]
    except BaseException:
        for p in procs:  # their shard locks go with them, so the clean-up can take them
            if p.is_alive():
                p.kill()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)


def generate_dataset(out_dir: str, config: DatasetConfig, *, workers: int = 1,
                     shards: Optional[Tuple[int, int]] = None, overwrite: bool = False,
                     progress: bool = False, wait: bool = False, client=None) -> GenerateResult:
    """Generate (or resume, or add pieces to) a dataset in ``out_dir``.

    Parameters
    ----------
    out_dir : str
        Dataset folder; created if absent.
    config : DatasetConfig
        What to generate. ``config.num_images`` images in shards of ``config.shard_size``.
    workers : int, >= 1
        Processes (forked, pulling shards from one queue; each writes a shard in a
        background thread while composing the next). Never changes the output.
    shards : (int, int) or None
        Make only shards ``i..j-1`` of the dataset (``0 <= i < j <= num_shards``).
    overwrite : bool
        Replace a different dataset already in ``out_dir`` instead of refusing.
    progress : bool
        Show tqdm progress bars on stderr (off by default in the Python API).
    wait : bool
        Wait for another run holding the folder instead of raising ``FolderBusy``.
    client : distributed.Client or None
        Make the shards as tasks on this Dask cluster (``[dask]`` extra; OUT_DIR on a
        filesystem every worker mounts at the same path); the bytes are those of a
        local run. ``workers`` then only spreads the layout survey over local processes.

    Returns
    -------
    GenerateResult

    Raises
    ------
    ValueError
        Bad request (see :func:`plan_generation`; nothing is written then), or the
        folder is in use (``FolderBusy``) or now holds another dataset.
    synthcount.compose.PlacementError, ShardError, OSError
        The run failed (see :func:`run_plan`); finished shards are kept.
    """
    plan = plan_generation(out_dir, config, shards=shards, overwrite=overwrite, workers=workers, progress=progress)
    return run_plan(plan, workers=workers, progress=progress, wait=wait, client=client)
