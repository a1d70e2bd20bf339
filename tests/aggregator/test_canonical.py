"""The canonical-block check behind every authorisation of the service: coalesced, after the
request arrived, failing closed."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aggregator.canonical import CanonicalCheck
from aggregator.world import World, read_world
from chains.devnet_nodes import free_ports


def _world(devnet: Any) -> World:
    return asyncio.run(read_world(devnet.config, devnet.config.accounts[:1]))


def test_concurrent_requests_share_checks_that_start_after_they_arrive(devnet: Any) -> None:
    world = _world(devnet)

    async def burst() -> tuple[list[tuple[str, ...]], int]:
        check = CanonicalCheck(devnet.config)
        try:
            first = await check.reasons(world)  # one check on its own
            answers = await asyncio.gather(*(check.reasons(world) for _ in range(50)))
            return [first, *answers], check.checks
        finally:
            await check.close()

    answers, checks = asyncio.run(burst())
    assert answers == [()] * 51
    assert 2 <= checks <= 3  # 50 arrivals together: one or two round trips, not fifty


def test_a_changed_hash_or_an_unreachable_chain_is_a_reason(devnet: Any) -> None:
    world = _world(devnet)
    snap = world.snapshots[1]
    forged = dataclasses.replace(snap, block_hash="0x" + "ab" * 32)
    moved = dataclasses.replace(world, snapshots=(world.snapshots[0], forged, *world.snapshots[2:]))
    (port,) = free_ports(1)
    dead = devnet.config.model_copy(deep=True)
    dead.chains[2] = dead.chains[2].model_copy(
        update={"rpc_urls": [f"http://127.0.0.1:{port}"], "retries": 0, "timeout_s": 1.0}
    )

    async def ask(cfg: Any, w: World) -> tuple[str, ...]:
        check = CanonicalCheck(cfg, timeout_s=2.0)
        try:
            return await check.reasons(w)
        finally:
            await check.close()

    (reorged,) = asyncio.run(ask(devnet.config, moved))
    assert f"block {snap.block_number} 0x{'ab' * 32} is no longer canonical" in reorged
    assert f"now {snap.block_hash}" in reorged
    (unknown,) = asyncio.run(ask(dead, world))
    assert unknown.startswith(f"chain {world.snapshots[2].name}") and "cannot check" in unknown
