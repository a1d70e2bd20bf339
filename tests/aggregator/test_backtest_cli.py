"""``omnimargin backtest`` run as a real subprocess on a small synthetic history: the report's
counts agree with its own series and with the CSV prices, later prices never change earlier
forecasts, ``--out`` writes an HTML page with the figures inline, and bad input gives one line
naming the field with exit code 2.

The CLI calls are started together, two at a time, by one module fixture.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from montecarlo.backtest import kupiec_pof

CLI = (sys.executable, "-m", "aggregator.cli", "backtest")
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
    "NO_COLOR": "1",
    "COLUMNS": "120",
}
DAYS, WINDOW, CHANGE_FROM = 330, 60, 200
FAST = ("--window", str(WINDOW), "--scenarios", "2000")
#: with prices, so the USD exposures (quantity x price) do not depend on the last close
PORTFOLIO = {
    "positions": [{"asset": "XRP", "quantity": 1000}, {"asset": "DOGE", "quantity": -5}],
    "prices": {"XRP": 2, "DOGE": 0.4},
}


def write_history(folder: Path, closes: np.ndarray, dates: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for j, name in enumerate(("XRP", "DOGE")):
        rows = "".join(f"{d},{float(p)!r}\n" for d, p in zip(dates, closes[:, j], strict=True))
        (folder / f"{name}-USD_1d.csv").write_text("Date,Close\n" + rows)
    return folder


def synthetic(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Fat-tailed correlated random walks (Student-t 3 shocks), DAYS closes from 2021-01-01."""
    rng = np.random.default_rng(seed)
    shocks = 0.03 * rng.standard_t(3, size=(DAYS, 2)) / math.sqrt(3)
    shocks[:, 1] = 0.6 * shocks[:, 0] + 0.8 * shocks[:, 1]
    closes = np.array([2.0, 0.3]) * np.exp(np.cumsum(shocks, axis=0))
    dates = np.datetime64("2021-01-01") + np.arange(DAYS)
    return closes, dates


def run(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300, check=False
    )


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    return out


BAD = {
    "alpha": (("--alpha", "1.5"), "alpha: "),
    "window": (("--window", "10"), "window: "),
    "horizon": (("--horizon-days", "0"), "horizon_days: "),
    "scenarios": (("--scenarios", "5"), "scenarios: "),
    "start": (("--start", "2021-13-40"), "start: "),
    "end_before_start": (("--start", "2021-06-01", "--end", "2021-05-01"), "end: "),
    "no_days": (("--start", "2030-01-01"), "start: "),
    "history": (("--history", "{tmp}/nowhere"), "history: "),
    "model": (("--model", "garch"), "Invalid value for '--model'"),
    "portfolio": (("--portfolio", "{tmp}/missing.json"), "portfolio: "),
    "unknown_asset": (("--portfolio", "{tmp}/btc.json"), "positions[0].asset: "),
    "model_params": (("--portfolio", "{tmp}/with_model.json"), "model.daily_vol: "),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("backtest")
    closes, dates = synthetic()
    hist = write_history(tmp / "hist", closes, dates)
    changed = closes.copy()
    changed[CHANGE_FROM:] *= np.exp(np.linspace(0.2, -0.5, DAYS - CHANGE_FROM))[:, None]
    hist2 = write_history(tmp / "hist2", changed, dates)
    pf = tmp / "pf.json"
    pf.write_text(json.dumps(PORTFOLIO))
    (tmp / "btc.json").write_text(json.dumps({"positions": [{"asset": "BTC", "quantity": 1}]}))
    with_model = {**PORTFOLIO, "model": {"daily_vol": {"XRP": 0.1, "DOGE": 0.1}}}
    (tmp / "with_model.json").write_text(json.dumps(with_model))
    base = ("--portfolio", str(pf), "--history", str(hist), *FAST)
    commands: dict[str, Sequence[str]] = {
        "base": (*base, "--json"),
        "changed": ("--portfolio", str(pf), "--history", str(hist2), *FAST, "--json"),
        "html": (*base, "--model", "historical", "--out", str(tmp / "r.html")),
    }
    for name, (args, _) in BAD.items():
        extra = tuple(a.replace("{tmp}", str(tmp)) for a in args)
        commands[f"bad_{name}"] = (*base, *extra)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run, v, tmp) for k, v in commands.items()}
        procs = {k: f.result() for k, f in futures.items()}
    return {"procs": procs, "tmp": tmp, "closes": closes, "dates": dates}


def test_counts_agree_with_the_series_and_the_prices(runs: dict[str, Any]) -> None:
    r = report_of(runs["procs"]["base"])
    rows = r["series"]
    assert r["observations"] == len(rows) == DAYS - WINDOW - 1
    hits = [-row["pnl"] > row["var"] for row in rows]
    assert [row["exception"] for row in rows] == hits
    assert r["exceptions"] == sum(hits)
    assert r["expected_exceptions"] == pytest.approx(0.01 * len(rows))
    assert r["kupiec_pvalue"] == pytest.approx(kupiec_pof(sum(hits), len(rows), 0.99).pvalue)
    assert all(row["es"] >= row["var"] > 0 for row in rows)
    # P&L of fixed USD exposures (quantity x price) from the CSV closes
    closes, dates = runs["closes"], runs["dates"]
    e = np.array([1000 * 2, -5 * 0.4])
    pnl = (closes[WINDOW + 1 :] / closes[WINDOW:-1] - 1) @ e
    np.testing.assert_allclose([row["pnl"] for row in rows], pnl, rtol=1e-9, atol=1e-9)
    assert rows[0]["date"] == str(dates[WINDOW + 1])
    tl = r["traffic_light"]
    assert [w["exceptions"] for w in tl["windows"]] == [sum(hits[-250:])]
    assert set(r["es_backtest"]) >= {"method", "z2", "pvalue"}


def test_later_prices_do_not_change_earlier_forecasts(runs: dict[str, Any]) -> None:
    a = report_of(runs["procs"]["base"])["series"]
    b = report_of(runs["procs"]["changed"])["series"]
    cut = str(runs["dates"][CHANGE_FROM])  # the first changed close
    before = [i for i, row in enumerate(a) if row["date"] < cut]
    for i in before:
        assert a[i] == b[i]
    # the forecast for the first changed day was made the evening before: same VaR and ES,
    # different P&L
    i = len(before)
    assert a[i]["date"] == cut
    assert (a[i]["var"], a[i]["es"]) == (b[i]["var"], b[i]["es"])
    assert a[i]["pnl"] != b[i]["pnl"]
    assert a[i + 1]["var"] != b[i + 1]["var"]


def test_html_report_has_the_figures_inline(runs: dict[str, Any]) -> None:
    proc = runs["procs"]["html"]
    assert proc.returncode == 0, proc.stderr
    page = (runs["tmp"] / "r.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "Kupiec" in page and "historical" in page


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(runs: dict[str, Any], name: str) -> None:
    proc = runs["procs"][f"bad_{name}"]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: " + BAD[name][1]), lines[0]
