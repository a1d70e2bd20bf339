"""Convergence of VaR and ES with the number of scenarios, pseudo-random vs Sobol draws.

For each scenario count M and each sampler, ``repeats`` independent runs (seeds, or Sobol
scramblings) give the mean estimate, the root-mean-square error against a reference value and,
for the engine's pseudo-random draws, its own batch-means standard error, so the reported error
bars can be checked against the measured spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from montecarlo.engine import RiskProblem, run_risk
from montecarlo.executors import LocalExecutor
from montecarlo.measures import expected_shortfall, value_at_risk
from montecarlo.models import ScenarioModel
from montecarlo.qmc import sobol_returns


@dataclass(frozen=True)
class ConvergencePoint:
    """Figures of ``repeats`` runs of one sampler at one scenario count (USD losses).

    var_rmse, es_rmse : root-mean-square error against the reference.
    var_spread, es_spread : standard deviation of the estimates over the repeats.
    var_stderr, es_stderr : mean of the engine's batch-means standard errors (NaN for Sobol).
    """

    sampler: str
    scenarios: int
    repeats: int
    var_mean: float
    es_mean: float
    var_rmse: float
    es_rmse: float
    var_spread: float
    es_spread: float
    var_stderr: float
    es_stderr: float


def estimates(
    model: ScenarioModel,
    exposures: np.ndarray,
    alpha: float,
    scenarios: int,
    sampler: str,
    seed: int,
) -> tuple[float, float, float, float]:
    """(VaR, ES, VaR s.e., ES s.e.) of one run; the standard errors are NaN for Sobol."""
    if sampler == "sobol":
        losses = -(sobol_returns(model, scenarios, seed) @ exposures)
        return (
            float(value_at_risk(losses, alpha)),
            float(expected_shortfall(losses, alpha)),
            np.nan,
            np.nan,
        )
    problem = RiskProblem(model, exposures, alpha, scenarios, seed=seed)
    res = run_risk(problem, executor=LocalExecutor(1), components=False)
    return float(res.var[0]), float(res.es[0]), float(res.var_stderr[0]), float(res.es_stderr[0])


def reference_risk(
    model: ScenarioModel,
    exposures: Any,
    alpha: float,
    scenarios: int = 1 << 22,
    scramblings: int = 4,
    seed: int = 10_000,
) -> tuple[float, float]:
    """(VaR, ES) averaged over ``scramblings`` Sobol runs of ``scenarios`` points each."""
    e = np.asarray(exposures, dtype=np.float64)
    runs = [estimates(model, e, alpha, scenarios, "sobol", seed + s) for s in range(scramblings)]
    return float(np.mean([r[0] for r in runs])), float(np.mean([r[1] for r in runs]))


def convergence_study(
    model: ScenarioModel,
    exposures: Any,
    alpha: float,
    sizes: Sequence[int],
    reference: tuple[float, float],
    repeats: int = 16,
    samplers: Sequence[str] = ("mc", "sobol"),
    seed: int = 0,
) -> list[ConvergencePoint]:
    """One :class:`ConvergencePoint` per (sampler, size), sizes in the given order."""
    e = np.asarray(exposures, dtype=np.float64)
    out = []
    for sampler in samplers:
        for m in sizes:
            runs = np.array(
                [estimates(model, e, alpha, int(m), sampler, seed + r) for r in range(repeats)]
            )
            err = runs[:, :2] - np.asarray(reference)
            rmse = np.sqrt(np.mean(err**2, axis=0))
            spread = runs[:, :2].std(axis=0, ddof=1) if repeats > 1 else np.full(2, np.nan)
            out.append(
                ConvergencePoint(
                    sampler=sampler,
                    scenarios=int(m),
                    repeats=repeats,
                    var_mean=float(runs[:, 0].mean()),
                    es_mean=float(runs[:, 1].mean()),
                    var_rmse=float(rmse[0]),
                    es_rmse=float(rmse[1]),
                    var_spread=float(spread[0]),
                    es_spread=float(spread[1]),
                    var_stderr=float(runs[:, 2].mean()),
                    es_stderr=float(runs[:, 3].mean()),
                )
            )
    return out
