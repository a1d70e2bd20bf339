"""Bridge and depeg risk from the config as jump overlays for the Monte Carlo engine.

Risk columns: an amount exposed to no bridge is its canonical asset (``USDC``); one exposed to
bridges is ``ASSET@BRIDGE`` (``USDC@canonical-arb`` for USDC.e, ``USDC@cctp`` for native USDC in
flight over CCTP), several bridges joined by ``+`` in name order. A column moves with its asset's
price and, on top, loses what its bridges and its asset's depeg lose (DESIGN.md, "Risk model" 4):

* one :class:`montecarlo.models.Jump` per configured bridge, over every column exposed to it:
  probability ``failure_probability`` within the horizon, loss ``loss_given_failure``; one
  shared draw per bridge per scenario, so all its representations fail together;
* one per depeg, over every column of the stablecoin (native, bridged, in flight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from bridge_adapters.canonical import Representation
from bridge_adapters.errors import UnknownBridge
from bridge_adapters.holdings import Holding, Holdings, exact_sum
from chains.config import OmnimarginConfig
from montecarlo.models import Jump

BRIDGE_MARK = "@"
JOIN = "+"


def risk_column(asset: str, bridges: Iterable[str] = ()) -> str:
    """``USDC``, ``USDC@canonical-arb``, ``USDC@canonical-arb+cctp``."""
    names = sorted(set(bridges))
    return asset if not names else f"{asset}{BRIDGE_MARK}{JOIN.join(names)}"


def parse_column(column: str) -> tuple[str, tuple[str, ...]]:
    """``"USDC@canonical-arb+cctp"`` -> ``("USDC", ("canonical-arb", "cctp"))``."""
    asset, _, rest = column.partition(BRIDGE_MARK)
    return asset, tuple(rest.split(JOIN)) if rest else ()


def column_of(holding: Holding) -> str:
    """The risk column of one holding."""
    return risk_column(holding.asset, holding.bridges)


def token_column(rep: Representation) -> str:
    """The risk column of a token held at rest: its asset, with the bridge that issued it
    (what :func:`column_of` gives a balance of that token)."""
    return risk_column(rep.asset, [] if rep.name == "native" else [rep.name])


def quantities_by_column(holdings: Holdings) -> dict[str, Decimal]:
    """The account's exact quantity per risk column, columns sorted."""
    cols: dict[str, list[Decimal]] = {}
    for h in holdings.holdings:
        cols.setdefault(column_of(h), []).append(h.quantity)
    return {c: exact_sum(cols[c]) for c in sorted(cols)}


def column_assets(columns: Sequence[str]) -> Mapping[str, str]:
    """Risk column -> the canonical asset whose price it follows."""
    return {c: parse_column(c)[0] for c in columns}


def jumps_for(config: OmnimarginConfig, risk_assets: Sequence[str]) -> list[Jump]:
    """Jumps over ``risk_assets`` (risk column names): one per configured bridge that some
    column is exposed to (``bridge:NAME``), one per depeg of an asset some column holds
    (``depeg:ASSET``), in config order.

    Raises :class:`UnknownBridge` for a column exposed to a bridge without a ``[[bridges]]``
    entry: its risk would be missing, and missing data never lowers margin.
    """
    parsed = {c: parse_column(c) for c in risk_assets}
    known = {b.name for b in config.bridges}
    for column, (_, bridges) in parsed.items():
        for b in bridges:
            if b not in known:
                raise UnknownBridge(
                    f"risk column {column}: bridge {b!r} has no [[bridges]] entry "
                    "(failure probability and loss unknown)"
                )
    jumps: list[Jump] = []
    for bridge in config.bridges:
        exposed = tuple(c for c, (_, bs) in parsed.items() if bridge.name in bs)
        if exposed:
            jumps.append(
                Jump(
                    f"bridge:{bridge.name}",
                    bridge.failure_probability,
                    bridge.loss_given_failure,
                    exposed,
                )
            )
    for depeg in config.depegs:
        exposed = tuple(c for c, (asset, _) in parsed.items() if asset == depeg.asset)
        if exposed:
            jumps.append(Jump(f"depeg:{depeg.asset}", depeg.probability, depeg.loss, exposed))
    return jumps
