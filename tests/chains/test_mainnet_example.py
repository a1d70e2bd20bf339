"""examples/mainnet.toml: the real-network example config parses and says what it should.

Only parsing and validation run here; the network is blocked, so a config loader that reached
for an RPC endpoint would fail these tests instead of quietly calling mainnet.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import is_checksum_address, to_checksum_address

from chains.config import OmnimarginConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mainnet.toml"
ETHEREUM, ARBITRUM, BASE = 1, 42161, 8453
FEED_ASSETS = {"ETH", "BTC", "USDC"}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any attempt to resolve a host or open a connection; yield the attempts made."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:2]))
        raise OSError("network access in a parse-only test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


@pytest.fixture
def config(no_network: list[str]) -> OmnimarginConfig:
    cfg = load_config(EXAMPLE)
    assert no_network == []
    return cfg


def _all_addresses(cfg: OmnimarginConfig) -> list[str]:
    out: list[str] = []
    for c in cfg.chains:
        out.append(c.multicall3)
        if c.sequencer_feed is not None:
            out.append(c.sequencer_feed)
    out += [t.address for t in cfg.tokens]
    out += [f.address for f in cfg.feeds]
    for s in cfg.sources:
        if s.address is not None:
            out.append(s.address)
        out += s.tokens or []
    out += cfg.accounts
    return out


def test_loading_makes_no_network_call(no_network: list[str]) -> None:
    load_config(EXAMPLE)
    assert no_network == []


def test_three_chains_ethereum_arbitrum_base(config: OmnimarginConfig) -> None:
    assert [c.chain_id for c in config.chains] == [ETHEREUM, ARBITRUM, BASE]
    assert all(c.finality == "finalized" for c in config.chains)
    assert all(url.startswith("https://") for c in config.chains for url in c.rpc_urls)


def test_l2s_have_sequencer_feeds(config: OmnimarginConfig) -> None:
    assert not config.chain(ETHEREUM).l2
    assert config.chain(ETHEREUM).sequencer_feed is None
    for cid in (ARBITRUM, BASE):
        chain = config.chain(cid)
        assert chain.l2
        assert chain.sequencer_feed is not None
        assert chain.sequencer_grace_s == 3600
    assert config.chain(ARBITRUM).sequencer_feed != config.chain(BASE).sequencer_feed


def test_usdc_on_each_chain_is_native_usdc_with_6_decimals(config: OmnimarginConfig) -> None:
    for cid in (ETHEREUM, ARBITRUM, BASE):
        usdc = [t for t in config.tokens_on(cid) if t.symbol == "USDC"]
        assert len(usdc) == 1, cid
        assert usdc[0].asset == "USDC"
        assert usdc[0].decimals == 6
        assert usdc[0].kind == "native"


def test_bridged_usdc_goes_through_the_canonical_bridges(config: OmnimarginConfig) -> None:
    bridged = {(t.chain_id, t.symbol): t for t in config.tokens if t.kind != "native"}
    assert set(bridged) == {(ARBITRUM, "USDC.e"), (BASE, "USDbC")}
    assert bridged[(ARBITRUM, "USDC.e")].bridge == "arbitrum-canonical"
    assert bridged[(BASE, "USDbC")].bridge == "base-canonical"
    assert all(t.kind == "canonical_bridge" and t.decimals == 6 for t in bridged.values())
    assert all(t.asset == "USDC" for t in bridged.values())


def test_wrapped_tokens_map_to_their_assets(config: OmnimarginConfig) -> None:
    for t in config.tokens:
        if t.symbol == "WETH":
            assert (t.asset, t.decimals) == ("ETH", 18)
        if t.symbol == "WBTC":
            assert (t.asset, t.decimals) == ("BTC", 8)


def test_every_feed_prices_a_known_asset(config: OmnimarginConfig) -> None:
    assert config.feeds
    assert {f.asset for f in config.feeds} <= FEED_ASSETS
    for f in config.feeds:
        assert f.heartbeat_s > 0
        assert f.min_usd < f.max_usd


def test_every_token_has_a_feed_for_its_asset_on_its_chain(config: OmnimarginConfig) -> None:
    for t in config.tokens:
        assets = {f.asset for f in config.feeds_on(t.chain_id)}
        assert t.asset in assets, (t.chain_id, t.symbol)


def test_at_most_one_feed_per_asset_and_chain(config: OmnimarginConfig) -> None:
    keys = [(f.chain_id, f.asset) for f in config.feeds]
    assert len(keys) == len(set(keys))


def test_every_chain_reads_wallet_balances(config: OmnimarginConfig) -> None:
    for c in config.chains:
        kinds = [s.kind.value for s in config.sources_on(c.chain_id)]
        assert "erc20_wallet" in kinds, c.chain_id


def test_all_addresses_are_checksummed(config: OmnimarginConfig) -> None:
    addresses = _all_addresses(config)
    assert addresses
    assert all(a == to_checksum_address(a) for a in addresses)


def test_the_file_itself_spells_addresses_in_checksum_case() -> None:
    """EIP-55 case in the file itself: a mistyped character breaks the checksum and fails here.

    The loader accepts any well-formed address and re-checksums it, so it would not notice.
    """
    raw = tomllib.loads(EXAMPLE.read_text())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node.startswith("0x") and len(node) == 42:
            found.append(node)

    walk(raw)
    assert len(found) >= 20
    assert all(is_checksum_address(a) for a in found), [a for a in found]
