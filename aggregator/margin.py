"""Unified margin (DESIGN.md, "Margin"): equity, MM, IM, free margin, health, and the IM change
of a new position computed from the account's scenario P&L.

MM = ES at ``mm_alpha`` (97.5 %) of the portfolio loss over the liquidation horizons; IM = ES at
``im_alpha`` (99 %), or MM times ``im_multiplier``. All accounts of an epoch share one scenario
set over a fixed universe of risk columns (every canonical asset and bridged representation the
config knows), so an account's figure does not depend on who else is in the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from aggregator.valuation import Valuation
from montecarlo import (
    GaussianModel,
    HistoricalModel,
    Jump,
    JumpOverlay,
    RiskProblem,
    StudentTModel,
    calibrate,
    draw_scenarios,
    expected_shortfall,
    value_at_risk,
)
from montecarlo.measures import batch_stderr, component_es
from montecarlo.models import ScenarioModel


@dataclass(frozen=True)
class MarginPolicy:
    mm_alpha: float = 0.975
    im_alpha: float = 0.99
    im_multiplier: float | None = None
    horizon_days: float = 1.0
    horizons: dict[str, float] = field(default_factory=dict)  # per canonical asset
    scenarios: int = 100_000
    seed: int = 0
    model: Literal["gaussian", "student_t", "historical"] = "gaussian"
    dof: float = 5.0
    price_tolerance: Fraction = Fraction(2, 100)

    def horizon(self, asset: str) -> float:
        return float(self.horizons.get(asset, self.horizon_days))


def base_asset(column: str) -> str:
    """``"USDC@canonical-arb"`` -> ``"USDC"``."""
    return column.split("@", 1)[0]


def column_model(
    columns: tuple[str, ...],
    assets: tuple[str, ...],
    closes: np.ndarray,
    policy: MarginPolicy,
    jumps: list[Jump],
) -> ScenarioModel:
    """The scenario model over risk columns, calibrated on the closes of their base assets.

    A bridged column moves with its base asset (correlation 1) and adds its bridge's jump.
    """
    cal = calibrate(assets, closes)
    idx = np.array([assets.index(base_asset(c)) for c in columns])
    h = np.array([policy.horizon(base_asset(c)) for c in columns])
    model: ScenarioModel
    if policy.model == "historical":
        model = HistoricalModel(columns, cal.residuals[:, idx], cal.daily_vol[idx], h.astype(int))
    elif policy.model == "student_t":
        corr = cal.correlation[np.ix_(idx, idx)]
        model = StudentTModel(columns, cal.daily_vol[idx], corr, horizon_days=h, dof=policy.dof)
    else:
        corr = cal.correlation[np.ix_(idx, idx)]
        model = GaussianModel(columns, cal.daily_vol[idx], corr, horizon_days=h)
    live = [j for j in jumps if j.probability > 0 and j.loss > 0]
    return JumpOverlay(model, tuple(live)) if live else model


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """The epoch's scenario returns (M, n) over ``columns`` and the chunk bounds for the errors."""

    columns: tuple[str, ...]
    returns: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    model: dict[str, Any]

    @classmethod
    def draw(cls, model: ScenarioModel, policy: MarginPolicy) -> ScenarioSet:
        n = len(model.assets)
        problem = RiskProblem(
            model, np.zeros((n, 1)), policy.mm_alpha, policy.scenarios, policy.seed
        )
        r = np.asarray(draw_scenarios(problem), dtype=np.float64)
        bounds = tuple(problem.plan.bounds(c) for c in range(problem.plan.n_chunks))
        return cls(tuple(model.assets), r, bounds, model.describe())

    def column(self, name: str) -> int:
        return self.columns.index(name)

    def column_returns(self, name: str) -> np.ndarray:
        """Returns of one column (M,), contiguous (kept: what-if IM reads it on every call)."""
        cache: dict[str, np.ndarray] = self.__dict__.setdefault("_columns", {})
        found = cache.get(name)
        if found is None:
            found = cache[name] = np.ascontiguousarray(self.returns[:, self.column(name)])
        return found

    def vector(self, exposures: dict[str, Fraction]) -> np.ndarray:
        """USD exposures per column as a vector (n,) in the set's column order."""
        e = np.zeros(len(self.columns))
        for col, usd in exposures.items():
            e[self.column(col)] += float(usd)
        return e

    def pnl(self, exposures: dict[str, Fraction]) -> np.ndarray:
        """Scenario P&L (M,) of USD exposures per column."""
        pnl: np.ndarray = self.returns @ self.vector(exposures)
        return pnl


@dataclass(frozen=True)
class TailFigures:
    var: float
    es: float
    var_stderr: float | None
    es_stderr: float | None


def tail_figures(pnl: np.ndarray, alpha: float, bounds: tuple[tuple[int, int], ...]) -> TailFigures:
    """VaR and ES of the loss -pnl with batch-means standard errors over the chunks."""
    losses = -pnl
    per = np.array(
        [
            [value_at_risk(losses[a:b], alpha), expected_shortfall(losses[a:b], alpha)]
            for a, b in bounds
        ]
    )
    se = batch_stderr(per)
    return TailFigures(
        float(value_at_risk(losses, alpha)),
        float(expected_shortfall(losses, alpha)),
        None if math.isnan(se[0]) else float(se[0]),
        None if math.isnan(se[1]) else float(se[1]),
    )


def component_es_of(
    scen: ScenarioSet, exposures: dict[str, Fraction], alpha: float
) -> dict[str, float]:
    """Euler ES contribution of each column (ties at VaR shared evenly); sums to ES."""
    parts = component_es(scen.returns, scen.vector(exposures), alpha)
    return {col: float(parts[scen.column(col)]) for col in exposures}


@dataclass(frozen=True)
class MarginFigures:
    equity: Fraction
    maintenance_margin: float
    initial_margin: float
    reserved: float
    mm: TailFigures
    im: TailFigures
    by_asset: dict[str, float]
    by_chain: dict[str, float]
    reasons: tuple[str, ...]
    unknown: bool = False  # a position or debt with an asset unpriced: health unknowable

    @property
    def free_margin(self) -> float:
        return float(self.equity) - self.initial_margin - self.reserved

    @property
    def health(self) -> float | None:
        if self.unknown or self.maintenance_margin <= 0:
            return None
        return float(self.equity) / self.maintenance_margin

    @property
    def liquidatable(self) -> bool | None:
        """Equity below MM at good prices; None (never False) when health is unknown."""
        return None if self.unknown else float(self.equity) < self.maintenance_margin

    @property
    def status(self) -> str:
        """``unknown`` (see ``unknown``), ``degraded`` (data behind it is), or ``ok``."""
        return "unknown" if self.unknown else "degraded" if self.reasons else "ok"


def initial_margin(
    pnl: np.ndarray, scen: ScenarioSet, policy: MarginPolicy
) -> tuple[TailFigures, TailFigures, float]:
    mm = tail_figures(pnl, policy.mm_alpha, scen.bounds)
    if policy.im_multiplier is not None:
        return mm, mm, max(mm.es, 0.0) * policy.im_multiplier
    im = tail_figures(pnl, policy.im_alpha, scen.bounds)
    return mm, im, max(im.es, 0.0)


def margin_of(
    val: Valuation,
    scen: ScenarioSet,
    policy: MarginPolicy,
    reserved: float = 0.0,
    extra_reasons: tuple[str, ...] = (),
) -> MarginFigures:
    """Margin figures of one valued portfolio on the epoch's scenarios."""
    exposures = {c: e for c, e in val.exposures.items() if e != 0}
    pnl = scen.pnl(exposures)
    mm, im, im_value = initial_margin(pnl, scen, policy)
    by_column = component_es_of(scen, exposures, policy.mm_alpha) if exposures else {}
    return figures_of(val, mm, im, im_value, by_column, reserved, extra_reasons)


def figures_of(
    val: Valuation,
    mm: TailFigures,
    im: TailFigures,
    im_value: float,
    by_column: dict[str, float],
    reserved: float = 0.0,
    extra_reasons: tuple[str, ...] = (),
) -> MarginFigures:
    """Margin figures from the tail figures and the ES contribution of each risk column
    (however they were computed: this process's scenario set or the engine on a cluster)."""
    exposures = {c: e for c, e in val.exposures.items() if e != 0}
    by_chain: dict[str, float] = {}
    for line, load in zip(val.portfolio.lines, val.line_exposures, strict=True):
        total = exposures.get(line.column)
        if not total or not load:
            continue
        key = str(line.chain_id) if line.chain_id is not None else line.source
        by_chain[key] = by_chain.get(key, 0.0) + by_column[line.column] * float(load / total)
    by_asset: dict[str, float] = {}
    for col, part in by_column.items():
        by_asset[base_asset(col)] = by_asset.get(base_asset(col), 0.0) + part
    return MarginFigures(
        val.equity,
        max(mm.es, 0.0),
        im_value,
        reserved,
        mm,
        im,
        by_asset,
        by_chain,
        tuple(dict.fromkeys((*val.reasons, *extra_reasons))),
        val.unknown,
    )


def im_value(pnl: np.ndarray, policy: MarginPolicy) -> float:
    """IM alone (no MM, no standard errors): the third figure of :func:`initial_margin`."""
    if policy.im_multiplier is not None:
        return max(float(expected_shortfall(-pnl, policy.mm_alpha)), 0.0) * policy.im_multiplier
    return max(float(expected_shortfall(-pnl, policy.im_alpha)), 0.0)


def im_with_position(
    pnl: np.ndarray, scen: ScenarioSet, column: str, delta_usd: float, policy: MarginPolicy
) -> float:
    """IM after adding ``delta_usd`` of exposure to ``column``: P&L' = P&L + r[:, i] * delta."""
    after = pnl + scen.column_returns(column) * delta_usd
    return im_value(after, policy)
