"""An account's portfolio: what it holds where, in exact units, with provenance.

Lines come from the chain snapshots (through ``bridge_adapters``' holdings), from perp positions
and from off-chain venue balances. Quantities are exact fractions of a unit (raw integer / 10^d);
nothing here is priced yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

LineKind = Literal["collateral", "perp", "debt"]


@dataclass(frozen=True)
class Line:
    """One holding or position.

    ``column`` is the risk factor it loads on: the canonical asset (``"USDC"``) or, for a
    representation that carries a bridge's risk, ``"USDC@canonical-arb"``. ``quantity`` is in
    units of the asset; a perp's is its signed size, a debt's is positive (it is subtracted).
    """

    kind: LineKind
    asset: str
    column: str
    quantity: Fraction
    chain_id: int | None  # None for an off-chain venue
    source: str  # "vault", "erc20_wallet", "erc4626", "in_flight", "perp", "venue:NAME"
    provenance: tuple[tuple[str, str], ...] = ()
    entry_price: Fraction | None = None
    in_flight: bool = False
    realized: Fraction = Fraction(0)  # a perp's realised P&L, USD (equity, no exposure)
    locked: bool = False  # collateral that cannot leave without the engine's consent

    @property
    def backs_margin(self) -> bool:
        """Perps and debts always count; collateral only when locked (docs/ARCHITECTURE.md,
        "Collateral that cannot leave")."""
        return self.kind != "collateral" or self.locked


@dataclass(frozen=True)
class Portfolio:
    account: str
    lines: tuple[Line, ...] = field(default_factory=tuple)

    def columns(self) -> tuple[str, ...]:
        """Risk columns, sorted (the engine draws in name order anyway)."""
        return tuple(sorted({ln.column for ln in self.lines}))

    def backing(self) -> Portfolio:
        """The lines margin counts: every perp and debt, the locked collateral."""
        return Portfolio(self.account, tuple(ln for ln in self.lines if ln.backs_margin))

    def unlocked(self) -> tuple[Line, ...]:
        """Holdings that are exposure only (they can leave at any time)."""
        return tuple(ln for ln in self.lines if not ln.backs_margin)

    def with_line(self, line: Line) -> Portfolio:
        return Portfolio(self.account, (*self.lines, line))
