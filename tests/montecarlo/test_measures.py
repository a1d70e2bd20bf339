"""Risk measures on loss arrays, and their properties (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from montecarlo import (
    GaussianModel,
    InvalidParameter,
    RiskProblem,
    component_es,
    expected_shortfall,
    run_risk,
    tail_count,
    value_at_risk,
)
from montecarlo.measures import batch_stderr, tail_weights
from montecarlo.reduce import TreeFold, tree_total


def test_tail_count_is_exact_for_decimal_levels() -> None:
    assert tail_count(0.99, 100_000) == 1000
    assert tail_count(0.975, 100_000) == 2500
    assert tail_count(0.999, 1_000_000) == 1000
    assert tail_count(0.95, 7) == 1  # ceil(0.35)
    assert tail_count(0.5, 3) == 2
    assert tail_count(1e-9, 10) == 10
    for bad in (0.0, 1.0, -0.5, 1.5, float("nan"), float("inf"), "x"):
        with pytest.raises(InvalidParameter, match="alpha"):
            tail_count(bad, 10)  # type: ignore[arg-type]


def test_var_and_es_against_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    losses = rng.standard_t(3, (7, 10_001))
    for alpha in (0.5, 0.9, 0.99, 0.999):
        k = tail_count(alpha, losses.shape[1])
        ordered = -np.sort(-losses, axis=1)
        np.testing.assert_array_equal(value_at_risk(losses, alpha), ordered[:, k - 1])
        np.testing.assert_allclose(expected_shortfall(losses, alpha), ordered[:, :k].mean(axis=1))


def test_tail_weights_share_ties_and_sum_to_k() -> None:
    losses = np.array([[5.0, 3.0, 3.0, 3.0, 1.0, 0.0]])
    k = 3  # tail: 5 and two of the three 3s
    w = tail_weights(losses, np.array([3.0]), k)
    np.testing.assert_allclose(w, [[1, 2 / 3, 2 / 3, 2 / 3, 0, 0]])
    assert (w * losses).sum() / k == pytest.approx((5 + 3 + 3) / 3)


def test_component_es_on_a_materialised_set() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.02, (20_000, 3))
    e = np.array([1e5, -3e4, 2e4])
    comp = component_es(r, e, 0.99)
    assert comp.sum() == pytest.approx(expected_shortfall(-(r @ e), 0.99), rel=1e-12)
    assert comp[0] > 0  # the big long position carries the risk


def test_batch_stderr_is_std_over_sqrt_b() -> None:
    x = np.array([[1.0], [2.0], [3.0], [6.0]])
    assert batch_stderr(x)[0] == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert np.isnan(batch_stderr(x[:1])[0])


@given(st.integers(1, 40), st.integers(1, 8), st.randoms(use_true_random=False))
def test_tree_reduction_is_the_same_for_any_split(n_chunks: int, parts: int, rnd) -> None:  # type: ignore[no-untyped-def]
    values = [np.float64(rnd.uniform(-1e6, 1e6)) for _ in range(n_chunks)]
    edges = sorted({0, n_chunks, *(rnd.randrange(n_chunks + 1) for _ in range(parts))})
    folds = []
    for a, b in itertools.pairwise(edges):
        fold = TreeFold()
        for c in range(a, b):
            fold.push(c, values[c])
        folds.append(fold.nodes())
    whole = TreeFold()
    for c, v in enumerate(values):
        whole.push(c, v)
    assert tree_total(folds, n_chunks) == tree_total([whole.nodes()], n_chunks)
    assert tree_total(folds, n_chunks) == pytest.approx(sum(values), rel=1e-9, abs=1e-6)


# --------------------------------------------------------------------------- properties

ASSETS = ("AVAX", "BTC", "ETH", "SOL")
CORR = np.array(
    [[1, 0.6, 0.65, 0.7], [0.6, 1, 0.8, 0.7], [0.65, 0.8, 1, 0.75], [0.7, 0.7, 0.75, 1]]
)
VOL = np.array([0.06, 0.03, 0.04, 0.055])
HORIZON = np.array([1.0, 2.0, 1.0, 3.0])

exposure = st.floats(-1e7, 1e7, allow_nan=False).filter(lambda v: abs(v) > 1.0)
exposures = st.lists(exposure, min_size=4, max_size=4).map(np.array)
alphas = st.floats(0.5, 0.999)


def _risk(e: np.ndarray, alpha: float, assets=ASSETS, vol=VOL, corr=CORR, h=HORIZON):  # type: ignore[no-untyped-def]
    model = GaussianModel(assets, vol, corr, horizon_days=h)
    return run_risk(RiskProblem(model, e, alpha, 4_000, seed=7))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(exposures, alphas, st.floats(0.01, 1000.0))
def test_positive_homogeneity(e: np.ndarray, alpha: float, scale: float) -> None:
    base, scaled = _risk(e, alpha), _risk(e * scale, alpha)
    np.testing.assert_allclose(scaled.var, scale * base.var, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(scaled.es, scale * base.es, rtol=1e-9, atol=1e-6)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(exposures, alphas, alphas)
def test_es_dominates_var_and_both_rise_with_alpha(e: np.ndarray, a1: float, a2: float) -> None:
    lo, hi = sorted((a1, a2))
    r_lo, r_hi = _risk(e, lo), _risk(e, hi)
    assert np.all(r_lo.es >= r_lo.var) and np.all(r_hi.es >= r_hi.var)
    assert np.all(r_hi.var >= r_lo.var) and np.all(r_hi.es >= r_lo.es - 1e-9 * abs(r_lo.es))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(exposures, alphas, st.permutations(range(4)))
def test_invariant_to_the_order_of_assets(e: np.ndarray, alpha: float, perm: list[int]) -> None:
    p = np.array(perm)
    base = _risk(e, alpha)
    shuffled = _risk(
        e[p], alpha, tuple(ASSETS[i] for i in p), VOL[p], CORR[np.ix_(p, p)], HORIZON[p]
    )
    np.testing.assert_array_equal(shuffled.var, base.var)
    np.testing.assert_array_equal(shuffled.es, base.es)
    assert base.components is not None and shuffled.components is not None
    np.testing.assert_array_equal(shuffled.components[0], base.components[0][p])
