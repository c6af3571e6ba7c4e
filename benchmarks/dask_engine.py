"""What the Dask engine costs: one dataset made by 1 process, a local pool and a Dask cluster.

``python -m benchmarks.dask_engine [--dask local:2] [--images 8000] [--shard-size 250] [--quick] [--out FILE.json]``
(also ``python -m benchmarks.generate --dask local:2``).

The same dataset (built-in assets, the paper preset at 161x161, t = ``--t``; the
regression preset with ``--quick``) is made
into a fresh folder by ``generate_dataset`` with ``workers=1``, with a fork pool of
as many workers as the cluster has threads, and with ``client=`` on the cluster of
``--dask`` (a LocalCluster of N worker processes for ``local:N``). Per mode:
``images_per_s`` (the generator's clock: for Dask it includes the probe of OUT_DIR,
the scatter of the job and the tasks), ``end_to_end_images_per_s`` (the whole call:
planning, layout survey, manifest), ``cpu_s`` (CPU seconds of the whole call: this
process and its pool children, plus the Dask workers' processes) and
``cpu_images_per_s``, which a busy shared machine distorts less than wall time.
``ratios`` compares Dask with the pool and with one process; ``same_bytes`` checks
that the three manifests list the same checksums.

What a task ships: ``job_bytes`` (the pickled job, sent to each worker once by a
broadcast scatter), ``task_bytes`` (bytes the scheduler sent its workers over the
task streams during the run, per task: task specs, the job's key, bookkeeping) and
``client_bytes_per_task`` (bytes the client sent the scheduler, per task).
``cluster_start_s`` is the time to start a LocalCluster (not in the rates).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Dict, List

from synthcount import DatasetConfig, preset
from synthcount.generate import generate_dataset

from ._common import emit, format_table, machine, measure, parser, rate

__all__ = ["main"]


def _checksums(folder: str) -> List[str]:
    with open(os.path.join(folder, "manifest.json")) as f:
        return [s["sha256"] for s in json.load(f)["shards"]]


def _stream_bytes(dask_scheduler) -> int:
    """On the scheduler: bytes sent so far to all workers over the batched task streams."""
    return sum(bs.byte_count for bs in dask_scheduler.stream_comms.values())


def _worker_cpu() -> float:
    """On a worker: CPU seconds of its process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(tmp: str, cfg: DatasetConfig, repeats: int, **kw) -> Dict[str, object]:
    """Make the dataset ``repeats`` times into ``tmp/ds`` (left there until the next call)."""
    out = os.path.join(tmp, "ds")
    inner: List[float] = []
    busy: List[int] = []  # shards left to another holder of their lock (none expected here)

    def once():
        shutil.rmtree(out, ignore_errors=True)
        r = generate_dataset(out, cfg, progress=False, **kw)
        inner.append(r.images_per_second)
        busy.append(len(r.shards_busy))
        return r

    m = measure(once, repeats)
    sums = _checksums(out)
    return {"images": cfg.num_images, "shards": cfg.num_shards, "repeats": repeats,
            "images_per_s": sorted(inner)[len(inner) // 2],
            "end_to_end_images_per_s": rate(cfg.num_images, m["wall_s"]),
            "cpu_s": m["cpu_s"], "shards_busy": max(busy), "wall_runs_s": m["wall_runs"], "checksums": sums}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dask", default="local:2", metavar="ADDRESS", help="tcp://HOST:PORT, local or local:N")
    p.add_argument("--images", type=int, default=None, help="images in the dataset (default 8000, quick 96)")
    p.add_argument("--shard-size", type=int, default=None, help="images per shard (default 250, quick 12)")
    p.add_argument("--t", type=float, default=1.0, help="min_visible of the scene preset")
    p.add_argument("--preset", default=None, help="scene preset (default paper; quick: regression, whose layout "
                                                  "survey takes a second, not several)")
    p.add_argument("--repeats", type=int, default=None, help="runs per mode (default 1)")
    a = p.parse_args(argv)
    mach = machine()
    images = a.images or (96 if a.quick else 8000)
    shard = a.shard_size or (12 if a.quick else 250)
    repeats = a.repeats or 1
    if images < 1 or shard < 1 or repeats < 1:
        p.error("--images, --shard-size and --repeats must be >= 1")
    scene_preset = a.preset or ("regression" if a.quick else "paper")
    cfg = DatasetConfig(scene=preset(scene_preset, size=(161, 161), min_visible=a.t), num_images=images,
                        shard_size=shard)

    from synthcount.distributed import LAST_RUN, close, connect, parse_address

    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        # Warm-up: builds the built-in packs (cached per process) and imports.
        generate_dataset(os.path.join(tmp, "warm"), DatasetConfig(num_images=8, shard_size=8), progress=False)
        kind, what = parse_address(a.dask)
        if kind == "local":
            threads = what
        else:  # a running cluster: as many pool workers as it has threads
            client, _ = connect(a.dask)
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()) or 1
            close(client)
        # The local modes first: their fork pool must not copy the Dask client's threads.
        rows.append({"mode": "1 process", "workers": 1, **_run(tmp, cfg, repeats, workers=1)})
        rows.append({"mode": f"pool of {threads}", "workers": threads, **_run(tmp, cfg, repeats, workers=threads)})
        t0 = time.perf_counter()
        client, cluster = connect(a.dask)
        try:
            client.wait_for_workers(1, timeout=300)
            start_s = time.perf_counter() - t0
            sched0 = client.run_on_scheduler(_stream_bytes)
            client0 = client.scheduler_comm.byte_count
            cpu0 = sum(client.run(_worker_cpu).values())
            row = {"mode": f"dask {a.dask}", "workers": threads, **_run(tmp, cfg, repeats, client=client)}
            row["cpu_s"] += (sum(client.run(_worker_cpu).values()) - cpu0) / repeats
            tasks = cfg.num_shards * repeats
            row["task_bytes"] = (client.run_on_scheduler(_stream_bytes) - sched0) / tasks
            row["client_bytes_per_task"] = (client.scheduler_comm.byte_count - client0) / tasks
            rows.append(row)
            job_bytes = LAST_RUN["job_bytes"]  # the pickled job the run scattered
        finally:
            close(client, cluster)
    one, pool, dask = rows
    for r in rows:
        r["cpu_images_per_s"] = rate(images, r["cpu_s"])
    sums = {r["mode"]: r.pop("checksums") for r in rows}
    same = len({tuple(v) for v in sums.values()}) == 1
    res = {"benchmark": "dask_engine", "quick": a.quick, "machine": mach,
           "settings": {"assets": "built-in", "scene": f"{scene_preset} preset, 161x161, t = {a.t}", "images": images,
                        "shard_size": shard, "dask": a.dask, "repeats": repeats},
           "modes": rows, "same_bytes": same, **({} if same else {"checksums": sums}),
           "ratios": {"dask_vs_pool": rate(dask["images_per_s"], pool["images_per_s"]),
                      "dask_vs_one_process": rate(dask["images_per_s"], one["images_per_s"]),
                      "pool_vs_one_process": rate(pool["images_per_s"], one["images_per_s"]),
                      "dask_vs_pool_end_to_end": rate(dask["end_to_end_images_per_s"], pool["end_to_end_images_per_s"]),
                      "dask_vs_pool_cpu": rate(dask["cpu_images_per_s"], pool["cpu_images_per_s"])},
           "job_bytes": job_bytes, "task_bytes": dask["task_bytes"],
           "client_bytes_per_task": dask["client_bytes_per_task"], "cluster_start_s": start_s}
    tables = [format_table(rows, ["mode", "workers", "images", "shards", "images_per_s", "end_to_end_images_per_s",
                                  "cpu_s", "cpu_images_per_s"],
                           "same dataset, three engines (generator clock; medians)"),
              format_table([{**res["ratios"], "job_bytes": job_bytes, "task_bytes": dask["task_bytes"],
                             "cluster_start_s": start_s}],
                           ["dask_vs_pool", "dask_vs_pool_cpu", "dask_vs_one_process", "pool_vs_one_process",
                            "job_bytes", "task_bytes", "cluster_start_s"], "Dask overhead")]
    emit(res, tables, a.out)


if __name__ == "__main__":
    main()
