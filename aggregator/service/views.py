"""Response bodies built from an epoch (plain functions, no I/O), and the dashboard's mount."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from aggregator.authorize import AccountState
from aggregator.portfolio_file import PortfolioFile, decode_json, parse_portfolio
from aggregator.risk import RiskOptions, run_portfolio_risk
from aggregator.service.schemas import (
    Accounts,
    AccountSummary,
    AssetPriceState,
    ChainState,
    EpochInfo,
    FeedState,
    Margin,
    Portfolio,
    Snapshot,
)
from montecarlo.engine import Executor

if TYPE_CHECKING:
    from aggregator.service.epochs import Epoch

RISK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PortfolioFile.model_json_schema()}},
        "description": "The portfolio JSON of `omnimargin risk` (numbers read exactly).",
    }
}


def margin_body(state: AccountState, info: dict[str, Any], reserved: float) -> Margin:
    """The epoch's margin of one account, with the reservations made since counted now."""
    r = dict(state.report)
    r["reserved"] = reserved
    r["free_margin"] = r["equity"] - r["initial_margin"] - reserved
    return Margin.model_validate({**r, "epoch": info})


_LIVE = ("reserved", "free_margin", "epoch")
_PLACEHOLDER_EPOCH = {
    "number": 0,
    "snapshot_hash": "0x" + "00" * 32,
    "blocks": {},
    "taken_at": 0.0,
    "age_s": 0.0,
    "stale": False,
}


def fixed_margin_json(report: dict[str, Any]) -> bytes:
    """The part of the margin response an epoch fixes, checked against :class:`Margin` and
    serialised, without its closing brace (a request appends the live fields)."""
    checked = Margin.model_validate(
        {**report, "reserved": 0.0, "free_margin": 0.0, "epoch": _PLACEHOLDER_EPOCH}
    ).model_dump(mode="json")
    return _dumps({k: v for k, v in checked.items() if k not in _LIVE})[:-1]


def live_margin_json(
    fixed: bytes, summary: dict[str, Any], info: dict[str, Any], reserved: float
) -> bytes:
    """The margin response: the epoch's part, the reservations made since, the epoch."""
    live = {
        "reserved": reserved,
        "free_margin": summary["equity"] - summary["initial_margin"] - reserved,
        "epoch": info,
    }
    return fixed + b"," + _dumps(live)[1:]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def portfolio_body(epoch: Epoch, account: str, info: dict[str, Any]) -> Portfolio:
    state = epoch.accounts[account]
    quantities, exposures = epoch.portfolios[account]
    positions = json.loads(epoch.margin_json[account] + b"}")["positions"]
    return Portfolio(
        account=account,
        quantities=quantities,
        exposures_usd=exposures,
        positions=positions,
        status=state.report["status"],
        reasons=state.report["reasons"],
        snapshot_hash=state.report["snapshot_hash"],
        epoch=EpochInfo.model_validate(info),
    )


def snapshot_body(epoch: Epoch, info: dict[str, Any]) -> Snapshot:
    chains = []
    for s in epoch.world.snapshots:
        seq = s.sequencer
        chains.append(
            ChainState(
                chain_id=s.chain_id,
                name=s.name,
                status=s.status.value,
                block_number=s.block_number,
                block_hash=s.block_hash,
                timestamp=s.timestamp,
                sequencer=None if seq is None else seq.status.value,
                feeds=[
                    FeedState(
                        asset=f.asset,
                        feed=f.feed,
                        answer=str(f.answer),
                        decimals=f.decimals,
                        updated_at=f.updated_at,
                        status=f.status.value,
                        reason=f.reason,
                    )
                    for f in s.prices
                ],
                errors=list(s.errors),
            )
        )
    prices = [
        AssetPriceState(
            asset=p.asset,
            status=p.status.value,
            price=None if p.price is None else float(p.price),
            collateral_price=None if p.collateral_price is None else float(p.collateral_price),
            reason=p.reason,
        )
        for p in sorted(epoch.world.prices.values(), key=lambda p: p.asset)
    ]
    return Snapshot(
        chains=chains,
        prices=prices,
        reasons=list(epoch.world.reasons),
        epoch=EpochInfo.model_validate(info),
    )


def accounts_body(epoch: Epoch, info: dict[str, Any], reserved: dict[str, float]) -> Accounts:
    rows = []
    for a, state in sorted(epoch.accounts.items()):
        r = state.report
        rows.append(
            AccountSummary(
                account=a,
                equity=r["equity"],
                initial_margin=r["initial_margin"],
                maintenance_margin=r["maintenance_margin"],
                free_margin=r["equity"] - r["initial_margin"] - reserved.get(a, 0.0),
                health=r["health"],
                liquidatable=r["liquidatable"],
                collateral_locked_usd=r["collateral_locked_usd"],
                holdings_unlocked_usd=r["holdings_unlocked_usd"],
                status=r["status"],
            )
        )
    return Accounts(accounts=rows, epoch=EpochInfo.model_validate(info))


def run_risk_body(
    text: str, scenarios: int, alpha: float, horizon_days: float, seed: int, executor: Executor
) -> dict[str, Any]:
    """``POST /v1/risk``: the portfolio JSON read exactly, run like ``omnimargin risk``."""
    pf = parse_portfolio(decode_json(text, "portfolio"))
    opts = RiskOptions(scenarios=scenarios, alpha=alpha, horizon_days=horizon_days, seed=seed)
    return run_portfolio_risk(pf, opts, executor)


def mount(app: FastAPI) -> None:
    from aggregator.service.dashboard import mount_dashboard

    mount_dashboard(app)
