"""Input hygiene of the CLI on a devnet (issue 11): addresses with a wrong EIP-55 checksum,
sizes in other digits, duplicate JSON keys, ``authorize``'s exit codes (0 approved, 1 refused,
2 bad input) and ``devnet submit`` on a reverted transaction (exit 1, the decoded reason)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from chains.compile import load_artifact
from chains.revert import mined_revert_reason, revert_reason

ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TYPO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C9"  # last digit mistyped, mixed case kept
B = 31337002


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _one_error_line(out: subprocess.CompletedProcess[str], prefix: str, code: int = 2) -> str:
    assert out.returncode == code, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {prefix}"), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def _authorize(directory: Path, size: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        "authorize",
        "--account",
        ACCOUNT,
        "--chain-id",
        str(B),
        "--market",
        "ETH",
        "--size-delta",
        size,
        "--config",
        str(directory / "config.toml"),
        *extra,
    )


@pytest.fixture(scope="module")
def own(devnet_factory: Any) -> Path:
    """A devnet of this module's own: positions are opened on it."""
    return Path(devnet_factory(3).directory)


# --- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("margin", TYPO),
        ("report", TYPO, "--out", "/dev/null"),
        ("snapshot", "--accounts", f"{ACCOUNT},{TYPO}"),
        (
            "authorize",
            "--account",
            TYPO,
            "--chain-id",
            str(B),
            "--market",
            "ETH",
            "--size-delta",
            "1",
        ),
        ("bridge", "pending", "--account", TYPO),
    ],
    ids=["margin", "report", "snapshot", "authorize", "bridge-pending"],
)
def test_a_mistyped_checksummed_address_is_refused(devnet: Any, args: tuple[str, ...]) -> None:
    out = _cli(*args, "--config", str(devnet.directory / "config.toml"))
    line = _one_error_line(out, "account")
    assert "EIP-55 checksum" in line and "invalid" in line
    assert ACCOUNT not in line and ACCOUNT.lower() not in line  # no "did you mean" account
    assert out.stdout == ""


def test_all_lower_case_addresses_are_still_accepted(devnet: Any) -> None:
    out = _cli(
        "snapshot",
        "--accounts",
        ACCOUNT.lower(),
        "--json",
        "--config",
        str(devnet.directory / "config.toml"),
    )
    assert out.returncode == 0, out.stderr
    accounts = {b["account"] for c in json.loads(out.stdout)["chains"] for b in c["balances"]}
    assert accounts == {ACCOUNT}


def test_a_venue_row_with_a_bad_checksum_names_the_row(devnet: Any, tmp_path: Path) -> None:
    venues = tmp_path / "venues.json"
    venues.write_text(json.dumps([{"venue": "x", "account": TYPO, "asset": "USDC", "quantity": 1}]))
    out = _cli(
        "margin",
        ACCOUNT,
        "--venues",
        str(venues),
        "--config",
        str(devnet.directory / "config.toml"),
    )
    assert "EIP-55" in _one_error_line(out, "venues[0].account")


# --- sizes and JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("size", ["1_000", "١٢", " 1", "1e2", "0x10", "+-1", "1.", ".5"])
def test_size_delta_is_ascii_digits_only(devnet: Any, size: str) -> None:
    assert "plain decimal" in _one_error_line(_authorize(devnet.directory, size), "size_delta")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[{"venue": "x", "venue": "y", "account": "%s", "asset": "USDC", "quantity": 1}]', ""),
        ('[{"venue": "x", "account": "%s", "asset": "USDC", "quantity": "1_000"}]', "[0]"),
        ('[{"venue": "x", "account": "%s", "asset": "USDC", "quantity": "١٢"}]', "[0]"),
    ],
    ids=["duplicate-key", "underscore", "arabic-indic"],
)
def test_bad_venues_json(devnet: Any, tmp_path: Path, text: str, field: str) -> None:
    venues = tmp_path / "venues.json"
    venues.write_text(text % ACCOUNT, encoding="utf-8")
    out = _cli(
        "margin",
        ACCOUNT,
        "--venues",
        str(venues),
        "--config",
        str(devnet.directory / "config.toml"),
    )
    line = _one_error_line(out, f"venues{field}")
    assert ("duplicate key 'venue'" in line) if not field else ("plain decimal" in line)


def test_submit_refuses_a_decision_file_with_a_duplicate_key(devnet: Any, tmp_path: Path) -> None:
    decision = tmp_path / "decision.json"
    decision.write_text('{"approved": false, "approved": true, "attestation": {}}')
    out = _cli("devnet", "submit", str(decision), "--dir", str(devnet.directory))
    assert "duplicate key 'approved'" in _one_error_line(out, "decision")


# --- authorize's exit codes and devnet submit -----------------------------------------------


def test_authorize_exit_codes_approved_refused_bad_input(own: Path, tmp_path: Path) -> None:
    approved = _authorize(own, "0.01", "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["approved"] is True
    refused = _authorize(own, "100000000", "--json")  # far beyond the account's margin
    assert refused.returncode == 1, refused.stderr
    body = json.loads(refused.stdout)
    assert body["approved"] is False and body["reason"]
    shown = _authorize(own, "100000000")  # the table form: same status, the reason printed
    assert shown.returncode == 1 and "refused" in shown.stdout and "reason:" in shown.stdout
    _one_error_line(_authorize(own, "abc"), "size_delta", code=2)
    help_text = _cli("authorize", "--help").stdout
    assert "0 approved" in help_text and "1 refused" in help_text and "2 bad input" in help_text


def test_submit_twice_exits_1_with_the_decoded_revert_reason(own: Path, tmp_path: Path) -> None:
    decision = tmp_path / "decision.json"
    assert _authorize(own, "0.02", "--save", str(decision)).returncode == 0
    first = _cli("devnet", "submit", str(decision), "--dir", str(own))
    assert first.returncode == 0 and "position opened" in first.stdout, first.stderr
    again = _cli("devnet", "submit", str(decision), "--dir", str(own))
    line = _one_error_line(again, "attestation", code=1)
    assert line == f"error: attestation: reverted on chain {B}: gate: nonce used", line


def test_a_mined_revert_is_decoded(own: Path, tmp_path: Path) -> None:
    """Two transactions with one attestation in one block: the second is mined and reverts
    (the case a pre-flight call cannot catch); its reason comes from the chain."""
    decision = tmp_path / "decision.json"
    assert _authorize(own, "0.03", "--save", str(decision)).returncode == 0
    from aggregator.attestation import MarginAttestation
    from chains.config import load_config

    body = json.loads(decision.read_text())
    att = MarginAttestation.from_typed_data(body["attestation"]["typed_data"])
    chain = load_config(own / "config.toml").chain(B)
    w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
    perp = w3.eth.contract(address=chain.perp_market, abi=list(load_artifact("PerpMarket").abi))
    call = perp.functions.open(att.as_tuple(), bytes.fromhex(body["attestation"]["signature"][2:]))
    sender = w3.eth.accounts[7]
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        txs = [call.transact({"from": sender, "gas": 3_000_000}) for _ in range(2)]
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    receipts = [w3.eth.wait_for_transaction_receipt(t, timeout=30) for t in txs]
    assert [r["status"] for r in receipts] == [1, 0]
    assert mined_revert_reason(w3, txs[1], receipts[1]) == "gate: nonce used"


def test_revert_reason_decodes_error_string() -> None:
    data = "0x08c379a0" + (
        "0000000000000000000000000000000000000000000000000000000000000020"
        "0000000000000000000000000000000000000000000000000000000000000010"
        "676174653a206e6f6e6365207573656400000000000000000000000000000000"
    )
    assert revert_reason(data, "execution reverted: whatever") == "gate: nonce used"
    assert revert_reason({"data": data}) == "gate: nonce used"
    assert revert_reason("0x", "execution reverted: gate: expired") == "gate: expired"
    assert revert_reason("0x08c379a0ff", None) == "no reason given"
