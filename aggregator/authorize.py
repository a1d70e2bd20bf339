"""Authorising a new position (DESIGN.md, "Margin" and "Attestations").

IM is recomputed with the position added from the account's scenario P&L
(P&L' = P&L + r[:, i] * delta_e), not a new run. Approval needs fresh data (no unavailable
chain, no degraded price, the target L2's sequencer up) and free margin after >= 0 once every
active reservation of the account is counted; the decision, the reservation and the nonce are
one durable SQLite transaction. An approval comes with an EIP-712 attestation that the target
chain's MarginGate verifies.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from aggregator.accounts import margin_report, policy_of, portfolio_of, scenario_set
from aggregator.attestation import MarginAttestation, market_id, sign, typed_data
from aggregator.canonical import CanonicalCheck
from aggregator.errors import InputError
from aggregator.margin import MarginFigures, MarginPolicy, ScenarioSet, im_with_position
from aggregator.store import Reservation, Store
from aggregator.valuation import value_portfolio
from aggregator.world import World, read_world
from chains.config import OmnimarginConfig
from chains.errors import ChainError
from chains.multicall import address_word, selector, word_uint
from chains.rpc import ChainClient, as_bytes

WAD = 10**18
MAX_SIZE = Decimal(10) ** 12


@dataclass(frozen=True)
class Request:
    account: str
    chain_id: int
    market: str
    size_delta: Decimal


def parse_size(text: str) -> Decimal:
    try:
        size = Decimal(text)
    except InvalidOperation:
        raise InputError("size_delta", f"not a number: {text[:40]!r}") from None
    if not size.is_finite() or size == 0 or abs(size) > MAX_SIZE:
        raise InputError(
            "size_delta", f"must be a non-zero finite size below 1e12, got {text[:40]}"
        )
    if size.as_tuple().exponent < -18:  # type: ignore[operator]
        raise InputError("size_delta", "at most 18 decimals")
    return size


def check_request(cfg: OmnimarginConfig, req: Request) -> None:
    """Unknown chains and markets are input errors (4xx), before any chain is read."""
    ids = [c.chain_id for c in cfg.chains]
    if req.chain_id not in ids:
        raise InputError("chain_id", f"unknown chain {req.chain_id} (known: {ids})")
    chain = cfg.chain(req.chain_id)
    if chain.margin_gate is None or chain.perp_market is None:
        raise InputError("chain_id", f"chain {req.chain_id} has no MarginGate/PerpMarket")
    markets = chain.perp_markets or [f.asset for f in cfg.feeds_on(req.chain_id)]
    if req.market not in markets:
        raise InputError("market", f"no {req.market!r} market on chain {req.chain_id} ({markets})")


def refusal(reason: str, **figures: Any) -> dict[str, Any]:
    return {"approved": False, "reason": reason, **figures}


@dataclass(frozen=True)
class AccountState:
    """What a decision needs about one account: the reads, the scenarios and its margin.

    ``exposures`` are its USD exposures per risk column, in ``scen.columns`` order (n,).
    The CLI builds one from a fresh read (:func:`account_state`); the service from its epoch,
    with ``pnl`` kept for the epoch (what-if IM then costs one pass over M values).
    """

    world: World
    scen: ScenarioSet
    policy: MarginPolicy
    ttl: int
    report: dict[str, Any]
    figures: MarginFigures
    exposures: np.ndarray
    pnl: np.ndarray | None = None  # scen.returns @ exposures (M,), when already computed

    def scenario_pnl(self) -> np.ndarray:
        """The account's P&L in every scenario (M,): kept, or computed now."""
        if self.pnl is not None:
            return self.pnl
        pnl: np.ndarray = self.scen.returns @ self.exposures
        return pnl


def account_state(cfg: OmnimarginConfig, world: World, account: str) -> AccountState:
    policy, ttl = policy_of(cfg)
    scen = scenario_set(cfg, policy)
    report, figures = margin_report(world, account, scen, policy)
    val = value_portfolio(portfolio_of(world, account), world.prices)
    e = scen.vector({c: x for c, x in val.exposures.items() if x})
    return AccountState(world, scen, policy, ttl, report, figures, e)


def decide(
    cfg: OmnimarginConfig,
    state: AccountState,
    req: Request,
    store: Store,
    key: LocalAccount,
    extra_reasons: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The decision on ``req`` given the account's state (pure but for the store).

    ``extra_reasons`` refuse it too (a stale epoch, say)."""
    world, scen, policy, ttl = state.world, state.scen, state.policy, state.ttl
    report, figures = state.report, state.figures
    base = {
        "equity": report["equity"],
        "initial_margin_before": report["initial_margin"],
        "snapshot_hash": report["snapshot_hash"],
        "risk_model_hash": report["risk_model_hash"],
    }
    reasons = [*extra_reasons, *world.chain_reasons(req.chain_id), *figures.reasons]
    price = world.prices.get(req.market)
    if price is None or not price.usable_for_new_risk or price.price is None:
        reasons.append(
            f"{req.market}: no trustworthy price ({price.reason if price else 'no feed'})"
        )
    if reasons:
        return refusal("; ".join(reasons), **base)
    assert price is not None and price.price is not None
    pnl = state.scenario_pnl()
    delta_usd = float(
        req.size_delta * Decimal(price.price.numerator) / Decimal(price.price.denominator)
    )
    im_after = im_with_position(pnl, scen, req.market, delta_usd, policy)
    equity = float(figures.equity)
    snap = world.snapshot(req.chain_id)
    issued = int(snap.timestamp or 0)
    increment = Decimal(repr(max(im_after - figures.initial_margin, 0.0)))
    seen: dict[str, float] = {}

    def fits(reserved: Decimal) -> bool:
        seen["reserved"] = float(reserved)
        return equity - im_after - float(reserved) >= 0

    res = store.authorize(
        req.account,
        req.chain_id,
        req.market,
        str(req.size_delta),
        increment,
        issued,
        issued + ttl,
        fits,
    )
    free_after = equity - im_after - seen.get("reserved", 0.0)
    figures_out = {
        **base,
        "initial_margin_after": im_after,
        "reserved": seen.get("reserved", 0.0),
        "free_margin_after": free_after,
    }
    if res is None:
        return refusal(f"free margin after {free_after:,.2f} USD would be negative", **figures_out)
    gate = cfg.chain(req.chain_id).margin_gate
    assert gate is not None
    att = MarginAttestation(
        account=req.account,
        market=market_id(req.market),
        size_delta=int(req.size_delta * WAD),
        equity=max(int(figures.equity * WAD), 0),
        initial_margin=int(Decimal(repr(im_after)) * WAD),
        snapshot_hash=bytes.fromhex(world.snapshot_hash[2:]),
        risk_model_hash=bytes.fromhex(report["risk_model_hash"][2:]),
        issued_at=issued,
        valid_until=issued + ttl,
        nonce=res.nonce,
    )
    return {
        "approved": True,
        "reason": "",
        **figures_out,
        "reservation_id": res.id,
        "attestation": {
            "typed_data": typed_data(att, req.chain_id, gate),
            "signature": sign(att, req.chain_id, gate, key),
        },
    }


NONCE_USED = selector("nonce_used(address,uint256)")


async def consumed_nonces(
    cfg: OmnimarginConfig, account: str, pending: list[Reservation]
) -> set[int]:
    """Nonces of ``pending`` that their chain's MarginGate has consumed (the position is on
    chain). A chain that cannot be asked keeps its reservations: they keep holding margin."""
    used: set[int] = set()
    by_chain: dict[int, list[Reservation]] = {}
    for r in pending:
        by_chain.setdefault(r.chain_id, []).append(r)
    for chain_id, rows in by_chain.items():
        chain = cfg.chain(chain_id)
        if chain.margin_gate is None:
            continue
        client = ChainClient(chain)
        try:
            for r in rows:
                data = NONCE_USED + address_word(account) + r.nonce.to_bytes(32, "big")
                call = {"to": chain.margin_gate, "data": "0x" + data.hex()}
                answer = as_bytes(await client.call("eth_call", [call, "latest"]))
                if word_uint(answer) == 1:
                    used.add(r.nonce)
        except (ChainError, Web3Exception, DecodingError):
            continue
        finally:
            await client.close()
    return used


def settle(cfg: OmnimarginConfig, store: Store, account: str) -> int:
    """Release the reservations whose positions reached the chain; returns how many."""
    pending = [r for r in store.reservations(account) if r.state == "active"]
    if not pending:
        return 0
    return store.mark_filled(account, asyncio.run(consumed_nonces(cfg, account, pending)))


def authorize(
    cfg: OmnimarginConfig, req: Request, store: Store, key: LocalAccount
) -> dict[str, Any]:
    """Settle filled reservations, read every chain now, then decide (refused if a chain
    reorganised past its pinned block meanwhile)."""
    check_request(cfg, req)
    settle(cfg, store, req.account)
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, [req.account], tolerance=policy.price_tolerance))
    state = account_state(cfg, world, req.account)
    return decide(cfg, state, req, store, key, asyncio.run(canonical_reasons(cfg, world)))


async def canonical_reasons(cfg: OmnimarginConfig, world: World) -> tuple[str, ...]:
    """One check, now, that ``world``'s pinned blocks are still canonical."""
    check = CanonicalCheck(cfg)
    try:
        return await check.reasons(world)
    finally:
        await check.close()
