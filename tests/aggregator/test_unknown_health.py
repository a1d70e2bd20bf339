"""Unknown is its own state: an account with a position whose price feeds went stale has
status "unknown", health and liquidatable null (never false), and gets no new risk; an account
with collateral alone is only degraded."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from aggregator.accounts import margin_report, policy_of, scenario_set
from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, decide, fresh_state
from aggregator.keeper import liquidate
from aggregator.liquidation import liquidation_policy, why_not
from aggregator.store import Store
from aggregator.withdraw import withdraw, withdrawal_request
from aggregator.world import read_world
from chains.config import load_config
from chains.devnet_control import set_feed
from tests.gate_helpers import A, B, C, Chains, fresh_accounts, fund


def test_stale_prices_under_a_position_make_health_unknown(
    devnet_factory: Any, tmp_path: Path
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    trader, saver = fresh_accounts(2, f"unknown-{time.time()}")
    fund(cfg, [trader, saver])
    key = load_signer_key(cfg.signer)
    store = Store(tmp_path / "s.sqlite")
    try:
        opened = decide(
            cfg, fresh_state(cfg, store, key, trader), Request(trader, B, "ETH", Decimal(5)),
            store, key,
        )  # fmt: skip
        assert opened["approved"], opened["reason"]
        assert Chains(cfg).submit(opened) == ""
        policy, _ = policy_of(cfg)
        healthy, _ = margin_report(
            asyncio.run(read_world(cfg, [trader])), trader, scenario_set(cfg, policy), policy
        )
        assert healthy["status"] == "ok" and healthy["liquidatable"] is False
        stale = int(time.time()) - 10 * 86_400
        for cid in (A, B, C):
            asyncio.run(set_feed(cfg, cid, "ETH", price=Decimal(3000), updated_at=stale))
        world = asyncio.run(read_world(cfg, [trader, saver]))
        scen = scenario_set(cfg, policy)
        r, figures = margin_report(world, trader, scen, policy)
        plain, _ = margin_report(world, saver, scen, policy)
        more = decide(
            cfg, fresh_state(cfg, store, key, trader), Request(trader, B, "BTC", Decimal("0.01")),
            store, key,
        )  # fmt: skip
        # no withdrawal for the trader; the saver (no position) is approved at once
        out = withdrawal_request(cfg, trader, A, "USDC", "1")
        taken = withdraw(cfg, out, store, key)
        saved = withdraw(cfg, withdrawal_request(cfg, saver, A, "USDC", "1"), store, key)
        # and no liquidation: the keeper waits for good prices
        waits = liquidate(
            cfg, store, key, liquidation_policy(cfg), [fresh_state(cfg, store, key, trader)]
        )
        why = why_not(fresh_state(cfg, store, key, trader))
    finally:
        store.close()
    assert (r["status"], r["health"], r["liquidatable"]) == ("unknown", None, None)
    assert figures.unknown and any("ETH" in why for why in r["reasons"])
    assert not more["approved"] and "ETH" in more["reason"]
    assert not taken["approved"] and "ETH" in taken["reason"]
    assert saved["approved"] and saved["no_risk"], saved["reason"]
    assert waits == [] and why is not None and "unknown" in why
    # collateral alone (USDC, priced): its status is not unknown, and it is not liquidatable
    assert plain["status"] in ("ok", "degraded") and plain["liquidatable"] is False
