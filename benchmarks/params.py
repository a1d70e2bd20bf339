"""Model parameters and exposures for the benchmark, from the real shipped price history.

No market data is invented: the nine assets in ``aggregator/data/prices`` are calibrated with
:func:`montecarlo.calibrate` (RiskMetrics EWMA), and an n-asset model is built by tiling them:
asset j has the real volatility of asset ``j mod 9`` and the correlation matrix is
``0.9 * tiled real correlation + 0.1 * identity`` (positive semi-definite, unit diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.history import available_assets, load_history
from montecarlo import GaussianModel, calibrate

#: seed of the exposure matrix (fixed, so every run benchmarks the same portfolios)
EXPOSURE_SEED = 20_240_601
#: weight of the tiled real correlation; the rest goes to the identity
TILE_WEIGHT = 0.9


@dataclass(frozen=True)
class RealParameters:
    """Calibration of the shipped history: the source of every benchmark model.

    Attributes
    ----------
    assets : the real asset names (9 shipped).
    daily_vol : (9,) EWMA daily log-return volatilities.
    correlation : (9, 9) EWMA correlation, repaired by nearest-correlation projection.
    first_day, last_day : ISO dates of the common history.
    days : number of common days.
    """

    assets: tuple[str, ...]
    daily_vol: np.ndarray
    correlation: np.ndarray
    first_day: str
    last_day: str
    days: int


def real_parameters() -> RealParameters:
    """Calibrate on all assets shipped in ``aggregator/data/prices``."""
    assets = available_assets()
    history = load_history(assets)
    cal = calibrate(history.assets, history.closes)
    return RealParameters(
        assets=cal.assets,
        daily_vol=cal.daily_vol,
        correlation=cal.correlation,
        first_day=str(history.dates[0]),
        last_day=str(history.dates[-1]),
        days=len(history.dates),
    )


def tiled_model(real: RealParameters, n: int) -> GaussianModel:
    """An n-asset Gaussian model tiling the real assets (1-day horizon, zero drift)."""
    idx = np.arange(n) % len(real.assets)
    names = tuple(f"{real.assets[i]}_{j // len(real.assets)}" for j, i in enumerate(idx))
    corr = TILE_WEIGHT * real.correlation[np.ix_(idx, idx)] + (1.0 - TILE_WEIGHT) * np.eye(n)
    return GaussianModel(names, real.daily_vol[idx], corr)


def exposures(n: int, accounts: int, seed: int = EXPOSURE_SEED) -> np.ndarray:
    """(n, A) long/short USD exposures: random signs, log-uniform sizes from $1k to $100k."""
    rng = np.random.default_rng(seed)
    sizes = 10.0 ** rng.uniform(3.0, 5.0, size=(n, accounts))
    signs = np.where(rng.random((n, accounts)) < 0.5, -1.0, 1.0)
    out: np.ndarray = sizes * signs
    return out


def horizon_moments(model: GaussianModel) -> tuple[np.ndarray, np.ndarray]:
    """Mean (n,) and covariance (n, n) of the horizon log returns of ``model``."""
    h = np.asarray(model.horizon_days, dtype=np.float64)
    scale = model.daily_vol * np.sqrt(h)
    mean = model.daily_mean * h - 0.5 * model.daily_vol**2 * h
    cov = model.correlation * np.outer(scale, scale)
    return mean, cov
