"""A self-contained HTML page of one backtest: the statistics and the figures inline."""

from __future__ import annotations

import base64
import html
from typing import Any

from aggregator.backtest_plots import pnl_figure, traffic_light_figure


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _p(x: float) -> str:
    return f"{x:.4f}"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the report's statistics, for the page and the terminal."""
    es = report["es_backtest"]
    tl = report["traffic_light"]
    zones = ", ".join(f"{w['exceptions']} ({w['zone']})" for w in tl["windows"]) or "-"
    return [
        ("observations", f"{report['observations']} ({report['start']} to {report['end']})"),
        ("exceptions", f"{report['exceptions']} ({report['exception_rate']:.2%})"),
        ("expected exceptions", f"{report['expected_exceptions']:.1f}"),
        ("Kupiec POF p-value", _p(report["kupiec_pvalue"])),
        ("Christoffersen independence p-value", _p(report["christoffersen_pvalue"])),
        ("conditional coverage p-value", _p(report["conditional_coverage_pvalue"])),
        ("250-day windows (exceptions, zone)", zones),
        ("latest 250 days", str(tl["latest"] or "-")),
        ("ES backtest (Acerbi-Szekely Z2)", f"{es['z2']:.3f}, p {_p(es['pvalue'])}, {es['zone']}"),
    ]


def html_report(report: dict[str, Any]) -> str:
    """The page: a table of the statistics, the P&L figure and the traffic-light figure."""
    title = (
        f"Backtest: {', '.join(report['assets'])}, {report['model']}, "
        f"alpha {report['alpha']:g}, {report['horizon_days']}-day horizon"
    )
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in summary_rows(report)
    )
    settings = (
        f"window {report['window']} days, {report['scenarios']:,} scenarios ({report['sampler']})"
        f", seed {report['seed']}, positions held as {report['hold']}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
th{{text-align:left;padding-right:1em}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(settings)}</p>
<table>{rows}</table>
<h2>Realised P&amp;L against VaR and ES</h2>{_img(pnl_figure(report), "P&L against VaR and ES")}
<h2>Exceptions per 250 days and the Basel traffic light</h2>
{_img(traffic_light_figure({report["model"]: report}), "traffic light")}
</body></html>
"""
