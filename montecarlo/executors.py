"""Where the chunks run: in this process, or as Ray tasks on a cluster.

Ray stays in this module. Each Ray task takes one contiguous range of chunks and returns its
partial (top-k losses and per-chunk statistics, or tree nodes of tail sums); the driver in
:mod:`montecarlo.engine` merges them exactly, so a Ray run gives the same bits as a local one.
With the CuPy backend each task asks Ray for one GPU.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from threadpoolctl import threadpool_limits

from montecarlo.engine import Executor, ProgressFn, RiskProblem
from montecarlo.errors import InvalidParameter, MonteCarloError

log = logging.getLogger(__name__)


def single_blas_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` with BLAS limited to one thread.

    A multi-threaded BLAS splits a product differently for different thread counts and so
    changes the last bits of the P&L; with one BLAS thread per worker, a chunk gives the same
    bits in every process, which the exact local/Ray equality rests on. Parallelism comes from
    the workers (processes) instead.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return fn(*args, **kwargs)


#: a pass over fewer loss values (accounts x scenarios) than this runs in this process
PROCESS_THRESHOLD = 20_000_000


class LocalExecutor(Executor):
    """This machine: each pass cut into ``workers`` contiguous chunk ranges.

    Large NumPy passes run the ranges on a pool of worker processes (NumPy holds the GIL in
    ``partition`` and in its generators, so threads do not scale); small passes, and the CuPy
    backend, run them one after the other in this process. The figures are the same either
    way. ``processes`` forces the choice; the pool lives until :meth:`close`.
    """

    name = "local"

    def __init__(self, workers: int | None = None, processes: bool | None = None) -> None:
        workers = workers or os.cpu_count() or 1
        if workers < 1:
            raise InvalidParameter("workers", f"must be >= 1, got {workers}")
        self.workers = workers
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _use_processes(
        self, problem: RiskProblem, ranges: list[tuple[int, int]], backend: Any
    ) -> bool:
        if backend != "numpy":
            return False
        if self.processes is not None:  # forced: even one range runs in a worker process
            return self.processes
        return len(ranges) >= 2 and problem.n_accounts * problem.scenarios >= PROCESS_THRESHOLD

    def map(
        self,
        fn: Callable[..., Any],
        problem: RiskProblem,
        ranges: list[tuple[int, int]],
        progress: ProgressFn | None,
        **kwargs: Any,
    ) -> list[Any]:
        if self._use_processes(problem, ranges, kwargs.get("backend")):
            try:
                return self._on_processes(fn, problem, ranges, progress, kwargs)
            except BrokenProcessPool as exc:  # e.g. a __main__ the workers cannot re-import
                log.warning("local executor: worker processes failed (%s); running in-process", exc)
                self.close()
                self.processes = False
        with threadpool_limits(limits=1, user_api="blas"):
            return [fn(problem, first=a, last=b, on_chunk=progress, **kwargs) for a, b in ranges]

    def _on_processes(
        self,
        fn: Callable[..., Any],
        problem: RiskProblem,
        ranges: list[tuple[int, int]],
        progress: ProgressFn | None,
        kwargs: dict[str, Any],
    ) -> list[Any]:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["montecarlo.engine"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        futures = {
            self._pool.submit(single_blas_thread, fn, problem, first=a, last=b, **kwargs): b - a
            for a, b in ranges
        }
        for done in as_completed(futures):
            if progress is not None:
                progress(futures[done])
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RayUnavailable(MonteCarloError, RuntimeError):
    """Ray could not be started or reached."""


class RayExecutor(Executor):
    """Ray tasks, one per chunk range.

    Parameters
    ----------
    address : a running cluster (``ray.init(address=...)``); None starts a local Ray for the run,
        or reuses the one already initialised in this process.
    workers : number of tasks a pass is cut into; defaults to the cluster's CPUs (or GPUs).
    gpu : ask Ray for one GPU per task (use with the CuPy backend).
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, workers: int | None = None, gpu: bool = False
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a regular dependency
            raise RayUnavailable(f"executor: ray cannot be imported ({exc})") from exc
        self._ray = ray
        self.gpu = gpu
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(
                    address=address,
                    num_cpus=workers if address is None else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
                where = address or "a local Ray"
                raise RayUnavailable(f"ray_address: cannot start or reach {where} ({exc})") from exc
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        unit = "GPU" if gpu else "CPU"
        available = int(resources.get(unit, 0))
        if available < 1:
            raise RayUnavailable(f"executor: the Ray cluster has no {unit}")
        self.workers = workers or available
        log.info("ray executor: %d tasks per pass over %d %s", self.workers, available, unit)

    def map(
        self,
        fn: Callable[..., Any],
        problem: RiskProblem,
        ranges: list[tuple[int, int]],
        progress: ProgressFn | None,
        **kwargs: Any,
    ) -> list[Any]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, num_gpus=1 if self.gpu else 0)(single_blas_thread)
        problem_ref = ray.put(problem)
        pending = {
            remote.remote(fn, problem_ref, first=a, last=b, **kwargs): (b - a) for a, b in ranges
        }
        order = list(pending)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                chunks = pending.pop(ref)
                if progress is not None:
                    progress(chunks)
        return list(ray.get(order))

    def close(self) -> None:
        """Shut Ray down if this executor started it; a cluster or a caller's Ray stays up."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
