"""``omnimargin liquidate`` and ``omnimargin fund``: liquidation plans and the insurance fund."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aggregator.cli_margin import EXIT_REFUSED, _fail, checksum
from aggregator.console import out_console
from aggregator.errors import AggregatorError

ConfigOption = Annotated[
    Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
]


def liquidate_command(
    account: Annotated[str, typer.Argument(help="Account address.")],
    submit: Annotated[
        bool, typer.Option("--submit", help="Send every step (from [liquidation] keeper_sender).")
    ] = False,
    sender: Annotated[
        str | None, typer.Option(help="Account the node holds unlocked that sends the steps.")
    ] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Plan, sign and reserve the next liquidation round of an account below MM (closes
    largest ES contribution first, then collateral seized on whichever chains hold it); with
    --submit, send each step to its chain. Exit status: 0 planned (and every step executed),
    1 not liquidatable now (the reason is printed) or a step reverted, 2 bad input."""
    from aggregator.attestation import load_signer_key
    from aggregator.authorize import fresh_state
    from aggregator.keeper import due, liquidate, pending_steps, submit_steps
    from aggregator.liquidation import liquidation_policy
    from aggregator.store import Store
    from chains.config import config_path, load_config
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        path = config_path(config)
        cfg = load_config(path)
        who = checksum(account)
        lp = liquidation_policy(cfg)
        by = checksum(sender, "sender") if sender is not None else lp.keeper_sender
        if submit and by is None:
            raise AggregatorError("sender: --submit needs --sender or [liquidation] keeper_sender")
        key = load_signer_key(cfg.signer)
        store = Store(Path(cfg.store_path) if cfg.store_path else path.with_name("state.sqlite"))
        try:
            state = fresh_state(cfg, store, key, who)
            reason = due(store, state, lp)
            pending = pending_steps(store, state)
            if reason is None and pending:
                reason = f"{len(pending)} step(s) of the last plan still outstanding"
            rounds = [] if reason else liquidate(cfg, store, key, lp, [state])
        finally:
            store.close()
        out: dict[str, Any] = {
            "account": who,
            "liquidatable": state.figures.liquidatable,
            "status": state.figures.status,
            "health": state.figures.health,
            "planned": bool(rounds),
            "reason": reason or "",
        }
        if rounds:
            out |= {"plan": rounds[0]["plan"], "steps": rounds[0]["steps"]}
            if submit:
                assert by is not None
                out["submitted"] = submit_steps(cfg, rounds[0]["steps"], by)
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(out))
    else:
        _print_round(out)
    failed = [s for s in out.get("submitted", []) if not s["executed"]]
    if not rounds or failed:
        raise typer.Exit(EXIT_REFUSED)


def _print_round(out: dict[str, Any]) -> None:
    if not out["planned"]:
        out_console.print(f"{out['account']}: not liquidated: {out['reason']}")
        return
    p = out["plan"]
    out_console.print(
        f"{out['account']}: equity {p['equity']:,.2f} USD, MM {p['maintenance_margin']:,.2f}, "
        f"health {p['health']:.3f} -> target {p['target_health']}"
    )
    for c in p["closes"]:
        out_console.print(f"  close {c['size_delta']} {c['market']} on chain {c['chain_id']}")
    for s in p["seizes"]:
        out_console.print(
            f"  seize {s['quantity']} {s['symbol']} on chain {s['chain_id']} "
            f"({s['value_usd']:,.2f} USD) for {s['recipient']}"
        )
    for note in p["notes"]:
        out_console.print(f"  {note}")
    for r in out.get("submitted", []):
        verdict = "executed" if r["executed"] else f"reverted: {r.get('reason')}"
        out_console.print(f"  step {r['reservation_id']} ({r['target']}): {verdict}")


def fund_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The insurance fund: its collateral in every vault and every bad debt on record."""
    from aggregator.keeper import fund_report
    from aggregator.liquidation import liquidation_policy
    from aggregator.store import Store
    from chains.config import config_path, load_config
    from chains.errors import ChainError

    try:
        path = config_path(config)
        cfg = load_config(path)
        store = Store(Path(cfg.store_path) if cfg.store_path else path.with_name("state.sqlite"))
        try:
            report = fund_report(cfg, store, liquidation_policy(cfg))
        finally:
            store.close()
    except (AggregatorError, ChainError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report))
        return
    out_console.print(f"insurance fund {report['insurance_fund']}: {report['total_usd']:,.2f} USD")
    for b in report["balances"]:
        out_console.print(f"  chain {b['chain_id']}: {b['quantity']} {b['symbol']}")
    out_console.print(
        f"bad debt: {report['bad_debt_usd']:,.2f} USD, covered "
        f"{report['bad_debt_covered_usd']:,.2f}, uncovered {report['bad_debt_uncovered_usd']:,.2f}"
    )
