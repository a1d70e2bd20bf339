"""``omnimargin devnet up|down|status|advance``: the embedded local chains (DESIGN.md, "Devnet").

Registered in aggregator/cli.py with ``app.add_typer(devnet_app, name="devnet")``. Errors of the
chain layer or of the price history become one line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from aggregator.console import err_console, out_console
from aggregator.errors import AggregatorError
from chains.errors import ChainError
from chains.revert import mined_revert_reason, revert_reason

if TYPE_CHECKING:
    from chains.devnet import DevnetInfo, History

# chains.devnet (web3, ~1 s to import) is imported in the commands, not here, so that
# registering this sub-app does not slow every other command down.

devnet_app = typer.Typer(
    help="Local anvil chains with the omnimargin contracts, seeded demo accounts and a config.",
    no_args_is_help=True,
)

REPLAY_ASSETS = ("BTC", "ETH", "USDC", "USDT", "LINK")
DEFAULT_DIR = Path(".omnimargin")
DirOption = Annotated[Path, typer.Option("--dir", help="Devnet directory (state, config, logs).")]


def _fail(message: str) -> NoReturn:
    from aggregator.cli import fail  # imported late: aggregator.cli imports this module

    fail(message)


def replay_history(assets: tuple[str, ...] = REPLAY_ASSETS) -> History:
    """The shipped real daily closes of ``assets``, as the devnet's replay history."""
    from aggregator.history import load_history

    history = load_history(list(assets))
    dates = [str(d) for d in history.dates]
    return {
        asset: [
            (d, Decimal(repr(float(c)))) for d, c in zip(dates, history.closes[:, i], strict=True)
        ]
        for i, asset in enumerate(history.assets)
    }


def _contracts_cell(info: DevnetInfo, chain_id: int) -> str:
    """``vault, 4 tokens, yvUSDC, 3 feeds, sequencer`` (Multicall3 goes without saying)."""
    chains = {c["chain_id"]: c for c in (info.config.devnet or {}).get("chains", [])}
    names = chains.get(chain_id, {}).get("contracts", {})
    by_address = {address: name for name, address in names.items()}
    erc4626 = [
        by_address.get(s.address or "", "erc4626")
        for s in info.config.sources_on(chain_id)
        if s.kind == "erc4626"
    ]
    parts = [
        "vault" if "CollateralVault" in names else "",
        f"{len(info.config.tokens_on(chain_id))} tokens",
        *erc4626,
        f"{len(info.config.feeds_on(chain_id))} feeds",
        "sequencer" if info.config.chain(chain_id).sequencer_feed else "",
    ]
    return ", ".join(p for p in parts if p)


def _summary(info: DevnetInfo, blocks: dict[int, int | None]) -> Table:
    table = Table(title=f"devnet in {info.directory} (up in {info.seconds:.1f} s)")
    for col in ("chain", "id", "rpc url", "block", "contracts"):
        right = col in ("id", "block")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "contracts")
    for node in info.nodes:
        block = blocks.get(node.chain_id)
        table.add_row(
            node.name + (" (L2)" if node.l2 else ""),
            str(node.chain_id),
            node.rpc_url,
            "-" if block is None else str(block),
            _contracts_cell(info, node.chain_id),
        )
    return table


def _node_json(s: Any) -> dict[str, Any]:
    n = s.node
    return {
        "name": n.name,
        "chain_id": n.chain_id,
        "rpc_url": n.rpc_url,
        "pid": n.pid,
        "running": s.running,
        "block": s.block_number,
    }


@devnet_app.command()
def up(
    chains: Annotated[int, typer.Option(help="Number of chains (1 L1, the rest L2s).")] = 3,
    directory: DirOption = DEFAULT_DIR,
    port: Annotated[int, typer.Option("--port", help="Port of the first chain.")] = 8545,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start the chains, deploy and seed, write DIR/config.toml."""
    from chains.config import CONFIG_ENV
    from chains.devnet import devnet_status, devnet_up

    t0 = time.monotonic()
    try:
        history = replay_history()
        with err_console.status("starting the devnet") as status:

            def progress(message: str) -> None:
                status.update(message)
                err_console.print(f"[dim]{time.monotonic() - t0:5.1f} s[/dim]  {message}")

            info = asyncio.run(devnet_up(directory, chains, port, history, progress=progress))
            nodes = asyncio.run(devnet_status(directory))
    except (ChainError, AggregatorError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "config": str(info.config_path),
                    "accounts": list(info.config.accounts),
                    "chains": [_node_json(s) for s in nodes],
                }
            )
        )
        return
    out_console.print(_summary(info, {s.node.chain_id: s.block_number for s in nodes}))
    for i, account in enumerate(info.config.accounts, start=1):
        out_console.print(f"demo account {i}: {account}", highlight=False)
    out_console.print(f"config: {info.config_path}", highlight=False)
    out_console.print(f"export {CONFIG_ENV}={info.config_path}", highlight=False, soft_wrap=True)


@devnet_app.command()
def down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop the devnet's nodes (only the processes it started) and remove its state."""
    from chains.devnet import devnet_down

    try:
        stopped = devnet_down(directory)
    except ChainError as exc:
        _fail(str(exc))
    pids = ", ".join(str(n.pid) for n in stopped) or "none were still running"
    out_console.print(f"devnet in {directory.resolve()} stopped (pids {pids})", highlight=False)


@devnet_app.command()
def status(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Which nodes run, and their latest block."""
    from chains.devnet import devnet_status

    try:
        nodes = asyncio.run(devnet_status(directory))
    except ChainError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"chains": [_node_json(s) for s in nodes]}))
        if not all(s.running for s in nodes):
            raise typer.Exit(1)
        return
    table = Table(title=f"devnet in {directory.resolve()}")
    for col in ("chain", "id", "rpc url", "pid", "state", "block"):
        table.add_column(col, justify="right" if col in ("id", "pid", "block") else "left")
    for s in nodes:
        state = "[green]running[/green]" if s.running else "[red]stopped[/red]"
        block = "-" if s.block_number is None else str(s.block_number)
        n = s.node
        table.add_row(n.name, str(n.chain_id), n.rpc_url, str(n.pid), state, block)
    out_console.print(table)
    if not all(s.running for s in nodes):
        raise typer.Exit(1)


@devnet_app.command()
def advance(
    days: Annotated[int, typer.Option(help="Days of price history to move forward.")] = 1,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Push the next days' real closes to every price feed."""
    from chains.config import load_config
    from chains.devnet import advance_prices

    try:
        config = load_config(directory / "config.toml")
        prices = asyncio.run(advance_prices(config, days))
    except ChainError as exc:
        _fail(str(exc))
    table = Table(title=f"prices after {days} day(s)")
    table.add_column("asset")
    table.add_column("USD", justify="right")
    for asset, price in prices.items():
        table.add_row(asset, f"{price:,.8f}".rstrip("0").rstrip("."))
    out_console.print(table)


@devnet_app.command()
def shock(
    asset: Annotated[str, typer.Option(help="Canonical asset whose feeds move (ETH).")],
    pct: Annotated[str, typer.Option(help="Percent move, e.g. -40 (above -100).")],
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Move one asset's price feeds by a percentage on every chain at once."""
    from aggregator.errors import AggregatorError
    from aggregator.inputs import parse_decimal
    from chains.config import load_config
    from chains.devnet_control import shock as shock_feeds

    try:
        move = parse_decimal("pct", pct)
        config = load_config(directory / "config.toml")
        prices = asyncio.run(shock_feeds(config, asset, move))
    except (AggregatorError, ChainError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(
            json.dumps(
                {"asset": asset, "pct": pct, "prices": {str(c): str(p) for c, p in prices.items()}}
            )
        )
        return
    price = next(iter(prices.values()))
    out_console.print(f"{asset} {move:+}% on chains {', '.join(map(str, prices))}: {price} USD")


#: ``devnet submit`` exits 1 when the chain reverts the transaction (2 on bad input)
EXIT_REVERTED = 1


@devnet_app.command()
def submit(
    decision: Annotated[
        Path, typer.Argument(help="JSON of `omnimargin authorize` or `withdraw --json`.")
    ],
    directory: DirOption = DEFAULT_DIR,
    sender: Annotated[int, typer.Option(help="Index of the unlocked devnet account sending.")] = 7,
) -> None:
    """Execute an approval: a position's attestation goes to PerpMarket on its chain, a
    withdrawal's to the CollateralVault it names (the gate verifies and spends it there). Any
    account may send it; the position and the collateral are the attestation's account's.

    Exit status: 0 opened, 1 the chain reverted it (the decoded reason is printed, e.g.
    ``gate: nonce used``), 2 bad input (the decision file) or a chain that cannot be reached.
    """
    from web3 import HTTPProvider, Web3
    from web3.exceptions import ContractLogicError

    from aggregator.attestation import MarginAttestation, WithdrawalAttestation
    from aggregator.errors import InputError
    from aggregator.inputs import load_json
    from chains.compile import load_artifact
    from chains.config import load_config

    try:
        config = load_config(directory / "config.toml")
        try:
            text = decision.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("decision", f"cannot read {decision} ({exc})") from None
        body = load_json(text, "decision")
        if not isinstance(body, dict) or not body.get("approved") or "attestation" not in body:
            raise InputError("decision", "not an approved authorisation (no attestation)")
        typed = body["attestation"]["typed_data"]
        chain_id = int(typed["domain"]["chainId"])
        chain = config.chain(chain_id)
        w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
        signature = bytes.fromhex(body["attestation"]["signature"].removeprefix("0x"))
        att: MarginAttestation | WithdrawalAttestation
        if typed.get("primaryType") == WithdrawalAttestation.PRIMARY:
            att = WithdrawalAttestation.from_typed_data(typed)
            vault = w3.eth.contract(
                address=Web3.to_checksum_address(att.vault),
                abi=list(load_artifact("CollateralVault").abi),
            )
            call = vault.functions.withdraw(att.as_tuple(), signature)
        else:
            att = MarginAttestation.from_typed_data(typed)
            if chain.perp_market is None:
                raise InputError("decision", f"chain {chain_id} has no PerpMarket")
            perp = w3.eth.contract(
                address=Web3.to_checksum_address(chain.perp_market),
                abi=list(load_artifact("PerpMarket").abi),
            )
            call = perp.functions.open(att.as_tuple(), signature)
        try:
            call.call({"from": w3.eth.accounts[sender]})
            tx = call.transact({"from": w3.eth.accounts[sender]})
        except ContractLogicError as exc:
            _reverted(chain_id, revert_reason(exc.data, exc.message))
        receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=60)
        if receipt["status"] != 1:
            _reverted(chain_id, mined_revert_reason(w3, tx, receipt), receipt["blockNumber"])
    except (AggregatorError, ChainError, KeyError) as exc:
        _fail(str(exc))
    if isinstance(att, WithdrawalAttestation):
        what = f"withdrawn {body.get('amount', att.amount)} {body.get('symbol', att.token)}"
        out_console.print(
            f"{what} on chain {chain_id} in block {receipt['blockNumber']}: from {att.account} "
            f"to {att.recipient} (tx {tx.hex()})"
        )
        return
    out_console.print(
        f"position opened on chain {chain_id} in block {receipt['blockNumber']}: "
        f"{att.account} {att.size_delta / 10**18:+g} (tx {tx.hex()})"
    )


@devnet_app.command(name="liquidation-demo")
def liquidation_demo(directory: DirOption = DEFAULT_DIR) -> None:
    """Lever the demo account up, shock ETH -40 % on every chain, and liquidate it round by
    round (as the keeper does) until its health is back at the target; prints every step."""
    from aggregator.demo_liquidation import run
    from chains.config import load_config

    try:
        config = load_config(directory / "config.toml")
        store = Path(config.store_path) if config.store_path else directory / "state.sqlite"
        result = run(config, store, lambda line: out_console.print(line, highlight=False))
    except (AggregatorError, ChainError) as exc:
        _fail(str(exc))
        return
    if not result["rounds"]:
        _fail("liquidation demo: the shock left nothing to liquidate")


def _reverted(chain_id: int, reason: str, block: int | None = None) -> NoReturn:
    where = f"chain {chain_id}" + (f" (block {block})" if block is not None else "")
    err_console.print(
        f"error: attestation: reverted on {where}: {reason}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_REVERTED)
