"""``omnimargin report``: one self-contained HTML file of an account's margin (no scripts, no
external files: the charts are inline SVG), for a desk to mail around."""

from __future__ import annotations

import time
from html import escape
from typing import Any

import numpy as np

from aggregator.authorize import AccountState
from aggregator.charts import contributions_svg, loss_distribution_svg
from aggregator.store import Reservation

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1100px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; } th, td { padding: .25rem .6rem; text-align: right;
border-bottom: 1px solid #e3e3e3; } th { background: #f0f0f0; } .l { text-align: left; }
.bad { color: #b02a37; font-weight: 600; } .chart svg { max-width: 100%; height: auto; }
code { font-size: 12px; }
"""


def _usd(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f}"


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    def cells(tag: str, row: list[str]) -> str:
        return "".join(
            f"<{tag}{' class=l' if i < left else ''}>{escape(c)}</{tag}>" for i, c in enumerate(row)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _figures(r: dict[str, Any]) -> str:
    rows = [
        [k.replace("_", " "), _usd(r[k])]
        for k in ("equity", "maintenance_margin", "initial_margin", "reserved", "free_margin")
    ]
    rows.append(["health", "–" if r["health"] is None else f"{r['health']:.3f}"])
    rows.append([f"VaR {r['alpha']:g}", _usd(r["var"])])
    rows.append([f"ES {r['alpha']:g}", _usd(r["es"])])
    return _table(["figure", "USD"], rows)


def _positions(r: dict[str, Any]) -> str:
    rows = []
    for p in r["positions"]:
        where = p.get("contract") or p.get("market_id") or p.get("account") or ""
        rows.append(
            [
                p["kind"],
                p["asset"],
                p["column"],
                str(p["chain_id"] if p["chain_id"] is not None else "off-chain"),
                p["source"] + (" (in flight)" if p["in_flight"] else ""),
                "yes" if p.get("locked") else "no: exposure only",
                str(p.get("block", "")),
                str(where),
                p["quantity"],
            ]
        )
    head = [
        "kind",
        "asset",
        "risk column",
        "chain",
        "source",
        "backs margin",
        "block",
        "contract",
        "quantity",
    ]
    return _table(head, rows, left=8)


_KIND = {
    "position": "position approved",
    "withdrawal": "withdrawal approved",
    "liquidation": "liquidation: close",
    "seizure": "liquidation: collateral seized",
}


def _history(rows: list[Reservation]) -> str:
    """Every approval and liquidation step of the account, oldest first, with its fate."""
    if not rows:
        return "<p>none</p>"
    out = []
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.issued_at))
        seen = f" at block {r.seen_block}" if r.seen_block is not None else ""
        out.append(
            [
                when,
                _KIND.get(r.kind, r.kind),
                str(r.chain_id),
                r.market,
                r.size_delta,
                r.state + seen,
            ]
        )
    return _table(["signed (UTC)", "what", "chain", "market / column", "change", "state"], out, 4)


def render_report(state: AccountState, history: list[Reservation] | None = None) -> str:
    """The HTML report of one account's margin state (and, from the store, every approval
    and liquidation step signed for it)."""
    r = state.report
    losses = np.asarray(-(state.scen.returns @ state.exposures))
    charts = [
        loss_distribution_svg(losses, r["var"], r["es"], r["alpha"]),
        contributions_svg(r["by_chain"], "ES contribution by chain"),
        contributions_svg(r["by_asset"], "ES contribution by asset"),
    ]
    snapshot = _table(
        ["chain", "name", "status", "block", "block hash"],
        [
            [
                str(s["chain_id"]),
                s["name"],
                s["status"],
                str(s["block_number"]),
                str(s["block_hash"]),
            ]
            for s in r["snapshot"]
        ],
        left=5,
    )
    parts = _table(
        ["by", "ES contribution (USD)"],
        [[f"chain {k}", _usd(v)] for k, v in sorted(r["by_chain"].items())]
        + [[f"asset {k}", _usd(v)] for k, v in sorted(r["by_asset"].items())],
    )
    reasons = "".join(f'<p class="bad">degraded: {escape(x)}</p>' for x in r["reasons"])
    body = f"""
<h1>Unified margin of <code>{escape(r["account"])}</code></h1>
<p>status <b>{escape(r["status"])}</b>, {len(losses):,} scenarios</p>{reasons}
<h2>Figures</h2>{_figures(r)}
<h2>Loss distribution</h2><div class="chart">{charts[0]}</div>
<h2>Risk contributions</h2><div class="chart">{charts[1]}</div><div class="chart">{charts[2]}</div>
{parts}
<h2>Holdings and positions</h2>
<p>collateral locked (backs margin) {_usd(r.get("collateral_locked_usd"))} USD; holdings
unlocked (exposure only) {_usd(r.get("holdings_unlocked_usd"))} USD</p>{_positions(r)}
<h2>Approvals and liquidation steps</h2>{_history(history or [])}
<h2>Snapshot</h2>{snapshot}
<p>snapshot hash <code>{escape(r["snapshot_hash"])}</code><br>
risk model hash <code>{escape(r["risk_model_hash"])}</code></p>
"""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>omnimargin report {escape(r['account'])}</title><style>{_STYLE}</style>"
        f"</head><body>{body}</body></html>"
    )
