"""``python -m benchmarks.validation``: backtest every model on five portfolios, write the
evidence to ``docs/VALIDATION.md`` and its figures to ``docs/validation/``.

Real closes shipped in ``aggregator/data/prices``; P&L dates 2020-01-01 to the last close; VaR
and ES at 99 % over one day; a 500-day calibration window before each forecast; 20,000 engine
scenarios a day. The fifteen backtests run on a pool of processes (one per core).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from aggregator.backtest import BacktestOptions, plan_backtest, run_backtest
from aggregator.history import load_history
from aggregator.portfolio_file import parse_portfolio
from benchmarks.validation_doc import write_doc

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODELS = ("gaussian", "student_t", "historical")
#: name -> USD exposure per asset (held fixed every day)
PORTFOLIOS: dict[str, dict[str, float]] = {
    "BTC": {"BTC": 1e6},
    "ETH": {"ETH": 1e6},
    "BTC/ETH/SOL long": {"BTC": 4e5, "ETH": 3e5, "SOL": 3e5},
    "long ETH / short BTC": {"ETH": 1e6, "BTC": -1e6},
    "50% stablecoins": {"USDC": 5e5, "BTC": 2.5e5, "ETH": 2.5e5},
    "USDC alone": {"USDC": 1e6},
}
#: portfolios shown but left out of the recommendation (the stablecoin leg on its own)
SUPPLEMENTARY = ("USDC alone",)
START, ALPHA, WINDOW, SCENARIOS, DOF = date(2020, 1, 1), 0.99, 500, 20_000, 5.0


def portfolio_json(exposures: dict[str, float]) -> dict[str, Any]:
    """A portfolio file whose positions are worth ``exposures`` USD at the last close."""
    hist = load_history(list(exposures))
    positions = []
    prices = {}
    for asset, usd in exposures.items():
        price = hist.last_close(asset)
        positions.append({"asset": asset, "quantity": usd / price})
        prices[asset] = price
    return {"positions": positions, "prices": prices}


def run_one(job: tuple[str, str]) -> tuple[str, str, dict[str, Any]]:
    """One backtest (portfolio name, model) -> (name, model, report)."""
    name, model = job
    pf = parse_portfolio(portfolio_json(PORTFOLIOS[name]))
    opts = BacktestOptions(
        model=model, alpha=ALPHA, window=WINDOW, start=START, scenarios=SCENARIOS, dof=DOF
    )
    started = time.perf_counter()
    report = run_backtest(plan_backtest(pf, opts), opts)
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    return name, model, report


def run_all(workers: int) -> dict[str, dict[str, dict[str, Any]]]:
    """{portfolio: {model: report}} of every backtest."""
    jobs = [(name, model) for name in PORTFOLIOS for model in MODELS]
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in PORTFOLIOS}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for name, model, report in pool.map(run_one, jobs):
            out[name][model] = report
            print(
                f"{name:>22} {model:>10}: {report['exceptions']:>3} exceptions in "
                f"{report['observations']} days, {report['elapsed_s']:.1f} s",
                file=sys.stderr,
            )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.validation", description=__doc__)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--docs", type=Path, default=DOCS, help="where VALIDATION.md goes")
    args = p.parse_args(argv)
    started = time.perf_counter()
    results = run_all(args.workers)
    backtest_s = time.perf_counter() - started
    from benchmarks.validation_convergence import convergence_cases

    conv_started = time.perf_counter()
    convergence = convergence_cases()
    timings = {
        "backtests_s": round(backtest_s, 1),
        "convergence_s": round(time.perf_counter() - conv_started, 1),
        "workers": args.workers,
        "runs": sum(len(m) for m in results.values()),
        "days": sum(r["observations"] for m in results.values() for r in m.values()),
    }
    write_doc(args.docs, results, convergence, timings, SUPPLEMENTARY)
    print(f"wrote {args.docs / 'VALIDATION.md'} in {math.ceil(time.perf_counter() - started)} s")


if __name__ == "__main__":  # pragma: no cover
    main()
