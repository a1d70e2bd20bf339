"""The last act of ``make demo``: the demo account levered up, ETH shocked -40 % on every chain,
the account liquidatable, liquidation rounds until its health is back at the target, and the
insurance fund's penalty. Every step goes through the product's own paths (``authorize``, the
devnet's ``shock``, the keeper's ``liquidate`` and ``submit_steps``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, authorize, fresh_state
from aggregator.keeper import due, fund_report, liquidate, submit_steps
from aggregator.liquidation import liquidation_policy
from aggregator.store import Store
from chains.config import OmnimarginConfig
from chains.devnet_control import shock
from chains.errors import DevnetError
from montecarlo.measures import tail_count

SHOCK_PCT = Decimal(-40)
HEALTH_AFTER_SHOCK = 0.85  # where the levered demo account lands after the shock
MAX_ROUNDS = 6


def _exposure_eth(state: Any) -> float:
    """The account's ETH exposure in units (locked WETH and ETH perps)."""
    i = state.scen.columns.index("ETH")
    return float(state.exposures[i]) / float(state.world.prices["ETH"].price or 1)


def run(cfg: OmnimarginConfig, store_path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    account = str(cfg.accounts[0])
    lp = liquidation_policy(cfg)
    if lp.keeper_sender is None:
        raise DevnetError("liquidation demo: the config has no [liquidation] keeper_sender")
    key = load_signer_key(cfg.signer)
    store = Store(store_path)
    try:
        state = fresh_state(cfg, store, key, account)
        quote = state.world.prices["ETH"].price
        if quote is None:
            raise DevnetError("liquidation demo: ETH has no price")
        price = float(quote)
        m = state.policy.mm_alpha
        # MM of 1 USD of ETH exposure, from the account's own scenarios
        r = state.scen.column_returns("ETH")
        k = tail_count(m, int(r.shape[0]))
        mm_rate = -float(np.sort(r)[:k].mean())
        move = float(SHOCK_PCT) / 100
        equity = float(state.figures.equity)
        total = equity / (price * (-move + HEALTH_AFTER_SHOCK * mm_rate * (1 + move)))
        size = Decimal(int((total - _exposure_eth(state)) * 100)) / 100
        say(
            f"lever up: {size} ETH long on chain {cfg.chains[1].chain_id} (equity "
            f"{equity:,.2f} USD; after ETH {SHOCK_PCT}% its health is about "
            f"{HEALTH_AFTER_SHOCK})"
        )
        decision = authorize(cfg, Request(account, cfg.chains[1].chain_id, "ETH", size), store, key)
        if not decision["approved"]:
            raise DevnetError(f"liquidation demo: the position was refused: {decision['reason']}")
        opened = submit_position(cfg, decision, lp.keeper_sender)
        say(f"  opened in block {opened}")
        fund_before = fund_report(cfg, store, lp)["total_usd"]
        prices = asyncio.run(shock(cfg, "ETH", SHOCK_PCT))
        say(f"shock: ETH {SHOCK_PCT}% on chains {', '.join(map(str, prices))}")
        rounds = []
        for _ in range(MAX_ROUNDS):
            state = fresh_state(cfg, store, key, account)
            f = state.figures
            say(
                f"margin: equity {float(f.equity):,.2f} USD, MM {f.maintenance_margin:,.2f}, "
                f"health {f.health if f.health is None else round(f.health, 3)}, "
                f"liquidatable {f.liquidatable}"
            )
            if due(store, state, lp) is not None:
                break
            planned = liquidate(cfg, store, key, lp, [state])
            if not planned:
                break
            r_ = planned[0]
            for c in r_["plan"]["closes"]:
                say(f"  liquidate: close {c['size_delta']} {c['market']} on chain {c['chain_id']}")
            for s in r_["plan"]["seizes"]:
                say(
                    f"  liquidate: seize {s['quantity']} {s['symbol']} on chain {s['chain_id']} "
                    f"(bonus {Decimal(s['bonus']).scaleb(-s['decimals'])} to the submitter)"
                )
            done = submit_steps(cfg, r_["steps"], lp.keeper_sender)
            failed = [d for d in done if not d["executed"]]
            if failed:
                raise DevnetError(f"liquidation demo: a step reverted: {failed[0]}")
            say(f"  {len(done)} steps executed by {lp.keeper_sender}")
            rounds.append(r_)
        fund_after = fund_report(cfg, store, lp)["total_usd"]
        say(f"insurance fund: {fund_before:,.2f} -> {fund_after:,.2f} USD (the penalties)")
        return {"rounds": len(rounds), "fund_before": fund_before, "fund_after": fund_after}
    finally:
        store.close()


def submit_position(cfg: OmnimarginConfig, decision: dict[str, Any], sender: str) -> int:
    """Open an approved position from ``sender``; the block it was mined in."""
    from web3 import HTTPProvider, Web3

    from aggregator.attestation import MarginAttestation
    from chains.compile import load_artifact

    typed = decision["attestation"]["typed_data"]
    chain = cfg.chain(int(typed["domain"]["chainId"]))
    assert chain.perp_market is not None
    w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
    perp = w3.eth.contract(
        address=Web3.to_checksum_address(chain.perp_market),
        abi=list(load_artifact("PerpMarket").abi),
    )
    att = MarginAttestation.from_typed_data(typed)
    sig = bytes.fromhex(decision["attestation"]["signature"].removeprefix("0x"))
    tx = perp.functions.open(att.as_tuple(), sig).transact({"from": sender, "gas": 1_000_000})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=60)
    if receipt["status"] != 1:
        raise DevnetError("liquidation demo: the position's transaction reverted")
    return int(receipt["blockNumber"])
