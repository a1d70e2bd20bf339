"""Bad input to ``margin`` and ``authorize``: exit 2, one line naming the field, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _run(devnet: Any, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = str(devnet.directory / "config.toml")
    return subprocess.run(
        [sys.executable, "-m", "aggregator.cli", *args, "--config", cfg],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("margin", "0x1234"), "account"),
        (
            (
                "authorize",
                "--account",
                "nope",
                "--chain-id",
                "31337002",
                "--market",
                "ETH",
                "--size-delta",
                "1",
            ),
            "account",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "5",
                "--market",
                "ETH",
                "--size-delta",
                "1",
            ),
            "chain_id",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "31337002",
                "--market",
                "DOGE",
                "--size-delta",
                "1",
            ),
            "market",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "31337002",
                "--market",
                "ETH",
                "--size-delta",
                "0",
            ),
            "size_delta",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "31337002",
                "--market",
                "ETH",
                "--size-delta",
                "NaN",
            ),
            "size_delta",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "31337002",
                "--market",
                "ETH",
                "--size-delta",
                "abc",
            ),
            "size_delta",
        ),
        (
            (
                "authorize",
                "--account",
                ACCOUNT,
                "--chain-id",
                "31337002",
                "--market",
                "ETH",
                "--size-delta",
                "1e40",
            ),
            "size_delta",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_field(
    devnet: Any, args: tuple[str, ...], field: str
) -> None:
    out = _run(devnet, *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_bad_venues_file_names_the_row(devnet: Any, tmp_path: Any) -> None:
    venues = tmp_path / "venues.json"
    row = {"venue": "cex", "account": ACCOUNT, "asset": "ETH", "quantity": "x"}
    venues.write_text(json.dumps([row]))
    out = _run(devnet, "margin", ACCOUNT, "--venues", str(venues))
    assert out.returncode == 2 and out.stderr.startswith("error: venues[0].quantity"), out.stderr


def test_venue_balances_are_exposure_and_venue_debts_count(devnet: Any, tmp_path: Any) -> None:
    """An exchange balance can leave at any moment: it is shown (valued) but backs no margin;
    a debt there is owed whatever happens, so it counts."""
    venues = tmp_path / "venues.json"
    venues.write_text(
        json.dumps([{"venue": "cex", "account": ACCOUNT, "asset": "USDC", "quantity": 1000}])
    )
    debts = tmp_path / "debts.json"
    debts.write_text(
        json.dumps([{"venue": "cex", "account": ACCOUNT, "asset": "USDC", "quantity": -500}])
    )
    base = json.loads(_run(devnet, "margin", ACCOUNT, "--json").stdout)
    more = json.loads(_run(devnet, "margin", ACCOUNT, "--json", "--venues", str(venues)).stdout)
    owed = json.loads(_run(devnet, "margin", ACCOUNT, "--json", "--venues", str(debts)).stdout)
    assert more["equity"] == pytest.approx(base["equity"], rel=1e-12)
    (line,) = [ln for ln in more["holdings_unlocked"] if ln["source"] == "venue:cex"]
    assert 990 < line["value_usd"] < 1010 and line["locked"] is False  # 1,000 USDC at about 1 USD
    assert more["holdings_unlocked_usd"] - base["holdings_unlocked_usd"] == pytest.approx(
        line["value_usd"]
    )
    assert "venue:cex" not in more["by_chain"]
    usdc_price = (base["equity"] - owed["equity"]) / 500
    assert 0.99 < usdc_price < 1.01
    assert "venue:cex" in owed["by_chain"]
