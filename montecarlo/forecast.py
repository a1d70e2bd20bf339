"""Rolling out-of-sample VaR and ES forecasts of a portfolio, for backtests.

At each origin day t the model is calibrated on the ``window`` daily returns that end at close t
(closes t - window .. t, nothing later), the engine (:func:`montecarlo.engine.run_risk`, the
same code the margin uses) forecasts VaR and ES of the P&L from close t to close t + h, and the
realised P&L of the same positions over those h days is recorded beside it. Day t draws with
seed ``seed + t``, so the forecasts are reproducible and their Monte Carlo errors independent
from day to day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from montecarlo.calibration import calibrate
from montecarlo.engine import RiskProblem, run_risk
from montecarlo.errors import InvalidParameter
from montecarlo.executors import LocalExecutor
from montecarlo.measures import check_alpha, tail_count, top_k
from montecarlo.models import ScenarioModel
from montecarlo.qmc import SAMPLERS, sobol_returns

MODELS = ("gaussian", "student_t", "historical")


@dataclass(frozen=True, eq=False)
class Forecasts:
    """Forecasts and outcomes on T origin days (losses positive, USD).

    origins : (T,) index of the close each forecast is made at.
    pnl : (T,) realised P&L from close t to close t + h.
    var, es : (T,) forecast VaR and ES of the loss -P&L.
    var_stderr, es_stderr : (T,) engine batch-means standard errors (NaN for Sobol draws).
    tails : (T, k) each day's k largest scenario losses, decreasing (their mean is ES).
    """

    origins: np.ndarray
    pnl: np.ndarray
    var: np.ndarray
    es: np.ndarray
    var_stderr: np.ndarray
    es_stderr: np.ndarray
    tails: np.ndarray

    @property
    def exceptions(self) -> np.ndarray:
        """(T,) True where the realised loss exceeded the VaR forecast."""
        out: np.ndarray = -self.pnl > self.var
        return out


def window_model(
    kind: str, assets: Sequence[str], closes: Any, horizon_days: int, dof: float = 5.0
) -> ScenarioModel:
    """The ``kind`` model calibrated on ``closes`` (window + 1, n) for an h-day horizon."""
    cal = calibrate(assets, closes)
    if kind == "gaussian":
        return cal.gaussian(float(horizon_days))
    if kind == "student_t":
        return cal.student_t(dof, float(horizon_days))
    if kind == "historical":
        return cal.historical(int(horizon_days))
    raise InvalidParameter("model", f"must be one of {', '.join(MODELS)}, got {kind!r}")


def realised_pnl(closes: Any, exposures: Any, origins: Any, horizon_days: int) -> np.ndarray:
    """P&L of the exposures held at each origin close t over closes t .. t + h.

    closes : (D, n); exposures : (D, n) USD exposure held from each close; origins : (T,).
    Returns (T,) sum_i e[t, i] (p[t + h, i] / p[t, i] - 1).
    """
    p = np.asarray(closes, dtype=np.float64)
    t = np.asarray(origins, dtype=np.int64)
    growth = p[t + horizon_days] / p[t] - 1.0
    out: np.ndarray = np.einsum("ti,ti->t", np.asarray(exposures)[t], growth)
    return out


def forecast_day(
    model: ScenarioModel,
    exposures: np.ndarray,
    alpha: float,
    scenarios: int,
    seed: int,
    sampler: str = "mc",
    executor: LocalExecutor | None = None,
) -> tuple[float, float, float, float, np.ndarray]:
    """(VaR, ES, VaR s.e., ES s.e., tail losses (k,) decreasing) of one day's forecast."""
    if sampler == "sobol":
        losses = -(sobol_returns(model, scenarios, seed) @ exposures)
        k = tail_count(alpha, losses.size)
        tail = -np.sort(-top_k(losses, k))
        return float(tail[-1]), float(tail.mean()), np.nan, np.nan, tail
    problem = RiskProblem(model, exposures, alpha, scenarios, seed=seed)
    res = run_risk(problem, executor=executor or LocalExecutor(1), components=False)
    return (
        float(res.var[0]),
        float(res.es[0]),
        float(res.var_stderr[0]),
        float(res.es_stderr[0]),
        res.tail[0],
    )


def _check_origins(origins: Any, n_closes: int, window: int, horizon_days: int) -> np.ndarray:
    t = np.asarray(origins, dtype=np.int64)
    if t.ndim != 1 or t.size == 0:
        raise InvalidParameter("origins", "at least one origin day is needed")
    if t.min() < window:
        raise InvalidParameter("origins", f"day {t.min()} has fewer than {window} days before it")
    if t.max() + horizon_days >= n_closes:
        raise InvalidParameter("origins", f"day {t.max()} + {horizon_days} is past the history")
    return t


def rolling_forecasts(
    assets: Sequence[str],
    closes: Any,
    exposures: Any,
    origins: Any,
    *,
    model: str = "gaussian",
    alpha: float = 0.99,
    window: int = 500,
    horizon_days: int = 1,
    scenarios: int = 20_000,
    seed: int = 0,
    dof: float = 5.0,
    sampler: str = "mc",
    progress: Callable[[int], None] | None = None,
) -> Forecasts:
    """VaR/ES forecasts at each origin, each from the ``window`` returns before it only.

    Parameters
    ----------
    closes : (D, n) aligned daily closes.
    exposures : (n,) USD exposures held every day, or (D, n) the exposure held from each close.
    origins : (T,) close indexes to forecast from; each needs ``window`` days before it and
        ``horizon_days`` after it.
    progress : called with 1 after each day.
    """
    p = np.asarray(closes, dtype=np.float64)
    e = np.asarray(exposures, dtype=np.float64)
    e = np.broadcast_to(e, p.shape) if e.ndim == 1 else e
    if e.shape != p.shape:
        raise InvalidParameter("exposures", f"expected shape {p.shape[1:]} or {p.shape}")
    if sampler not in SAMPLERS:
        raise InvalidParameter("sampler", f"must be one of {', '.join(SAMPLERS)}")
    if model not in MODELS:
        raise InvalidParameter("model", f"must be one of {', '.join(MODELS)}, got {model!r}")
    check_alpha(alpha)
    t_all = _check_origins(origins, p.shape[0], window, horizon_days)
    rows: list[tuple[float, float, float, float, np.ndarray]] = []
    executor = LocalExecutor(1)
    try:
        for t in t_all:
            m = window_model(model, assets, p[t - window : t + 1], horizon_days, dof)
            rows.append(forecast_day(m, e[t], alpha, scenarios, seed + int(t), sampler, executor))
            if progress is not None:
                progress(1)
    finally:
        executor.close()
    var, es, var_se, es_se, tails = zip(*rows, strict=True)
    return Forecasts(
        origins=t_all,
        pnl=realised_pnl(p, e, t_all, horizon_days),
        var=np.array(var),
        es=np.array(es),
        var_stderr=np.array(var_se),
        es_stderr=np.array(es_se),
        tails=np.vstack(tails),
    )
