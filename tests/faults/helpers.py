"""What the fault tests share: the devnet's chains and demo account, config edits, plain
JSON-RPC, reads and decisions, a second anvil, and a slow loopback endpoint."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, account_state, decide, gated
from aggregator.gate_sync import sync_counters
from aggregator.store import GateCounter, Store
from aggregator.world import World, read_world
from chains.config import OmnimarginConfig, load_config, parse_config
from chains.devnet_nodes import HOST, Node, anvil_binary, free_ports, nodes_of, read_state
from chains.reader import snapshot_all
from chains.types import ChainSnapshot

ETH, ARB, BASE = 31337001, 31337002, 31337003
#: the demo account: collateral on chains 1 and 3 (and USDC in flight to 3), nothing on 2
ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def edited(cfg: OmnimarginConfig, chain_id: int | None = None, **changes: Any) -> OmnimarginConfig:
    """``cfg`` with ``changes`` on chain ``chain_id`` (every chain when None), re-validated."""
    raw = cfg.model_dump(mode="json")
    for chain in raw["chains"]:
        if chain_id is None or chain["chain_id"] == chain_id:
            chain.update(changes)
    return parse_config(raw)


def fast(cfg: OmnimarginConfig) -> OmnimarginConfig:
    """Short timeouts and one retry everywhere: a dead endpoint costs a second, not ten."""
    return edited(cfg, timeout_s=2.0, retries=1, backoff_s=0.01)


def rpc(url: str, method: str, params: list[Any], timeout: float = 30.0) -> Any:
    """One JSON-RPC call; raises RuntimeError on a JSON-RPC error."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def block_hash(url: str, number: int) -> str:
    return str(rpc(url, "eth_getBlockByNumber", [hex(number), False])["hash"])


def node(directory: Path, chain_id: int) -> Node:
    """The devnet node serving ``chain_id``."""
    state = read_state(directory)
    assert state is not None, directory
    return next(n for n in nodes_of(state) if n.chain_id == chain_id)


def snapshots(cfg: OmnimarginConfig, accounts: list[str] | None = None) -> dict[int, ChainSnapshot]:
    snaps = asyncio.run(snapshot_all(cfg, accounts or [ACCOUNT], timeout_s=60))
    return {s.chain_id: s for s in snaps}


_COUNTERS: dict[tuple[str, ...], dict[int, GateCounter]] = {}


def synced_counters(cfg: OmnimarginConfig) -> dict[int, GateCounter]:
    """Gate counters bumped once per devnet (by a store of its own), for the fresh stores of
    :func:`decision`: a world read after this call is pinned past the bump."""
    # one devnet, however its endpoints are edited (a slow proxy, a dead one): synced once,
    # through the devnet's own config
    directory = (cfg.devnet or {}).get("dir")
    base = load_config(Path(directory) / "config.toml") if directory else cfg
    key = (str(directory),) if directory else tuple(c.rpc_urls[0] for c in cfg.chains)
    if key not in _COUNTERS:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "sync.sqlite")
            try:
                sync_counters(base, store, load_signer_key(base.signer))
                _COUNTERS[key] = store.counters()
            finally:
                store.close()
    return _COUNTERS[key]


def world(cfg: OmnimarginConfig, accounts: list[str] | None = None) -> World:
    """Every chain read now, the gates' counters synced first (see :func:`decision`)."""
    synced_counters(cfg)
    return asyncio.run(read_world(cfg, accounts or [ACCOUNT], timeout_s=60))


def decision(
    cfg: OmnimarginConfig,
    w: World,
    store_path: Path,
    market: str = "ETH",
    chain_id: int = ARB,
    size: str = "1",
    account: str = ACCOUNT,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The decision on opening ``size`` of ``market`` on ``chain_id`` given the reads ``w``."""
    store = Store(store_path)
    try:
        req = Request(account, chain_id, market, Decimal(size))
        key = load_signer_key(cfg.signer)
        for counter in synced_counters(cfg).values():  # as a store synced before ``w``
            store.set_counter(counter)
        state = account_state(cfg, asyncio.run(gated(cfg, w, store, [account])), account)
        return decide(cfg, state, req, store, key, extra)
    finally:
        store.close()


def balances(snap: ChainSnapshot) -> list[tuple[str, str, str, int]]:
    """(account, symbol, source, amount) of every balance, sorted: what a snapshot says."""
    return sorted((b.account, b.symbol, b.source.value, b.amount) for b in snap.balances)


def wait_rpc(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            rpc(url, "eth_chainId", [], timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def extra_anvil(*args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second anvil on a free loopback port (``--fork-url``, ``--chain-id``, ...)."""
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [anvil_binary(), "--port", str(port), "--silent", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_rpc(url)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@contextmanager
def replica(url: str, chain_id: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second, independent anvil holding ``url``'s chain (``anvil_dumpState`` loaded into a
    fresh node): the same blocks and hashes, and it lives on when ``url``'s node dies."""
    with extra_anvil("--chain-id", str(chain_id)) as (copy, proc):
        assert rpc(copy, "anvil_loadState", [rpc(url, "anvil_dumpState", [])]) is True
        assert block_hash(copy, 0) == block_hash(url, 0)
        yield copy, proc


class _Slow(BaseHTTPRequestHandler):
    server: SlowServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.delay_s)
        req = urllib.request.Request(self.server.target, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = resp.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            return  # the client gave up (its timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        return


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str, delay_s: float) -> None:
        super().__init__((HOST, 0), _Slow)
        self.target, self.delay_s = target, delay_s


@contextmanager
def slow_endpoint(target: str, delay_s: float) -> Iterator[str]:
    """A real HTTP JSON-RPC endpoint on loopback that answers as ``target`` after ``delay_s``."""
    server = SlowServer(target, delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
