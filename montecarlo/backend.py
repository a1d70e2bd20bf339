"""Array backends: NumPy always, CuPy when a GPU is usable.

This is the only module that imports :mod:`cupy`, and it does so lazily. Compute code receives
an array namespace ``xp`` (the ``numpy`` or ``cupy`` module) and never imports either itself, in
the manner of scikit-learn's ``_array_api`` and array-api-compat's ``array_namespace``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from montecarlo.errors import BackendUnavailable, InvalidParameter

log = logging.getLogger(__name__)

BackendName = Literal["numpy", "cupy", "auto"]
BACKENDS: tuple[str, ...] = ("numpy", "cupy", "auto")


@dataclass(frozen=True)
class Backend:
    """A resolved array backend: its name (``numpy`` or ``cupy``) and its namespace."""

    name: str
    xp: ModuleType


def _load_cupy() -> ModuleType:
    """Import cupy and prove the device works; raise BackendUnavailable with the cause."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        raise BackendUnavailable(f"backend: cupy cannot be imported ({exc})") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailable("backend: cupy found no CUDA device")
        float(cupy.arange(4, dtype=cupy.float64).sum())
    except BackendUnavailable:
        raise
    except Exception as exc:  # CUDARuntimeError, driver too old, no device node
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendUnavailable(f"backend: cupy has no usable GPU ({first_line})") from exc
    module: ModuleType = cupy
    return module


def resolve_backend(name: str) -> Backend:
    """Turn a backend name into a usable :class:`Backend`.

    ``numpy`` always works; ``cupy`` raises :class:`BackendUnavailable` when no GPU is usable;
    ``auto`` takes CuPy when it works and otherwise NumPy, saying so in a log line.
    """
    if name == "numpy":
        return Backend("numpy", np)
    if name == "cupy":
        return Backend("cupy", _load_cupy())
    if name == "auto":
        try:
            return Backend("cupy", _load_cupy())
        except BackendUnavailable as exc:
            log.info("backend auto: using numpy (%s)", exc)
            return Backend("numpy", np)
    raise InvalidParameter("backend", f"must be one of {', '.join(BACKENDS)}, got {name!r}")


def array_namespace(*arrays: Any) -> ModuleType:
    """The namespace (numpy or cupy) that owns ``arrays``; NumPy for host arrays and scalars."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy

            module: ModuleType = cupy
            return module
    return np


def to_numpy(a: Any) -> np.ndarray:
    """Copy a device array to the host; host arrays pass through unchanged."""
    get = getattr(a, "get", None)
    if callable(get) and not isinstance(a, np.ndarray):
        return np.asarray(get())
    return np.asarray(a)
