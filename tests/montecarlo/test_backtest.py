"""Backtest statistics against hand-computed values, the Basel table, edge cases and properties;
the rolling forecaster's no-look-ahead rule and its agreement with closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from montecarlo import GaussianModel, InvalidParameter
from montecarlo.backtest import (
    block_windows,
    christoffersen_independence,
    conditional_coverage,
    es_backtest,
    kupiec_pof,
    plus_factor,
    rolling_exceptions,
    traffic_light_zone,
    transition_counts,
    z2_statistic,
)
from montecarlo.forecast import forecast_day, realised_pnl, rolling_forecasts
from montecarlo.qmc import sobol_returns, sobol_size

# --------------------------------------------------------------------------- Kupiec


def test_kupiec_five_exceptions_in_250_days_at_99() -> None:
    # x = 5, n = 250, p = 0.01, x/n = 0.02:
    # ln L0 = 245 ln 0.99 + 5 ln 0.01 = -2.462332 - 23.025851 = -25.488183
    # ln L1 = 245 ln 0.98 + 5 ln 0.02 = -4.949659 - 19.560115 = -24.509774
    # LR = 2 (ln L1 - ln L0) = 1.956818; p = P(chi2_1 > LR) = 2 (1 - Phi(sqrt(LR))) = 0.16185
    r = kupiec_pof(5, 250, 0.99)
    assert r.statistic == pytest.approx(1.95681, abs=1e-4)
    assert r.pvalue == pytest.approx(0.16185, abs=1e-4)
    assert r.dof == 1


def test_kupiec_edge_cases_are_finite() -> None:
    # x = 0: LR = -2 n ln(1 - p) = -500 ln 0.99 = 5.025168; x = n: LR = -2 n ln p
    zero = kupiec_pof(0, 250, 0.99)
    assert zero.statistic == pytest.approx(-500 * math.log(0.99), rel=1e-12)
    assert zero.pvalue == pytest.approx(0.02498, abs=1e-4)
    every = kupiec_pof(250, 250, 0.99)
    assert every.statistic == pytest.approx(-500 * math.log(0.01), rel=1e-12)
    assert every.pvalue == 0.0
    # exactly the expected rate: LR 0, p-value 1
    assert kupiec_pof(10, 1000, 0.99).statistic == pytest.approx(0.0, abs=1e-12)
    assert kupiec_pof(10, 1000, 0.99).pvalue == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("x", "n", "field"), [(3, 0, "observations"), (5, 4, "exceptions"), (-1, 10, "exceptions")]
)
def test_kupiec_rejects_bad_counts(x: int, n: int, field: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        kupiec_pof(x, n, 0.99)
    assert exc.value.field == field


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), frac=st.floats(0, 1), alpha=st.floats(0.5, 0.999))
def test_kupiec_is_a_valid_test(n: int, frac: float, alpha: float) -> None:
    r = kupiec_pof(round(frac * n), n, alpha)
    assert math.isfinite(r.statistic) and r.statistic >= 0.0
    assert 0.0 <= r.pvalue <= 1.0


# --------------------------------------------------------------------------- Christoffersen


def test_christoffersen_clustered_sequence() -> None:
    # 0000111000: n00 = 5, n01 = 1, n10 = 1, n11 = 2 (9 transitions)
    # pi01 = 1/6, pi11 = 2/3, pi = 3/9 = 1/3
    # ln L0 = 6 ln(2/3) + 3 ln(1/3) = -5.728627
    # ln L1 = 5 ln(5/6) + ln(1/6) + ln(1/3) + 2 ln(2/3) = -4.612909
    # LR = 2 (ln L1 - ln L0) = 2.231436; p = 2 (1 - Phi(sqrt(2.231436))) = 0.13523
    hits = [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert transition_counts(hits) == (5, 1, 1, 2)
    r = christoffersen_independence(hits)
    assert r.statistic == pytest.approx(2.231436, abs=1e-5)
    assert r.pvalue == pytest.approx(0.13523, abs=1e-4)


def test_christoffersen_independent_looking_sequence_gives_zero() -> None:
    # 0011000100: n00 = 4, n01 = 2, n10 = 2, n11 = 1; pi01 = pi11 = pi = 1/3, so LR = 0
    r = christoffersen_independence([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert r.statistic == 0.0 and r.pvalue == 1.0


@pytest.mark.parametrize(
    ("hits", "lr"),
    [
        ([0] * 20, 0.0),  # no exception: only state 0 is visited
        ([1] * 20, 0.0),  # all exceptions: only state 1
        ([1], 0.0),  # one day: no transition at all
        # 01010: n01 = 2, n10 = 2, no 1 -> 1; pi01 = 1, pi11 = 0, pi = 1/2:
        # ln L0 = 4 ln(1/2); ln L1 = 0, so LR = 8 ln 2 = 5.545177
        ([0, 1, 0, 1, 0], 8 * math.log(2)),
    ],
)
def test_christoffersen_edge_cases_are_finite(hits: list[int], lr: float) -> None:
    r = christoffersen_independence(hits)
    assert r.statistic == pytest.approx(lr, abs=1e-12)
    assert 0.0 <= r.pvalue <= 1.0


@settings(max_examples=60, deadline=None)
@given(hits=st.lists(st.integers(0, 1), max_size=400))
def test_christoffersen_is_finite_for_any_sequence(hits: list[int]) -> None:
    r = christoffersen_independence(hits)
    assert math.isfinite(r.statistic) and r.statistic >= 0.0
    assert 0.0 <= r.pvalue <= 1.0
    if len(hits) >= 2:
        assert sum(transition_counts(hits)) == len(hits) - 1


def test_conditional_coverage_is_the_sum_with_two_dof() -> None:
    hits = [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    cc = conditional_coverage(hits, 0.9)
    pof, ind = kupiec_pof(3, 10, 0.9), christoffersen_independence(hits)
    assert cc.statistic == pytest.approx(pof.statistic + ind.statistic)
    assert cc.dof == 2
    assert cc.pvalue == pytest.approx(math.exp(-cc.statistic / 2))  # chi2_2 survival


def test_hits_must_be_zero_or_one() -> None:
    with pytest.raises(InvalidParameter):
        christoffersen_independence([0, 2, 1])


# --------------------------------------------------------------------------- Basel


def test_traffic_light_reproduces_the_basel_table() -> None:
    # Basel Committee (1996), Table 2, 250 observations at 99 %
    zones = [traffic_light_zone(x) for x in range(16)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 6
    factors = [plus_factor(x) for x in range(12)]
    assert factors == [0, 0, 0, 0, 0, 0.40, 0.50, 0.65, 0.75, 0.85, 1.0, 1.0]


def test_traffic_light_rule_is_the_binomial_one() -> None:
    # the same cumulative-probability rule scales to other samples: 500 days at 99 % gives
    # green up to 8 (P(X <= 8) = 93.2 %), red from 14 (P(X <= 13) = 99.86 %, P(X <= 14) = 99.95 %)
    zones = [traffic_light_zone(x, 500, 0.99) for x in range(20)]
    assert zones.index("yellow") == 9
    assert zones.index("red") in (15, 16)


def test_rolling_and_block_windows() -> None:
    hits = np.zeros(600, dtype=int)
    hits[[0, 10, 300, 599]] = 1
    rolled = rolling_exceptions(hits, 250)
    assert rolled.shape == (351,)
    # days 0..249 hold two; 11..260 none; 51..300 one; 350..599 one
    assert (rolled[0], rolled[11], rolled[51], rolled[-1]) == (2, 0, 1, 1)
    assert block_windows(600, 250) == [(100, 350), (350, 600)]
    assert rolling_exceptions(hits[:100], 250).size == 0


# --------------------------------------------------------------------------- ES


def test_z2_by_hand() -> None:
    # T = 4, alpha = 0.75 (p = 0.25): one exception, loss 2 with ES 2:
    # Z2 = (2 / 2) / (4 * 0.25) - 1 = 0; a loss of 4 gives (4 / 2) / 1 - 1 = 1
    var, es = np.ones(4), np.full(4, 2.0)
    assert z2_statistic([2, 0, 0, 0], var, es, 0.75) == pytest.approx(0.0)
    assert z2_statistic([4, 0, 0, 0], var, es, 0.75) == pytest.approx(1.0)
    assert z2_statistic([0, 0, 0, 0], var, es, 0.75) == pytest.approx(-1.0)


def test_es_backtest_calibrated_forecasts_pass_and_low_es_fails() -> None:
    # losses drawn from the forecast distribution itself (N(0, 1) each day) pass; the same
    # losses scored against forecasts scaled down by 30 % fail
    rng = np.random.default_rng(7)
    t, m, alpha = 1000, 20_000, 0.975
    sims = rng.standard_normal((t, m))
    k = math.ceil((1 - alpha) * m)
    tails = -np.sort(-np.partition(sims, m - k, axis=1)[:, m - k :], axis=1)
    var, es = tails[:, -1], tails.mean(axis=1)
    losses = rng.standard_normal(t)
    good = es_backtest(losses, var, es, tails, alpha, simulations=1000, seed=1)
    bad = es_backtest(losses, 0.7 * var, 0.7 * es, 0.7 * tails, alpha, simulations=1000, seed=1)
    assert good.pvalue > 0.01
    assert bad.pvalue < 0.01 and bad.z2 > good.z2


# --------------------------------------------------------------------------- forecaster


def _walk(days: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(0.03 * rng.standard_normal((days, n)), axis=0))


def test_forecasts_do_not_look_ahead() -> None:
    closes = _walk(200, 2, 3)
    origins = np.arange(60, 120)
    e = np.array([1e5, -5e4])
    base = rolling_forecasts(("A", "B"), closes, e, origins, window=60, scenarios=2000)
    changed = closes.copy()
    changed[100:] *= 1.7  # every close from day 100 on
    again = rolling_forecasts(("A", "B"), changed, e, origins, window=60, scenarios=2000)
    before = origins < 100  # forecasts made at closes 60..99 use nothing from day 100 on
    np.testing.assert_array_equal(base.var[before], again.var[before])
    np.testing.assert_array_equal(base.es[before], again.es[before])
    np.testing.assert_array_equal(base.pnl[origins < 99], again.pnl[origins < 99])
    assert not np.array_equal(base.var[~before], again.var[~before])


def test_realised_pnl_of_fixed_exposures() -> None:
    closes = np.array([[100.0, 10.0], [110.0, 9.0], [99.0, 9.9]])
    e = np.broadcast_to(np.array([1000.0, -500.0]), closes.shape)
    pnl = realised_pnl(closes, e, [0, 1], 1)
    # day 1: 1000 * 0.1 - 500 * (-0.1) = 150; day 2: 1000 * (-0.1) - 500 * 0.1 = -150
    np.testing.assert_allclose(pnl, [150.0, -150.0])


@pytest.mark.parametrize("sampler", ["mc", "sobol"])
def test_one_day_forecast_matches_the_lognormal_closed_form(sampler: str) -> None:
    # L = e (1 - exp(-s^2 / 2 + s z)); VaR = e (1 - exp(-s^2 / 2 + s z_q)), z_q = Phi^-1(0.01)
    s, e, alpha = 0.04, 1e6, 0.99
    model = GaussianModel(("BTC",), [s], [[1.0]])
    var, es, var_se, _, tail = forecast_day(model, np.array([e]), alpha, 1 << 16, 5, sampler)
    zq = norm.ppf(1 - alpha)
    exact_var = e * -math.expm1(-s * s / 2 + s * zq)
    exact_es = e * (1 - norm.cdf(zq - s) / (1 - alpha))
    # MC: 4 standard errors of the engine's own estimate; Sobol (1-d, balanced): 0.2 %
    tol = 4 * var_se if sampler == "mc" else 2e-3 * exact_var
    assert var == pytest.approx(exact_var, abs=tol)
    assert es == pytest.approx(exact_es, abs=2 * tol)
    assert tail[-1] == var and tail.mean() == pytest.approx(es)


def test_sobol_sizes_are_powers_of_two() -> None:
    assert [sobol_size(m) for m in (1, 2, 3, 1000, 1024, 20_000)] == [1, 2, 4, 1024, 1024, 32768]
    model = GaussianModel(("A", "B"), [0.02, 0.03], [[1, 0.5], [0.5, 1]])
    r = sobol_returns(model, 1000, 0)
    assert r.shape == (1024, 2) and np.all(np.isfinite(r))
    corr = np.corrcoef(np.log1p(r).T)[0, 1]
    assert corr == pytest.approx(0.5, abs=0.05)
