"""Collateral that cannot leave while it backs risk (issue: "The margin is enforced on chain"),
on a devnet and a server of the module's own: the vault releases nothing without the engine's
signature, withdrawals join the gate's outstanding set, the attack of the issue (approve, take
everything out, approve again) is refused at both steps, and the escape hatch works after its
delay and not before, its amount no longer backing margin from the request on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from aggregator.attestation import WithdrawalAttestation, sign
from chains.config import load_config
from chains.devnet_margin import DEVNET_WITHDRAWAL_DELAY_S
from tests.gate_helpers import (
    FUNDING,
    A,
    B,
    Chains,
    breaches,
    fresh_accounts,
    fund,
    gate_config,
    live_rows,
    serve,
    wait_epoch,
)

USDC = 10**6


class Net:
    """A devnet of the module's own, funded fresh accounts (20,000 USDC locked on chain A),
    and a server over them."""

    def __init__(self, devnet_config: Path, tmp: Path) -> None:
        self.pool = fresh_accounts(10, f"withdrawals-{time.time()}")
        self.cfg = load_config(devnet_config)
        fund(self.cfg, self.pool)
        self.config = gate_config(
            devnet_config, tmp / "gate.toml", self.pool, tmp / "s.sqlite", attestation_ttl_s=120
        )
        self.store = tmp / "s.sqlite"
        self.server = serve(self.config, tmp / "serve.log")
        self.chains = Chains(self.cfg)
        self.taken = 0

    def account(self) -> str:
        self.taken += 1
        return self.pool[self.taken - 1]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.server.client(headers=self.server.auth) as c:
            r = c.post(path, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def authorise(self, account: str, size: str, market: str = "ETH") -> dict[str, Any]:
        body = {"account": account, "chain_id": B, "market": market, "size_delta": size}
        return self.post("/v1/authorizations", body)

    def withdraw(self, account: str, amount: str, **extra: Any) -> dict[str, Any]:
        body = {"account": account, "chain_id": A, "token": "USDC", "amount": amount, **extra}
        return self.post("/v1/withdrawals", body)

    def margin(self, account: str) -> dict[str, Any]:
        with self.server.client(headers=self.server.auth) as c:
            r = c.get(f"/v1/accounts/{account}/margin")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def locked(self, account: str) -> int:
        usdc = self.chains.token(A, "USDC").address
        return int(
            self.chains.contract(A, "CollateralVault").functions.collateral(account, usdc).call()
        )

    def wallet(self, account: str) -> int:
        return int(self.chains.token(A, "USDC").functions.balanceOf(account).call())


@pytest.fixture(scope="module")
def net(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    info = devnet_factory(3)
    n = Net(info.config_path, tmp_path_factory.mktemp("withdrawals"))
    try:
        wait_epoch(n.server)
        yield n
    finally:
        n.server.stop()


def _forged(net: Net, account: str, key: Any, **change: Any) -> tuple[tuple[Any, ...], bytes]:
    """A withdrawal of everything ``account`` has locked, signed by ``key``."""
    vault = net.chains.contract(A, "CollateralVault")
    gate = net.chains.contract(A, "MarginGate")
    now = int(time.time())
    fields: dict[str, Any] = {
        "account": account,
        "vault": vault.address,
        "token": net.chains.token(A, "USDC").address,
        "amount": net.locked(account),
        "recipient": account,
        "equity": 0,
        "initial_margin": 0,
        "snapshot_hash": b"\0" * 32,
        "risk_model_hash": b"\0" * 32,
        "issued_at": now - 60,
        "valid_until": now + 60,
        "nonce": int.from_bytes(os.urandom(32), "big"),
        "counter": int(gate.functions.counter_of(account).call()),
    }
    att = WithdrawalAttestation(**{**fields, **change})
    return att.as_tuple(), bytes.fromhex(sign(att, A, gate.address, key)[2:])


def test_the_vault_releases_nothing_without_the_engines_signature(net: Net) -> None:
    account = net.account()
    vault = net.chains.contract(A, "CollateralVault")
    stranger = Account.from_key(os.urandom(32))
    att, sig = _forged(net, account, stranger)
    sender = net.chains.w3[A].eth.accounts[7]
    assert "gate: unknown signer" in net.chains.send(A, vault.functions.withdraw(att, sig), sender)
    assert "gate: bad signature" in net.chains.send(
        A, vault.functions.withdraw(att, b"\1" * 64), sender
    )
    # the account itself cannot take its collateral out either: only the escape hatch
    assert "gate: unknown signer" in net.chains.send(A, vault.functions.withdraw(att, sig), account)
    assert net.locked(account) == FUNDING * USDC and net.wallet(account) == 0


def test_a_safe_withdrawal_is_approved_reserved_executed_and_released(net: Net) -> None:
    account = net.account()
    before = net.margin(account)
    d = net.withdraw(account, "5000.5")
    assert d["approved"], d["reason"]
    assert d["no_risk"] is True  # no position, nothing outstanding: approved at once
    message = d["attestation"]["typed_data"]["message"]
    assert d["attestation"]["typed_data"]["primaryType"] == "WithdrawalAttestation"
    assert (message["amount"], message["recipient"]) == (5000_500000, account)
    assert [r for r in live_rows(net.store) if r[0] == account], "reserved until executed"
    assert net.chains.submit(d) == ""
    assert net.locked(account) == (FUNDING * USDC) - 5000_500000
    assert net.wallet(account) == 5000_500000
    # the same attestation twice: spent
    assert "gate: nonce used" in net.chains.submit(d)
    wait_epoch(net.server)
    assert not [r for r in live_rows(net.store) if r[0] == account], "released once seen filled"
    after = net.margin(account)
    # USDC at its feed's price (not exactly 1): a quarter of the locked USDC left margin
    kept = Decimal(FUNDING) - Decimal("5000.5")
    assert after["equity"] == pytest.approx(before["equity"] * float(kept / FUNDING), rel=1e-4)
    assert after["holdings_unlocked_usd"] == pytest.approx(5000.5, rel=1e-3)  # wallet: exposure


def test_no_more_than_the_locked_balance_less_what_is_being_withdrawn(net: Net) -> None:
    account = net.account()
    first = net.withdraw(account, "15000")
    assert first["approved"], first["reason"]
    second = net.withdraw(account, "15000")  # the first is still outstanding
    assert not second["approved"]
    assert "5000" in second["reason"] and "not already being withdrawn" in second["reason"]
    third = net.withdraw(account, "5000")
    assert third["approved"], third["reason"]
    assert net.chains.submit(first) == "" and net.chains.submit(third) == ""
    assert net.locked(account) == 0


def test_a_withdrawal_that_would_breach_initial_margin_is_refused(net: Net) -> None:
    account = net.account()
    opened = net.authorise(account, "30")
    assert opened["approved"], opened["reason"]
    assert net.chains.submit(opened) == ""
    wait_epoch(net.server)
    m = net.margin(account)
    free = m["equity"] - m["initial_margin"]
    assert free > 1000
    too_much = net.withdraw(account, f"{free + 500:.2f}")
    assert not too_much["approved"]
    assert "free margin after" in too_much["reason"] and "withdrawal" in too_much["reason"]
    safe = net.withdraw(account, f"{free / 2:.2f}")
    assert safe["approved"], safe["reason"]
    assert safe["no_risk"] is False and safe["free_margin_after"] >= 0
    assert net.chains.submit(safe) == ""
    assert breaches(net.cfg, [account]) == []


def test_the_attack_approve_take_everything_out_approve_again_is_refused(net: Net) -> None:
    """The issue's attack: a large approval, all the collateral out 0.3 s later, the same
    approval again. The withdrawal is refused (the approval is outstanding) and so is the
    second approval (both would not fit the equity)."""
    probe_account, account = net.account(), net.account()
    probe = net.authorise(probe_account, "1")
    assert probe["approved"], probe["reason"]
    per_eth = probe["initial_margin_after"] - probe["initial_margin_before"]
    size = int(0.65 * (probe["equity"] - probe["initial_margin_before"]) / per_eth)
    first = net.authorise(account, str(size))
    assert first["approved"], first["reason"]
    everything = net.withdraw(account, str(FUNDING))
    assert not everything["approved"] and "free margin after" in everything["reason"]
    again = net.authorise(account, str(size))
    assert not again["approved"] and "negative" in again["reason"]
    assert net.chains.submit(first) == ""
    assert breaches(net.cfg, [account]) == []


def test_the_escape_hatch_works_after_its_delay_and_stops_backing_margin_at_once(
    net: Net,
) -> None:
    account = net.account()
    vault = net.chains.contract(A, "CollateralVault")
    usdc = net.chains.token(A, "USDC").address
    pending = net.withdraw(account, "1000")  # outstanding on the vault's chain
    assert pending["approved"], pending["reason"]
    before = net.margin(account)
    assert (
        net.chains.send(A, vault.functions.request_withdrawal(usdc, 12_000 * USDC), account) == ""
    )
    requested = time.time()
    # not before the delay
    early = net.chains.send(A, vault.functions.complete_withdrawal(usdc), account)
    assert "vault: delay not over" in early
    # an approval on the vault's chain granted against the amount died with the request (it
    # bumps the account's counter on that chain's gate)
    assert "gate: old counter" in net.chains.submit(pending)
    wait_epoch(net.server)
    after = net.margin(account)
    assert after["equity"] == pytest.approx(before["equity"] * 8_000 / FUNDING, rel=1e-4)
    # new risk that needs the amount is refused: the rest is all that backs margin
    assert not net.withdraw(account, "8001")["approved"]
    time.sleep(max(0.0, requested + DEVNET_WITHDRAWAL_DELAY_S + 1.5 - time.time()))
    assert net.chains.send(A, vault.functions.complete_withdrawal(usdc), account) == ""
    assert net.wallet(account) == 12_000 * USDC and net.locked(account) == 8_000 * USDC
    # a second request, cancelled: the amount backs margin again
    assert net.chains.send(A, vault.functions.request_withdrawal(usdc, 1_000 * USDC), account) == ""
    assert net.chains.send(A, vault.functions.cancel_withdrawal_request(usdc), account) == ""
    assert net.locked(account) == 8_000 * USDC


def test_the_cli_withdraw_shares_the_servers_store_and_exits_0_1_2(net: Net) -> None:
    account = net.account()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "withdraw", "--account", account,
             "--chain-id", str(A), "--config", str(net.config), "--json", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    ok = run("--token", "USDC", "--amount", "19000", "--to", net.pool[-1])
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)
    assert d["approved"] and d["recipient"] == net.pool[-1] and d["amount_raw"] == "19000000000"
    # the server sees the CLI's reservation: together they exceed the locked 20,000
    over = net.withdraw(account, "1001")
    assert not over["approved"] and "not already being withdrawn" in over["reason"]
    refused = run("--token", "USDC", "--amount", "1001")
    assert refused.returncode == 1 and not json.loads(refused.stdout)["approved"]
    bad = run("--token", "DOGE", "--amount", "1")
    assert bad.returncode == 2 and "token" in bad.stderr and "Traceback" not in bad.stderr
    decimals = run("--token", "USDC", "--amount", "1.0000001")
    assert decimals.returncode == 2 and "amount" in decimals.stderr
    # the API names the field too, and never answers with a traceback
    with net.server.client(headers=net.server.auth) as c:
        for body, field in (
            ({"token": "DOGE", "amount": "1"}, "token"),
            ({"token": "USDC", "amount": "1e3"}, "amount"),
            ({"token": "USDC", "amount": "1", "recipient": "0x12"}, "recipient"),
        ):
            r = c.post("/v1/withdrawals", json={"account": account, "chain_id": A, **body})
            assert r.status_code in (400, 422) and field in r.json()["error"], r.text
    assert net.chains.submit(d) == ""
    assert net.wallet(net.pool[-1]) == 19_000 * USDC
