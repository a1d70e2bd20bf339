"""Transfers in flight over a CCTP v1 bridge at pinned blocks (DESIGN.md, "bridge_adapters/").

A transfer is in flight when its ``DepositForBurn`` was emitted on the source chain at or before
the source's pinned block and its ``usedNonces(keccak256(abi.encodePacked(sourceDomain, nonce)))``
is still 0 on the destination's MessageTransmitter at the destination's pinned block. Read those
pins with the same blocks as the balance snapshots: then a burnt amount is out of the source
balance, not yet in the destination balance, and counted here exactly once.

Reads, per bridge: ``eth_getLogs`` of ``DepositForBurn`` on every configured chain from
``pinned - lookback_blocks`` to ``pinned`` (in ``log_chunk_blocks`` ranges; a nonce seen twice,
as overlapping ranges return it, is one transfer), then ``usedNonces`` for each candidate through
Multicall3 at the destination's pinned block. The interface is Circle's, so the same code reads
real CCTP v1 (TokenMessenger for the logs, MessageTransmitter for ``usedNonces``).

Policies (each also a reason the aggregator reports as degraded):

* destination unreadable: the transfer stays in flight (the burn on the source is the truth),
  flagged ``dest_unreadable``;
* still in flight ``timeout_s`` after the burn: still counted (the burn happened and CCTP
  messages do not expire), flagged ``expired``;
* source unreadable: its transfers are unknown and count zero (missing data never adds margin);
* a burnt token that is not in ``[[tokens]]``, or whose asset has no native token on the
  destination: an error naming it, never priced as something else.

Burnt after the source's pin, minted by the destination's: the pins of two chains are never the
same instant, so a transfer can be burnt after the source's pin (still in the depositor's source
balance) and already minted at the destination's pin (in the recipient's destination balance). The
reader also scans the source from its pin to its head for burns of watched depositors and checks
their nonces at the destination's pin; those already used are returned as ``minted_early``, and
the holdings take their amount out of the depositor's source balance, as if that burn had been
seen. That never over-counts; if the depositor got the burnt tokens only after the pin, it counts
them zero (missing data never adds margin).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from web3.exceptions import Web3Exception

from chains.config import BridgeConfig, OmnimarginConfig, TokenConfig
from chains.errors import ChainError, ConfigError, InconsistentChain
from chains.multicall import MAX_IN_FLIGHT, Call, aggregate3, selector, word_uint
from chains.reader import PinnedBlock
from chains.rpc import ChainClient, as_bytes, as_hash, as_int
from chains.types import Address, BlockNumber, ChainId, SourceKind

DEPOSIT_FOR_BURN = (
    "0x"
    + bytes(
        keccak(text="DepositForBurn(uint64,address,uint256,address,bytes32,uint32,bytes32,bytes32)")
    ).hex()
)
USED_NONCES = selector("usedNonces(bytes32)")
_DATA = ["uint256", "bytes32", "uint32", "bytes32", "bytes32"]
READ_ERRORS = (ChainError, Web3Exception, DecodingError)


@dataclass(frozen=True)
class InflightTransfer:
    """One burn not yet minted, counted as ``dest_token`` of ``recipient`` on ``dest_chain``.

    ``amount`` is raw (``decimals`` of the destination token, equal to the burnt token's).
    """

    bridge: str
    source_chain: ChainId
    dest_chain: ChainId
    source_domain: int
    nonce: int
    burn_token: Address
    dest_token: Address
    recipient: Address
    depositor: Address
    amount: int
    decimals: int
    burnt_at_block: BlockNumber
    burnt_at_time: int
    tx_hash: str
    dest_unreadable: bool = False
    expired: bool = False
    # minted to the destination's CollateralVault, whose bridge hook credits the depositor:
    # it is the depositor's, and locked (it backs margin) from the burn on
    into_vault: bool = False

    @property
    def beneficiary(self) -> Address:
        """Whose the amount is: the depositor's when it goes into a vault, else the
        recipient's."""
        return self.depositor if self.into_vault else self.recipient

    @property
    def key(self) -> tuple[str, int, int]:
        """(bridge, source chain, nonce): CCTP nonces are unique per source domain."""
        return (self.bridge, self.source_chain, self.nonce)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(
            f
            for f, on in (("dest_unreadable", self.dest_unreadable), ("expired", self.expired))
            if on
        )


@dataclass(frozen=True)
class InflightRead:
    """What one bridge has in flight at the pinned blocks.

    ``minted_early``: transfers burnt after the source's pin and minted by the destination's,
    whose amount both balances hold (the holdings take it out of the depositor's source).
    ``blocks`` are the pinned block numbers read (chain -> number); ``unreadable`` the chains
    that could not be read; ``errors`` every problem, each naming its chain or token.
    """

    bridge: str
    transfers: tuple[InflightTransfer, ...]
    blocks: Mapping[ChainId, BlockNumber]
    unreadable: tuple[ChainId, ...] = ()
    errors: tuple[str, ...] = ()
    #: burnt after the source's pin, already minted at the destination's pin: in both balances
    minted_early: tuple[InflightTransfer, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why data behind these transfers is degraded (empty when all is well)."""
        out = list(self.errors)
        for t in self.transfers:
            if t.flags:
                out.append(
                    f"bridge {self.bridge}: transfer {t.nonce} from chain {t.source_chain} to "
                    f"chain {t.dest_chain} is {' and '.join(t.flags)}"
                )
        return tuple(out)


@dataclass(frozen=True)
class _Burn:
    """A decoded DepositForBurn log."""

    chain: ChainId
    nonce: int
    burn_token: Address
    amount: int
    depositor: Address
    mint_recipient: bytes
    dest_domain: int
    block: int
    block_hash: str
    tx_hash: str
    timestamp: int | None


def log_ranges(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    """Inclusive block ranges of at most ``chunk`` blocks covering [start, end]."""
    return [(a, min(a + chunk - 1, end)) for a in range(start, end + 1, chunk)]


def used_nonce_key(source_domain: int, nonce: int) -> bytes:
    """keccak256(abi.encodePacked(uint32 sourceDomain, uint64 nonce)), CCTP v1's usedNonces key."""
    return bytes(keccak(source_domain.to_bytes(4, "big") + nonce.to_bytes(8, "big")))


def decode_deposit_for_burn(chain: ChainId, log: Mapping[str, Any]) -> _Burn:
    """A ``DepositForBurn`` log (JSON-RPC form) -> its fields; DecodingError if malformed."""
    topics = [as_bytes(t) for t in log["topics"]]
    if len(topics) != 4 or "0x" + topics[0].hex() != DEPOSIT_FOR_BURN:
        raise DecodingError(f"chain {chain}: not a DepositForBurn log: {log!r}")
    amount, recipient, domain, _, _ = decode(_DATA, as_bytes(log["data"]))
    stamp = log.get("blockTimestamp")
    return _Burn(
        chain,
        int.from_bytes(topics[1], "big"),
        Address(to_checksum_address(topics[2][12:])),
        int(amount),
        Address(to_checksum_address(topics[3][12:])),
        bytes(recipient),
        int(domain),
        as_int(log["blockNumber"]),
        as_hash(log["blockHash"]),
        as_hash(log["transactionHash"]),
        as_int(stamp) if stamp is not None else None,
    )


def dedupe(burns: Iterable[_Burn]) -> tuple[list[_Burn], list[str]]:
    """One burn per (source chain, nonce); two different logs for one nonce are an error."""
    seen: dict[tuple[int, int], _Burn] = {}
    errors: list[str] = []
    for b in burns:
        first = seen.setdefault((b.chain, b.nonce), b)
        if first is not b and first.tx_hash != b.tx_hash:
            errors.append(
                f"chain {b.chain}: nonce {b.nonce} burnt twice ({first.tx_hash}, {b.tx_hash})"
            )
    return list(seen.values()), errors


def _recipient(word: bytes) -> Address | None:
    """An EVM mintRecipient, or None (another chain family's 32-byte address)."""
    return None if any(word[:12]) else Address(to_checksum_address(word[12:]))


async def _scan_source(
    bridge: BridgeConfig,
    chain: ChainId,
    pinned: PinnedBlock,
    client: ChainClient,
    after_pin: bool = False,
) -> list[_Burn]:
    """Every DepositForBurn of the bridge on ``chain`` in the look-back before the pin, or with
    ``after_pin`` from the block after the pin to the chain's head (at most the look-back)."""
    if after_pin:
        head = as_int(await client.call("eth_blockNumber", []))
        start, end = pinned.number + 1, min(head, pinned.number + bridge.lookback_blocks)
    else:
        start, end = max(0, pinned.number - bridge.lookback_blocks), pinned.number
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    address = bridge.contracts[chain]

    async def one(lo: int, hi: int) -> list[Any]:
        query = {
            "address": address,
            "topics": [DEPOSIT_FOR_BURN],
            "fromBlock": hex(lo),
            "toBlock": hex(hi),
        }
        async with gate:
            return list(await client.call("eth_getLogs", [query]))

    ranges = log_ranges(start, end, bridge.log_chunk_blocks)
    burns: list[_Burn] = []
    for logs in await asyncio.gather(*(one(lo, hi) for lo, hi in ranges)):
        for log in logs:
            if log.get("removed"):
                continue
            burn = decode_deposit_for_burn(chain, log)
            if burn.block == pinned.number and burn.block_hash != pinned.hash:
                raise InconsistentChain(
                    f"chain {chain}: log of block {burn.block} has hash {burn.block_hash}, "
                    f"the pinned block is {pinned.hash} (reorg?)"
                )
            burns.append(burn)
    return burns


async def _timestamps(burns: list[_Burn], client: ChainClient) -> list[_Burn]:
    """Fill in block timestamps that the logs did not carry (one block read per block)."""
    missing = sorted({b.block for b in burns if b.timestamp is None})
    blocks = await asyncio.gather(
        *(client.call("eth_getBlockByNumber", [hex(n), False]) for n in missing)
    )
    stamp = {n: as_int(blk["timestamp"]) for n, blk in zip(missing, blocks, strict=True)}
    return [b if b.timestamp is not None else replace(b, timestamp=stamp[b.block]) for b in burns]


def _dest_token(
    config: OmnimarginConfig, burn: _Burn, dest: ChainId
) -> tuple[TokenConfig | None, str]:
    """The token minted on ``dest`` for ``burn``: the native token of the burnt token's asset."""
    source = {t.address: t for t in config.tokens_on(burn.chain)}.get(burn.burn_token)
    if source is None:
        return None, (
            f"chain {burn.chain}: transfer {burn.nonce} burns token {burn.burn_token}, "
            "which is not in [[tokens]]"
        )
    natives = [t for t in config.tokens_on(dest) if t.asset == source.asset and t.kind == "native"]
    if len(natives) != 1 or natives[0].decimals != source.decimals:
        return None, (
            f"chain {dest}: no single native {source.asset} token with {source.decimals} "
            f"decimals to count transfer {burn.nonce} from chain {burn.chain} as"
        )
    return natives[0], ""


def _transfers(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    burns: list[_Burn],
    accounts: set[str] | None,
    errors: list[str],
    by_depositor: bool = False,
) -> list[InflightTransfer]:
    """Burns towards configured chains, for watched recipients (or with ``by_depositor``,
    watched depositors), as transfers (not yet checked)."""
    chain_of = {domain: ChainId(cid) for cid, domain in bridge.domains.items()}
    vaults = vaults_of(config)
    out = []
    for b in burns:
        recipient, dest = _recipient(b.mint_recipient), chain_of.get(b.dest_domain)
        into_vault = dest is not None and recipient is not None and recipient == vaults.get(dest)
        who = b.depositor if by_depositor or into_vault else recipient
        if recipient is None or (accounts is not None and who not in accounts):
            continue
        if dest is None:
            errors.append(
                f"bridge {bridge.name}: transfer {b.nonce} from chain {b.chain} to "
                f"{recipient} goes to domain {b.dest_domain}, which no configured chain has"
            )
            continue
        token, problem = _dest_token(config, b, dest)
        if token is None:
            errors.append(f"bridge {bridge.name}: {problem}")
            continue
        out.append(
            InflightTransfer(
                bridge.name,
                b.chain,
                dest,
                bridge.domains[b.chain],
                b.nonce,
                b.burn_token,
                Address(token.address),
                recipient,
                b.depositor,
                b.amount,
                token.decimals,
                BlockNumber(b.block),
                b.timestamp or 0,
                b.tx_hash,
                into_vault=into_vault,
            )
        )
    return out


def vaults_of(config: OmnimarginConfig) -> dict[ChainId, Address]:
    """Each chain's CollateralVault (its ``vault`` source): a transfer minted to it is credited
    to its depositor by the vault's bridge hook."""
    return {
        ChainId(s.chain_id): Address(to_checksum_address(s.address))
        for s in config.sources
        if s.kind is SourceKind.VAULT and s.address is not None
    }


async def _nonces_used(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    dest: ChainId,
    transfers: list[InflightTransfer],
    pinned: PinnedBlock,
    client: ChainClient,
) -> list[bool | None]:
    """Per transfer, whether its nonce is used on ``dest`` at its pin (None: the call failed)."""
    chain = config.chain(dest)
    target = bridge.transmitter(dest)
    calls = [
        Call(target, USED_NONCES + used_nonce_key(t.source_domain, t.nonce)) for t in transfers
    ]
    results = await aggregate3(client, chain.multicall3, calls, pinned.selector, chain.batch_size)
    return [word_uint(r.data) != 0 if r.ok else None for r in results]


async def _unused(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    dest: ChainId,
    transfers: list[InflightTransfer],
    pinned: PinnedBlock,
    client: ChainClient,
) -> list[InflightTransfer]:
    """The transfers whose nonce is not used on ``dest`` at its pin (a failed read: flagged)."""
    used = await _nonces_used(config, bridge, dest, transfers, pinned, client)
    return [
        replace(t, dest_unreadable=True) if u is None else t
        for t, u in zip(transfers, used, strict=True)
        if not u
    ]


async def _minted_early(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    transfers: list[InflightTransfer],
    pinned: Mapping[int, PinnedBlock],
    clients: Mapping[int, ChainClient],
    unreadable: set[ChainId],
) -> list[InflightTransfer]:
    """Of the burns after their source's pin, those already used at the destination's pin."""
    by_dest: dict[ChainId, list[InflightTransfer]] = {}
    for t in transfers:
        if t.dest_chain not in unreadable:
            by_dest.setdefault(t.dest_chain, []).append(t)
    dests = list(by_dest)
    answers = await asyncio.gather(
        *(_nonces_used(config, bridge, d, by_dest[d], pinned[d], clients[d]) for d in dests)
    )
    return [
        t
        for d, used in zip(dests, answers, strict=True)
        for t, u in zip(by_dest[d], used, strict=True)
        if u
    ]


async def read_inflight(
    config: OmnimarginConfig,
    bridge: BridgeConfig | str,
    pinned: Mapping[int, PinnedBlock],
    clients: Mapping[int, ChainClient],
    accounts: Collection[str] | None = None,
) -> InflightRead:
    """The bridge's transfers in flight at ``pinned`` (chain -> block), read with ``clients``.

    ``accounts``: only transfers to these recipients (default: every EVM recipient). A chain
    missing from ``pinned`` or ``clients`` counts as unreadable.
    """
    b = config.bridge(bridge) if isinstance(bridge, str) else bridge
    if b.kind != "cctp":
        raise ConfigError([f"bridges.{b.name}: in-flight reads need kind cctp, not {b.kind}"])
    watched = None if accounts is None else {str(to_checksum_address(a)) for a in accounts}
    chains = [ChainId(c) for c in b.contracts]
    readable = [c for c in chains if c in pinned and c in clients]
    unreadable = {c for c in chains if c not in readable}
    errors = [f"bridge {b.name}: chain {c} not pinned" for c in sorted(unreadable)]

    async def source(c: ChainId) -> list[_Burn]:
        burns = await _scan_source(b, c, pinned[c], clients[c])
        vault_addresses = set(vaults_of(config).values())

        def watched_burn(x: _Burn) -> bool:
            to = _recipient(x.mint_recipient)
            return (
                watched is None
                or to in watched
                or (to in vault_addresses and x.depositor in watched)
            )

        mine = [x for x in burns if watched_burn(x)]
        return await _timestamps(mine, clients[c])

    scans = await asyncio.gather(*(source(c) for c in readable), return_exceptions=True)
    burns: list[_Burn] = []
    for c, scan in zip(readable, scans, strict=True):
        if isinstance(scan, READ_ERRORS):
            unreadable.add(c)
            errors.append(f"bridge {b.name}: chain {c} unreadable, its burns unknown ({scan})")
        elif isinstance(scan, BaseException):
            raise scan
        else:
            burns += scan
    unique, dup_errors = dedupe(burns)
    errors += dup_errors
    transfers = _transfers(config, b, unique, watched, errors)
    checked = await _check_destinations(config, b, transfers, pinned, clients, unreadable, errors)
    early = await _after_pins(config, b, pinned, clients, watched, unreadable, errors)
    blocks = {ChainId(c): BlockNumber(pinned[c].number) for c in readable if c not in unreadable}
    return InflightRead(
        b.name,
        tuple(sorted(checked, key=lambda t: (t.source_chain, t.nonce))),
        blocks,
        tuple(sorted(unreadable)),
        tuple(errors),
        tuple(sorted(early, key=lambda t: (t.source_chain, t.nonce))),
    )


async def _after_pins(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    pinned: Mapping[int, PinnedBlock],
    clients: Mapping[int, ChainClient],
    watched: set[str] | None,
    unreadable: set[ChainId],
    errors: list[str],
) -> list[InflightTransfer]:
    """Burns of watched depositors after their source's pin and minted by the destination's pin
    (see the module docstring). A failed read is an error: such a transfer could count twice."""
    sources = [ChainId(c) for c in bridge.contracts if c in pinned and c not in unreadable]
    scans = await asyncio.gather(
        *(_scan_source(bridge, c, pinned[c], clients[c], after_pin=True) for c in sources),
        return_exceptions=True,
    )
    burns: list[_Burn] = []
    for c, scan in zip(sources, scans, strict=True):
        if isinstance(scan, READ_ERRORS):
            errors.append(
                f"bridge {bridge.name}: chain {c}: burns after the pinned block unknown, a "
                f"transfer minted early could count twice ({scan})"
            )
        elif isinstance(scan, BaseException):
            raise scan
        else:
            burns += scan
    unique, _ = dedupe(burns)
    ignored: list[str] = []  # burns the in-flight scan will report once they are before a pin
    later = _transfers(config, bridge, unique, watched, ignored, by_depositor=True)
    try:
        return await _minted_early(config, bridge, later, pinned, clients, unreadable)
    except READ_ERRORS as exc:
        errors.append(
            f"bridge {bridge.name}: usedNonces of burns after the pins unknown, a transfer "
            f"minted early could count twice ({exc})"
        )
        return []


async def _check_destinations(
    config: OmnimarginConfig,
    bridge: BridgeConfig,
    transfers: list[InflightTransfer],
    pinned: Mapping[int, PinnedBlock],
    clients: Mapping[int, ChainClient],
    unreadable: set[ChainId],
    errors: list[str],
) -> list[InflightTransfer]:
    """Drop the transfers used on their destination; flag those whose destination is unread."""
    by_dest: dict[ChainId, list[InflightTransfer]] = {}
    for t in transfers:
        by_dest.setdefault(t.dest_chain, []).append(t)
    dests = [d for d in by_dest if d not in unreadable]
    answers = await asyncio.gather(
        *(_unused(config, bridge, d, by_dest[d], pinned[d], clients[d]) for d in dests),
        return_exceptions=True,
    )
    out: list[InflightTransfer] = []
    for d, answer in zip(dests, answers, strict=True):
        if isinstance(answer, READ_ERRORS):
            unreadable.add(d)
            errors.append(
                f"bridge {bridge.name}: chain {d} unreadable, usedNonces unknown ({answer})"
            )
        elif isinstance(answer, BaseException):
            raise answer
        else:
            out += answer
    for d, group in by_dest.items():
        if d in unreadable:
            out += [replace(t, dest_unreadable=True) for t in group]
    return [_expire(t, bridge, pinned) for t in out]


def _expire(
    t: InflightTransfer, bridge: BridgeConfig, pinned: Mapping[int, PinnedBlock]
) -> InflightTransfer:
    """Flag ``expired`` once ``timeout_s`` passed since the burn (by the destination's clock,
    else the source's)."""
    clock = pinned.get(t.dest_chain) or pinned.get(t.source_chain)
    if clock is not None and clock.timestamp - t.burnt_at_time > bridge.timeout_s:
        return replace(t, expired=True)
    return t
