"""Pydantic models of every request and response of the service (they make /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chains.addresses import ChecksumAddress

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
Address = Annotated[str, Field(pattern=ADDRESS_PATTERN, examples=["0x" + "70" * 20])]
Hash = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
#: an address sent in: 0x and 40 hex digits, mixed case only with a valid EIP-55 checksum
#: (a 422 naming the field otherwise); comes out checksummed
AddressIn = Annotated[
    ChecksumAddress,
    Field(
        json_schema_extra={"pattern": ADDRESS_PATTERN},
        description="0x and 40 hex digits; mixed case must be the EIP-55 checksum",
        examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"],
    ),
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Out):
    """Every 4xx/5xx body: ``error`` is ``field: reason``."""

    error: str
    field: str
    reason: str


class EpochInfo(_Out):
    """The epoch a response was served from."""

    number: int
    snapshot_hash: Hash
    blocks: dict[str, int | None]
    taken_at: float
    age_s: float
    stale: bool


class ChainBlock(_Out):
    chain_id: int
    name: str
    status: Literal["ok", "unavailable"]
    block_number: int | None
    block_hash: str | None


class PositionLine(BaseModel):
    """One amount of the portfolio with its provenance (chain, block, contract, token or
    venue); the provenance keys present depend on the source."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["collateral", "debt", "perp"]
    asset: str
    column: str
    quantity: str  # exact decimal
    chain_id: int | None
    source: str
    in_flight: bool
    locked: bool = Field(description="backs margin: a perp, a debt or locked collateral")


class Margin(_Out):
    """The JSON of ``omnimargin margin``, and the epoch."""

    account: Address
    equity: float
    maintenance_margin: float
    initial_margin: float
    reserved: float
    free_margin: float
    health: float | None = Field(description="equity / MM; null when unknown or MM is 0")
    liquidatable: bool | None = Field(description="equity < MM; null (never false) when unknown")
    var: float
    es: float
    var_stderr: float | None
    es_stderr: float | None
    alpha: float
    by_chain: dict[str, float]
    by_asset: dict[str, float]
    status: Literal["ok", "degraded", "unknown"]
    reasons: list[str]
    positions: list[PositionLine]
    snapshot: list[ChainBlock]
    snapshot_hash: Hash
    risk_model_hash: Hash
    collateral_locked_usd: float = Field(description="what backs margin: vault balances")
    holdings_unlocked_usd: float = Field(description="exposure only: wallets, shares held")
    collateral_locked: list[PositionLine]
    holdings_unlocked: list[PositionLine]
    epoch: EpochInfo


class Portfolio(_Out):
    """An account's canonical quantities (exact decimals) and every line with provenance."""

    account: Address
    quantities: dict[str, str]
    exposures_usd: dict[str, float]
    positions: list[PositionLine]
    status: Literal["ok", "degraded", "unknown"]
    reasons: list[str]
    snapshot_hash: Hash
    epoch: EpochInfo


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: AddressIn
    chain_id: Annotated[int, Field(ge=1, lt=2**63)]
    market: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
    size_delta: Annotated[
        str,
        Field(
            pattern=r"^-?[0-9]{1,13}(\.[0-9]{1,18})?$",
            description="Size change in units of the asset, a decimal string ('-1.5').",
            examples=["3"],
        ),
    ]


class Attestation(_Out):
    typed_data: dict[str, Any]
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-f]{130}$")]


class Authorization(_Out):
    """The JSON of ``omnimargin authorize``, and the epoch."""

    approved: bool
    reason: str
    equity: float | None = None
    initial_margin_before: float | None = None
    initial_margin_after: float | None = None
    reserved: float | None = None
    free_margin_after: float | None = None
    outstanding: int | None = Field(
        None, description="Other outstanding attestations of the account in the worst case."
    )
    corners: int | None = Field(None, description="Worst-case corners evaluated exactly.")
    reduce_only: bool | None = Field(
        None, description="Approved as reduce-only (it lowers IM whatever else executes)."
    )
    no_risk: bool | None = Field(
        None, description="A withdrawal of an account with no position, debt or approval out."
    )
    snapshot_hash: Hash | None = None
    blocks: dict[str, int | None] | None = Field(
        None, description="The pinned block of every chain read (snapshot_hash is over them)."
    )
    risk_model_hash: Hash | None = None
    reservation_id: int | None = None
    issued_at: int | None = None
    valid_until: int | None = None
    attestation: Attestation | None = None
    epoch: EpochInfo


class WithdrawalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: AddressIn
    chain_id: Annotated[int, Field(ge=1, lt=2**63)]
    token: Annotated[
        str,
        Field(
            min_length=1,
            max_length=42,
            pattern=r"^[A-Za-z0-9._-]+$",
            description="The token, by symbol (USDC) or address.",
        ),
    ]
    amount: Annotated[
        str,
        Field(
            pattern=r"^[0-9]{1,60}(\.[0-9]{1,18})?$",
            description="Amount in units of the token, a decimal string ('1500.25').",
            examples=["1000"],
        ),
    ]
    recipient: AddressIn | None = None


class Withdrawal(Authorization):
    """The JSON of ``omnimargin withdraw``, and the epoch."""

    kind: Literal["withdrawal"]
    chain_id: int
    vault: Address
    token: Address
    symbol: str
    amount: str
    amount_raw: str
    recipient: Address
    column: str


class FeedState(_Out):
    asset: str
    feed: str
    answer: str
    decimals: int
    updated_at: int
    status: str
    reason: str


class AssetPriceState(_Out):
    asset: str
    status: str
    price: float | None
    collateral_price: float | None
    reason: str


class ChainState(_Out):
    chain_id: int
    name: str
    status: Literal["ok", "unavailable"]
    block_number: int | None
    block_hash: str | None
    timestamp: int | None
    sequencer: str | None
    feeds: list[FeedState]
    errors: list[str]


class Snapshot(_Out):
    """The chains of the latest epoch: pinned blocks, feed statuses, prices."""

    chains: list[ChainState]
    prices: list[AssetPriceState]
    reasons: list[str]
    epoch: EpochInfo


class AccountSummary(_Out):
    account: Address
    equity: float
    initial_margin: float
    maintenance_margin: float
    free_margin: float
    health: float | None
    liquidatable: bool | None = Field(description="equity < MM; null (never false) when unknown")
    collateral_locked_usd: float = Field(description="what backs margin (vaults)")
    holdings_unlocked_usd: float = Field(description="exposure only (wallets, shares held)")
    status: Literal["ok", "degraded", "unknown"]


class Accounts(_Out):
    accounts: list[AccountSummary]
    epoch: EpochInfo


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    ready: bool
    epoch: int | None
    last_error: str | None


class RiskAsset(_Out):
    asset: str
    quantity: str
    price: str
    exposure: float
    component_es: float


class RiskReport(BaseModel):
    """The JSON of ``omnimargin risk --json``."""

    model_config = ConfigDict(extra="allow")
    var: float
    es: float
    alpha: float
    scenarios: int
