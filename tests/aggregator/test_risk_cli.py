"""``omnimargin risk`` run as a real subprocess: bad input gives one line and exit code 2,
good input gives figures checked against closed forms and the shipped price history.

Every CLI call is a separate Python process (~1 s, mostly imports), so the calls of this module
are started together, a few at a time, by two module fixtures; the tests then read the results.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from scipy.stats import norm

import aggregator
from aggregator.history import DEFAULT_HISTORY_DIR

CLI = (sys.executable, "-m", "aggregator.cli")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.json"
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
    "NO_COLOR": "1",
    "COLUMNS": "120",
}
REQUIRED_KEYS = {
    "var",
    "es",
    "var_stderr",
    "es_stderr",
    "alpha",
    "horizon_days",
    "scenarios",
    "model",
    "seed",
    "backend",
    "executor",
    "contributions",
    "elapsed_s",
}


# --------------------------------------------------------------------------- helpers


def run_cli(
    args: Sequence[str], cwd: Path, prog: Sequence[str] = CLI
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prog, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300, check=False
    )


def run_many(
    commands: Mapping[str, tuple[Sequence[str], Sequence[str]]], cwd: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run {name: (program, args)} concurrently; the results by name."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {
            name: pool.submit(run_cli, args, cwd, prog) for name, (prog, args) in commands.items()
        }
        return {name: f.result() for name, f in futures.items()}


def _no_constant(token: str) -> float:
    raise AssertionError(f"non-finite number {token} in the JSON output")


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object of a successful ``--json`` run (all numbers finite)."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1, proc.stdout
    report = json.loads(proc.stdout, parse_constant=_no_constant)
    assert isinstance(report, dict)
    return report


def last_close(path: Path) -> float:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["Close"])


@functools.cache
def gpu_usable() -> bool:
    from montecarlo import BackendUnavailable, resolve_backend

    try:
        resolve_backend("cupy")
    except BackendUnavailable:
        return False
    return True


def write_json(path: Path, data: Any) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def three_asset(matrix: Any) -> dict[str, Any]:
    """An explicit three-asset gaussian model with the given correlation matrix."""
    return {
        "positions": [
            {"asset": "BTC", "quantity": 1},
            {"asset": "ETH", "quantity": 2},
            {"asset": "SOL", "quantity": 3},
        ],
        "prices": {"BTC": 100, "ETH": 10, "SOL": 1},
        "model": {
            "daily_vol": {"BTC": 0.03, "ETH": 0.04, "SOL": 0.05},
            "correlation": {"assets": ["BTC", "ETH", "SOL"], "matrix": matrix},
        },
    }


def one_btc(**extra: Any) -> dict[str, Any]:
    return {"positions": [{"asset": "BTC", "quantity": 1}], **extra}


# --------------------------------------------------------------------------- bad input


class Bad(NamedTuple):
    """A portfolio (JSON text or bytes, an object, or None for the example file), extra CLI
    arguments (``{tmp}`` is the case folder, ``{tmp}/hist`` a history folder holding one file,
    ``XRP-USD_1d.csv``, with the text ``history``) and the start of the expected error, after
    ``error: ``, and words it must contain."""

    portfolio: Any
    args: tuple[str, ...]
    prefix: str
    contains: tuple[str, ...] = ()
    history: str | bytes = "Date,Close\n2024-01-01,0.5\n2024-01-02,0.52\n2024-01-03,0.51\n"


NO_FILE = "<no --portfolio option>"
XRP = {"positions": [{"asset": "XRP", "quantity": 5}]}
BTC_ETH = '{"positions": [{"asset": "BTC", "quantity": 1}, {"asset": "ETH", "quantity": %s}]}'

BAD: dict[str, Bad] = {
    "malformed_json": Bad('{"positions": [{"asset": "BTC", "quantity": 1}', (), "portfolio: "),
    "empty_positions": Bad({"positions": []}, (), "positions: "),
    "unknown_asset": Bad(
        {"positions": [{"asset": "BTC", "quantity": 1}, {"asset": "XRP", "quantity": 5}]},
        (),
        "positions[1].asset: ",
        ("XRP",),
    ),
    "priced_asset_without_history": Bad(
        {"positions": [{"asset": "XRP", "quantity": 5}], "prices": {"XRP": 0.5}},
        (),
        "history: ",
        ("XRP",),
    ),
    "nan_quantity": Bad(BTC_ETH % "NaN", (), "positions[1].quantity: ", ("finite",)),
    "infinity_quantity": Bad(BTC_ETH % "Infinity", (), "positions[1].quantity: ", ("finite",)),
    "nan_string_quantity": Bad(BTC_ETH % '"NaN"', (), "positions[1].quantity: "),
    "absurd_quantity": Bad(BTC_ETH % "1e30", (), "positions[1].quantity: ", ("absurd",)),
    "absurd_exposure": Bad(
        {"positions": [{"asset": "BTC", "quantity": 1e12}], "prices": {"BTC": 100000}},
        (),
        "positions[0].quantity: ",
        ("absurd",),
    ),
    "string_quantity": Bad(BTC_ETH % '"abc"', (), "positions[1].quantity: "),
    "bool_quantity": Bad(BTC_ETH % "true", (), "positions[1].quantity: "),
    "negative_price": Bad(one_btc(prices={"BTC": -5}), (), "prices.BTC: "),
    "nan_price": Bad(
        '{"positions": [{"asset": "BTC", "quantity": 1}], "prices": {"BTC": NaN}}',
        (),
        "prices.BTC: ",
    ),
    "price_without_position": Bad(one_btc(prices={"BTC": 1, "ETH": 2}), (), "prices.ETH: "),
    "unknown_top_level_key": Bad(one_btc(leverage=10), (), "leverage: ", ("unknown field",)),
    "missing_file": Bad(None, ("--portfolio", "{tmp}/does-not-exist.json"), "portfolio: "),
    "alpha_0": Bad(one_btc(), ("--alpha", "0"), "alpha: "),
    "alpha_1": Bad(one_btc(), ("--alpha", "1"), "alpha: "),
    "alpha_1.5": Bad(one_btc(), ("--alpha", "1.5"), "alpha: "),
    "alpha_-0.1": Bad(one_btc(), ("--alpha=-0.1",), "alpha: "),
    "alpha_nan": Bad(one_btc(), ("--alpha", "nan"), "alpha: "),
    "alpha_not_a_number": Bad(one_btc(), ("--alpha", "high"), "Invalid value for '--alpha'"),
    "scenarios_0": Bad(one_btc(), ("--scenarios", "0"), "scenarios: "),
    "scenarios_-5": Bad(one_btc(), ("--scenarios=-5",), "scenarios: "),
    "scenarios_not_an_int": Bad(
        one_btc(), ("--scenarios", "1e5"), "Invalid value for '--scenarios'"
    ),
    "horizon_0": Bad(one_btc(), ("--horizon-days", "0"), "horizon_days: "),
    "historical_fractional_horizon": Bad(
        one_btc(), ("--model", "historical", "--horizon-days", "1.5"), "horizon_days: "
    ),
    "unknown_model": Bad(one_btc(), ("--model", "garch"), "Invalid value for '--model'"),
    "seed_negative": Bad(one_btc(), ("--seed=-1",), "seed: "),
    "dof_2": Bad(one_btc(), ("--model", "student_t", "--dof", "2"), "dof: "),
    "dof_inf": Bad(one_btc(), ("--model", "student_t", "--dof", "inf"), "dof: "),
    "file_dof_2": Bad(one_btc(model={"dof": 2}), (), "model.dof: "),
    "corr_not_symmetric": Bad(
        three_asset([[1, 0.5, 0], [0.2, 1, 0], [0, 0, 1]]),
        (),
        "model.correlation.matrix: ",
        ("symmetric",),
    ),
    "corr_not_psd": Bad(
        three_asset([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]),
        (),
        "model.correlation.matrix: ",
        ("positive semi-definite",),
    ),
    "corr_diagonal_not_1": Bad(
        three_asset([[1, 0, 0], [0, 2, 0], [0, 0, 1]]),
        (),
        "model.correlation.matrix: ",
        ("diagonal",),
    ),
    "corr_wrong_shape": Bad(three_asset([[1, 0], [0, 1]]), (), "model.correlation.matrix: "),
    "corr_ragged": Bad(
        three_asset([[1, 0, 0], [0, 1], [0, 0, 1]]), (), "model.correlation.matrix: "
    ),
    "corr_nan": Bad(
        json.dumps(three_asset([[1, "x", 0], ["x", 1, 0], [0, 0, 1]])).replace('"x"', "NaN"),
        (),
        "model.correlation.matrix",
    ),
    "corr_missing_asset": Bad(
        {
            "positions": [{"asset": "BTC", "quantity": 1}, {"asset": "ETH", "quantity": 1}],
            "prices": {"BTC": 1, "ETH": 1},
            "model": {
                "daily_vol": {"BTC": 0.03, "ETH": 0.04},
                "correlation": {"assets": ["BTC"], "matrix": [[1]]},
            },
        },
        (),
        "model.correlation.assets: ",
        ("ETH",),
    ),
    "daily_vol_missing_asset": Bad(
        {
            "positions": [{"asset": "BTC", "quantity": 1}, {"asset": "ETH", "quantity": 1}],
            "prices": {"BTC": 1, "ETH": 1},
            "model": {"daily_vol": {"BTC": 0.03}},
        },
        (),
        "model.daily_vol: ",
        ("ETH",),
    ),
    "jump_unknown_asset": Bad(
        one_btc(
            model={"jumps": [{"name": "x", "probability": 0.1, "loss": 0.5, "assets": ["SOL"]}]}
        ),
        (),
        "model.jumps[0].assets: ",
        ("SOL",),
    ),
    "history_dir_missing": Bad(None, ("--history", "{tmp}/no-such-dir"), "history: "),
    "history_dir_missing_explicit_model": Bad(
        one_btc(prices={"BTC": 10}, model={"daily_vol": {"BTC": 0.02}}),
        ("--history", "{tmp}/no-such-dir"),
        "history: ",
    ),
    "history_bad_close": Bad(
        XRP,
        ("--history", "{tmp}/hist"),
        "history XRP-USD_1d.csv line 4: ",
        ("Close",),
        history="Date,Close\n2024-01-01,0.5\n2024-01-02,0.52\n2024-01-03,0\n2024-01-04,0.51\n",
    ),
    "history_short_row": Bad(
        XRP,
        ("--history", "{tmp}/hist"),
        "history XRP-USD_1d.csv line 3: ",
        history="Date,Close\n2024-01-01,0.5\n2024-01-02\n2024-01-03,0.51\n",
    ),
    "history_not_utf8": Bad(
        XRP,
        ("--history", "{tmp}/hist"),
        "history XRP-USD_1d.csv: ",
        history=b"Date,Close\n2024-01-01,0.5\n2024-01-02,\xff\xfe\n",
    ),
    "history_good_but_asset_missing": Bad(
        one_btc(), ("--history", "{tmp}/hist"), "positions[0].asset: ", ("BTC", "XRP")
    ),
    "portfolio_not_utf8": Bad(
        b'{"positions": [{"asset": "\xff", "quantity": 1}]}', (), "portfolio: "
    ),
    "portfolio_nested_too_deep": Bad("[" * 100_000 + "]" * 100_000, (), "portfolio: "),
    "backend_cupy": Bad(one_btc(), ("--backend", "cupy"), "backend: ", ("cupy",)),
    "missing_portfolio_option": Bad(NO_FILE, (), "Missing option '--portfolio'"),
}


@pytest.fixture(scope="module")
def bad_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("bad")
    commands: dict[str, tuple[Sequence[str], Sequence[str]]] = {}
    for name, case in BAD.items():
        tmp = root / name.replace(".", "_")
        tmp.mkdir()
        (tmp / "hist").mkdir()
        write_json(tmp / "hist" / "XRP-USD_1d.csv", case.history)
        args = [a.format(tmp=tmp) for a in case.args]
        if case.portfolio is None:
            shutil.copy(EXAMPLE, tmp / "portfolio.json")
        elif case.portfolio is not NO_FILE:
            write_json(tmp / "portfolio.json", case.portfolio)
        if case.portfolio is not NO_FILE and "--portfolio" not in args:
            args = ["--portfolio", str(tmp / "portfolio.json"), *args]
        commands[name] = (CLI, ["risk", "--scenarios", "1000", "--json", *args])
    return run_many(commands, root)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gives_one_line_and_exit_2(
    name: str, bad_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    if name == "backend_cupy" and gpu_usable():
        pytest.skip("a GPU is usable here, so --backend cupy is good input")
    case, proc = BAD[name], bad_results[name]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "", "a figure was printed for bad input"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"error: {case.prefix}"), line
    assert len(line) > len(f"error: {case.prefix}") + 3, "no reason given"
    for word in case.contains:
        assert word in line, line


# --------------------------------------------------------------------------- good input

# closed forms: one lognormal asset, loss = -q p (exp(-s^2/2 + s z) - 1), s = vol sqrt(h)
LONG = {"q": 2.0, "p": 50_000.0, "vol": 0.04, "h": 4.0, "alpha": 0.99, "seed": 7}
SHORT = {"q": -3.0, "p": 2_000.0, "vol": 0.05, "h": 1.0, "alpha": 0.975, "seed": 11}
CLOSED_M = 200_000

EXAMPLE_ARGS = ("--scenarios", "20000", "--json")
LONG_ONLY = {
    "positions": [{"asset": "BTC", "quantity": 1}, {"asset": "SOL", "quantity": 300}],
}
JUMP = {"name": "sol-bridge", "probability": 0.05, "loss": 0.6, "assets": ["SOL"]}


def closed_form(c: Mapping[str, float]) -> tuple[float, float]:
    """(VaR, ES) of a single lognormal position with zero drift."""
    q, p, a = c["q"], c["p"], c["alpha"]
    s = c["vol"] * math.sqrt(c["h"])
    if q > 0:  # loss when z is low
        z = norm.ppf(1 - a)
        var = q * p * (1 - math.exp(-(s**2) / 2 + s * z))
        es = q * p * (1 - norm.cdf(z - s) / (1 - a))
    else:  # loss when z is high
        z = norm.ppf(a)
        var = -q * p * (math.exp(-(s**2) / 2 + s * z) - 1)
        es = -q * p * (norm.cdf(s - z) / (1 - a) - 1)
    return var, es


def single_asset(c: Mapping[str, float]) -> tuple[dict[str, Any], list[str]]:
    pf = {
        "positions": [{"asset": "BTC", "quantity": c["q"]}],
        "prices": {"BTC": c["p"]},
        "model": {"kind": "gaussian", "daily_vol": {"BTC": c["vol"]}},
    }
    args = [
        "--scenarios", str(CLOSED_M), "--alpha", str(c["alpha"]),
        "--horizon-days", str(c["h"]), "--seed", str(int(c["seed"])), "--json",
    ]  # fmt: skip
    return pf, args


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("good")
    example = tmp / "portfolio.json"
    shutil.copy(EXAMPLE, example)
    hist_xrp = tmp / "hist_xrp"
    hist_xrp.mkdir()
    shutil.copy(DEFAULT_HISTORY_DIR / "ETH-USD_1d.csv", hist_xrp / "XRP-USD_1d.csv")
    files = {
        "long": single_asset(LONG),
        "short": single_asset(SHORT),
        "xrp": ({"positions": [{"asset": "XRP", "quantity": 100}]}, ["--history", str(hist_xrp)]),
        "eth": ({"positions": [{"asset": "ETH", "quantity": 100}]}, []),
        "no_jumps": (LONG_ONLY, ["--seed", "3"]),
        "jumps": ({**LONG_ONLY, "model": {"jumps": [JUMP]}}, ["--seed", "3"]),
        "jumps_student_t": (
            {**LONG_ONLY, "model": {"jumps": [JUMP]}},
            ["--seed", "3", "--model", "student_t"],
        ),
        "file_kind": (
            {**LONG_ONLY, "model": {"kind": "student_t", "dof": 4}},
            ["--scenarios", "2000"],
        ),
    }
    commands: dict[str, tuple[Sequence[str], Sequence[str]]] = {}
    for name, (pf, args) in files.items():
        path = write_json(tmp / f"{name}.json", pf)
        extra = [] if "--scenarios" in args else ["--scenarios", "20000"]
        json_flag = [] if "--json" in args else ["--json"]
        commands[name] = (CLI, ["risk", "--portfolio", str(path), *extra, *json_flag, *args])
    ex = ["risk", "--portfolio", str(example)]
    small = ["--scenarios", "5000", "--json"]
    commands.update(
        {
            "example": (CLI, [*ex, *EXAMPLE_ARGS, "--seed", "1"]),
            "example_seed2": (CLI, [*ex, *EXAMPLE_ARGS, "--seed", "2"]),
            "table": (CLI, [*ex, "--scenarios", "2000"]),
            "auto": (CLI, [*ex, "--scenarios", "2000", "--backend", "auto", "--json"]),
            "historical": (CLI, [*ex, *small, "--model", "historical", "--horizon-days", "5"]),
            "student_t": (CLI, [*ex, *small, "--model", "student_t", "--dof", "4"]),
        }
    )
    # the same run again, through the installed console script where there is one (and -p)
    script = Path(sys.executable).parent / "omnimargin"
    again = (str(script),) if script.exists() else CLI
    commands["example_again"] = (again, ["risk", "-p", str(example), *EXAMPLE_ARGS, "--seed", "1"])
    return run_many(commands, tmp)


@pytest.mark.parametrize("case", [LONG, SHORT], ids=["long", "short"])
def test_single_asset_gaussian_matches_closed_form(
    case: Mapping[str, float], good: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    r = report_of(good["long" if case is LONG else "short"])
    var, es = closed_form(case)
    assert r["var_stderr"] > 0 and r["es_stderr"] > 0
    assert abs(r["var"] - var) <= 3 * r["var_stderr"] + 1e-9 * var, (r["var"], var)
    assert abs(r["es"] - es) <= 3 * r["es_stderr"] + 1e-9 * es, (r["es"], es)
    # the standard errors are of the size a 200k-scenario estimate should have, not inflated
    assert r["var_stderr"] < 0.02 * var and r["es_stderr"] < 0.02 * es
    assert r["var"] > 0 and r["es"] >= r["var"]
    assert r["contributions"] == {"BTC": pytest.approx(r["es"], rel=1e-12)}
    assert r["exposures"] == {"BTC": case["q"] * case["p"]}
    assert r["prices"] == {"BTC": case["p"]}
    assert r["alpha"] == case["alpha"]
    assert r["horizon_days"] == case["h"]
    assert (r["scenarios"], r["seed"], r["model"]) == (CLOSED_M, case["seed"], "gaussian")


def test_json_has_the_required_keys(good: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = good["example"]
    r = report_of(proc)
    assert set(r) >= REQUIRED_KEYS, REQUIRED_KEYS - set(r)
    assert proc.stderr == ""
    assert r["backend"] == "numpy" and r["executor"] == "local"
    assert (r["alpha"], r["horizon_days"], r["scenarios"], r["seed"]) == (0.99, 1.0, 20000, 1)
    assert r["model"] == "gaussian"
    assert set(r["contributions"]) == {"BTC", "ETH", "SOL", "USDC"}
    for key in ("var", "es", "var_stderr", "es_stderr", "elapsed_s"):
        assert isinstance(r[key], float) and r[key] >= 0, key
    assert r["es"] >= r["var"] > 0


def test_contributions_sum_to_es(good: dict[str, subprocess.CompletedProcess[str]]) -> None:
    for name in ("example", "historical", "student_t", "jumps", "xrp"):
        r = report_of(good[name])
        assert math.fsum(r["contributions"].values()) == pytest.approx(r["es"], rel=1e-9), name


def test_seed_reproducible_and_different_seed_differs(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    a, b, c = (report_of(good[n]) for n in ("example", "example_again", "example_seed2"))
    for key in ("var", "es", "var_stderr", "es_stderr", "contributions", "exposures", "prices"):
        assert a[key] == b[key], key
    assert c["seed"] == 2
    assert c["var"] != a["var"]
    assert c["es"] != a["es"]


def test_short_position_has_positive_losses(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    r = report_of(good["short"])
    assert r["exposures"]["BTC"] < 0
    assert r["var"] > 0 and r["es"] > r["var"]
    assert r["contributions"]["BTC"] > 0


def test_missing_prices_are_the_last_shipped_close(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    r = report_of(good["example"])
    data = Path(aggregator.__file__).parent / "data" / "prices"
    eth, sol, usdc = (last_close(data / f"{a}-USD_1d.csv") for a in ("ETH", "SOL", "USDC"))
    assert r["prices"] == {"BTC": 97443.09, "ETH": eth, "SOL": sol, "USDC": usdc}
    assert r["exposures"]["ETH"] == pytest.approx(-10 * eth, rel=1e-15)
    assert r["exposures"]["SOL"] == pytest.approx(400 * sol, rel=1e-15)
    assert r["exposures"]["BTC"] == pytest.approx(1.5 * 97443.09, rel=1e-15)
    assert r["exposures"]["USDC"] == pytest.approx(50000 * usdc, rel=1e-15)
    # ETH is short: its returns in the loss tail are rises, so its ES part is a hedge
    assert r["contributions"]["ETH"] < 0


def test_custom_history_dir_names_assets_by_file(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    xrp, eth = report_of(good["xrp"]), report_of(good["eth"])
    close = last_close(DEFAULT_HISTORY_DIR / "ETH-USD_1d.csv")
    assert set(xrp["contributions"]) == {"XRP"}
    assert xrp["prices"] == {"XRP": close}
    assert xrp["exposures"] == {"XRP": pytest.approx(100 * close, rel=1e-15)}
    # XRP's file is ETH's closes under another name: same calibration, same draws, same figures
    assert (xrp["var"], xrp["es"]) == (eth["var"], eth["es"])
    assert xrp["var"] > 0


def test_table_output(good: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = good["table"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "VAR" in out and "ES" in out
    for asset in ("BTC", "ETH", "SOL", "USDC"):
        assert asset in out
    assert "backend numpy, executor local, seed 0" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_backend_auto_falls_back_to_numpy(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    r = report_of(good["auto"])
    assert r["backend"] == ("cupy" if gpu_usable() else "numpy")
    assert r["var"] > 0


@pytest.mark.parametrize(
    ("name", "model", "horizon"),
    [("historical", "historical", 5.0), ("student_t", "student_t", 1.0)],
)
def test_other_models_run(
    name: str, model: str, horizon: float, good: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    r = report_of(good[name])
    assert r["model"] == model
    assert r["horizon_days"] == horizon
    assert r["var"] > 0 and r["es"] >= r["var"]
    assert r["var_stderr"] is not None and r["var_stderr"] > 0


def test_five_day_historical_is_riskier_than_one_day_gaussian(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    # not a tight law, but a 5-day horizon on the same book must not come out smaller
    assert report_of(good["historical"])["var"] > report_of(good["example"])["var"]


def test_jumps_increase_es(good: dict[str, subprocess.CompletedProcess[str]]) -> None:
    base, jumps = report_of(good["no_jumps"]), report_of(good["jumps"])
    assert base["exposures"] == jumps["exposures"]
    assert jumps["model"] == base["model"] == "gaussian"
    # same seed, same diffusion draws; a 5% chance of losing 60% of SOL dominates the 1% tail
    assert jumps["es"] > base["es"] * 1.5
    assert jumps["var"] > base["var"]
    assert jumps["contributions"]["SOL"] > base["contributions"]["SOL"]


def test_model_flag_applies_when_the_file_model_has_no_kind(
    good: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    assert report_of(good["jumps_student_t"])["model"] == "student_t"
    assert report_of(good["file_kind"])["model"] == "student_t"
