"""``omnimargin snapshot``: the pinned chain reads as JSON or as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from aggregator.console import out_console
from aggregator.errors import InputError
from aggregator.inputs import account
from chains.types import ChainSnapshot


def parse_accounts(raw: str | None, path: Path | None, default: list[str]) -> list[str]:
    """Accounts from ``--accounts A,B`` or ``--accounts-file F``, else the config's."""
    if raw is not None and path is not None:
        raise InputError("accounts", "give --accounts or --accounts-file, not both")
    field = "accounts"
    if path is not None:
        try:
            items = [ln.strip() for ln in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("accounts-file", f"cannot read {path} ({exc})") from None
        field = "accounts-file"
    elif raw is not None:
        items = [a.strip() for a in raw.split(",")]
    else:
        items = list(default)
    items = [a for a in items if a and not a.startswith("#")]
    out = []
    for i, a in enumerate(items):
        out.append(account(a, f"{field}[{i}]"))
    if not out:
        raise InputError(field, "no accounts given and none in the config")
    return out


def snapshot_json(snaps: tuple[ChainSnapshot, ...]) -> dict[str, Any]:
    return {"chains": [chain_json(s) for s in snaps]}


def chain_json(s: ChainSnapshot) -> dict[str, Any]:
    return {
        "chain_id": s.chain_id,
        "name": s.name,
        "status": s.status.value,
        "block_number": s.block_number,
        "block_hash": s.block_hash,
        "timestamp": s.timestamp,
        "balances": [
            {
                "account": b.account,
                "token": b.token,
                "symbol": b.symbol,
                "amount": str(b.amount),
                "decimals": b.decimals,
                "source": b.source.value,
                "source_address": b.source_address,
                **({"shares": str(b.shares)} if b.shares is not None else {}),
            }
            for b in s.balances
        ],
        "prices": [
            {
                "asset": p.asset,
                "feed": p.feed,
                "answer": str(p.answer),
                "decimals": p.decimals,
                "round_id": str(p.round_id),
                "updated_at": p.updated_at,
                "status": p.status.value,
                "reason": p.reason,
            }
            for p in s.prices
        ],
        "positions": [
            {
                "account": p.account,
                "market": p.market,
                "market_id": p.market_id,
                "size": str(p.size),
                "entry_price": str(p.entry_price),
                "price_decimals": p.price_decimals,
                "realized": str(p.realized),
            }
            for p in s.positions
        ],
        "sequencer": None
        if s.sequencer is None
        else {"up": s.sequencer.up, "since": s.sequencer.since, "status": s.sequencer.status.value},
        "errors": list(s.errors),
        "requests": s.requests,
        "read_s": round(s.read_s, 4),
    }


def print_snapshot(snaps: tuple[ChainSnapshot, ...]) -> None:
    head = Table(title="Chains at their pinned blocks")
    for col in ("chain", "id", "status", "block", "hash", "requests", "errors"):
        head.add_column(col)
    for s in snaps:
        head.add_row(
            s.name,
            str(s.chain_id),
            s.status.value,
            str(s.block_number or "-"),
            (s.block_hash or "-")[:18],
            str(s.requests),
            "; ".join(s.errors)[:80] or "-",
        )
    out_console.print(head)
    prices = Table(title="Price feeds")
    for col in ("chain", "asset", "price USD", "updated", "status"):
        prices.add_column(col)
    for s in snaps:
        for p in s.prices:
            price = f"{p.answer / 10**p.decimals:,.4f}" if p.decimals else str(p.answer)
            prices.add_row(s.name, p.asset, price, str(p.updated_at), p.status.value)
    out_console.print(prices)
    bal = Table(title="Balances")
    for col in ("chain", "account", "token", "amount", "source"):
        bal.add_column(col)
    for s in snaps:
        for b in s.balances:
            bal.add_row(
                s.name, b.account[:10] + "…", b.symbol, _units(b.amount, b.decimals), b.source.value
            )
    out_console.print(bal)


def _units(amount: int, decimals: int) -> str:
    whole, frac = divmod(amount, 10**decimals)
    return f"{whole:,}" + (f".{frac:0{decimals}d}".rstrip("0").rstrip(".") if decimals else "")
