"""The speed-of-light reference: only the array operations a case cannot avoid.

Per chunk of the engine's own chunk plan (:func:`montecarlo.engine.plan_chunks`):

* pass 1: draw the standard normals ``rng.standard_normal((m, n))``, correlate them
  (``z @ F.T``), the P&L product ``(A, n) @ (n, m)`` and the partial selection of each account's
  top k along the scenario axis (``partition`` of the (A, m) loss matrix);
* pass 2 (component ES): the same draws and products again, the tail indicator
  ``losses > VaR`` and the tail-sum product ``(A, m) @ (m, n)``.

The accounts are cut into the engine's blocks (at most ``montecarlo.engine.LOSS_BLOCK`` losses
per chunk and block, when the engine has such a limit), so the loss matrices have the engine's
shapes.

No ``expm1``, no merges, no per-chunk statistics: those are the engine's own costs. The chunk
ranges are spread like :class:`montecarlo.executors.LocalExecutor` spreads them (contiguous
ranges on a thread pool, BLAS limited to one thread), so the ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from threadpoolctl import threadpool_limits

from montecarlo import RiskProblem, resolve_backend
from montecarlo import engine as mc_engine
from montecarlo.engine import ChunkPlan, split_chunks
from montecarlo.models import GaussianModel, correlation_factor


@dataclass(frozen=True)
class ReferenceWork:
    """The arrays the reference needs, on one backend."""

    xp: ModuleType
    plan: ChunkPlan
    k: int
    n_assets: int
    dtype: str
    factor_t: Any  # (n, n)
    neg_exposures_t: list[Any]  # (B, n) per account block
    thresholds: list[Any]  # (B, 1) per account block: a stand-in VaR for the pass-2 indicator

    @classmethod
    def from_problem(cls, problem: RiskProblem, backend: str) -> ReferenceWork:
        """Bind ``problem`` (a Gaussian or Student-t model) to ``backend``."""
        if not isinstance(problem.model, GaussianModel):
            raise TypeError("the reference needs a parametric (Gaussian-type) model")
        xp = resolve_backend(backend).xp
        corr = problem.model.correlation
        dtype = problem.dtype
        neg_t = xp.asarray(-problem.exposures.T, dtype=dtype)
        blocks = account_blocks(problem)
        return cls(
            xp=xp,
            plan=problem.plan,
            k=problem.k,
            n_assets=len(problem.model.assets),
            dtype=dtype,
            factor_t=xp.asarray(correlation_factor(corr).T, dtype=dtype),
            neg_exposures_t=[neg_t[b] for b in blocks],
            thresholds=[xp.zeros((b.stop - b.start, 1), dtype=dtype) for b in blocks],
        )


def account_blocks(problem: RiskProblem) -> list[slice]:
    """The engine's account blocks: at most ``LOSS_BLOCK`` losses per chunk (all, without it)."""
    n = problem.n_accounts
    limit = getattr(mc_engine, "LOSS_BLOCK", None)
    size = n if limit is None else max(1, int(limit) // problem.plan.chunk_size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _draw(work: ReferenceWork, c: int) -> Any:
    """Correlated normals (m, n) of chunk c."""
    start, stop = work.plan.bounds(c)
    rng = work.xp.random.default_rng(c)
    z = rng.standard_normal((stop - start, work.n_assets), dtype=work.dtype)
    return z @ work.factor_t


def pass1_chunk(work: ReferenceWork, c: int) -> None:
    """Draw, correlate, then per account block the P&L product and top-k partition."""
    x = _draw(work, c)
    m = int(x.shape[0])
    w = min(work.k, m)
    for neg_e_t in work.neg_exposures_t:
        losses = neg_e_t @ x.T
        if w < m:
            work.xp.partition(losses, m - w, axis=1)


def pass2_chunk(work: ReferenceWork, c: int) -> None:
    """Draw, correlate, then per account block the P&L product, tail indicator and tail sums."""
    x = _draw(work, c)
    for neg_e_t, threshold in zip(work.neg_exposures_t, work.thresholds, strict=True):
        losses = neg_e_t @ x.T
        _ = (losses > threshold).astype(work.dtype) @ x


def _worker(
    fn: Callable[[ReferenceWork, int], Any], work: ReferenceWork, first: int, last: int
) -> None:
    for c in range(first, last):
        fn(work, c)


def _map(fn: Callable[[ReferenceWork, int], Any], work: ReferenceWork, workers: int) -> None:
    """Run ``fn`` over every chunk, one contiguous range of chunks per thread."""
    ranges = split_chunks(work.plan.n_chunks, workers)
    if len(ranges) == 1:
        _worker(fn, work, *ranges[0])
        return
    with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
        futures = [pool.submit(_worker, fn, work, a, b) for a, b in ranges]
        for f in futures:
            f.result()


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (CuPy); nothing to do on NumPy."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.Device().synchronize()


def run_reference(work: ReferenceWork, workers: int, components: bool = False) -> None:
    """All chunks of the plan on ``workers`` threads, one contiguous range each, 1 BLAS thread.

    With ``components``, a second map runs pass 2 over the same ranges, as the engine does.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        _map(pass1_chunk, work, workers)
        if components:
            _map(pass2_chunk, work, workers)
    synchronize(work.xp)
