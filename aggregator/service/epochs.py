"""Epochs: every few seconds, one snapshot of all chains, one scenario set, every known
account's margin, swapped in at once.

Requests are served from the latest complete epoch and never wait on chain I/O. An epoch's
Monte Carlo runs through the engine (:func:`montecarlo.run_risk`) with all accounts as one
exposure matrix, on this machine or on Ray: the same seed gives the same figures on both.
A failed epoch keeps the previous one; past ``stale_after_s`` it is stale and authorisations
are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aggregator.accounts import (
    account_reasons,
    check_columns,
    policy_of,
    portfolio_of,
    report_json,
    risk_model_hash,
    scenario_model,
)
from aggregator.authorize import AccountState, consumed_nonces
from aggregator.errors import AggregatorError
from aggregator.margin import MarginPolicy, ScenarioSet, TailFigures, figures_of
from aggregator.store import Store
from aggregator.valuation import value_portfolio
from aggregator.world import World, read_world
from chains.config import OmnimarginConfig
from montecarlo import RiskProblem, run_risk
from montecarlo.engine import Executor, RiskResult
from montecarlo.models import ScenarioModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Epoch:
    """One complete epoch: the reads, the scenarios and every known account's state."""

    number: int
    taken_at: float  # wall time the snapshot started
    finished_at: float
    world: World
    scen: ScenarioSet
    accounts: dict[str, AccountState]
    read_s: float
    compute_s: float

    def blocks(self) -> dict[str, int | None]:
        return {str(s.chain_id): s.block_number for s in self.world.snapshots}

    def info(self, now: float, stale_after_s: float) -> dict[str, Any]:
        """What every response says of the epoch it was served from."""
        age = max(now - self.taken_at, 0.0)
        return {
            "number": self.number,
            "snapshot_hash": self.world.snapshot_hash,
            "blocks": self.blocks(),
            "taken_at": self.taken_at,
            "age_s": age,
            "stale": age > stale_after_s,
        }


@dataclass
class _Model:
    """The scenario model and set, kept while the policy and the universe stay the same."""

    model: ScenarioModel
    scen: ScenarioSet
    hash: str


def _tails(result: RiskResult, i: int) -> TailFigures:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return TailFigures(
        float(result.var[i]),
        float(result.es[i]),
        num(result.var_stderr[i]),
        num(result.es_stderr[i]),
    )


def compute_accounts(
    world: World,
    accounts: Iterable[str],
    model: _Model,
    policy: MarginPolicy,
    ttl: int,
    executor: Executor,
    reserved: dict[str, float],
) -> dict[str, AccountState]:
    """Every account's margin on the epoch's scenarios: one engine run for all of them (MM,
    with ES contributions), one more for IM unless IM is a multiple of MM."""
    names = list(accounts)
    if not names:
        return {}
    scen = model.scen
    pfs = [portfolio_of(world, a) for a in names]
    for pf in pfs:
        check_columns(pf, scen.columns)
    vals = [value_portfolio(pf, world.prices) for pf in pfs]
    E = np.stack(
        [scen.vector({c: x for c, x in v.exposures.items() if x}) for v in vals], axis=1
    )  # (n, A)

    def run(alpha: float, components: bool) -> RiskResult:
        problem = RiskProblem(model.model, E, alpha, policy.scenarios, policy.seed)
        return run_risk(problem, executor=executor, components=components)

    mm = run(policy.mm_alpha, True)
    im = mm if policy.im_multiplier is not None else run(policy.im_alpha, False)
    assert mm.components is not None
    col = {c: mm.assets.index(c) for c in scen.columns}
    out: dict[str, AccountState] = {}
    for i, (name, pf, val) in enumerate(zip(names, pfs, vals, strict=True)):
        mm_t, im_t = _tails(mm, i), _tails(im, i)
        im_value = max(mm_t.es, 0.0) * policy.im_multiplier if policy.im_multiplier else None
        exposed = {c for c, x in val.exposures.items() if x}
        by_column = {c: float(mm.components[i, col[c]]) for c in exposed}
        figures = figures_of(
            val,
            mm_t,
            im_t,
            max(im_t.es, 0.0) if im_value is None else im_value,
            by_column,
            reserved.get(name, 0.0),
            account_reasons(world, name),
        )
        report = report_json(world, pf, figures, policy, model.hash)
        out[name] = AccountState(world, scen, policy, ttl, report, figures, E[:, i].copy())
    return out


@dataclass
class EpochRunner:
    """Takes epochs in the background and holds the latest complete one.

    ``accounts``: the known accounts (the config's and any asked for since); an account asked
    for that is not yet known is added and appears from the next epoch on.
    """

    cfg: OmnimarginConfig
    store: Store
    executor: Executor
    interval_s: float = 10.0
    stale_after_s: float = 60.0
    read_timeout_s: float = 30.0
    accounts: set[str] = field(default_factory=set)
    on_epoch: Callable[[Epoch], None] | None = None
    current: Epoch | None = None
    last_error: str | None = None
    failures: int = 0
    _model: _Model | None = None
    _number: int = 0
    _wake: asyncio.Event | None = None

    def watch(self, account: str) -> None:
        if account not in self.accounts:
            self.accounts.add(account)
            if self._wake is not None:
                self._wake.set()

    def model(self, policy: MarginPolicy) -> _Model:
        if self._model is None:
            m = scenario_model(self.cfg, policy)
            scen = ScenarioSet.draw(m, policy)
            self._model = _Model(m, scen, risk_model_hash(scen, policy))
        return self._model

    async def step(self) -> Epoch:
        """Take one epoch and swap it in (the previous one stays if this raises)."""
        policy, ttl = policy_of(self.cfg)
        accounts = sorted(self.accounts)
        taken = time.time()
        # chain I/O and decoding on a thread of its own: the server's event loop stays free
        world = await asyncio.to_thread(asyncio.run, self._read(accounts, policy))
        read_s = time.time() - taken
        now = int(time.time())
        reserved = {a: float(self.store.reserved(a, now)) for a in accounts}
        model = await asyncio.to_thread(self.model, policy)
        states = await asyncio.to_thread(
            compute_accounts, world, accounts, model, policy, ttl, self.executor, reserved
        )
        self._number += 1
        done = time.time()
        epoch = Epoch(
            self._number, taken, done, world, model.scen, states, read_s, done - taken - read_s
        )
        self.current = epoch  # one reference swap: readers see the old or the new epoch
        self.last_error = None
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        return epoch

    async def _read(self, accounts: list[str], policy: MarginPolicy) -> World:
        world = await read_world(
            self.cfg, accounts, timeout_s=self.read_timeout_s, tolerance=policy.price_tolerance
        )
        await self._settle(accounts)
        return world

    async def _settle(self, accounts: list[str]) -> None:
        """Release reservations whose positions reached their chain (the gate used the nonce)."""
        for a in accounts:
            pending = [r for r in self.store.reservations(a) if r.state == "active"]
            if pending:
                self.store.mark_filled(a, await consumed_nonces(self.cfg, a, pending))

    async def run(self) -> None:
        """Epochs forever, ``interval_s`` apart (sooner when a new account is watched)."""
        self._wake = asyncio.Event()
        while True:
            started = time.monotonic()
            try:
                epoch = await self.step()
                log.info(
                    "epoch %d: %d accounts, read %.2f s, compute %.2f s",
                    epoch.number,
                    len(epoch.accounts),
                    epoch.read_s,
                    epoch.compute_s,
                )
            except (AggregatorError, OSError, ValueError, RuntimeError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("epoch failed, keeping the previous one: %s", self.last_error)
            wait = max(self.interval_s - (time.monotonic() - started), 0.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
