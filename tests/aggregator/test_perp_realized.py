"""The devnet PerpMarket realises the P&L of what a reduction closes: a trade at the mark moves
no equity, however the position is cut (a cut never erases a loss, nor a gain)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregator.accounts import margin_report, policy_of, scenario_set
from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, decide, fresh_state
from aggregator.store import Store
from aggregator.world import read_world
from chains.config import load_config
from chains.devnet_control import shock
from tests.gate_helpers import B, Chains, fresh_accounts, fund


def test_cutting_a_position_at_the_mark_moves_no_equity(
    devnet_factory: Any, tmp_path: Path
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    (account,) = fresh_accounts(1, f"realized-{time.time()}")
    fund(cfg, [account], usdc=200_000)
    chains, key = Chains(cfg), load_signer_key(cfg.signer)
    policy, _ = policy_of(cfg)
    scen = scenario_set(cfg, policy)
    store = Store(tmp_path / "s.sqlite")

    def trade(size: str) -> None:
        d = decide(
            cfg, fresh_state(cfg, store, key, account), Request(account, B, "ETH", Decimal(size)),
            store, key,
        )  # fmt: skip
        assert d["approved"], d["reason"]
        assert chains.submit(d) == ""

    def equity() -> tuple[float, dict[str, Any]]:
        report, figures = margin_report(
            asyncio.run(read_world(cfg, [account])), account, scen, policy
        )
        (perp,) = [p for p in report["positions"] if p["kind"] == "perp"]
        return float(figures.equity), perp

    try:
        trade("10")
        start, _ = equity()
        for pct, cut in (("-20", "-4"), ("15", "-3"), ("-10", "-3")):  # loss, gain, loss
            asyncio.run(shock(cfg, "ETH", Decimal(pct)))
            before, _ = equity()
            trade(cut)
            after, perp = equity()
            assert after == pytest.approx(before, abs=1e-6), (pct, cut)
        assert Decimal(perp["quantity"]) == 0 and perp["realized_pnl"] < 0
        assert after < start  # the losses stayed, realised
    finally:
        store.close()
