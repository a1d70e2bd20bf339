"""Wall-clock timing with repeats, and peak traced memory of one call."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one thing.

    The headline figure is ``best`` (the minimum, as :mod:`timeit` recommends: the other runs
    were slowed by something else on the machine); ``median`` is reported alongside.
    """

    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        """Fastest run."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        """Median run."""
        return statistics.median(self.seconds)


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by ``fn()`` (garbage collection off meanwhile), and what it returned."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out
    finally:
        if enabled:
            gc.enable()


def time_interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Timing]:
    """``repeat`` rounds (at least one), each running every function once, in order.

    Interleaving spreads a burst of outside load over all the things compared.
    """
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            seconds[name].append(time_once(fn)[0])
    return {name: Timing(tuple(t)) for name, t in seconds.items()}


def _status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``), None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def child_pids() -> list[int]:
    """Processes started by this one, recursively (an executor's workers, Ray's daemons)."""
    try:
        import psutil
    except ImportError:
        return []
    return [c.pid for c in psutil.Process().children(recursive=True)]


def reset_peak_rss(pids: list[int]) -> dict[int, int]:
    """Reset each process's peak RSS (``clear_refs`` 5) and return its RSS now, in KiB."""
    before: dict[int, int] = {}
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            continue
        rss = _status_kib(pid, "VmRSS")
        if rss is not None:
            before[pid] = rss
    return before


def peak_rss_growth_mib(before: dict[int, int]) -> float:
    """Sum over the processes now alive below this one of (peak RSS - RSS at reset), MiB.

    A process started after the reset counts from zero. Peaks of different processes need not
    coincide, so this bounds their joint peak from above.
    """
    total = 0
    for pid in child_pids():
        peak = _status_kib(pid, "VmHWM")
        if peak is not None:
            total += max(0, peak - before.get(pid, 0))
    return total / 1024.0


def traced_peak_mib(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Peak memory traced by :mod:`tracemalloc` during ``fn()`` in MiB, and what it returned.

    NumPy reports its array buffers to tracemalloc, so this is the peak of NumPy (and Python)
    allocations of the run in this process, on all threads; device memory and other processes
    (Ray workers) are not seen. Tracing slows the run down, so it is never timed.
    """
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return (peak - base) / MIB, out


def engine_peak_mib(fn: Callable[[], Any]) -> tuple[dict[str, float | int], Any]:
    """Peak memory of ``fn()``: traced in this process plus peak RSS growth of child processes.

    Returns ({"driver": MiB, "workers": MiB, "total": MiB, "processes": n}, what fn returned).
    Run it after a warm-up, so that worker pools already exist and only the run's own growth
    is counted.
    """
    pids = child_pids()
    before = reset_peak_rss(pids)
    driver, out = traced_peak_mib(fn)
    workers = peak_rss_growth_mib(before)
    figures: dict[str, float | int] = {
        "driver": driver,
        "workers": workers,
        "total": driver + workers,
        "processes": len(child_pids()),
    }
    return figures, out
