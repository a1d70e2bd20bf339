"""Running one case: the engine on each executor, the naive baseline and the reference."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from benchmarks.baseline import BaselineResult, run_baseline
from benchmarks.cases import HEADLINE, Case
from benchmarks.params import RealParameters, exposures, horizon_moments, tiled_model
from benchmarks.reference import ReferenceWork, run_reference
from benchmarks.stages import stage_profile
from benchmarks.timing import Timing, engine_peak_mib, time_interleaved, time_once
from montecarlo import GaussianModel, RiskProblem, RiskResult, run_risk
from montecarlo.engine import Executor
from montecarlo.executors import LocalExecutor

ALPHA = 0.99
SEED = 1


@dataclass(frozen=True)
class Settings:
    """How every case is measured (from the command line)."""

    backend: str = "numpy"
    repeat: int = 3
    baseline_budget_s: float = 10.0
    ray_workers: int = 2
    profile_all: bool = False


def say(message: str) -> None:
    """Progress for humans, on stderr."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class ExecutorPool:
    """Executors made once per process (starting Ray takes seconds) and reused across cases."""

    settings: Settings
    made: dict[str, Executor] = field(default_factory=dict)
    ray_init_s: float | None = None

    def get(self, name: str) -> Executor:
        """The executor called ``name`` (``local`` or ``ray``)."""
        if name not in self.made:
            self.made[name] = self._make(name)
        return self.made[name]

    def _make(self, name: str) -> Executor:
        if name == "local":
            return LocalExecutor()
        from montecarlo.executors import RayExecutor

        say(f"starting Ray with {self.settings.ray_workers} workers ...")
        gpu = self.settings.backend == "cupy"
        seconds, ray_executor = time_once(
            lambda: RayExecutor(workers=self.settings.ray_workers, gpu=gpu)
        )
        self.ray_init_s = seconds
        executor: Executor = ray_executor
        return executor

    def release(self, name: str) -> None:
        """Close the executor called ``name`` (its worker pool, or the Ray it started)."""
        executor = self.made.pop(name, None)
        if executor is not None:
            executor.close()

    def close(self) -> None:
        """Close every executor made here."""
        for name in list(self.made):
            self.release(name)


def build_problem(real: RealParameters, case: Case) -> RiskProblem:
    """The case's risk problem on the tiled real-data model, fixed-seed exposures."""
    model = tiled_model(real, case.assets)
    e = exposures(case.assets, case.accounts)
    return RiskProblem(model, e, alpha=ALPHA, scenarios=case.scenarios, seed=SEED)


def _keys(timings: dict[str, Timing]) -> dict[str, float]:
    """``{name}_s`` (best) and ``{name}_median_s`` for each timed thing."""
    out: dict[str, float] = {}
    for name, t in timings.items():
        out[f"{name}_s"], out[f"{name}_median_s"] = t.best, t.median
    return out


def engine_runs(
    problem: RiskProblem, settings: Settings, executor: Executor
) -> dict[str, Callable[[], RiskResult]]:
    """The two engine calls of a case: without and with component ES."""
    run = partial(run_risk, problem, settings.backend, executor)
    return {
        "engine": partial(run, components=False),
        "engine_components": partial(run, components=True),
    }


def reference_runs(
    problem: RiskProblem, settings: Settings, workers: int
) -> dict[str, Callable[[], None]]:
    """The reference on ``workers`` threads (as the engine), on one thread, and with pass 2."""
    work = ReferenceWork.from_problem(problem, settings.backend)
    return {
        "reference": partial(run_reference, work, workers),
        "reference_1thread": partial(run_reference, work, 1),
        "reference_components": partial(run_reference, work, workers, True),
    }


def _memory_keys(prefix: str, peak: dict[str, float | int]) -> dict[str, Any]:
    return {
        f"{prefix}_mib": peak["total"],
        f"{prefix}_driver_mib": peak["driver"],
        f"{prefix}_workers_mib": peak["workers"],
    }


def measure_engine_memory(runs: dict[str, Callable[[], RiskResult]]) -> tuple[dict[str, Any], Any]:
    """One warm-up (it starts any worker pool), then one measured run of each engine call.

    Returns the peak-memory keys and the result of the components run.
    """
    runs["engine"]()
    plain, _ = engine_peak_mib(runs["engine"])
    comp, result = engine_peak_mib(runs["engine_components"])
    keys = {**_memory_keys("peak", plain), **_memory_keys("peak_components", comp)}
    keys["child_processes"] = plain["processes"]
    return keys, result


def measure_local(
    problem: RiskProblem, settings: Settings, executor: Executor | None, workers: int
) -> tuple[dict[str, Any], dict[str, Any], RiskResult | None]:
    """Engine (when ``executor`` is given) and reference, timed in interleaved rounds.

    Every call runs once untimed first (the engine's memory runs, the reference's warm-ups);
    then ``repeat`` rounds run every call once, so a burst of load from elsewhere on the
    machine hits the engine and the reference alike.
    Returns (engine keys, reference keys, the engine's components-run result).
    """
    fns: dict[str, Callable[[], Any]] = dict(reference_runs(problem, settings, workers))
    for fn in fns.values():
        fn()
    engine: dict[str, Any] = {}
    result = None
    if executor is not None:
        runs = engine_runs(problem, settings, executor)
        engine, result = measure_engine_memory(runs)
        engine["workers"] = executor.workers
        fns = {**runs, **fns}
    keys = _keys(time_interleaved(fns, settings.repeat))
    engine.update({k: v for k, v in keys.items() if k.startswith("engine")})
    ref = {k: v for k, v in keys.items() if k.startswith("reference")}
    return engine, {"reference_workers": workers, **ref}, result


def measure_ray(
    problem: RiskProblem, settings: Settings, executor: Executor
) -> tuple[dict[str, Any], RiskResult]:
    """The engine on Ray: warm-up and memory runs, then interleaved timed rounds."""
    runs = engine_runs(problem, settings, executor)
    memory, result = measure_engine_memory(runs)
    keys = _keys(time_interleaved(dict(runs), settings.repeat))
    return {"workers": executor.workers, **memory, **keys}, result


def measure_baseline(problem: RiskProblem, settings: Settings) -> BaselineResult:
    """The naive baseline on the case's model and exposures, within the time budget."""
    assert isinstance(problem.model, GaussianModel)
    mean, cov = horizon_moments(problem.model)
    return run_baseline(
        mean, cov, problem.exposures, ALPHA, problem.scenarios, SEED, settings.baseline_budget_s
    )


def _baseline_keys(base: BaselineResult, result: RiskResult) -> dict[str, Any]:
    """Baseline figures, and its VaR against the engine's for the accounts it ran."""
    timed = base.timed_accounts
    engine_var = result.var[:timed]
    return {
        "baseline_s": base.seconds,
        "baseline_per_account_s": base.per_account_s,
        "baseline_extrapolated_from": timed,
        "baseline_var_rel_diff_max": float(np.max(np.abs(base.var / engine_var - 1.0))),
        "engine_var_rel_stderr_max": float(np.max(result.var_stderr[:timed] / engine_var)),
    }


def _ratios(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "speedup_vs_baseline": rec["baseline_s"] / rec["engine_s"],
        "speedup_components_vs_baseline": rec["baseline_s"] / rec["engine_components_s"],
        "ratio_vs_reference": rec["engine_s"] / rec["reference_s"],
        "ratio_components_vs_reference": rec["engine_components_s"] / rec["reference_components_s"],
        "ratio_vs_reference_1thread": rec["engine_s"] / rec["reference_1thread_s"],
    }


def case_header(case: Case, problem: RiskProblem, settings: Settings) -> dict[str, Any]:
    """The keys that name a case and its setup."""
    return {
        "case": case.name,
        "accounts": case.accounts,
        "assets": case.assets,
        "scenarios": case.scenarios,
        "backend": settings.backend,
        "alpha": ALPHA,
        "k": problem.k,
        "chunk_size": problem.plan.chunk_size,
        "n_chunks": problem.plan.n_chunks,
        "repeat": settings.repeat,
        "timing": "best",
    }


def _figures(result: RiskResult) -> dict[str, Any]:
    return {
        "var_mean_usd": float(result.var.mean()),
        "es_mean_usd": float(result.es.mean()),
    }


def _same_bits(a: RiskResult, b: RiskResult) -> bool:
    """Whether two runs gave bit-identical VaR, ES and component ES."""
    same = np.array_equal(a.var, b.var) and np.array_equal(a.es, b.es)
    if a.components is not None and b.components is not None:
        same = same and np.array_equal(a.components, b.components)
    return bool(same)


def _record(
    header: dict[str, Any],
    name: str,
    engine: dict[str, tuple[dict[str, Any], RiskResult]],
    base: BaselineResult,
    ref: dict[str, Any],
) -> dict[str, Any]:
    """One JSON line: the case, the engine on ``name``, the baseline, reference and ratios."""
    eng, result = engine[name]
    rec: dict[str, Any] = {**header, "executor": name, **eng, **_baseline_keys(base, result)}
    rec.update(ref)
    rec.update(_ratios(rec))
    rec.update(_figures(result))
    if name == "ray" and "local" in engine:
        rec["matches_local"] = _same_bits(result, engine["local"][1])
    return rec


def run_case(
    case: Case,
    executors: tuple[str, ...],
    settings: Settings,
    real: RealParameters,
    pool: ExecutorPool,
) -> list[dict[str, Any]]:
    """Every measurement of one case; one record per executor.

    Order: local engine and reference (interleaved), baseline, stage profile, then Ray (started
    for the case and shut down after it, so its daemons never share the CPU with the rest).
    """
    problem = build_problem(real, case)
    header = {**case_header(case, problem, settings), "load_1m": os.getloadavg()[0]}
    workers = LocalExecutor().workers
    local = pool.get("local") if "local" in executors else None
    say(f"[{case.name}] {'engine and ' if local else ''}reference on {workers} threads ...")
    eng, ref, result = measure_local(problem, settings, local, workers)
    engine: dict[str, tuple[dict[str, Any], RiskResult]] = {}
    if result is not None:
        engine["local"] = (eng, result)
    say(f"[{case.name}] naive baseline (up to {settings.baseline_budget_s:g} s) ...")
    base = measure_baseline(problem, settings)
    profile = None
    if settings.backend == "numpy" and (settings.profile_all or case == HEADLINE):
        say(f"[{case.name}] stage profile of one worker's chunk range ...")
        profile = stage_profile(problem, workers)
    if "ray" in executors:
        ray = pool.get("ray")
        say(f"[{case.name}] engine on Ray, {ray.workers} workers ...")
        eng_ray, result_ray = measure_ray(problem, settings, ray)
        engine["ray"] = ({**eng_ray, "ray_init_s": pool.ray_init_s}, result_ray)
        pool.release("ray")
    records = [_record(header, name, engine, base, ref) for name in engine]
    for rec in records:
        if rec["executor"] == "local" and profile is not None:
            rec["stages"] = profile
    return records
