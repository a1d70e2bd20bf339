"""The ``omnimargin`` command line (Typer).

Errors from bad input or missing data become one line on stderr and exit code 2; nothing else
is caught broadly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table
from typer.core import TyperCommand
from typer.exceptions import TyperException

from aggregator.cli_backtest import backtest_command
from aggregator.cli_bridge import bridge_app
from aggregator.cli_devnet import devnet_app
from aggregator.cli_keys import keys_app
from aggregator.cli_liquidate import fund_command, liquidate_command
from aggregator.cli_margin import authorize_command, withdraw_command
from aggregator.cli_margin import margin as margin_command
from aggregator.cli_serve import report as report_command
from aggregator.cli_serve import serve as serve_command
from aggregator.console import LazyProgress, err_console, out_console
from aggregator.errors import AggregatorError, InputError
from aggregator.portfolio_file import load_portfolio
from aggregator.risk import RiskOptions, run_portfolio_risk
from aggregator.risk_limits import check_memory, check_tail
from montecarlo import LocalExecutor, MonteCarloError, plan_chunks
from montecarlo.engine import Executor

app = typer.Typer(
    name="omnimargin",
    help="Cross-chain collateral and margin engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2

app.add_typer(devnet_app, name="devnet")
app.add_typer(bridge_app, name="bridge")
app.add_typer(keys_app, name="keys")


class ModelChoice(StrEnum):
    gaussian = "gaussian"
    student_t = "student_t"
    historical = "historical"


class BackendChoice(StrEnum):
    numpy = "numpy"
    cupy = "cupy"
    auto = "auto"


class ExecutorChoice(StrEnum):
    local = "local"
    ray = "ray"


def fail(message: str) -> NoReturn:
    """Print one error line and exit with code 2."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """omnimargin: one portfolio across chains, one Monte Carlo risk number, one margin."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class OneLineErrors(TyperCommand):
    """Option errors (``--scenarios abc``, a missing ``--portfolio``) as one line, exit code 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except TyperException as exc:  # click's UsageError / BadParameter
            if exc.exit_code != EXIT_BAD_INPUT:
                raise
            fail(" ".join(exc.format_message().split()))


def make_executor(
    kind: ExecutorChoice, ray_address: str | None, workers: int | None, gpu: bool
) -> Executor:
    if kind is ExecutorChoice.ray:
        from montecarlo import RayExecutor

        return RayExecutor(address=ray_address, workers=workers, gpu=gpu)
    return LocalExecutor(workers)


@app.command(cls=OneLineErrors)
def risk(
    portfolio: Annotated[Path, typer.Option("--portfolio", "-p", help="Portfolio JSON file.")],
    scenarios: Annotated[int, typer.Option(help="Number of Monte Carlo scenarios.")] = 100_000,
    alpha: Annotated[float, typer.Option(help="Confidence level in (0, 1).")] = 0.99,
    horizon_days: Annotated[float, typer.Option(help="Liquidation horizon in days.")] = 1.0,
    model: Annotated[ModelChoice, typer.Option(help="Scenario model.")] = ModelChoice.gaussian,
    dof: Annotated[float, typer.Option(help="Student-t degrees of freedom (> 2).")] = 5.0,
    history: Annotated[Path | None, typer.Option(help="Folder of daily close CSV files.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    backend: Annotated[BackendChoice, typer.Option(help="Array backend.")] = BackendChoice.numpy,
    executor: Annotated[
        ExecutorChoice, typer.Option(help="Where chunks run.")
    ] = ExecutorChoice.local,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel workers (default: CPUs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """VaR, ES and per-asset ES contributions of a portfolio."""
    if scenarios < 1:
        fail(f"scenarios: must be >= 1, got {scenarios}")
    if not 0.0 < alpha < 1.0:
        fail(f"alpha: must be in (0, 1), got {alpha}")
    if not 0.0 < horizon_days <= 365.0:
        fail(f"horizon_days: must be in (0, 365], got {horizon_days}")
    if not dof > 2.0:
        fail(f"dof: must be > 2, got {dof}")
    if seed < 0:
        fail(f"seed: must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        fail(f"workers: must be >= 1, got {workers}")
    if history is not None and not history.is_dir():
        fail(f"history: {history} is not a directory")
    try:
        check_tail(scenarios, alpha)
    except InputError as exc:
        fail(str(exc))
    opts = RiskOptions(
        scenarios=scenarios,
        alpha=alpha,
        horizon_days=horizon_days,
        model=model.value,
        dof=dof,
        history=history,
        seed=seed,
        backend=backend.value,
    )
    try:
        pf = load_portfolio(portfolio)
        columns = len({p.asset for p in pf.positions})
        here = 1 if executor is ExecutorChoice.ray else (workers or os.cpu_count() or 1)
        check_memory(scenarios, columns, alpha, here)  # a Ray worker's memory is not ours
        ex = make_executor(executor, ray_address, workers, gpu=backend is BackendChoice.cupy)
        try:
            total = 2 * plan_chunks(scenarios).n_chunks
            with LazyProgress("Monte Carlo", total, enabled=not as_json) as progress:
                report = run_portfolio_risk(pf, opts, ex, progress)
        finally:
            ex.close()
    except (AggregatorError, MonteCarloError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report))
    else:
        print_risk(report)


def print_risk(report: dict[str, Any]) -> None:
    head = Table(
        title="Portfolio risk",
        caption=f"{report['model']}, alpha {report['alpha']}, {report['scenarios']:,} scenarios, "
        f"horizon {report['horizon_days']} d",
    )
    head.add_column("measure")
    head.add_column("USD", justify="right")
    head.add_column("std. error", justify="right")
    for name in ("var", "es"):
        se = report[f"{name}_stderr"]
        head.add_row(name.upper(), f"{report[name]:,.2f}", "-" if se is None else f"{se:,.2f}")
    out_console.print(head)
    parts = Table(title="Exposure and ES contribution by asset")
    for col in ("asset", "price", "exposure USD", "ES part USD", "share"):
        parts.add_column(col, justify="left" if col == "asset" else "right")
    es = report["es"] or 1.0
    for a, c in sorted(report["contributions"].items(), key=lambda kv: -abs(kv[1])):
        parts.add_row(
            a,
            f"{report['prices'][a]:,.4f}",
            f"{report['exposures'][a]:,.2f}",
            f"{c:,.2f}",
            f"{c / es:.1%}",
        )
    out_console.print(parts)
    out_console.print(
        f"backend {report['backend']}, executor {report['executor']}, "
        f"seed {report['seed']}, {report['elapsed_s']:.2f} s"
    )


@app.command(cls=OneLineErrors)
def snapshot(
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    accounts: Annotated[str | None, typer.Option(help="Comma-separated account addresses.")] = None,
    accounts_file: Annotated[
        Path | None, typer.Option(help="File with one address per line.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds before a chain counts as unavailable.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Read every chain of the config at a pinned block: balances, feeds, their status."""
    import asyncio

    from aggregator.snapshot_view import parse_accounts, print_snapshot, snapshot_json
    from chains.config import config_path, load_config
    from chains.errors import ChainError
    from chains.reader import snapshot_all

    try:
        cfg = load_config(config_path(config))
        addrs = parse_accounts(accounts, accounts_file, cfg.accounts)
        snaps = asyncio.run(snapshot_all(cfg, addrs, timeout))
    except (AggregatorError, ChainError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(snapshot_json(snaps)))
    else:
        print_snapshot(snaps)


app.command(name="margin", cls=OneLineErrors)(margin_command)
app.command(name="authorize", cls=OneLineErrors)(authorize_command)
app.command(name="withdraw", cls=OneLineErrors)(withdraw_command)
app.command(name="liquidate", cls=OneLineErrors)(liquidate_command)
app.command(name="fund", cls=OneLineErrors)(fund_command)
app.command(name="serve", cls=OneLineErrors)(serve_command)
app.command(name="report", cls=OneLineErrors)(report_command)
app.command(name="backtest", cls=OneLineErrors)(backtest_command)


if __name__ == "__main__":  # pragma: no cover
    app()
