"""The plain, immutable data the chain layer returns (DESIGN.md, "The flow").

Amounts are raw integers with their decimals; nothing here is a float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

from eth_utils.crypto import keccak

ChainId = NewType("ChainId", int)
BlockNumber = NewType("BlockNumber", int)
Wei = NewType("Wei", int)
Address = NewType("Address", str)  # EIP-55 checksummed


class FeedStatus(StrEnum):
    """What a price feed read is worth. Only ``ok`` may give collateral value."""

    OK = "ok"
    STALE = "stale"
    OUT_OF_BOUNDS = "out_of_bounds"
    INVALID = "invalid"
    SEQUENCER_DOWN = "sequencer_down"
    UNREACHABLE = "unreachable"


class ChainStatus(StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"


class SourceKind(StrEnum):
    VAULT = "vault"
    ERC20_WALLET = "erc20_wallet"
    ERC4626 = "erc4626"
    # read, never configured: what a vault's escape hatch holds for an account (requested,
    # not yet released: no longer collateral, still seizable by a liquidation)
    VAULT_PENDING = "vault_pending"


@dataclass(frozen=True)
class Balance:
    """An account's raw amount of one token at the pinned block, and where it sits.

    For an ERC-4626 source, ``token`` is the vault's underlying asset and ``amount`` the assets
    its shares convert to at the pinned block; ``shares`` keeps the share count. ``locked``: it
    sits where it cannot leave without the engine's consent (a CollateralVault), so it backs
    margin; anything else is exposure only.
    """

    account: Address
    token: Address
    symbol: str
    amount: int
    decimals: int
    source: SourceKind
    source_address: Address | None = None
    shares: int | None = None
    locked: bool = False


@dataclass(frozen=True)
class FeedRound:
    """The latest round of one price feed at the pinned block, with its verdict."""

    asset: str
    feed: Address
    answer: int
    decimals: int
    round_id: int
    started_at: int
    updated_at: int
    status: FeedStatus
    reason: str = ""


@dataclass(frozen=True)
class SequencerState:
    """An L2 sequencer uptime feed: ``up`` and since when (``since`` = startedAt)."""

    feed: Address
    up: bool
    since: int
    status: FeedStatus
    reason: str = ""


def market_id(asset: str) -> bytes:
    """A perp market's id: keccak256 of the canonical asset name in UTF-8 (``keccak("ETH")``),
    as PerpMarket keys its markets and attestations name them."""
    return bytes(keccak(text=asset))


@dataclass(frozen=True)
class PerpPosition:
    """An account's perp position on one chain's PerpMarket at the pinned block.

    ``size`` has 18 decimals of the asset (negative = short); ``entry_price`` is in USD with
    ``price_decimals`` decimals (the market's feed); ``market_id`` is ``0x`` hex of
    :func:`market_id` of ``market``; ``realized`` the P&L its reductions realised, USD with 18
    decimals (a closed position with realised P&L is still a position: its P&L is equity).
    """

    account: Address
    market: str
    market_id: str
    size: int
    entry_price: int
    price_decimals: int = 8
    chain_id: ChainId = field(kw_only=True)
    realized: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class ChainSnapshot:
    """Everything read from one chain at one pinned block.

    A chain that could not be read has ``status`` unavailable, no block and no data, and says
    why in ``errors``: it is never an empty but healthy chain.
    """

    chain_id: ChainId
    name: str
    status: ChainStatus
    block_number: BlockNumber | None = None
    block_hash: str | None = None
    timestamp: int | None = None
    balances: tuple[Balance, ...] = ()
    prices: tuple[FeedRound, ...] = ()
    sequencer: SequencerState | None = None
    errors: tuple[str, ...] = ()
    requests: int = 0
    read_s: float = 0.0
    positions: tuple[PerpPosition, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is ChainStatus.OK
