"""The chunked, deterministic Monte Carlo risk engine for many accounts at once.

Scenarios are generated in chunks; chunk c draws from a generator keyed by (seed, c), so a run's
figures depend on (model, exposures, alpha, M, seed, chunk plan) only, never on how the chunks are
spread over workers or machines. Memory is bounded by the chunk size and the tail size k, not M.

Pass 1 (always): per chunk, P&L = R_c @ E as one matrix product (the losses are held as
(accounts, m) so the selection runs along contiguous rows), a partial selection of each account's
k largest losses merged into a running top-k, and per-chunk VaR/ES for the batch-means standard
errors. The driver merges the workers' top-k exactly.

Pass 2 (when component ES is wanted): the chunks are drawn again (same keys, same bits) and, with
each account's VaR now known, the tail indicator matrix W (accounts, m) gives the tail sums of
returns as one more product W @ R_c. Ties at VaR share the remaining tail places evenly, so the
components sum to ES exactly and do not depend on scenario order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from montecarlo.backend import resolve_backend, to_numpy
from montecarlo.errors import InconsistentResult, InvalidParameter
from montecarlo.measures import batch_stderr, check_alpha, tail_count, top_k
from montecarlo.models import ScenarioModel, canonical_order, reorder
from montecarlo.reduce import Node, TreeFold, tree_total

#: largest chunk of scenarios drawn at once
DEFAULT_MAX_CHUNK = 32_768
#: at least this many chunks (batches for the standard errors) when M allows
MIN_BATCHES = 16
#: at most this many loss values (accounts x scenarios) computed at once in a worker
LOSS_BLOCK = 1 << 23
DTYPES = ("float64", "float32")

ProgressFn = Callable[[int], None]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ChunkPlan:
    """How M scenarios are cut into ``n_chunks`` chunks whose sizes differ by at most one;
    ``chunk_size`` is the largest."""

    scenarios: int
    chunk_size: int
    n_chunks: int

    def bounds(self, c: int) -> tuple[int, int]:
        return c * self.scenarios // self.n_chunks, (c + 1) * self.scenarios // self.n_chunks


def plan_chunks(
    scenarios: int, max_chunk: int = DEFAULT_MAX_CHUNK, min_batches: int = MIN_BATCHES
) -> ChunkPlan:
    """At least ``min_batches`` chunks (for the standard errors), none above ``max_chunk``."""
    if isinstance(scenarios, bool) or not isinstance(scenarios, int | np.integer):
        raise InvalidParameter("scenarios", f"must be an integer, got {scenarios!r}")
    if scenarios < 1:
        raise InvalidParameter("scenarios", f"must be >= 1, got {scenarios}")
    if max_chunk < 1:
        raise InvalidParameter("max_chunk", f"must be >= 1, got {max_chunk}")
    n = max(math.ceil(scenarios / max_chunk), min(min_batches, scenarios))
    return ChunkPlan(int(scenarios), math.ceil(scenarios / n), n)


def chunk_seed(seed: int, chunk: int) -> int:
    """The generator key of chunk ``chunk``: a 63-bit integer from SeedSequence([seed, chunk])."""
    state = np.random.SeedSequence([seed, chunk]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def split_chunks(n_chunks: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, nearly equal chunk ranges for ``parts`` workers (empty ranges dropped)."""
    parts = max(1, min(parts, n_chunks))
    edges = [round(i * n_chunks / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True, eq=False)
class RiskProblem:
    """Everything that determines a run's figures.

    Attributes
    ----------
    model : the scenario model (n assets).
    exposures : (n, A) USD exposure of each account to each asset.
    alpha : confidence level in (0, 1).
    scenarios : M.
    seed : non-negative integer.
    dtype : ``float64`` (default) or ``float32``.
    max_chunk : the largest chunk; with M it fixes the chunk plan.
    """

    model: ScenarioModel
    exposures: np.ndarray
    alpha: float
    scenarios: int
    seed: int = 0
    dtype: str = "float64"
    max_chunk: int = DEFAULT_MAX_CHUNK
    plan: ChunkPlan = field(init=False)
    k: int = field(init=False)

    def __post_init__(self) -> None:
        e = np.asarray(self.exposures, dtype=np.float64)
        if e.ndim == 1:
            e = e[:, None]
        n = len(self.model.assets)
        if e.ndim != 2 or e.shape[0] != n:
            raise InvalidParameter("exposures", f"expected shape ({n}, accounts), got {e.shape}")
        if e.shape[1] < 1:
            raise InvalidParameter("exposures", "at least one account is needed")
        if not np.all(np.isfinite(e)):
            raise InvalidParameter("exposures", "must be finite")
        if self.dtype not in DTYPES:
            raise InvalidParameter("dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise InvalidParameter("seed", f"must be an integer, got {self.seed!r}")
        if self.seed < 0:
            raise InvalidParameter("seed", f"must be >= 0, got {self.seed}")
        plan = plan_chunks(self.scenarios, self.max_chunk)
        object.__setattr__(self, "exposures", e)
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "k", tail_count(self.alpha, plan.scenarios))

    @property
    def n_accounts(self) -> int:
        return int(self.exposures.shape[1])

    def canonical(self) -> tuple[RiskProblem, np.ndarray]:
        """This problem with assets sorted by name, and the order used (canonical[j] = own[o[j]]).

        Scenarios are drawn in the canonical order, so listing assets differently gives the
        same draws, the same P&L sums and the same bits.
        """
        order = canonical_order(tuple(self.model.assets))
        if np.array_equal(order, np.arange(order.size)) and not _has_unsorted_jumps(self.model):
            return self, order
        return RiskProblem(
            reorder(self.model, order),
            self.exposures[order],
            self.alpha,
            self.scenarios,
            self.seed,
            self.dtype,
            self.max_chunk,
        ), order


def _has_unsorted_jumps(model: ScenarioModel) -> bool:
    jumps = getattr(model, "jumps", ())
    names = [j.name for j in jumps]
    return names != sorted(names)


class _Bound:
    """A problem bound to an array namespace inside one worker.

    Accounts are processed in blocks so that one block's losses hold at most ``LOSS_BLOCK``
    values, whatever the number of accounts; the blocks depend on the problem only, so both
    passes (and every worker) compute each loss with the same product.
    """

    def __init__(self, problem: RiskProblem, backend: str) -> None:
        self.problem = problem
        self.xp = resolve_backend(backend).xp
        self.sampler = problem.model.sampler(self.xp, problem.dtype)
        # losses = (-E^T) @ R^T: (A, n) @ (n, m) -> (A, m), one block of accounts at a time
        neg_t = self.xp.asarray(-problem.exposures.T, dtype=problem.dtype)
        size = max(1, LOSS_BLOCK // problem.plan.chunk_size)
        n_accounts = problem.n_accounts
        self.blocks = [slice(i, min(i + size, n_accounts)) for i in range(0, n_accounts, size)]
        self.neg_exposures_t = [neg_t[b] for b in self.blocks]

    def returns(self, c: int) -> Any:
        """Scenario returns R_c (m, n) of chunk c."""
        start, stop = self.problem.plan.bounds(c)
        rng = self.xp.random.default_rng(chunk_seed(self.problem.seed, c))
        return self.sampler.sample(rng, stop - start)

    def losses(self, r: Any, block: int) -> Any:
        """Losses (accounts of ``block``, m) of the scenarios ``r``."""
        return self.neg_exposures_t[block] @ r.T


# --------------------------------------------------------------------------- pass 1: tails


@dataclass
class TailPartial:
    """What a worker returns from pass 1 over chunks [first, last).

    top : (A, <= k) the k largest losses of its chunks, unordered.
    batch_var, batch_es : (last - first, A) VaR and ES of each chunk on its own.
    """

    first: int
    last: int
    top: np.ndarray
    batch_var: np.ndarray
    batch_es: np.ndarray


class _TailTracker:
    """Running top-k and per-chunk figures of one block of accounts."""

    def __init__(self, xp: Any, k: int, alpha: float) -> None:
        self.xp, self.k, self.alpha = xp, k, alpha
        self.held: list[Any] = []
        self.held_n = 0
        self.threshold: Any = None  # (B, 1) k-th largest loss held so far, once k are held
        self.batch_var: list[Any] = []
        self.batch_es: list[Any] = []

    def add(self, losses: Any) -> None:
        xp, k = self.xp, self.k
        m = int(losses.shape[1])
        k_c = tail_count(self.alpha, m)
        if self.threshold is None:
            w = min(k, m)
        else:
            w = min(m, max(k_c, int((losses > self.threshold).sum(axis=1).max())))
        chunk_top = top_k(losses, w, overwrite=True)  # the chunk's losses are a temporary
        # sorted, so the batch mean does not depend on what this worker saw before
        batch_tail = xp.sort(top_k(chunk_top, k_c), axis=1)
        self.batch_var.append(batch_tail.min(axis=1))
        self.batch_es.append(batch_tail.mean(axis=1))
        self.held.append(chunk_top)
        self.held_n += w
        if self.held_n >= 2 * k or (self.threshold is None and self.held_n >= k):
            merged = top_k(xp.concatenate(self.held, axis=1), k)
            self.held, self.held_n = [merged], k
            self.threshold = merged.min(axis=1)[:, None]

    def top(self) -> Any:
        return top_k(self.xp.concatenate(self.held, axis=1), min(self.k, self.held_n))


def tail_pass(
    problem: RiskProblem, backend: str, first: int, last: int, on_chunk: ProgressFn | None = None
) -> TailPartial:
    """Pass 1 over chunks [first, last): each account's k largest losses and per-chunk figures.

    Once k losses are held, only a chunk's losses above the account's current k-th largest can
    enter the tail, so each chunk contributes its top ``w`` (w = the most such losses in any
    account, at least the chunk's own tail size) and the held candidates are cut back to k only
    when they reach 2k. Cost per chunk: one comparison and one partition of the (A, m) losses.
    """
    b = _Bound(problem, backend)
    xp = b.xp
    trackers = [_TailTracker(xp, problem.k, problem.alpha) for _ in b.blocks]
    for c in range(first, last):
        r = b.returns(c)
        for j, tracker in enumerate(trackers):
            tracker.add(b.losses(r, j))
        if on_chunk is not None:
            on_chunk(1)
    top = xp.concatenate([t.top() for t in trackers], axis=0)
    batch_var = xp.concatenate([xp.stack(t.batch_var) for t in trackers], axis=1)
    batch_es = xp.concatenate([xp.stack(t.batch_es) for t in trackers], axis=1)
    return TailPartial(first, last, to_numpy(top), to_numpy(batch_var), to_numpy(batch_es))


# --------------------------------------------------------------------------- pass 2: components


@dataclass
class ComponentPartial:
    """What a worker returns from pass 2: tail sums as tree nodes and exact tie counts.

    sums : tree nodes of (A, n) sums of R rows with loss >= VaR (``split``: loss > VaR) and,
        with ``split``, ``eq_sums`` of rows with loss == VaR.
    n_gt, n_eq : (A,) counts of losses above and equal to VaR (without ``split``: n_gt is 0
        and n_eq counts the losses >= VaR).
    """

    sums: dict[Node, Any]
    eq_sums: dict[Node, Any]
    n_gt: np.ndarray
    n_eq: np.ndarray


def component_pass(
    problem: RiskProblem,
    backend: str,
    first: int,
    last: int,
    var: np.ndarray,
    split: bool = False,
    on_chunk: ProgressFn | None = None,
) -> ComponentPartial:
    """Pass 2 over chunks [first, last) given each account's VaR (A,) from pass 1."""
    b = _Bound(problem, backend)
    xp, dtype = b.xp, problem.dtype
    thresholds = [xp.asarray(var[blk], dtype=dtype)[:, None] for blk in b.blocks]
    fold, eq_fold = TreeFold(), TreeFold()
    n_gt = np.zeros(problem.n_accounts, dtype=np.int64)
    n_eq = np.zeros(problem.n_accounts, dtype=np.int64)
    for c in range(first, last):
        r = b.returns(c)
        sums, eq_sums = [], []
        for j, blk in enumerate(b.blocks):
            losses = b.losses(r, j)
            if not split:  # one comparison: the tail is every loss >= VaR unless ties spill
                ge = losses >= thresholds[j]
                n_eq[blk] += to_numpy(ge.sum(axis=1))
                sums.append(ge.astype(dtype) @ r)
                continue
            gt = losses > thresholds[j]
            eq = losses == thresholds[j]
            n_gt[blk] += to_numpy(gt.sum(axis=1))
            n_eq[blk] += to_numpy(eq.sum(axis=1))
            sums.append(gt.astype(dtype) @ r)
            eq_sums.append(eq.astype(dtype) @ r)
        fold.push(c, to_numpy(xp.concatenate(sums, axis=0)).astype(np.float64))
        if split:
            eq_fold.push(c, to_numpy(xp.concatenate(eq_sums, axis=0)).astype(np.float64))
        if on_chunk is not None:
            on_chunk(1)
    return ComponentPartial(fold.nodes(), eq_fold.nodes(), n_gt, n_eq)


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True, eq=False)
class RiskResult:
    """Figures of one run, per account (A accounts, n assets). Losses are positive USD.

    var, es, var_stderr, es_stderr : (A,)
    components : (A, n) component ES (Euler), summing to ``es``; None if not asked for.
    tail : (A, k) the k largest losses, in decreasing order.
    """

    assets: tuple[str, ...]
    alpha: float
    scenarios: int
    seed: int
    k: int
    plan: ChunkPlan
    var: np.ndarray
    es: np.ndarray
    var_stderr: np.ndarray
    es_stderr: np.ndarray
    components: np.ndarray | None
    tail: np.ndarray
    backend: str
    executor: str
    workers: int


class Executor:
    """Runs pass functions over chunk ranges. ``LocalExecutor``, ``RayExecutor`` implement it."""

    name = "abstract"
    workers = 1

    def map(
        self,
        fn: Callable[..., Any],
        problem: RiskProblem,
        ranges: list[tuple[int, int]],
        progress: ProgressFn | None,
        **kwargs: Any,
    ) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (worker pools, a Ray it started itself)."""


def merge_tails(problem: RiskProblem, parts: list[TailPartial]) -> tuple[np.ndarray, ...]:
    """Exact merge of pass-1 partials: (tail (A, k) decreasing, var, es, var_se, es_se)."""
    parts = sorted(parts, key=lambda p: p.first)
    k = problem.k
    candidates = np.concatenate([p.top for p in parts], axis=1)
    tail = -np.sort(-top_k(candidates, k), axis=1)
    var = tail[:, k - 1].astype(np.float64)
    es = tail.astype(np.float64).sum(axis=1) / k
    batch_var = np.concatenate([p.batch_var for p in parts], axis=0).astype(np.float64)
    batch_es = np.concatenate([p.batch_es for p in parts], axis=0).astype(np.float64)
    return tail, var, es, batch_stderr(batch_var), batch_stderr(batch_es)


def merge_components(
    problem: RiskProblem, parts: list[ComponentPartial], split: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(A, n) component ES from pass-2 partials; None when ties need the split pass."""
    k, n_chunks = problem.k, problem.plan.n_chunks
    n_gt = sum((p.n_gt for p in parts), np.zeros(problem.n_accounts, dtype=np.int64))
    n_eq = sum((p.n_eq for p in parts), np.zeros(problem.n_accounts, dtype=np.int64))
    if np.any(n_gt > k - 1) or np.any(n_gt + n_eq < k):
        raise InconsistentResult(
            "component pass disagrees with tail pass on the tail size; "
            "the two passes did not reproduce the same losses"
        )
    if not split and np.any(n_gt + n_eq > k):
        return None
    sums = tree_total((p.sums for p in parts), n_chunks)
    if split:
        share = (k - n_gt) / np.maximum(n_eq, 1)
        sums = sums + share[:, None] * tree_total((p.eq_sums for p in parts), n_chunks)
    return -problem.exposures.T * sums / k, n_gt, n_eq


def run_risk(
    problem: RiskProblem,
    backend: str = "numpy",
    executor: Executor | None = None,
    components: bool = True,
    progress: ProgressFn | None = None,
) -> RiskResult:
    """Run the engine: VaR, ES, their standard errors and (optionally) component ES.

    ``progress`` is called with the number of chunks finished (twice the plan when components
    are computed).
    """
    from montecarlo.executors import LocalExecutor

    if executor is None:  # one of its own: its worker processes end with this run
        with LocalExecutor() as own:
            return run_risk(problem, backend, own, components, progress)
    own_problem = problem
    problem, order = problem.canonical()
    name = resolve_backend(backend).name  # "auto" is settled once, here, at the edge
    ranges = split_chunks(problem.plan.n_chunks, executor.workers)
    tails = executor.map(tail_pass, problem, ranges, progress, backend=name)
    tail, var, es, var_se, es_se = merge_tails(problem, tails)
    comp = None
    if components:
        kw = {"backend": name, "var": tail[:, problem.k - 1]}
        parts = executor.map(component_pass, problem, ranges, progress, **kw)
        merged = merge_components(problem, parts, split=False)
        if merged is None:  # ties at VaR beyond the tail: share them out exactly
            parts = executor.map(component_pass, problem, ranges, None, split=True, **kw)
            merged = merge_components(problem, parts, split=True)
        assert merged is not None
        comp = np.empty_like(merged[0])
        comp[:, order] = merged[0]
    return RiskResult(
        assets=tuple(own_problem.model.assets),
        alpha=problem.alpha,
        scenarios=problem.scenarios,
        seed=problem.seed,
        k=problem.k,
        plan=problem.plan,
        var=var,
        es=es,
        var_stderr=var_se,
        es_stderr=es_se,
        components=comp,
        tail=tail.astype(np.float64),
        backend=name,
        executor=executor.name,
        workers=len(ranges),
    )


def draw_scenarios(problem: RiskProblem, backend: str = "numpy") -> Any:
    """All M scenario returns (M, n) of ``problem``, the same draws the engine uses.

    For what-if analysis and checks on moderate M; the engine itself never holds them all.
    """
    canonical, order = problem.canonical()
    b = _Bound(canonical, resolve_backend(backend).name)
    r = b.xp.concatenate([b.returns(c) for c in range(canonical.plan.n_chunks)], axis=0)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return r[:, b.xp.asarray(inverse)]
