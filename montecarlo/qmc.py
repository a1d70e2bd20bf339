"""Scrambled Sobol (quasi-random) scenario draws, an alternative to the engine's pseudo-random ones.

Owen-scrambled Sobol points (``scipy.stats.qmc.Sobol``, seeded) are pushed through the same
transforms as the models' own samplers (:mod:`montecarlo.models`): normal inverse CDF, the
correlation factor, the Student-t mixing variable by its chi-squared inverse CDF, the log-normal
map; for filtered historical simulation one coordinate picks the block of residual days. The
number of points is rounded up to a power of two, where Sobol sequences are balanced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from montecarlo.errors import InvalidParameter
from montecarlo.models import (
    GaussianModel,
    HistoricalModel,
    StudentTModel,
    correlate,
    correlation_factor,
    lognormal_returns,
    student_t_scale,
)

SAMPLERS = ("mc", "sobol")
#: Sobol points are kept this far from 0 and 1 so that the inverse CDFs stay finite
EDGE = 1e-12


def sobol_size(m: int) -> int:
    """The number of Sobol points drawn for ``m`` scenarios: the next power of two."""
    if m < 1:
        raise InvalidParameter("scenarios", f"must be >= 1, got {m}")
    return 1 << max(0, math.ceil(math.log2(m)))


def sobol_uniforms(d: int, m: int, seed: int) -> np.ndarray:
    """(sobol_size(m), d) scrambled Sobol points in the open unit cube."""
    from scipy.stats import qmc  # scipy.stats is slow to import; only Sobol users pay for it

    engine = qmc.Sobol(d, scramble=True, seed=np.random.default_rng(seed))
    u = engine.random_base2(int(math.log2(sobol_size(m))))
    out: np.ndarray = np.clip(u, EDGE, 1.0 - EDGE)
    return out


def sobol_returns(model: Any, m: int, seed: int) -> np.ndarray:
    """Scenario returns (sobol_size(m), n) of a Gaussian, Student-t or historical model.

    Parameters
    ----------
    model : :class:`GaussianModel`, :class:`StudentTModel` or :class:`HistoricalModel`
        (jump overlays are not supported).
    m : scenarios wanted; rounded up to a power of two.
    seed : the scrambling seed.
    """
    from scipy.stats import chi2, norm

    if isinstance(model, HistoricalModel):
        return _historical(model, m, seed)
    if not isinstance(model, GaussianModel):
        raise InvalidParameter("sampler", f"sobol draws do not support {type(model).__name__}")
    n = model.n_assets
    t_dof = float(model.dof) if isinstance(model, StudentTModel) else None
    u = sobol_uniforms(n + (1 if t_dof is not None else 0), m, seed)
    z = correlate(norm.ppf(u[:, :n]), correlation_factor(model.correlation).T)
    if t_dof is not None:
        w = chi2.ppf(u[:, n], t_dof)
        z = z * student_t_scale(w, t_dof)[:, None]
    h = np.asarray(model.horizon_days, dtype=np.float64)
    drift = model.daily_mean * h - 0.5 * model.daily_vol**2 * h
    out: np.ndarray = lognormal_returns(z, drift, model.daily_vol * np.sqrt(h))
    return out


def _historical(model: HistoricalModel, m: int, seed: int) -> np.ndarray:
    h = np.asarray(model.horizon_days, dtype=np.int64)
    hmax, t = int(h.max()), int(model.residuals.shape[0])
    u = sobol_uniforms(1, m, seed)[:, 0]
    starts = np.minimum((u * (t - hmax + 1)).astype(np.int64), t - hmax)
    scaled = model.residuals * model.current_vol
    log_r = np.zeros((starts.size, model.n_assets))
    for j in range(hmax):
        log_r += scaled[starts + j] * (j < h)
    out: np.ndarray = np.expm1(log_r)
    return out
