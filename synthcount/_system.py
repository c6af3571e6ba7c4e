"""Facts about the machine a run is on."""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["usable_cores", "mem_available"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under Slurm or
    taskset), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def mem_available() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
