"""What the benchmark ran on: CPU model, cores, NumPy and its BLAS, and a GPU when used."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The ``model name`` line of /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def physical_cores() -> int | None:
    """Physical cores per psutil, or None when it cannot tell."""
    try:
        import psutil
    except ImportError:
        return None
    count = psutil.cpu_count(logical=False)
    return int(count) if count else None


def _owner(filepath: str) -> str:
    """Which wheel ships a library: ``.../numpy.libs/libopenblas.so`` -> ``numpy``."""
    for part in reversed(Path(filepath).parts[:-1]):
        if part.endswith(".libs"):
            return part.removesuffix(".libs")
    return Path(filepath).parent.name


def blas_description() -> str:
    """The BLAS libraries loaded: ``numpy: openblas 0.3.31 (SkylakeX, pthreads, 2 threads)``."""
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not libs:
        return "unknown"
    parts = []
    for lib in libs:
        extra = [str(lib[key]) for key in ("architecture", "threading_layer") if lib.get(key)]
        extra.append(f"{lib.get('num_threads')} threads")
        name = f"{lib.get('internal_api')} {lib.get('version')} ({', '.join(extra)})"
        parts.append(f"{_owner(str(lib.get('filepath', '')))}: {name}")
    return "; ".join(parts)


def gpu_description() -> str | None:
    """Name of CUDA device 0 through CuPy, or None without a usable GPU."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no cupy, no driver, no device
        return None


def machine_info(with_gpu: bool = False) -> dict[str, Any]:
    """A compact, JSON-ready description of this machine."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_description(),
        "os": f"{platform.system()} {platform.release()}",
    }
    if with_gpu:
        info["gpu"] = gpu_description()
    return info
