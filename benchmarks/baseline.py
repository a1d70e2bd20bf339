"""The naive baseline: what a user writes by hand, one account at a time.

Per account: ``np.random.default_rng(seed).multivariate_normal(mean, cov, size=M)`` for the
horizon log returns, simple returns by ``expm1``, P&L ``R @ e``, VaR by ``np.quantile`` of the
losses and ES as the mean of the losses at or beyond VaR. NumPy's defaults throughout (its BLAS
keeps all its threads). It is slow, so a few accounts are timed and the time is extrapolated
linearly to all of them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from benchmarks.timing import time_once


@dataclass(frozen=True)
class BaselineResult:
    """Timing of the naive baseline.

    Attributes
    ----------
    seconds : seconds for all accounts: the sum when every account was run, else the
        median per-account time x accounts.
    per_account_s : median seconds per account.
    timed_accounts : how many accounts were actually run (``baseline_extrapolated_from``).
    var, es : (timed_accounts,) the baseline's figures for those accounts.
    """

    seconds: float
    per_account_s: float
    timed_accounts: int
    var: np.ndarray
    es: np.ndarray


def naive_account(
    mean: np.ndarray, cov: np.ndarray, e: np.ndarray, alpha: float, scenarios: int, seed: int
) -> tuple[float, float]:
    """VaR and ES of one account the naive way; ``e`` (n,) USD exposures."""
    x = np.random.default_rng(seed).multivariate_normal(mean, cov, size=scenarios)
    r = np.expm1(x)
    losses = -(r @ e)
    var = float(np.quantile(losses, alpha))
    es = float(losses[losses >= var].mean())
    return var, es


def run_baseline(
    mean: np.ndarray,
    cov: np.ndarray,
    exposures: np.ndarray,
    alpha: float,
    scenarios: int,
    seed: int,
    budget_s: float,
) -> BaselineResult:
    """Time accounts one by one until all are done or ``budget_s`` seconds are spent.

    At least one account is always run. ``exposures`` is (n, A).
    """
    accounts = int(exposures.shape[1])
    times: list[float] = []
    figures: list[tuple[float, float]] = []
    start = time.perf_counter()
    for a in range(accounts):
        e = np.ascontiguousarray(exposures[:, a])
        seconds, out = time_once(partial(naive_account, mean, cov, e, alpha, scenarios, seed))
        times.append(seconds)
        figures.append(out)
        if time.perf_counter() - start >= budget_s:
            break
    per_account = statistics.median(times)
    total = sum(times) if len(times) == accounts else per_account * accounts
    var, es = (np.array(col) for col in zip(*figures, strict=True))
    return BaselineResult(total, per_account, len(times), var, es)
