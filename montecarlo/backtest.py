"""Backtest statistics of VaR and ES forecasts: pure functions of exception sequences.

* Kupiec (1995) proportion-of-failures test: are there as many exceptions as 1 - alpha says?
* Christoffersen (1998) independence test (do exceptions cluster?) and conditional coverage
  test (both at once).
* Basel Committee (1996), *Supervisory framework for the use of "backtesting" in conjunction
  with the internal models approach to market risk capital requirements*, Table 2: the
  traffic-light zones of the number of exceptions in 250 days at 99 %.
* Acerbi and Szekely (2014), *Backtesting Expected Shortfall*, Risk: the Z2 test of ES, with
  its p-value by simulation under the forecast distributions.

Likelihoods use ``xlogy`` (0 log 0 = 0), so zero exceptions, all exceptions and sequences with
no 1 -> 1 transition give finite statistics (never NaN, never a division by zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import xlogy
from scipy.stats import binom, chi2

from montecarlo.errors import InvalidParameter
from montecarlo.measures import check_alpha

Zone = Literal["green", "yellow", "red"]

#: Basel (1996) zone bounds: green while P(X <= x) < 95 %, red from P(X <= x) >= 99.99 %
GREEN_BELOW = 0.95
RED_FROM = 0.9999
#: Basel (1996) Table 2: the plus factor added to the capital multiplier (3) in the yellow zone
#: (exceptions in 250 days at 99 %); green adds 0, red adds 1
PLUS_FACTORS = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}
#: Acerbi and Szekely (2014): indicative Z2 thresholds (their 95 % and 99.99 % levels, found
#: stable across fat-tailed distributions), here with the sign of losses (large Z2 = ES too low)
Z2_YELLOW, Z2_RED = 0.70, 1.80


@dataclass(frozen=True)
class TestResult:
    """A likelihood-ratio statistic, its chi-squared p-value and degrees of freedom."""

    statistic: float
    pvalue: float
    dof: int


def _hits(hits: Any) -> np.ndarray:
    h = np.asarray(hits)
    if h.ndim != 1:
        raise InvalidParameter("hits", f"expected a 1-d sequence of 0/1, got shape {h.shape}")
    if h.size and not np.all((h == 0) | (h == 1)):
        raise InvalidParameter("hits", "must hold only 0 and 1 (False and True)")
    return h.astype(np.int64)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidParameter(name, f"must be an integer, got {value!r}")
    if value < 0:
        raise InvalidParameter(name, f"must be >= 0, got {value}")
    return int(value)


def _lr_test(statistic: float, dof: int) -> TestResult:
    stat = float(statistic)
    stat = stat if stat > 0.0 else 0.0  # a perfect fit can round to -1e-16 or -0.0
    return TestResult(stat, float(chi2.sf(stat, dof)), dof)


def kupiec_pof(exceptions: int, n: int, alpha: float) -> TestResult:
    """Kupiec's proportion-of-failures likelihood-ratio test (chi-squared, 1 dof).

    LR = -2 ln[(1 - p)^(n - x) p^x] + 2 ln[(1 - x/n)^(n - x) (x/n)^x], with p = 1 - alpha the
    expected exception rate and x the number of exceptions in n days. x = 0 and x = n are
    finite (0 log 0 = 0).
    """
    x, n = _count("exceptions", exceptions), _count("observations", n)
    if n < 1:
        raise InvalidParameter("observations", "at least one observation is needed")
    if x > n:
        raise InvalidParameter("exceptions", f"{x} exceptions in {n} observations")
    p = 1.0 - check_alpha(alpha)
    rate = x / n
    log_null = xlogy(n - x, 1.0 - p) + xlogy(x, p)
    log_alt = xlogy(n - x, 1.0 - rate) + xlogy(x, rate)
    return _lr_test(-2.0 * (log_null - log_alt), 1)


def transition_counts(hits: Any) -> tuple[int, int, int, int]:
    """(n00, n01, n10, n11): days with no/an exception followed by a day with no/an exception."""
    h = _hits(hits)
    prev, nxt = h[:-1], h[1:]
    return (
        int(np.sum((prev == 0) & (nxt == 0))),
        int(np.sum((prev == 0) & (nxt == 1))),
        int(np.sum((prev == 1) & (nxt == 0))),
        int(np.sum((prev == 1) & (nxt == 1))),
    )


def christoffersen_independence(hits: Any) -> TestResult:
    """Christoffersen's independence test: first-order Markov exceptions vs independent ones.

    LR = -2 ln L(pi) + 2 ln L(pi01, pi11) (chi-squared, 1 dof), where pi01 = n01 / (n00 + n01),
    pi11 = n11 / (n10 + n11) and pi = (n01 + n11) / (n - 1). A state never visited (no exception,
    or no day without one) has no transitions, contributes 0 to both likelihoods and gets
    probability 0; no 1 -> 1 transition gives pi11 = 0, also finite.
    """
    n00, n01, n10, n11 = transition_counts(hits)
    total = n00 + n01 + n10 + n11
    if total == 0:
        return TestResult(0.0, 1.0, 1)  # fewer than two days: nothing to test
    pi = (n01 + n11) / total
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    log_null = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    log_alt = xlogy(n00, 1.0 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1.0 - pi11) + xlogy(n11, pi11)
    return _lr_test(-2.0 * (log_null - log_alt), 1)


def conditional_coverage(hits: Any, alpha: float) -> TestResult:
    """Christoffersen's conditional coverage test: LR_cc = LR_pof + LR_ind (chi-squared, 2 dof).

    LR_pof is Kupiec's statistic over all n days (the usual practice; Christoffersen conditions
    on the first day, which changes the sum by one day's term).
    """
    h = _hits(hits)
    pof = kupiec_pof(int(h.sum()), int(h.size), alpha)
    ind = christoffersen_independence(h)
    return _lr_test(pof.statistic + ind.statistic, 2)


def traffic_light_zone(exceptions: int, n: int = 250, alpha: float = 0.99) -> Zone:
    """Basel traffic-light zone of ``exceptions`` in ``n`` days of VaR at ``alpha``.

    Green while the binomial probability of at most that many exceptions is below 95 %, red
    from 99.99 %, yellow between (Basel 1996). For n = 250 at 99 % this is the Committee's
    table: green 0-4, yellow 5-9, red 10 or more.
    """
    x, n = _count("exceptions", exceptions), _count("observations", n)
    cumulative = float(binom.cdf(x, n, 1.0 - check_alpha(alpha)))
    if cumulative < GREEN_BELOW:
        return "green"
    if cumulative < RED_FROM:
        return "yellow"
    return "red"


def plus_factor(exceptions: int) -> float:
    """Basel (1996) plus factor for ``exceptions`` in 250 days at 99 %: 0, 0.40..0.85, or 1."""
    x = _count("exceptions", exceptions)
    if x <= 4:
        return 0.0
    return PLUS_FACTORS.get(x, 1.0)


def rolling_exceptions(hits: Any, window: int = 250) -> np.ndarray:
    """Exceptions in each ``window``-day window ending on day window - 1, ..., n - 1; (n,) ->
    (n - window + 1,), empty when n < window."""
    h = _hits(hits)
    if window < 1:
        raise InvalidParameter("window", f"must be >= 1, got {window}")
    if h.size < window:
        return np.zeros(0, dtype=np.int64)
    c = np.concatenate([[0], np.cumsum(h)])
    out: np.ndarray = c[window:] - c[:-window]
    return out


def block_windows(n: int, window: int = 250) -> list[tuple[int, int]]:
    """Non-overlapping [start, stop) windows of ``window`` days, counted back from day n, so the
    last one is always the latest ``window`` days; a leading remainder shorter than a window is
    left out."""
    return [(stop - window, stop) for stop in range(n, window - 1, -window)][::-1]


@dataclass(frozen=True)
class ESBacktest:
    """Acerbi-Szekely Z2 of a sequence of ES forecasts, with its simulated p-value."""

    z2: float
    pvalue: float
    simulations: int
    zone: Zone


def z2_statistic(losses: Any, var: Any, es: Any, alpha: float) -> float:
    """Acerbi-Szekely Z2 in the sign of losses: sum_t L_t 1{L_t > VaR_t} / (T (1 - alpha) ES_t)
    - 1. Zero in expectation when the forecasts are right; positive when ES is too low.

    losses, var, es : (T,) realised losses (-P&L) and forecasts; ES must be > 0.
    """
    loss, v, e = (np.asarray(a, dtype=np.float64) for a in (losses, var, es))
    if not (loss.shape == v.shape == e.shape and loss.ndim == 1 and loss.size):
        raise InvalidParameter("es", "losses, var and es must be 1-d arrays of one length")
    if np.any(e <= 0):
        raise InvalidParameter("es", "ES forecasts must be > 0 for the Z2 test")
    hit = loss > v
    p = 1.0 - check_alpha(alpha)
    return float(np.sum(np.where(hit, loss / e, 0.0)) / (loss.size * p) - 1.0)


def es_backtest(
    losses: Any,
    var: Any,
    es: Any,
    tails: Any,
    alpha: float,
    simulations: int = 2000,
    seed: int = 0,
) -> ESBacktest:
    """Acerbi-Szekely Z2 with its one-sided p-value by simulation under the forecasts.

    Under the null each day's loss is drawn from that day's forecast distribution: it falls in
    the tail with probability 1 - alpha, and is then one of the day's k tail scenarios
    (``tails`` (T, k), the k largest scenario losses whose mean is ES) at random. The p-value is
    (1 + #{Z2_sim >= Z2}) / (1 + simulations). The zone uses the indicative thresholds
    ``Z2_YELLOW`` and ``Z2_RED``.
    """
    z2 = z2_statistic(losses, var, es, alpha)
    tail = np.asarray(tails, dtype=np.float64)
    e = np.asarray(es, dtype=np.float64)
    if tail.ndim != 2 or tail.shape[0] != e.size or tail.shape[1] < 1:
        raise InvalidParameter("tails", f"expected shape ({e.size}, k), got {tail.shape}")
    if simulations < 1:
        raise InvalidParameter("simulations", f"must be >= 1, got {simulations}")
    rng = np.random.default_rng(seed)
    p = 1.0 - check_alpha(alpha)
    t, k = tail.shape
    scaled = tail / e[:, None]  # a tail scenario as a multiple of its day's ES
    total = np.zeros(simulations)
    for day in range(t):  # one day at a time: memory (simulations,), not (simulations, T)
        hit = rng.random(simulations) < p
        pick = rng.integers(0, k, size=simulations)
        total += np.where(hit, scaled[day, pick], 0.0)
    sims = total / (t * p) - 1.0
    pvalue = (1.0 + float(np.sum(sims >= z2))) / (1.0 + simulations)
    zone: Zone = "green" if z2 < Z2_YELLOW else "yellow" if z2 < Z2_RED else "red"
    return ESBacktest(z2, pvalue, simulations, zone)
