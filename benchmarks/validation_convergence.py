"""The convergence part of ``docs/VALIDATION.md``: VaR and ES error against scenarios, engine
pseudo-random draws against scrambled Sobol draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from aggregator.history import load_history
from montecarlo.convergence import ConvergencePoint, convergence_study, reference_risk
from montecarlo.forecast import window_model
from montecarlo.models import GaussianModel

#: 2^10 .. 2^20: about 1e3 to 1e6 scenarios (powers of two, where Sobol is balanced)
SIZES = tuple(1 << p for p in range(10, 21, 2))
REPEATS = 8
ALPHA = 0.99
WINDOW = 500


@dataclass(frozen=True)
class ConvergenceCase:
    title: str
    reference: tuple[float, float]
    reference_method: str
    points: list[ConvergencePoint]


def lognormal_reference(model: GaussianModel, exposure: float, alpha: float) -> tuple[float, float]:
    """Exact (VaR, ES) of a long one-asset log-normal position: L = e (1 - exp(a + s z)),
    a = -s^2 / 2, so VaR = e (1 - exp(a + s z_q)) and ES = e (1 - Phi(z_q - s) / (1 - alpha))
    with z_q = Phi^-1(1 - alpha)."""
    s = float(model.daily_vol[0] * np.sqrt(model.horizon_days[0]))
    zq = float(norm.ppf(1.0 - alpha))
    var = exposure * -np.expm1(-0.5 * s * s + s * zq)
    es = exposure * (1.0 - norm.cdf(zq - s) / (1.0 - alpha))
    return float(var), float(es)


def convergence_cases() -> list[ConvergenceCase]:
    """BTC alone (Gaussian, exact reference) and BTC/ETH/SOL (Student-t, Sobol reference),
    both calibrated on the last 500 days of the shipped closes."""
    btc = load_history(["BTC"])
    g = window_model("gaussian", btc.assets, btc.closes[-WINDOW - 1 :], 1)
    assert isinstance(g, GaussianModel)
    e1 = np.array([1e6])
    ref1 = lognormal_reference(g, 1e6, ALPHA)
    three = load_history(["BTC", "ETH", "SOL"])
    t = window_model("student_t", three.assets, three.closes[-WINDOW - 1 :], 1, dof=5.0)
    e3 = np.array([4e5, 3e5, 3e5])
    ref3 = reference_risk(t, e3, ALPHA, scenarios=1 << 22, scramblings=4)
    return [
        ConvergenceCase(
            "BTC 1M USD, Gaussian",
            ref1,
            "closed form",
            convergence_study(g, e1, ALPHA, SIZES, ref1, repeats=REPEATS),
        ),
        ConvergenceCase(
            "BTC/ETH/SOL 1M USD, Student-t (5 dof)",
            ref3,
            "mean of 4 scrambled Sobol runs of 2^22 points",
            convergence_study(t, e3, ALPHA, SIZES, ref3, repeats=REPEATS),
        ),
    ]
