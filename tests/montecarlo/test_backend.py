"""Backends: NumPy always, CuPy only with a GPU; and the GPU path checked without a GPU.

cupy installs and imports on a machine without a GPU and fails only when it touches the
device. The engine is run here through a namespace that records every ``xp.`` function and
every random-generator method it calls; each must exist in the installed cupy (for the
generator: ``cupy.random.Generator``, which lacks much of NumPy's).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import montecarlo
from montecarlo import (
    BackendUnavailable,
    GaussianModel,
    InvalidParameter,
    Jump,
    JumpOverlay,
    RiskProblem,
    StudentTModel,
    calibrate,
    draw_scenarios,
    resolve_backend,
    run_risk,
)
from montecarlo.backend import Backend

cupy = pytest.importorskip("cupy", reason="cupy is in the dev extras; install .[dev]")


def _gpu_usable() -> bool:
    try:
        resolve_backend("cupy")
    except BackendUnavailable:
        return False
    return True


GPU = _gpu_usable()


@pytest.mark.skipif(GPU, reason="this machine has a GPU: the fallback is not taken")
def test_auto_falls_back_to_numpy_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="montecarlo.backend"):
        backend = resolve_backend("auto")
    assert backend.name == "numpy" and backend.xp is np
    assert any("using numpy" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_explicit_cupy_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailable, match=r"^backend: cupy"):
        resolve_backend("cupy")
    model = GaussianModel(("BTC",), [0.03], [[1.0]])
    with pytest.raises(BackendUnavailable):
        run_risk(RiskProblem(model, [1e4], 0.99, 1000), backend="cupy")


def test_unknown_backend_names_the_field() -> None:
    with pytest.raises(InvalidParameter, match="backend"):
        resolve_backend("tpu")


# --------------------------------------------------------------------------- recording


class Recorder:
    def __init__(self) -> None:
        self.calls: dict[str, set[str]] = {}

    def note(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.setdefault(name, set()).update(kwargs)


class RecordingGenerator:
    def __init__(self, rng: np.random.Generator, rec: Recorder) -> None:
        self._rng, self._rec = rng, rec

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._rng, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._rec.note(f"Generator.{name}", kwargs)
            return target(*args, **kwargs)

        return call


class RecordingNamespace(ModuleType):
    """Stands in for ``numpy`` as ``xp``; records what is used under which dotted name."""

    def __init__(self, module: ModuleType, rec: Recorder, prefix: str = "") -> None:
        super().__init__(module.__name__)
        self._module, self._rec, self._prefix = module, rec, prefix

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._module, name)
        dotted = f"{self._prefix}{name}"
        if isinstance(target, ModuleType):
            return RecordingNamespace(target, self._rec, dotted + ".")
        if not callable(target) or isinstance(target, type):
            self._rec.note(dotted, {})
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._rec.note(dotted, kwargs)
            out = target(*args, **kwargs)
            return RecordingGenerator(out, self._rec) if dotted == "random.default_rng" else out

        return call


def _run_everything_through(xp: ModuleType) -> None:
    names = ("BTC", "ETH", "SOL")
    c = [[1, 0.6, 0.5], [0.6, 1, 0.7], [0.5, 0.7, 1]]
    closes = np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, (120, 3)), axis=0))
    models = [
        GaussianModel(names, [0.03, 0.04, 0.06], c, horizon_days=[1, 2, 3]),
        StudentTModel(names, [0.03, 0.04, 0.06], c, dof=4),
        calibrate(names, closes).historical([1, 5, 2]),
        JumpOverlay(
            GaussianModel(names, [0.0, 0.0, 0.0], np.eye(3)), (Jump("b", 0.3, 0.5, ("SOL",)),)
        ),
    ]
    e = np.array([[1e5, -2e4], [3e4, 1e4], [2e4, 5e4]])
    for model in models:
        problem = RiskProblem(model, e, 0.95, 3_000, seed=1)
        res = run_risk(problem, backend="numpy")
        assert res.components is not None and np.all(np.isfinite(res.es))
        draw_scenarios(problem, backend="numpy")


def _modules_using_xp() -> list[ModuleType]:
    names = ["backend", "engine", "measures", "models", "calibration", "executors", "reduce"]
    return [importlib.import_module(f"montecarlo.{n}") for n in names]


def test_every_xp_call_of_the_engine_exists_in_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    proxy = RecordingNamespace(np, rec)
    for mod in _modules_using_xp():
        if hasattr(mod, "array_namespace"):
            monkeypatch.setattr(mod, "array_namespace", lambda *a, **k: proxy)
        if hasattr(mod, "resolve_backend"):
            monkeypatch.setattr(mod, "resolve_backend", lambda name: Backend("numpy", proxy))
    _run_everything_through(proxy)
    used = set(rec.calls)
    # the run went through the namespace: the core calls were all seen
    assert {"random.default_rng", "Generator.standard_normal", "partition", "expm1"} <= used
    assert {"Generator.chisquare", "Generator.integers", "Generator.random"} <= used
    missing = []
    for name, kwargs in sorted(rec.calls.items()):
        owner: Any = cupy.random.Generator if name.startswith("Generator.") else cupy
        attr = name.split(".", 1)[1] if name.startswith("Generator.") else name
        target = owner
        for part in attr.split("."):
            target = getattr(target, part, None)
        if target is None:
            missing.append(name)
            continue
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue  # a compiled function without a signature: its existence is what we check
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            missing += [f"{name}({k}=)" for k in kwargs if k not in params]
    assert not missing, f"not in cupy {cupy.__version__}: {missing}"


def test_montecarlo_imports_cupy_only_in_backend() -> None:
    for mod in _modules_using_xp():
        source = inspect.getsource(mod)
        if mod.__name__ != "montecarlo.backend":
            assert "import cupy" not in source, mod.__name__
    assert "cupy" not in montecarlo.__dict__
