"""Where the engine's time goes, on the chunk range one worker takes (one thread, 1 BLAS thread).

Two views of the same range:

* a **replay** of the loops of :func:`montecarlo.engine.tail_pass` and
  :func:`~montecarlo.engine.component_pass` with a clock around each stage (draw, correlate,
  expm1, loss product, threshold count, partition, batch statistics, merges; tail indicators,
  tail-sum product, tree fold). It mirrors the engine's algorithm, accounts in blocks of at most
  ``LOSS_BLOCK`` losses included, and is checked against the engine's own time for the range:
  ``replay_matches_engine`` turns false when the engine has changed under it;
* **cProfile** of the engine's own passes: the functions with the most self time (operators
  such as ``@`` and ``>`` count towards the Python function that applies them).

The driver merges (:func:`~montecarlo.engine.merge_tails`, ``merge_components``) are timed on
the real partials.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.params import horizon_moments
from benchmarks.reference import account_blocks
from montecarlo import GaussianModel, RiskProblem
from montecarlo import engine as mc_engine
from montecarlo.engine import chunk_seed, merge_components, merge_tails, split_chunks
from montecarlo.measures import tail_count, top_k
from montecarlo.models import correlate, correlation_factor, lognormal_returns
from montecarlo.reduce import TreeFold

#: the replay may differ from the engine's own time by this fraction before it is flagged
REPLAY_TOLERANCE = 0.25


class StageClock:
    """Accumulates wall-clock seconds per named stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def __call__(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` and add its time to ``stage``."""
        start = time.perf_counter()
        out = fn(*args)
        self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - start
        return out


class _Chunks:
    """The engine's chunk sampler and loss product split into stages (NumPy)."""

    def __init__(self, problem: RiskProblem) -> None:
        model = problem.model
        if not isinstance(model, GaussianModel) or model.kind != "gaussian":
            raise TypeError("the stage profile replays the Gaussian sampler only")
        dtype = problem.dtype
        self.problem = problem
        drift, _ = horizon_moments(model)
        scale = model.daily_vol * np.sqrt(np.asarray(model.horizon_days, dtype=np.float64))
        self.factor_t = np.asarray(correlation_factor(model.correlation).T, dtype=dtype)
        self.drift, self.scale = drift.astype(dtype), scale.astype(dtype)
        neg_t = np.asarray(-problem.exposures.T, dtype=dtype)
        self.blocks = account_blocks(problem)
        self.neg_e_t = [neg_t[b] for b in self.blocks]

    def returns(self, clock: StageClock, c: int) -> np.ndarray:
        """R (m, n) of chunk c: draw, correlate, expm1."""
        p = self.problem
        start, stop = p.plan.bounds(c)
        rng = clock("draw", np.random.default_rng, chunk_seed(p.seed, c))
        z = clock("draw", rng.standard_normal, (stop - start, len(p.model.assets)), p.dtype)
        x = clock("correlate", correlate, z, self.factor_t)
        out: np.ndarray = clock("expm1", lognormal_returns, x, self.drift, self.scale)
        return out

    def losses(self, clock: StageClock, r: np.ndarray, j: int) -> np.ndarray:
        """Losses (accounts of block j, m)."""
        out: np.ndarray = clock("loss_product", np.matmul, self.neg_e_t[j], r.T)
        return out


def _width(losses: np.ndarray, threshold: np.ndarray, k_c: int) -> int:
    m = int(losses.shape[1])
    return min(m, max(k_c, int((losses > threshold).sum(axis=1).max())))


def _batch_stats(chunk_top: np.ndarray, k_c: int) -> tuple[np.ndarray, np.ndarray]:
    tail = np.sort(top_k(chunk_top, k_c), axis=1)
    return tail.min(axis=1), tail.mean(axis=1)


def _merge(held: list[np.ndarray], k: int) -> np.ndarray:
    out: np.ndarray = top_k(np.concatenate(held, axis=1), k)
    return out


class _Tracker:
    """The engine's running top-k of one block of accounts, with a clock per stage."""

    def __init__(self, clock: StageClock, k: int, alpha: float) -> None:
        self.clock, self.k, self.alpha = clock, k, alpha
        self.held: list[np.ndarray] = []
        self.held_n = 0
        self.threshold: np.ndarray | None = None

    def add(self, losses: np.ndarray) -> None:
        clock, k = self.clock, self.k
        m = int(losses.shape[1])
        k_c = tail_count(self.alpha, m)
        w = min(k, m)
        if self.threshold is not None:
            w = clock("threshold_count", _width, losses, self.threshold, k_c)
        chunk_top = clock("partition", top_k, losses, w, True)  # in place, as the engine
        clock("batch_stats", _batch_stats, chunk_top, k_c)
        self.held.append(chunk_top)
        self.held_n += w
        if self.held_n >= 2 * k or (self.threshold is None and self.held_n >= k):
            merged = clock("merge", _merge, self.held, k)
            self.held, self.held_n = [merged], k
            self.threshold = merged.min(axis=1)[:, None]

    def top(self) -> np.ndarray:
        out: np.ndarray = self.clock("merge", _merge, self.held, min(self.k, self.held_n))
        return out


def replay_tail_pass(problem: RiskProblem, first: int, last: int) -> dict[str, float]:
    """Seconds per stage of pass 1 over chunks [first, last) on this thread."""
    chunks, clock = _Chunks(problem), StageClock()
    trackers = [_Tracker(clock, problem.k, problem.alpha) for _ in chunks.blocks]
    for c in range(first, last):
        r = chunks.returns(clock, c)
        for j, tracker in enumerate(trackers):
            tracker.add(chunks.losses(clock, r, j))
    clock("merge", np.concatenate, [t.top() for t in trackers], 0)
    return clock.totals


def _indicators(losses: np.ndarray, var: np.ndarray) -> np.ndarray:
    out: np.ndarray = losses >= var  # one comparison, as the engine's pass 2
    out.sum(axis=1)
    return out


def _tail_sums(tail: np.ndarray, r: np.ndarray, dtype: str) -> np.ndarray:
    out: np.ndarray = tail.astype(dtype) @ r
    return out


def _fold(fold: TreeFold, c: int, sums: list[np.ndarray]) -> None:
    fold.push(c, np.concatenate(sums, axis=0).astype(np.float64))


def replay_component_pass(
    problem: RiskProblem, first: int, last: int, var: np.ndarray
) -> dict[str, float]:
    """Seconds per stage of pass 2 over chunks [first, last) on this thread."""
    chunks, clock = _Chunks(problem), StageClock()
    thresholds = [var[b].astype(problem.dtype)[:, None] for b in chunks.blocks]
    fold = TreeFold()
    for c in range(first, last):
        r = chunks.returns(clock, c)
        sums = []
        for j in range(len(chunks.blocks)):
            tail = clock("tail_indicators", _indicators, chunks.losses(clock, r, j), thresholds[j])
            sums.append(clock("tail_sum_product", _tail_sums, tail, r, problem.dtype))
        clock("tree_fold", _fold, fold, c, sums)
    return clock.totals


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _label(key: tuple[str, int, str]) -> str:
    """A cProfile key as ``engine.py:add`` or ``method 'partition' of 'numpy.ndarray' objects``."""
    file, _, name = key
    if file == "~":
        return name.removeprefix("<").removesuffix(">")
    return f"{Path(file).name}:{name}"


def hottest(fn: Callable[[], Any], top: int = 8) -> list[dict[str, Any]]:
    """The ``top`` functions with the most self time in ``fn()`` under cProfile."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [
        {"function": _label(key), "self_s": tt, "cum_s": ct, "calls": nc}
        for key, (_, nc, tt, ct, _) in rows
    ]


def _pass_figures(
    name: str, stages: dict[str, float], engine_fn: Callable[[], Any]
) -> dict[str, Any]:
    engine_s, _ = _timed(engine_fn)
    return {
        f"{name}_stages_s": stages,
        f"{name}_stages_sum_s": sum(stages.values()),
        f"{name}_engine_s": engine_s,
        f"{name}_hottest": hottest(engine_fn),
    }


def _replay_ok(out: dict[str, Any]) -> bool:
    return all(
        abs(out[f"{p}_stages_sum_s"] / out[f"{p}_engine_s"] - 1.0) <= REPLAY_TOLERANCE
        for p in ("pass1", "pass2")
    )


def stage_profile(problem: RiskProblem, workers: int) -> dict[str, Any]:
    """Per-stage replay and cProfile of the first of ``workers`` chunk ranges, one thread.

    Returns a JSON-ready dict: the range, per-stage seconds of each pass and their sum, the
    engine's own time for the range, its hottest functions, and the driver merge times.
    """
    ranges = split_chunks(problem.plan.n_chunks, workers)
    first, last = ranges[0]
    tail_pass, component_pass = mc_engine.tail_pass, mc_engine.component_pass
    with threadpool_limits(limits=1, user_api="blas"):
        parts = [tail_pass(problem, "numpy", a, b) for a, b in ranges]
        merge_tails_s, merged = _timed(merge_tails, problem, parts)
        var = merged[0][:, problem.k - 1]
        comp = [component_pass(problem, "numpy", a, b, var) for a, b in ranges]
        merge_comp_s, _ = _timed(merge_components, problem, comp, False)
        out: dict[str, Any] = {
            "range": [first, last],
            "chunk_size": problem.plan.chunk_size,
            "workers": len(ranges),
            "account_blocks": len(account_blocks(problem)),
            "driver_merge_tails_s": merge_tails_s,
            "driver_merge_components_s": merge_comp_s,
        }
        pass1 = replay_tail_pass(problem, first, last)
        fn1 = partial(tail_pass, problem, "numpy", first, last)
        out |= _pass_figures("pass1", pass1, fn1)
        pass2 = replay_component_pass(problem, first, last, var)
        fn2 = partial(component_pass, problem, "numpy", first, last, var)
        out |= _pass_figures("pass2", pass2, fn2)
    out["replay_matches_engine"] = _replay_ok(out)
    return out
