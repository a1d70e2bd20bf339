"""Counting on a devnet of this module's own: USDC held natively, as USDC.e and in flight is counted
once each; relaying moves the transfer into the destination balance with the total unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from web3 import HTTPProvider, Web3

from aggregator.cli_bridge import bridge_app
from bridge_adapters.errors import InconsistentReads, UnmappedToken
from bridge_adapters.holdings import BURNT_AFTER_PIN, Holdings, build_holdings, quantity
from bridge_adapters.risk import column_of, jumps_for, quantities_by_column
from chains.compile import load_artifact
from chains.config import OmnimarginConfig
from chains.devnet_bridge import BRIDGE_CONTRACT, recipient_word
from chains.devnet_deploy import ERC4626_NAME
from chains.inflight import InflightRead, read_inflight, used_nonce_key
from chains.reader import ChainReader, PinnedBlock
from chains.relayer import relay
from chains.types import Address, Balance, BlockNumber, ChainId, ChainSnapshot, ChainStatus
from chains.types import SourceKind as Src
from montecarlo.models import Jump

ETH, ARB, BASE = 31337001, 31337002, 31337003
SEEDED = 2_000 * 10**6
USDC_E = 777_000_001  # 777.000001 USDC.e minted to account 1 on devnet-arb by the test


@pytest.fixture(scope="module")
def net(start_devnet) -> OmnimarginConfig:  # type: ignore[no-untyped-def]
    """A fresh devnet where account 1 also holds USDC.e on devnet-arb."""
    config: OmnimarginConfig = start_devnet()
    w3 = _w3(config, ARB)
    usdc_e = _contract(w3, "ERC20", _token(config, ARB, "USDC.e"))
    tx = usdc_e.functions.mint(config.accounts[0], USDC_E).transact(
        {"from": config.devnet["deployer"]}  # type: ignore[index]
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    return config


def _w3(config: OmnimarginConfig, chain_id: int) -> Web3:
    return Web3(HTTPProvider(config.chain(chain_id).rpc_urls[0]))


def _contract(w3: Web3, name: str, address: str) -> Any:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def _token(config: OmnimarginConfig, chain_id: int, symbol: str) -> str:
    (t,) = [t for t in config.tokens_on(chain_id) if t.symbol == symbol]
    return t.address


def _devnet_contract(config: OmnimarginConfig, chain_id: int, name: str) -> str:
    (chain,) = [c for c in config.devnet["chains"] if c["chain_id"] == chain_id]  # type: ignore[index]
    return str(chain["contracts"][name])


async def _read_world(config: OmnimarginConfig) -> tuple[list[ChainSnapshot], InflightRead]:
    """Every chain pinned once; balances and in-flight transfers read at those pins."""
    return await _read_at(config, await _pins(config))


def read_world(config: OmnimarginConfig) -> tuple[list[ChainSnapshot], InflightRead]:
    return asyncio.run(_read_world(config))


def _native_usdc_on_base(config: OmnimarginConfig, account: str, block: int) -> int:
    """Account's USDC on devnet-base, read straight from the contracts (not by the reader)."""
    w3 = _w3(config, BASE)
    usdc = _token(config, BASE, "USDC")
    vault = _contract(w3, "CollateralVault", _devnet_contract(config, BASE, "CollateralVault"))
    yv = _contract(w3, "ERC4626Vault", _devnet_contract(config, BASE, ERC4626_NAME))
    shares = yv.functions.balanceOf(account).call(block_identifier=block)
    shares += vault.functions.collateral(account, yv.address).call(block_identifier=block)
    return int(
        vault.functions.collateral(account, usdc).call(block_identifier=block)
        + _contract(w3, "ERC20", usdc).functions.balanceOf(account).call(block_identifier=block)
        + yv.functions.convertToAssets(shares).call(block_identifier=block)
    )


def _block(snaps: list[ChainSnapshot], chain_id: int) -> int:
    (snap,) = [s for s in snaps if s.chain_id == chain_id]
    assert snap.block_number is not None
    return snap.block_number


def test_native_bridged_and_in_flight_usdc_each_count_once(net: OmnimarginConfig) -> None:
    a1 = net.accounts[0]
    snaps, read = read_world(net)
    holdings = build_holdings(snaps, [read], net, net.accounts)
    mine = holdings[Address(a1)]
    usdc = [h for h in mine.holdings if h.asset == "USDC"]

    (flight,) = [h for h in usdc if h.in_flight]
    assert (flight.amount, flight.chain_id, flight.representation) == (SEEDED, BASE, "native")
    assert (flight.via, flight.source, column_of(flight)) == ("cctp", "in_flight", "USDC@cctp")
    assert flight.token == _token(net, BASE, "USDC") and flight.transfer is not None
    (bridged,) = [h for h in usdc if h.representation == "canonical-arb"]
    assert (bridged.amount, bridged.chain_id, column_of(bridged)) == (
        USDC_E,
        ARB,
        "USDC@canonical-arb",
    )
    native = [h for h in usdc if h.representation == "native" and not h.in_flight]
    assert {(h.chain_id, h.source) for h in native} == {
        (BASE, "vault"),
        (BASE, "erc20_wallet"),
        (BASE, "erc4626"),
    }  # each balance once; nothing left on devnet-eth, where the 2,000 were burnt
    native_raw = _native_usdc_on_base(net, a1, _block(snaps, BASE))
    assert sum(h.amount for h in native) == native_raw
    # only what sits in the CollateralVault (its own balance, the yvUSDC shares locked in it)
    # backs margin; the wallet and the transfer to a wallet are exposure only
    assert {(h.source, h.locked) for h in native} == {
        ("vault", True),
        ("erc4626", True),
        ("erc20_wallet", False),
    }
    # the seeded transfer is minted into BASE's vault, whose bridge hook credits its depositor:
    # a1's, and locked from the burn on; USDC.e in a wallet is not
    vault = _devnet_contract(net, BASE, "CollateralVault")
    assert flight.transfer is not None and flight.transfer.recipient == vault
    assert flight.transfer.into_vault and flight.account == a1 and flight.locked
    assert not bridged.locked

    expected = quantity(native_raw + USDC_E + SEEDED, 6)
    assert mine.total("USDC") == expected
    by_column = quantities_by_column(mine)
    assert by_column == {
        "ETH": Decimal("12.845678901234567891"),
        "USDC": quantity(native_raw, 6),
        "USDC@canonical-arb": Decimal("777.000001"),
        "USDC@cctp": Decimal(2000),
    }
    assert jumps_for(net, list(by_column)) == [
        Jump("bridge:cctp", 0.0002, 1.0, ("USDC@cctp",)),
        Jump("bridge:canonical-arb", 0.0005, 1.0, ("USDC@canonical-arb",)),
        Jump("depeg:USDC", 0.001, 0.1, ("USDC", "USDC@canonical-arb", "USDC@cctp")),
    ]
    assert holdings[Address(net.accounts[1])].in_flight == ()


def test_the_same_transfer_or_balance_read_twice_counts_once(net: OmnimarginConfig) -> None:
    snaps, read = read_world(net)
    once = build_holdings(snaps, [read], net)
    assert build_holdings(snaps, [read, read], net) == once
    with pytest.raises(InconsistentReads, match="two snapshots"):
        build_holdings([*snaps, snaps[0]], [read], net)


def _snapshot(balances: tuple[Balance, ...], status: ChainStatus = ChainStatus.OK) -> ChainSnapshot:
    return ChainSnapshot(
        ChainId(BASE), "base", status, BlockNumber(5), "0x" + "00" * 32, 0, balances
    )


def test_an_unmapped_token_is_an_error_and_an_unavailable_chain_counts_nothing(
    net: OmnimarginConfig,
) -> None:
    stray = Balance(
        Address(net.accounts[0]), Address("0x" + "ab" * 20), "???", 1, 6, Src.ERC20_WALLET
    )
    with pytest.raises(UnmappedToken, match=r"0xABaB.* on chain 31337003"):
        build_holdings([_snapshot((stray,))], [], net)
    down = ChainSnapshot(ChainId(BASE), "base", ChainStatus.UNAVAILABLE, errors=("stopped",))
    assert build_holdings([down], [], net, net.accounts[:1]) == {
        Address(net.accounts[0]): Holdings(Address(net.accounts[0]))
    }


def test_relay_moves_the_transfer_into_the_destination_balance(net: OmnimarginConfig) -> None:
    a1 = Address(net.accounts[0])
    snaps, read = read_world(net)
    before = build_holdings(snaps, [read], net)[a1]
    native_before = _native_usdc_on_base(net, a1, _block(snaps, BASE))

    (done,) = asyncio.run(relay(net, "cctp"))
    vault = _devnet_contract(net, BASE, "CollateralVault")
    assert (done.nonce, done.amount, done.recipient) == (0, SEEDED, vault)
    assert asyncio.run(relay(net, "cctp")) == []  # nothing left to relay

    snaps2, read2 = read_world(net)
    after = build_holdings(snaps2, [read2], net)[a1]
    assert read2.transfers == () and after.in_flight == ()
    assert _native_usdc_on_base(net, a1, _block(snaps2, BASE)) == native_before + SEEDED
    assert after.total("USDC") == before.total("USDC")  # moved, not created or lost
    assert quantities_by_column(after)["USDC"] == quantities_by_column(before)["USDC"] + 2000
    bridge = _contract(_w3(net, BASE), BRIDGE_CONTRACT, net.bridge("cctp").contracts[BASE])
    assert bridge.functions.usedNonces(used_nonce_key(0, done.nonce)).call() == 1
    # the old in-flight read with the new balances (every chain mines a block a second: the
    # first chain found at another block is named, BASE or another)
    with pytest.raises(InconsistentReads, match=r"chain 3133700\d read at block \d+, its snap"):
        build_holdings(snaps2, [read], net)


def test_cli_lists_and_relays_pending_transfers(start_devnet) -> None:  # type: ignore[no-untyped-def]
    config: OmnimarginConfig = start_devnet()
    path = str(Path(config.devnet["dir"]) / "config.toml")  # type: ignore[index]
    runner = CliRunner()
    out = runner.invoke(bridge_app, ["pending", "--config", path, "--json"])
    assert out.exit_code == 0, out.output
    (t,) = json.loads(out.output)["transfers"]
    assert (t["amount"], t["amount_raw"], t["dest_chain"]) == ("2000.000000", str(SEEDED), BASE)
    out = runner.invoke(bridge_app, ["relay", "--config", path, "--json"])
    assert out.exit_code == 0 and len(json.loads(out.output)["relayed"]) == 1
    out = runner.invoke(bridge_app, ["pending", "--config", path, "--json"])
    assert json.loads(out.output)["transfers"] == []
    out = runner.invoke(bridge_app, ["relay", "--config", path, "--bridge", "nope"])
    assert out.exit_code == 2 and "bridge 'nope' is not configured" in out.output


async def _pins(config: OmnimarginConfig) -> dict[int, PinnedBlock]:
    readers = [ChainReader(config, c) for c in config.chains]
    try:
        return {r.chain.chain_id: await r.pin() for r in readers}
    finally:
        for r in readers:
            await r.client.close()


async def _read_at(
    config: OmnimarginConfig, pins: dict[int, PinnedBlock]
) -> tuple[list[ChainSnapshot], InflightRead]:
    """Balances and in-flight transfers read at the given pins."""
    readers = {c.chain_id: ChainReader(config, c) for c in config.chains}
    try:
        snaps = [await r.snapshot(config.accounts, pins[cid]) for cid, r in readers.items()]
        clients = {cid: r.client for cid, r in readers.items()}
        return snaps, await read_inflight(config, "cctp", pins, clients)
    finally:
        for r in readers.values():
            await r.client.close()


def test_a_burn_after_the_source_pin_minted_before_the_destination_pin_counts_once(
    net: OmnimarginConfig,
) -> None:
    """The pins of two chains are not one instant: burnt after devnet-eth's pin (still in the
    source balance there) and minted by devnet-base's pin (in the destination balance too)."""
    a1, amount = Address(net.accounts[0]), 123_456_789  # 123.456789 USDC
    asyncio.run(relay(net, "cctp"))  # nothing else pending
    eth = _w3(net, ETH)
    usdc = _contract(eth, "ERC20", _token(net, ETH, "USDC"))
    deployer = net.devnet["deployer"]  # type: ignore[index]
    assert (
        eth.eth.wait_for_transaction_receipt(
            usdc.functions.mint(a1, amount).transact({"from": deployer})
        )["status"]
        == 1
    )
    pins = asyncio.run(_pins(net))
    before = build_holdings(*_split(asyncio.run(_read_at(net, pins))), net)[a1]

    bridge_address = net.bridge("cctp").contracts[ETH]
    bridge = _contract(eth, BRIDGE_CONTRACT, bridge_address)
    usdc.functions.approve(bridge_address, amount).transact({"from": a1})
    burn = bridge.functions.depositForBurn(
        amount, net.bridge("cctp").domains[BASE], recipient_word(a1), usdc.address
    ).transact({"from": a1})
    assert eth.eth.wait_for_transaction_receipt(burn)["status"] == 1
    (done,) = asyncio.run(relay(net, "cctp"))
    assert (done.amount, done.depositor, done.recipient) == (amount, a1, a1)

    later = {**asyncio.run(_pins(net)), ETH: pins[ETH]}  # devnet-eth still at its old pin
    assert later[BASE].number > pins[BASE].number
    snaps, read = asyncio.run(_read_at(net, later))
    assert read.transfers == () and read.errors == ()
    (early,) = read.minted_early
    assert (early.nonce, early.amount, early.source_chain) == (done.nonce, amount, ETH)
    after = build_holdings(snaps, [read], net)[a1]
    (minus,) = [h for h in after.holdings if h.source == BURNT_AFTER_PIN]
    assert (minus.amount, minus.chain_id, column_of(minus)) == (-amount, ETH, "USDC")
    assert after.total("USDC") == before.total("USDC")  # not + 123.456789
    assert quantities_by_column(after) == quantities_by_column(before)
    # without the correction the same reads would have counted it twice
    plain = build_holdings(snaps, [dataclasses.replace(read, minted_early=())], net)[a1]
    assert plain.total("USDC") == before.total("USDC") + quantity(amount, 6)

    # the other depositors' accounts are not touched, and a pin past the burn sees no window
    assert build_holdings(snaps, [read], net, net.accounts[1:2]) == build_holdings(
        snaps, [dataclasses.replace(read, minted_early=())], net, net.accounts[1:2]
    )
    now = asyncio.run(_read_at(net, asyncio.run(_pins(net))))[1]
    assert now.minted_early == () and now.transfers == ()


def _split(
    pair: tuple[list[ChainSnapshot], InflightRead],
) -> tuple[list[ChainSnapshot], list[InflightRead]]:
    return pair[0], [pair[1]]
