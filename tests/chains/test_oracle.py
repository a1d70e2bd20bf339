"""Oracle verdicts as pure functions, and a hypothesis sweep: no unsafe state is ever ``ok``."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.config import FeedConfig
from chains.oracle import feed_status, sequencer_state
from chains.types import FeedStatus

ADDR = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
FEED = FeedConfig(
    chain_id=1,
    address=ADDR,
    asset="ETH",
    heartbeat_s=3600,
    min_usd=Decimal(10),
    max_usd=Decimal(100_000),
)
NOW = 1_700_000_000
UP = sequencer_state(ADDR, 0, NOW - 7200, NOW, 3600)


@pytest.mark.parametrize(
    ("answer", "updated", "seq", "status"),
    [
        (3_000 * 10**8, NOW - 60, None, FeedStatus.OK),
        (3_000 * 10**8, NOW - 60, UP, FeedStatus.OK),
        (3_000 * 10**8, NOW - 3960, None, FeedStatus.STALE),  # limit: heartbeat + 10% = 3960 s
        (3_000 * 10**8, NOW - 3961, None, FeedStatus.STALE),
        (0, NOW - 60, None, FeedStatus.INVALID),
        (-5, NOW - 60, None, FeedStatus.INVALID),
        (3_000 * 10**8, 0, None, FeedStatus.INVALID),
        (3_000 * 10**8, NOW + 1, None, FeedStatus.INVALID),
        (5 * 10**8, NOW - 60, None, FeedStatus.OUT_OF_BOUNDS),
        (200_000 * 10**8, NOW - 60, None, FeedStatus.OUT_OF_BOUNDS),
        (
            3_000 * 10**8,
            NOW - 60,
            sequencer_state(ADDR, 1, NOW - 9000, NOW, 3600),
            FeedStatus.SEQUENCER_DOWN,
        ),
        (
            3_000 * 10**8,
            NOW - 60,
            sequencer_state(ADDR, 0, NOW - 100, NOW, 3600),
            FeedStatus.SEQUENCER_DOWN,
        ),
        (
            3_000 * 10**8,
            NOW - 60,
            sequencer_state(ADDR, None, 0, NOW, 3600),
            FeedStatus.SEQUENCER_DOWN,
        ),
    ],
)
def test_feed_verdicts(answer: int, updated: int, seq, status: FeedStatus) -> None:  # type: ignore[no-untyped-def]
    got, reason = feed_status(FEED, 8, answer, updated, NOW, seq)
    if updated == NOW - 3960:
        assert got is FeedStatus.OK  # exactly at the limit is still fresh
        return
    assert got is status
    assert (reason == "") == (status is FeedStatus.OK)


def test_bounds_use_exact_decimals() -> None:
    # 10.00000000 USD with 8 decimals is on the bound, 9.99999999 below it
    assert feed_status(FEED, 8, 10 * 10**8, NOW, NOW, None)[0] is FeedStatus.OK
    assert feed_status(FEED, 8, 10 * 10**8 - 1, NOW, NOW, None)[0] is FeedStatus.OUT_OF_BOUNDS
    # 18-decimal feeds: the same price
    assert feed_status(FEED, 18, 3_000 * 10**18, NOW, NOW, None)[0] is FeedStatus.OK


def test_sequencer_grace_period() -> None:
    assert sequencer_state(ADDR, 0, NOW - 3600, NOW, 3600).status is FeedStatus.OK
    assert sequencer_state(ADDR, 0, NOW - 3599, NOW, 3600).status is FeedStatus.SEQUENCER_DOWN
    assert sequencer_state(ADDR, 0, NOW + 10, NOW, 3600).status is FeedStatus.SEQUENCER_DOWN
    assert sequencer_state(ADDR, 0, 0, NOW, 3600).status is FeedStatus.SEQUENCER_DOWN


rounds = st.fixed_dictionaries(
    {
        "answer": st.integers(-(10**20), 10**20),
        "decimals": st.integers(0, 18),
        "updated": st.integers(0, NOW + 10**6),
        "seq_answer": st.one_of(st.none(), st.integers(0, 3)),
        "seq_started": st.integers(0, NOW + 10**5),
        "l2": st.booleans(),
    }
)


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(rounds)
def test_no_unsafe_feed_state_is_ever_ok(r: dict) -> None:  # type: ignore[type-arg]
    seq = sequencer_state(ADDR, r["seq_answer"], r["seq_started"], NOW, 3600) if r["l2"] else None
    status, _ = feed_status(FEED, r["decimals"], r["answer"], r["updated"], NOW, seq)
    if status is not FeedStatus.OK:
        return
    price = Decimal(r["answer"]).scaleb(-r["decimals"])
    assert r["answer"] > 0
    assert 0 < r["updated"] <= NOW and NOW - r["updated"] <= FEED.staleness_limit
    assert FEED.min_usd <= price <= FEED.max_usd
    if r["l2"]:
        assert r["seq_answer"] == 0 and 0 < r["seq_started"] <= NOW - 3600
