"""Monte Carlo risk engine: scenario models, calibration, risk measures, backends, executors.

Pure computation: arrays in, arrays out; no I/O and no imports from the other omnimargin
packages. The same code runs on NumPy and CuPy (``xp``) and spreads over Ray.
"""

from montecarlo.backend import Backend, array_namespace, resolve_backend, to_numpy
from montecarlo.calibration import Calibration, calibrate, nearest_correlation
from montecarlo.engine import RiskProblem, RiskResult, draw_scenarios, plan_chunks, run_risk
from montecarlo.errors import BackendUnavailable, InvalidParameter, MonteCarloError
from montecarlo.executors import LocalExecutor, RayExecutor, RayUnavailable
from montecarlo.measures import (
    component_es,
    expected_shortfall,
    tail_count,
    value_at_risk,
    what_if,
)
from montecarlo.models import (
    GaussianModel,
    HistoricalModel,
    Jump,
    JumpOverlay,
    ScenarioModel,
    StudentTModel,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Calibration",
    "GaussianModel",
    "HistoricalModel",
    "InvalidParameter",
    "Jump",
    "JumpOverlay",
    "LocalExecutor",
    "MonteCarloError",
    "RayExecutor",
    "RayUnavailable",
    "RiskProblem",
    "RiskResult",
    "ScenarioModel",
    "StudentTModel",
    "array_namespace",
    "calibrate",
    "component_es",
    "draw_scenarios",
    "expected_shortfall",
    "nearest_correlation",
    "plan_chunks",
    "resolve_backend",
    "run_risk",
    "tail_count",
    "to_numpy",
    "value_at_risk",
    "what_if",
]
