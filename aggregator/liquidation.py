"""Liquidation across chains (docs/ARCHITECTURE.md, "Liquidation").

An account is liquidatable when its equity is below MM at ``ok`` prices (``status`` ok: never
on stale or missing data). A plan, made from the account's state alone (pure):

1. **Close positions**, largest ES contribution first, each by at most ``close_factor`` of its
   size per round, partially: the smallest cut (found by bisection on the account's scenario
   P&L) that brings health = equity / MM to ``target_health`` after the fees, else the whole
   close factor and on to the next position.
2. **Fees**: ``bonus`` (to whoever submits) plus ``penalty`` (to the insurance fund) times the
   notional closed, never more than the equity left; seized from the locked collateral on
   whichever chains hold it, largest value first, each a vault step.
3. **Bad debt**: an account whose equity is at or below zero has every position closed at
   once, every unit of collateral seized (the bonus out of it, the rest to the fund), its
   realised loss settled (``settle`` on a close step), and the shortfall covered from the
   insurance fund where it can be (a vault step seizing the fund's collateral for the
   treasury); what the fund cannot cover stays recorded as uncovered bad debt.

Each step becomes a :class:`~aggregator.attestation.LiquidationAttestation` that the target
chain's PerpMarket or CollateralVault accepts from anyone, and a reservation in the store
(kinds ``liquidation`` and ``seizure``: the gate's outstanding set counts them like position
changes and withdrawals), so no account is planned twice while a plan is outstanding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator.attestation import LiquidationAttestation, market_id, sign, typed_data
from aggregator.authorize import AccountState
from aggregator.gate import tail_mean
from aggregator.inputs import account as checked_account
from aggregator.portfolio_file import first_error
from aggregator.store import NewReservation, Reservation, Store
from bridge_adapters.canonical import Representations
from bridge_adapters.risk import token_column
from chains.config import OmnimarginConfig
from chains.devnet_margin import DEVNET_FUND
from chains.types import SourceKind
from montecarlo.measures import tail_count

WAD = 10**18
KINDS = ("liquidation", "seizure")
CUT_TOLERANCE = 1e-4  # the cut found to this fraction of the close factor's size (up), or
HEALTH_TOLERANCE = 1e-5  # a cut whose health is within this (relative) above the target
MAX_STEPS = 60  # regula falsi steps at most (it takes about 6 to 10)


class _LiquidationModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    close_factor: float = Field(0.5, gt=0, le=1)
    target_health: float = Field(1.25, gt=1, le=10)
    bonus: float = Field(0.01, ge=0, lt=0.25)
    penalty: float = Field(0.01, ge=0, lt=0.25)
    insurance_fund: str = DEVNET_FUND
    keeper: bool = True
    keeper_sender: str | None = None  # an unlocked node account that submits (the devnet's)
    ttl_s: int = Field(60, ge=10, le=3600)
    episode_s: int = Field(3600, ge=0, le=7 * 86400)


@dataclass(frozen=True)
class LiquidationPolicy:
    """``[liquidation]`` of the config: how far a round goes, what it pays, who keeps it."""

    close_factor: float = 0.5
    target_health: float = 1.25
    bonus: float = 0.01
    penalty: float = 0.01
    insurance_fund: str = DEVNET_FUND
    keeper: bool = True
    keeper_sender: str | None = None
    ttl_s: int = 60  # a step not executed by then is dead: the next epoch plans again
    episode_s: int = 3600  # a liquidation executed this recently goes on to the target


def liquidation_policy(cfg: OmnimarginConfig) -> LiquidationPolicy:
    """The config's ``[liquidation]`` table, checked (errors name ``liquidation.<field>``)."""
    try:
        m = _LiquidationModel.model_validate(cfg.liquidation or {})
    except ValidationError as exc:
        raise first_error(exc, "liquidation") from None
    fund = checked_account(m.insurance_fund, "liquidation.insurance_fund")
    sender = None if m.keeper_sender is None else checked_account(m.keeper_sender, "sender")
    return LiquidationPolicy(**{**m.model_dump(), "insurance_fund": fund, "keeper_sender": sender})


@dataclass(frozen=True)
class Close:
    """Close ``size_delta`` (units, signed: it shrinks the position) of ``market`` on
    ``chain_id``, settling ``settle_usd`` into its realised P&L."""

    chain_id: int
    market: str
    size_delta: Decimal
    notional_usd: float
    settle_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class Seize:
    """Seize ``amount`` (raw) of ``token`` from ``account`` in ``vault``: ``bonus`` (raw) to
    the submitter, the rest to ``recipient``."""

    chain_id: int
    vault: str
    token: str
    symbol: str
    column: str
    decimals: int
    amount: int
    bonus: int
    recipient: str
    value_usd: float
    account: str

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.amount).scaleb(-self.decimals)


@dataclass(frozen=True)
class Plan:
    account: str
    equity: float
    maintenance_margin: float
    health: float
    health_after: float | None
    target_health: float
    closes: tuple[Close, ...] = ()
    seizes: tuple[Seize, ...] = ()
    fees_usd: float = 0.0
    bad_debt_usd: float = 0.0
    fund_cover_usd: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def steps(self) -> int:
        return len(self.closes) + len(self.seizes)


def has_work(state: AccountState) -> bool:
    """Whether a liquidation can do anything: a position to close, collateral (locked or
    requested out) to seize, or a loss below zero for the fund to cover and record (the
    keeper records an uncovered one once: :func:`aggregator.keeper.liquidate`)."""
    return (
        any(size != 0 for size in state.positions.values())
        or any(q > 0 for q in (*state.locked.values(), *state.pending.values()))
        or float(state.figures.equity) < 0
    )


def why_not(state: AccountState, target: float | None = None) -> str | None:
    """Why ``state`` is not to be liquidated now (None when it is). With ``target`` (an
    account whose liquidation is under way), until its health reaches the target: a round
    held to the close factor may leave it above MM and still short of it."""
    f = state.figures
    if f.status != "ok":
        return f"status {f.status}: nothing is liquidated on stale or missing data"
    if not has_work(state):
        return "nothing left to close or seize (a bad debt, if any, is on record)"
    if f.liquidatable:
        return None
    if target is not None and f.health is not None and f.health < target:
        return None
    return f"health {f.health if f.health is not None else 'n/a'}: not below MM"


def _mm(pnl: np.ndarray, k: int) -> float:
    return max(tail_mean(-pnl, k), 0.0)


def _candidates(loss: np.ndarray, move: np.ndarray, k: int) -> np.ndarray:
    """Indices of the scenarios that can be among the k largest of ``loss + t * move`` for
    some t in [0, 1]: each loss is linear in t, so it is at least min(loss(0), loss(1)) on
    the interval, the k-th largest at any t is at least L = the k-th largest of those minima,
    and a scenario in the top k at some t has max(loss(0), loss(1)) >= L. Bisection then
    runs on these (a few k) instead of all M."""
    end = loss + move
    low = np.minimum(loss, end)
    m = low.shape[0]
    stride = m // 4096
    if stride >= 4 and k <= m // 8:  # a threshold from a strided sample, if it is below L
        sample = np.sort(low[::stride])
        t = sample[max(len(sample) - 1 - (int(1.25 * k / stride) + 16), 0)]
        if np.count_nonzero(low >= t) >= k:  # then L >= t: a superset, still exact
            return np.flatnonzero(np.maximum(loss, end) >= t)
    bound = np.partition(low, m - k)[m - k]
    return np.flatnonzero(np.maximum(loss, end) >= bound)


def plan(
    cfg: OmnimarginConfig,
    state: AccountState,
    lp: LiquidationPolicy,
    fund_locked: dict[tuple[int, str], Decimal] | None = None,
) -> Plan:
    """The plan for a liquidatable account (see the module docstring); ``fund_locked`` is the
    insurance fund's collateral per (chain, token), needed only when equity is not positive."""
    if (reason := why_not(state, lp.target_health)) is not None:
        raise ValueError(reason)
    f, prices = state.figures, state.world.prices
    equity, mm0 = float(f.equity), f.maintenance_margin
    account = str(state.report["account"])
    pnl = state.scenario_pnl()
    k = tail_count(state.policy.mm_alpha, int(pnl.shape[0]))
    positions = []
    for (chain, market), size in state.positions.items():
        quote = prices.get(market)
        if size == 0 or quote is None or quote.price is None:
            continue
        positions.append((chain, market, size, float(quote.price)))
    positions.sort(key=lambda p: (-f.by_asset.get(p[1], 0.0), -abs(float(p[2])) * p[3]))
    fee_rate = lp.bonus + lp.penalty
    insolvent = equity <= 0
    # closing everything cannot bring health to the target (what is left needs more MM than
    # its equity: a realised loss against risky collateral): close everything at once rather
    # than halve the positions for ever, and pay the loss out of the collateral (``flat``)
    flat = not insolvent and _unreachable(state, positions, pnl, k, equity, fee_rate, lp)
    closes: list[Close] = []
    notional = 0.0
    health_after: float | None = None
    for chain, market, size, price in positions:
        r = state.scen.column_returns(market)
        sign = 1.0 if size > 0 else -1.0
        full = insolvent or flat
        most = abs(size) if full else _round_size(abs(size) * Decimal(repr(lp.close_factor)))

        unit = r * (sign * price)  # P&L per unit closed is -unit (M,)
        top = float(most)
        keep = _candidates(-pnl, unit * top, k)
        loss_c, unit_c = -pnl[keep], unit[keep]
        fees_before = notional

        def health_if(q: float, loss_c: np.ndarray, unit_c: np.ndarray) -> float:
            losses = loss_c + unit_c * q
            top_k = np.partition(losses, losses.shape[0] - k)[losses.shape[0] - k :]
            mm = max(float(top_k.mean()), 0.0)
            eq = equity - min(fee_rate * (fees_before + q * price), max(equity, 0.0))  # noqa: B023
            return math.inf if mm <= 0 else eq / mm

        cut = most
        at_cut = health_if(top, loss_c, unit_c)  # the health at the cut, as it is found
        f_hi = at_cut - lp.target_health  # Illinois halves these: at_cut stays the true one
        if not full and f_hi >= 0:
            # the smallest cut that reaches the target: regula falsi (Illinois) on a bracket
            # [lo, hi] with health(lo) < target <= health(hi), kept while it shrinks, and the
            # scenarios that can be in the tail on it shrinking with it
            lo, hi = 0.0, top
            f_lo = health_if(0.0, loss_c, unit_c) - lp.target_health
            side = 0
            for _ in range(MAX_STEPS):
                if hi - lo <= top * CUT_TOLERANCE or at_cut <= lp.target_health * (
                    1 + HEALTH_TOLERANCE
                ):
                    break
                sub = _candidates(loss_c + unit_c * lo, unit_c * (hi - lo), k)
                loss_c, unit_c = loss_c[sub], unit_c[sub]
                q = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
                q = min(max(q, lo + (hi - lo) * 1e-3), hi - (hi - lo) * 1e-3)
                f_q = health_if(q, loss_c, unit_c) - lp.target_health
                if f_q >= 0:
                    hi, f_hi, at_cut = q, f_q, f_q + lp.target_health
                    f_lo = f_lo / 2 if side == 1 else f_lo
                    side = 1
                else:
                    lo, f_lo = q, f_q
                    f_hi = f_hi / 2 if side == -1 else f_hi
                    side = -1
            cut = min(_round_size(Decimal(repr(hi)), up=True), most)
        closes.append(Close(chain, market, -cut if size > 0 else cut, float(cut) * price))
        health_after = at_cut  # the cut rounds hi up by under 1e-18 of a unit
        pnl = pnl - unit * float(cut)
        notional += float(cut) * price
        if not full and health_after >= lp.target_health:
            break
    fees = 0.0 if insolvent else min(fee_rate * notional, max(equity, 0.0))
    if health_after is None:  # nothing to close (a debt alone): health as it is
        mm_now = _mm(pnl, k)
        health_after = None if mm_now <= 0 else (equity - fees) / mm_now
    elif math.isinf(health_after):
        health_after = None  # no MM left: health is not a number
    if insolvent:
        return _bad_debt_plan(cfg, state, lp, closes, fund_locked or {}, equity, mm0)
    seizes = _seize(cfg, state, lp, fees, lp.bonus / fee_rate if fee_rate else 0.0)
    notes: tuple[str, ...] = ()
    if flat:
        closes, paid = _settle_loss(cfg, state, lp, closes, seizes, equity)
        seizes += paid
        health_after = None  # flat, its loss paid: only collateral is left
        notes = ("the target cannot be reached by closing: everything closed, the loss paid",)
    return Plan(
        account,
        equity,
        mm0,
        equity / mm0 if mm0 > 0 else math.inf,
        health_after,
        lp.target_health,
        tuple(closes),
        tuple(seizes),
        fees,
        notes=notes,
    )


def _unreachable(
    state: AccountState,
    positions: list[tuple[int, str, Decimal, float]],
    pnl: np.ndarray,
    k: int,
    equity: float,
    fee_rate: float,
    lp: LiquidationPolicy,
) -> bool:
    """Whether even closing every position leaves health below the target."""
    if not positions:
        return False
    flat = pnl.copy()
    notional = 0.0
    for _, market, size, price in positions:
        flat -= state.scen.column_returns(market) * (float(size) * price)
        notional += abs(float(size)) * price
    mm = _mm(flat, k)
    left = equity - min(fee_rate * notional, max(equity, 0.0))
    return mm > 0 and left / mm < lp.target_health


def _settle_loss(
    cfg: OmnimarginConfig,
    state: AccountState,
    lp: LiquidationPolicy,
    closes: list[Close],
    fees: list[Seize],
    equity: float,
) -> tuple[list[Close], list[Seize]]:
    """Every position closed: its realised loss, C - E (C the locked collateral's value, E the
    equity), seized from the collateral the fees left for the treasury and credited
    (``settle``) on the first close. What is left is the account's, owing nothing."""
    loss = float(state.report.get("collateral_locked_usd", 0.0)) - equity
    if loss <= 0 or not closes:
        return closes, []
    left = {
        key: state.locked.get(key, Decimal(0)) + state.pending.get(key, Decimal(0))
        for key in {*state.locked, *state.pending}
    }
    for s in fees:
        left[(s.chain_id, s.token)] -= s.quantity
    paid = _seize(cfg, state, lp, loss, 0.0, amounts=left, to_treasury=True)
    value = sum(s.value_usd for s in paid)
    settle = Decimal(repr(value)).quantize(Decimal(1).scaleb(-18))
    return [replace(closes[0], settle_usd=settle), *closes[1:]], paid


_REPS: dict[int, tuple[OmnimarginConfig, Representations]] = {}


def _representations(cfg: OmnimarginConfig) -> Representations:
    """The config's token table, built once per config (a plan asks it for every amount)."""
    held = _REPS.get(id(cfg))
    if held is None or held[0] is not cfg:
        held = _REPS[id(cfg)] = (cfg, Representations.from_config(cfg))
    return held[1]


def _round_size(q: Decimal, up: bool = False) -> Decimal:
    """A size to 18 decimals (the contracts' unit), rounded up or down."""
    return q.quantize(Decimal(1).scaleb(-18), rounding=ROUND_CEILING if up else ROUND_FLOOR)


def _collateral(
    cfg: OmnimarginConfig, state: AccountState, locked: dict[tuple[int, str], Decimal]
) -> list[tuple[float, int, str, str, str, int, Fraction]]:
    """(value, chain, vault, token, column, decimals, price) of each locked amount, largest
    value first; amounts without an ``ok`` collateral price are left alone."""
    reps = _representations(cfg)
    vaults = {s.chain_id: s.address for s in cfg.sources if s.kind is SourceKind.VAULT}
    out = []
    for (chain, token), qty in locked.items():
        rep = reps.lookup(chain, token)
        price = state.world.prices.get(rep.asset)
        if qty <= 0 or price is None or price.collateral_price is None or chain not in vaults:
            continue
        value = float(Fraction(qty) * price.collateral_price)
        column = token_column(rep)
        vault = str(vaults[chain])
        out.append((value, chain, vault, token, column, rep.decimals, price.collateral_price))
    out.sort(key=lambda x: -x[0])
    return out


def _seize(
    cfg: OmnimarginConfig,
    state: AccountState,
    lp: LiquidationPolicy,
    usd: float,
    bonus_share: float,
    everything: bool = False,
    amounts: dict[tuple[int, str], Decimal] | None = None,
    to_treasury: bool = False,
) -> list[Seize]:
    """Vault steps taking ``usd`` of the account's locked collateral and escape-hatch
    requests (all of them with
    ``everything``, for the treasury: a bad debt's collateral pays its loss), the bonus share
    to the submitter and the rest to the fund."""
    account = str(state.report["account"])
    reps = _representations(cfg)
    out: list[Seize] = []
    left = Fraction(repr(usd)) if not everything else None
    # the vault takes from the collateral, then from an escape-hatch request: both seizable
    seizable = amounts
    if seizable is None:
        seizable = {
            key: state.locked.get(key, Decimal(0)) + state.pending.get(key, Decimal(0))
            for key in {*state.locked, *state.pending}
        }
    for _value, chain, vault, token, column, decimals, price in _collateral(cfg, state, seizable):
        if left is not None and left <= 0:
            break
        have = int(seizable[(chain, token)].scaleb(decimals))
        raw = have if left is None else min(have, math.ceil(left / price * 10**decimals))
        if raw <= 0:
            continue
        taken = Fraction(raw, 10**decimals) * price
        bonus = int(raw * bonus_share)
        symbol = reps.lookup(chain, token).symbol
        to = treasury(cfg, chain) if everything or to_treasury else lp.insurance_fund
        out.append(
            Seize(
                chain, vault, token, symbol, column, decimals, raw, bonus, to, float(taken),
                account,
            )
        )  # fmt: skip
        if left is not None:
            left -= taken
    return out


def less_withdrawals(
    cfg: OmnimarginConfig, state: AccountState, withdrawals: list[Reservation]
) -> AccountState:
    """``state`` with its locked collateral less the withdrawals of it still outstanding: any of
    them may execute before a seizure does (which would then revert), so a plan seizes only
    what stays locked whatever they do."""
    if not withdrawals:
        return state
    out = dict(state.locked)
    for (chain, token), qty in state.locked.items():
        rep = _representations(cfg).lookup(chain, token)
        column = token_column(rep)
        going = sum(
            (
                -Decimal(r.size_delta)
                for r in withdrawals
                if (r.kind, r.chain_id, r.market) == ("withdrawal", chain, column)
            ),
            Decimal(0),
        )
        out[(chain, token)] = max(qty - going, Decimal(0))
    return replace(state, locked=out)


def treasury(cfg: OmnimarginConfig, chain_id: int) -> str:
    """Who a chain's realised perp losses are paid to: its PerpMarket's account in the vault."""
    perp = cfg.chain(chain_id).perp_market
    assert perp is not None, f"chain {chain_id} has no PerpMarket"
    return str(perp)


def _bad_debt_plan(
    cfg: OmnimarginConfig,
    state: AccountState,
    lp: LiquidationPolicy,
    closes: list[Close],
    fund_locked: dict[tuple[int, str], Decimal],
    equity: float,
    mm0: float,
) -> Plan:
    """Equity at or below zero (module docstring, step 3). The account owes its realised loss
    after every close, C - E (C its collateral, E its equity); its collateral pays C less the
    bonus, the fund the rest (b - E) as far as it can, and ``settle`` credits what was paid,
    so equity ends at minus what the fund could not cover (the bad debt left on the record)."""
    account = str(state.report["account"])
    seizes = _seize(cfg, state, lp, 0.0, lp.bonus, everything=True, amounts=state.locked)
    bonus_usd = sum(s.value_usd * s.bonus / s.amount for s in seizes if s.amount)
    shortfall = bonus_usd - equity  # what the fund must add for equity to end at zero
    # an escape-hatch request (no longer in equity) pays what it can before the fund does
    if state.pending and shortfall > 0:
        hatch = _seize(cfg, state, lp, shortfall, 0.0, amounts=state.pending, to_treasury=True)
        seizes += hatch
        shortfall -= sum(s.value_usd for s in hatch)
    collateral = sum(s.value_usd for s in seizes)
    notes = [f"equity {equity:,.2f} USD: every position closed, all collateral seized"]
    cover: list[Seize] = []
    left = Fraction(repr(shortfall))
    for _, chain, vault, token, column, decimals, price in _collateral(cfg, state, fund_locked):
        if left <= 0:
            break
        have = int(fund_locked[(chain, token)].scaleb(decimals))
        raw = min(have, math.ceil(left / price * 10**decimals))
        taken = Fraction(raw, 10**decimals) * price
        symbol = _representations(cfg).lookup(chain, token).symbol
        cover.append(
            Seize(
                chain, vault, token, symbol, column, decimals, raw, 0, treasury(cfg, chain),
                float(taken), lp.insurance_fund,
            )
        )  # fmt: skip
        left -= taken
    covered = max(min(sum(s.value_usd for s in cover), shortfall), 0.0)
    if left > 0:
        notes.append(f"the fund covers {covered:,.2f} of {shortfall:,.2f} USD: the rest is bad")
    paid = collateral - bonus_usd + covered
    settle = Decimal(repr(paid)).quantize(Decimal(1).scaleb(-18))
    if closes:
        first = closes[0]
        closes[0] = Close(
            first.chain_id, first.market, first.size_delta, first.notional_usd, settle
        )
    elif settle != 0:  # every position closed already: settle on a market holding the loss
        for chain, market in list(state.positions)[:1]:
            closes.append(Close(chain, market, Decimal(0), 0.0, settle))
    return Plan(
        account,
        equity,
        mm0,
        equity / mm0 if mm0 > 0 else -math.inf,
        None,
        lp.target_health,
        tuple(closes),
        (*seizes, *cover),
        0.0,
        max(shortfall, 0.0),
        covered,
        tuple(notes),
    )


def plan_json(p: Plan) -> dict[str, Any]:
    out = asdict(p)
    for c in out["closes"]:
        c["size_delta"], c["settle_usd"] = str(c["size_delta"]), str(c["settle_usd"])
    for s in out["seizes"]:
        s["quantity"] = str(Decimal(s["amount"]).scaleb(-s["decimals"]))
        s["amount"], s["bonus"] = str(s["amount"]), str(s["bonus"])
    out["notes"] = list(p.notes)
    return out


def sign_plans(
    cfg: OmnimarginConfig,
    plans: list[tuple[AccountState, Plan]],
    store: Store,
    key: LocalAccount,
    fund_counters: dict[int, int] | None = None,
    now: float | None = None,
    ttl_s: int = 120,
    mapper: Callable[..., Iterable[Any]] = map,
) -> list[list[dict[str, Any]] | None]:
    """Every step of every plan reserved in one store transaction and signed: per plan, in
    order (closes, then seizures), ``{"kind", "chain_id", "reservation_id", "attestation"}``;
    None for a plan whose account already has a plan outstanding in the store."""
    wall = int(time.time() if now is None else now)
    groups: list[tuple[str, list[tuple[str, NewReservation]]]] = []
    all_steps: list[list[Close | Seize]] = []
    for state, p in plans:
        issued, until = wall - state.allowance_s, wall + ttl_s
        steps: list[Close | Seize] = [*p.closes, *p.seizes]
        items = []
        for step in steps:
            owner = p.account if isinstance(step, Close) else step.account
            if owner == p.account:
                counter = state.world.gates[step.chain_id].counters[owner]
            else:
                counter = (fund_counters or {})[step.chain_id]
            if isinstance(step, Close):
                kind, column, delta = "liquidation", step.market, step.size_delta
            else:
                kind, column, delta = "seizure", step.column, -step.quantity
            items.append(
                (
                    owner,
                    NewReservation(kind, step.chain_id, column, str(delta), issued, until, counter),
                )
            )
        groups.append((p.account, items))
        all_steps.append(steps)
    made = store.reserve(groups, exclusive=KINDS)

    def signed_plan(i: int) -> list[dict[str, Any]] | None:
        (state, p), (_, items), steps, rows = plans[i], groups[i], all_steps[i], made[i]
        if rows is None:
            return None
        signed = []
        for (owner, new), step, res in zip(items, steps, rows, strict=True):
            gate = cfg.chain(step.chain_id).margin_gate
            assert gate is not None
            att = _attestation(cfg, step, owner, res, state, p)
            signed.append(
                {
                    "kind": new.kind,
                    "chain_id": step.chain_id,
                    "reservation_id": res.id,
                    "attestation": {
                        "typed_data": typed_data(att, step.chain_id, gate),
                        "signature": sign(att, step.chain_id, gate, key),
                    },
                }
            )
        return signed

    return list(mapper(signed_plan, range(len(plans))))


def _attestation(
    cfg: OmnimarginConfig,
    step: Close | Seize,
    owner: str,
    res: Reservation,
    state: AccountState,
    p: Plan,
) -> LiquidationAttestation:
    common: dict[str, Any] = {
        "account": owner,
        "equity": int(Decimal(repr(p.equity)) * WAD),
        "maintenance_margin": int(Decimal(repr(max(p.maintenance_margin, 0.0))) * WAD),
        "snapshot_hash": bytes.fromhex(state.world.snapshot_hash[2:]),
        "risk_model_hash": bytes.fromhex(str(state.report["risk_model_hash"])[2:]),
        "issued_at": res.issued_at,
        "valid_until": res.valid_until,
        "nonce": res.nonce,
        "counter": res.counter,
    }
    if isinstance(step, Close):
        perp = cfg.chain(step.chain_id).perp_market
        assert perp is not None
        return LiquidationAttestation(
            target=perp,
            asset=market_id(step.market),
            size_delta=int(step.size_delta * WAD),
            amount=0,
            bonus=0,
            recipient=perp,
            settle=int(step.settle_usd * WAD),
            **common,
        )
    return LiquidationAttestation(
        target=step.vault,
        asset=int(step.token, 16).to_bytes(32, "big"),
        size_delta=0,
        amount=step.amount,
        bonus=step.bonus,
        recipient=step.recipient,
        settle=0,
        **common,
    )
