"""``omnimargin risk``: a desk's portfolio priced, modelled and run through the engine.

Plain functions: the portfolio file and options in, the report dictionary out. The only I/O is
reading the price history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aggregator.errors import InputError
from aggregator.history import available_assets, load_history
from aggregator.portfolio_file import MAX_NOTIONAL_USD, ModelSpec, PortfolioFile
from montecarlo import (
    GaussianModel,
    InvalidParameter,
    Jump,
    JumpOverlay,
    RiskProblem,
    StudentTModel,
    calibrate,
    run_risk,
)
from montecarlo.engine import Executor
from montecarlo.models import ScenarioModel, check_correlation

ModelKind = Literal["gaussian", "student_t", "historical"]


@dataclass(frozen=True)
class RiskOptions:
    """The options of a risk run (CLI flags or API body)."""

    scenarios: int = 100_000
    alpha: float = 0.99
    horizon_days: float = 1.0
    model: ModelKind = "gaussian"
    dof: float = 5.0
    history: Path | None = None
    seed: int = 0
    backend: str = "numpy"


@dataclass(frozen=True, eq=False)
class PricedPortfolio:
    """Net quantities and USD exposures per asset, in the order assets first appear."""

    assets: tuple[str, ...]
    quantities: tuple[Decimal, ...]
    prices: tuple[Decimal, ...]
    exposures: np.ndarray  # (n,) USD, the one float conversion, after exact multiplication


def price_portfolio(pf: PortfolioFile, history_dir: Path | None) -> PricedPortfolio:
    """Net positions per asset and price them (file prices first, else the last close)."""
    net: dict[str, Decimal] = {}
    first_index: dict[str, int] = {}
    for i, p in enumerate(pf.positions):
        net[p.asset] = net.get(p.asset, Decimal(0)) + p.quantity
        first_index.setdefault(p.asset, i)
    unused = sorted(set(pf.prices) - set(net))
    if unused:
        raise InputError(f"prices.{unused[0]}", "no position in this asset")
    missing = [a for a in net if a not in pf.prices]
    last: dict[str, Decimal] = {}
    if missing:
        known = set(available_assets(history_dir))
        for a in missing:
            if a not in known:
                raise InputError(
                    f"positions[{first_index[a]}].asset",
                    f"unknown asset {a!r}: no price given and no history "
                    f"(history has {', '.join(sorted(known))})",
                )
        hist = load_history(missing, history_dir)
        last = {a: Decimal(repr(hist.last_close(a))) for a in missing}
    prices = {**last, **pf.prices}
    exposures = []
    for a, q in net.items():
        e = q * prices[a]
        if abs(e) > MAX_NOTIONAL_USD:
            raise InputError(
                f"positions[{first_index[a]}].quantity",
                f"absurd exposure {e:.3e} USD (limit {MAX_NOTIONAL_USD:.0e})",
            )
        exposures.append(float(e))
    assets = tuple(net)
    return PricedPortfolio(
        assets, tuple(net.values()), tuple(prices[a] for a in assets), np.array(exposures)
    )


def _per_asset(
    spec: dict[str, float] | None, assets: tuple[str, ...], default: float, field: str
) -> np.ndarray:
    spec = spec or {}
    unknown = sorted(set(spec) - set(assets))
    if unknown:
        raise InputError(f"{field}.{unknown[0]}", "no position in this asset")
    return np.array([float(spec.get(a, default)) for a in assets])


def _explicit_correlation(spec: ModelSpec, assets: tuple[str, ...]) -> np.ndarray:
    if spec.correlation is None:
        return np.eye(len(assets))
    names = spec.correlation.assets
    if len(set(names)) != len(names):
        raise InputError("model.correlation.assets", "duplicate asset names")
    rows = spec.correlation.matrix
    if len(rows) != len(names) or any(len(row) != len(names) for row in rows):
        n = len(names)
        raise InputError("model.correlation.matrix", f"expected a {n}x{n} matrix (one per asset)")
    try:
        full = check_correlation("model.correlation.matrix", spec.correlation.matrix, len(names))
    except InvalidParameter as exc:
        raise InputError(exc.field, exc.reason) from None
    missing = [a for a in assets if a not in names]
    if missing:
        raise InputError("model.correlation.assets", f"missing asset {missing[0]!r}")
    idx = [names.index(a) for a in assets]
    return full[np.ix_(idx, idx)]


def build_model(
    spec: ModelSpec | None, opts: RiskOptions, assets: tuple[str, ...]
) -> ScenarioModel:
    """The scenario model: explicit parameters from the file, or calibrated on the history."""
    kind = spec.kind if spec is not None and spec.kind is not None else opts.model
    horizons = _per_asset(
        spec.horizon_days if spec else None, assets, opts.horizon_days, "model.horizon_days"
    )
    dof = spec.dof if spec is not None and spec.dof is not None else opts.dof
    model: ScenarioModel
    if spec is not None and spec.daily_vol is not None:
        if kind == "historical":
            raise InputError("model.daily_vol", "the historical model takes no volatilities")
        missing = [a for a in assets if a not in spec.daily_vol]
        if missing:
            raise InputError("model.daily_vol", f"missing asset {missing[0]!r}")
        vol = _per_asset(spec.daily_vol, assets, 0.0, "model.daily_vol")
        mean = _per_asset(spec.daily_mean, assets, 0.0, "model.daily_mean")
        corr = _explicit_correlation(spec, assets)
        if kind == "student_t":
            model = StudentTModel(assets, vol, corr, mean, horizons, dof=dof)
        else:
            model = GaussianModel(assets, vol, corr, mean, horizons)
    else:
        if spec is not None and (spec.correlation is not None or spec.daily_mean is not None):
            raise InputError("model.daily_vol", "needed when correlation or daily_mean is given")
        cal = calibrate(assets, load_history(list(assets), opts.history).closes)
        if kind == "historical":
            if np.any(horizons != np.round(horizons)):
                raise InputError("horizon_days", "the historical model needs whole days")
            model = cal.historical(horizons.astype(int))
        elif kind == "student_t":
            model = cal.student_t(dof, horizons)
        else:
            model = cal.gaussian(horizons)
    jumps = spec.jumps if spec is not None else []
    if jumps:
        for j, jump in enumerate(jumps):
            for a in jump.assets:
                if a not in assets:
                    raise InputError(f"model.jumps[{j}].assets", f"no position in {a!r}")
        model = JumpOverlay(
            model, tuple(Jump(j.name, j.probability, j.loss, tuple(j.assets)) for j in jumps)
        )
    return model


def run_portfolio_risk(
    pf: PortfolioFile,
    opts: RiskOptions,
    executor: Executor,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Price, model and run one portfolio; the report of ``omnimargin risk --json``."""
    started = time.perf_counter()
    priced = price_portfolio(pf, opts.history)
    model = build_model(pf.model, opts, priced.assets)
    try:
        problem = RiskProblem(model, priced.exposures, opts.alpha, opts.scenarios, seed=opts.seed)
    except InvalidParameter as exc:
        raise InputError(exc.field, exc.reason) from None
    result = run_risk(problem, backend=opts.backend, executor=executor, progress=progress)
    assert result.components is not None
    horizons = np.asarray(getattr(model, "horizon_days", [opts.horizon_days]), dtype=float)
    return {
        "var": float(result.var[0]),
        "es": float(result.es[0]),
        "var_stderr": _finite_or_none(result.var_stderr[0]),
        "es_stderr": _finite_or_none(result.es_stderr[0]),
        "alpha": result.alpha,
        "horizon_days": float(horizons.max())
        if np.all(horizons == horizons.max())
        else {a: float(h) for a, h in zip(priced.assets, horizons, strict=True)},
        "scenarios": result.scenarios,
        "model": model.kind,
        "seed": result.seed,
        "backend": result.backend,
        "executor": result.executor,
        "contributions": {
            a: float(c) for a, c in zip(priced.assets, result.components[0], strict=True)
        },
        "exposures": {a: float(e) for a, e in zip(priced.assets, priced.exposures, strict=True)},
        "prices": {a: float(p) for a, p in zip(priced.assets, priced.prices, strict=True)},
        "elapsed_s": round(time.perf_counter() - started, 4),
    }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
