"""The gate's worst case (aggregator/gate.py) against brute force over every subset, on real
scenario returns: exact, not a bound; reduce-only as stated; the outstanding set as the pinned
gate state shows it."""

from __future__ import annotations

import itertools
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.gate import (
    Change,
    corners,
    im_of,
    lowers_im_everywhere,
    outstanding,
    reduces_position,
    settled,
    tail_mean,
    worst_case,
)
from aggregator.margin import MarginPolicy, ScenarioSet
from aggregator.store import Reservation
from chains.margin_gate import GateState, NonceStatus
from montecarlo.measures import expected_shortfall

POLICY = MarginPolicy(scenarios=4000, seed=3)
COLUMNS = ("BTC", "ETH", "LINK", "USDC")


@pytest.fixture(scope="module")
def scen() -> ScenarioSet:
    """Scenario returns with fat tails and correlation, drawn once (M = 4,000)."""
    rng = np.random.default_rng(11)
    z = rng.standard_t(4, size=(4000, 4)) * np.array([0.03, 0.04, 0.06, 0.001])
    z[:, 1] += 0.8 * z[:, 0]  # ETH moves with BTC
    bounds = tuple((i, i + 1000) for i in range(0, 4000, 1000))
    return ScenarioSet(COLUMNS, z, bounds, {})


def _brute(
    pnl: np.ndarray, scen: ScenarioSet, changes: list[Change], policy: MarginPolicy
) -> float:
    worst = -np.inf
    for k in range(len(changes) + 1):
        for subset in itertools.combinations(changes, k):
            moved = pnl.copy()
            for c in subset:
                moved = moved + scen.column_returns(c.column) * c.exposure_usd
            es = float(expected_shortfall(-moved, policy.im_alpha))  # the engine's measure
            need = max(es, 0.0) - sum(c.equity_usd for c in subset)
            worst = max(worst, need)
    return float(worst)


changes_st = st.lists(
    st.builds(
        Change,
        st.sampled_from(COLUMNS[:3]),
        st.sampled_from(["position", "withdrawal"]),
        st.floats(-50_000, 50_000, allow_nan=False).filter(lambda x: abs(x) > 1),
    ),
    max_size=7,
)


@settings(max_examples=60, deadline=None)
@given(changes=changes_st, base=st.lists(st.floats(-1e5, 1e5), min_size=4, max_size=4))
def test_worst_case_is_the_worst_subset(
    scen: ScenarioSet, changes: list[Change], base: list[float]
) -> None:
    pnl = scen.returns @ np.array(base)
    wc = worst_case(pnl, scen, changes, POLICY)
    assert wc.shortfall == pytest.approx(_brute(pnl, scen, changes, POLICY), rel=1e-9, abs=1e-6)
    assert wc.corners <= 2 ** len({(c.column, c.kind) for c in changes})


def test_ten_orders_in_one_column_are_two_corners(scen: ScenarioSet) -> None:
    pnl = scen.returns @ np.array([0.0, 200 * 3000.0, 0.0, 0.0])  # long about 200 ETH
    closes = [Change("ETH", "position", -250 * 3000.0) for _ in range(10)]
    wc = worst_case(pnl, scen, closes, POLICY)
    assert wc.corners == 2
    # the worst subset is all ten executed: short 2,300 ETH, not 50 ETH
    short = im_of((pnl + scen.column_returns("ETH") * (-2500 * 3000.0))[None, :], POLICY)[0]
    assert wc.im == pytest.approx(short)
    assert wc.im > 10 * im_of(pnl[None, :], POLICY)[0]


def test_corners_of_mixed_signs() -> None:
    cs = corners([Change("ETH", "position", 5), Change("ETH", "position", -3)])
    assert sorted(c.totals[0][2] for c in cs) == [-3, 5]
    assert [c.totals for c in corners([])] == [()]


def test_reduce_only_means_shrinking_in_every_order() -> None:
    assert reduces_position(200, [], -100)
    assert reduces_position(200, [], -200)
    assert not reduces_position(200, [], -201)  # flips
    assert not reduces_position(200, [-150], -100)  # both executed: short 50
    assert reduces_position(200, [+50, -100], -100)
    assert reduces_position(-10, [], 4) and not reduces_position(-10, [], -4)
    assert not reduces_position(0, [], -1)


def test_a_partial_close_lowers_im_everywhere_a_flip_does_not(scen: ScenarioSet) -> None:
    pnl = scen.returns @ np.array([0.0, 600_000.0, 0.0, 0.0])
    cut = Change("ETH", "position", -300_000.0)
    assert lowers_im_everywhere(pnl, scen, [], cut, POLICY)
    flip = Change("ETH", "position", -1_500_000.0)
    assert not lowers_im_everywhere(pnl, scen, [], flip, POLICY)
    assert not lowers_im_everywhere(pnl, scen, [], Change("ETH", "withdrawal", -1.0), POLICY)


ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _row(rid: int, nonce: int, state: str = "active", **kw: int) -> Reservation:
    fields = dict(issued_at=100, valid_until=200, counter=5, seen_block=None)
    fields.update(kw)
    return Reservation(
        rid,
        ACCOUNT,
        "position",
        1,
        "ETH",
        "1",
        Decimal(0),
        nonce,
        int(fields["counter"] or 0),
        int(fields["issued_at"] or 0),
        int(fields["valid_until"] or 0),
        state,
        fields["seen_block"],
    )


def _gate(block: int, ts: int, statuses: dict[int, NonceStatus], counter: int = 5) -> GateState:
    return GateState(
        1, block, "0x" + "ab" * 32, ts, 0, {(ACCOUNT, n): s for n, s in statuses.items()},
        {ACCOUNT: counter},
    )  # fmt: skip


def test_outstanding_follows_the_pinned_state() -> None:
    rows = [
        _row(1, 11),  # unused at the pin: outstanding
        _row(2, 12),  # consumed at the pin: in the portfolio
        _row(3, 13),  # cancelled
        _row(4, 14, "filled", seen_block=60),  # filled after this pin: still outstanding
        _row(5, 15, "filled", seen_block=40),  # filled before: in the portfolio
        _row(6, 16, counter=4),  # superseded by the counter
        _row(7, 17, valid_until=149),  # the pinned clock is past its validity
        _row(8, 18),  # issued after the gate was read: cannot have executed
    ]
    gate = _gate(
        50,
        150,
        {
            11: NonceStatus.UNUSED,
            12: NonceStatus.CONSUMED,
            13: NonceStatus.CANCELLED,
            14: NonceStatus.UNUSED,
            16: NonceStatus.UNUSED,
            17: NonceStatus.UNUSED,
        },
    )
    assert [r.id for r in outstanding(rows, {1: gate})] == [1, 4, 8]
    assert [r.id for r in outstanding(rows, {})] == [1, 2, 3, 4, 5, 6, 7, 8]  # unknown: all
    assert settled(rows, {1: gate}) == [
        (2, "filled", 50),
        (3, "cancelled", 50),
        (6, "cancelled", 50),
        (7, "expired", 50),
    ]


@settings(max_examples=40, deadline=None)
@given(
    m=st.sampled_from([1000, 40_000, 100_000]),
    alpha=st.sampled_from([0.9, 0.975, 0.99, 0.999]),
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
)
def test_tail_mean_is_the_mean_of_the_k_largest(
    m: int, alpha: float, seed: int, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    losses = rng.standard_t(2.5, size=m) * 1000
    if ties:  # a tail of equal values (a position whose loss is capped)
        losses = np.minimum(losses, np.quantile(losses, 0.995))
    k = max(1, int(np.ceil(round((1 - alpha) * m, 9))))
    expected = float(np.sort(losses)[-k:].mean())
    assert tail_mean(losses, k) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_tail_mean_when_the_sample_misjudges_the_tail() -> None:
    k = 1000
    # the large losses all at sampled positions: the threshold leaves fewer than k above it
    # (the whole row is partitioned instead)
    heavy = np.zeros(100_000)
    heavy[::12] = np.arange(1, 8335) * 1.0
    # the large losses all between them: the threshold is 0 and keeps everything
    light = np.zeros(100_000)
    light[np.arange(100_000) % 12 == 5] = np.arange(1, 8334) * 1.0
    for losses in (heavy, light):
        assert tail_mean(losses, k) == pytest.approx(np.sort(losses)[-k:].mean(), rel=1e-12)
