"""CCTP transfers in flight on a devnet of this module's own: the seeded burn is found for its
recipient, exactly once, bounded by the pins and the look-back; unreadable chains and expiry are
flagged; the devnet bridge speaks CCTP v1's event and nonce key."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from eth_utils import event_abi_to_log_topic
from web3 import HTTPProvider, Web3

from chains.compile import load_artifact
from chains.config import BridgeConfig, OmnimarginConfig, load_config
from chains.devnet_bridge import BRIDGE_CONTRACT
from chains.devnet_nodes import free_ports
from chains.inflight import (
    DEPOSIT_FOR_BURN,
    InflightRead,
    _Burn,
    dedupe,
    log_ranges,
    read_inflight,
    used_nonce_key,
)
from chains.reader import ChainReader, PinnedBlock
from chains.rpc import ChainClient, as_hash, as_int
from chains.types import Address, ChainId
from tests.reliability import ForTest

ETH, ARB, BASE = 31337001, 31337002, 31337003
SEEDED = 2_000 * 10**6  # devnet_bridge.INFLIGHT_SEEDS: 2,000 USDC of account 1, eth -> base
#: DepositForBurn's topic on Circle's TokenMessenger (CCTP v1) on every chain
CCTP_DEPOSIT_FOR_BURN = "0x2fa9ca894982930190727e75500a97d8dc500233a5065e0f3126c48fbe0343c0"

ClientFactory = Callable[[int, ChainClient], ChainClient]


@pytest.fixture(scope="module")
def own(devnet_factory) -> OmnimarginConfig:  # type: ignore[no-untyped-def]
    """A devnet of this module's own (tests mine blocks on it)."""
    return load_config(devnet_factory(3).config_path)


def _token(config: OmnimarginConfig, chain_id: int, symbol: str) -> str:
    (t,) = [t for t in config.tokens_on(chain_id) if t.symbol == symbol]
    return t.address


async def _pin_and_read(
    config: OmnimarginConfig,
    bridge: BridgeConfig | None = None,
    edit_pins: Callable[[dict[int, PinnedBlock]], dict[int, PinnedBlock]] | None = None,
    clients: ClientFactory | None = None,
    accounts: list[str] | None = None,
) -> tuple[InflightRead, dict[int, PinnedBlock]]:
    readers = {c.chain_id: ChainReader(config, c) for c in config.chains}
    try:
        pinned = {cid: await r.pin() for cid, r in readers.items()}
        if edit_pins is not None:
            pinned = edit_pins(pinned)
        chosen = {cid: r.client for cid, r in readers.items()}
        if clients is not None:
            chosen = {cid: clients(cid, c) for cid, c in chosen.items()}
        b = bridge or config.bridge("cctp")
        return await read_inflight(config, b, pinned, chosen, accounts), pinned
    finally:
        for r in readers.values():
            await r.client.close()


def read(config: OmnimarginConfig, **kw: Any) -> tuple[InflightRead, dict[int, PinnedBlock]]:
    return asyncio.run(_pin_and_read(config, **kw))


def _dead_client(config: OmnimarginConfig, chain_id: int) -> ChainClient:
    """A client of ``chain_id`` whose only endpoint is a closed port."""
    (port,) = free_ports(1)
    chain = config.chain(chain_id).model_copy(
        update={"rpc_urls": [f"http://127.0.0.1:{port}"], "retries": 0, "timeout_s": 1.0}
    )
    return ChainClient(chain)


# --- pure pieces ------------------------------------------------------------------------------


def test_log_ranges_cover_each_block_once() -> None:
    assert log_ranges(0, 9, 4) == [(0, 3), (4, 7), (8, 9)]
    assert log_ranges(5, 5, 2000) == [(5, 5)]
    ranges = log_ranges(17, 10_016, 1000)
    blocks = [b for lo, hi in ranges for b in range(lo, hi + 1)]
    assert blocks == list(range(17, 10_017))


def test_event_and_nonce_key_are_cctp_v1s() -> None:
    (event,) = [
        e
        for e in load_artifact(BRIDGE_CONTRACT).abi
        if e["type"] == "event" and e["name"] == "DepositForBurn"
    ]
    assert DEPOSIT_FOR_BURN == CCTP_DEPOSIT_FOR_BURN == "0x" + event_abi_to_log_topic(event).hex()
    # keccak256(abi.encodePacked(uint32(3), uint64(258))): 12 packed bytes
    assert used_nonce_key(3, 258) == Web3.solidity_keccak(["uint32", "uint64"], [3, 258])


def _burn(nonce: int, tx: str) -> _Burn:
    return _Burn(
        ChainId(ETH), nonce, Address("0x" + "11" * 20), 5, Address("0x" + "22" * 20),
        bytes(32), 6, 10, "0x" + "00" * 32, tx, 1,
    )  # fmt: skip


def test_dedupe_keeps_one_burn_per_nonce_and_reports_conflicts(reliability: ForTest) -> None:
    a, again, other = _burn(7, "0xaa"), _burn(7, "0xaa"), _burn(8, "0xbb")
    unique, errors = dedupe([a, again, other, a])
    wrong = int(unique != [a, other] or errors != [])
    conflict, errors2 = dedupe([a, _burn(7, "0xcc")])
    wrong += int(conflict != [a] or "nonce 7 burnt twice" not in errors2[0])
    reliability.record(
        "Bridges",
        "same nonce seen twice",
        "one burn listed 3 times; two different burns claiming one nonce",
        "one transfer per nonce; a conflicting second burn is reported ('nonce N burnt twice')",
        2,
        wrong,
    )
    assert wrong == 0, (unique, errors, conflict, errors2)


# --- on the devnet ----------------------------------------------------------------------------


def test_seeded_transfer_is_in_flight_for_account_1_as_usdc_on_base(own: OmnimarginConfig) -> None:
    result, pinned = read(own)
    (t,) = result.transfers
    account1 = own.accounts[0]
    assert (t.source_chain, t.dest_chain, t.source_domain) == (ETH, BASE, 0)
    # minted into BASE's CollateralVault, for its depositor (the vault's bridge hook credits it)
    (vault,) = [s.address for s in own.sources_on(BASE) if s.kind.value == "vault"]
    assert (t.recipient, t.depositor, t.beneficiary) == (vault, account1, account1)
    assert t.into_vault
    assert (t.amount, t.decimals) == (SEEDED, 6)
    assert t.burn_token == _token(own, ETH, "USDC")
    assert t.dest_token == _token(own, BASE, "USDC")
    assert t.burnt_at_block <= pinned[ETH].number and t.flags == ()
    assert result.unreadable == () and result.reasons == ()
    assert dict(result.blocks) == {cid: p.number for cid, p in pinned.items()}
    # the burn's own block and time, as the chain has them
    w3 = Web3(HTTPProvider(own.chain(ETH).rpc_urls[0]))
    receipt = w3.eth.get_transaction_receipt(t.tx_hash)  # type: ignore[arg-type]
    assert receipt["blockNumber"] == t.burnt_at_block
    assert w3.eth.get_block(t.burnt_at_block)["timestamp"] == t.burnt_at_time


def test_only_watched_recipients(own: OmnimarginConfig) -> None:
    """Watched by whose it is: the recipient, or the depositor of a transfer into a vault."""
    assert read(own, accounts=[own.accounts[1]])[0].transfers == ()
    assert len(read(own, accounts=[own.accounts[0].lower()])[0].transfers) == 1


def test_burns_after_the_source_pin_or_before_the_lookback_are_not_seen(
    own: OmnimarginConfig,
) -> None:
    (t,) = read(own)[0].transfers
    w3 = Web3(HTTPProvider(own.chain(ETH).rpc_urls[0]))
    before = w3.eth.get_block(t.burnt_at_block - 1)
    old_pin = PinnedBlock(before["number"], as_hash(before["hash"]), before["timestamp"])
    result, _ = read(own, edit_pins=lambda p: {**p, ETH: old_pin})
    assert result.transfers == ()  # burnt after the pinned block: still in the source balance
    w3.provider.make_request("anvil_mine", [hex(5)])  # type: ignore[arg-type]
    short = own.bridge("cctp").model_copy(update={"lookback_blocks": 3})
    assert read(own, bridge=short)[0].transfers == ()
    assert len(read(own)[0].transfers) == 1


class Overlapping(ChainClient):
    """Asks eth_getLogs for 5 blocks more at the start of every range, so ranges overlap."""

    async def call(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getLogs":
            query = dict(params[0])
            query["fromBlock"] = hex(max(0, as_int(query["fromBlock"]) - 5))
            params = [query]
        return await super().call(method, params)


def test_a_nonce_seen_in_overlapping_log_ranges_counts_once(
    own: OmnimarginConfig, reliability: ForTest
) -> None:
    small = own.bridge("cctp").model_copy(update={"log_chunk_blocks": 3})

    def overlapping(cid: int, client: ChainClient) -> ChainClient:
        return Overlapping(client.chain)

    result, _ = read(own, bridge=small, clients=overlapping)
    ok = [t.amount for t in result.transfers] == [SEEDED] and result.errors == ()
    reliability.record(
        "Bridges",
        "same nonce seen twice",
        "eth_getLogs ranges overlapping by 5 blocks on the devnet (the burn's log returned twice)",
        "the transfer counted once",
        1,
        int(not ok),
    )
    assert ok, result


def test_unreadable_destination_keeps_the_transfer_in_flight_flagged(
    own: OmnimarginConfig,
) -> None:
    def dead_base(cid: int, client: ChainClient) -> ChainClient:
        return _dead_client(own, cid) if cid == BASE else client

    result, _ = read(own, clients=dead_base)
    (t,) = result.transfers
    assert t.amount == SEEDED and t.dest_unreadable and t.flags == ("dest_unreadable",)
    assert result.unreadable == (BASE,) and BASE not in result.blocks
    assert any(f"chain {BASE} unreadable" in r for r in result.reasons)
    # a destination that could not even be pinned: the same
    result, _ = read(own, edit_pins=lambda p: {c: b for c, b in p.items() if c != BASE})
    assert [t.dest_unreadable for t in result.transfers] == [True]


def test_unreadable_source_counts_nothing_and_says_why(own: OmnimarginConfig) -> None:
    def dead_eth(cid: int, client: ChainClient) -> ChainClient:
        return _dead_client(own, cid) if cid == ETH else client

    result, _ = read(own, clients=dead_eth)
    assert result.transfers == () and result.unreadable == (ETH,)
    assert any(f"chain {ETH} unreadable, its burns unknown" in r for r in result.reasons)


def test_transfer_past_its_timeout_is_still_counted_but_expired(own: OmnimarginConfig) -> None:
    timeout = own.bridge("cctp").timeout_s

    def later(pins: dict[int, PinnedBlock]) -> dict[int, PinnedBlock]:
        base = pins[BASE]
        return {**pins, BASE: dataclasses.replace(base, timestamp=base.timestamp + timeout + 60)}

    result, _ = read(own, edit_pins=later)
    (t,) = result.transfers
    assert t.expired and t.amount == SEEDED
    assert "expired" in result.reasons[0]
