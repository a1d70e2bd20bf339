"""Valuation of a portfolio at oracle prices (DESIGN.md, "Margin"), exactly, failing closed.

equity = collateral value + perp P&L (unrealised and realised) - debt. Collateral whose asset
has no ``ok`` price counts zero; diverged assets are valued at their lowest ``ok`` price. A perp
position whose asset has no price cannot be valued (its realised loss still counts): the
portfolio is degraded and no new risk is authorised on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from aggregator.portfolio import Line, Portfolio
from aggregator.prices import AssetPrice, PriceStatus


@dataclass(frozen=True)
class Valuation:
    """USD figures of one portfolio, exact.

    exposures : risk column -> USD exposure (collateral value and perp notional, debts negative).
    line_values : the USD value each line adds to equity, in the order of ``portfolio.lines``.
    reasons : why the valuation is degraded (empty when it is not).
    """

    portfolio: Portfolio
    collateral: Fraction
    perp_pnl: Fraction
    debt: Fraction
    exposures: dict[str, Fraction]
    line_values: tuple[Fraction, ...]
    line_exposures: tuple[Fraction, ...]
    reasons: tuple[str, ...]
    unpriced: tuple[str, ...] = ()  # assets of lines that have no trustworthy price

    @property
    def unknown(self) -> bool:
        """Health cannot be known: a position or a debt, and some line without a price (its
        value is not zero, only unknown; never a reason to call it healthy or liquidatable)."""
        return bool(self.unpriced) and any(
            ln.kind in ("perp", "debt") for ln in self.portfolio.lines
        )

    @property
    def equity(self) -> Fraction:
        return self.collateral + self.perp_pnl - self.debt

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)


def value_portfolio(pf: Portfolio, prices: Mapping[str, AssetPrice]) -> Valuation:
    collateral = perp_pnl = debt = Fraction(0)
    exposures: dict[str, Fraction] = {}
    values: list[Fraction] = []
    loads: list[Fraction] = []
    reasons: list[str] = []
    unpriced: list[str] = []
    for line in pf.lines:
        price = prices.get(line.asset)
        value, load, why = _value_line(line, price)
        if why and why not in reasons:
            reasons.append(why)
        if (price is None or price.price is None) and line.asset not in unpriced:
            unpriced.append(line.asset)
        if line.kind == "collateral":
            collateral += value
        elif line.kind == "perp":
            perp_pnl += value
        else:
            debt += -value
        values.append(value)
        loads.append(load)
        exposures[line.column] = exposures.get(line.column, Fraction(0)) + load
    return Valuation(
        pf,
        collateral,
        perp_pnl,
        debt,
        exposures,
        tuple(values),
        tuple(loads),
        tuple(reasons),
        tuple(unpriced),
    )


def _value_line(line: Line, price: AssetPrice | None) -> tuple[Fraction, Fraction, str]:
    """(equity contribution, risk exposure, reason if degraded) of one line."""
    if price is None or price.price is None or price.collateral_price is None:
        status = "no price feed" if price is None else price.reason
        if line.kind == "collateral":
            return Fraction(0), Fraction(0), f"{line.asset}: {status}; counted as zero collateral"
        # a loss already realised stays counted (never more margin for a missing price)
        realized = min(line.realized, Fraction(0))
        return realized, Fraction(0), f"{line.asset}: {status}; its {line.kind} cannot be valued"
    why = ""
    if price.status is PriceStatus.DIVERGED:
        why = f"{line.asset}: {price.reason}; valued at the lower price"
    if line.kind == "collateral":
        value = line.quantity * price.collateral_price
        return value, value, why
    if line.kind == "debt":
        value = line.quantity * max(price.price, price.collateral_price)  # a debt at the higher
        return -value, -value, why
    entry = line.entry_price if line.entry_price is not None else price.price
    pnl = line.quantity * (price.price - entry) + line.realized
    return pnl, line.quantity * price.price, why
