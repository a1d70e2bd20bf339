"""``omnimargin backtest``: rolling out-of-sample VaR/ES forecasts of a portfolio, scored.

Plain functions: the portfolio file, the price history and the options in, the report
dictionary out. Positions come from the portfolio JSON (the format of ``omnimargin risk``);
with ``hold="usd"`` (the default) each position's USD exposure, quantity x the file's price or
the history's last close, is held fixed every day (rebalanced at each close); with
``hold="quantity"`` the quantities are held, so the exposure at close t is quantity x close t.
The P&L of day t + h is the value change of the exposures held at close t over the h days.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aggregator.errors import InputError
from aggregator.history import PriceHistory, load_history
from aggregator.portfolio_file import PortfolioFile
from aggregator.risk import price_portfolio
from montecarlo import InvalidParameter
from montecarlo.backtest import (
    block_windows,
    christoffersen_independence,
    conditional_coverage,
    es_backtest,
    kupiec_pof,
    plus_factor,
    rolling_exceptions,
    traffic_light_zone,
)
from montecarlo.calibration import EWMA_SEED_DAYS
from montecarlo.forecast import Forecasts, rolling_forecasts

#: the Basel backtesting window, in observations
BASEL_WINDOW = 250
#: simulations behind the ES backtest's p-value
ES_SIMULATIONS = 2000
MIN_WINDOW = EWMA_SEED_DAYS + 2


@dataclass(frozen=True)
class BacktestOptions:
    """The options of a backtest (CLI flags)."""

    model: str = "gaussian"
    alpha: float = 0.99
    window: int = 500
    horizon_days: int = 1
    start: date | None = None
    end: date | None = None
    scenarios: int = 20_000
    seed: int = 0
    dof: float = 5.0
    sampler: str = "mc"
    hold: Literal["usd", "quantity"] = "usd"
    history: Path | None = None


def check_options(opts: BacktestOptions) -> None:
    """Raise :class:`InputError` naming the first option out of its domain."""
    if not 0.0 < opts.alpha < 1.0:
        raise InputError("alpha", f"must be in (0, 1), got {opts.alpha}")
    if opts.window < MIN_WINDOW:
        raise InputError("window", f"must be >= {MIN_WINDOW} days, got {opts.window}")
    if not 1 <= opts.horizon_days <= 30:
        raise InputError(
            "horizon_days", f"must be a whole number in [1, 30], got {opts.horizon_days}"
        )
    if opts.scenarios < 100:
        raise InputError("scenarios", f"must be >= 100, got {opts.scenarios}")
    if opts.seed < 0:
        raise InputError("seed", f"must be >= 0, got {opts.seed}")
    if not opts.dof > 2.0:
        raise InputError("dof", f"must be > 2, got {opts.dof}")
    if opts.start and opts.end and opts.start > opts.end:
        raise InputError("end", f"{opts.end} is before --start {opts.start}")


def positions(pf: PortfolioFile, opts: BacktestOptions) -> tuple[PriceHistory, np.ndarray]:
    """The history of the portfolio's assets and the exposures (D, n) held from each close."""
    spec = pf.model
    if spec is not None:
        fields = ("daily_vol", "daily_mean", "correlation", "horizon_days")
        given = [f for f in fields if getattr(spec, f) is not None]
        given += ["jumps"] if spec.jumps else []
        if given or spec.kind is not None or spec.dof is not None:
            raise InputError(
                f"model.{given[0]}" if given else "model",
                "the backtest calibrates its model on each window; use --model and --dof",
            )
    priced = price_portfolio(pf, opts.history)
    hist = load_history(list(priced.assets), opts.history)
    if opts.hold == "quantity":
        q = np.array([float(x) for x in priced.quantities])
        return hist, hist.closes * q
    return hist, np.broadcast_to(priced.exposures, hist.closes.shape)


def origins_between(hist: PriceHistory, opts: BacktestOptions) -> np.ndarray:
    """Close indexes t to forecast from: ``window`` days before t, and t + h within the dates."""
    h = opts.horizon_days
    t = np.arange(opts.window, len(hist.dates) - h)
    ends = hist.dates[t + h]
    if opts.start is not None:
        t, ends = t[ends >= np.datetime64(opts.start)], ends[ends >= np.datetime64(opts.start)]
    if opts.end is not None:
        t = t[ends <= np.datetime64(opts.end)]
    if t.size == 0:
        first = hist.dates[min(opts.window + h, len(hist.dates) - 1)]
        raise InputError(
            "start",
            f"no day to backtest: {', '.join(hist.assets)} have {len(hist.dates)} common days "
            f"({hist.dates[0]} to {hist.dates[-1]}), the first forecastable day is {first} "
            f"with --window {opts.window}",
        )
    return t


@dataclass(frozen=True, eq=False)
class BacktestPlan:
    """What a backtest runs on: the history, the exposures (D, n) and the origin days (T,)."""

    history: PriceHistory
    exposures: np.ndarray
    origins: np.ndarray


def plan_backtest(pf: PortfolioFile, opts: BacktestOptions) -> BacktestPlan:
    """Check the options, read the history and choose the days; raises :class:`InputError`."""
    check_options(opts)
    hist, exposures = positions(pf, opts)
    return BacktestPlan(hist, exposures, origins_between(hist, opts))


def run_backtest(
    plan: BacktestPlan, opts: BacktestOptions, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Forecast, score and report; the report of ``omnimargin backtest --json``."""
    started = time.perf_counter()
    hist, origins = plan.history, plan.origins
    try:
        fc = rolling_forecasts(
            hist.assets,
            hist.closes,
            plan.exposures,
            origins,
            model=opts.model,
            alpha=opts.alpha,
            window=opts.window,
            horizon_days=opts.horizon_days,
            scenarios=opts.scenarios,
            seed=opts.seed,
            dof=opts.dof,
            sampler=opts.sampler,
            progress=progress,
        )
    except InvalidParameter as exc:
        raise InputError(exc.field, exc.reason) from None
    dates = hist.dates[origins + opts.horizon_days]
    return {
        "model": opts.model,
        "sampler": opts.sampler,
        "alpha": opts.alpha,
        "window": opts.window,
        "horizon_days": opts.horizon_days,
        "scenarios": opts.scenarios,
        "seed": opts.seed,
        "hold": opts.hold,
        "assets": list(hist.assets),
        "start": str(dates[0]),
        "end": str(dates[-1]),
        **score(fc, dates, opts.alpha, opts.seed),
        "series": series(fc, dates),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def score(fc: Forecasts, dates: np.ndarray, alpha: float, seed: int = 0) -> dict[str, Any]:
    """The statistics of a run of forecasts (see :mod:`montecarlo.backtest`)."""
    hits = fc.exceptions.astype(np.int64)
    n, x = int(hits.size), int(hits.sum())
    pof = kupiec_pof(x, n, alpha)
    ind = christoffersen_independence(hits)
    cc = conditional_coverage(hits, alpha)
    es = es_backtest(-fc.pnl, fc.var, fc.es, fc.tails, alpha, ES_SIMULATIONS, seed)
    return {
        "observations": n,
        "exceptions": x,
        "exception_rate": x / n,
        "expected_exceptions": n * (1.0 - alpha),
        "kupiec_lr": pof.statistic,
        "kupiec_pvalue": pof.pvalue,
        "christoffersen_lr": ind.statistic,
        "christoffersen_pvalue": ind.pvalue,
        "conditional_coverage_lr": cc.statistic,
        "conditional_coverage_pvalue": cc.pvalue,
        "traffic_light": traffic_light(hits, dates, alpha),
        "es_backtest": {
            "method": "acerbi_szekely_z2",
            "z2": es.z2,
            "pvalue": es.pvalue,
            "pvalue_method": "simulation under the daily forecast distributions",
            "simulations": es.simulations,
            "zone": es.zone,
        },
    }


def traffic_light(hits: np.ndarray, dates: np.ndarray, alpha: float) -> dict[str, Any]:
    """Basel zones of each 250-day block (counted back from the last day) and of every rolling
    250-day window."""
    windows = []
    for a, b in block_windows(hits.size, BASEL_WINDOW):
        x = int(hits[a:b].sum())
        windows.append(
            {
                "start": str(dates[a]),
                "end": str(dates[b - 1]),
                "exceptions": x,
                "zone": traffic_light_zone(x, BASEL_WINDOW, alpha),
                "plus_factor": plus_factor(x) if alpha == 0.99 else None,
            }
        )
    rolling = [traffic_light_zone(int(x), BASEL_WINDOW, alpha) for x in rolling_exceptions(hits)]
    return {
        "window_days": BASEL_WINDOW,
        "windows": windows,
        "rolling_days": {z: rolling.count(z) for z in ("green", "yellow", "red")},
        "latest": rolling[-1] if rolling else None,
    }


def series(fc: Forecasts, dates: np.ndarray) -> list[dict[str, Any]]:
    """One row per observation: the P&L's end date, P&L, VaR, ES and whether it was exceeded."""
    hits = fc.exceptions
    return [
        {
            "date": str(d),
            "pnl": float(p),
            "var": float(v),
            "es": float(e),
            "exception": bool(h),
        }
        for d, p, v, e, h in zip(dates, fc.pnl, fc.var, fc.es, hits, strict=True)
    ]
