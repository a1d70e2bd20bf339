"""One USD price per canonical asset from the feeds of every chain (DESIGN.md, "Margin").

The price is the median of the asset's ``ok`` feeds across chains, in exact fractions. Feeds
that diverge beyond a tolerance flag the asset as degraded: no new risk on it, and collateral
valued at the lowest ``ok`` price. An asset without any ``ok`` feed has no price: it counts zero
as collateral and is refused as a new position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from chains.types import ChainSnapshot, FeedStatus


class PriceStatus(StrEnum):
    OK = "ok"
    DIVERGED = "diverged"
    MISSING = "missing"


@dataclass(frozen=True)
class FeedPrice:
    chain_id: int
    feed: str
    price: Fraction
    status: FeedStatus
    reason: str


@dataclass(frozen=True)
class AssetPrice:
    """``price`` is what risk uses (the median); ``collateral_price`` what collateral is worth."""

    asset: str
    status: PriceStatus
    price: Fraction | None
    collateral_price: Fraction | None
    feeds: tuple[FeedPrice, ...]
    reason: str = ""

    @property
    def usable_for_new_risk(self) -> bool:
        return self.status is PriceStatus.OK


def median(values: list[Fraction]) -> Fraction:
    """Exact median (the mean of the two middle values for an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def price_assets(
    snapshots: Iterable[ChainSnapshot], tolerance: Fraction = Fraction(2, 100)
) -> dict[str, AssetPrice]:
    """Asset -> price from every feed read in ``snapshots``; unavailable chains give no feeds."""
    feeds: dict[str, list[FeedPrice]] = {}
    for snap in snapshots:
        for p in snap.prices:
            value = Fraction(p.answer, 10**p.decimals) if p.answer > 0 else Fraction(0)
            feeds.setdefault(p.asset, []).append(
                FeedPrice(snap.chain_id, p.feed, value, p.status, p.reason)
            )
    return {asset: _one(asset, rows, tolerance) for asset, rows in sorted(feeds.items())}


def _one(asset: str, rows: list[FeedPrice], tolerance: Fraction) -> AssetPrice:
    ok = [r.price for r in rows if r.status is FeedStatus.OK]
    if not ok:
        why = "; ".join(f"chain {r.chain_id}: {r.status.value} {r.reason}".strip() for r in rows)
        return AssetPrice(
            asset, PriceStatus.MISSING, None, None, tuple(rows), f"no ok feed ({why})"
        )
    mid = median(ok)
    spread = (max(ok) - min(ok)) / mid
    if spread > tolerance:
        reason = (
            f"feeds diverge by {float(spread):.2%} (tolerance {float(tolerance):.2%}): "
            f"{float(min(ok)):.6g} .. {float(max(ok)):.6g}"
        )
        return AssetPrice(asset, PriceStatus.DIVERGED, mid, min(ok), tuple(rows), reason)
    return AssetPrice(asset, PriceStatus.OK, mid, mid, tuple(rows))
