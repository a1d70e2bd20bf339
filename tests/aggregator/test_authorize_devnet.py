"""End to end on the three devnet chains: collateral on chains A and C (a bridged
representation, a transfer in flight) authorises a position on chain B; the attestation is
accepted there, shows in the next snapshot, and is refused everywhere else."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from aggregator.accounts import margin_report, policy_of, scenario_set
from aggregator.attestation import MarginAttestation, load_signer_key
from aggregator.authorize import Request, decide, fresh_state, held_margin
from aggregator.store import Store
from aggregator.world import read_world
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, load_config, parse_config
from chains.devnet_nodes import nodes_of, read_state, stop_node

A, B, C = 31337001, 31337002, 31337003
ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # collateral on A and C, nothing on B


def _att(typed: dict[str, Any]) -> MarginAttestation:
    return MarginAttestation.from_typed_data(typed)


def _perp(cfg: OmnimarginConfig, chain_id: int) -> tuple[Web3, Any]:
    c = cfg.chain(chain_id)
    w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 10}))
    return w3, w3.eth.contract(address=c.perp_market, abi=list(load_artifact("PerpMarket").abi))


def _decide(
    cfg: OmnimarginConfig, store: Store, market: str, size: str, chain_id: int = B
) -> dict[str, Any]:
    key = load_signer_key(cfg.signer)
    return decide(
        cfg,
        fresh_state(cfg, store, key, ACCOUNT),
        Request(ACCOUNT, chain_id, market, Decimal(size)),
        store,
        key,
    )


@pytest.fixture(scope="module")
def net(
    devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[OmnimarginConfig, Path]:
    info = devnet_factory(3)
    return load_config(info.config_path), tmp_path_factory.mktemp("store") / "state.sqlite"


def test_authorise_on_b_submit_and_see_it_in_the_next_snapshot(
    net: tuple[OmnimarginConfig, Path],
) -> None:
    cfg, path = net
    policy, _ = policy_of(cfg)
    store = Store(path)
    try:
        decision = _decide(cfg, store, "ETH", "3")
    finally:
        store.close()
    assert decision["approved"], decision["reason"]
    assert decision["initial_margin_after"] > decision["initial_margin_before"]
    assert decision["free_margin_after"] >= 0
    typed, sig = (
        decision["attestation"]["typed_data"],
        bytes.fromhex(decision["attestation"]["signature"][2:]),
    )
    assert (
        typed["domain"]["chainId"] == B
        and typed["domain"]["verifyingContract"] == cfg.chain(B).margin_gate
    )
    att = _att(typed)
    assert att.size_delta == 3 * 10**18 and att.account == ACCOUNT
    w3, perp = _perp(cfg, B)
    relayer = w3.eth.accounts[7]
    before, _ = margin_report(
        asyncio.run(read_world(cfg, [ACCOUNT])), ACCOUNT, scenario_set(cfg, policy), policy
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        perp.functions.open(att.as_tuple(), sig).transact({"from": relayer})
    )
    assert receipt["status"] == 1
    after, _ = margin_report(
        asyncio.run(read_world(cfg, [ACCOUNT])), ACCOUNT, scenario_set(cfg, policy), policy
    )
    perps = [p for p in after["positions"] if p["kind"] == "perp"]
    assert [(p["chain_id"], p["asset"], p["quantity"]) for p in perps] == [(B, "ETH", "3")]
    assert after["free_margin"] < before["free_margin"]
    assert after["initial_margin"] > before["initial_margin"]
    assert str(B) in after["by_chain"]  # the new position's risk sits on chain B
    # the same attestation again, on chain C, and with a field changed: all refused on chain
    with pytest.raises(ContractLogicError, match="nonce used"):
        perp.functions.open(att.as_tuple(), sig).call({"from": relayer})
    w3c, perp_c = _perp(cfg, C)
    with pytest.raises(ContractLogicError, match="gate:"):
        perp_c.functions.open(att.as_tuple(), sig).call({"from": w3c.eth.accounts[7]})
    bigger = MarginAttestation(
        **{**att.__dict__, "size_delta": 30 * 10**18, "nonce": att.nonce + 1000}
    )
    with pytest.raises(ContractLogicError, match="unknown signer"):
        perp.functions.open(bigger.as_tuple(), sig).call({"from": relayer})
    # the position is on chain: once a pinned state shows it, its reservation holds nothing
    store = Store(path)
    try:
        assert [r.state for r in store.reservations(ACCOUNT)] == ["active"]
        state = fresh_state(cfg, store, load_signer_key(cfg.signer), ACCOUNT)
        assert [r.state for r in store.reservations(ACCOUNT)] == ["filled"]
        assert held_margin(state, store.live(ACCOUNT)) == 0
    finally:
        store.close()


def test_an_expired_attestation_is_refused(net: tuple[OmnimarginConfig, Path]) -> None:
    cfg, path = net
    store = Store(path)
    try:
        decision = _decide(cfg, store, "BTC", "0.01")
    finally:
        store.close()
    assert decision["approved"], decision["reason"]
    att = _att(decision["attestation"]["typed_data"])
    sig = bytes.fromhex(decision["attestation"]["signature"][2:])
    w3, perp = _perp(cfg, B)
    w3.provider.make_request("evm_increaseTime", [att.valid_until - att.issued_at + 60])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    with pytest.raises(ContractLogicError, match="expired"):
        perp.functions.open(att.as_tuple(), sig).call({"from": w3.eth.accounts[7]})


def test_reservations_cap_concurrent_approvals_and_survive_a_restart(
    devnet_factory: Any, tmp_path: Path
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, [ACCOUNT]))
    report, _ = margin_report(world, ACCOUNT, scenario_set(cfg, policy), policy)
    free = report["free_margin"]
    # a long BTC size whose extra IM is about a fifth of the free margin (IM grows ~linearly)
    probe = Store(tmp_path / "probe.sqlite")
    pstate = fresh_state(cfg, probe, load_signer_key(cfg.signer), ACCOUNT)
    one = decide(
        cfg, pstate, Request(ACCOUNT, B, "BTC", Decimal("1")), probe, load_signer_key(cfg.signer)
    )
    probe.close()
    step = one["initial_margin_after"] - one["initial_margin_before"]
    size = Decimal(str(round(free / 5.5 / step, 6)))
    store = Store(tmp_path / "state.sqlite")
    key = load_signer_key(cfg.signer)
    state = fresh_state(cfg, store, key, ACCOUNT)

    def attempt(_: int) -> dict[str, Any]:
        return decide(cfg, state, Request(ACCOUNT, B, "BTC", size), store, key)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(20)))
    approved = [r for r in results if r["approved"]]
    assert len(approved) == 5, [r["reason"] for r in results]
    nonces = [r["attestation"]["typed_data"]["message"]["nonce"] for r in approved]
    assert len(set(nonces)) == 5
    assert all("negative" in r["reason"] for r in results if not r["approved"])
    store.close()
    reopened = Store(tmp_path / "state.sqlite")
    try:
        assert len([r for r in reopened.reservations(ACCOUNT) if r.state == "active"]) == 5
        assert reopened.used_nonces(ACCOUNT) >= set(nonces)
    finally:
        reopened.close()


def test_a_stopped_chain_refuses_authorisations_that_need_it(
    devnet_factory: Any, tmp_path: Path
) -> None:
    info = devnet_factory(3)
    raw = load_config(info.config_path).model_dump(mode="json")
    for chain in raw["chains"]:
        chain.update(retries=0, timeout_s=2)
    cfg = parse_config(raw)
    state = read_state(info.directory)
    assert state is not None
    assert stop_node(next(n for n in nodes_of(state) if n.chain_id == B))
    store = Store(tmp_path / "s.sqlite")
    try:
        decision = _decide(cfg, store, "ETH", "1")
        assert not decision["approved"] and "devnet-arb" in decision["reason"]
        assert "attestation" not in decision and store.reservations(ACCOUNT) == []
    finally:
        store.close()
