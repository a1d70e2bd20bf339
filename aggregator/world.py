"""Everything read from the chains for one decision: pinned snapshots, transfers in flight,
holdings per account, prices, and the reasons the data is degraded.

The only module of the aggregator that awaits chain I/O: every chain is pinned and read
concurrently; the rest of the margin path is plain functions of a :class:`World`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from eth_utils.crypto import keccak

from aggregator.prices import AssetPrice, price_assets
from bridge_adapters.holdings import Holdings, build_holdings
from chains.config import OmnimarginConfig
from chains.errors import ChainError
from chains.inflight import InflightRead, read_inflight
from chains.margin_gate import GateState, read_gate
from chains.reader import ChainReader, PinnedBlock
from chains.rpc import ChainClient
from chains.types import ChainId, ChainSnapshot, ChainStatus, FeedStatus


@dataclass(frozen=True)
class World:
    config: OmnimarginConfig
    snapshots: tuple[ChainSnapshot, ...]
    inflight: tuple[InflightRead, ...]
    holdings: dict[str, Holdings]
    prices: dict[str, AssetPrice]
    reasons: tuple[str, ...]  # degraded data that concerns every account
    # each gate at its chain's pinned block: nonce statuses of the outstanding attestations
    # and the accounts' counters (aggregator.world.with_gates; empty until read)
    gates: dict[int, GateState] = field(default_factory=dict)

    def snapshot(self, chain_id: int) -> ChainSnapshot:
        return next(s for s in self.snapshots if s.chain_id == chain_id)

    def chain_reasons(self, chain_id: int) -> tuple[str, ...]:
        """Why new risk on ``chain_id`` must be refused (empty when it may be taken)."""
        snap = self.snapshot(chain_id)
        if not snap.ok:
            return (unavailable_reason(snap),)
        if snap.sequencer is not None and snap.sequencer.status is not FeedStatus.OK:
            return (f"chain {snap.name} ({chain_id}): {snap.sequencer.reason}",)
        return ()

    @functools.cached_property
    def snapshot_hash(self) -> str:
        """keccak256 over (chainId, blockNumber, blockHash) of every chain read, by chain id."""
        packed = b"".join(
            s.chain_id.to_bytes(32, "big")
            + int(s.block_number or 0).to_bytes(32, "big")
            + bytes.fromhex((s.block_hash or "0x").removeprefix("0x"))
            for s in sorted(self.snapshots, key=lambda s: s.chain_id)
            if s.ok
        )
        return "0x" + bytes(keccak(packed)).hex()


def unavailable_reason(snap: ChainSnapshot) -> str:
    return f"chain {snap.name} ({snap.chain_id}) unavailable: {'; '.join(snap.errors)}"


def _unavailable(reader: ChainReader, why: str) -> ChainSnapshot:
    chain = reader.chain
    return ChainSnapshot(
        ChainId(chain.chain_id), chain.name, ChainStatus.UNAVAILABLE, errors=(why,)
    )


async def _pin_and_read(
    reader: ChainReader, accounts: Sequence[str]
) -> tuple[PinnedBlock | None, ChainSnapshot]:
    try:
        pinned = await reader.pin()
    except (ChainError, OSError) as exc:
        return None, _unavailable(reader, str(exc))
    except Exception as exc:  # web3 errors from a broken node: the chain is unavailable
        return None, _unavailable(reader, f"{type(exc).__name__}: {exc}")
    snap = await reader.snapshot(accounts, pinned)
    return (pinned if snap.ok else None), snap


async def read_world(
    config: OmnimarginConfig,
    accounts: Sequence[str],
    timeout_s: float = 30.0,
    tolerance: Fraction = Fraction(2, 100),
) -> World:
    """Pin and read every chain, the in-flight transfers of every CCTP bridge, and price them."""
    readers = {c.chain_id: ChainReader(config, c) for c in config.chains}
    try:

        async def one(r: ChainReader) -> tuple[PinnedBlock | None, ChainSnapshot]:
            try:
                return await asyncio.wait_for(_pin_and_read(r, accounts), timeout_s)
            except TimeoutError:
                return None, _unavailable(r, f"{r.chain.name}: read took over {timeout_s} s")

        results = await asyncio.gather(*(one(r) for r in readers.values()))
        pins = {cid: p for cid, (p, _) in zip(readers, results, strict=True) if p is not None}
        snaps = tuple(sorted((s for _, s in results), key=lambda s: s.chain_id))
        clients = {cid: readers[cid].client for cid in pins}
        reads = tuple(
            await asyncio.gather(
                *(
                    read_inflight(config, b, pins, clients, accounts)
                    for b in config.bridges
                    if b.kind == "cctp"
                )
            )
        )
    finally:
        await asyncio.gather(*(r.client.close() for r in readers.values()), return_exceptions=True)
    holdings = build_holdings(snaps, reads, config, accounts)
    reasons = [unavailable_reason(s) for s in snaps if not s.ok]
    # reads that failed on a chain that answered (a reverting vault, a token without code, a
    # market whose positions cannot be read): what they hide could be a loss, so no new risk
    reasons.extend(f"chain {s.name} ({s.chain_id}): {e}" for s in snaps if s.ok for e in s.errors)
    for read in reads:
        reasons.extend(read.reasons)
    return World(
        config,
        snaps,
        reads,
        {str(a): h for a, h in holdings.items()},
        price_assets(snaps, tolerance),
        tuple(reasons),
    )


async def read_gates(
    config: OmnimarginConfig,
    world: World,
    nonces: Iterable[tuple[str, int]],
    accounts: Iterable[str] = (),
    timeout_s: float = 30.0,
) -> tuple[dict[int, GateState], tuple[str, ...]]:
    """Every MarginGate at its chain's pinned block: the status of each (account, nonce) and
    the counter of each account (those of ``nonces`` and ``accounts``). Returns the states and
    the reasons a gate could not be read (a decision then refuses: it cannot know what is
    outstanding)."""
    asked = sorted(set(nonces))
    extra = sorted({str(a) for a in accounts} - {a for a, _ in asked})

    async def one(snap: ChainSnapshot) -> GateState | str:
        chain = config.chain(int(snap.chain_id))
        client = ChainClient(chain)
        block = (int(snap.block_number or 0), str(snap.block_hash), int(snap.timestamp or 0))
        try:
            return await asyncio.wait_for(read_gate(client, chain, block, asked, extra), timeout_s)
        except (ChainError, OSError, TimeoutError) as exc:
            return f"chain {snap.name} ({snap.chain_id}): MarginGate unreadable: {exc}"
        finally:
            await client.close()

    snaps = [s for s in world.snapshots if s.ok and config.chain(int(s.chain_id)).margin_gate]
    found = await asyncio.gather(*(one(s) for s in snaps))
    states = {g.chain_id: g for g in found if isinstance(g, GateState)}
    return states, tuple(g for g in found if isinstance(g, str))


def with_gates(world: World, gates: dict[int, GateState], reasons: tuple[str, ...]) -> World:
    """``world`` with its gates' pinned states (and the reasons some could not be read)."""
    return replace(world, gates=gates, reasons=tuple(dict.fromkeys((*world.reasons, *reasons))))
