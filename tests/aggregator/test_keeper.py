"""The keeper of ``omnimargin serve`` on a devnet and a server of the module's own: after an ETH
shock the account with a long ETH perp goes liquidatable and, with no one asking, the keeper
plans, signs and submits its liquidation until its health is back; the penalty shows in
``GET /v1/fund``, the steps in ``GET /v1/liquidations`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chains.config import load_config
from chains.devnet_control import shock
from tests.gate_helpers import B, Chains, fresh_accounts, fund, gate_config, serve, wait_epoch


class Net:
    def __init__(self, devnet_config: Path, tmp: Path) -> None:
        self.cfg = load_config(devnet_config)
        self.pool = fresh_accounts(2, f"keeper-{time.time()}")
        fund(self.cfg, self.pool)
        self.config = gate_config(devnet_config, tmp / "k.toml", self.pool, tmp / "k.sqlite")
        self.server = serve(self.config, tmp / "serve.log")
        self.chains = Chains(self.cfg)

    def get(self, path: str) -> Any:
        with self.server.client(headers=self.server.auth) as c:
            r = c.get(path)
        assert r.status_code == 200, r.text
        return r.json() if path != "/metrics" else r.text

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.server.client(headers=self.server.auth) as c:
            r = c.post(path, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def net(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(devnet_factory(3).config_path, tmp_path_factory.mktemp("keeper"))
    try:
        wait_epoch(n.server)
        yield n
    finally:
        n.server.stop()


def test_the_keeper_liquidates_after_a_shock_with_no_one_asking(net: Net) -> None:
    account, bystander = net.pool
    probe = net.post(
        "/v1/authorizations",
        {"account": account, "chain_id": B, "market": "ETH", "size_delta": "1"},
    )
    assert probe["approved"], probe["reason"]
    per_eth = probe["initial_margin_after"] - probe["initial_margin_before"]
    size = int(0.8 * probe["equity"] / per_eth)  # IM at 80 % of equity: a -40 % move hurts
    d = net.post(
        "/v1/authorizations",
        {"account": account, "chain_id": B, "market": "ETH", "size_delta": str(size)},
    )
    assert d["approved"], d["reason"]
    assert net.chains.submit(d) == ""
    fund_before = net.get("/v1/fund")

    # ETH down 4 % at a time (shocks compound) until it is below MM, still solvent; the keeper
    # may act before a read here sees it liquidatable: its rounds say
    def rounds_of(who: str) -> list[dict[str, Any]]:
        return [r for r in net.get("/v1/liquidations")["rounds"] if r["account"] == who]

    seen_liquidatable = False
    for _ in range(20):
        asyncio.run(shock(net.cfg, "ETH", Decimal(-4)))
        wait_epoch(net.server)
        m = net.get(f"/v1/accounts/{account}/margin")
        seen_liquidatable |= bool(m["liquidatable"])
        if m["liquidatable"] or rounds_of(account):
            break
    assert m["equity"] > 0, m
    assert seen_liquidatable or rounds_of(account)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        m = net.get(f"/v1/accounts/{account}/margin")
        if not m["liquidatable"] and m["health"] is not None and m["health"] >= 1.25 * 0.999:
            break
        time.sleep(1)
    assert not m["liquidatable"] and m["health"] >= 1.25 * 0.999, m
    rounds = rounds_of(account)
    assert rounds and all(s["executed"] for r in rounds for s in r["submitted"])
    assert rounds[-1]["plan"]["health"] < 1  # the first round (newest first) began below MM
    assert all(r["account"] != bystander for r in net.get("/v1/liquidations")["rounds"])
    fund_after = net.get("/v1/fund")
    assert fund_after["total_usd"] > fund_before["total_usd"]  # the penalty
    metrics = net.get("/metrics")
    assert 'omnimargin_liquidation_steps_total{kind="liquidation",outcome="executed"}' in metrics
    assert "omnimargin_insurance_fund_usd" in metrics
    position = net.chains.position(B, account, "ETH")
    assert 0 < position < size + 1  # cut, never flipped
