"""Reorgs between a snapshot and an authorisation (``anvil_reorg`` of depth 1, 2 and 3 on the
chain holding the collateral and on the target chain). Each case first checks that the pinned
block's hash really changed; then the authorisation is refused, or approved on a fresh snapshot
whose blocks are canonical, never on the orphaned one: through the service (whose epoch was
read before the reorg), through ``omnimargin authorize`` (which reads anew), and a read at the
orphaned block (EIP-1898, ``requireCanonical``) fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from eth_utils.crypto import keccak

from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, authorize
from aggregator.service.launcher import Server, start_server
from aggregator.store import Store
from aggregator.world import World
from chains.config import OmnimarginConfig, load_config
from chains.reader import ChainReader, PinnedBlock
from tests.faults.helpers import ACCOUNT, ARB, ETH, block_hash, rpc, world
from tests.reliability import ForTest

FAMILY = "Reorg"
CASES = [(depth, chain) for chain in (ETH, ARB) for depth in (1, 2, 3)]
ROLE = {ETH: "the collateral's chain", ARB: "the target chain"}


class Net(NamedTuple):
    config: OmnimarginConfig
    server: Server
    store: Path


@pytest.fixture(scope="module")
def net(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """A devnet and a service over it taking an epoch every 2 s."""
    info = devnet_factory(3)
    where = tmp_path_factory.mktemp("reorg")
    server = start_server(info.config_path, where / "serve.log", "--epoch-interval", "2")
    try:
        yield Net(load_config(info.config_path), server, where / "cli.sqlite")
    finally:
        server.stop()


def canonical_hash(cfg: OmnimarginConfig, blocks: dict[int, int]) -> str:
    """The snapshot hash (world.World.snapshot_hash) of ``blocks`` as the chains have them now."""
    packed = b"".join(
        cid.to_bytes(32, "big")
        + number.to_bytes(32, "big")
        + bytes.fromhex(block_hash(cfg.chain(cid).rpc_urls[0], number)[2:])
        for cid, number in sorted(blocks.items())
    )
    return "0x" + bytes(keccak(packed)).hex()


def reorg(cfg: OmnimarginConfig, chain_id: int, depth: int, number: int, before: str) -> str:
    """``anvil_reorg`` on ``chain_id`` replacing block ``number``, the ``depth - 1`` blocks below
    it and every block above it (the chain mines a block a second); returns block ``number``'s
    new hash, which must differ from ``before``."""
    url = cfg.chain(chain_id).rpc_urls[0]
    for _ in range(3):  # a block mined between the two calls: again, from the new head
        above = int(rpc(url, "eth_blockNumber", []), 16) - number
        rpc(url, "anvil_reorg", [above + depth, []])
        after = block_hash(url, number)
        if after != before:
            break
    assert after != before, f"anvil_reorg({depth}) left block {number} as it was"
    return after


def _body(size: str = "0.01") -> dict[str, Any]:
    return {"account": ACCOUNT, "chain_id": ARB, "market": "ETH", "size_delta": size}


def _next_epoch(c: httpx.Client, after: int) -> dict[str, Any]:
    """The info of the first epoch numbered above ``after``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info: dict[str, Any] = c.get(f"/v1/accounts/{ACCOUNT}/margin").json()["epoch"]
        if info["number"] > after:
            return info
        time.sleep(0.1)
    raise AssertionError(f"no epoch after {after} within 60 s")


def _check(
    cfg: OmnimarginConfig, d: dict[str, Any], orphaned: str, blocks: dict[int, int]
) -> list[str]:
    """Problems with decision ``d``: approved on the orphaned snapshot, or on blocks that are
    not canonical; refused without saying why."""
    if not d["approved"]:
        return [] if "no longer canonical" in d["reason"] else [f"refused: {d['reason']}"]
    attested = d["attestation"]["typed_data"]["message"]["snapshotHash"]
    problems = []
    if attested == orphaned:
        problems.append("approved on the orphaned snapshot")
    if attested != canonical_hash(cfg, blocks):
        problems.append(f"approved on blocks {blocks} that are not canonical")
    return problems


@pytest.mark.parametrize(("depth", "chain_id"), CASES)
def test_service_refuses_or_rereads_after_a_reorg(
    net: Net, reliability: ForTest, depth: int, chain_id: int
) -> None:
    cfg = net.config
    with net.server.client(headers=net.server.auth) as c:
        epoch = _next_epoch(c, c.get("/readyz").json()["epoch"])
        blocks = {int(k): v for k, v in epoch["blocks"].items()}
        assert canonical_hash(cfg, blocks) == epoch["snapshot_hash"]  # no reorg yet
        number = blocks[chain_id]
        reorg(cfg, chain_id, depth, number, block_hash(cfg.chain(chain_id).rpc_urls[0], number))
        r = c.post("/v1/authorizations", json=_body())
    assert r.status_code == 200, r.text
    d = r.json()
    served = {int(k): v for k, v in d["epoch"]["blocks"].items()}
    problems = _check(cfg, d, epoch["snapshot_hash"], served)
    reliability.record(
        FAMILY,
        f"anvil_reorg depth {depth}, service",
        f"anvil_reorg({depth}) on {ROLE[ETH]} or {ROLE[ARB]} right after the service's epoch, "
        "then POST /v1/authorizations",
        "refused ('block N ... is no longer canonical (reorg)'), or approved on a later epoch "
        "whose blocks are canonical",
        1,
        int(bool(problems)),
    )
    assert not problems, problems


@pytest.mark.parametrize(("depth", "chain_id"), CASES)
def test_cli_authorisation_rests_on_a_fresh_snapshot(
    net: Net, reliability: ForTest, depth: int, chain_id: int
) -> None:
    cfg = net.config
    old = world(cfg)
    pins = _pins(old)
    reorg(cfg, chain_id, depth, pins[chain_id].number, pins[chain_id].hash)
    problems = []

    # a read at the orphaned block (EIP-1898, requireCanonical) fails: the chain is unavailable
    async def read_orphaned() -> Any:
        reader = ChainReader(cfg, cfg.chain(chain_id))
        try:
            return await reader.snapshot([ACCOUNT], pins[chain_id])
        finally:
            await reader.client.close()

    snap = asyncio.run(read_orphaned())
    if snap.ok or snap.balances:
        problems.append(f"read at the orphaned block {pins[chain_id].hash} succeeded")
    store = Store(net.store)
    try:
        d = authorize(
            cfg, Request(ACCOUNT, ARB, "ETH", Decimal("0.01")), store, load_signer_key(cfg.signer)
        )
    finally:
        store.close()
    if not d["approved"]:
        problems.append(f"refused on fresh data: {d['reason']}")
    else:
        attested = d["attestation"]["typed_data"]["message"]["snapshotHash"]
        blocks = {int(k): v for k, v in d["blocks"].items()}
        if attested == old.snapshot_hash:
            problems.append("approved on the orphaned snapshot")
        elif attested != canonical_hash(cfg, blocks):
            problems.append(f"approved on blocks {blocks} that are not canonical now")
        elif any(blocks[c] < p.number for c, p in pins.items()):
            problems.append(f"approved on blocks {blocks} older than the first read's")
    reliability.record(
        FAMILY,
        f"anvil_reorg depth {depth}, omnimargin authorize",
        f"anvil_reorg({depth}) on {ROLE[ETH]} or {ROLE[ARB]} after a snapshot, then "
        "authorize (and a read at the orphaned block)",
        "the read at the orphaned hash fails (EIP-1898 requireCanonical: chain unavailable); "
        "authorize reads anew and attests the new canonical blocks",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, snap.errors)


def _pins(w: World) -> dict[int, PinnedBlock]:
    return {
        s.chain_id: PinnedBlock(int(s.block_number or 0), s.block_hash or "", int(s.timestamp or 0))
        for s in w.snapshots
    }
