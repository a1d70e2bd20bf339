"""Calibration of the scenario models from daily closes.

RiskMetrics EWMA (J.P. Morgan/Reuters, *RiskMetrics Technical Document*, 1996, lambda = 0.94) for
volatilities and correlations, and Higham's alternating projections (Higham 2002, *Computing the
nearest correlation matrix*) to repair the estimate into a valid correlation matrix.

Calibration is small (n assets by T days) and runs on the host with NumPy; the scenario draws it
feeds run on whichever backend the engine uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from montecarlo.errors import InvalidParameter
from montecarlo.models import GaussianModel, HistoricalModel, StudentTModel

EWMA_LAMBDA = 0.94
#: days of returns used to seed the EWMA recursion with a plain sample variance
EWMA_SEED_DAYS = 30


def log_returns(closes: Any) -> np.ndarray:
    """Daily log returns of aligned closes.

    Parameters
    ----------
    closes : (T + 1, n) strictly positive prices, one row per day, one column per asset.

    Returns
    -------
    (T, n) array of log(p_t / p_{t-1}).
    """
    p = np.asarray(closes, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise InvalidParameter("closes", f"need at least 2 days of (T, n) prices, got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise InvalidParameter("closes", "prices must be finite and > 0")
    return np.diff(np.log(p), axis=0)


def ewma_variance_path(returns: Any, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """One-day-ahead EWMA variance forecasts.

    sigma2[t] = lam * sigma2[t - 1] + (1 - lam) * x[t - 1]^2, seeded with the sample variance of
    the first ``EWMA_SEED_DAYS`` returns. Row t uses returns before day t only.

    Parameters
    ----------
    returns : (T, n) daily log returns.

    Returns
    -------
    (T + 1, n) array; row T is the forecast for the day after the last return.
    """
    from scipy.signal import lfilter  # imported here: scipy.signal costs 0.5 s at start-up

    x = np.asarray(returns, dtype=np.float64)
    _check_lambda(lam)
    seed = np.mean(x[:EWMA_SEED_DAYS] ** 2, axis=0)
    # y[t] = lam * y[t-1] + (1 - lam) * x[t]^2 with y[-1] = seed; forecast[t + 1] = y[t]
    zi = (lam * seed)[None, :]
    y, _ = lfilter([1.0 - lam], [1.0, -lam], x**2, axis=0, zi=zi)
    return np.vstack([seed[None, :], y])


def ewma_covariance(returns: Any, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """EWMA covariance forecast for the day after the last return; returns (T, n) -> (n, n)."""
    x = np.asarray(returns, dtype=np.float64)
    _check_lambda(lam)
    t = x.shape[0]
    seed_rows = x[: min(EWMA_SEED_DAYS, t)]
    seed = seed_rows.T @ seed_rows / seed_rows.shape[0]
    weights = (1.0 - lam) * lam ** np.arange(t - 1, -1, -1, dtype=np.float64)
    cov: np.ndarray = (x * weights[:, None]).T @ x + float(lam) ** t * seed
    return cov


def _check_lambda(lam: float) -> None:
    if not (0.0 < lam < 1.0):
        raise InvalidParameter("ewma_lambda", f"must be in (0, 1), got {lam!r}")


def covariance_to_correlation(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a covariance matrix into (vols (n,), correlation (n, n)); zero-vol assets get 0."""
    vol = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    inv = np.divide(1.0, vol, out=np.zeros_like(vol), where=vol > 0)
    corr = cov * inv[:, None] * inv[None, :]
    np.fill_diagonal(corr, 1.0)
    return vol, corr


def nearest_correlation(
    a: Any, tol: float = 1e-12, max_iter: int = 500, min_eigenvalue: float = 1e-10
) -> np.ndarray:
    """Nearest correlation matrix in the Frobenius norm (Higham 2002, with Dykstra's correction).

    Alternates projections onto the PSD cone and onto unit-diagonal matrices, then lifts any
    eigenvalue below ``min_eigenvalue`` so the result factors cleanly. A valid input comes back
    unchanged up to rounding.
    """
    y = np.asarray(a, dtype=np.float64)
    n = y.shape[0]
    y = (y + y.T) / 2
    correction = np.zeros_like(y)
    for _ in range(max_iter):
        r = y - correction
        vals, vecs = np.linalg.eigh(r)
        x = (vecs * np.clip(vals, 0.0, None)) @ vecs.T
        correction = x - r
        y_next = x.copy()
        np.fill_diagonal(y_next, 1.0)
        step, size = float(np.linalg.norm(y_next - y)), float(np.linalg.norm(y))
        if step <= tol * max(1.0, size):
            y = y_next
            break
        y = y_next
    vals, vecs = np.linalg.eigh((y + y.T) / 2)
    if vals[0] < min_eigenvalue:
        y = (vecs * np.clip(vals, min_eigenvalue, None)) @ vecs.T
        d = np.sqrt(np.diag(y))
        y = y / d[:, None] / d[None, :]
    y = (y + y.T) / 2
    np.fill_diagonal(y, 1.0)
    assert y.shape == (n, n)
    return np.clip(y, -1.0, 1.0)


@dataclass(frozen=True, eq=False)
class Calibration:
    """What the models need, estimated from aligned daily closes.

    Attributes
    ----------
    assets : names, length n.
    returns : (T, n) daily log returns on common dates.
    daily_vol : (n,) EWMA volatility forecast for the next day.
    correlation : (n, n) EWMA correlation, repaired to a valid correlation matrix.
    residuals : (T - EWMA_SEED_DAYS, n) returns divided by their own EWMA vol forecast.
    ewma_lambda : the decay used.
    """

    assets: tuple[str, ...]
    returns: np.ndarray
    daily_vol: np.ndarray
    correlation: np.ndarray
    residuals: np.ndarray
    ewma_lambda: float

    def gaussian(self, horizon_days: Any = 1.0) -> GaussianModel:
        return GaussianModel(
            self.assets, self.daily_vol, self.correlation, horizon_days=horizon_days
        )

    def student_t(self, dof: float, horizon_days: Any = 1.0) -> StudentTModel:
        return StudentTModel(
            self.assets, self.daily_vol, self.correlation, horizon_days=horizon_days, dof=dof
        )

    def historical(self, horizon_days: Any = 1) -> HistoricalModel:
        return HistoricalModel(
            self.assets, self.residuals, self.daily_vol, horizon_days=horizon_days
        )


def calibrate(assets: Any, closes: Any, lam: float = EWMA_LAMBDA) -> Calibration:
    """Calibrate from aligned closes (T + 1, n); needs more than ``EWMA_SEED_DAYS`` + 1 days."""
    names = tuple(str(a) for a in assets)
    x = log_returns(closes)
    if x.shape[1] != len(names):
        raise InvalidParameter("closes", f"{x.shape[1]} columns for {len(names)} assets")
    if x.shape[0] <= EWMA_SEED_DAYS + 1:
        raise InvalidParameter(
            "history", f"{x.shape[0] + 1} common days, need at least {EWMA_SEED_DAYS + 3}"
        )
    vol, corr = covariance_to_correlation(ewma_covariance(x, lam))
    var_path = ewma_variance_path(x, lam)
    sd = np.sqrt(var_path[:-1])
    tail = slice(EWMA_SEED_DAYS, None)
    residuals = np.divide(x[tail], sd[tail], out=np.zeros_like(x[tail]), where=sd[tail] > 0)
    return Calibration(
        assets=names,
        returns=x,
        daily_vol=vol,
        correlation=nearest_correlation(corr),
        residuals=residuals,
        ewma_lambda=lam,
    )
