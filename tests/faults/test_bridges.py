"""Bridge faults on the devnet's CCTP-style bridge: the seeded transfer (2,000 USDC of account 1
burnt on chain 1 for chain 3, never received) stays in flight, counted exactly once, until the
bridge's timeout passes on the real chain clocks; then, per policy, it is still counted (the
burn happened) but flagged expired, a reason that refuses new risk. The same nonce seen twice is
recorded by tests/chains/test_inflight.py."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from chains.config import load_config
from chains.devnet_control import warp
from tests.faults.helpers import ACCOUNT, ARB, decision, world
from tests.reliability import ForTest

FAMILY = "Bridges"
SEEDED = Decimal(2_000)


def test_burnt_never_received_until_and_after_the_timeout(
    devnet_factory: Any, tmp_path: Path, reliability: ForTest
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    timeout = cfg.bridge("cctp").timeout_s
    problems = []
    for step, seconds in enumerate((0, timeout // 2, timeout // 2 + 120)):
        if seconds:
            asyncio.run(warp(cfg, seconds))
        w = world(cfg)
        held = w.holdings[ACCOUNT]
        flying = [h for h in held.in_flight if h.asset == "USDC"]
        expired = step == 2
        if [h.quantity for h in flying] != [SEEDED]:
            problems.append(f"step {step}: in flight {[h.quantity for h in flying]}")
            continue
        if ("expired" in flying[0].flags) is not expired:
            problems.append(f"step {step}: flags {flying[0].flags}")
        d = decision(cfg, w, tmp_path / f"s{step}.sqlite", market="ETH", chain_id=ARB)
        refused = not d["approved"] and "expired" in d["reason"]
        if refused is not expired or (not expired and not d["approved"]):
            problems.append(f"step {step}: approved={d['approved']} {d['reason']!r}")
    reliability.record(
        FAMILY,
        "transfer burnt but never received",
        "2,000 USDC burnt on chain 1 for chain 3 and never minted; the chains' clocks moved "
        "to half the bridge timeout, then past it (evm_increaseTime)",
        "in flight, counted once (2,000 USDC) before and after the timeout; past it flagged "
        "'expired', reported, and new risk refused with that reason",
        1,
        int(bool(problems)),
    )
    assert not problems, problems
