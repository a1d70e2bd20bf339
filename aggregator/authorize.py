"""Authorising a new position (docs/ARCHITECTURE.md, "The gate's contract").

IM is recomputed from the account's scenario P&L (P&L' = P&L + r[:, i] * delta_e), not a new
run. A request is approved only when the data is fresh (no unavailable chain, no degraded
price, the target L2's sequencer up, the target chain's clock within the allowance, every gate
read at its pinned block under the counter the store issues under) and the gate's invariant
holds with it: for every subset S of the account's outstanding attestations plus this one,
IM(portfolio + S) <= equity (aggregator/gate.py evaluates the worst S exactly). A change that
shrinks a position and lowers IM for every S is approved even below margin (reduce-only).
The decision, the reservation and its random nonce are one durable SQLite transaction; the
attestation is timed by the wall clock (``validUntil = now + ttl``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from aggregator.accounts import (
    clock_allowance,
    margin_report,
    policy_of,
    portfolio_of,
    scenario_set,
)
from aggregator.attestation import (
    Attestation,
    MarginAttestation,
    WithdrawalAttestation,
    market_id,
    sign,
    typed_data,
)
from aggregator.canonical import CanonicalCheck
from aggregator.errors import InputError
from aggregator.gate import (
    MAX_GROUPS,
    Change,
    group_count,
    lowers_im_everywhere,
    outstanding,
    reduces_position,
    settled,
    worst_case,
)
from aggregator.gate_sync import sync_counters
from aggregator.inputs import parse_decimal
from aggregator.margin import MarginFigures, MarginPolicy, ScenarioSet
from aggregator.portfolio import Portfolio
from aggregator.store import GateCounter, NewReservation, Reservation, Store
from aggregator.valuation import value_portfolio
from aggregator.world import World, read_gates, read_world, with_gates
from bridge_adapters.risk import parse_column
from chains.config import OmnimarginConfig

WAD = 10**18
MAX_SIZE = Decimal(10) ** 12


@dataclass(frozen=True)
class Request:
    """A position change: ``size_delta`` (units of the asset) on ``market`` of ``chain_id``."""

    account: str
    chain_id: int
    market: str
    size_delta: Decimal
    kind = "position"

    @property
    def column(self) -> str:
        return self.market

    @property
    def delta(self) -> Decimal:
        return self.size_delta


@dataclass(frozen=True)
class WithdrawalRequest:
    """``amount`` (raw, ``token``'s decimals) of ``token`` leaving ``vault`` on ``chain_id``
    for ``recipient``. In the store and the gate's groups it is minus ``quantity`` on
    ``column``, the risk column of the token (its asset, with the bridge that issued it)."""

    account: str
    chain_id: int
    vault: str
    token: str
    symbol: str
    amount: int
    decimals: int
    recipient: str
    column: str
    kind = "withdrawal"

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.amount).scaleb(-self.decimals)

    @property
    def delta(self) -> Decimal:
        return -self.quantity


Proposal = Request | WithdrawalRequest


def parse_size(text: str) -> Decimal:
    size = parse_decimal("size_delta", text)  # ASCII [+-]digits[.digits] only
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


Positions = dict[tuple[int, str], Decimal]  # (chain id, market) -> size in units of the asset
Locked = dict[tuple[int, str], Decimal]  # (chain id, token) -> units locked in its vault


def locked_of(world: World, account: str, source: str = "vault") -> Locked:
    """What ``account`` holds in each chain's CollateralVault, per token (what a withdrawal
    can take), at the pinned blocks; with ``source="vault_pending"``, what its escape hatch
    holds there (no longer collateral, still seizable)."""
    out: Locked = {}
    holdings = world.holdings.get(account)
    for h in holdings.holdings if holdings else ():
        if h.source == source and (h.locked or source != "vault"):
            key = (int(h.chain_id), str(h.token))
            out[key] = out.get(key, Decimal(0)) + Decimal(h.amount).scaleb(-h.decimals)
    return out


def bears_no_risk(pf: Portfolio, world: World) -> bool:
    """No perp line (open, or closed with realised P&L), no debt, every chain read: taking
    collateral out of this account cannot breach a margin."""
    return all(s.ok for s in world.snapshots) and not any(
        ln.kind in ("perp", "debt") for ln in pf.lines
    )


@dataclass(frozen=True)
class AccountState:
    """What a decision needs about one account: the reads, the scenarios and its margin.

    ``exposures`` are its USD exposures per risk column, in ``scen.columns`` order (n,);
    ``positions`` its perp sizes per (chain, market) at the pinned blocks. The CLI builds one
    from a fresh read (:func:`account_state`); the service from its epoch, with ``pnl`` kept
    for the epoch (what-if IM then costs one pass over M values).
    """

    world: World
    scen: ScenarioSet
    policy: MarginPolicy
    ttl: int
    report: dict[str, Any]
    figures: MarginFigures
    exposures: np.ndarray
    pnl: np.ndarray | None = None  # scen.returns @ exposures (M,), when already computed
    positions: Positions = field(default_factory=dict)
    allowance_s: int = 30
    locked: Locked = field(default_factory=dict)
    no_risk: bool = False
    pending: Locked = field(default_factory=dict)  # in the vaults' escape hatches

    def scenario_pnl(self) -> np.ndarray:
        """The account's P&L in every scenario (M,): kept, or computed now."""
        if self.pnl is not None:
            return self.pnl
        # only the columns it is exposed to (a few of the universe's), each contiguous
        pnl = np.zeros(self.scen.returns.shape[0])
        for j in np.flatnonzero(self.exposures):
            pnl += self.exposures[j] * self.scen.column_returns(self.scen.columns[j])
        return pnl


def perp_sizes(world: World, account: str) -> Positions:
    """``account``'s perp sizes per (chain id, market) in the pinned snapshots."""
    out: Positions = {}
    for snap in world.snapshots:
        for p in snap.positions:
            if str(p.account).lower() == account.lower():
                out[(int(snap.chain_id), p.market)] = Decimal(p.size) / WAD
    return out


def account_state(cfg: OmnimarginConfig, world: World, account: str) -> AccountState:
    policy, ttl = policy_of(cfg)
    scen = scenario_set(cfg, policy)
    report, figures = margin_report(world, account, scen, policy)
    pf = portfolio_of(world, account)
    val = value_portfolio(pf.backing(), world.prices)
    e = scen.vector({c: x for c, x in val.exposures.items() if x})
    return AccountState(
        world,
        scen,
        policy,
        ttl,
        report,
        figures,
        e,
        positions=perp_sizes(world, account),
        allowance_s=clock_allowance(cfg),
        locked=locked_of(world, account),
        no_risk=bears_no_risk(pf, world),
        pending=locked_of(world, account, "vault_pending"),
    )


def gate_reasons(
    cfg: OmnimarginConfig, world: World, counters: dict[int, GateCounter], account: str
) -> list[str]:
    """Why the world's gate states cannot back a decision: a gate unread, a counter other than
    the one the store issues under, or a pinned block older than the store's counter bump."""
    out = []
    for chain in cfg.chains:
        if chain.margin_gate is None:
            continue
        where = f"chain {chain.name} ({chain.chain_id})"
        g = world.gates.get(chain.chain_id)
        mine = counters.get(chain.chain_id)
        if g is None:
            out.append(f"{where}: its MarginGate was not read at the pinned block")
        elif mine is None:
            out.append(f"{where}: the store has no gate counter yet (it syncs at start)")
        elif g.block_number < mine.block:
            out.append(
                f"{where}: pinned block {g.block_number} is before the counter bump at block "
                f"{mine.block}; waiting for a newer epoch"
            )
        elif g.global_counter != mine.counter:
            out.append(
                f"{where}: the gate's counter is {g.global_counter}, the store issues under "
                f"{mine.counter} (another engine bumped it): restart to resync"
            )
        elif account not in g.counters:
            out.append(f"{where}: the account's gate counter was not read")
    return out


def change_of(world: World, kind: str, market: str, size: Decimal) -> Change | None:
    """The USD change on ``market``'s column of a size change, at the world's price of its
    asset (a perp's market is its column; a withdrawal's column may carry bridges, as
    ``USDC@canonical-arb``, and its size is minus the quantity leaving)."""
    price = world.prices.get(parse_column(market)[0])
    if price is None or price.price is None:
        return None
    usd = size * Decimal(price.price.numerator) / Decimal(price.price.denominator)
    return Change(market, kind, float(usd))


def outstanding_changes(
    world: World, outs: list[Reservation]
) -> tuple[list[Change], Reservation | None]:
    """The USD changes of outstanding rows at the world's prices, and the first row that has
    no price (None when every one is priced)."""
    changes: list[Change] = []
    for r in outs:
        c = change_of(world, r.kind, r.market, Decimal(r.size_delta))
        if c is None:
            return changes, r
        changes.append(c)
    return changes, None


@dataclass
class _Verdict:
    """What the decision found inside the store's transaction (for the response)."""

    reason: str = ""
    outstanding: int = 0
    corners: int = 0
    im_after: float | None = None
    shortfall_after: float | None = None
    reduce_only: bool = False
    no_risk: bool = False  # a withdrawal of an account that carries no risk


def available(state: AccountState, req: WithdrawalRequest, outs: list[Reservation]) -> Decimal:
    """What of ``req``'s token the account may still take out of the vault: its locked
    balance at the pinned block less the withdrawals of that (chain, column) outstanding."""
    locked = state.locked.get((req.chain_id, req.token), Decimal(0))
    pending = sum(
        (
            -Decimal(r.size_delta)
            for r in outs
            if (r.kind, r.chain_id, r.market) == ("withdrawal", req.chain_id, req.column)
        ),
        Decimal(0),
    )
    return locked - pending


def carries_no_risk(state: AccountState, outs: list[Reservation]) -> bool:
    """No perp position on any chain (every chain read), no debt (:func:`bears_no_risk`), and
    nothing outstanding but withdrawals: taking collateral out cannot breach any margin."""
    return state.no_risk and all(r.kind == "withdrawal" for r in outs)


def _judge(
    state: AccountState, req: Proposal, new: Change | None, rows: list[Reservation], v: _Verdict
) -> Decimal | None:
    """The gate's invariant over ``rows`` still outstanding in the pinned state, with ``new``:
    the margin the approval holds over IM now, or None to refuse (``v`` says why)."""
    outs = outstanding(rows, state.world.gates)
    v.outstanding = len(outs)
    if isinstance(req, WithdrawalRequest):
        free = available(state, req, outs)
        if req.quantity > free:
            v.reason = (
                f"amount: {req.quantity} {req.symbol} asked, {max(free, Decimal(0))} locked in "
                f"the vault on chain {req.chain_id} and not already being withdrawn"
            )
            return None
        if carries_no_risk(state, outs):
            v.no_risk = True
            return Decimal(0)
    if new is None:
        v.reason = f"{parse_column(req.column)[0]}: no trustworthy price"
        return None
    changes, unpriced = outstanding_changes(state.world, outs)
    if unpriced is not None:
        v.reason = (
            f"{unpriced.market}: no price for an outstanding attestation (nonce {unpriced.nonce})"
        )
        return None
    if group_count([*changes, new]) > MAX_GROUPS:
        v.reason = (
            f"outstanding attestations span more than {MAX_GROUPS} (column, kind) groups: "
            "wait for some to execute or expire"
        )
        return None
    pnl, scen, policy = state.scenario_pnl(), state.scen, state.policy
    after = worst_case(pnl, scen, [*changes, new], policy)
    v.corners, v.im_after, v.shortfall_after = after.corners, after.im, after.shortfall
    equity = float(state.figures.equity)
    if equity - after.shortfall >= 0:
        return Decimal(repr(max(after.shortfall - state.figures.initial_margin, 0.0)))
    if isinstance(req, WithdrawalRequest):
        v.reason = (
            f"free margin after {equity - after.shortfall:,.2f} USD would be negative "
            f"(worst case over {len(outs)} outstanding attestation(s) and this withdrawal)"
        )
        return None
    size = state.positions.get((req.chain_id, req.market), Decimal(0))
    same = [
        float(r.size_delta)
        for r in outs
        if (r.chain_id, r.market, r.kind) == (req.chain_id, req.market, "position")
    ]
    if reduces_position(float(size), same, float(req.size_delta)) and lowers_im_everywhere(
        pnl, scen, changes, new, policy
    ):
        v.reduce_only = True
        return Decimal(0)
    v.reason = (
        f"free margin after {equity - after.shortfall:,.2f} USD would be negative "
        f"(worst case over {len(outs)} outstanding attestation(s) and this one)"
    )
    return None


def _rows_key(rows: list[Reservation]) -> tuple[tuple[int, str, int | None], ...]:
    return tuple((r.id, r.state, r.seen_block) for r in rows)


def decide(
    cfg: OmnimarginConfig,
    state: AccountState,
    req: Proposal,
    store: Store,
    key: LocalAccount,
    extra_reasons: tuple[str, ...] = (),
    now: float | None = None,
    idempotency: tuple[str, str] | None = None,
    respond_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision on ``req`` given the account's state (pure but for the store).

    ``extra_reasons`` refuse it too (a stale epoch, a reorg, a chain's clock); ``now`` is the
    wall clock (default: now); ``idempotency`` = (key, body hash) is claimed on approval with
    the decision plus ``respond_extra`` as its stored response."""
    world, figures = state.world, state.figures
    base = {k: v for k, v in _figures(state, _Verdict()).items() if v is not None}
    counters = store.counters()
    # a withdrawal of an account that carries no risk does not need its prices: no margin
    # can be breached (the decision checks again inside the store's transaction)
    rows_now = store.live(req.account, min((g.timestamp for g in world.gates.values()), default=0))
    no_risk = isinstance(req, WithdrawalRequest) and carries_no_risk(
        state, outstanding(rows_now, world.gates)
    )
    reasons = [*extra_reasons, *world.chain_reasons(req.chain_id)]
    reasons += () if no_risk else figures.reasons
    reasons += gate_reasons(cfg, world, counters, req.account)
    asset = parse_column(req.column)[0]
    price = world.prices.get(asset)
    trusted = price is not None and price.usable_for_new_risk and price.price is not None
    if not trusted and isinstance(req, Request):
        reasons.append(f"{asset}: no trustworthy price ({price.reason if price else 'no feed'})")
    if isinstance(req, WithdrawalRequest):
        reasons += [
            r
            for s in world.snapshots
            if int(s.chain_id) != req.chain_id
            for r in world.chain_reasons(int(s.chain_id))
        ]
    if reasons:
        return refusal("; ".join(dict.fromkeys(reasons)), **base)
    # a withdrawal without a trustworthy price is judged only if its account carries no risk
    new = change_of(world, req.kind, req.column, req.delta) if trusted else None
    wall = int(time.time() if now is None else now)
    # valid from now less the clock allowance (a target chain whose head lags the wall clock
    # by up to the allowance accepts it at once) until now + ttl: the wall clock, never a block
    issued = wall - state.allowance_s
    gate_state = world.gates[req.chain_id]
    counter = gate_state.counters[req.account]
    since = min(g.timestamp for g in world.gates.values())
    # the worst case outside the store's write lock, on the rows as they are now; inside it,
    # reused when no row changed meanwhile (else computed again there)
    early = store.live(req.account, since)
    verdict = _Verdict()
    early_amount = _judge(state, req, new, early, verdict)
    early_key, early_verdict = _rows_key(early), replace(verdict)

    def judge(rows: list[Reservation]) -> Decimal | None:
        if _rows_key(rows) == early_key:
            verdict.__dict__.update(early_verdict.__dict__)
            return early_amount
        return _judge(state, req, new, rows, verdict)

    made: dict[str, Any] = {}

    def approved(res: Reservation) -> dict[str, Any]:
        decision = {"approved": True, "reason": "", **_figures(state, verdict)}
        decision.update(_attested(cfg, state, req, res, key, verdict))
        made["decision"] = decision
        return decision

    res = store.authorize(
        req.account,
        NewReservation(
            req.kind,
            req.chain_id,
            req.column,
            str(req.delta),
            issued,
            wall + state.ttl,
            counter,
        ),
        judge,
        idempotency=idempotency,
        since=since,
        respond=lambda r: json.dumps({**approved(r), **(respond_extra or {})}),
    )
    if res is None:
        return refusal(verdict.reason, **_figures(state, verdict))
    return made.get("decision") or approved(res)


def _figures(state: AccountState, verdict: _Verdict) -> dict[str, Any]:
    report, figures = state.report, state.figures
    shortfall = verdict.shortfall_after
    equity = float(figures.equity)
    return {
        "equity": report["equity"],
        "initial_margin_before": report["initial_margin"],
        "snapshot_hash": report["snapshot_hash"],
        "blocks": {str(s.chain_id): s.block_number for s in state.world.snapshots if s.ok},
        "risk_model_hash": report["risk_model_hash"],
        "initial_margin_after": verdict.im_after,
        "reserved": None if shortfall is None else max(shortfall - figures.initial_margin, 0.0),
        "free_margin_after": None if shortfall is None else equity - shortfall,
        "outstanding": verdict.outstanding,
        "corners": verdict.corners,
        "reduce_only": verdict.reduce_only,
        "no_risk": verdict.no_risk,
    }


def _attested(
    cfg: OmnimarginConfig,
    state: AccountState,
    req: Proposal,
    res: Reservation,
    key: LocalAccount,
    verdict: _Verdict,
) -> dict[str, Any]:
    """The signed attestation of an approved reservation."""
    gate = cfg.chain(req.chain_id).margin_gate
    assert gate is not None
    im_after = verdict.im_after if verdict.im_after is not None else state.figures.initial_margin
    common: dict[str, Any] = {
        "account": req.account,
        "equity": max(int(state.figures.equity * WAD), 0),
        "initial_margin": int(Decimal(repr(im_after)) * WAD),
        "snapshot_hash": bytes.fromhex(state.world.snapshot_hash[2:]),
        "risk_model_hash": bytes.fromhex(state.report["risk_model_hash"][2:]),
        "issued_at": res.issued_at,
        "valid_until": res.valid_until,
        "nonce": res.nonce,
        "counter": res.counter,
    }
    att: Attestation
    if isinstance(req, WithdrawalRequest):
        att = WithdrawalAttestation(
            vault=req.vault,
            token=req.token,
            amount=req.amount,
            recipient=req.recipient,
            **common,
        )
    else:
        att = MarginAttestation(
            market=market_id(req.market), size_delta=int(req.size_delta * WAD), **common
        )
    return {
        "reservation_id": res.id,
        "issued_at": res.issued_at,
        "valid_until": res.valid_until,
        "attestation": {
            "typed_data": typed_data(att, req.chain_id, gate),
            "signature": sign(att, req.chain_id, gate, key),
        },
    }


async def gated(cfg: OmnimarginConfig, world: World, store: Store, accounts: list[str]) -> World:
    """``world`` with every gate read at its pinned block (the store's active attestations and
    ``accounts``' counters), and the store told what that state shows of them."""
    rows = store.active()
    gates, why = await read_gates(cfg, world, [(r.account, r.nonce) for r in rows], accounts)
    store.mark(settled(rows, gates))
    return with_gates(world, gates, why)


def held_margin(state: AccountState, rows: list[Reservation]) -> float:
    """Margin the account's outstanding attestations hold over its IM now: the worst case
    over them minus IM (0 when none is outstanding, or none adds risk)."""
    outs = outstanding(rows, state.world.gates)
    if not outs:
        return 0.0
    changes, unpriced = outstanding_changes(state.world, outs)
    if unpriced is not None or group_count(changes) > MAX_GROUPS:
        # cannot be evaluated: everything free is held (fail closed, a finite figure)
        return max(float(state.figures.equity) - state.figures.initial_margin, 0.0)
    wc = worst_case(state.scenario_pnl(), state.scen, changes, state.policy)
    return max(wc.shortfall - state.figures.initial_margin, 0.0)


def fresh_state(
    cfg: OmnimarginConfig, store: Store, key: LocalAccount, account: str
) -> AccountState:
    """The account's state from a read of every chain and gate now, the store's counters
    synced with the gates first (a bump when the store is new or behind)."""
    sync_counters(cfg, store, key)
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, [account], tolerance=policy.price_tolerance))
    world = asyncio.run(gated(cfg, world, store, [account]))
    return account_state(cfg, world, account)


def authorize(
    cfg: OmnimarginConfig, req: Request, store: Store, key: LocalAccount
) -> dict[str, Any]:
    """Sync the gate counters, read every chain and gate now, then decide (refused if a chain
    reorganised past its pinned block meanwhile, or the target chain's clock is off)."""
    check_request(cfg, req)
    state = fresh_state(cfg, store, key, req.account)
    world = state.world
    extra = asyncio.run(canonical_reasons(cfg, world, req.chain_id, state.allowance_s))
    return decide(cfg, state, req, store, key, extra)


async def canonical_reasons(
    cfg: OmnimarginConfig, world: World, target: int | None = None, allowance_s: float = 30
) -> tuple[str, ...]:
    """One check, now, that ``world``'s pinned blocks are still canonical and ``target``'s
    clock is within ``allowance_s`` of the wall clock."""
    check = CanonicalCheck(cfg)
    try:
        return await check.reasons(world, target, allowance_s)
    finally:
        await check.close()
