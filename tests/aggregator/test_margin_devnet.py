"""Unified margin on the devnet: exact equity from the chains, every amount counted once,
failing closed when a chain stops."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from aggregator.accounts import margin_report, policy_of, scenario_set
from aggregator.world import World, read_world
from chains.config import OmnimarginConfig, load_config
from chains.devnet_nodes import nodes_of, read_state, stop_node
from chains.relayer import relay
from tests.gate_helpers import blocks_held

ACCOUNT_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
# what backs margin: locked in the CollateralVaults
ETH_1 = Fraction(12_345678901234567891, 10**18)  # chain 1's vault
USDC_3 = Fraction(25_000_123456, 10**6) + 10_500  # chain 3's vault, and yvUSDC shares locked in it
# and a CCTP transfer burnt on chain 1 into chain 3's vault (its hook credits the depositor),
# not yet relayed: locked from the burn on
IN_FLIGHT = Fraction(2000)
# exposure only: wallets
ETH_WALLET = Fraction(1, 2)  # chain 1
USDC_WALLET = Fraction(1500_500000, 10**6)  # chain 3


def _price(world: World, asset: str) -> Fraction:
    p = world.prices[asset].price
    assert p is not None
    return p


def _report(cfg: OmnimarginConfig, account: str = ACCOUNT_1) -> tuple[dict[str, Any], World]:
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, [account]))
    report, _ = margin_report(world, account, scenario_set(cfg, policy), policy)
    return report, world


def test_margin_cli_json_is_exact_and_complete(devnet: Any) -> None:
    with blocks_held(devnet.config):  # the CLI's read and the one below: the same blocks
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "aggregator.cli",
                "margin",
                ACCOUNT_1.lower(),
                "--json",
                "--config",
                str(devnet.directory / "config.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        _, world = _report(devnet.config)
    r = json.loads(out.stdout)
    required = {
        "account",
        "equity",
        "maintenance_margin",
        "initial_margin",
        "free_margin",
        "health",
        "var",
        "es",
        "by_chain",
        "by_asset",
        "status",
        "reasons",
        "snapshot",
        "snapshot_hash",
        "risk_model_hash",
    }
    assert required <= set(r)
    eth, usdc = _price(world, "ETH"), _price(world, "USDC")
    assert r["equity"] == pytest.approx(float(ETH_1 * eth + (USDC_3 + IN_FLIGHT) * usdc), rel=1e-15)
    assert r["collateral_locked_usd"] == pytest.approx(r["equity"], rel=1e-15)  # no perps
    unlocked = ETH_WALLET * eth + USDC_WALLET * usdc
    assert r["holdings_unlocked_usd"] == pytest.approx(float(unlocked), rel=1e-15)
    assert sorted((p["source"], p["asset"]) for p in r["holdings_unlocked"]) == [
        ("erc20_wallet", "ETH"),
        ("erc20_wallet", "USDC"),
    ]
    assert sorted((p["source"], p["asset"]) for p in r["collateral_locked"]) == [
        ("erc4626", "USDC"),
        ("in_flight", "USDC"),
        ("vault", "ETH"),
        ("vault", "USDC"),
    ]
    locked_sources = ("vault", "erc4626", "in_flight")
    assert all(p["locked"] == (p["source"] in locked_sources) for p in r["positions"])
    assert r["status"] == "ok" and r["reasons"] == []
    assert r["initial_margin"] >= r["maintenance_margin"] > 0
    assert r["free_margin"] == pytest.approx(r["equity"] - r["initial_margin"])
    assert set(r["by_chain"]) == {"31337001", "31337003"}  # nothing on chain 2
    assert sum(r["by_chain"].values()) == pytest.approx(r["es"], rel=1e-9)
    assert {s["chain_id"] for s in r["snapshot"]} == {31337001, 31337002, 31337003}
    assert r["snapshot_hash"] == world.snapshot_hash  # same blocks: no block mined between
    usdc_lines = [p for p in r["positions"] if p["asset"] == "USDC"]
    assert sum(Decimal(p["quantity"]) for p in usdc_lines) == Decimal("39000.623456")
    assert [p["column"] for p in usdc_lines if p["in_flight"]] == ["USDC@cctp"]


def test_a_completed_transfer_moves_from_in_flight_with_the_total_unchanged(
    devnet_factory: Any,
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    before, _ = _report(cfg)
    assert [p["quantity"] for p in before["positions"] if p["in_flight"]] == ["2000"]
    relayed = asyncio.run(relay(cfg, "cctp"))
    assert len(relayed) == 1
    after, _ = _report(cfg)
    assert not [p for p in after["positions"] if p["in_flight"]]
    total = lambda r: sum(Decimal(p["quantity"]) for p in r["positions"] if p["asset"] == "USDC")  # noqa: E731
    assert total(after) == total(before) == Decimal("39000.623456")
    assert after["equity"] == pytest.approx(before["equity"], rel=1e-15)


def test_a_stopped_chain_degrades_margin_and_its_collateral_counts_zero(
    devnet_factory: Any,
) -> None:
    info = devnet_factory(3)
    cfg = load_config(info.config_path)
    raw = cfg.model_dump(mode="json")
    for chain in raw["chains"]:
        chain.update(retries=0, timeout_s=2)
    from chains.config import parse_config

    cfg = parse_config(raw)
    state = read_state(info.directory)
    assert state is not None
    assert stop_node(next(n for n in nodes_of(state) if n.chain_id == 31337003))
    r, world = _report(cfg)
    assert r["status"] == "degraded"
    assert any("devnet-base" in reason and "unavailable" in reason for reason in r["reasons"])
    eth, usdc = _price(world, "ETH"), _price(world, "USDC")
    # chain 3's vault and yvUSDC count zero; the transfer burnt on chain 1 stays in flight, into
    # chain 3's vault (locked: burnt for certain, and chain 3's balances are not counted)
    assert r["equity"] == pytest.approx(float(ETH_1 * eth + IN_FLIGHT * usdc), rel=1e-15)
    assert r["holdings_unlocked_usd"] == pytest.approx(float(ETH_WALLET * eth), rel=1e-15)
    assert "31337003" not in r["by_chain"] or r["by_chain"]["31337003"] >= 0
