"""The chain reader against real anvil nodes: exact balances, pinning, the snapshot CLI (the
faults: tests/faults)."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
from eth_utils import to_checksum_address

from chains.config import OmnimarginConfig, parse_config
from chains.multicall import calldata
from chains.reader import ChainReader, snapshot_all
from chains.rpc import as_int
from chains.types import ChainSnapshot, ChainStatus, FeedStatus, SourceKind

ETH_CHAIN, ARB_CHAIN, BASE_CHAIN = 31337001, 31337002, 31337003


def _snap(cfg: OmnimarginConfig, accounts: list[str] | None = None) -> dict[int, ChainSnapshot]:
    snaps = asyncio.run(snapshot_all(cfg, accounts or cfg.accounts, timeout_s=30))
    return {s.chain_id: s for s in snaps}


def _edited(cfg: OmnimarginConfig, chain_id: int, **changes: Any) -> OmnimarginConfig:
    raw = cfg.model_dump(mode="json")
    for chain in raw["chains"]:
        if chain["chain_id"] == chain_id:
            chain.update(changes)
    return parse_config(raw)


def _amount(snap: ChainSnapshot, account: str, symbol: str, source: SourceKind) -> int:
    found = [
        b
        for b in snap.balances
        if b.account == account and b.symbol == symbol and b.source is source
    ]
    assert len(found) == 1, found
    return found[0].amount


@pytest.fixture(scope="module")
def own(devnet_factory) -> OmnimarginConfig:  # type: ignore[no-untyped-def]
    """A devnet of this module's own, whose oracles and balances the tests may change."""
    from chains.config import load_config

    return load_config(devnet_factory(3).config_path)


def test_balances_are_exact_integers_with_6_8_and_18_decimals(devnet) -> None:  # type: ignore[no-untyped-def]
    snaps = _snap(devnet.config)
    a1, a2, a3 = devnet.config.accounts
    assert all(s.status is ChainStatus.OK and not s.errors for s in snaps.values())
    weth = _amount(snaps[ETH_CHAIN], a1, "WETH", SourceKind.VAULT)
    assert weth == 12_345678901234567891 and isinstance(weth, int)  # 18 decimals
    assert _amount(snaps[ETH_CHAIN], a2, "WBTC", SourceKind.VAULT) == 51234567  # 8 decimals
    assert _amount(snaps[BASE_CHAIN], a1, "USDC", SourceKind.VAULT) == 25_000_123456  # 6 decimals
    assert _amount(snaps[BASE_CHAIN], a3, "WETH", SourceKind.VAULT) == 3 * 10**18 + 1
    # ERC-4626: 10,000 USDC of shares worth 1.05 x after the vault's yield
    yv = [
        b for b in snaps[BASE_CHAIN].balances if b.account == a1 and b.source is SourceKind.ERC4626
    ]
    assert len(yv) == 1 and yv[0].shares == 10_000 * 10**6 and yv[0].amount == 10_500 * 10**6
    assert not [b for b in snaps[ARB_CHAIN].balances if b.account == a1]  # nothing on chain 2
    for s in snaps.values():
        assert {p.status for p in s.prices} == {FeedStatus.OK}
        assert s.block_number is not None and s.block_hash and s.block_hash.startswith("0x")


def test_a_snapshot_reads_one_pinned_block(own: OmnimarginConfig) -> None:
    a1, _, a3 = own.accounts
    chain = own.chain(ETH_CHAIN)
    weth = next(t.address for t in own.tokens_on(ETH_CHAIN) if t.symbol == "WETH")

    async def run() -> tuple[ChainSnapshot, ChainSnapshot, int]:
        reader = ChainReader(own, chain)
        try:
            pinned = await reader.pin()
            data = calldata("transfer(address,uint256)", ["address", "uint256"], [a3, 10**17])
            await reader.client.call(
                "eth_sendTransaction", [{"from": a1, "to": weth, "data": "0x" + data.hex()}]
            )
            head = as_int(await reader.client.call("eth_blockNumber", []))
            return await reader.snapshot([a1], pinned), await reader.snapshot([a1]), head
        finally:
            await reader.client.close()

    at_pin, after, head = asyncio.run(run())
    assert head > at_pin.block_number  # type: ignore[operator]
    assert _amount(at_pin, a1, "WETH", SourceKind.ERC20_WALLET) == 5 * 10**17
    assert _amount(after, a1, "WETH", SourceKind.ERC20_WALLET) == 4 * 10**17
    assert after.block_number == head


def test_snapshot_cli_prints_json_with_raw_integer_strings(devnet) -> None:  # type: ignore[no-untyped-def]
    import json
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator.cli",
            "snapshot",
            "--json",
            "--config",
            str(devnet.directory / "config.toml"),
            "--accounts",
            devnet.config.accounts[0].lower(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    chains = {c["chain_id"]: c for c in data["chains"]}
    assert set(chains) == {ETH_CHAIN, ARB_CHAIN, BASE_CHAIN}
    weth = [
        b for b in chains[ETH_CHAIN]["balances"] if b["symbol"] == "WETH" and b["source"] == "vault"
    ]
    assert weth[0]["amount"] == "12345678901234567891" and weth[0]["decimals"] == 18
    assert weth[0]["account"] == to_checksum_address(devnet.config.accounts[0])
    assert all(p["status"] == "ok" for c in chains.values() for p in c["prices"])
    assert {"block_number", "block_hash", "timestamp", "errors"} <= set(chains[ETH_CHAIN])
