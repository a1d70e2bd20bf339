"""Prices, valuation and margin maths without a chain: exact where money is, consistent where
the scenarios are."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from aggregator.history import load_history
from aggregator.margin import (
    MarginPolicy,
    ScenarioSet,
    column_model,
    im_with_position,
    margin_of,
)
from aggregator.portfolio import Line, Portfolio
from aggregator.prices import PriceStatus, median, price_assets
from aggregator.valuation import value_portfolio
from chains.types import ChainId, ChainSnapshot, ChainStatus, FeedRound, FeedStatus
from montecarlo import Jump

F = Fraction


def _snap(cid: int, prices: dict[str, tuple[int, FeedStatus]]) -> ChainSnapshot:
    rounds = tuple(
        FeedRound(a, "0x" + "11" * 20, ans, 8, 1, 0, 1, st)  # type: ignore[arg-type]
        for a, (ans, st) in prices.items()
    )
    return ChainSnapshot(ChainId(cid), f"c{cid}", ChainStatus.OK, prices=rounds)


def test_median_is_exact() -> None:
    assert median([F(1), F(3), F(2)]) == 2
    assert median([F(1), F(2)]) == F(3, 2)


def test_prices_median_divergence_and_missing() -> None:
    ok = FeedStatus.OK
    snaps = [
        _snap(
            1,
            {
                "ETH": (3000_00000000, ok),
                "BTC": (60000_00000000, ok),
                "LINK": (0, FeedStatus.INVALID),
            },
        ),
        _snap(2, {"ETH": (3010_00000000, ok), "BTC": (66000_00000000, ok)}),
        _snap(3, {"ETH": (3020_00000000, ok), "BTC": (61000_00000000, FeedStatus.STALE)}),
    ]
    prices = price_assets(snaps, tolerance=F(2, 100))
    assert prices["ETH"].status is PriceStatus.OK and prices["ETH"].price == 3010
    btc = prices["BTC"]  # stale feed ignored; 60,000 vs 66,000 diverge by 9.5 %
    assert (
        btc.status is PriceStatus.DIVERGED and btc.collateral_price == 60000 and btc.price == 63000
    )
    assert prices["LINK"].status is PriceStatus.MISSING and prices["LINK"].price is None
    assert not btc.usable_for_new_risk and prices["ETH"].usable_for_new_risk


def _line(kind: str, asset: str, qty: Fraction, chain: int | None = 1, **kw: object) -> Line:
    return Line(kind, asset, kw.pop("column", asset), qty, chain, kw.pop("source", "vault"), **kw)  # type: ignore[arg-type]


def test_valuation_is_exact_and_fails_closed() -> None:
    prices = price_assets(
        [_snap(1, {"ETH": (2500_12345678, FeedStatus.OK), "USDC": (99_990000, FeedStatus.OK)})]
    )
    pf = Portfolio(
        "0xabc",
        (
            _line("collateral", "ETH", F(12_345678901234567891, 10**18)),
            _line("collateral", "USDC", F(25_000_123456, 10**6), chain=3),
            _line("collateral", "LINK", F(100)),  # no feed at all
            _line("perp", "ETH", F(-2), entry_price=F(2600)),
        ),
    )
    val = value_portfolio(pf, prices)
    eth = F(2500_12345678, 10**8)
    assert val.collateral == F(12_345678901234567891, 10**18) * eth + F(25_000_123456, 10**6) * F(
        9999, 10**4
    )
    assert val.perp_pnl == -2 * (eth - 2600)
    assert val.equity == val.collateral + val.perp_pnl
    assert val.exposures["ETH"] == F(12_345678901234567891, 10**18) * eth - 2 * eth
    assert val.exposures["LINK"] == 0 and val.degraded
    assert any("LINK" in r and "zero collateral" in r for r in val.reasons)


@pytest.fixture(scope="module")
def scenarios() -> ScenarioSet:
    hist = load_history(["BTC", "ETH", "USDC"])
    policy = MarginPolicy(scenarios=40_000, seed=3)
    columns = ("BTC", "ETH", "USDC", "USDC@canonical-arb")
    jumps = [Jump("canonical-arb", 0.01, 1.0, ("USDC@canonical-arb",))]
    return ScenarioSet.draw(column_model(columns, hist.assets, hist.closes, policy, jumps), policy)


def test_margin_figures_and_breakdowns(scenarios: ScenarioSet) -> None:
    policy = MarginPolicy(scenarios=40_000, seed=3)
    prices = price_assets(
        [
            _snap(
                1,
                {
                    "ETH": (2500_00000000, FeedStatus.OK),
                    "BTC": (95000_00000000, FeedStatus.OK),
                    "USDC": (1_00000000, FeedStatus.OK),
                },
            )
        ]
    )
    pf = Portfolio(
        "0xabc",
        (
            _line("collateral", "ETH", F(10), chain=1),
            _line("collateral", "ETH", F(5), chain=3),
            _line("collateral", "USDC", F(20_000), chain=2, column="USDC@canonical-arb"),
            _line("collateral", "USDC", F(30_000), chain=3),
            _line("perp", "BTC", F(1, 2), chain=2, entry_price=F(95000)),
        ),
    )
    m = margin_of(value_portfolio(pf, prices), scenarios, policy)
    assert m.status == "ok" and m.maintenance_margin > 0
    assert m.initial_margin >= m.maintenance_margin  # ES 99 % >= ES 97.5 %
    assert sum(m.by_asset.values()) == pytest.approx(m.mm.es, rel=1e-9)
    assert sum(m.by_chain.values()) == pytest.approx(m.mm.es, rel=1e-9)
    # ETH's contribution splits 2:1 between chains 1 and 3, like its exposure
    eth_1 = m.by_chain["1"]
    assert m.by_chain["3"] > 0 and eth_1 > 0
    assert m.free_margin == pytest.approx(float(m.equity) - m.initial_margin)
    assert m.health == pytest.approx(float(m.equity) / m.maintenance_margin)


@pytest.mark.parametrize("multiplier", [None, 1.5])
def test_im_of_a_new_position_equals_a_full_recompute(
    scenarios: ScenarioSet, multiplier: float | None
) -> None:
    policy = MarginPolicy(scenarios=40_000, seed=3, im_multiplier=multiplier)
    prices = price_assets(
        [_snap(1, {"ETH": (2500_00000000, FeedStatus.OK), "BTC": (95000_00000000, FeedStatus.OK)})]
    )
    pf = Portfolio("0xabc", (_line("collateral", "ETH", F(10)),))
    val = value_portfolio(pf, prices)
    pnl = scenarios.pnl({c: e for c, e in val.exposures.items() if e})
    size = F(-3, 2)  # a short BTC perp hedges little; a short ETH perp hedges a lot
    for asset, price in (("BTC", 95000), ("ETH", 2500)):
        after = im_with_position(pnl, scenarios, asset, float(size * price), policy)
        full = margin_of(
            value_portfolio(pf.with_line(_line("perp", asset, size, entry_price=F(price))), prices),
            scenarios,
            policy,
        )
        assert after == pytest.approx(full.initial_margin, rel=1e-12)
    base = margin_of(val, scenarios, policy).initial_margin
    hedged = im_with_position(pnl, scenarios, "ETH", float(F(-5) * 2500), policy)
    assert hedged < base


def test_bridged_column_carries_the_bridge_jump(scenarios: ScenarioSet) -> None:
    r = scenarios.returns
    native, bridged = r[:, scenarios.column("USDC")], r[:, scenarios.column("USDC@canonical-arb")]
    wiped = bridged <= -0.999
    assert 0.005 < wiped.mean() < 0.015  # probability 1 % of a total loss
    np.testing.assert_allclose(native[~wiped], bridged[~wiped], rtol=1e-12, atol=1e-15)
