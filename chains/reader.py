"""Snapshots of many accounts' collateral and the oracle prices on every configured chain.

Per chain: pin a block first (finality tag, minus confirmations), check that every configured
endpoint that answers agrees on its hash and that Multicall3 holds the expected code, then read
every balance, vault position and feed round at that block (EIP-1898 block hash, canonical
only) through Multicall3 ``aggregate3``. Chains are read concurrently; one that cannot be read
comes back ``unavailable`` with the reason, never as an empty chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import to_checksum_address
from web3.exceptions import Web3Exception

from chains.config import ChainConfig, FeedConfig, OmnimarginConfig, SourceConfig, TokenConfig
from chains.errors import ChainError, InconsistentChain
from chains.multicall import (
    Call,
    Result,
    address_word,
    aggregate3,
    calldata,
    codehash,
    selector,
    word_uint,
)
from chains.oracle import feed_status, sequencer_state
from chains.rpc import ChainClient, as_bytes, as_hash, as_int
from chains.types import (
    Address,
    Balance,
    BlockNumber,
    ChainId,
    ChainSnapshot,
    ChainStatus,
    FeedRound,
    PerpPosition,
    SequencerState,
    SourceKind,
    market_id,
)

ROUND = ["uint80", "int256", "uint256", "uint256", "uint80"]
DECIMALS = selector("decimals()")
BALANCE_OF = selector("balanceOf(address)")
COLLATERAL = selector("collateral(address,address)")
# CollateralVault: (collateral, escape-hatch request) in one call
HELD = selector("held(address,address)")
LATEST_ROUND = selector("latestRoundData()")
POSITION = selector("position(address,bytes32)")  # PerpMarket: size, entry, realised P&L


@dataclass(frozen=True)
class PinnedBlock:
    number: int
    hash: str
    timestamp: int

    @property
    def selector(self) -> dict[str, Any]:
        """EIP-1898 block parameter: exactly this block, and only while it is canonical."""
        return {"blockHash": self.hash, "requireCanonical": True}


@dataclass(frozen=True)
class _Read:
    """One planned sub-call and what to do with its answer."""

    kind: str  # "balance" | "shares" | "held" | "decimals" | "feed" | "feed_decimals" |
    #           "sequencer"
    #           | "position" (``feed`` then names the market's asset)
    call: Call
    account: str = ""
    token: TokenConfig | None = None
    source: SourceConfig | None = None
    feed: FeedConfig | None = None


_uint = word_uint
_AMOUNTS = ("balance", "shares", "held")  # reads of an amount an account holds


class ChainReader:
    """Reads one chain; keeps its endpoints (and the Multicall3 code check) between snapshots."""

    def __init__(self, config: OmnimarginConfig, chain: ChainConfig) -> None:
        self.config, self.chain = config, chain
        self.client = ChainClient(chain)
        self._multicall_checked = False
        self._verified: set[str] = set()  # endpoints whose chain id was checked

    async def _check_chain_ids(self) -> None:
        """Every endpoint that answers must serve the configured chain id (checked once each)."""
        todo = [e for e in self.client.endpoints if e.url not in self._verified]
        if not todo:
            return
        answers = await self.client.on_each("eth_chainId", [], todo)
        for endpoint, answer in zip(todo, answers, strict=True):
            if isinstance(answer, BaseException):
                continue
            if as_int(answer) != self.chain.chain_id:
                raise InconsistentChain(
                    f"{self.chain.name}: {endpoint.url} serves chain id {as_int(answer)}, "
                    f"the config says {self.chain.chain_id}"
                )
            self._verified.add(endpoint.url)

    async def pin(self) -> PinnedBlock:
        """Resolve the finality tag (minus confirmations) to one block, agreed by all endpoints."""
        await self._check_chain_ids()
        block = await self.client.call("eth_getBlockByNumber", [self.chain.finality, False])
        if self.chain.confirmations:
            number = max(as_int(block["number"]) - self.chain.confirmations, 0)
            block = await self.client.call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            raise InconsistentChain(f"{self.chain.name}: pinned block not found")
        pinned = PinnedBlock(
            as_int(block["number"]), as_hash(block["hash"]), as_int(block["timestamp"])
        )
        await self._check_agreement(pinned)
        return pinned

    async def _check_agreement(self, pinned: PinnedBlock) -> None:
        if len(self.client.endpoints) < 2:
            return
        answers = await self.client.on_each("eth_getBlockByNumber", [hex(pinned.number), False])
        for endpoint, answer in zip(self.client.endpoints, answers, strict=True):
            if isinstance(answer, BaseException):
                continue  # a dead endpoint is failover's business, not a disagreement
            other = as_hash(answer["hash"]) if answer else None
            if other != pinned.hash:
                raise InconsistentChain(
                    f"{self.chain.name}: endpoints disagree on block {pinned.number} "
                    f"({pinned.hash} vs {other} at {endpoint.url})"
                )

    async def _check_multicall(self, pinned: PinnedBlock) -> None:
        if self._multicall_checked:
            return
        code = as_bytes(
            await self.client.call("eth_getCode", [self.chain.multicall3, pinned.selector])
        )
        if not code:
            raise InconsistentChain(
                f"{self.chain.name}: no code at multicall3 {self.chain.multicall3}"
            )
        expected = self.chain.multicall3_codehash
        if expected is not None and codehash(code) != expected:
            raise InconsistentChain(
                f"{self.chain.name}: multicall3 {self.chain.multicall3} holds other code "
                f"(code hash {codehash(code)}, expected {expected})"
            )
        self._multicall_checked = True

    async def snapshot(
        self, accounts: Sequence[str], pinned: PinnedBlock | None = None
    ) -> ChainSnapshot:
        """The chain's snapshot for ``accounts`` at a new pinned block (or at ``pinned``);
        unavailable, with the reasons, on any failure."""
        started, before = time.perf_counter(), self.client.requests
        chain_id, name = ChainId(self.chain.chain_id), self.chain.name
        try:
            pinned = pinned or await self.pin()
            await self._check_multicall(pinned)
            snap = await self._read(pinned, [to_checksum_address(a) for a in accounts])
        except (ChainError, Web3Exception, DecodingError) as exc:
            return ChainSnapshot(
                chain_id,
                name,
                ChainStatus.UNAVAILABLE,
                errors=(str(exc),),
                requests=self.client.requests - before,
                read_s=time.perf_counter() - started,
            )
        return ChainSnapshot(
            chain_id,
            name,
            ChainStatus.OK,
            BlockNumber(pinned.number),
            pinned.hash,
            pinned.timestamp,
            snap[0],
            snap[1],
            snap[2],
            snap[3],
            requests=self.client.requests - before,
            positions=snap[4],
            read_s=time.perf_counter() - started,
        )

    def _plan(self, accounts: list[str]) -> list[_Read]:
        """Every sub-call of a snapshot, in a fixed order (per-account calls encoded by hand:
        they are thousands)."""
        cid = self.chain.chain_id
        tokens = {t.address: t for t in self.config.tokens_on(cid)}
        reads = [_Read("decimals", Call(t.address, DECIMALS), token=t) for t in tokens.values()]
        words = {a: address_word(a) for a in accounts}
        for src in self.config.sources_on(cid):
            chosen = [tokens[a] for a in (src.tokens or list(tokens))]
            for account in accounts:
                if src.kind is SourceKind.ERC4626:
                    assert src.address is not None
                    if src.locked_in is not None:  # shares locked in a CollateralVault
                        data = COLLATERAL + words[account] + address_word(src.address)
                        call = Call(src.locked_in, data)
                    else:
                        call = Call(src.address, BALANCE_OF + words[account])
                    reads.append(_Read("shares", call, account, chosen[0], src))
                    continue
                for tok in chosen:
                    if src.kind is SourceKind.VAULT:
                        assert src.address is not None
                        data = HELD + words[account] + address_word(tok.address)
                        reads.append(_Read("held", Call(src.address, data), account, tok, src))
                        continue
                    else:
                        call = Call(tok.address, BALANCE_OF + words[account])
                    reads.append(_Read("balance", call, account, tok, src))
        for feed in self.config.feeds_on(cid):
            reads.append(_Read("feed", Call(feed.address, LATEST_ROUND), feed=feed))
            reads.append(_Read("feed_decimals", Call(feed.address, DECIMALS), feed=feed))
        if self.chain.sequencer_feed is not None:
            reads.append(_Read("sequencer", Call(self.chain.sequencer_feed, LATEST_ROUND)))
        if self.chain.perp_market is not None:
            markets = {f.asset: f for f in self.config.feeds_on(cid)}  # one market per asset
            listed = self.chain.perp_markets
            for feed in (f for a, f in markets.items() if listed is None or a in listed):
                for account in accounts:
                    data = POSITION + words[account] + market_id(feed.asset)
                    call = Call(self.chain.perp_market, data)
                    reads.append(_Read("position", call, account, feed=feed))
        return reads

    async def _read(
        self, pinned: PinnedBlock, accounts: list[str]
    ) -> tuple[
        tuple[Balance, ...],
        tuple[FeedRound, ...],
        SequencerState | None,
        tuple[str, ...],
        tuple[PerpPosition, ...],
    ]:
        reads = self._plan(accounts)
        results = await self._run([r.call for r in reads], pinned)
        errors: list[str] = []
        bad_tokens = self._check_decimals(reads, results, errors)
        balances, pending = self._balances(reads, results, bad_tokens, errors)
        balances += await self._erc4626_assets(pending, pinned, errors)
        sequencer = self._sequencer(reads, results, pinned)
        prices = self._feeds(reads, results, pinned, sequencer, errors)
        positions = self._positions(reads, results, errors)
        return tuple(balances), tuple(prices), sequencer, tuple(errors), positions

    async def _run(self, calls: list[Call], pinned: PinnedBlock) -> list[Result]:
        return await aggregate3(
            self.client, self.chain.multicall3, calls, pinned.selector, self.chain.batch_size
        )

    def _check_decimals(
        self, reads: list[_Read], results: list[Result], errors: list[str]
    ) -> set[str]:
        bad: set[str] = set()
        for r, res in zip(reads, results, strict=True):
            if r.kind != "decimals" or r.token is None:
                continue
            if not res.ok:
                errors.append(
                    f"token {r.token.symbol} {r.token.address}: decimals() failed (no code?)"
                )
                bad.add(r.token.address)
            elif _uint(res.data) != r.token.decimals:
                errors.append(
                    f"token {r.token.symbol} {r.token.address}: config says {r.token.decimals} "
                    f"decimals, the chain says {_uint(res.data)}"
                )
                bad.add(r.token.address)
        return bad

    def _balances(
        self, reads: list[_Read], results: list[Result], bad: set[str], errors: list[str]
    ) -> tuple[list[Balance], list[tuple[_Read, int]]]:
        out: list[Balance] = []
        pending: list[tuple[_Read, int]] = []
        failed: dict[str, int] = {}
        for r, res in zip(reads, results, strict=True):
            if r.kind not in _AMOUNTS or r.token is None or r.source is None:
                continue
            where = r.source.locked_in or r.source.address or r.token.address
            if not res.ok:
                failed[where] = failed.get(where, 0) + 1
                continue
            if r.token.address in bad:
                continue
            if r.kind == "held":  # a vault: its collateral, and its escape-hatch request
                locked, requested = _uint(res.data), word_uint(res.data[32:])
                if locked:
                    out.append(self._balance(r, locked))
                if requested:
                    out.append(self._balance(r, requested, escape_hatch=True))
                continue
            amount = _uint(res.data)
            if amount == 0:
                continue
            if r.kind == "shares":
                pending.append((r, amount))
            else:
                out.append(self._balance(r, amount))
        errors.extend(
            f"{n} reads from {addr} failed (reverted or empty)" for addr, n in failed.items()
        )
        return out, pending

    def _balance(
        self, r: _Read, amount: int, shares: int | None = None, escape_hatch: bool = False
    ) -> Balance:
        assert r.token is not None and r.source is not None
        src_addr = Address(r.source.address) if r.source.address else None
        return Balance(
            Address(r.account),
            Address(r.token.address),
            r.token.symbol,
            amount,
            r.token.decimals,
            SourceKind.VAULT_PENDING if escape_hatch else r.source.kind,
            src_addr,
            shares,
            r.source.locked and not escape_hatch,
        )

    async def _erc4626_assets(
        self, pending: list[tuple[_Read, int]], pinned: PinnedBlock, errors: list[str]
    ) -> list[Balance]:
        if not pending:
            return []
        calls = []
        for r, shares in pending:
            assert r.source is not None and r.source.address is not None
            calls.append(
                Call(r.source.address, calldata("convertToAssets(uint256)", ["uint256"], [shares]))
            )
        out = []
        for (r, shares), res in zip(pending, await self._run(calls, pinned), strict=True):
            if res.ok:
                out.append(self._balance(r, _uint(res.data), shares))
            else:
                errors.append(
                    f"erc4626 {r.source.address if r.source else '?'}: convertToAssets failed"
                )
        return out

    def _positions(
        self, reads: list[_Read], results: list[Result], errors: list[str]
    ) -> tuple[PerpPosition, ...]:
        """PerpMarket positions with a size or realised P&L (three words: int256 size, uint256
        entry price, int256 realised P&L)."""
        out, failed, cid = [], 0, ChainId(self.chain.chain_id)
        for r, res in zip(reads, results, strict=True):
            if r.kind != "position" or r.feed is None:
                continue
            if not res.ok or len(res.data) < 96:
                failed += 1
                continue
            size = int.from_bytes(res.data[:32], "big", signed=True)
            realized = int.from_bytes(res.data[64:96], "big", signed=True)
            if size or realized:
                mid, entry = "0x" + market_id(r.feed.asset).hex(), _uint(res.data[32:64])
                out.append(
                    PerpPosition(
                        Address(r.account),
                        r.feed.asset,
                        mid,
                        size,
                        entry,
                        chain_id=cid,
                        realized=realized,
                    )
                )
        if failed:
            errors.append(f"{failed} position reads from {self.chain.perp_market} failed")
        return tuple(out)

    def _sequencer(
        self, reads: list[_Read], results: list[Result], pinned: PinnedBlock
    ) -> SequencerState | None:
        if self.chain.sequencer_feed is None:
            return None
        for r, res in zip(reads, results, strict=True):
            if r.kind == "sequencer":
                answer, started = None, 0
                if res.ok:
                    _, answer, started, _, _ = decode(ROUND, res.data)
                return sequencer_state(
                    self.chain.sequencer_feed,
                    answer,
                    int(started),
                    pinned.timestamp,
                    self.chain.sequencer_grace_s,
                )
        raise AssertionError("sequencer read was planned")

    def _feeds(
        self,
        reads: list[_Read],
        results: list[Result],
        pinned: PinnedBlock,
        sequencer: SequencerState | None,
        errors: list[str],
    ) -> list[FeedRound]:
        decimals = {
            r.feed.address: (_uint(res.data) if res.ok else None)
            for r, res in zip(reads, results, strict=True)
            if r.kind == "feed_decimals" and r.feed is not None
        }
        out = []
        for r, res in zip(reads, results, strict=True):
            if r.kind != "feed" or r.feed is None:
                continue
            dec = decimals.get(r.feed.address)
            if not res.ok or dec is None:
                errors.append(f"feed {r.feed.asset} {r.feed.address}: latestRoundData failed")
                out.append(_failed_round(r.feed, "latestRoundData or decimals reverted"))
                continue
            round_id, answer, started, updated, _ = decode(ROUND, res.data)
            status, reason = feed_status(
                r.feed, dec, int(answer), int(updated), pinned.timestamp, sequencer
            )
            out.append(
                FeedRound(
                    r.feed.asset,
                    Address(r.feed.address),
                    int(answer),
                    dec,
                    int(round_id),
                    int(started),
                    int(updated),
                    status,
                    reason,
                )
            )
        return out


def _failed_round(feed: FeedConfig, reason: str) -> FeedRound:
    from chains.types import FeedStatus

    return FeedRound(feed.asset, Address(feed.address), 0, 0, 0, 0, 0, FeedStatus.INVALID, reason)


async def read_chains(
    readers: Iterable[ChainReader], accounts: Sequence[str], timeout_s: float | None = None
) -> tuple[ChainSnapshot, ...]:
    """Snapshots of all chains, read concurrently; a chain over ``timeout_s`` is unavailable."""
    readers = list(readers)

    async def one(reader: ChainReader) -> ChainSnapshot:
        try:
            return await asyncio.wait_for(reader.snapshot(accounts), timeout_s)
        except TimeoutError:
            return ChainSnapshot(
                ChainId(reader.chain.chain_id),
                reader.chain.name,
                ChainStatus.UNAVAILABLE,
                errors=(f"{reader.chain.name}: snapshot took longer than {timeout_s} s",),
            )

    snaps = await asyncio.gather(*(one(r) for r in readers))
    return tuple(sorted(snaps, key=lambda s: s.chain_id))


async def snapshot_all(
    config: OmnimarginConfig, accounts: Sequence[str], timeout_s: float | None = None
) -> tuple[ChainSnapshot, ...]:
    """One-shot: open a reader per chain, read them all, close."""
    readers = [ChainReader(config, c) for c in config.chains]
    try:
        return await read_chains(readers, accounts, timeout_s)
    finally:
        await asyncio.gather(*(r.client.close() for r in readers), return_exceptions=True)
