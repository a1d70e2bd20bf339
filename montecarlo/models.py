"""Scenario models: joint returns of n assets over each asset's liquidation horizon.

Every model is a frozen description (parameters as NumPy arrays, validated on construction) with
``sampler(xp, dtype)``, which binds it to an array namespace and returns an object with the one
interface the engine uses::

    sample(rng, m) -> r[m, n]     # simple returns over the horizon, r > -1

The transforms take their random draws as arguments (as tf-quant-finance's samplers do), so the
same draws can be pushed through the NumPy and the CuPy path and compared.

Models (DESIGN.md, "Risk model"):

* :class:`GaussianModel`: z ~ N(0, C); r = exp(mu h - sigma^2 h / 2 + sigma sqrt(h) z) - 1.
* :class:`StudentTModel`: z scaled by sqrt((nu - 2) / w), w ~ chi2(nu), one w per scenario
  shared by all assets (tail dependence), margins of unit variance.
* :class:`HistoricalModel`: filtered historical simulation (Barone-Adesi et al. 1999): blocks of
  real joint daily residuals x_t / sigma_t, rescaled by today's EWMA volatility.
* :class:`JumpOverlay`: a bridge or stablecoin fails within the horizon with probability pi and
  loses LGF of every asset tied to it; one shared Bernoulli draw per scenario per jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from montecarlo.backend import array_namespace
from montecarlo.errors import InvalidParameter


class Sampler(Protocol):
    """A model bound to an array namespace."""

    n_assets: int

    def sample(self, rng: Any, m: int) -> Any:
        """Draw ``m`` scenarios; returns simple returns of shape (m, n)."""
        ...


class ScenarioModel(Protocol):
    """What the engine needs of a model."""

    @property
    def kind(self) -> str: ...

    @property
    def assets(self) -> tuple[str, ...]: ...

    def sampler(self, xp: ModuleType, dtype: str = "float64") -> Sampler: ...

    def describe(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- transforms


def correlate(z: Any, factor_t: Any) -> Any:
    """Correlated normals ``z @ F.T`` where ``F F^T = C``; z (m, n), factor_t (n, n)."""
    return z @ factor_t


def student_t_scale(w: Any, dof: float) -> Any:
    """Per-scenario scale sqrt((nu - 2) / w) turning N(0, 1) into unit-variance t(nu); w (m,)."""
    xp = array_namespace(w)
    return xp.sqrt((dof - 2.0) / w)


def lognormal_returns(x: Any, drift: Any, scale: Any) -> Any:
    """Simple returns ``exp(drift + scale * x) - 1``; x (m, n), drift and scale (n,)."""
    xp = array_namespace(x)
    return xp.expm1(drift + scale * x)


def apply_jumps(r: Any, hits: Any, losses: Any) -> Any:
    """Apply jump losses to returns: ``(1 + r) * prod_j (1 - hit_j * LGF_j) - 1``.

    Parameters
    ----------
    r : (m, n) simple returns.
    hits : (m, J) 0/1 indicators, one column per jump.
    losses : (J, n) fraction of value lost by asset i when jump j happens (0 where not tied).
    """
    keep = 1.0 - hits[:, 0:1] * losses[0]
    for j in range(1, int(losses.shape[0])):
        keep = keep * (1.0 - hits[:, j : j + 1] * losses[j])
    return (1.0 + r) * keep - 1.0


# --------------------------------------------------------------------------- validation


def _vector(name: str, values: Any, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise InvalidParameter(name, f"expected {n} values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidParameter(name, "must be finite")
    return a


def check_correlation(name: str, c: Any, n: int, tol: float = 1e-8) -> np.ndarray:
    """Validate a correlation matrix: (n, n), finite, symmetric, unit diagonal, PSD."""
    a = np.asarray(c, dtype=np.float64)
    if a.shape != (n, n):
        raise InvalidParameter(name, f"expected a {n}x{n} matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidParameter(name, "must be finite")
    if not np.allclose(a, a.T, atol=tol):
        raise InvalidParameter(name, "is not symmetric")
    if not np.allclose(np.diag(a), 1.0, atol=tol):
        raise InvalidParameter(name, "diagonal must be 1")
    if np.any(np.abs(a) > 1.0 + tol):
        raise InvalidParameter(name, "entries must lie in [-1, 1]")
    smallest = float(np.linalg.eigvalsh((a + a.T) / 2)[0])
    if smallest < -1e-8:
        raise InvalidParameter(name, f"is not positive semi-definite (eigenvalue {smallest:.4g})")
    return (a + a.T) / 2


def correlation_factor(c: np.ndarray) -> np.ndarray:
    """F with F F^T = C from the eigen-decomposition; works for singular PSD matrices."""
    vals, vecs = np.linalg.eigh(c)
    factor: np.ndarray = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return factor


def _assets(assets: Any) -> tuple[str, ...]:
    names = tuple(str(a) for a in assets)
    if not names:
        raise InvalidParameter("assets", "at least one asset is needed")
    if len(set(names)) != len(names):
        raise InvalidParameter("assets", f"duplicate asset names in {list(names)}")
    return names


def _horizons(value: Any, n: int) -> np.ndarray:
    h = _vector("horizon_days", value, n)
    if np.any(h <= 0):
        raise InvalidParameter("horizon_days", f"must be > 0, got {h.min():g}")
    return h


# --------------------------------------------------------------------------- parametric models


@dataclass(frozen=True, eq=False)
class GaussianModel:
    """Correlated log-normal returns.

    Attributes
    ----------
    assets : names, length n.
    daily_vol : (n,) daily log-return volatilities sigma.
    correlation : (n, n) correlation matrix C.
    daily_mean : (n,) daily log drift mu (zero by default).
    horizon_days : (n,) liquidation horizon h of each asset, in days.
    """

    assets: tuple[str, ...]
    daily_vol: np.ndarray
    correlation: np.ndarray
    daily_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    horizon_days: Any = 1.0
    kind: str = field(default="gaussian", init=False)

    def __post_init__(self) -> None:
        assets = _assets(self.assets)
        n = len(assets)
        vol = _vector("daily_vol", self.daily_vol, n)
        if np.any(vol < 0):
            raise InvalidParameter("daily_vol", f"must be >= 0, got {vol.min():g}")
        mean = self.daily_mean if np.size(self.daily_mean) else np.zeros(n)
        object.__setattr__(self, "assets", assets)
        object.__setattr__(self, "daily_vol", vol)
        object.__setattr__(self, "daily_mean", _vector("daily_mean", mean, n))
        object.__setattr__(
            self, "correlation", check_correlation("correlation", self.correlation, n)
        )
        object.__setattr__(self, "horizon_days", _horizons(self.horizon_days, n))

    @property
    def n_assets(self) -> int:
        return len(self.assets)

    def _dof(self) -> float | None:
        return None

    def sampler(self, xp: ModuleType, dtype: str = "float64") -> Sampler:
        h = self.horizon_days
        drift = self.daily_mean * h - 0.5 * self.daily_vol**2 * h
        scale = self.daily_vol * np.sqrt(h)
        return _ParametricSampler(
            xp=xp,
            dtype=dtype,
            n_assets=self.n_assets,
            factor_t=xp.asarray(correlation_factor(self.correlation).T, dtype=dtype),
            drift=xp.asarray(drift, dtype=dtype),
            scale=xp.asarray(scale, dtype=dtype),
            dof=self._dof(),
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "assets": list(self.assets),
            "daily_vol": self.daily_vol.tolist(),
            "daily_mean": self.daily_mean.tolist(),
            "correlation": self.correlation.tolist(),
            "horizon_days": self.horizon_days.tolist(),
        }
        if self._dof() is not None:
            out["dof"] = self._dof()
        return out


@dataclass(frozen=True, eq=False)
class StudentTModel(GaussianModel):
    """Student-t (multivariate t) returns with ``dof`` degrees of freedom, nu > 2."""

    dof: float = 4.0
    kind: str = field(default="student_t", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.dof) and self.dof > 2.0):
            raise InvalidParameter("dof", f"must be a finite number > 2, got {self.dof!r}")

    def _dof(self) -> float | None:
        return float(self.dof)


@dataclass
class _ParametricSampler:
    xp: ModuleType
    dtype: str
    n_assets: int
    factor_t: Any
    drift: Any
    scale: Any
    dof: float | None

    def sample(self, rng: Any, m: int) -> Any:
        z = correlate(rng.standard_normal((m, self.n_assets), dtype=self.dtype), self.factor_t)
        if self.dof is not None:
            w = rng.chisquare(self.dof, size=m).astype(self.dtype)
            z = z * student_t_scale(w, self.dof)[:, None]
        return lognormal_returns(z, self.drift, self.scale)


# --------------------------------------------------------------------------- historical


@dataclass(frozen=True, eq=False)
class HistoricalModel:
    """Filtered historical simulation.

    Attributes
    ----------
    assets : names, length n.
    residuals : (T, n) standardised joint daily log returns x_t / sigma_t (same dates per row).
    current_vol : (n,) today's EWMA volatility forecast, the scale applied to residuals.
    horizon_days : (n,) whole days; a scenario sums a block of h_i consecutive residual days.
    """

    assets: tuple[str, ...]
    residuals: np.ndarray
    current_vol: np.ndarray
    horizon_days: Any = 1
    kind: str = field(default="historical", init=False)

    def __post_init__(self) -> None:
        assets = _assets(self.assets)
        n = len(assets)
        res = np.asarray(self.residuals, dtype=np.float64)
        if res.ndim != 2 or res.shape[1] != n:
            raise InvalidParameter("residuals", f"expected shape (T, {n}), got {res.shape}")
        if not np.all(np.isfinite(res)):
            raise InvalidParameter("residuals", "must be finite")
        vol = _vector("current_vol", self.current_vol, n)
        if np.any(vol < 0):
            raise InvalidParameter("current_vol", "must be >= 0")
        h = _horizons(self.horizon_days, n)
        if np.any(h != np.round(h)):
            raise InvalidParameter("horizon_days", "historical simulation needs whole days")
        if res.shape[0] < int(h.max()) + 1:
            raise InvalidParameter(
                "residuals", f"{res.shape[0]} days of history, need more than {int(h.max())}"
            )
        object.__setattr__(self, "assets", assets)
        object.__setattr__(self, "residuals", res)
        object.__setattr__(self, "current_vol", vol)
        object.__setattr__(self, "horizon_days", h.astype(np.int64))

    @property
    def n_assets(self) -> int:
        return len(self.assets)

    def sampler(self, xp: ModuleType, dtype: str = "float64") -> Sampler:
        h = self.horizon_days
        # day_mask[j, i] = 1 while day j is inside asset i's horizon
        day_mask = (np.arange(int(h.max()))[:, None] < h[None, :]).astype(np.float64)
        return _HistoricalSampler(
            xp=xp,
            n_assets=self.n_assets,
            residuals=xp.asarray(self.residuals * self.current_vol, dtype=dtype),
            day_mask=xp.asarray(day_mask, dtype=dtype),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "assets": list(self.assets),
            "current_vol": self.current_vol.tolist(),
            "horizon_days": self.horizon_days.tolist(),
            "history_days": int(self.residuals.shape[0]),
            "residuals_sha256": _sha256(self.residuals),
        }


def _sha256(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()


@dataclass
class _HistoricalSampler:
    xp: ModuleType
    n_assets: int
    residuals: Any  # (T, n), already rescaled by the current vol
    day_mask: Any  # (hmax, n)

    def sample(self, rng: Any, m: int) -> Any:
        xp = self.xp
        hmax, t = int(self.day_mask.shape[0]), int(self.residuals.shape[0])
        starts = rng.integers(0, t - hmax + 1, size=m)
        log_r = self.residuals[starts] * self.day_mask[0]
        for j in range(1, hmax):
            log_r += self.residuals[starts + j] * self.day_mask[j]
        return xp.expm1(log_r)


# --------------------------------------------------------------------------- jumps


@dataclass(frozen=True)
class Jump:
    """A named event (bridge failure, stablecoin depeg) within the horizon.

    ``probability`` of happening within the horizon, ``loss`` the fraction of value lost by each
    of ``assets`` when it does.
    """

    name: str
    probability: float
    loss: float
    assets: tuple[str, ...]

    def __post_init__(self) -> None:
        where = f"jumps[{self.name}]"
        if not (math.isfinite(self.probability) and 0.0 <= self.probability <= 1.0):
            raise InvalidParameter(
                f"{where}.probability", f"must be in [0, 1], got {self.probability!r}"
            )
        if not (math.isfinite(self.loss) and 0.0 <= self.loss <= 1.0):
            raise InvalidParameter(f"{where}.loss", f"must be in [0, 1], got {self.loss!r}")
        object.__setattr__(self, "assets", tuple(self.assets))
        if not self.assets:
            raise InvalidParameter(f"{where}.assets", "must name at least one asset")


@dataclass(frozen=True, eq=False)
class JumpOverlay:
    """A base model with jump events laid over it."""

    base: Any  # a ScenarioModel
    jumps: tuple[Jump, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "jumps", tuple(self.jumps))
        known = set(self.base.assets)
        for j in self.jumps:
            for a in j.assets:
                if a not in known:
                    raise InvalidParameter(f"jumps[{j.name}].assets", f"unknown asset {a!r}")
        if len({j.name for j in self.jumps}) != len(self.jumps):
            raise InvalidParameter("jumps", "jump names must be unique")

    @property
    def kind(self) -> str:
        return str(self.base.kind)

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self.base.assets)

    @property
    def n_assets(self) -> int:
        return len(self.assets)

    @property
    def horizon_days(self) -> np.ndarray:
        return np.asarray(self.base.horizon_days)

    def loss_matrix(self) -> np.ndarray:
        """(J, n) fraction of value lost by asset i when jump j happens."""
        index = {a: i for i, a in enumerate(self.assets)}
        out = np.zeros((len(self.jumps), self.n_assets))
        for j, jump in enumerate(self.jumps):
            for a in jump.assets:
                out[j, index[a]] = jump.loss
        return out

    def sampler(self, xp: ModuleType, dtype: str = "float64") -> Sampler:
        return _JumpSampler(
            xp=xp,
            dtype=dtype,
            n_assets=self.n_assets,
            base=self.base.sampler(xp, dtype),
            probabilities=xp.asarray([j.probability for j in self.jumps], dtype=dtype),
            losses=xp.asarray(self.loss_matrix(), dtype=dtype),
        )

    def describe(self) -> dict[str, Any]:
        out = dict(self.base.describe())
        out["jumps"] = [
            {"name": j.name, "probability": j.probability, "loss": j.loss, "assets": list(j.assets)}
            for j in self.jumps
        ]
        return out


@dataclass
class _JumpSampler:
    xp: ModuleType
    dtype: str
    n_assets: int
    base: Sampler
    probabilities: Any  # (J,)
    losses: Any  # (J, n)

    def sample(self, rng: Any, m: int) -> Any:
        r = self.base.sample(rng, m)
        if self.probabilities.shape[0] == 0:
            return r
        u = rng.random((m, int(self.probabilities.shape[0])), dtype=self.dtype)
        hits = (u < self.probabilities).astype(self.dtype)
        return apply_jumps(r, hits, self.losses)


# --------------------------------------------------------------------------- asset order


def reorder(model: Any, order: Any) -> Any:
    """The same model with its assets in ``order`` (a permutation of range(n)).

    The engine draws in one canonical order (assets sorted by name, jumps by name), so the
    figures do not depend on the order in which a user lists the assets.
    """
    idx = np.asarray(order, dtype=np.int64)
    names = tuple(model.assets[i] for i in idx)
    if isinstance(model, JumpOverlay):
        jumps = tuple(sorted(model.jumps, key=lambda j: j.name))
        return JumpOverlay(reorder(model.base, idx), jumps)
    if isinstance(model, HistoricalModel):
        return HistoricalModel(
            names, model.residuals[:, idx], model.current_vol[idx], model.horizon_days[idx]
        )
    if isinstance(model, GaussianModel):
        args = (
            names,
            model.daily_vol[idx],
            model.correlation[np.ix_(idx, idx)],
            model.daily_mean[idx],
            model.horizon_days[idx],
        )
        if isinstance(model, StudentTModel):
            return StudentTModel(*args, dof=model.dof)
        return GaussianModel(*args)
    raise InvalidParameter("model", f"unknown model type {type(model).__name__}")


def canonical_order(assets: tuple[str, ...]) -> np.ndarray:
    """Permutation that sorts asset names: canonical[j] = assets[order[j]]."""
    return np.argsort(np.asarray(assets, dtype=object), kind="stable").astype(np.int64)
