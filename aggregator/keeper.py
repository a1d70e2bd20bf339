"""Running liquidations (docs/ARCHITECTURE.md, "Liquidation"): every liquidatable account's
plan signed and reserved, each step submitted by whoever holds a sender (the keeper of
``omnimargin serve``, ``omnimargin liquidate --submit``), bad debts recorded, and the insurance
fund reported (``omnimargin fund``, ``GET /v1/fund``).

An account is planned again only once nothing of its last plan is outstanding (every step seen
executed, cancelled or expired at the pinned blocks): a plan never stacks on another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3Exception

from aggregator.accounts import policy_of, portfolio_of
from aggregator.attestation import LiquidationAttestation
from aggregator.authorize import AccountState, fresh_state
from aggregator.gate import outstanding
from aggregator.liquidation import (
    KINDS,
    LiquidationPolicy,
    Plan,
    less_withdrawals,
    plan,
    plan_json,
    sign_plans,
    why_not,
)
from aggregator.store import Reservation, Store
from aggregator.valuation import value_portfolio
from aggregator.world import read_world
from chains.compile import load_artifact
from chains.config import OmnimarginConfig
from chains.revert import revert_reason

log = logging.getLogger(__name__)


def pending_steps(
    store: Store, state: AccountState, live: list[Reservation] | None = None
) -> list[Reservation]:
    """The account's liquidation steps still outstanding at the state's pinned blocks (from
    ``live``, its live rows, when the caller read every account's at once)."""
    gates = state.world.gates
    if live is None:
        since = min((g.timestamp for g in gates.values()), default=0)
        live = store.live(str(state.report["account"]), since)
    return [r for r in outstanding(live, gates) if r.kind in KINDS]


def due(
    store: Store,
    state: AccountState,
    lp: LiquidationPolicy,
    now: float | None = None,
    under_way: dict[str, int] | None = None,
) -> str | None:
    """Why ``state`` gets no liquidation round now (None when it gets one). A liquidation of
    the account executed within ``lp.episode_s`` goes on until health reaches the target, not
    only while it is below MM (``under_way``: the accounts with one, when already read)."""
    wall = time.time() if now is None else now
    if under_way is None:
        under_way = store.last_filled(("liquidation",), int(wall) - lp.episode_s)
    target = lp.target_health if str(state.report["account"]) in under_way else None
    return why_not(state, target)


def _not_on_record(store: Store, p: Plan) -> float:
    """How much of the account's uncovered shortfall ``p`` finds is not yet on record (0 when
    what is recorded says it, to a cent or 0.1 %): an account the fund cannot help is recorded
    once, and a loss that grew after its round (a price move before the close) by the part
    that grew."""
    recorded = sum(
        float(str(d["uncovered_usd"])) for d in store.bad_debts() if d["account"] == p.account
    )
    more = p.bad_debt_usd - recorded
    return more if more > max(0.01, 1e-3 * p.bad_debt_usd) else 0.0


def outstanding_withdrawals(
    state: AccountState, live: dict[str, list[Reservation]]
) -> list[Reservation]:
    """The account's withdrawals still outstanding at the state's pinned blocks."""
    rows = live.get(str(state.report["account"]), [])
    return [r for r in outstanding(rows, state.world.gates) if r.kind == "withdrawal"]


def fund_state(
    cfg: OmnimarginConfig, store: Store, key: LocalAccount, lp: LiquidationPolicy
) -> tuple[dict[tuple[int, str], Decimal], dict[int, int]]:
    """The insurance fund's collateral per (chain, token) and its gate counters, read now."""
    st = fresh_state(cfg, store, key, lp.insurance_fund)
    counters = {c: g.counters[lp.insurance_fund] for c, g in st.world.gates.items()}
    return st.locked, counters


def liquidate(
    cfg: OmnimarginConfig,
    store: Store,
    key: LocalAccount,
    lp: LiquidationPolicy,
    states: Sequence[AccountState],
    now: float | None = None,
) -> list[dict[str, Any]]:
    """A signed plan for every liquidatable account of ``states`` that has no plan
    outstanding: ``{"account", "plan", "steps"}`` each (bad debts recorded in the store)."""
    wall = time.time() if now is None else now
    under_way = store.last_filled(("liquidation",), int(wall) - lp.episode_s)
    since = min((g.timestamp for s in states for g in s.world.gates.values()), default=0)
    live = store.live_by_account(since)
    ready = [
        less_withdrawals(cfg, s, outstanding_withdrawals(s, live))
        for s in states
        if due(store, s, lp, wall, under_way) is None
        and not pending_steps(store, s, live.get(str(s.report["account"]), []))
    ]
    if not ready:
        return []
    fund_locked: dict[tuple[int, str], Decimal] = {}
    fund_counters: dict[int, int] = {}
    if any(float(s.figures.equity) <= 0 for s in ready):
        fund_locked, fund_counters = fund_state(cfg, store, key, lp)
    # NumPy's partitions and the signatures leave the GIL: one thread a core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        made = list(pool.map(lambda s: plan(cfg, s, lp, fund_locked), ready))
        plans: list[tuple[AccountState, Plan]] = [
            (s, p) for s, p in zip(ready, made, strict=True) if p.steps
        ]
        at = int(wall)
        for s, p in zip(ready, made, strict=True):  # nothing to do but put the loss on record
            if not p.steps and (more := _not_on_record(store, p)) > 0:
                store.record_bad_debt(
                    p.account, Decimal(repr(more)), Decimal(0), s.world.snapshot_hash, at
                )
        signed = sign_plans(cfg, plans, store, key, fund_counters, now, lp.ttl_s, pool.map)
    out = []
    for (state, p), steps in zip(plans, signed, strict=True):
        if steps is None:  # another plan of the account was reserved meanwhile
            continue
        if p.bad_debt_usd > 0:
            store.record_bad_debt(
                p.account,
                Decimal(repr(p.bad_debt_usd)),
                Decimal(repr(p.fund_cover_usd)),
                state.world.snapshot_hash,
                at,
            )
        out.append({"account": p.account, "plan": plan_json(p), "steps": steps})
    return out


def submit_steps(
    cfg: OmnimarginConfig, steps: Sequence[dict[str, Any]], sender: str
) -> list[dict[str, Any]]:
    """Send each step to its PerpMarket or CollateralVault from ``sender`` (an account the
    node holds unlocked), in order; a step that reverts is reported with its reason and the
    rest still go (a seizure does not depend on a close)."""
    out = []
    for step in steps:
        typed = step["attestation"]["typed_data"]
        chain = cfg.chain(int(typed["domain"]["chainId"]))
        att = LiquidationAttestation.from_typed_data(typed)
        sig = bytes.fromhex(step["attestation"]["signature"].removeprefix("0x"))
        name = "PerpMarket" if att.target == chain.perp_market else "CollateralVault"
        w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
        target = w3.eth.contract(
            address=Web3.to_checksum_address(att.target), abi=list(load_artifact(name).abi)
        )
        fn = target.functions.liquidate(att.as_tuple(), sig)
        result: dict[str, Any] = {"reservation_id": step["reservation_id"], "target": name}
        try:
            fn.call({"from": sender})
            tx = fn.transact({"from": sender, "gas": 1_000_000})
            receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=60, poll_latency=0.1)
            ok = receipt["status"] == 1
            result |= {"executed": ok, "tx": tx.hex(), "block": receipt["blockNumber"]}
            if not ok:
                result["reason"] = "reverted when mined"
        except ContractLogicError as exc:
            result |= {"executed": False, "reason": revert_reason(exc.data, exc.message)}
        except (Web3Exception, OSError, ValueError) as exc:
            result |= {"executed": False, "reason": f"{chain.name}: {exc}"}
        out.append(result)
    return out


def fund_report(cfg: OmnimarginConfig, store: Store, lp: LiquidationPolicy) -> dict[str, Any]:
    """The insurance fund now: its collateral in every vault (valued at collateral prices) and
    every bad debt on record."""
    policy, _ = policy_of(cfg)
    fund = lp.insurance_fund
    world = asyncio.run(read_world(cfg, [fund], tolerance=policy.price_tolerance))
    pf = portfolio_of(world, fund).backing()
    val = value_portfolio(pf, world.prices)
    balances = [
        {
            "chain_id": ln.chain_id,
            "asset": ln.asset,
            "token": dict(ln.provenance).get("token"),
            "symbol": dict(ln.provenance).get("symbol"),
            "quantity": str(Decimal(ln.quantity.numerator) / Decimal(ln.quantity.denominator)),
            "value_usd": float(v),
        }
        for ln, v in zip(pf.lines, val.line_values, strict=True)
        if ln.kind == "collateral"
    ]
    debts = store.bad_debts()

    def total(key: str) -> float:
        return float(sum((Decimal(str(d[key])) for d in debts), Decimal(0)))

    return {
        "insurance_fund": fund,
        "balances": balances,
        "total_usd": float(val.collateral),
        "status": "degraded" if val.reasons else "ok",
        "reasons": list(val.reasons),
        "bad_debts": debts,
        "bad_debt_usd": total("shortfall_usd"),
        "bad_debt_covered_usd": total("covered_usd"),
        "bad_debt_uncovered_usd": total("uncovered_usd"),
        "snapshot_hash": world.snapshot_hash,
    }


class Keeper:
    """The keeper of ``omnimargin serve``: after every epoch (on a thread of its own, never
    in the epoch loop) it plans, signs and reserves every liquidatable account's next round,
    and submits the steps when ``[liquidation] keeper_sender`` names an account it may send
    from. The recent rounds are kept for ``GET /v1/liquidations``."""

    def __init__(
        self,
        cfg: OmnimarginConfig,
        store: Store,
        key: LocalAccount,
        lp: LiquidationPolicy,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        on_fund: Callable[[dict[str, Any]], None] | None = None,
        fund_every: int = 5,
    ) -> None:
        self.cfg, self.store, self.key, self.lp = cfg, store, key, lp
        self.on_round, self.on_fund, self.fund_every = on_round, on_fund, fund_every
        self.fund: dict[str, Any] | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self._busy = threading.Lock()
        self._lock = threading.Lock()

    def on_epoch(self, epoch: Any) -> None:
        if not self.lp.keeper or not self._busy.acquire(blocking=False):
            return  # the last round is still running: the next epoch tries again
        threading.Thread(target=self._run, args=(epoch,), daemon=True, name="keeper").start()

    def _run(self, epoch: Any) -> None:
        try:
            states = list(epoch.accounts.values())
            rounds = liquidate(self.cfg, self.store, self.key, self.lp, states)
            for r in rounds:
                r["epoch"] = epoch.number
                if self.lp.keeper_sender is not None:
                    r["submitted"] = submit_steps(self.cfg, r["steps"], self.lp.keeper_sender)
                with self._lock:
                    self.recent.appendleft(r)
                if self.on_round is not None:
                    self.on_round(r)
            if rounds or self.fund is None or epoch.number % self.fund_every == 0:
                self.refresh_fund()
        except Exception:  # the keeper must outlive a failed round; the next epoch retries
            log.exception("keeper: liquidation round failed")
        finally:
            self._busy.release()

    def refresh_fund(self) -> dict[str, Any]:
        """Read the insurance fund now (kept for ``GET /v1/fund`` and ``/metrics``)."""
        report = fund_report(self.cfg, self.store, self.lp)
        report["read_at"] = time.time()
        with self._lock:
            self.fund = report
        if self.on_fund is not None:
            self.on_fund(report)
        return report

    def fund_now(self, max_age_s: float) -> dict[str, Any]:
        """The fund report read at most ``max_age_s`` ago (read again if older)."""
        with self._lock:
            kept = self.fund
        if kept is not None and time.time() - float(kept["read_at"]) <= max_age_s:
            return kept
        return self.refresh_fund()

    def rounds(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.recent)
