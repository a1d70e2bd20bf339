"""Contract faults on real anvil chains: the Multicall3 address holding other code (or none), a
token address with no code, a collateral vault and a PerpMarket whose calls revert (their code
replaced with ``anvil_setCode``). The chain is refused, or the reads that failed are named and
their collateral counts zero; either way no authorisation rests on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chains.config import OmnimarginConfig, load_config, parse_config
from tests.faults.helpers import ARB, BASE, ETH, decision, edited, rpc, world
from tests.reliability import ForTest

FAMILY = "Contracts"
#: PUSH1 0 PUSH1 0 REVERT: every call reverts with empty data
REVERTING = "0x60006000fd"
NO_CODE = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def own(devnet_factory: Any) -> OmnimarginConfig:
    """A devnet of the test's own: the tests replace contract code."""
    return load_config(devnet_factory(3).config_path)


def _check_refused(
    cfg: OmnimarginConfig, tmp_path: Path, needle: str, chain_id: int = ARB
) -> list[str]:
    w = world(cfg)
    d = decision(cfg, w, tmp_path / "s.sqlite", market="ETH", chain_id=chain_id)
    problems = []
    if d["approved"] or needle not in d["reason"]:
        problems.append(f"decision: approved={d['approved']} reason={d['reason']!r}")
    return problems


@pytest.mark.parametrize("how", ["config names another code hash", "setCode", "no code"])
def test_multicall3_holding_other_code(
    own: OmnimarginConfig, tmp_path: Path, reliability: ForTest, how: str
) -> None:
    chain = own.chain(BASE)
    cfg = own
    if how == "config names another code hash":
        cfg = edited(own, BASE, multicall3_codehash="0x" + "ab" * 32)
        needle = "holds other code"
    else:
        assert chain.multicall3_codehash is not None  # the devnet pins the real one
        other = rpc(chain.rpc_urls[0], "eth_getCode", [own.tokens_on(BASE)[0].address, "latest"])
        code = other if how == "setCode" else "0x"
        rpc(chain.rpc_urls[0], "anvil_setCode", [chain.multicall3, code])
        needle = "holds other code" if how == "setCode" else "no code at multicall3"
    w = world(cfg)
    snap = w.snapshot(BASE)
    problems = []
    if snap.ok or snap.balances or needle not in snap.errors[0]:
        problems.append(f"chain 3: {snap.status} {snap.errors}")
    problems += _check_refused(cfg, tmp_path, "devnet-base")
    reliability.record(
        FAMILY,
        "Multicall3 address holding other code",
        f"chain 3's Multicall3: {how}",
        "chain unavailable ('multicall3 X holds other code (code hash ..., expected ...)' or "
        "'no code at multicall3'); authorisations refused",
        1,
        int(bool(problems)),
    )
    assert not problems, problems


def test_a_token_address_with_no_code(devnet: Any, tmp_path: Path, reliability: ForTest) -> None:
    raw = devnet.config.model_dump(mode="json")
    (weth,) = [t for t in raw["tokens"] if t["chain_id"] == ETH and t["symbol"] == "WETH"]
    old = weth["address"]
    weth["address"] = NO_CODE
    for src in raw["sources"]:
        src["tokens"] = [NO_CODE if a == old else a for a in src["tokens"] or []] or None
    cfg = parse_config(raw)
    w = world(cfg)
    snap = w.snapshot(ETH)
    problems = []
    if not any("decimals() failed (no code?)" in e and NO_CODE in e for e in snap.errors):
        problems.append(f"chain 1 errors: {snap.errors}")
    if any(b.symbol == "WETH" for b in snap.balances):
        problems.append("WETH balances read from an address with no code")
    problems += _check_refused(cfg, tmp_path, "decimals() failed")
    reliability.record(
        FAMILY,
        "token address with no code",
        "chain 1's WETH configured at an address without code",
        "'token WETH 0x...dEaD: decimals() failed (no code?)'; no balance of it; "
        "authorisations refused with that reason",
        1,
        int(bool(problems)),
    )
    assert not problems, problems


@pytest.mark.parametrize("contract", ["CollateralVault", "PerpMarket"])
def test_a_contract_whose_calls_revert(
    own: OmnimarginConfig, tmp_path: Path, reliability: ForTest, contract: str
) -> None:
    chain = own.chain(ETH)
    if contract == "CollateralVault":
        (vault,) = [s.address for s in own.sources_on(ETH) if s.kind.value == "vault"]
        address, needle = vault, "reads from"
    else:
        address, needle = chain.perp_market, "position reads from"
    assert address is not None
    rpc(chain.rpc_urls[0], "anvil_setCode", [address, REVERTING])
    w = world(own)
    snap = w.snapshot(ETH)
    problems = []
    if not any(needle in e and address in e for e in snap.errors):
        problems.append(f"chain 1 errors: {snap.errors}")
    if contract == "CollateralVault" and any(b.source.value == "vault" for b in snap.balances):
        problems.append("vault balances read from a reverting vault")
    problems += _check_refused(own, tmp_path, "failed")
    reliability.record(
        FAMILY,
        "vault call reverting",
        f"chain 1's {contract} code replaced by one that always reverts (anvil_setCode)",
        "'N reads from 0x... failed (reverted or empty)'; the vault's collateral counts zero; "
        "authorisations refused with that reason (a hidden position could be a loss)",
        1,
        int(bool(problems)),
    )
    assert not problems, problems
