"""Input hygiene without a chain (issue 11): sizes are ASCII decimals, JSON keys are unique,
and ``omnimargin risk`` refuses up front a tail under 10 scenarios or a run that needs more
memory than there is. Every refusal is one ``error: field: reason`` line, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import aggregator.risk_limits as limits
from aggregator.cli import app
from aggregator.errors import InputError
from aggregator.inputs import account, load_json, parse_decimal
from aggregator.portfolio_file import decode_json, load_portfolio, parse_portfolio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.json"
ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


# --- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("3", Decimal(3)), ("-1.5", Decimal("-1.5")), ("+0.25", Decimal("0.25"))]
)
def test_plain_ascii_decimals_parse(text: str, value: Decimal) -> None:
    assert parse_decimal("size_delta", text) == value


@pytest.mark.parametrize(
    "text",
    ["1_000", "١٢", "１２", "12 ", "\t1", "1e3", "1E-2", "Infinity", "NaN", ".5", "5.", "--1", ""],
)
def test_other_decimals_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_decimal("size_delta", text)
    assert err.value.field == "size_delta" and "plain decimal" in err.value.reason


@pytest.mark.parametrize("text", ["1_000", "١٢", " 12", "1e3"])
def test_portfolio_quantities_and_prices_as_strings_are_ascii_decimals(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_portfolio({"positions": [{"asset": "BTC", "quantity": text}]})
    assert err.value.field == "positions[0].quantity"
    with pytest.raises(InputError) as err:
        parse_portfolio({"positions": [{"asset": "BTC", "quantity": "1"}], "prices": {"BTC": text}})
    assert err.value.field == "prices.BTC"
    assert parse_portfolio({"positions": [{"asset": "BTC", "quantity": "-2.5"}]}).positions[
        0
    ].quantity == Decimal("-2.5")


# --- JSON keys --------------------------------------------------------------------------


def test_a_duplicate_key_in_a_portfolio_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"positions": [{"asset": "BTC", "quantity": 1, "quantity": -1}]}')
    with pytest.raises(InputError) as err:
        load_portfolio(path)
    assert err.value.field == "portfolio" and "duplicate key 'quantity'" in err.value.reason
    with pytest.raises(InputError, match="duplicate key 'BTC'"):
        decode_json('{"positions": [], "prices": {"BTC": 1, "BTC": 2}}', "portfolio")


def test_load_json_keeps_nested_equal_keys_and_refuses_repeats() -> None:
    assert load_json('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}', "x") == {
        "a": {"a": 1},
        "b": [{"a": 2}, {"a": 3}],
    }
    with pytest.raises(InputError, match=r"^x: duplicate key 'a'"):
        load_json('{"b": [{"a": 2, "a": 3}]}', "x")


def test_the_cli_names_a_duplicate_key_in_the_portfolio(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"positions": [{"asset": "BTC", "asset": "ETH", "quantity": 1}]}')
    out = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "risk", "-p", str(path), "--scenarios", "2000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.strip() == "error: portfolio: duplicate key 'asset' in a JSON object"


# --- addresses (the aggregator's InputError form) -----------------------------------------


def test_account_input_refuses_a_bad_checksum_as_an_input_error() -> None:
    assert account(ACCOUNT.lower()) == ACCOUNT
    with pytest.raises(InputError) as err:
        account(ACCOUNT[:-1] + "9", "venues[0].account")
    assert err.value.field == "venues[0].account" and "EIP-55" in err.value.reason


# --- risk: the tail and the memory ----------------------------------------------------------


def _risk(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["risk", "-p", str(EXAMPLE), "--json", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("scenarios", "alpha"), [("500", "0.99"), ("900", "0.99"), ("3600", "0.9975")]
)
def test_a_tail_under_10_scenarios_is_refused(scenarios: str, alpha: str) -> None:
    code, output = _risk("--scenarios", scenarios, "--alpha", alpha)
    assert code == 2, output
    assert output.startswith("error: scenarios: ") and "fewer than 10" in output, output


def test_a_tail_of_10_runs() -> None:
    code, output = _risk("--scenarios", "1000", "--alpha", "0.99", "--workers", "1")
    assert code == 0, output
    assert json.loads(output)["scenarios"] == 1000


def test_a_run_needing_more_memory_than_available_is_refused_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda: 64 * 2**10)  # 64 KiB left
    started: list[int] = []
    monkeypatch.setattr("aggregator.cli.run_portfolio_risk", lambda *a, **k: started.append(1))
    code, output = _risk("--scenarios", "200000", "--workers", "1")
    assert code == 2, output
    assert output.startswith("error: scenarios: 200,000 scenarios need about "), output
    assert "only 0.1 MiB is available" in output and not started


def test_an_absurd_scenario_count_is_refused_on_this_machine() -> None:
    code, output = _risk("--scenarios", str(10**13))  # its tail alone is terabytes
    assert code == 2 and output.startswith("error: scenarios: "), output
    assert "of memory" in output


def test_the_estimate_grows_with_scenarios_and_columns() -> None:
    small = limits.memory_estimate(100_000, 4, 0.99, 2)
    assert limits.memory_estimate(10**9, 4, 0.99, 2) > 100 * small
    assert limits.memory_estimate(100_000, 40, 0.99, 2) > 5 * small
    have = limits.available_memory()
    assert have is not None and have > 2**20  # /proc/meminfo on Linux


# --- the API's request body -----------------------------------------------------------------


def test_the_authorization_body_checks_the_accounts_checksum() -> None:
    from pydantic import ValidationError

    from aggregator.service.schemas import AuthorizationRequest

    body = {"chain_id": 31337002, "market": "ETH", "size_delta": "1"}
    ok = AuthorizationRequest.model_validate({**body, "account": ACCOUNT.lower()})
    assert ok.account == ACCOUNT
    with pytest.raises(ValidationError) as err:
        AuthorizationRequest.model_validate({**body, "account": ACCOUNT[:-1] + "9"})
    first = err.value.errors()[0]
    assert first["loc"] == ("account",) and "EIP-55 checksum" in first["msg"]
    assert "Value error" not in first["msg"]  # the 422 body shows the reason alone
