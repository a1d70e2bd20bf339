"""Oracle verdicts as pure functions (the random sweep through valuation and decisions is in
tests/faults/test_oracles.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

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
