"""``omnimargin backtest``: out-of-sample VaR/ES forecasts of a portfolio against what happened."""

from __future__ import annotations

import json
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from aggregator.console import LazyProgress, out_console
from aggregator.errors import AggregatorError, InputError


class BacktestModel(StrEnum):
    gaussian = "gaussian"
    student_t = "student_t"
    historical = "historical"


class Sampler(StrEnum):
    mc = "mc"
    sobol = "sobol"


class Hold(StrEnum):
    usd = "usd"
    quantity = "quantity"


def _fail(message: str) -> None:
    from aggregator.cli import fail

    fail(message)


def _day(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(field, f"not a date (YYYY-MM-DD): {value[:40]!r}") from None


def backtest_command(
    portfolio: Annotated[Path, typer.Option("--portfolio", "-p", help="Portfolio JSON file.")],
    history: Annotated[
        Path | None, typer.Option(help="Folder of daily close CSV files (default: shipped).")
    ] = None,
    model: Annotated[BacktestModel, typer.Option(help="Scenario model.")] = BacktestModel.gaussian,
    alpha: Annotated[float, typer.Option(help="Confidence level in (0, 1).")] = 0.99,
    window: Annotated[
        int, typer.Option(help="Calibration window, days before each forecast.")
    ] = 500,
    horizon_days: Annotated[int, typer.Option(help="P&L horizon in whole days.")] = 1,
    start: Annotated[str | None, typer.Option(help="First P&L date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last P&L date (YYYY-MM-DD).")] = None,
    scenarios: Annotated[int, typer.Option(help="Monte Carlo scenarios per day.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (day t draws with seed + t).")] = 0,
    dof: Annotated[float, typer.Option(help="Student-t degrees of freedom (> 2).")] = 5.0,
    sampler: Annotated[Sampler, typer.Option(help="Pseudo-random (engine) or Sobol.")] = Sampler.mc,
    hold: Annotated[Hold, typer.Option(help="Hold USD exposures or quantities fixed.")] = Hold.usd,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    png_dir: Annotated[Path | None, typer.Option(help="Write the figures as PNG here.")] = None,
) -> None:
    """Backtest VaR and ES: each day's forecast from the window before it, scored."""
    from aggregator.backtest import BacktestOptions, plan_backtest, run_backtest
    from aggregator.portfolio_file import load_portfolio
    from montecarlo import MonteCarloError

    try:
        if history is not None and not history.is_dir():
            raise InputError("history", f"{history} is not a directory")
        opts = BacktestOptions(
            model=model.value,
            alpha=alpha,
            window=window,
            horizon_days=horizon_days,
            start=_day(start, "start"),
            end=_day(end, "end"),
            scenarios=scenarios,
            seed=seed,
            dof=dof,
            sampler=sampler.value,
            hold="quantity" if hold is Hold.quantity else "usd",
            history=history,
        )
        plan = plan_backtest(load_portfolio(portfolio), opts)
        with LazyProgress("Backtest days", plan.origins.size, enabled=not as_json) as progress:
            report = run_backtest(plan, opts, progress)
        write_outputs(report, out, png_dir)
    except (AggregatorError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report))
    else:
        print_backtest(report)


def write_outputs(report: dict[str, Any], out: Path | None, png_dir: Path | None) -> None:
    """The HTML report and the PNG figures, where asked for."""
    try:
        if out is not None:
            from aggregator.backtest_report import html_report

            out.write_text(html_report(report))
        if png_dir is not None:
            from aggregator.backtest_plots import pnl_figure, traffic_light_figure

            png_dir.mkdir(parents=True, exist_ok=True)
            (png_dir / "backtest_pnl.png").write_bytes(pnl_figure(report))
            tl = traffic_light_figure({report["model"]: report})
            (png_dir / "traffic_light.png").write_bytes(tl)
    except OSError as exc:
        field = "out" if out is not None and exc.filename == str(out) else "png_dir"
        raise InputError(field, f"cannot write {exc.filename} ({exc.strerror})") from None


def print_backtest(report: dict[str, Any]) -> None:
    from aggregator.backtest_report import summary_rows

    table = Table(
        title=f"Backtest of {', '.join(report['assets'])}",
        caption=f"{report['model']}, alpha {report['alpha']}, window {report['window']} d, "
        f"horizon {report['horizon_days']} d, {report['scenarios']:,} scenarios "
        f"({report['sampler']}), {report['elapsed_s']:.1f} s",
    )
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for k, v in summary_rows(report):
        table.add_row(k, v)
    out_console.print(table)
