"""Backtest figures as PNG bytes (matplotlib's Agg canvas, imported only when a figure is drawn).

* :func:`pnl_figure`: realised P&L against -VaR and -ES, exceptions marked.
* :func:`traffic_light_figure`: exceptions in each rolling 250-day window against the Basel
  green / yellow / red bands.
* :func:`convergence_figure`: RMSE of VaR and ES against the number of scenarios, per sampler.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from montecarlo.backtest import rolling_exceptions, traffic_light_zone

DPI = 80
LINE_COLOURS = ("black", "#6a1b9a", "#00838f", "#ef6c00")
ZONE_COLOURS = {"green": "#2e7d32", "yellow": "#f9a825", "red": "#c62828"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    """The figure as a PNG with a 64-colour palette (a third of the size, same look)."""
    from PIL import Image  # matplotlib's own dependency

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    buf.seek(0)
    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(colors=64).save(small, format="png", optimize=True)
    return small.getvalue()


def _dates(report: dict[str, Any]) -> np.ndarray:
    return np.array([row["date"] for row in report["series"]], dtype="datetime64[D]")


def pnl_figure(report: dict[str, Any], title: str = "") -> bytes:
    """Realised daily P&L (USD) with the -VaR and -ES forecasts; exceptions as red crosses."""
    rows = report["series"]
    d = _dates(report)
    pnl = np.array([r["pnl"] for r in rows])
    var = np.array([r["var"] for r in rows])
    es = np.array([r["es"] for r in rows])
    hit = np.array([r["exception"] for r in rows], dtype=bool)
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    ax.bar(d, pnl, width=1.0, color="#90a4ae", label="realised P&L")
    ax.plot(d, -var, color="#1565c0", lw=0.9, label=f"-VaR {report['alpha']:g}")
    ax.plot(d, -es, color="#6a1b9a", lw=0.9, ls="--", label=f"-ES {report['alpha']:g}")
    ax.scatter(d[hit], pnl[hit], marker="x", color="#c62828", s=22, zorder=3, label="exception")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_ylabel("USD")
    ax.set_title(title or f"{report['model']}: P&L against VaR and ES")
    ax.legend(loc="lower left", fontsize=7, ncols=4)
    fig.autofmt_xdate()
    return _png(fig)


def traffic_light_figure(reports: Mapping[str, dict[str, Any]], title: str = "") -> bytes:
    """Exceptions in the rolling 250-day window ending each day, over the Basel zone bands;
    one line per report (label -> report of the same days and alpha)."""
    first = next(iter(reports.values()))
    window = int(first["traffic_light"]["window_days"])
    alpha = float(first["alpha"])
    fig = _figure(9, 2.6)
    ax = fig.add_subplot()
    top = 12
    for (label, report), colour in zip(reports.items(), LINE_COLOURS, strict=False):
        hits = np.array([r["exception"] for r in report["series"]], dtype=np.int64)
        counts = rolling_exceptions(hits, window)
        top = max(top, int(counts.max(initial=0)) + 2)
        if counts.size:
            d = _dates(report)[window - 1 :]
            ax.step(d, counts, where="post", color=colour, lw=1.0, label=label)
    for zone, (lo, hi) in _zone_bounds(window, alpha, top).items():
        ax.axhspan(lo - 0.5, hi + 0.5, color=ZONE_COLOURS[zone], alpha=0.18, lw=0)
    ax.axhline(window * (1.0 - alpha), color="#1565c0", ls=":", lw=0.9, label="expected")
    ax.set_ylim(-0.5, top + 0.5)
    ax.set_ylabel(f"exceptions in {window} d")
    ax.set_title(title or f"Basel traffic light (rolling {window} days)")
    ax.legend(loc="upper left", fontsize=7, ncols=4)
    fig.autofmt_xdate()
    return _png(fig)


def _zone_bounds(window: int, alpha: float, top: int) -> dict[str, tuple[int, int]]:
    zones = [traffic_light_zone(x, window, alpha) for x in range(top + 1)]
    out: dict[str, tuple[int, int]] = {}
    for x, z in enumerate(zones):
        lo, _ = out.get(z, (x, x))
        out[z] = (lo, x)
    return out


def convergence_figure(points: Sequence[Any], title: str) -> bytes:
    """RMSE of VaR and ES (log-log) against scenarios for each sampler; ``points`` are
    :class:`montecarlo.convergence.ConvergencePoint`, with the engine's standard error for MC."""
    fig = _figure(9, 3.2)
    for j, measure in enumerate(("var", "es")):
        ax = fig.add_subplot(1, 2, j + 1)
        for sampler, style in (("mc", "o-"), ("sobol", "s-")):
            pts = [p for p in points if p.sampler == sampler]
            if not pts:
                continue
            m = [p.scenarios for p in pts]
            ax.loglog(m, [getattr(p, f"{measure}_rmse") for p in pts], style, label=sampler)
            if sampler == "mc":
                se = [getattr(p, f"{measure}_stderr") for p in pts]
                ax.loglog(m, se, "k:", lw=0.9, label="engine s.e.")
        ax.set_xlabel("scenarios")
        ax.set_ylabel("RMSE, USD")
        ax.set_title(f"{measure.upper()}: {title}", fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)
