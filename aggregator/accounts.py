"""From a :class:`~aggregator.world.World` to one account's portfolio and margin report.

Plain functions: no chain I/O here. The scenario set covers a fixed universe of risk columns
(every token's asset and bridge, CCTP transfers in flight, every perp market), so an account's
figures do not depend on which other accounts or markets are queried.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from aggregator.errors import InputError
from aggregator.history import load_history
from aggregator.margin import MarginFigures, MarginPolicy, ScenarioSet, column_model, margin_of
from aggregator.portfolio import Line, LineKind, Portfolio
from aggregator.portfolio_file import decode_json, first_error, plain_decimal
from aggregator.valuation import value_portfolio
from aggregator.world import World
from bridge_adapters.risk import column_of, jumps_for, parse_column, risk_column
from chains.addresses import ChecksumAddress
from chains.config import OmnimarginConfig
from montecarlo.models import ScenarioModel


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mm_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.975
    im_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.99
    im_multiplier: Annotated[float, Field(ge=1, le=100)] | None = None
    horizon_days: Annotated[float, Field(gt=0, le=365)] = 1.0
    horizons: dict[str, Annotated[float, Field(gt=0, le=365)]] = Field(default_factory=dict)
    scenarios: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000
    seed: Annotated[int, Field(ge=0)] = 0
    model: Literal["gaussian", "student_t", "historical"] = "historical"
    dof: Annotated[float, Field(gt=2, le=1000)] = 5.0
    price_tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.02
    attestation_ttl_s: Annotated[int, Field(ge=10, le=86_400)] = 120
    clock_allowance_s: Annotated[int, Field(ge=0, le=3600)] = 30


def policy_of(config: OmnimarginConfig) -> tuple[MarginPolicy, int]:
    """The margin policy of the config's ``[margin]`` table, and the attestation lifetime."""
    try:
        m = _PolicyModel.model_validate(config.margin or {})
    except ValidationError as exc:
        raise first_error(exc, "margin") from None
    data = m.model_dump()
    ttl = data.pop("attestation_ttl_s")
    data.pop("clock_allowance_s")
    data["price_tolerance"] = Fraction(str(data["price_tolerance"]))
    return MarginPolicy(**data), ttl


def clock_allowance(config: OmnimarginConfig) -> int:
    """``[margin] clock_allowance_s``: how far a target chain's clock may be from the wall
    clock (a reservation lives until validUntil plus this; a chain further off is refused)."""
    try:
        m = _PolicyModel.model_validate(config.margin or {})
    except ValidationError as exc:
        raise first_error(exc, "margin") from None
    return m.clock_allowance_s


def universe_columns(config: OmnimarginConfig) -> tuple[str, ...]:
    """Every risk column the config can produce."""
    cols = {risk_column(t.asset, [t.bridge] if t.bridge else []) for t in config.tokens}
    native = {t.asset for t in config.tokens if t.bridge is None}
    for b in config.bridges:
        if b.kind == "cctp":
            chains = set(b.contracts)
            for t in config.tokens:
                if t.bridge is None and t.chain_id in chains and t.asset in native:
                    cols.add(risk_column(t.asset, [b.name]))
    for chain in config.chains:
        if chain.perp_market is not None:
            markets = chain.perp_markets or [f.asset for f in config.feeds_on(chain.chain_id)]
            cols.update(markets)
    return tuple(sorted(cols))


def scenario_model(
    config: OmnimarginConfig, policy: MarginPolicy, history: Path | None = None
) -> ScenarioModel:
    """The model of the universe's risk columns, calibrated on the shipped (or given) closes."""
    columns = universe_columns(config)
    assets = tuple(sorted({parse_column(c)[0] for c in columns}))
    hist = load_history(list(assets), history)
    return column_model(columns, assets, hist.closes, policy, jumps_for(config, columns))


def scenario_set(
    config: OmnimarginConfig, policy: MarginPolicy, history: Path | None = None
) -> ScenarioSet:
    """The scenario set of the universe, calibrated on the shipped (or given) real closes."""
    return ScenarioSet.draw(scenario_model(config, policy, history), policy)


def risk_model_hash(scen: ScenarioSet | dict[str, Any], policy: MarginPolicy) -> str:
    """keccak256 of the canonical JSON of the model parameters (a scenario set's, or a model's
    ``describe()``) and the policy (with the seed), so anyone holding the same history can
    recompute the figure."""
    from eth_utils.crypto import keccak

    body = json.dumps(
        {
            "model": scen if isinstance(scen, dict) else scen.model,
            "policy": {k: str(v) for k, v in asdict(policy).items()},
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "0x" + bytes(keccak(body.encode())).hex()


def portfolio_of(world: World, account: str, venues: list[Line] | None = None) -> Portfolio:
    """The account's lines: every holding once, every perp position, its venue balances."""
    lines: list[Line] = []
    holdings = world.holdings.get(account)
    for h in holdings.holdings if holdings else ():
        lines.append(
            Line(
                "collateral",
                h.asset,
                column_of(h),
                Fraction(h.amount, 10**h.decimals),
                int(h.chain_id),
                "in_flight" if h.in_flight else h.source,
                (
                    ("block", str(h.block_number)),
                    ("token", h.token),
                    ("symbol", h.symbol),
                    ("contract", h.source_address or h.token),
                ),
                in_flight=h.in_flight,
                locked=h.locked,
            )
        )
    for snap in world.snapshots:
        for pos in snap.positions:
            if pos.account != account:
                continue
            lines.append(
                Line(
                    "perp",
                    pos.market,
                    pos.market,
                    Fraction(pos.size, 10**18),
                    int(snap.chain_id),
                    "perp",
                    (("block", str(snap.block_number)), ("market_id", pos.market_id)),
                    entry_price=Fraction(pos.entry_price, 10**pos.price_decimals),
                    realized=Fraction(pos.realized, 10**18),
                )
            )
    lines.extend(
        ln for ln in venues or [] if ln.provenance and ("account", account) in ln.provenance
    )
    return Portfolio(account, tuple(lines))


class _Venue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    venue: Annotated[str, Field(min_length=1, max_length=64)]
    account: ChecksumAddress
    asset: Annotated[str, Field(min_length=1, max_length=32)]
    quantity: Annotated[
        Decimal,
        Field(allow_inf_nan=False, gt=-(10**15), lt=10**15),
        BeforeValidator(plain_decimal),
    ]


def load_venues(path: Path) -> list[Line]:
    """Off-chain venue balances: a JSON list of {venue, account, asset, quantity}."""
    try:
        data = decode_json(path.read_text(), "venues")
    except OSError as exc:
        raise InputError("venues", f"cannot read {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise InputError("venues", reason) from None
    if not isinstance(data, list):
        raise InputError("venues", "must be a JSON list of {venue, account, asset, quantity}")
    out = []
    for i, row in enumerate(data):
        try:
            v = _Venue.model_validate(row)
        except ValidationError as exc:
            raise first_error(exc, f"venues[{i}]") from None
        account = v.account
        kind: LineKind = "collateral" if v.quantity >= 0 else "debt"
        qty = Fraction(abs(v.quantity))
        out.append(
            Line(kind, v.asset, v.asset, qty, None, f"venue:{v.venue}", (("account", account),))
        )
    return out


def margin_report(
    world: World,
    account: str,
    scen: ScenarioSet,
    policy: MarginPolicy,
    reserved: float = 0.0,
    venues: list[Line] | None = None,
) -> tuple[dict[str, Any], MarginFigures]:
    """The JSON of ``omnimargin margin`` and the figures behind it."""
    pf = portfolio_of(world, account, venues)
    check_columns(pf, scen.columns)
    val = value_portfolio(pf.backing(), world.prices)
    figures = margin_of(val, scen, policy, reserved, account_reasons(world, account))
    return report_json(world, pf, figures, policy, risk_model_hash(scen, policy)), figures


def check_columns(pf: Portfolio, columns: tuple[str, ...]) -> None:
    unknown = sorted({ln.column for ln in pf.lines} - set(columns))
    if unknown:
        raise InputError("venues", f"asset {parse_column(unknown[0])[0]!r} has no risk model")


def account_reasons(world: World, account: str) -> tuple[str, ...]:
    """Why data behind this account is degraded: the world's reasons and its transfers'."""
    holdings = world.holdings.get(account)
    return (*world.reasons, *(holdings.reasons if holdings else ()))


def report_json(
    world: World, pf: Portfolio, figures: MarginFigures, policy: MarginPolicy, model_hash: str
) -> dict[str, Any]:
    """The margin JSON of one account (the CLI's and the service's). ``figures`` are those of
    ``pf.backing()``; ``pf``'s unlocked holdings are listed apart, valued, counting zero."""
    return {
        **split_json(world, pf),
        "account": pf.account,
        "equity": float(figures.equity),
        "maintenance_margin": figures.maintenance_margin,
        "initial_margin": figures.initial_margin,
        "reserved": figures.reserved,
        "free_margin": figures.free_margin,
        "health": figures.health,
        "liquidatable": figures.liquidatable,
        "var": figures.mm.var,
        "es": figures.mm.es,
        "var_stderr": figures.mm.var_stderr,
        "es_stderr": figures.mm.es_stderr,
        "alpha": policy.mm_alpha,
        "by_chain": figures.by_chain,
        "by_asset": figures.by_asset,
        "status": figures.status,
        "reasons": list(figures.reasons),
        "positions": [_line_json(ln) for ln in pf.lines],
        "snapshot": [
            {
                "chain_id": s.chain_id,
                "name": s.name,
                "status": s.status.value,
                "block_number": s.block_number,
                "block_hash": s.block_hash,
            }
            for s in world.snapshots
        ],
        "snapshot_hash": world.snapshot_hash,
        "risk_model_hash": model_hash,
    }


def split_json(world: World, pf: Portfolio) -> dict[str, Any]:
    """What backs margin and what does not: ``collateral_locked`` (vault balances, shares
    locked in a vault) and ``holdings_unlocked`` (wallets, shares in wallets, transfers in
    flight to a wallet, venue balances), each line with its USD value, and their totals."""
    out: dict[str, Any] = {}
    for name, lines in (
        (
            "collateral_locked",
            tuple(ln for ln in pf.lines if ln.kind == "collateral" and ln.locked),
        ),
        ("holdings_unlocked", pf.unlocked()),
    ):
        val = value_portfolio(Portfolio(pf.account, lines), world.prices)
        out[f"{name}_usd"] = float(val.collateral - val.debt)
        out[name] = [
            {**_line_json(ln), "value_usd": float(v)}
            for ln, v in zip(lines, val.line_values, strict=True)
        ]
    return out


def exact_decimal(q: Fraction) -> str:
    """A fraction with a power-of-ten-compatible denominator as an exact decimal string."""
    for k in range(0, 80):
        if (10**k) % q.denominator == 0:
            return str(Decimal(q.numerator * (10**k // q.denominator)).scaleb(-k))
    return str(float(q))


def _line_json(ln: Line) -> dict[str, Any]:
    return {
        "kind": ln.kind,
        "asset": ln.asset,
        "column": ln.column,
        "quantity": exact_decimal(ln.quantity),
        "chain_id": ln.chain_id,
        "source": ln.source,
        "in_flight": ln.in_flight,
        "locked": ln.backs_margin,
        **dict(ln.provenance),
        **({"entry_price": float(ln.entry_price)} if ln.entry_price is not None else {}),
        **({"realized_pnl": float(ln.realized)} if ln.realized else {}),
    }
