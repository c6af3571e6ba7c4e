"""Generation on a Dask cluster: every shard is one task (``generate --dask``).

This module sits beside :mod:`synthcount.generate`, not inside it: a shard is the
unit of work whether a local process pool or Dask runs it, and both run the same
``generate`` shard maker (compose block by block, write under a temporary name,
rename, all under the shard's own lock). ``run_plan(plan, client=...)`` keeps everything
else as in a local run: the client process holds the folder lock, writes
``dataset.json``, keeps finished shards, rewrites the manifest and cleans up after a
failure. Optional: needs the ``[dask]`` extra (``distributed``).

A run on the cluster, seen from the client:

1. **Probe** (:func:`check_workers`). Every worker is asked to find a marker file the
   client wrote into OUT_DIR and to write one back, which the client must see; and to
   report its versions of synthcount, numpy, OpenCV and HDF5, which must equal the
   client's (the same bytes need the same code). Both failures are one line
   (:class:`OutDirNotShared`, :class:`VersionMismatch`; ValueErrors: exit 2 in the CLI).
2. **One scatter.** The job (what ``run_plan`` put into ``generate._STATE`` for its
   own processes: the config, the composer with the asset packs and the layout plan
   the survey set on the client, the pack names; OUT_DIR as an absolute path) is
   sent to every worker once
   (``client.scatter(..., broadcast=True)``); each task carries only its shard index
   and the job's key (a few hundred bytes, measured by ``benchmarks.dask_engine``).
   A worker that joins later fetches the job from a peer, once.
3. **One task per missing shard.** A task checks OUT_DIR is there (else
   :class:`OutDirNotShared`), makes the shard with ``_make_shard`` and reports it;
   the client checks it can see the reported file, counts its images on the progress
   bar and collects the shard's figures. A task that finds the shard's lock held
   waits for it (a local run would leave the shard to its holder): the holder may be
   a worker of this very run that the scheduler gave up on while it still worked.
4. **Faults.** A worker killed mid-shard (kill -9) leaves at most a temporary file:
   the kernel drops its flock, Dask reruns the task on another worker (up to
   ``distributed.scheduler.allowed-failures`` deaths per task), and the rerun removes
   the debris under the shard's lock and makes the same bytes (each image depends only
   on ``(seed, index)``). When the run fails (a task's error, Ctrl-C, a task that kept
   killing workers), the client cancels what has not started and waits for the shards
   in progress on workers to end before it releases the folder.

Workers must run one shard at a time per process (a process reuses its image
blocks): start them with ``--nthreads 1`` and as many processes as cores; a worker
with more threads runs its shards one after the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["ShardJob", "OutDirNotShared", "VersionMismatch", "DaskUnavailable", "SchedulerUnreachable",
           "DaskRunError", "DASK_EXTRA", "LAST_RUN", "job_for", "parse_address", "check_reachable", "connect", "close",
           "check_workers", "run_shards"]

DASK_EXTRA = "pip install 'synthcount[dask]'"
PROBE_PREFIX = ".dask-probe-"  # marker files of check_workers, removed at once
# Figures of the last run_shards in this process (benchmarks.dask_engine reads them).
LAST_RUN: Dict[str, int] = {}
WAIT_FOR_WORKERS_S = 300.0  # after a failure: how long to wait for shards in progress on workers
# How long a file another machine made may take to show: an NFS client caches "no such
# file" for up to its attribute-cache time (acdirmin, 30 s by default) unless the
# folder is read again. Only a failing check waits this long.
VISIBILITY_GRACE_S = 30.0
log = logging.getLogger("synthcount")


class DaskUnavailable(ValueError):
    """The ``[dask]`` extra is not installed (a usage error: exit 2 in the CLI)."""


class SchedulerUnreachable(ValueError):
    """No Dask scheduler answers at the address given (exit 2, nothing written)."""


class OutDirNotShared(ValueError):
    """A worker cannot see OUT_DIR, or the client cannot see what a worker wrote there."""


class VersionMismatch(ValueError):
    """A worker runs other versions of the code that decides the bytes of a shard."""


class DaskRunError(RuntimeError):
    """The cluster could not finish the run (a task kept killing workers, the scheduler went away)."""


def _appears(path: str, grace: float) -> bool:
    """Whether ``path`` exists, reading its folder again for up to ``grace`` seconds
    (a network filesystem may show a file made elsewhere late)."""
    deadline = time.monotonic() + grace
    while True:
        if os.path.isfile(path):
            return True
        if time.monotonic() >= deadline:
            return False
        try:
            os.listdir(os.path.dirname(path))  # makes an NFS client revalidate the folder
        except OSError:
            pass
        time.sleep(min(0.5, max(grace, 0.0) / 10 + 0.01))


# Entries of generate._STATE that belong to the process that set them (progress bar,
# pool queue, image blocks); every other entry is what a shard needs, and travels.
_LOCAL_STATE = frozenset({"bar", "queue", "parent_pid", "blocks", "buffers"})


@dataclass
class ShardJob:
    """What every task of one run needs; scattered to each worker once.

    Attributes
    ----------
    token : str
        Random id of the run (task keys, the worker's state cache).
    out_dir : str
        Absolute path of OUT_DIR, which every worker must mount at the same path.
    state : dict
        ``generate._STATE`` as ``run_plan`` set it, less its process-local entries:
        ``config``, ``composer`` (packs and the layout plan set at plan time),
        ``names``, ... with ``out_dir`` absolute.
    grace : float
        Seconds a worker waits for ``dataset.json`` to show (see ``VISIBILITY_GRACE_S``).
    """

    token: str
    out_dir: str
    state: dict
    grace: float = VISIBILITY_GRACE_S


def job_for(out_dir: str, state: dict, grace: float) -> ShardJob:
    """The job of a run whose ``run_plan`` set ``state`` (``generate._STATE``)."""
    out_dir = os.path.abspath(out_dir)
    shipped = {k: v for k, v in state.items() if k not in _LOCAL_STATE}
    shipped["out_dir"] = out_dir
    return ShardJob(os.urandom(8).hex(), out_dir, shipped, grace)


def require_distributed():
    """The ``distributed`` module, or :class:`DaskUnavailable` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise DaskUnavailable(f"--dask needs the [dask] extra (distributed): {DASK_EXTRA}") from None
    return distributed


# ----------------------------------------------------------------------------- connecting

# Schemes Dask's comm layer speaks (distributed.comm.registry); anything else is refused
# before a Client exists: a failed Client waits about 60 s in its destructor at exit.
SCHEMES = ("tcp", "tls", "inproc", "ws", "wss", "ucx")
MAX_SCHEDULER_FILE_BYTES = 1 << 20


def parse_address(address: str) -> Tuple[str, object]:
    """``("local", n_workers)``, ``("file", scheduler_file)`` or ``("address", address)``.

    ``local`` is a LocalCluster with one worker process per usable core, ``local:N``
    one of N; a path ending in ``.json`` is a scheduler file (``dask scheduler
    --scheduler-file``); anything else a scheduler address such as ``tcp://host:8786``
    (schemes: ``SCHEMES``).
    """
    a = str(address).strip()
    if a == "local" or a.startswith("local:"):
        if a == "local":
            return "local", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = a[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--dask local:N needs a positive number of worker processes N, got {address!r:.80}")
        return "local", int(n)
    if a.lower().endswith(".json"):
        if not os.path.isfile(a):
            raise ValueError(f"--dask {address}: no such scheduler file")
        return "file", a
    _check_address(a, f"--dask {address}")
    return "address", a


def _check_address(a: str, what: str) -> None:
    m = re.fullmatch(r"(?:([a-z]+)://)?(?:[^\s/:\[\]]+(:\d+)?|\[[0-9a-fA-F:]+\](:\d+)?)", a)
    if not m:
        raise ValueError(f"{what}: must be tcp://HOST:PORT, local, local:N or a scheduler file (.json)")
    if m.group(1) is not None and m.group(1) not in SCHEMES:
        raise ValueError(f"{what}: unknown scheme {m.group(1)!r}; Dask speaks {', '.join(SCHEMES)} "
                         f"(e.g. tcp://HOST:8786)")


def scheduler_address(path: str) -> str:
    """The scheduler address in a scheduler file (``{"address": "tcp://..."}``), read
    with a bound and checked like ``--dask ADDRESS``.

    Raises
    ------
    ValueError
        Not a JSON object with a valid ``address`` (one line naming the file).
    """
    from ._io import read_text_bounded

    what = f"--dask {path}"
    try:
        info = json.loads(read_text_bounded(path, MAX_SCHEDULER_FILE_BYTES, "scheduler file"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{what}: not a Dask scheduler file ({' '.join(str(e).split())[:160]})") from None
    addr = info.get("address") if isinstance(info, dict) else None
    if not isinstance(addr, str):
        raise ValueError(f"{what}: not a Dask scheduler file (no \"address\" string)")
    _check_address(addr.strip(), f"{what}: address {addr.strip()[:80]!r}")
    return addr.strip()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a TCP scheduler ``address`` or at the address
    of a scheduler file (no threads started, nothing written; ``connect`` makes the real
    connection later).

    Raises :class:`SchedulerUnreachable` if the connection is refused or times out, and
    ``ValueError`` for a scheduler file that holds no valid address; does nothing for
    ``local`` and non-TCP schemes.
    """
    kind, what = parse_address(address)
    if kind == "local":
        return
    if kind == "file":
        what = scheduler_address(what)
    m = re.fullmatch(r"(?:(tcp|tls)://)?\[?([^\s/\]]+?)\]?(?::(\d+))?", what)
    if not m:
        return
    host, port = m.group(2), int(m.group(3) or 8786)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        via = f" (from the scheduler file: {what})" if kind == "file" else ""
        raise SchedulerUnreachable(f"--dask {address}: cannot reach a Dask scheduler there{via} ({e.strerror or e}); "
                                   f"start one with 'dask scheduler' or use --dask local") from None


def connect(address: str, *, timeout: Optional[float] = None, dashboard: bool = True):
    """A Dask client for ``--dask ADDRESS`` (see :func:`parse_address`).

    Parameters
    ----------
    address : str
    timeout : float or None
        Seconds to try reaching a scheduler (default: Dask's
        ``distributed.comm.timeouts.connect``, 30 s).
    dashboard : bool
        Serve the dashboard of a LocalCluster (its pages need bokeh).

    Returns
    -------
    (distributed.Client, distributed.LocalCluster or None)
        The cluster is the one this call started, else None; release both with
        :func:`close`.

    Raises
    ------
    DaskUnavailable, SchedulerUnreachable, ValueError
        Extra missing, nobody answering at ``address``, a malformed ``address``.
    """
    dd = require_distributed()
    kind, what = parse_address(address)
    if kind == "local":
        import dask

        # One thread per worker process (see the module notes); logs only on errors; the
        # dashboard on a free port (8787 may be taken by another user's cluster). No
        # statistical profiler in the workers: sampling the task thread's stack every
        # 10 ms cost about 15% of the CPU of an image (measured on 1,000 images).
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = dd.LocalCluster(n_workers=what, threads_per_worker=1, processes=True,
                                      dashboard_address=":0" if dashboard else None, silence_logs=logging.ERROR)
        return dd.Client(cluster, set_as_default=False), cluster
    # The address of a scheduler file, read and checked here (Dask's own reading of a
    # garbled file fails with an AssertionError and leaves a Client that hangs at exit).
    kw = {"address": scheduler_address(what) if kind == "file" else what}
    try:
        return dd.Client(timeout=timeout if timeout is not None else dd.client.no_default, set_as_default=False,
                         **kw), None
    except (OSError, TimeoutError) as e:
        raise SchedulerUnreachable(f"--dask {address}: cannot reach a Dask scheduler there "
                                   f"({' '.join(str(e).split()) or type(e).__name__}); start one with "
                                   f"'dask scheduler' or use --dask local") from None


def close(client, cluster=None) -> None:
    """Close a client from :func:`connect` and the LocalCluster it started, if any."""
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


# ----------------------------------------------------------------------------- probe

def _versions() -> Dict[str, str]:
    """Versions of what decides the bytes of a shard."""
    import cv2
    import h5py
    import numpy as np

    from . import __version__

    return {"synthcount": __version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version}


def _probe(out_dir: str, token: str, grace: float) -> dict:
    """On a worker: find the client's marker in ``out_dir`` and write a reply beside it."""
    info = {"host": socket.gethostname(), "versions": _versions()}
    marker = os.path.join(out_dir, PROBE_PREFIX + token)
    if not _appears(marker, grace):
        info["missing"] = True
        return info
    reply = f"{marker}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with open(reply, "x"):
            pass
        info["reply"] = reply
    except OSError as e:
        info["unwritable"] = e.strerror or str(e)
    return info


def _unprobe(out_dir: str, token: str) -> None:
    """On a worker: remove the probe files of ``token`` it can see."""
    try:
        names = [n for n in os.listdir(out_dir) if n.startswith(PROBE_PREFIX + token)]
    except OSError:
        return
    for n in names:
        try:
            os.remove(os.path.join(out_dir, n))
        except OSError:
            pass


def check_workers(client, out_dir: str) -> Dict[str, dict]:
    """Check that every worker sees ``out_dir`` (both ways) and runs the client's versions.

    Returns ``{worker address: {"host", "versions", ...}}``.

    Raises
    ------
    OutDirNotShared
        A worker cannot find the folder (or the marker the client wrote in it), cannot
        write there, or wrote a file the client cannot see.
    VersionMismatch
        A worker's synthcount, numpy, OpenCV, h5py or HDF5 differ from the client's.
    """
    token = os.urandom(8).hex()
    marker = os.path.join(out_dir, PROBE_PREFIX + token)
    with open(marker, "x"):
        pass
    try:
        answers = client.run(_probe, out_dir, token, VISIBILITY_GRACE_S)
        mine = _versions()
        for addr, info in sorted(answers.items()):
            where = f"worker {addr} (host {info['host']})"
            if info.get("missing"):
                raise OutDirNotShared(f"{where} cannot find {out_dir}, the folder the client made: OUT_DIR must be on "
                                      f"a filesystem every worker mounts at the same path")
            if "unwritable" in info:
                raise OutDirNotShared(f"{where} cannot write into {out_dir}: {info['unwritable']}")
            if not _appears(info["reply"], VISIBILITY_GRACE_S):
                raise OutDirNotShared(f"the client cannot see the file {os.path.basename(info['reply'])} that {where} "
                                      f"wrote into {out_dir}: OUT_DIR must be one filesystem that the client and "
                                      f"every worker share at the same path")
            diff = [f"{k} {info['versions'].get(k)} (client {v})" for k, v in mine.items()
                    if info["versions"].get(k) != v]
            if diff:
                raise VersionMismatch(f"{where} runs {', '.join(diff)}: the same bytes need the same versions on "
                                      f"the client and every worker")
        return answers
    finally:
        try:
            client.run(_unprobe, out_dir, token)
        except Exception as e:  # noqa: BLE001  best effort: a worker that vanished meanwhile
            log.debug("removing probe files on workers: %s", e)
        _unprobe(out_dir, token)


# ----------------------------------------------------------------------------- tasks

@contextlib.contextmanager
def _heap_kept():
    """Keep freed memory in the heap while a shard is made; give it back afterwards.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (so that freed
    memory returns to the OS at once). Setting it also fixes glibc's mmap threshold at
    128 KiB, so every image-sized temporary of the compositor becomes a fresh mmap that
    pays a page fault per 4 KiB: measured 60x the page faults and 20% more CPU per
    image. Nothing is changed where the variable is not set or malloc is not glibc's.
    """
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = _glibc()
    if trim is None or not trim.isdigit() or libc is None:
        yield
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:  # back to what the worker was started with
        libc.mallopt(M_TRIM_THRESHOLD, int(trim))
        libc.mallopt(M_MMAP_THRESHOLD, 128 << 10)
        libc.malloc_trim(0)


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


# A worker process makes one shard at a time: generate._STATE and its image blocks
# are per process, and a worker may run several task threads.
_WORKER_LOCK = threading.Lock()


def _shard_task(k: int, job: ShardJob) -> dict:
    """On a worker: make shard ``k`` of ``job`` (see ``generate._make_shard``)."""
    import cv2

    from . import generate

    if not _appears(os.path.join(job.out_dir, generate.IDENTITY_FILE), job.grace):
        raise OutDirNotShared(f"a worker on host {socket.gethostname()} cannot find {job.out_dir} (or its "
                              f"{generate.IDENTITY_FILE}), made by the client: OUT_DIR must be on a filesystem "
                              f"every worker mounts at the same path")
    while True:
        with _WORKER_LOCK:
            st = generate._STATE
            if st.get("dask_job") != job.token:  # the first task of this run in this process
                st.clear()
                st.update(job.state, dask_job=job.token)
                cv2.setNumThreads(1)  # as run_plan does: no OpenCV pool fighting the other workers for cores
            with _heap_kept():
                out = generate._make_shard(k)
        if "busy" not in out:
            break
        # Someone holds the shard's lock: another run's piece, or a worker of this run the
        # scheduler gave up on while it still works. Wait until it lets go: then the
        # shard exists (the run lists it) or its holder died (this task makes it).
        time.sleep(0.5)
    out.update(host=socket.gethostname(), pid=os.getpid())
    return out


def _in_progress(out_dir: str, name: str) -> bool:
    """Whether some process holds the lock of shard ``name`` (its lock file exists only
    while held, or as debris of a dead holder, whose lock is free)."""
    from .locks import LOCKS_DIR, ShardLock

    if not os.path.exists(os.path.join(out_dir, LOCKS_DIR, name + ".lock")):
        return False
    with ShardLock(out_dir, name) as lock:
        return not lock.acquired


def _wait_for_shards_in_progress(out_dir: str, todo: List[int], timeout: float) -> None:
    """After a failure: wait (up to ``timeout`` s) until no worker holds the lock of a
    shard of ``todo``, so that nothing is written into the folder after the client
    releases it. Only shards whose lock file exists can be in progress."""
    from .shards import shard_name

    time.sleep(0.5)  # a task the scheduler had already sent may be just starting
    deadline = time.monotonic() + timeout
    said = False
    pending = list(todo)
    while pending:
        pending = [k for k in pending if _in_progress(out_dir, shard_name(k))]
        if not pending or time.monotonic() > deadline:
            break
        if not said:
            log.warning("waiting for %d shard(s) in progress on Dask workers to end (Ctrl-C to stop waiting)",
                        len(pending))
            said = True
        time.sleep(0.5)
    if pending:
        log.warning("shard(s) %s still in progress on workers after %.0f s; their temporary files are removed "
                    "by the next run", pending[:10], timeout)


def run_shards(client, plan, todo: List[int], bar, collect: Callable[[dict], None]) -> None:
    """Make shards ``todo`` of ``plan`` on the cluster of ``client`` (called by ``run_plan``,
    which holds the folder lock and wrote ``dataset.json``).

    Parameters
    ----------
    client : distributed.Client
    plan : synthcount.generate.GenerationPlan
    todo : list of int
        Shards to make.
    bar : tqdm
        Advanced by each finished shard's images.
    collect : callable
        Called with each task's report (``_make_shard``'s dict).

    Raises
    ------
    OutDirNotShared, VersionMismatch
        See :func:`check_workers`; or a worker lost sight of OUT_DIR mid-run.
    DaskRunError
        A task kept killing its workers (``KilledWorker``) or was cancelled by the cluster.
    synthcount.compose.PlacementError, OSError
        A task's own error, raised again here.
    """
    if not todo:
        return
    dd = require_distributed()
    out_dir = os.path.abspath(plan.out_dir)
    workers = check_workers(client, out_dir)
    info = client.scheduler_info()
    nthreads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
    dash = client.dashboard_link if "dashboard" in info.get("services", {}) else None
    line = (f"Dask: {len(workers)} worker(s), {nthreads} thread(s) at {info.get('address', '?')}"
            + (f"; dashboard {dash}" if dash else "") + ("" if workers else "; waiting for workers to join"))
    log.info(line)
    if not bar.disable:
        bar.write(line)
    from .generate import _STATE

    job = job_for(out_dir, _STATE, VISIBILITY_GRACE_S)
    LAST_RUN.update(job_bytes=len(pickle.dumps(job, protocol=5)), tasks=len(todo), workers=len(workers))
    [job_f] = client.scatter([job], broadcast=True, hash=False)
    futures = [client.submit(_shard_task, k, job_f, key=f"synthcount-shard-{k:05d}-{job.token}", retries=0)
               for k in todo]
    try:
        for fut in dd.as_completed(futures, loop=client.loop):
            try:
                out = fut.result()
            except (dd.KilledWorker, dd.CancelledError) as e:
                raise DaskRunError(f"the Dask cluster could not finish shard {_shard_of(fut.key)} "
                                   f"({type(e).__name__}: {' '.join(str(e).split())})") from e
            if "n" in out and not _appears(os.path.join(out_dir, _name(out["shard"])), VISIBILITY_GRACE_S):
                raise OutDirNotShared(f"the client cannot see {_name(out['shard'])}, which a worker on host "
                                      f"{out.get('host')} reports it wrote into {out_dir}: OUT_DIR must be one "
                                      f"filesystem that the client and every worker share at the same path")
            collect(out)
            bar.update(out.get("n", 0))
    except BaseException:
        client.cancel(futures)
        _wait_for_shards_in_progress(out_dir, todo, WAIT_FOR_WORKERS_S)
        raise
    finally:
        client.cancel([job_f])  # frees the job on every worker


def _name(k: int) -> str:
    from .shards import shard_name

    return shard_name(k)


def _shard_of(key) -> str:
    m = re.search(r"synthcount-shard-(\d+)", str(key))
    return str(int(m.group(1))) if m else str(key)
