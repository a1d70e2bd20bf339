"""The engine's figures against closed forms, an independent computation and itself."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from montecarlo import (
    GaussianModel,
    LocalExecutor,
    RayExecutor,
    RiskProblem,
    StudentTModel,
    draw_scenarios,
    expected_shortfall,
    run_risk,
    value_at_risk,
    what_if,
)
from montecarlo.engine import plan_chunks, split_chunks

Q, P = 3.0, 2_500.0  # 3 ETH at 2,500 USD


def lognormal_var_es(s: float, alpha: float, drift: float) -> tuple[float, float]:
    """Closed-form VaR and ES of a long position of value Q*P, log return ~ N(drift, s^2)."""
    z = norm.ppf(1 - alpha)
    var = Q * P * (1 - np.exp(drift + s * z))
    es = Q * P * (1 - np.exp(drift + s**2 / 2) * norm.cdf(z - s) / (1 - alpha))
    return var, es


@pytest.mark.parametrize(("alpha", "h"), [(0.99, 1.0), (0.975, 5.0), (0.9, 0.5), (0.999, 2.0)])
def test_single_lognormal_against_closed_form(alpha: float, h: float) -> None:
    vol = 0.045
    model = GaussianModel(("ETH",), [vol], [[1.0]], horizon_days=h)
    res = run_risk(RiskProblem(model, [Q * P], alpha, 400_000, seed=11))
    var, es = lognormal_var_es(vol * np.sqrt(h), alpha, -0.5 * vol**2 * h)
    assert abs(res.var[0] - var) <= 3 * res.var_stderr[0]
    assert abs(res.es[0] - es) <= 3 * res.es_stderr[0]
    # the standard errors are of the right size: not zero, not huge
    assert 0 < res.es_stderr[0] < 0.02 * es


def test_drift_moves_var_by_its_closed_form() -> None:
    vol, mu, h, alpha = 0.03, 0.002, 10.0, 0.99
    model = GaussianModel(("BTC",), [vol], [[1.0]], daily_mean=[mu], horizon_days=h)
    res = run_risk(RiskProblem(model, [Q * P], alpha, 400_000, seed=5))
    var, _ = lognormal_var_es(vol * np.sqrt(h), alpha, mu * h - 0.5 * vol**2 * h)
    assert abs(res.var[0] - var) <= 3 * res.var_stderr[0]


def test_student_t_single_asset_against_closed_form() -> None:
    vol, nu, alpha = 0.04, 4.0, 0.99
    model = StudentTModel(("SOL",), [vol], [[1.0]], dof=nu)
    res = run_risk(RiskProblem(model, [Q * P], alpha, 400_000, seed=2))
    # log return = drift + vol * sqrt((nu - 2) / nu) * T_nu
    q = student_t.ppf(1 - alpha, nu) * vol * np.sqrt((nu - 2) / nu)
    var = Q * P * (1 - np.exp(-0.5 * vol**2 + q))
    assert abs(res.var[0] - var) <= 3 * res.var_stderr[0]
    gauss = run_risk(RiskProblem(GaussianModel(("SOL",), [vol], [[1.0]]), [Q * P], alpha, 400_000))
    assert res.es[0] > gauss.es[0] + 3 * (res.es_stderr[0] + gauss.es_stderr[0])


def test_two_asset_gaussian_against_independent_quadrature(two_asset) -> None:  # type: ignore[no-untyped-def]
    model, e, exact = two_asset
    for alpha in (0.95, 0.99):
        res = run_risk(RiskProblem(model, e, alpha, 400_000, seed=3))
        assert abs(res.var[0] - exact.var(alpha)) <= 3 * res.var_stderr[0]
        assert abs(res.es[0] - exact.es(alpha)) <= 3 * res.es_stderr[0]


def test_components_sum_to_es_and_follow_exposure() -> None:
    rng = np.random.default_rng(4)
    n, accounts = 6, 40
    c = np.full((n, n), 0.4) + 0.6 * np.eye(n)
    model = StudentTModel(tuple(f"A{i}" for i in range(n)), rng.uniform(0.01, 0.06, n), c, dof=5)
    e = rng.normal(0, 1e5, (n, accounts))
    e[:, 0] = 0.0  # an account with nothing: all losses tie at 0
    e[2, 1] = 0.0
    res = run_risk(RiskProblem(model, e, 0.975, 60_000, seed=9))
    assert res.components is not None
    np.testing.assert_allclose(res.components.sum(axis=1), res.es, rtol=1e-10, atol=1e-6)
    assert np.all(res.components[0] == 0.0) and res.es[0] == 0.0
    assert res.components[1, 2] == 0.0  # no exposure, no contribution
    assert np.all(res.es >= res.var)


def test_engine_equals_direct_computation_on_the_same_draws() -> None:
    rng = np.random.default_rng(1)
    n, accounts = 5, 30
    model = GaussianModel(tuple("VWXYZ"), rng.uniform(0.01, 0.05, n), np.eye(n))
    e = rng.normal(0, 1e4, (n, accounts))
    problem = RiskProblem(model, e, 0.99, 50_000, seed=21)
    res = run_risk(problem)
    r = draw_scenarios(problem)
    losses = -(r @ e).T
    np.testing.assert_array_equal(res.var, value_at_risk(losses, 0.99))
    np.testing.assert_allclose(res.es, expected_shortfall(losses, 0.99), rtol=1e-12)
    # component ES for one account straight from the full scenario set
    tail = np.argsort(-losses[7])[: problem.k]
    direct = -(e[:, 7] * r[tail]).mean(axis=0)
    assert res.components is not None
    np.testing.assert_allclose(res.components[7], direct, rtol=1e-9, atol=1e-8)


def test_same_seed_same_bits_for_any_worker_count() -> None:
    rng = np.random.default_rng(8)
    n = 4
    model = StudentTModel(tuple("ABCD"), rng.uniform(0.01, 0.05, n), np.eye(n), dof=6)
    problem = RiskProblem(model, rng.normal(0, 1e4, (n, 25)), 0.99, 70_001, seed=4)
    one = run_risk(problem, executor=LocalExecutor(1))
    for workers in (2, 3, 7, 16):
        other = run_risk(problem, executor=LocalExecutor(workers))
        for field in ("var", "es", "var_stderr", "es_stderr", "components", "tail"):
            np.testing.assert_array_equal(getattr(one, field), getattr(other, field), err_msg=field)
    with LocalExecutor(3, processes=True) as pool:  # worker processes, not threads
        other = run_risk(problem, executor=pool)
        again = run_risk(problem, executor=pool)  # the pool is reused
    for field in ("var", "es", "var_stderr", "es_stderr", "components"):
        np.testing.assert_array_equal(getattr(one, field), getattr(other, field), err_msg=field)
        np.testing.assert_array_equal(getattr(one, field), getattr(again, field), err_msg=field)
    different = run_risk(RiskProblem(model, problem.exposures, 0.99, 70_001, seed=5))
    assert not np.array_equal(one.var, different.var)


def test_local_and_ray_give_identical_results(ray_cluster) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    n, accounts = 8, 200
    c = np.full((n, n), 0.3) + 0.7 * np.eye(n)
    model = GaussianModel(tuple(f"X{i}" for i in range(n)), rng.uniform(0.01, 0.05, n), c)
    problem = RiskProblem(model, rng.normal(0, 1e4, (n, accounts)), 0.99, 100_000, seed=17)
    local = run_risk(problem, executor=LocalExecutor(1))
    executor = RayExecutor(workers=2)
    assert executor.workers == 2
    remote = run_risk(problem, executor=executor)
    assert remote.executor == "ray" and remote.workers == 2
    for field in ("var", "es", "var_stderr", "es_stderr", "components"):
        np.testing.assert_array_equal(getattr(local, field), getattr(remote, field), err_msg=field)


def _peak_bytes(problem: RiskProblem) -> int:
    tracemalloc.start()
    try:
        run_risk(problem, executor=LocalExecutor(1))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_chunk_not_by_m() -> None:
    """Memory is O(chunk x n + k x accounts): ten times the scenarios at the same chunk size and
    a small tail (alpha 0.999) take nearly the same memory, far below holding the scenarios."""
    model = GaussianModel(("A", "B", "C", "D"), [0.02] * 4, np.eye(4))
    small, large = 16 * 20_000, 160 * 20_000
    peaks = {
        m: _peak_bytes(
            RiskProblem(model, np.ones((4, 2)) * 1e4, 0.999, m, seed=1, max_chunk=20_000)
        )
        for m in (small, large)
    }
    assert peaks[large] < 1.5 * peaks[small], peaks
    assert peaks[large] < large * 4 * 8 / 10, peaks


def test_what_if_reuses_pnl_and_matches_a_full_rerun() -> None:
    model = GaussianModel(("BTC", "ETH"), [0.03, 0.04], [[1, 0.7], [0.7, 1]])
    e = np.array([1e6, 5e5])
    problem = RiskProblem(model, e, 0.99, 50_000, seed=2)
    r = draw_scenarios(problem)
    pnl = r @ e
    hedge = -4e5  # short ETH
    change = what_if(pnl, r[:, 1], hedge, 0.99)
    rerun = run_risk(
        RiskProblem(model, e + np.array([0, hedge]), 0.99, 50_000, seed=2), components=False
    )
    assert change["var_after"] == pytest.approx(float(rerun.var[0]), rel=1e-12)
    assert change["es_after"] == pytest.approx(float(rerun.es[0]), rel=1e-12)
    assert change["es_change"] < 0  # a correlated hedge lowers ES


def test_chunk_plan_has_enough_batches_and_covers_m() -> None:
    for m in (1, 7, 15, 16, 17, 1000, 100_000, 1_000_003):
        plan = plan_chunks(m)
        assert plan.n_chunks >= min(16, m)
        assert plan.chunk_size <= 32_768
        bounds = [plan.bounds(c) for c in range(plan.n_chunks)]
        assert bounds[0][0] == 0 and bounds[-1][1] == m
        assert all(b[0] == a[1] for a, b in itertools.pairwise(bounds))
        assert all(b > a for a, b in bounds)
    assert split_chunks(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split_chunks(2, 8) == [(0, 1), (1, 2)]


def test_one_scenario_is_a_valid_run_with_undefined_error() -> None:
    model = GaussianModel(("BTC",), [0.03], [[1.0]])
    res = run_risk(RiskProblem(model, [1e4], 0.99, 1, seed=0))
    assert res.k == 1 and res.var[0] == res.es[0]
    assert np.isnan(res.var_stderr[0])


def test_account_blocks_bound_memory_and_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import montecarlo.engine as engine

    rng = np.random.default_rng(12)
    n, accounts = 3, 50
    model = StudentTModel(("A", "B", "C"), [0.02, 0.03, 0.05], np.eye(n), dof=5)
    problem = RiskProblem(model, rng.normal(0, 1e4, (n, accounts)), 0.975, 20_000, seed=8)
    whole = run_risk(problem, executor=LocalExecutor(1))
    # blocks of 7 accounts per chunk, the last one of a single account
    monkeypatch.setattr(engine, "LOSS_BLOCK", 7 * problem.plan.chunk_size)
    blocked = run_risk(problem, executor=LocalExecutor(2))
    assert engine._Bound(problem, "numpy").blocks[-1] == slice(49, 50)
    for field in ("var", "es", "var_stderr", "es_stderr", "components"):
        np.testing.assert_allclose(getattr(blocked, field), getattr(whole, field), rtol=1e-12)
    assert blocked.components is not None
    np.testing.assert_allclose(blocked.components.sum(axis=1), blocked.es, rtol=1e-10)
