"""Charts as SVG text (matplotlib, rendered here): the dashboard inlines them, the HTML report
embeds them, so no chart library is fetched by a browser (the machine may have no internet).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

_RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "omnimargin", "font.size": 9}


def _figure(width: float = 6.4, height: float = 3.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline-able: no XML prolog or doctype


def loss_distribution_svg(
    losses: np.ndarray, var: float, es: float, alpha: float, title: str = "Loss distribution"
) -> str:
    """Histogram of scenario losses (M,) in USD with the VaR and ES lines."""
    fig = _figure()
    ax = fig.add_subplot()
    finite = losses[np.isfinite(losses)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    ax.hist(finite, bins=120, range=(lo, hi), color="#8aa9c9", edgecolor="none")
    ax.axvline(var, color="#d08c00", linewidth=1.5, label=f"VaR {alpha:g}: {var:,.0f}")
    ax.axvline(es, color="#c0392b", linewidth=1.5, label=f"ES {alpha:g}: {es:,.0f}")
    ax.set_xlabel("loss over the horizon (USD)")
    ax.set_ylabel("scenarios")
    ax.set_title(title)
    ax.legend(loc="upper right", frameon=False)
    return _svg(fig)


def contributions_svg(parts: dict[str, float], title: str) -> str:
    """Horizontal bars of ES contributions (USD) by key; negative ones are hedges."""
    items = sorted(parts.items(), key=lambda kv: kv[1])
    fig = _figure(6.4, max(1.6, 0.35 * len(items) + 0.9))
    ax = fig.add_subplot()
    if items:
        names, values = zip(*items, strict=True)
        colors = ["#c0392b" if v >= 0 else "#2e8b57" for v in values]
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)), [str(n) for n in names])
        ax.axvline(0, color="#555", linewidth=0.8)
    else:
        ax.text(0.5, 0.5, "no risk", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("ES contribution (USD)")
    ax.set_title(title)
    return _svg(fig)
