"""``omnimargin margin`` and ``omnimargin authorize``: unified margin from the chains."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from aggregator.console import out_console
from aggregator.errors import AggregatorError
from aggregator.inputs import account as checked_account

#: ``omnimargin authorize`` exits 0 when approved, 1 when refused, 2 on bad input
EXIT_REFUSED = 1


def _fail(message: str) -> None:
    from aggregator.cli import fail

    fail(message)


def checksum(account: str, field: str = "account") -> str:
    """An address option in EIP-55 form; a bad one (a wrong checksum too) is an InputError."""
    return checked_account(account, field)


def compute_margin(config_file: Path | None, account: str, venues: Path | None) -> dict[str, Any]:
    from aggregator.accounts import load_venues, margin_report, policy_of, scenario_set
    from aggregator.world import read_world
    from chains.config import config_path, load_config

    cfg = load_config(config_path(config_file))
    account = checksum(account)
    policy, _ = policy_of(cfg)
    venue_lines = load_venues(venues) if venues else None
    world = asyncio.run(read_world(cfg, [account], tolerance=policy.price_tolerance))
    reserved = 0.0
    if cfg.store_path:
        from aggregator.authorize import account_state, gated, held_margin
        from aggregator.store import Store

        store = Store(Path(cfg.store_path))
        try:
            world = asyncio.run(gated(cfg, world, store, [account]))
            state = account_state(cfg, world, account)
            reserved = held_margin(state, store.live(account))
        finally:
            store.close()
    report, _ = margin_report(
        world, account, scenario_set(cfg, policy), policy, reserved, venue_lines
    )
    return report


def margin(
    account: Annotated[str, typer.Argument(help="Account address.")],
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    venues: Annotated[Path | None, typer.Option(help="Off-chain venue balances (JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Unified margin of an account across every chain, bridge and venue."""
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        report = compute_margin(config, account, venues)
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report))
    else:
        print_margin(report)


def print_margin(r: dict[str, Any]) -> None:
    head = Table(title=f"Unified margin of {r['account']}", caption=f"status {r['status']}")
    head.add_column("figure")
    head.add_column("USD", justify="right")
    for key in ("equity", "maintenance_margin", "initial_margin", "reserved", "free_margin"):
        head.add_row(key.replace("_", " "), f"{r[key]:,.2f}")
    head.add_row("health", "-" if r["health"] is None else f"{r['health']:.2f}")
    head.add_row(f"VaR / ES {r['alpha']}", f"{r['var']:,.2f} / {r['es']:,.2f}")
    out_console.print(head)
    lines = Table(title="Holdings and positions")
    for col in ("chain", "asset", "column", "quantity", "source", "backs margin"):
        lines.add_column(col)
    for p in r["positions"]:
        src = p["source"] + (" (in flight)" if p["in_flight"] else "")
        backs = "yes" if p["locked"] else "no"
        lines.add_row(str(p["chain_id"]), p["asset"], p["column"], p["quantity"], src, backs)
    out_console.print(lines)
    out_console.print(
        f"collateral locked {r['collateral_locked_usd']:,.2f} USD (backs margin); holdings "
        f"unlocked {r['holdings_unlocked_usd']:,.2f} USD (exposure only: they can leave)"
    )
    parts = Table(title="ES contribution")
    parts.add_column("by")
    parts.add_column("USD", justify="right")
    for k, v in sorted(r["by_chain"].items()):
        parts.add_row(f"chain {k}", f"{v:,.2f}")
    for k, v in sorted(r["by_asset"].items()):
        parts.add_row(f"asset {k}", f"{v:,.2f}")
    out_console.print(parts)
    for reason in r["reasons"]:
        out_console.print(f"[yellow]degraded:[/yellow] {reason}")


def authorize_command(
    account: Annotated[str, typer.Option(help="Account address.")],
    chain_id: Annotated[int, typer.Option(help="Chain on which the position opens.")],
    market: Annotated[str, typer.Option(help="Market, named by its canonical asset (ETH).")],
    size_delta: Annotated[str, typer.Option(help="Size change in units of the asset (-1.5).")],
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save: Annotated[
        Path | None, typer.Option(help="Also write the JSON decision to this file.")
    ] = None,
) -> None:
    """Authorise a position change: approve with a signed attestation, or refuse with a reason.

    Exit status: 0 approved, 1 refused (the reason is printed), 2 bad input or missing data.
    """
    from aggregator.authorize import Request, authorize, parse_size
    from aggregator.inputs import parse_decimal
    from chains.config import config_path, load_config
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        path = config_path(config)
        cfg = load_config(path)
        who = checksum(account)
        parse_decimal("size_delta", size_delta)  # ASCII [+-]digits[.digits] only
        req = Request(who, chain_id, market, parse_size(size_delta))
        decision = _with_store(cfg, path, lambda store, key: authorize(cfg, req, store, key))
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    _answer(
        decision,
        save,
        as_json,
        lambda: print_decision(decision, market, size_delta, chain_id, req.account),
    )


def withdraw_command(
    account: Annotated[str, typer.Option(help="Account whose collateral leaves the vault.")],
    chain_id: Annotated[int, typer.Option(help="Chain of the CollateralVault.")],
    token: Annotated[str, typer.Option(help="Token, by symbol (USDC) or address.")],
    amount: Annotated[str, typer.Option(help="Amount in units of the token (1500.25).")],
    to: Annotated[
        str | None, typer.Option("--to", help="Recipient (default: the account).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save: Annotated[
        Path | None, typer.Option(help="Also write the JSON decision to this file.")
    ] = None,
) -> None:
    """Approve taking collateral out of a vault (a signed WithdrawalAttestation), or refuse.

    Approved only if every outstanding approval of the account stays covered with the amount
    gone. Exit status: 0 approved, 1 refused (the reason is printed), 2 bad input or missing
    data.
    """
    from aggregator.withdraw import withdraw, withdrawal_request
    from chains.config import config_path, load_config
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        path = config_path(config)
        cfg = load_config(path)
        req = withdrawal_request(cfg, account, chain_id, token, amount, to)
        decision = _with_store(cfg, path, lambda store, key: withdraw(cfg, req, store, key))
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    what = f"withdrawal of {decision['amount']} {decision['symbol']}"
    _answer(
        decision,
        save,
        as_json,
        lambda: print_decision(decision, what, f"to {req.recipient}", chain_id, req.account),
    )


def _with_store(
    cfg: Any, path: Path, decide: Callable[[Any, Any], dict[str, Any]]
) -> dict[str, Any]:
    """``decide(store, key)`` with the config's store (beside the config unless set) and the
    signer key; the store is closed whatever happens."""
    from aggregator.attestation import load_signer_key
    from aggregator.store import Store

    key = load_signer_key(cfg.signer)
    store = Store(Path(cfg.store_path) if cfg.store_path else path.with_name("state.sqlite"))
    try:
        return decide(store, key)
    finally:
        store.close()


def _answer(
    decision: dict[str, Any], save: Path | None, as_json: bool, show: Callable[[], None]
) -> None:
    """Write the decision (``--save``), print it (JSON or ``show``), exit 1 if refused."""
    if save is not None:
        try:
            save.write_text(json.dumps(decision, indent=1))
        except OSError as exc:
            _fail(f"save: cannot write {save} ({exc.strerror})")
    if as_json:
        typer.echo(json.dumps(decision))
    else:
        show()
    if not decision["approved"]:
        raise typer.Exit(EXIT_REFUSED)


def print_decision(
    decision: dict[str, Any], market: str, size_delta: str, chain_id: int, account: str
) -> None:
    verdict = "[green]approved[/green]" if decision["approved"] else "[red]refused[/red]"
    out_console.print(f"{verdict} {market} {size_delta} on chain {chain_id} for {account}")
    if decision["reason"]:
        out_console.print(f"reason: {decision['reason']}")
    for key_name in (
        "equity",
        "initial_margin_before",
        "initial_margin_after",
        "free_margin_after",
    ):
        if key_name in decision:
            out_console.print(f"{key_name.replace('_', ' ')}: {decision[key_name]:,.2f} USD")
    if decision["approved"]:
        out_console.print(f"signature: {decision['attestation']['signature']}")
