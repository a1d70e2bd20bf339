"""Helpers for the Monte Carlo tests: small models and an independent two-asset reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.optimize import brentq
from scipy.stats import norm

from montecarlo import GaussianModel


class TwoAssetLognormal:
    """Exact VaR/ES of L = -sum_i e_i (exp(a_i + s_i z_i) - 1), corr(z1, z2) = rho.

    Conditional on z1 the loss is monotone in the independent part w of z2, so the exceedance
    probability and the tail expectation are closed forms in w; z1 is integrated with 160-point
    Gauss-Hermite quadrature. Independent of the engine's sampling code.
    """

    def __init__(self, e: np.ndarray, a: np.ndarray, s: np.ndarray, rho: float) -> None:
        self.e, self.a, self.s, self.rho = e, a, s, rho
        self.z, w = hermegauss(160)
        self.w = w / np.sqrt(2 * np.pi)
        self.b = s[1] * np.sqrt(1 - rho**2)

    def _parts(self, x: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e, a, s, z = self.e, self.a, self.s, self.z
        const = -e[0] * np.expm1(a[0] + s[0] * z) + e[1]  # L = const - e2 * exp(c + b w)
        c = a[1] + s[1] * self.rho * z
        u = (const - x) / e[1]  # L > x  <=>  e2 exp(c + b w) < const - x
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(u > 0, (np.log(np.where(u > 0, u, 1.0)) - c) / self.b, -np.inf)
        return const, c, t

    def exceed(self, x: float) -> float:
        assert self.e[1] > 0
        _, _, t = self._parts(x)
        return float(self.w @ norm.cdf(t))

    def var(self, alpha: float) -> float:
        return float(brentq(lambda x: self.exceed(x) - (1 - alpha), -1e9, 1e9, xtol=1e-10))

    def es(self, alpha: float) -> float:
        x = self.var(alpha)
        const, c, t = self._parts(x)
        tail = const * norm.cdf(t) - self.e[1] * np.exp(c + self.b**2 / 2) * norm.cdf(t - self.b)
        return float(self.w @ tail) / (1 - alpha)


@pytest.fixture
def two_asset() -> tuple[GaussianModel, np.ndarray, TwoAssetLognormal]:
    vol = np.array([0.04, 0.025])
    h = np.array([1.0, 3.0])
    rho = 0.6
    model = GaussianModel(("ETH", "BTC"), vol, [[1, rho], [rho, 1]], horizon_days=h)
    e = np.array([250_000.0, 400_000.0])
    a = -0.5 * vol**2 * h
    s = vol * np.sqrt(h)
    return model, e, TwoAssetLognormal(e, a, s, rho)
