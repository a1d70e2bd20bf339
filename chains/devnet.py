"""The embedded devnet (DESIGN.md, "Devnet"): local anvil chains with our contracts on them.

``devnet_up`` starts the nodes, deploys and seeds (chains/devnet_deploy.py), and writes the
config every other command reads (chains/devnet_config.py); ``devnet_down`` stops only the
processes it recorded. Oracle and time controls for tests are in chains/devnet_control.py and
re-exported here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from chains.compile import load_artifact
from chains.config import OmnimarginConfig
from chains.devnet_bridge import deploy_bridges
from chains.devnet_config import CONFIG_FILE, build_config, write_config
from chains.devnet_control import (
    HISTORY_FILE,
    History,
    advance_prices,
    initial_replay,
    mint_accounts,
    set_feed,
    set_sequencer,
    warp,
)
from chains.devnet_deploy import DEMO_ACCOUNTS, Deployment, deploy_chain
from chains.devnet_margin import DEVNET_FUND, DEVNET_FUND_USDC, KEEPER_ACCOUNT
from chains.devnet_nodes import (
    HOST,
    STATE_FILE,
    Node,
    anvil_binary,
    node_record,
    node_specs,
    nodes_of,
    port_in_use,
    read_state,
    running_nodes,
    spawn_anvil,
    stop_node,
    wait_ready,
    write_state,
)
from chains.devnet_web3 import RPC_ERRORS, RPC_TIMEOUT_S, connect
from chains.errors import DevnetError

__all__ = [
    "DevnetInfo",
    "History",
    "NodeStatus",
    "advance_prices",
    "devnet_down",
    "devnet_status",
    "devnet_up",
    "mint_accounts",
    "set_feed",
    "set_sequencer",
    "warp",
]

CONTRACTS = ("Multicall3", "CollateralVault", "ERC20", "ERC4626Vault", "PriceFeed")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DevnetInfo:
    """A running devnet: where its config is, its nodes, and how long the start took."""

    directory: Path
    config_path: Path
    config: OmnimarginConfig
    nodes: tuple[Node, ...]
    seconds: float


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    running: bool
    block_number: int | None


def _refuse_if_running(directory: Path) -> None:
    state = read_state(directory)
    if state is None:
        return
    alive = running_nodes(state)
    if alive:
        pids = ", ".join(str(n.pid) for n in alive)
        raise DevnetError(
            f"devnet already running in {directory} (pids {pids}): "
            "run `omnimargin devnet down` first"
        )
    (directory / STATE_FILE).unlink()  # a devnet that died: its record is stale


def _check_ports(ports: list[int]) -> None:
    busy = [p for p in ports if port_in_use(p)]
    if busy:
        raise DevnetError(
            f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))} in use on {HOST}: "
            "stop what listens there or pick another --port"
        )


async def _demo_accounts(node: Node) -> tuple[str, list[str]]:
    async with connect(node.rpc_url) as w3:
        accounts = [str(a) for a in await w3.eth.accounts]
    if len(accounts) <= max(DEMO_ACCOUNTS):
        raise DevnetError(f"anvil on {node.rpc_url} has {len(accounts)} accounts, need 4")
    return accounts[0], accounts


async def devnet_up(
    directory: Path,
    chains: int = 3,
    base_port: int = 8545,
    history: History | None = None,
    *,
    ports: list[int] | None = None,
    start_day: int = -1,
    progress: Progress | None = None,
) -> DevnetInfo:
    """Start ``chains`` anvil nodes, deploy, seed, and write ``<directory>/config.toml``.

    ``history`` maps an asset to its daily closes ``[(date, close), ...]``; the first feed round
    is the close at ``start_day`` (default: the last day). Ports are ``base_port + i`` unless
    ``ports`` lists them. On any failure the started nodes are stopped again.
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(directory)
    specs = node_specs(chains)
    ports = ports if ports is not None else [base_port + i for i in range(chains)]
    if len(ports) != chains:
        raise DevnetError(f"ports: {len(ports)} given for {chains} chains")
    _check_ports(ports)
    anvil = anvil_binary()
    say("compiling contracts")
    for name in CONTRACTS:
        load_artifact(name)
    nodes: list[Node] = []
    try:
        say(f"starting {chains} anvil nodes")
        nodes = [spawn_anvil(anvil, s, p, directory) for s, p in zip(specs, ports, strict=True)]
        state: dict[str, Any] = {
            "version": 1,
            "anvil": anvil,
            "started_at": time.time(),
            "nodes": [node_record(n) for n in nodes],
        }
        write_state(directory, state)
        await asyncio.gather(*(asyncio.to_thread(wait_ready, n) for n in nodes))
        config = await _deploy_all(directory, anvil, state, nodes, history, start_day, say)
    except BaseException:
        for n in nodes:
            stop_node(n)
        (directory / STATE_FILE).unlink(missing_ok=True)
        raise
    say("ready")
    path = directory / CONFIG_FILE
    return DevnetInfo(directory, path, config, tuple(nodes), time.monotonic() - t0)


async def _deploy_all(
    directory: Path,
    anvil: str,
    state: dict[str, Any],
    nodes: list[Node],
    history: History | None,
    start_day: int,
    say: Progress,
) -> OmnimarginConfig:
    deployer, accounts = await _demo_accounts(nodes[0])
    replay = initial_replay(history or {}, start_day)
    prices = {a: Decimal(p) for a, p in replay["price"].items()}
    say("deploying contracts and seeding demo accounts")
    try:
        async with asyncio.TaskGroup() as tg:  # one chain failing cancels the others
            tasks = [
                tg.create_task(deploy_chain(n, i, deployer, accounts, prices))
                for i, n in enumerate(nodes)
            ]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    deps: list[Deployment] = [t.result() for t in tasks]
    deps = await deploy_bridges(deps, deployer, accounts)  # needs every chain's address
    demo = [accounts[i] for i in DEMO_ACCOUNTS]
    data = build_config(directory, anvil, deployer, demo, state["started_at"], deps)
    # liquidations: the fund every vault credits penalties to, and the keeper's sender
    data["liquidation"] = {
        "insurance_fund": DEVNET_FUND,
        "keeper_sender": accounts[KEEPER_ACCOUNT],
    }
    _, config = write_config(directory, data)
    usdc = 10 ** next(t.decimals for t in config.tokens_on(nodes[0].chain_id) if t.symbol == "USDC")
    await mint_accounts(
        config, nodes[0].chain_id, "USDC", [DEVNET_FUND], [DEVNET_FUND_USDC * usdc], locked=True
    )
    _write_history(directory, history or {})
    state["replay"] = replay
    write_state(directory, state)
    return config


def _write_history(directory: Path, history: History) -> None:
    data = {a: [[d, str(c)] for d, c in rows] for a, rows in history.items()}
    (directory / HISTORY_FILE).write_text(json.dumps(data))


async def devnet_status(directory: Path) -> list[NodeStatus]:
    """Each recorded node: whether it runs (our anvil, same pid) and its latest block."""
    state = read_state(directory.resolve())
    if state is None:
        raise DevnetError(f"no devnet recorded in {directory} (no {STATE_FILE})")
    alive = {n.pid for n in running_nodes(state)}

    async def one(node: Node) -> NodeStatus:
        if node.pid not in alive:
            return NodeStatus(node, False, None)
        try:
            async with connect(node.rpc_url) as w3:
                number = await asyncio.wait_for(w3.eth.block_number, RPC_TIMEOUT_S)
        except RPC_ERRORS:
            return NodeStatus(node, True, None)
        return NodeStatus(node, True, int(number))

    return list(await asyncio.gather(*(one(n) for n in nodes_of(state))))


def devnet_down(directory: Path, timeout: float = 5.0) -> list[Node]:
    """Stop the recorded nodes that still run (ours only) and remove the state; return them."""
    directory = directory.resolve()
    state = read_state(directory)
    if state is None:
        raise DevnetError(f"no devnet recorded in {directory} (no {STATE_FILE})")
    stopped = [n for n in nodes_of(state) if stop_node(n, timeout)]
    for name in (STATE_FILE, CONFIG_FILE, HISTORY_FILE):
        (directory / name).unlink(missing_ok=True)
    return stopped
