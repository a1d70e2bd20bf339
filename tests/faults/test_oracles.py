"""Oracle faults: bad rounds pushed to the devnet's real price feeds (stale, 0, negative, in the
future, outside the bounds) and L2 sequencer states (down, up inside the grace period). The
verdict comes back per feed with its reason; an asset with no trustworthy feed counts zero as
collateral and gets no new position; an L2 whose sequencer is not trusted takes no new risk.
Then a hypothesis run over random feed states of all nine feeds and both sequencers, through
the real valuation and decision code: no unsafe state ever yields collateral value or an
approval."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.accounts import margin_report, policy_of, portfolio_of, scenario_set
from aggregator.attestation import load_signer_key
from aggregator.authorize import AccountState, Request, decide
from aggregator.prices import price_assets
from aggregator.store import Store
from aggregator.valuation import value_portfolio
from aggregator.world import World
from chains.config import FeedConfig, OmnimarginConfig, load_config, parse_config
from chains.devnet_control import set_feed, set_sequencer
from chains.oracle import feed_status, sequencer_state
from chains.types import ChainSnapshot, FeedStatus
from tests.faults.helpers import ACCOUNT, ARB, BASE, ETH, decision, world
from tests.reliability import ForTest

FAMILY = "Oracles"
CHAINS = (ETH, ARB, BASE)
DEVNET_PRICE = Decimal("2589.82")


@pytest.fixture(scope="module")
def own(devnet_factory: Any) -> OmnimarginConfig:
    """A devnet of this module's own: the tests push rounds to its feeds."""
    return load_config(devnet_factory(3).config_path)


def _now(cfg: OmnimarginConfig) -> int:
    return int(world(cfg).snapshot(ETH).timestamp or 0)


STATES: dict[str, tuple[dict[str, Any], FeedStatus]] = {
    "stale beyond its limit": ({"answer": 3_000 * 10**8, "updated_at": "stale"}, FeedStatus.STALE),
    "answer 0": ({"answer": 0}, FeedStatus.INVALID),
    "answer negative": ({"answer": -250_000_000_000}, FeedStatus.INVALID),
    "updatedAt 0": ({"answer": 3_000 * 10**8, "updated_at": 0}, FeedStatus.INVALID),
    "timestamp in the future": (
        {"answer": 3_000 * 10**8, "updated_at": "future"},
        FeedStatus.INVALID,
    ),
    "below its bounds": ({"price": Decimal("5")}, FeedStatus.OUT_OF_BOUNDS),
    "above its bounds": ({"price": Decimal("250000")}, FeedStatus.OUT_OF_BOUNDS),
}


@pytest.mark.parametrize("state", list(STATES))
def test_a_bad_round_on_every_feed_of_an_asset(
    own: OmnimarginConfig, tmp_path: Path, reliability: ForTest, state: str
) -> None:
    kwargs, expected = STATES[state]
    now = _now(own)
    when = {"future": now + 3600, "stale": now - 100_000}
    args = {k: when.get(v, v) if k == "updated_at" else v for k, v in kwargs.items()}
    before = decision(own, world(own), tmp_path / "ok.sqlite", market="ETH")
    try:
        for cid in CHAINS:
            asyncio.run(set_feed(own, cid, "ETH", **args))
        w = world(own)
        d = decision(own, w, tmp_path / "bad.sqlite", market="ETH")
        d_btc = decision(own, w, tmp_path / "btc.sqlite", market="BTC")
    finally:
        for cid in CHAINS:
            asyncio.run(set_feed(own, cid, "ETH", price=DEVNET_PRICE))
    problems = []
    for snap in w.snapshots:
        (eth,) = [p for p in snap.prices if p.asset == "ETH"]
        if eth.status is not expected or not eth.reason:
            problems.append(f"chain {snap.chain_id}: {eth.status} {eth.reason!r}")
        if {p.status for p in snap.prices if p.asset != "ETH"} != {FeedStatus.OK}:
            problems.append(f"chain {snap.chain_id}: another feed changed")
    if w.prices["ETH"].price is not None or w.prices["ETH"].collateral_price is not None:
        problems.append(f"ETH priced at {w.prices['ETH'].price}")
    if not d["equity"] < before["equity"]:  # the ETH collateral counts zero, never more
        problems.append(f"equity {d['equity']} not below {before['equity']}")
    if d["approved"] or "ETH: no trustworthy price" not in d["reason"]:
        problems.append(f"ETH position: {d['approved']} {d['reason']}")
    if d_btc["approved"] or "ETH" not in d_btc["reason"]:  # margin resting on a missing price
        problems.append(f"BTC position: {d_btc['approved']} {d_btc['reason']}")
    reliability.record(
        FAMILY,
        state,
        f"a round {state} pushed to the ETH feed of all three chains",
        f"feed {expected.value} with its reason; ETH collateral counts zero; no authorisation",
        1,
        int(bool(problems)),
    )
    assert before["approved"] and not problems, problems


@pytest.mark.parametrize("state", ["sequencer down", "sequencer up inside the grace period"])
def test_the_target_l2s_sequencer(
    own: OmnimarginConfig, tmp_path: Path, reliability: ForTest, state: str
) -> None:
    now = _now(own)
    up, since = (False, now - 10) if state == "sequencer down" else (True, now - 60)
    try:
        asyncio.run(set_sequencer(own, ARB, up=up, since=since))
        w = world(own)
        d = decision(own, w, tmp_path / "s.sqlite", market="ETH", chain_id=ARB)
        d_base = decision(own, w, tmp_path / "b.sqlite", market="ETH", chain_id=BASE)
    finally:
        asyncio.run(set_sequencer(own, ARB, up=True, since=now - 7200))
    snap = w.snapshot(ARB)
    problems = []
    if snap.sequencer is None or snap.sequencer.up is not up:
        problems.append(f"sequencer read as {snap.sequencer}")
    if {p.status for p in snap.prices} != {FeedStatus.SEQUENCER_DOWN}:
        problems.append(f"chain 2 feeds: {[p.status for p in snap.prices]}")
    if state != "sequencer down" and "grace" not in snap.prices[0].reason:
        problems.append(f"reason {snap.prices[0].reason!r}")
    if {p.status for p in w.snapshot(ETH).prices} != {FeedStatus.OK}:
        problems.append("L1 feeds affected")
    if d["approved"] or "devnet-arb" not in d["reason"]:
        problems.append(f"authorised on chain 2: {d['reason']}")
    if not d_base["approved"]:  # the other chains' prices still stand
        problems.append(f"refused on chain 3: {d_base['reason']}")
    reliability.record(
        FAMILY,
        state,
        f"chain 2's sequencer uptime feed set {'down' if not up else 'up 60 s ago'} "
        "(grace period 3,600 s)",
        "chain 2's feeds sequencer_down with the reason; no authorisation on chain 2; "
        "chains 1 and 3 unaffected",
        1,
        int(bool(problems)),
    )
    assert not problems, problems


# --- hypothesis: random feed states through the real valuation and decision -----------------

ANSWERS = st.one_of(
    st.integers(-(10**12), 0),  # never valid
    st.integers(1, 10**20),  # any size: out of bounds or not
    st.sampled_from([1, 10 * 10**8, 10 * 10**8 - 1, 3_000 * 10**8]),
)


@st.composite
def bad_feed(draw: st.DrawFn, now: int, limit: int) -> tuple[int, int]:
    """Any round at all: most are unsafe (answer, age, timestamp), some by a hair."""
    answer = draw(ANSWERS)
    updated = draw(
        st.one_of(
            st.just(0),
            st.integers(now - limit - 10**6, now + 10**6),
            st.integers(now - limit - 2, now - limit + 2),  # around the staleness limit
            st.integers(now - 2, now + 2),  # around now
        )
    )
    return answer, updated


@st.composite
def good_feed(draw: st.DrawFn, answer: int, now: int, limit: int) -> tuple[int, int]:
    """A fresh round within 0.5% of the devnet's answer."""
    return answer * draw(st.integers(995, 1005)) // 1000, draw(st.integers(now - limit, now))


@st.composite
def bad_sequencer(draw: st.DrawFn, now: int, grace: int) -> tuple[int | None, int]:
    answer = draw(st.one_of(st.none(), st.integers(0, 2)))
    started = draw(
        st.one_of(st.just(0), st.integers(now - 2 * grace, now + 100), st.just(now - grace))
    )
    return answer, started


def _safe(cfg: FeedConfig, decimals: int, answer: int, updated: int, now: int) -> bool:
    """The rules written out once more, independently of chains.oracle."""
    price = Fraction(answer, 10**decimals)
    return (
        answer > 0
        and 0 < updated <= now
        and now - updated <= cfg.staleness_limit
        and Fraction(cfg.min_usd) <= price <= Fraction(cfg.max_usd)
    )


class Template:
    """A real world read from the shared devnet, and a cheap scenario set for its decisions."""

    def __init__(self, cfg: OmnimarginConfig) -> None:
        raw = cfg.model_dump(mode="json")
        raw["margin"] = {**(raw["margin"] or {}), "scenarios": 2_000}
        self.cfg = parse_config(raw)
        self.world = world(self.cfg)
        assert all(s.ok and not s.errors for s in self.world.snapshots)
        self.policy, self.ttl = policy_of(self.cfg)
        self.scen = scenario_set(self.cfg, self.policy)
        self.key = load_signer_key(self.cfg.signer)
        self.store_dir = Path(tempfile.mkdtemp(prefix="oracle-fuzz-"))
        self.feeds = {(f.chain_id, f.address): f for f in self.cfg.feeds}

    def state(self, w: World) -> AccountState:
        report, figures = margin_report(w, ACCOUNT, self.scen, self.policy)
        val = value_portfolio(portfolio_of(w, ACCOUNT), w.prices)
        e = self.scen.vector({c: x for c, x in val.exposures.items() if x})
        return AccountState(w, self.scen, self.policy, self.ttl, report, figures, e)


@pytest.fixture(scope="module")
def template(devnet: Any) -> Template:
    return Template(devnet.config)


def _world(t: Template, feeds: list[tuple[int, int]], seqs: list[tuple[int | None, int]]) -> World:
    """The template with every feed round and sequencer replaced, verdicts recomputed."""
    snaps: list[ChainSnapshot] = []
    it, seq_it = iter(feeds), iter(seqs)
    for snap in t.world.snapshots:
        now = int(snap.timestamp or 0)
        chain = t.cfg.chain(snap.chain_id)
        seq = None
        if chain.sequencer_feed is not None:
            answer, started = next(seq_it)
            seq = sequencer_state(
                chain.sequencer_feed, answer, started, now, chain.sequencer_grace_s
            )
        rounds = []
        for p in snap.prices:
            answer, updated = next(it)
            cfg = t.feeds[(snap.chain_id, p.feed)]
            status, reason = feed_status(cfg, p.decimals, answer, updated, now, seq)
            rounds.append(
                dataclasses.replace(
                    p, answer=answer, updated_at=updated, status=status, reason=reason
                )
            )
        snaps.append(dataclasses.replace(snap, prices=tuple(rounds), sequencer=seq))
    return dataclasses.replace(t.world, snapshots=tuple(snaps), prices=price_assets(snaps))


@st.composite
def feed_states(
    draw: st.DrawFn, t: Template
) -> tuple[list[tuple[int, int]], list[tuple[int | None, int]]]:
    """Every feed and sequencer of the template: a few broken at random, the rest healthy (so
    that approvals happen too, and the test could catch a wrong one)."""
    now = int(t.world.snapshot(ETH).timestamp or 0)
    rounds = [p for s in t.world.snapshots for p in s.prices]
    n_seq = sum(1 for c in t.cfg.chains if c.sequencer_feed is not None)
    broken = draw(st.sets(st.integers(0, len(rounds) - 1), max_size=len(rounds)))
    feeds = [
        draw(bad_feed(now, 3960) if i in broken else good_feed(p.answer, now, 3960))
        for i, p in enumerate(rounds)
    ]
    down = draw(st.sets(st.integers(0, n_seq - 1), max_size=n_seq))
    good = st.tuples(st.just(0), st.integers(now - 10**6, now - 3600))
    seqs = [draw(bad_sequencer(now, 3600) if i in down else good) for i in range(n_seq)]
    return feeds, seqs


def _strategy(t: Template) -> st.SearchStrategy[Any]:
    return st.tuples(
        feed_states(t), st.sampled_from(["ETH", "BTC", "LINK"]), st.sampled_from(CHAINS)
    )


def test_no_unsafe_feed_state_yields_value_or_an_approval(
    template: Template, reliability: ForTest
) -> None:
    t = template
    tried = {"cases": 0, "wrong": 0, "approved": 0}
    wrong: list[str] = []

    @settings(
        max_examples=1_000,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_strategy(t))
    def run(
        case: tuple[tuple[list[tuple[int, int]], list[tuple[int | None, int]]], str, int],
    ) -> None:
        (feeds, seqs), market, chain_id = case
        w = _world(t, feeds, seqs)
        problems, approved = _problems(t, w, market, chain_id)
        tried["approved"] += approved
        tried["cases"] += 1
        tried["wrong"] += bool(problems)
        wrong.extend(problems)

    run()
    reliability.record(
        FAMILY,
        "random feed states (hypothesis)",
        f"{tried['cases']:,} random states of all 9 feeds and both sequencers (answers of any "
        "sign and size, updatedAt 0/stale/future/at the limits, sequencer up/down/unreadable "
        "inside and past the grace period), derandomised",
        f"collateral valued only at prices of safe feeds; no approval resting on an unsafe one "
        f"({tried['approved']} cases approved, all on safe data)",
        tried["cases"],
        tried["wrong"],
    )
    assert tried["cases"] >= 1_000 and not wrong, wrong[:10]


def _problems(t: Template, w: World, market: str, chain_id: int) -> tuple[list[str], bool]:
    """What is wrong with the value and the decision given ``w``, and whether it approved."""
    safe: dict[str, list[Fraction]] = {}
    seq_ok = {
        s.chain_id: s.sequencer is None or s.sequencer.status is FeedStatus.OK for s in w.snapshots
    }
    for snap in w.snapshots:
        for p in snap.prices:
            cfg = t.feeds[(snap.chain_id, p.feed)]
            ok = _safe(cfg, p.decimals, p.answer, p.updated_at, int(snap.timestamp or 0))
            if ok and seq_ok[snap.chain_id]:
                safe.setdefault(p.asset, []).append(Fraction(p.answer, 10**p.decimals))
    problems = []
    val = value_portfolio(portfolio_of(w, ACCOUNT), w.prices)
    for v, line in zip(val.line_values, val.portfolio.lines, strict=True):
        if line.kind != "collateral" or not v:
            continue
        prices = safe.get(line.asset, [])
        if not prices:
            problems.append(f"{line.asset} collateral valued {v} with no safe feed")
        elif not min(prices) * line.quantity <= v <= max(prices) * line.quantity:
            problems.append(f"{line.asset} collateral valued {v} outside its safe feeds {prices}")
    store = Store(t.store_dir / "s.sqlite")
    try:
        d = decide(
            t.cfg, t.state(w), Request(ACCOUNT, chain_id, market, Decimal("0.001")), store, t.key
        )
    finally:
        store.close()
    if d["approved"]:
        if not safe.get(market) or not seq_ok[chain_id]:
            problems.append(f"approved {market} on chain {chain_id} without a safe feed/sequencer")
        if any(
            not safe.get(line.asset) for line in val.portfolio.lines if line.kind == "collateral"
        ):
            problems.append("approved while some collateral has no safe price")
    elif not d["reason"]:
        problems.append("refused without a reason")
    return problems, bool(d["approved"])
