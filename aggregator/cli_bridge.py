"""``omnimargin bridge pending|relay``: CCTP transfers in flight, and the devnet relayer.

Registered in aggregator/cli.py with ``app.add_typer(bridge_app, name="bridge")``. Errors of the
chain layer become one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from aggregator.console import out_console
from chains.errors import ChainError

if TYPE_CHECKING:
    from chains.config import OmnimarginConfig
    from chains.inflight import InflightRead, InflightTransfer

# chains.relayer (web3) is imported in the commands, so registering this sub-app stays cheap.

bridge_app = typer.Typer(
    help="Transfers in flight over CCTP bridges; relay them on the devnet.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Config file (default $OMNIMARGIN_CONFIG).")
]
BridgeOption = Annotated[
    str | None, typer.Option("--bridge", help="Bridge name (default: the config's cctp bridge).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(message: str) -> NoReturn:
    from aggregator.cli import fail  # imported late: aggregator.cli imports this module

    fail(message)


def _load(config: Path | None, bridge: str | None) -> tuple[OmnimarginConfig, str]:
    from chains.config import config_path, load_config

    cfg = load_config(config_path(config))
    if bridge is not None:
        return cfg, bridge
    cctp = [b.name for b in cfg.bridges if b.kind == "cctp"]
    if len(cctp) != 1:
        _fail(f"--bridge: the config has {len(cctp)} cctp bridges ({', '.join(cctp)}); name one")
    return cfg, cctp[0]


def transfer_json(t: InflightTransfer) -> dict[str, Any]:
    """One transfer as JSON: raw amount as a string (exact), quantity as a decimal string."""
    from bridge_adapters.holdings import quantity

    return {
        "bridge": t.bridge,
        "source_chain": t.source_chain,
        "dest_chain": t.dest_chain,
        "nonce": t.nonce,
        "recipient": t.recipient,
        "burn_token": t.burn_token,
        "dest_token": t.dest_token,
        "amount_raw": str(t.amount),
        "amount": str(quantity(t.amount, t.decimals)),
        "burnt_at_block": t.burnt_at_block,
        "burnt_at_time": t.burnt_at_time,
        "tx_hash": t.tx_hash,
        "flags": list(t.flags),
    }


def _table(title: str, transfers: tuple[InflightTransfer, ...] | list[InflightTransfer]) -> Table:
    from bridge_adapters.holdings import quantity

    table = Table(title=title)
    for col in ("nonce", "from", "to", "recipient", "amount", "burnt at", "flags"):
        table.add_column(col, justify="right" if col in ("nonce", "amount", "burnt at") else "left")
    for t in transfers:
        table.add_row(
            str(t.nonce),
            str(t.source_chain),
            str(t.dest_chain),
            t.recipient,
            f"{quantity(t.amount, t.decimals):,}",
            str(t.burnt_at_block),
            ", ".join(t.flags) or "-",
        )
    return table


def _read_json(read: InflightRead) -> dict[str, Any]:
    return {
        "bridge": read.bridge,
        "blocks": {str(c): n for c, n in sorted(read.blocks.items())},
        "unreadable": list(read.unreadable),
        "reasons": list(read.reasons),
        "transfers": [transfer_json(t) for t in read.transfers],
    }


@bridge_app.command("pending")
def pending_cmd(
    config: ConfigOption = None,
    bridge: BridgeOption = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="Only transfers to this recipient.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Transfers burnt on their source and not yet received on their destination."""
    from chains.addresses import checksummed
    from chains.relayer import pending

    try:
        recipients = [checksummed(f"account[{i}]", a) for i, a in enumerate(account or [])]
        cfg, name = _load(config, bridge)
        read = asyncio.run(pending(cfg, name, recipients or None))
    except ChainError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_read_json(read)))
        return
    out_console.print(_table(f"in flight over {read.bridge}", read.transfers))
    for reason in read.reasons:
        out_console.print(f"degraded: {reason}", highlight=False, markup=False)


@bridge_app.command("relay")
def relay_cmd(
    config: ConfigOption = None,
    bridge: BridgeOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Relay at most this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Devnet only: deliver pending transfers to their destination (oldest first)."""
    from chains.relayer import relay

    try:
        cfg, name = _load(config, bridge)
        done = asyncio.run(relay(cfg, name, limit))
    except ChainError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"bridge": name, "relayed": [transfer_json(t) for t in done]}))
        return
    out_console.print(_table(f"relayed over {name}", done))
