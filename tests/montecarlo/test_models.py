"""Scenario models: their distributions, block bootstrap, jumps, and calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from montecarlo import (
    GaussianModel,
    HistoricalModel,
    InvalidParameter,
    Jump,
    JumpOverlay,
    RiskProblem,
    StudentTModel,
    calibrate,
    draw_scenarios,
    nearest_correlation,
    run_risk,
)
from montecarlo.calibration import ewma_covariance, ewma_variance_path, log_returns

DATA = Path(__file__).resolve().parents[2] / "aggregator" / "data" / "prices"


def _draw(model, m: int = 200_000, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return draw_scenarios(RiskProblem(model, np.ones(len(model.assets)), 0.99, m, seed=seed))


def test_student_t_margins_have_the_gaussian_variance_and_fatter_tails() -> None:
    vol, nu, m = np.array([0.03, 0.05]), 4.5, 400_000
    c = [[1, 0.5], [0.5, 1]]
    t_logs = np.log1p(_draw(StudentTModel(("A", "B"), vol, c, dof=nu), m))
    g_logs = np.log1p(_draw(GaussianModel(("A", "B"), vol, c), m))
    for logs in (t_logs, g_logs):
        centred = logs - logs.mean(axis=0)
        # variance sigma^2 within 4 standard errors of the sample variance
        se = np.sqrt((np.mean(centred**4, axis=0) - vol**4) / m)
        assert np.all(np.abs(centred.var(axis=0) - vol**2) < 4 * se)
    kurt = lambda x: np.mean((x - x.mean(0)) ** 4, axis=0) / x.var(axis=0) ** 2  # noqa: E731
    assert np.all(kurt(g_logs) < 3.1) and np.all(kurt(t_logs) > 4.0)
    # tail dependence: joint 1% crashes are more frequent under the t than the Gaussian
    joint = lambda x: np.mean(np.all(x < np.quantile(x, 0.01, axis=0), axis=1))  # noqa: E731
    assert joint(t_logs) > 1.3 * joint(g_logs)


def test_gaussian_draws_have_the_requested_correlation() -> None:
    c = np.array([[1, 0.8, -0.3], [0.8, 1, 0.1], [-0.3, 0.1, 1]])
    logs = np.log1p(_draw(GaussianModel(("A", "B", "C"), [0.01, 0.02, 0.03], c), 200_000))
    # the standard error of a sample correlation is about (1 - rho^2) / sqrt(m)
    np.testing.assert_allclose(np.corrcoef(logs.T), c, atol=4 / np.sqrt(200_000))


def test_historical_blocks_are_sums_of_consecutive_real_days() -> None:
    residuals = np.arange(1.0, 41.0).reshape(20, 2) / 100  # day t: (2t + 1, 2t + 2) / 100
    vol = np.array([0.5, 2.0])
    model = HistoricalModel(("A", "B"), residuals, vol, horizon_days=[3, 1])
    logs = np.log1p(_draw(model, 5_000))
    starts = np.arange(20 - 3 + 1)
    block3 = {round(vol[0] * residuals[s : s + 3, 0].sum(), 9) for s in starts}
    assert {round(x, 9) for x in logs[:, 0]} <= block3
    # asset B takes the first day of the same block: its residual is asset A's first day + 0.01
    first_day_a = (logs[:, 1] / vol[1]) - 0.01
    assert np.allclose(3 * first_day_a + 0.06, logs[:, 0] / vol[0])
    assert len({round(x, 9) for x in logs[:, 0]}) == len(starts)  # every block is drawn


def test_historical_var_matches_the_bootstrap_population_quantile() -> None:
    cal = calibrate(
        ("BTC",), np.loadtxt(DATA / "BTC-USD_1d.csv", delimiter=",", skiprows=1, usecols=1)[:, None]
    )
    model = cal.historical(1)
    value, alpha = 1e6, 0.99
    res = run_risk(RiskProblem(model, [value], alpha, 400_000, seed=3))
    population = -value * np.expm1(model.residuals[:, 0] * model.current_vol[0])
    lo, hi = np.quantile(population, [alpha - 0.0005, alpha + 0.0005])
    assert lo - 3 * res.var_stderr[0] <= res.var[0] <= hi + 3 * res.var_stderr[0]


def test_jumps_hit_with_their_probability_and_share_one_draw() -> None:
    base = GaussianModel(("USDC", "USDC.e", "SOL"), [0.0, 0.0, 0.0], np.eye(3))
    jumps = (
        Jump("bridge-x", probability=0.05, loss=0.4, assets=("USDC.e", "SOL")),
        Jump("usdc-depeg", probability=0.02, loss=0.1, assets=("USDC", "USDC.e")),
    )
    m = 200_000
    r = _draw(JumpOverlay(base, jumps), m)
    bridge = r[:, 2] < 0
    depeg = r[:, 0] < 0
    for hits, p in ((bridge, 0.05), (depeg, 0.02)):
        assert abs(hits.mean() - p) < 4 * np.sqrt(p * (1 - p) / m)
    assert abs(np.mean(bridge & depeg) - 0.05 * 0.02) < 4 * np.sqrt(0.001 / m)  # independent
    np.testing.assert_allclose(r[bridge, 2], -0.4)  # exact loss given failure
    np.testing.assert_allclose(r[bridge & depeg, 1], (1 - 0.4) * (1 - 0.1) - 1)  # compounded
    np.testing.assert_allclose(r[bridge & ~depeg, 1], -0.4)  # one shared draw per bridge


def test_ties_at_var_are_shared_so_components_still_sum_to_es() -> None:
    # no diffusion: every loss is 0 or the jump loss, so thousands of scenarios tie at VaR
    base = GaussianModel(("A", "B"), [0.0, 0.0], np.eye(2))
    model = JumpOverlay(base, (Jump("j", 0.3, 0.5, ("A",)),))
    res = run_risk(RiskProblem(model, [[100.0], [50.0]], 0.9, 20_000, seed=1))
    assert res.var[0] == 50.0 and res.es[0] == 50.0
    assert res.components is not None
    np.testing.assert_allclose(res.components[0], [50.0, 0.0], rtol=1e-12, atol=1e-12)


def test_ewma_matches_a_plain_recursion() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.02, (300, 3))
    lam = 0.94
    s = x[:30].T @ x[:30] / 30
    path = [np.diag(s).copy()]
    for row in x:
        s = lam * s + (1 - lam) * np.outer(row, row)
        path.append(np.diag(s).copy())
    np.testing.assert_allclose(ewma_covariance(x, lam), s, rtol=1e-10)
    np.testing.assert_allclose(ewma_variance_path(x, lam), np.array(path), rtol=1e-10)


def test_nearest_correlation_reproduces_highams_example() -> None:
    # Higham (2002), section 4: the nearest correlation matrix to this tridiagonal matrix
    a = np.array([[2, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1], [0, 0, -1, 2]], dtype=float)
    expected = np.array(
        [
            [1.0000, -0.8084, 0.1916, 0.1068],
            [-0.8084, 1.0000, -0.6562, 0.1916],
            [0.1916, -0.6562, 1.0000, -0.8084],
            [0.1068, 0.1916, -0.8084, 1.0000],
        ]
    )
    np.testing.assert_allclose(nearest_correlation(a), expected, atol=1e-4)
    valid = np.array([[1, 0.3], [0.3, 1]])
    np.testing.assert_allclose(nearest_correlation(valid), valid, atol=1e-12)


def test_calibration_on_real_data_aligns_dates_and_is_valid() -> None:
    btc = np.loadtxt(DATA / "BTC-USD_1d.csv", delimiter=",", skiprows=1, usecols=1)
    eth = np.loadtxt(DATA / "ETH-USD_1d.csv", delimiter=",", skiprows=1, usecols=1)
    closes = np.column_stack([btc[-len(eth) :], eth])  # both files end on 2025-02-11
    cal = calibrate(("BTC", "ETH"), closes)
    assert 0.005 < cal.daily_vol[0] < 0.1 and 0.005 < cal.daily_vol[1] < 0.1
    assert 0.3 < cal.correlation[0, 1] < 0.99
    assert np.linalg.eigvalsh(cal.correlation)[0] > 0
    assert cal.returns.shape == (len(eth) - 1, 2)
    np.testing.assert_allclose(cal.returns, log_returns(closes))
    # residuals have roughly unit variance: EWMA vol is the right scale
    assert 0.7 < cal.residuals.std(axis=0).min() <= cal.residuals.std(axis=0).max() < 1.4


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: GaussianModel(("A", "B"), [0.01, 0.02], [[1, 2], [2, 1]]), "correlation"),
        (lambda: GaussianModel(("A", "B"), [0.01, -0.02], np.eye(2)), "daily_vol"),
        (lambda: GaussianModel(("A", "A"), [0.01, 0.02], np.eye(2)), "assets"),
        (lambda: GaussianModel(("A",), [0.01], [[1.0]], horizon_days=0), "horizon_days"),
        (lambda: StudentTModel(("A",), [0.01], [[1.0]], dof=2.0), "dof"),
        (
            lambda: HistoricalModel(("A",), np.zeros((5, 1)), [0.1], horizon_days=1.5),
            "horizon_days",
        ),
        (lambda: Jump("x", 1.5, 0.1, ("A",)), "jumps[x].probability"),
        (
            lambda: JumpOverlay(
                GaussianModel(("A",), [0.1], [[1.0]]), (Jump("x", 0.1, 0.1, ("B",)),)
            ),
            "jumps[x].assets",
        ),
    ],
)
def test_bad_parameters_name_their_field(build, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameter) as info:
        build()
    assert info.value.field == field
