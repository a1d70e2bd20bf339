"""Each account's holdings of canonical assets, from chain snapshots and in-flight transfers.

Counting rules (the point of this module):

* every balance of a snapshot (wallet, collateral vault, ERC-4626 vault) counts once, as the
  representation of its token on its chain; the same balance read twice (two sources naming one
  wallet token) counts once;
* every transfer in flight counts once, for its recipient (its depositor when it is minted into
  a CollateralVault, whose bridge hook credits the depositor: then it is locked), as the
  destination token's
  representation, marked ``in_flight`` and with the bridge carrying it (``via``): its amount is
  burnt on the source and not yet minted on the destination at the pinned blocks;
* snapshots and in-flight reads must come from the same pinned blocks (checked): a transfer read
  at another block than the balances could be counted twice or not at all;
* a transfer burnt after the source's pin and minted by the destination's (``minted_early``)
  is in both balances: it counts once, with its recipient, and a negative amount
  (``burnt_after_pin``) takes it out of the depositor's source balance;
* an unavailable chain contributes nothing (missing data never adds collateral);
* ``locked`` marks what cannot leave without the engine's consent (a CollateralVault's
  balances, ERC-4626 shares locked in one): only that backs margin. Wallet balances, shares in a
  wallet and transfers in flight to a wallet are exposure only (docs/ARCHITECTURE.md,
  "Collateral that cannot leave").

Amounts stay raw integers with their decimals; quantities are exact Decimals.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext

from eth_utils import to_checksum_address

from bridge_adapters.canonical import Representation, Representations
from bridge_adapters.errors import InconsistentReads
from chains.config import OmnimarginConfig
from chains.inflight import InflightRead, InflightTransfer
from chains.types import Address, Balance, BlockNumber, ChainId, ChainSnapshot

IN_FLIGHT = "in_flight"  # Holding.source of a transfer in flight
BURNT_AFTER_PIN = "burnt_after_pin"  # Holding.source taking a minted-early burn out of its source
_EXACT_DIGITS = 200  # above any sum of uint256 amounts


def quantity(amount: int, decimals: int) -> Decimal:
    """``amount`` raw -> token units, exactly (no context rounding)."""
    sign, digits, _ = Decimal(abs(amount)).as_tuple()
    return Decimal((1 if amount < 0 else sign, digits, -decimals))


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """Sum of Decimals with no rounding (an inexact sum would raise)."""
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS
        ctx.traps[Inexact] = True
        return sum(values, Decimal(0))


@dataclass(frozen=True)
class Holding:
    """One amount of one canonical asset of one account, with where it comes from.

    ``representation`` is ``"native"`` or the issuing bridge's name; ``source`` a
    :class:`chains.types.SourceKind` value, or ``"in_flight"``. ``block_number`` is the pinned
    block it was read at; for a transfer in flight, the block of its burn on
    ``transfer.source_chain`` (``chain_id`` and ``token`` are the destination's).
    """

    account: Address
    asset: str
    representation: str
    amount: int
    decimals: int
    chain_id: ChainId
    token: Address
    symbol: str
    source: str
    block_number: BlockNumber
    source_address: Address | None = None
    in_flight: bool = False
    via: str | None = None  # the bridge carrying a transfer in flight
    transfer: InflightTransfer | None = None
    flags: tuple[str, ...] = ()
    locked: bool = False  # backs margin: it cannot leave without the engine's consent

    @property
    def quantity(self) -> Decimal:
        return quantity(self.amount, self.decimals)

    @property
    def bridges(self) -> tuple[str, ...]:
        """The bridges whose failure this amount is exposed to: the issuing bridge of its
        representation, and the bridge carrying it while in flight."""
        out = [] if self.representation == "native" else [self.representation]
        if self.via is not None and self.via not in out:
            out.append(self.via)
        return tuple(sorted(out))


@dataclass(frozen=True)
class Holdings:
    """Everything one account holds, in the order: snapshots by chain, then in flight."""

    account: Address
    holdings: tuple[Holding, ...] = ()

    def total(self, asset: str) -> Decimal:
        """The account's quantity of ``asset``: every representation, in flight included."""
        return exact_sum(h.quantity for h in self.holdings if h.asset == asset)

    def totals(self) -> dict[str, Decimal]:
        return {a: self.total(a) for a in sorted({h.asset for h in self.holdings})}

    @property
    def in_flight(self) -> tuple[Holding, ...]:
        return tuple(h for h in self.holdings if h.in_flight)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Flags of in-flight amounts (``expired``, ``dest_unreadable``), as sentences."""
        return tuple(
            f"{h.quantity} {h.asset} in flight over {h.via} to chain {h.chain_id} is "
            + " and ".join(h.flags)
            for h in self.holdings
            if h.flags
        )


def _check_pins(snaps: dict[ChainId, ChainSnapshot], reads: list[InflightRead]) -> None:
    for read in reads:
        for chain, block in read.blocks.items():
            snap = snaps.get(chain)
            if snap is not None and snap.ok and snap.block_number != block:
                raise InconsistentReads(
                    f"bridge {read.bridge}: chain {chain} read at block {block}, its snapshot "
                    f"at block {snap.block_number}: read both at the same pinned block"
                )


def _by_chain(snapshots: Iterable[ChainSnapshot]) -> dict[ChainId, ChainSnapshot]:
    out: dict[ChainId, ChainSnapshot] = {}
    for s in snapshots:
        if s.chain_id in out:
            raise InconsistentReads(f"chain {s.chain_id}: two snapshots given, expected one")
        out[s.chain_id] = s
    return out


def _balance_holding(snap: ChainSnapshot, b: Balance, rep: Representation) -> Holding:
    assert snap.block_number is not None
    return Holding(
        Address(to_checksum_address(b.account)),
        rep.asset,
        rep.name,
        b.amount,
        b.decimals,
        snap.chain_id,
        b.token,
        b.symbol,
        b.source.value,
        snap.block_number,
        b.source_address,
        locked=b.locked,
    )


def _transfer_holding(t: InflightTransfer, rep: Representation) -> Holding:
    if rep.decimals != t.decimals:
        raise InconsistentReads(
            f"transfer {t.nonce} over {t.bridge}: {t.decimals} decimals, token {t.dest_token} "
            f"on chain {t.dest_chain} has {rep.decimals}"
        )
    return Holding(
        t.beneficiary,
        rep.asset,
        rep.name,
        t.amount,
        t.decimals,
        t.dest_chain,
        t.dest_token,
        rep.symbol,
        IN_FLIGHT,
        t.burnt_at_block,
        in_flight=True,
        via=t.bridge,
        transfer=t,
        flags=t.flags,
        locked=t.into_vault,
    )


def _burnt_after_pin(t: InflightTransfer, snap: ChainSnapshot, rep: Representation) -> Holding:
    assert snap.block_number is not None
    return Holding(
        t.depositor,
        rep.asset,
        rep.name,
        -t.amount,
        t.decimals,
        t.source_chain,
        t.burn_token,
        rep.symbol,
        BURNT_AFTER_PIN,
        snap.block_number,
        transfer=t,
    )


def build_holdings(
    snapshots: Iterable[ChainSnapshot],
    inflight: Iterable[InflightRead],
    config: OmnimarginConfig,
    accounts: Collection[str] | None = None,
) -> dict[Address, Holdings]:
    """Per account, its holdings (see the module docstring for the counting rules).

    ``accounts``: these accounts, each present even when it holds nothing (default: every
    account that holds something). Raises :class:`UnmappedToken` for a token not in
    ``[[tokens]]`` and :class:`InconsistentReads` for reads from different pinned blocks.
    """
    reps = Representations.from_config(config)
    snaps, reads = _by_chain(snapshots), list(inflight)
    _check_pins(snaps, reads)
    found: dict[tuple[object, ...], Holding] = {}
    for snap in sorted(snaps.values(), key=lambda s: s.chain_id):
        if not snap.ok:
            continue
        for b in snap.balances:
            h = _balance_holding(snap, b, reps.lookup(snap.chain_id, b.token))
            key: tuple[object, ...] = (
                h.chain_id,
                h.account,
                h.token,
                h.source,
                h.source_address,
                h.locked,
            )
            if found.setdefault(key, h) != h:
                raise InconsistentReads(f"chain {h.chain_id}: two amounts for one balance {key}")
    for read in reads:
        for t in read.transfers:
            flight_key = (IN_FLIGHT, *t.key)
            found.setdefault(
                flight_key, _transfer_holding(t, reps.lookup(t.dest_chain, t.dest_token))
            )
        for t in read.minted_early:
            source = snaps.get(t.source_chain)
            if source is not None and source.ok:
                rep = reps.lookup(t.source_chain, t.burn_token)
                found.setdefault((BURNT_AFTER_PIN, *t.key), _burnt_after_pin(t, source, rep))
    wanted = None if accounts is None else [Address(to_checksum_address(a)) for a in accounts]
    per: dict[Address, list[Holding]] = {a: [] for a in wanted or []}
    for h in found.values():
        if wanted is None or h.account in per:
            per.setdefault(h.account, []).append(h)
    return {a: Holdings(a, tuple(hs)) for a, hs in per.items()}
