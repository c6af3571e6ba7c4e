"""Shared machinery of the benchmarks: clocks, memory, machine description, output.

Every benchmark prints exactly one JSON object as the last line of stdout and a
readable table on stderr, so ``python -m benchmarks.NAME | tail -1 | jq`` works.

Clocks: wall time (``time.perf_counter``) and process CPU time (user + system of
this process and of its waited-for children, from ``getrusage``). On a shared
machine wall figures are inflated by other people's work; CPU time is not (but
it does not show parallel speed-up, which only wall time can).

Memory: the peak resident set of this process since :func:`reset_peak` (Linux
``VmHWM``, reset through ``/proc/self/clear_refs``) and the largest peak of any
child process so far (``getrusage(RUSAGE_CHILDREN)``, which cannot be reset).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Sequence

from synthcount._system import usable_cores

__all__ = ["Clock", "measure", "reset_peak", "peak_rss_mb", "children_peak_rss_mb", "machine", "parser",
           "emit", "format_table", "rate"]


class Clock:
    """Wall and CPU time (incl. waited-for children) between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._w0 = self._c0 = 0.0

    @staticmethod
    def _cpu() -> float:
        # getrusage has microsecond resolution (os.times only clock ticks of 10 ms).
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def __enter__(self) -> "Clock":
        self._w0, self._c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._w0
        self.cpu = self._cpu() - self._c0


def rate(n: float, seconds: float) -> float:
    """Items per second (0 when no time passed)."""
    return float(n) / seconds if seconds > 0 else 0.0


def measure(fn: Callable[[], Any], repeats: int) -> Dict[str, Any]:
    """Run ``fn`` ``repeats`` times; median wall and CPU seconds, and every run's.

    Returns
    -------
    dict
        ``wall_s`` / ``cpu_s`` (medians, float >= 0), ``wall_runs`` / ``cpu_runs``
        (lists), ``last`` (what the last call returned).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    walls, cpus, last = [], [], None
    for _ in range(repeats):
        with Clock() as c:
            last = fn()
        walls.append(c.wall)
        cpus.append(c.cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "wall_runs": [round(w, 4) for w in walls], "cpu_runs": [round(c, 4) for c in cpus], "last": last}


def reset_peak() -> bool:
    """Reset this process's peak RSS counter (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB (since the last :func:`reset_peak`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any finished child process so far, MiB (never reset)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> Dict[str, Any]:
    """What the figures were measured on (no torch import: versions come from metadata)."""
    usable = usable_cores()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    versions = {d: _version(d) for d in ("synthcount", "numpy", "opencv-python-headless", "h5py", "Pillow",
                                         "torch", "torchvision")}
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {k: v for k, v in versions.items() if v},
        "load_average_at_start": load,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the flags every benchmark has: ``--quick``, ``--out``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI): few images, one repeat")
    p.add_argument("--out", metavar="FILE.json", help="also write the JSON result to this file")
    return p


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """Rows of dicts as an aligned text table (floats rounded to 3 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "nan"
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return "-" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def emit(result: Dict[str, Any], tables: List[str], out: Optional[str]) -> None:
    """Tables to stderr, the JSON object as the last stdout line, and to ``out`` if given."""
    m = result.get("machine")
    if isinstance(m, dict):
        try:
            m["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            pass
    for t in tables:
        print(t + "\n", file=sys.stderr)
    text = json.dumps(result, sort_keys=False, default=_jsonable)
    if out:
        d = os.path.dirname(os.path.abspath(out))
        os.makedirs(d, exist_ok=True)
        from synthcount._io import atomic_write

        with atomic_write(out, "w") as f:
            f.write(json.dumps(result, indent=1, default=_jsonable) + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
