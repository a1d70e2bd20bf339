"""Up-front limits of ``omnimargin risk``: a tail too small to estimate ES from, and a run
whose memory estimate exceeds the memory available (refused before any scenario is drawn)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from aggregator.errors import InputError
from montecarlo import plan_chunks

#: fewest tail scenarios (ceil((1 - alpha) M)) an ES is estimated from
MIN_TAIL = 10
#: allowance for the float64 arrays of one chunk alive at once in a worker: the returns,
#: their correlated copy, the losses and the partition's copy
WORKING_FACTOR = 4
#: the tail: top-k losses held (up to 2k before a merge), the merge's copy and pass 2's counts
TAIL_FACTOR = 4
FLOAT_BYTES = 8


def tail_size(scenarios: int, alpha: float) -> int:
    """k = ceil((1 - alpha) M), rounded as the engine rounds it (0.99 x 100000 = 1000)."""
    return math.ceil(round((1.0 - alpha) * scenarios, 9))


def check_tail(scenarios: int, alpha: float) -> None:
    k = tail_size(scenarios, alpha)
    if k < MIN_TAIL:
        need = math.ceil(round(MIN_TAIL / (1.0 - alpha), 6))
        raise InputError(
            "scenarios",
            f"{scenarios:,} scenarios leave {k} in the {1 - alpha:.4g} tail, fewer than "
            f"{MIN_TAIL} (ES would rest on a handful of draws): use at least {need:,}",
        )


def memory_estimate(scenarios: int, columns: int, alpha: float, workers: int) -> int:
    """Bytes a run needs at its peak: every worker's chunk (scenarios x columns x 8 bytes x
    the working factor, chunk by chunk) and the tail kept across chunks."""
    plan = plan_chunks(scenarios)
    per_worker = plan.chunk_size * (columns + 1) * FLOAT_BYTES * WORKING_FACTOR
    tail = tail_size(scenarios, alpha) * FLOAT_BYTES * TAIL_FACTOR
    per_chunk = plan.n_chunks * 4 * FLOAT_BYTES  # VaR, ES and their counts per chunk
    return max(1, min(workers, plan.n_chunks)) * per_worker + tail + per_chunk


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo, else the free
    physical pages); None where neither can be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(scenarios: int, columns: int, alpha: float, workers: int) -> None:
    need = memory_estimate(scenarios, columns, alpha, workers)
    have = available_memory()
    if have is not None and need > have:
        raise InputError(
            "scenarios",
            f"{scenarios:,} scenarios need about {_mib(need)} of memory, "
            f"only {_mib(have)} is available: use fewer scenarios or workers",
        )


def _mib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"
