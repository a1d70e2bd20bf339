"""Epochs: every few seconds, one snapshot of all chains, one scenario set, every known
account's margin, swapped in at once.

Requests are served from the latest complete epoch and never wait on chain I/O. An epoch runs
in a worker process (reads, valuation, Monte Carlo), and its Monte Carlo goes through the engine
(:func:`montecarlo.run_risk`) with all accounts as one exposure matrix, on this machine or on
Ray: the same seed gives the same figures on both. The server keeps its own copy of the
scenario set (the same draws) for what-if IM of authorisations.
A failed epoch keeps the previous one; past ``stale_after_s`` it is stale and authorisations
are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.accounts import (
    account_reasons,
    check_columns,
    clock_allowance,
    exact_decimal,
    policy_of,
    portfolio_of,
    report_json,
    risk_model_hash,
    scenario_model,
)
from aggregator.authorize import (
    AccountState,
    Locked,
    Positions,
    bears_no_risk,
    gated,
    locked_of,
    perp_sizes,
)
from aggregator.errors import AggregatorError
from aggregator.margin import MarginFigures, MarginPolicy, ScenarioSet, TailFigures, figures_of
from aggregator.portfolio import Portfolio
from aggregator.service.views import fixed_margin_json
from aggregator.store import Store
from aggregator.valuation import value_portfolio
from aggregator.world import World, read_world
from chains.config import OmnimarginConfig
from chains.errors import ChainError
from montecarlo import LocalExecutor, RiskProblem, run_risk
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
    accounts: dict[str, AccountState]  # their ``report`` is the summary (no lines)
    margin_json: dict[str, bytes]  # the margin responses, but the live fields
    portfolios: dict[str, tuple[dict[str, str], dict[str, float]]]  # quantities, USD exposures
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


@dataclass(frozen=True)
class ExecutorSpec:
    """Where an epoch's Monte Carlo runs (built inside the epoch worker process)."""

    kind: str = "local"  # "local" | "ray"
    address: str | None = None
    workers: int | None = None

    def build(self) -> Executor:
        if self.kind == "ray":
            from montecarlo import RayExecutor

            return RayExecutor(address=self.address, workers=self.workers)
        return LocalExecutor(self.workers)


@dataclass(frozen=True)
class AccountResult:
    """One account's figures from the epoch worker (no scenario arrays: the server has them).

    ``summary`` is the margin report without its lines and snapshot; ``margin_json`` the whole
    margin response but the live fields, already checked and serialised (few objects to
    unpickle, none for the cyclic GC to walk)."""

    summary: dict[str, Any]
    margin_json: bytes
    figures: MarginFigures
    exposures: np.ndarray  # (n,) USD per risk column, in the model's column order
    quantities: dict[str, str]  # canonical asset -> exact decimal
    exposures_usd: dict[str, float]  # risk column -> USD
    positions: Positions  # perp sizes per (chain id, market)
    locked: Locked  # units in each vault per (chain id, token): what a withdrawal can take
    no_risk: bool  # no perp line, no debt, every chain read
    pending: Locked  # in the vaults' escape hatches per (chain id, token): seizable


@dataclass(frozen=True)
class EpochJob:
    cfg: OmnimarginConfig
    accounts: tuple[str, ...]
    spec: ExecutorSpec
    read_timeout_s: float
    store_path: str | None


@dataclass(frozen=True)
class EpochResult:
    world: World  # without balances and holdings (every account's figures are in ``accounts``)
    accounts: dict[str, AccountResult]
    model_hash: str
    read_s: float
    compute_s: float


def _tails(result: RiskResult, i: int) -> TailFigures:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return TailFigures(
        float(result.var[i]),
        float(result.es[i]),
        num(result.var_stderr[i]),
        num(result.es_stderr[i]),
    )


def _vector(columns: tuple[str, ...], exposures: dict[str, Fraction]) -> np.ndarray:
    e = np.zeros(len(columns))
    index = {c: i for i, c in enumerate(columns)}
    for col, usd in exposures.items():
        e[index[col]] += float(usd)
    return e


def compute_accounts(
    world: World,
    accounts: Iterable[str],
    model: ScenarioModel,
    policy: MarginPolicy,
    executor: Executor,
    reserved: dict[str, float],
) -> dict[str, AccountResult]:
    """Every account's margin on the epoch's scenarios: one engine run for all of them (MM,
    with ES contributions), one more for IM unless IM is a multiple of MM."""
    names = list(accounts)
    if not names:
        return {}
    columns = tuple(model.assets)
    model_hash = risk_model_hash(model.describe(), policy)
    pfs = [portfolio_of(world, a) for a in names]
    for pf in pfs:
        check_columns(pf, columns)
    vals = [value_portfolio(pf.backing(), world.prices) for pf in pfs]
    E = np.stack([_vector(columns, {c: x for c, x in v.exposures.items() if x}) for v in vals], 1)

    def run(alpha: float, components: bool) -> RiskResult:
        problem = RiskProblem(model, E, alpha, policy.scenarios, policy.seed)
        return run_risk(problem, executor=executor, components=components)

    mm = run(policy.mm_alpha, True)
    im = mm if policy.im_multiplier is not None else run(policy.im_alpha, False)
    assert mm.components is not None
    col = {c: mm.assets.index(c) for c in columns}
    out: dict[str, AccountResult] = {}
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
        report = report_json(world, pf, figures, policy, model_hash)
        summary = {
            k: v
            for k, v in report.items()
            if k not in ("positions", "snapshot", "collateral_locked", "holdings_unlocked")
        }
        out[name] = AccountResult(
            summary,
            fixed_margin_json(report),
            figures,
            E[:, i].copy(),
            _quantities(pf),
            _usd(val.exposures),
            perp_sizes(world, name),
            locked_of(world, name),
            bears_no_risk(pf, world),
            locked_of(world, name, "vault_pending"),
        )
    return out


def _quantities(pf: Portfolio) -> dict[str, str]:
    totals: dict[str, Fraction] = {}
    for ln in pf.lines:
        if ln.kind != "perp":
            sign = -1 if ln.kind == "debt" else 1
            totals[ln.asset] = totals.get(ln.asset, Fraction(0)) + sign * ln.quantity
    return {a: exact_decimal(q) for a, q in sorted(totals.items())}


def _usd(exposures: dict[str, Fraction]) -> dict[str, float]:
    return {c: float(x) for c, x in sorted(exposures.items()) if x}


def _slim(world: World) -> World:
    """The world without balances, positions and holdings: what requests still need
    (statuses, feeds, prices, the snapshot hash) at a fraction of the size."""
    snaps = tuple(replace(s, balances=(), positions=()) for s in world.snapshots)
    return replace(world, snapshots=snaps, holdings={}, inflight=())


_WORKER: dict[ExecutorSpec, Executor] = {}


def take_epoch(job: EpochJob) -> EpochResult:
    """One epoch, in the epoch worker process: read every chain, settle filled reservations,
    run the Monte Carlo for every account. The executor stays up between epochs."""
    policy, _ = policy_of(job.cfg)
    started = time.time()
    world = asyncio.run(
        read_world(job.cfg, job.accounts, job.read_timeout_s, policy.price_tolerance)
    )
    if job.store_path is not None:
        store = Store(Path(job.store_path))
        try:  # the gates at the pinned blocks: what is outstanding, what executed
            world = asyncio.run(gated(job.cfg, world, store, list(job.accounts)))
        finally:
            store.close()
    reserved: dict[str, float] = {}  # the server counts outstanding attestations per request
    read_s = time.time() - started
    executor = _WORKER.get(job.spec)
    if executor is None:
        executor = _WORKER[job.spec] = job.spec.build()
    model = scenario_model(job.cfg, policy)
    states = compute_accounts(world, job.accounts, model, policy, executor, reserved)
    model_hash = risk_model_hash(model.describe(), policy)
    return EpochResult(_slim(world), states, model_hash, read_s, time.time() - started - read_s)


def keep_pnl(epoch: Epoch, budget_bytes: float, block: int = 64) -> int:
    """Compute and keep the accounts' scenario P&L for the epoch (M floats each, as many
    accounts as ``budget_bytes`` allows), a block of accounts per matrix product; what-if IM
    then reads one P&L vector instead of the whole scenario matrix. Returns how many."""
    returns = epoch.scen.returns
    names = list(epoch.accounts)[: int(budget_bytes // (returns.shape[0] * 8))]
    for i in range(0, len(names), block):
        part = names[i : i + block]
        exposures = np.stack([epoch.accounts[a].exposures for a in part])  # (b, n)
        pnl = exposures @ returns.T  # (b, M): each account's P&L one contiguous row
        for j, a in enumerate(part):
            # one dict item swapped at a time: a request sees the state with or without it
            epoch.accounts[a] = replace(epoch.accounts[a], pnl=pnl[j])
    return len(names)


EPOCH_NICENESS = 10


def _background_priority(server_pid: int) -> None:
    """The epoch worker (and the engine processes it starts) yield the CPU to requests, and
    exit when the server is gone, however it went (SIGKILL included). Its parent is the
    forkserver, which itself waits for its children, so the worker watches the server."""
    with contextlib.suppress(OSError):
        os.nice(EPOCH_NICENESS)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(server_pid, 0)
                continue
            except (ProcessLookupError, PermissionError):  # gone (or its pid reused)
                pass
            for child in multiprocessing.active_children():  # the engine's worker processes
                with contextlib.suppress(OSError, ValueError):
                    child.kill()
            os._exit(0)

    threading.Thread(target=watch, name="omnimargin-server-watch", daemon=True).start()


@dataclass
class _Model:
    """The server's scenario set, kept while the policy and the universe stay the same."""

    scen: ScenarioSet
    hash: str


@dataclass
class EpochRunner:
    """Takes epochs in the background and holds the latest complete one.

    Each epoch runs in a worker process of its own (chain reads, decoding, valuation and the
    Monte Carlo), so the server's threads keep the GIL for requests. ``accounts``: the known
    accounts (the config's and any asked for with a key since); an account asked for that is
    not yet known is added and appears from the next epoch on. An account with nothing on any
    chain for ``idle_epochs`` epochs in a row leaves again (:meth:`unwatch_idle`), unless it is
    one of ``pinned`` (the config's) or ``busy`` says it has outstanding reservations.
    """

    cfg: OmnimarginConfig
    store_path: str | None
    spec: ExecutorSpec = field(default_factory=ExecutorSpec)
    interval_s: float = 10.0
    stale_after_s: float = 60.0
    read_timeout_s: float = 30.0
    accounts: set[str] = field(default_factory=set)
    on_epoch: Callable[[Epoch], None] | None = None
    pnl_budget_mb: float = 1024.0
    pinned: frozenset[str] = frozenset()  # never unwatched (the config's accounts)
    idle_epochs: int = 10  # epochs in a row with nothing on any chain before an account leaves
    busy: Callable[[str], bool] | None = None  # has outstanding reservations: stays watched
    on_unwatch: Callable[[int], None] | None = None  # how many accounts left, after an epoch
    current: Epoch | None = None
    last_error: str | None = None
    failures: int = 0
    _model: _Model | None = None
    _number: int = 0
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _pool: ProcessPoolExecutor | None = None
    _idle: dict[str, int] = field(default_factory=dict)  # account -> empty epochs in a row

    def watch(self, account: str, limit: int | None = None) -> bool:
        """Watch ``account`` from the next epoch on; False (nothing added) when ``limit``
        accounts are watched already."""
        if account in self.accounts:
            return True
        if limit is not None and len(self.accounts) >= limit:
            return False
        self.accounts.add(account)
        if self._wake is not None and self._loop is not None:
            # from any thread (authorisations run on worker threads): the event's loop sets it
            self._loop.call_soon_threadsafe(self._wake.set)
        return True

    def unwatch_idle(self, epoch: Epoch) -> list[str]:
        """After an epoch: count the epochs in a row each watched account had nothing on any
        chain (no holdings, in-flight transfers or positions, zero equity) and unwatch those
        at ``idle_epochs`` (never a pinned one, nor one ``busy`` holds). An epoch with a chain
        unread counts for no one: an empty read there proves nothing."""
        if not all(s.ok for s in epoch.world.snapshots):
            return []
        idle = {a: n for a, n in self._idle.items() if a in self.accounts}
        gone: list[str] = []
        for account, state in epoch.accounts.items():
            if account in self.pinned or account not in self.accounts:
                continue
            quantities, exposures = epoch.portfolios[account]
            empty = (
                state.report["equity"] == 0
                and not exposures
                and all(float(q) == 0 for q in quantities.values())
            )
            if not empty:
                idle.pop(account, None)
                continue
            idle[account] = idle.get(account, 0) + 1
            if idle[account] >= self.idle_epochs and not self._busy(account):
                gone.append(account)
        for account in gone:
            self.accounts.discard(account)
            idle.pop(account, None)
        self._idle = idle
        if gone:
            log.info("%d idle accounts unwatched", len(gone))
            if self.on_unwatch is not None:
                self.on_unwatch(len(gone))
        return gone

    def _busy(self, account: str) -> bool:
        if self.busy is None:
            return False
        try:
            return self.busy(account)
        except Exception as exc:  # the store unreadable: keep watching
            log.warning("reservations of an idle account unreadable, kept: %s", exc)
            return True

    def model(self, policy: MarginPolicy) -> _Model:
        if self._model is None:
            scen = ScenarioSet.draw(scenario_model(self.cfg, policy), policy)
            self._model = _Model(scen, risk_model_hash(scen, policy))
        return self._model

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["aggregator.service.epochs"])
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_background_priority,
                initargs=(os.getpid(),),
            )
        return self._pool

    def close(self) -> None:
        """Stop the epoch worker now (an epoch in progress is abandoned, not awaited)."""
        if self._pool is not None:
            processes = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                with contextlib.suppress(OSError, ValueError):
                    p.kill()
            self._pool = None

    async def step(self) -> Epoch:
        """Take one epoch and swap it in (the previous one stays if this raises)."""
        policy, ttl = policy_of(self.cfg)
        allowance = clock_allowance(self.cfg)
        job = EpochJob(
            self.cfg, tuple(sorted(self.accounts)), self.spec, self.read_timeout_s, self.store_path
        )
        taken = time.time()
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._worker(), take_epoch, job)
        except BrokenProcessPool as exc:
            self._pool = None  # a new worker next time
            raise RuntimeError(f"epoch worker died ({exc})") from None
        model = await asyncio.to_thread(self.model, policy)
        if result.model_hash != model.hash:
            raise RuntimeError(
                f"epoch worker calibrated model {result.model_hash}, the server {model.hash}"
            )
        states = {
            a: AccountState(
                result.world,
                model.scen,
                policy,
                ttl,
                r.summary,
                r.figures,
                r.exposures,
                positions=r.positions,
                allowance_s=allowance,
                locked=r.locked,
                no_risk=r.no_risk,
                pending=r.pending,
            )
            for a, r in result.accounts.items()
        }
        self._number += 1
        epoch = Epoch(
            self._number,
            taken,
            time.time(),
            result.world,
            model.scen,
            states,
            {a: r.margin_json for a, r in result.accounts.items()},
            {a: (r.quantities, r.exposures_usd) for a, r in result.accounts.items()},
            result.read_s,
            result.compute_s,
        )
        # the P&L before the swap: no request of this epoch pays for the matrix product
        await asyncio.to_thread(keep_pnl, epoch, self.pnl_budget_mb * 2**20)
        self.current = epoch  # one reference swap: readers see the old or the new epoch
        self.unwatch_idle(epoch)
        # the epoch's objects out of the cyclic GC's way: no full collection walks them during
        # requests (they hold no cycles; reference counting frees them with the epoch)
        gc.freeze()
        self.last_error = None
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        return epoch

    async def run(self) -> None:
        """Epochs forever, ``interval_s`` apart (sooner when a new account is watched)."""
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
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
            except (AggregatorError, OSError, ValueError, RuntimeError, ChainError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("epoch failed, keeping the previous one: %s", self.last_error)
            wait = max(self.interval_s - (time.monotonic() - started), 0.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
