"""Is the epoch still canonical, and are the chains' clocks right? Checked for every
authorisation, after it arrived.

An epoch is read before the request; a reorg since then must not be signed over. Each
authorisation waits for one check of the pinned block hashes that *started after it arrived*;
requests arriving together share one check (one ``eth_getBlockByNumber`` per chain pinned, over
clients that stay open), so a burst of authorisations costs a round trip, not a round trip each.
A chain that cannot be asked in time is a reason to refuse (fail closed). The same round trip
reads each chain's head: a target chain whose head timestamp is further than the allowed skew
from the wall clock is refused (attestations are timed by the wall clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from web3.exceptions import Web3Exception

from aggregator.world import World
from chains.config import OmnimarginConfig
from chains.errors import ChainError
from chains.rpc import ChainClient, as_hash, as_int

Pin = tuple[int, int]  # (chain id, block number); HEAD for the chain's latest block
HEAD = -1
Block = tuple[str, int]  # (hash, timestamp)


def clock_reasons(
    cfg: OmnimarginConfig, chain_id: int, head: Block | None, allowance_s: float
) -> tuple[str, ...]:
    """Why ``chain_id``'s clock cannot time an attestation: its head (hash, timestamp) unknown,
    or further than ``allowance_s`` from the wall clock."""
    name = cfg.chain(chain_id).name
    if head is None:
        return (f"chain {name} ({chain_id}): cannot read its head to check its clock",)
    skew = head[1] - time.time()
    if abs(skew) > allowance_s:
        return (
            f"chain {name} ({chain_id}): its head's clock is {skew:+.0f} s from the wall "
            f"clock (more than the {allowance_s:.0f} s allowed)",
        )
    return ()


class CanonicalCheck:
    """Coalesced checks that pinned blocks are still canonical (use from one event loop)."""

    def __init__(self, cfg: OmnimarginConfig, timeout_s: float = 2.0) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self._clients: dict[int, ChainClient] = {}
        self._running = False
        self._next: asyncio.Future[dict[Pin, Block | None]] | None = None
        self._wanted: set[Pin] = set()
        self.checks = 0  # round trips made (each serves every request that waited on it)

    async def reasons(
        self, world: World, target: int | None = None, allowance_s: float | None = None
    ) -> tuple[str, ...]:
        """Why ``world``'s reads no longer stand (empty when every block is canonical), and,
        with ``target`` and ``allowance_s``, why that chain's clock cannot be trusted now."""
        snaps = [s for s in world.snapshots if s.ok and s.block_number is not None]
        pins = {(int(s.chain_id), int(s.block_number or 0)) for s in snaps}
        if target is not None:
            pins.add((target, HEAD))
        found = await self._check(pins)
        hashes = {k: v[0] if v else None for k, v in found.items()}
        out: list[str] = []
        if target is not None and allowance_s is not None:
            out.extend(clock_reasons(self.cfg, target, found.get((target, HEAD)), allowance_s))
        for s in snaps:
            now = hashes.get((int(s.chain_id), int(s.block_number or 0)), "")
            where = f"chain {s.name} ({s.chain_id})"
            if now is None:
                out.append(f"{where}: cannot check that block {s.block_number} is canonical")
            elif now != s.block_hash:
                out.append(
                    f"{where}: block {s.block_number} {s.block_hash} is no longer canonical "
                    f"(reorg since the read; now {now})"
                )
        return tuple(out)

    async def _check(self, pins: Iterable[Pin]) -> dict[Pin, Block | None]:
        self._wanted.update(pins)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        mine = self._next  # the next check to start: it starts after this request arrived
        if not self._running:
            self._start()
        return await asyncio.shield(mine)

    def _start(self) -> None:
        future, self._next = self._next, None
        wanted, self._wanted = self._wanted, set()
        assert future is not None
        self._running = True
        task = asyncio.get_running_loop().create_task(self._fetch(wanted))

        def done(t: asyncio.Task[dict[Pin, Block | None]]) -> None:
            self._running = False
            if t.cancelled():
                future.cancel()
            elif t.exception() is not None:
                future.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                future.set_result(t.result())
            if self._next is not None:  # requests that came during this check: another one
                self._start()

        task.add_done_callback(done)

    async def _fetch(self, pins: set[Pin]) -> dict[Pin, Block | None]:
        self.checks += 1
        order = sorted(pins)
        answers = await asyncio.gather(*(self._hash(c, n) for c, n in order))
        return dict(zip(order, answers, strict=True))

    async def _hash(self, chain_id: int, number: int) -> Block | None:
        client = self._clients.get(chain_id)
        if client is None:
            client = self._clients[chain_id] = ChainClient(self.cfg.chain(chain_id))
        try:
            block = await asyncio.wait_for(
                client.light_call(
                    "eth_getBlockByNumber", ["latest" if number == HEAD else hex(number), False]
                ),
                self.timeout_s,
            )
        except (ChainError, Web3Exception, OSError, TimeoutError):
            return None
        return (as_hash(block["hash"]), as_int(block["timestamp"])) if block else None

    async def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()
