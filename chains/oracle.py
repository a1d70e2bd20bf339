"""Checks on oracle rounds (DESIGN.md, "Chain reads"; Chainlink's data-feed and L2 sequencer
uptime feed documentation).

Pure functions of the round and the pinned block's time. The order matters: an invalid answer
is invalid whatever its age; a stale one is stale whatever its value. ``answeredInRound`` is not
used (deprecated by Chainlink).
"""

from __future__ import annotations

from decimal import Decimal

from chains.config import FeedConfig
from chains.types import Address, FeedStatus, SequencerState

SEQUENCER_UP = 0


def feed_status(
    cfg: FeedConfig,
    decimals: int,
    answer: int,
    updated_at: int,
    now: int,
    sequencer: SequencerState | None,
) -> tuple[FeedStatus, str]:
    """The verdict on one feed round read at a block with timestamp ``now``."""
    if answer <= 0:
        return FeedStatus.INVALID, f"answer {answer} is not positive"
    if updated_at == 0:
        return FeedStatus.INVALID, "updatedAt is 0 (round not complete)"
    if updated_at > now:
        return FeedStatus.INVALID, f"updatedAt {updated_at} is after the block time {now}"
    age = now - updated_at
    if age > cfg.staleness_limit:
        return FeedStatus.STALE, f"last update {age} s ago, limit {cfg.staleness_limit} s"
    price = Decimal(answer).scaleb(-decimals)
    if not cfg.min_usd <= price <= cfg.max_usd:
        return FeedStatus.OUT_OF_BOUNDS, f"price {price} outside [{cfg.min_usd}, {cfg.max_usd}]"
    if sequencer is not None and sequencer.status is not FeedStatus.OK:
        return FeedStatus.SEQUENCER_DOWN, sequencer.reason
    return FeedStatus.OK, ""


def sequencer_state(
    feed_address: str, answer: int | None, started_at: int, now: int, grace_s: int
) -> SequencerState:
    """An L2 sequencer uptime feed: down, up inside the grace period, or up and trusted.

    ``answer`` None means the feed could not be read: the sequencer is then treated as down,
    since no new risk may rest on an L2 whose status is unknown.
    """
    feed = Address(feed_address)
    if answer is None:
        return SequencerState(
            feed, False, 0, FeedStatus.SEQUENCER_DOWN, "sequencer feed unreadable"
        )
    if answer != SEQUENCER_UP:
        return SequencerState(
            feed, False, started_at, FeedStatus.SEQUENCER_DOWN, "sequencer is down"
        )
    if started_at == 0 or started_at > now:
        return SequencerState(
            feed,
            True,
            started_at,
            FeedStatus.SEQUENCER_DOWN,
            f"sequencer startedAt {started_at} invalid",
        )
    if now - started_at < grace_s:
        return SequencerState(
            feed,
            True,
            started_at,
            FeedStatus.SEQUENCER_DOWN,
            f"sequencer up for {now - started_at} s, grace period {grace_s} s",
        )
    return SequencerState(feed, True, started_at, FeedStatus.OK, "")
