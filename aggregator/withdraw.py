"""Withdrawals approved by the margin (docs/ARCHITECTURE.md, "Collateral that cannot leave").

A CollateralVault releases collateral only with a ``WithdrawalAttestation`` its chain's
MarginGate checks and spends. The engine signs one when, with the amount gone, the gate's
invariant still holds over every outstanding attestation of the account (positions and
withdrawals alike: one outstanding set, grouped by (column, kind), a withdrawal moving equity
by its whole value); an account that carries no risk (no position anywhere, no debt, nothing
outstanding but withdrawals) is approved at once. Never more than the locked balance less the
withdrawals of it already outstanding. Reserved like a position until seen executed, cancelled,
superseded or expired.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from eth_account.signers.local import LocalAccount

from aggregator.authorize import (
    WithdrawalRequest,
    canonical_reasons,
    decide,
    fresh_state,
)
from aggregator.errors import InputError
from aggregator.inputs import account as checked_account
from aggregator.inputs import parse_decimal
from aggregator.store import Store
from bridge_adapters.canonical import Representations
from bridge_adapters.risk import token_column
from chains.config import OmnimarginConfig
from chains.types import SourceKind


def withdrawal_request(
    cfg: OmnimarginConfig,
    account: str,
    chain_id: int,
    token: str,
    amount: str,
    recipient: str | None = None,
) -> WithdrawalRequest:
    """A checked request: a chain with a MarginGate and a CollateralVault, one of its tokens
    (by symbol or address), an amount of at most the token's decimals, a recipient (default:
    the account). Every problem is an :class:`InputError` naming the field."""
    who = checked_account(account)
    ids = [c.chain_id for c in cfg.chains]
    if chain_id not in ids:
        raise InputError("chain_id", f"unknown chain {chain_id} (known: {ids})")
    chain = cfg.chain(chain_id)
    vaults = [s.address for s in cfg.sources_on(chain_id) if s.kind is SourceKind.VAULT]
    if chain.margin_gate is None or not vaults or vaults[0] is None:
        raise InputError("chain_id", f"chain {chain_id} has no MarginGate and CollateralVault")
    tokens = cfg.tokens_on(chain_id)
    found = [
        t for t in tokens if token in (t.symbol, t.address) or token.lower() == t.address.lower()
    ]
    if not found:
        known = sorted(t.symbol for t in tokens)
        raise InputError("token", f"no token {token[:42]!r} on chain {chain_id} (known: {known})")
    tok = found[0]
    qty = parse_decimal("amount", amount)
    if not qty.is_finite() or qty <= 0:
        raise InputError("amount", f"must be a positive amount, got {amount[:40]}")
    raw = qty.scaleb(tok.decimals)
    if raw != raw.to_integral_value():
        raise InputError("amount", f"{tok.symbol} has {tok.decimals} decimals, got {amount[:40]}")
    if raw >= 2**256:
        raise InputError("amount", "above uint256")
    rep = Representations.from_config(cfg).lookup(chain_id, tok.address)
    column = token_column(rep)
    return WithdrawalRequest(
        account=who,
        chain_id=chain_id,
        vault=str(vaults[0]),
        token=tok.address,
        symbol=tok.symbol,
        amount=int(raw),
        decimals=tok.decimals,
        recipient=who if recipient is None else checked_account(recipient, "recipient"),
        column=column,
    )


def withdraw(
    cfg: OmnimarginConfig, req: WithdrawalRequest, store: Store, key: LocalAccount
) -> dict[str, Any]:
    """Sync the gate counters, read every chain and gate now, then decide (refused if a chain
    reorganised past its pinned block meanwhile, or the vault's chain's clock is off)."""
    state = fresh_state(cfg, store, key, req.account)
    extra = asyncio.run(canonical_reasons(cfg, state.world, req.chain_id, state.allowance_s))
    decision = decide(cfg, state, req, store, key, extra)
    return {**decision, **request_json(req)}


def request_json(req: WithdrawalRequest) -> dict[str, Any]:
    """What was asked, in the decision (the CLI's and the API's)."""
    return {
        "kind": "withdrawal",
        "chain_id": req.chain_id,
        "vault": req.vault,
        "token": req.token,
        "symbol": req.symbol,
        "amount": str(Decimal(req.amount).scaleb(-req.decimals)),
        "amount_raw": str(req.amount),
        "recipient": req.recipient,
        "column": req.column,
    }
