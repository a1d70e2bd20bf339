"""Liquidation across chains on a devnet of the module's own (issue: "The margin is enforced on
chain"): a long ETH perp on chain B backed by USDC locked on chain A, ETH shocked on every
chain; the plan closes the position on B and seizes collateral on A, the submitter gets the
bonus and the insurance fund the penalty, rounds go on until health reaches the target, and a
fresh read agrees with the plan. An account under water: everything closed and seized, the
shortfall covered by the fund, recorded as bad debt."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, decide, fresh_state
from aggregator.keeper import fund_report, liquidate, pending_steps, submit_steps
from aggregator.liquidation import LiquidationPolicy, liquidation_policy
from aggregator.store import Store
from chains.config import OmnimarginConfig, load_config
from chains.devnet_control import shock
from chains.devnet_margin import DEVNET_FUND, DEVNET_FUND_USDC
from tests.gate_helpers import FUNDING, A, B, Chains, fresh_accounts, fund

USDC = 10**6


class Net:
    def __init__(self, config: Path, tmp: Path) -> None:
        self.path = config
        self.cfg = load_config(config)
        self.pool = fresh_accounts(6, f"liquidation-{time.time()}")
        fund(self.cfg, self.pool)
        self.key = load_signer_key(self.cfg.signer)
        self.store = Store(tmp / "s.sqlite")
        self.chains = Chains(self.cfg)
        self.lp = liquidation_policy(self.cfg)
        self.liquidator = self.chains.w3[A].eth.accounts[6]
        self.taken = 0
        self.eth0 = self.eth_price()

    def account(self) -> str:
        self.taken += 1
        return self.pool[self.taken - 1]

    def state(self, account: str) -> Any:
        return fresh_state(self.cfg, self.store, self.key, account)

    def open(self, account: str, size: Decimal) -> None:
        d = decide(
            self.cfg, self.state(account), Request(account, B, "ETH", size), self.store, self.key
        )
        assert d["approved"], d["reason"]
        assert self.chains.submit(d) == ""

    def shock(self, pct: str) -> None:
        """ETH moves by ``pct`` % from where it is (shocks compound)."""
        asyncio.run(shock(self.cfg, "ETH", Decimal(pct)))

    def eth_price(self) -> Decimal:
        price = self.state(self.pool[0]).world.prices["ETH"].price
        assert price is not None
        return Decimal(price.numerator) / Decimal(price.denominator)

    def restore(self) -> None:
        """ETH back at the price the module started with."""
        now = self.eth_price()
        asyncio.run(shock(self.cfg, "ETH", (self.eth0 / now - 1) * 100))

    def usdc(self, chain: int, who: str, vault: bool = True) -> int:
        token = self.chains.token(chain, "USDC")
        if vault:
            c = self.chains.contract(chain, "CollateralVault")
            return int(c.functions.collateral(who, token.address).call())
        return int(token.functions.balanceOf(who).call())


@pytest.fixture(scope="module")
def net(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Net:
    n = Net(devnet_factory(3).config_path, tmp_path_factory.mktemp("liquidation"))
    yield n
    n.store.close()


def _size_for(net: Net, account: str, health: float, move: float) -> Decimal:
    """A long ETH size whose health after an ETH move of ``move`` is about ``health``: MM per
    unit of notional from a probe (its scenarios scale with the price)."""
    probe = net.state(account)
    d = decide(net.cfg, probe, Request(account, B, "ETH", Decimal(1)), net.store, net.key)
    assert d["approved"], d["reason"]
    assert net.chains.submit(d) == ""  # 1 ETH open: part of the position
    state = net.state(account)
    price = float(state.world.prices["ETH"].price)
    mm_rate = (state.figures.maintenance_margin - 0.0) / price  # MM of 1 ETH per USD notional
    equity = float(state.figures.equity)
    # equity + N * price * move = health * mm_rate * N * price * (1 + move), N in ETH
    n = equity / (price * (health * mm_rate * (1 + move) - move))
    return Decimal(int((n - 1) * 1000)) / 1000


def test_a_shock_makes_an_account_liquidatable_and_rounds_restore_its_health(net: Net) -> None:
    account = net.account()
    net.restore()
    size = _size_for(net, account, health=0.8, move=-0.4)
    net.open(account, size)
    assert net.state(account).figures.liquidatable is False
    net.shock("-40")
    before = net.state(account)
    assert before.figures.status == "ok" and before.figures.liquidatable is True
    assert float(before.figures.equity) > 0
    fund_before = net.usdc(A, DEVNET_FUND)
    bonus_before = net.usdc(A, net.liquidator, vault=False)
    rounds = 0
    health = before.figures.health
    assert health is not None and health < 1
    while rounds < 5:
        state = net.state(account)
        (r,) = liquidate(net.cfg, net.store, net.key, net.lp, [state]) or [None]
        if r is None:
            break
        rounds += 1
        p = r["plan"]
        assert [c["chain_id"] for c in p["closes"]] == [B] and p["closes"][0]["market"] == "ETH"
        assert {s["chain_id"] for s in p["seizes"]} == {A}  # the collateral is on A only
        assert Decimal(p["closes"][0]["size_delta"]) < 0  # a long is cut, never flipped
        assert (
            abs(Decimal(p["closes"][0]["size_delta"]))
            <= Decimal(str(net.lp.close_factor)) * (state.positions[(B, "ETH")])
        )
        # a plan never stacks on another while its steps are outstanding
        assert liquidate(net.cfg, net.store, net.key, net.lp, [state]) == []
        results = submit_steps(net.cfg, r["steps"], net.liquidator)
        assert all(x["executed"] for x in results), results
        after = net.state(account)
        assert after.figures.health is not None and after.figures.health > health
        # the plan's estimate and a fresh read of the chains agree
        assert after.figures.health == pytest.approx(p["health_after"], rel=0.02)
        health = after.figures.health
        if not after.figures.liquidatable and health >= net.lp.target_health:
            break
    assert rounds >= 1 and health >= net.lp.target_health * 0.999, (rounds, health)
    fees = net.usdc(A, DEVNET_FUND) - fund_before
    bonus = net.usdc(A, net.liquidator, vault=False) - bonus_before
    assert bonus > 0 and fees > 0
    # bonus and penalty are equal shares of the fee by default: the fund and the liquidator
    # get about the same
    assert abs(fees - bonus) <= 2 * rounds, (fees, bonus)
    net.restore()


def test_an_account_under_water_is_closed_seized_and_its_bad_debt_covered(net: Net) -> None:
    account = net.account()
    net.restore()
    size = _size_for(net, account, health=-0.5, move=-0.5)  # equity < 0 after the move
    net.open(account, size)
    net.shock("-50")
    state = net.state(account)
    equity = float(state.figures.equity)
    assert state.figures.status == "ok" and equity < 0
    fund_before = net.usdc(A, DEVNET_FUND)
    (r,) = liquidate(net.cfg, net.store, net.key, net.lp, [state])
    p = r["plan"]
    assert Decimal(p["closes"][0]["size_delta"]) == -state.positions[(B, "ETH")]  # all of it
    seized = [s for s in p["seizes"] if s["account"] == account]
    cover = [s for s in p["seizes"] if s["account"] == DEVNET_FUND]
    assert sum(int(s["amount"]) for s in seized) == FUNDING * USDC  # every unit
    assert cover and p["bad_debt_usd"] == pytest.approx(p["fund_cover_usd"], rel=1e-9)
    results = submit_steps(net.cfg, r["steps"], net.liquidator)
    assert all(x["executed"] for x in results), results
    after = net.state(account)
    assert after.positions.get((B, "ETH"), 0) == 0
    assert float(after.figures.equity) == pytest.approx(0, abs=1.0)  # the loss settled
    paid = fund_before - net.usdc(A, DEVNET_FUND)
    assert paid / USDC == pytest.approx(p["bad_debt_usd"], rel=1e-3)
    report = fund_report(net.cfg, net.store, net.lp)
    (debt,) = [d for d in report["bad_debts"] if d["account"] == account]
    assert float(debt["uncovered_usd"]) == pytest.approx(0, abs=1e-6)
    assert float(debt["covered_usd"]) == pytest.approx(p["bad_debt_usd"], rel=1e-9)
    assert report["total_usd"] == pytest.approx(
        (net.usdc(A, DEVNET_FUND) / USDC) * float(state.world.prices["USDC"].collateral_price),
        rel=1e-9,
    )
    assert report["total_usd"] < DEVNET_FUND_USDC
    net.restore()


def test_the_cli_liquidate_and_fund(net: Net) -> None:
    account = net.account()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator.cli", *args, "--config", str(net.path), "--json"],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    healthy = run("liquidate", account)
    assert healthy.returncode == 1, healthy.stderr
    assert json.loads(healthy.stdout)["reason"].startswith("health")
    bad = run("liquidate", "0x1234")
    assert bad.returncode == 2 and "account" in bad.stderr
    fund_out = run("fund")
    assert fund_out.returncode == 0, fund_out.stderr
    report = json.loads(fund_out.stdout)
    assert report["insurance_fund"] == DEVNET_FUND and report["balances"]


def test_policy_errors_name_the_field(net: Net) -> None:
    raw = net.cfg.model_dump(mode="json")
    for bad, field in (({"close_factor": 0}, "close_factor"), ({"bonus": -1}, "bonus")):
        cfg = OmnimarginConfig.model_validate({**raw, "liquidation": bad})
        with pytest.raises(Exception, match=f"liquidation.{field}"):
            liquidation_policy(cfg)
    assert isinstance(liquidation_policy(net.cfg), LiquidationPolicy)
    assert net.lp.insurance_fund == DEVNET_FUND


def test_nothing_outstanding_after_execution(net: Net) -> None:
    for account in net.pool[: net.taken]:
        assert pending_steps(net.store, net.state(account)) == []


def test_an_escape_hatch_request_still_pays_for_a_loss(net: Net) -> None:
    """All the collateral requested out through the escape hatch (no longer in equity), then
    ETH down: the account is under water, and the loss is seized from the request before the
    fund pays anything; what is left of the request is released after the delay."""
    account = net.account()
    net.restore()
    size = _size_for(net, account, health=1.5, move=-0.1)
    net.open(account, size)
    vault = net.chains.contract(A, "CollateralVault")
    usdc = net.chains.token(A, "USDC").address
    request = vault.functions.request_withdrawal(usdc, FUNDING * USDC)
    assert net.chains.send(A, request, account) == ""
    net.shock("-10")
    state = net.state(account)
    assert state.pending[(A, usdc)] == FUNDING and (A, usdc) not in state.locked
    assert float(state.figures.equity) < 0 and state.figures.status == "ok"
    fund_before = net.usdc(A, DEVNET_FUND)
    (r,) = liquidate(net.cfg, net.store, net.key, net.lp, [state])
    p = r["plan"]
    hatch = [s for s in p["seizes"] if s["account"] == account]
    assert hatch and p["fund_cover_usd"] == 0  # the request pays: the fund does not
    assert sum(float(s["value_usd"]) for s in hatch) == pytest.approx(-p["equity"], rel=1e-3)
    results = submit_steps(net.cfg, r["steps"], net.liquidator)
    assert all(x["executed"] for x in results), results
    after = net.state(account)
    assert float(after.figures.equity) == pytest.approx(0, abs=1.0)
    assert net.usdc(A, DEVNET_FUND) == fund_before
    left = vault.functions.pending(account, usdc).call()[0]
    assert left == FUNDING * USDC - sum(int(s["amount"]) for s in hatch)
    net.restore()


def test_a_plan_leaves_alone_what_an_outstanding_withdrawal_may_take(net: Net) -> None:
    """A withdrawal approved before the shock and not yet executed: the plan seizes only what
    stays locked whatever it does, so its steps execute even after the withdrawal does."""
    from aggregator.withdraw import withdraw, withdrawal_request

    account = net.account()
    net.restore()
    size = _size_for(net, account, health=0.8, move=-0.4)
    net.open(account, size)
    state = net.state(account)
    free = float(state.figures.equity) - state.figures.initial_margin
    amount = str(int(free * 0.9))
    out = withdraw(
        net.cfg, withdrawal_request(net.cfg, account, A, "USDC", amount), net.store, net.key
    )
    assert out["approved"], out["reason"]
    for _ in range(25):  # down 3 % at a time until below MM, still solvent
        net.shock("-3")
        state = net.state(account)
        if state.figures.liquidatable:
            break
    assert state.figures.liquidatable and float(state.figures.equity) > 0
    (r,) = liquidate(net.cfg, net.store, net.key, net.lp, [state])
    seized = sum(int(s["amount"]) for s in r["plan"]["seizes"] if s["account"] == account)
    assert seized <= (FUNDING - int(amount)) * USDC
    assert net.chains.submit(out) == ""  # the withdrawal goes first
    results = submit_steps(net.cfg, r["steps"], net.liquidator)
    assert all(x["executed"] for x in results), results
    net.restore()
