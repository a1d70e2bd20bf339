"""RPC faults, injected for real: anvil nodes killed in the middle of a snapshot, a slow
endpoint behind a loopback proxy, endpoints on different forks. A chain that cannot be read is
``unavailable`` with its reason (never an empty chain), its collateral never counts, and no
authorisation that needs it is approved; a chain whose second endpoint still answers is read
exactly."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chains.config import load_config
from chains.devnet_nodes import free_ports, stop_node
from chains.reader import ChainReader, PinnedBlock
from chains.rpc import CountingProvider
from chains.types import ChainStatus
from tests.faults.helpers import (
    ARB,
    BASE,
    ETH,
    balances,
    block_hash,
    decision,
    edited,
    extra_anvil,
    fast,
    node,
    replica,
    rpc,
    slow_endpoint,
    snapshots,
    world,
)
from tests.gate_helpers import blocks_held
from tests.reliability import ForTest

FAMILY = "RPC"


def _kill_after_pin(victim: Any) -> Callable[..., Awaitable[PinnedBlock]]:
    original = ChainReader.pin

    async def pin(self: ChainReader) -> PinnedBlock:
        pinned = await original(self)
        if self.chain.chain_id == victim.chain_id:
            assert stop_node(victim)
        return pinned

    return pin


def _kill_before_reads(victim: Any) -> Callable[..., Awaitable[Any]]:
    original = ChainReader._read

    async def read(self: ChainReader, pinned: PinnedBlock, accounts: list[str]) -> Any:
        if self.chain.chain_id == victim.chain_id:
            assert stop_node(victim)
        return await original(self, pinned, accounts)

    return read


def _kill_after_first_batch(victim: Any) -> Callable[..., Awaitable[bytes]]:
    original = CountingProvider._make_request
    calls = {"n": 0}

    async def make_request(self: CountingProvider, method: Any, data: bytes) -> bytes:
        answer = await original(self, method, data)
        if f":{victim.port}" in str(self.endpoint_uri) and method == "eth_call":
            calls["n"] += 1
            if calls["n"] == 1:
                assert stop_node(victim)
        return answer

    return make_request


KILLS = {
    "after the pin": ("pin", _kill_after_pin),
    "before the multicall reads": ("_read", _kill_before_reads),
    "after the first multicall batch": ("_make_request", _kill_after_first_batch),
}


@pytest.mark.parametrize("when", list(KILLS))
def test_the_only_endpoint_killed_mid_snapshot(
    devnet_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reliability: ForTest,
    when: str,
) -> None:
    info = devnet_factory(3)
    cfg = fast(edited(load_config(info.config_path), BASE, batch_size=2))
    before = world(cfg)
    assert all(s.ok for s in before.snapshots)
    victim = node(info.directory, BASE)
    attr, hook = KILLS[when]
    owner = CountingProvider if attr == "_make_request" else ChainReader
    monkeypatch.setattr(owner, attr, hook(victim))
    after = world(cfg)
    monkeypatch.undo()
    base = after.snapshot(BASE)
    problems: list[str] = []
    if base.status is not ChainStatus.UNAVAILABLE or bool(base.balances) or not base.errors:
        problems.append(
            "base.status is not ChainStatus.UNAVAILABLE or bool(base.balances) or not base.errors"
        )
    if not any("devnet-base" in r and "unavailable" in r for r in after.reasons):
        problems.append('not any("devnet-base" in r and "unavailable" in r for r in after.reasons)')
    if not (after.snapshot(ETH).ok and after.snapshot(ARB).ok):
        problems.append("not (after.snapshot(ETH).ok and after.snapshot(ARB).ok)")
    # chain 3's collateral is gone from the figures, never added: equity drops, IM is kept
    st_before = decision(cfg, before, tmp_path / "a.sqlite")
    d = decision(cfg, after, tmp_path / "b.sqlite")
    if d["equity"] >= st_before["equity"]:
        problems.append('d["equity"] >= st_before["equity"]')
    if d["approved"] or "attestation" in d or "devnet-base" not in d["reason"]:
        problems.append('d["approved"] or "attestation" in d or "devnet-base" not in d["reason"]')
    reliability.record(
        FAMILY,
        "only endpoint of a chain killed mid-snapshot",
        "SIGTERM to chain 3's only anvil " + ", ".join(KILLS),
        "chain unavailable with the RPC error as reason; its collateral counts zero; "
        "authorisations refused naming the chain",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, (base, after.reasons, d))


def test_a_stopped_chain_is_unavailable_while_the_others_are_read(
    devnet_factory: Any, reliability: ForTest
) -> None:
    info = devnet_factory(3)
    cfg = fast(load_config(info.config_path))
    assert stop_node(node(info.directory, ARB))
    snaps = snapshots(cfg)
    problems: list[str] = []
    if snaps[ARB].status is not ChainStatus.UNAVAILABLE or not snaps[ARB].errors:
        problems.append("snaps[ARB].status is not ChainStatus.UNAVAILABLE or not snaps[ARB].errors")
    if "no endpoint answered" not in snaps[ARB].errors[0]:
        problems.append('"no endpoint answered" not in snaps[ARB].errors[0]')
    if not (snaps[ETH].ok and snaps[BASE].ok):
        problems.append("not (snaps[ETH].ok and snaps[BASE].ok)")
    weth = [b for b in snaps[ETH].balances if b.symbol == "WETH" and b.source.value == "vault"]
    if [b.amount for b in weth] != [12_345678901234567891]:
        problems.append("[b.amount for b in weth] != [12_345678901234567891]")
    reliability.record(
        FAMILY,
        "only endpoint of a chain killed before the snapshot",
        "chain 2's anvil stopped, then a snapshot of all chains",
        "chain 2 unavailable ('no endpoint answered'); chains 1 and 3 read exactly",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, snaps)


@pytest.mark.parametrize("victim_index", [0, 1])
def test_one_of_two_endpoints_killed_mid_snapshot(
    devnet_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    reliability: ForTest,
    victim_index: int,
) -> None:
    """Chain 1 served by its anvil and a fork of it (the same blocks); one is killed after the
    pin: the reads fail over to the other and the snapshot is exactly the unharmed one."""
    info = devnet_factory(3)
    cfg = load_config(info.config_path)
    primary = node(info.directory, ETH)
    with blocks_held(cfg), replica(primary.rpc_url, ETH) as (url, proc):
        # no block mined from here on: the replica's blocks and the expected read are the same
        expected = snapshots(cfg)[ETH]
        two = fast(edited(cfg, ETH, rpc_urls=[primary.rpc_url, url]))

        if victim_index == 0:
            monkeypatch.setattr(ChainReader, "pin", _kill_after_pin(primary))
        else:
            original = ChainReader.pin

            async def pin(self: ChainReader) -> PinnedBlock:
                pinned = await original(self)
                if self.chain.chain_id == ETH:
                    proc.kill()
                    proc.wait(10)
                return pinned

            monkeypatch.setattr(ChainReader, "pin", pin)
        got = snapshots(two)[ETH]
        monkeypatch.undo()
    problems: list[str] = []
    if not got.ok or bool(got.errors):
        problems.append("not got.ok or bool(got.errors)")
    if balances(got) != balances(expected) or got.block_hash != expected.block_hash:
        problems.append(
            "balances(got) != balances(expected) or got.block_hash != expected.block_hash"
        )
    reliability.record(
        FAMILY,
        "one of two endpoints killed mid-snapshot",
        "chain 1 on its anvil plus a replica (anvil_dumpState, anvil_loadState); either "
        "killed after the pin",
        "failover to the live endpoint; snapshot identical to the unharmed one",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, (got, expected))


def test_a_dead_endpoint_is_failed_over(devnet: Any, reliability: ForTest) -> None:
    live = devnet.config.chain(ETH).rpc_urls[0]
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    cfg = edited(devnet.config, ETH, rpc_urls=[dead, live], retries=1, backoff_s=0.01)
    snap = snapshots(cfg)[ETH]
    expected = snapshots(devnet.config)[ETH]
    problems: list[str] = []
    if not snap.ok or bool(snap.errors) or balances(snap) != balances(expected):
        problems.append("not snap.ok or bool(snap.errors) or balances(snap) != balances(expected)")
    reliability.record(
        FAMILY,
        "one of two endpoints killed mid-snapshot",
        "the first endpoint of chain 1 refusing connections",
        "failover to the live endpoint; snapshot identical to the unharmed one",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, snap)


@pytest.mark.parametrize("with_fast", [False, True])
def test_an_endpoint_slower_than_the_timeout(
    devnet: Any, tmp_path: Path, reliability: ForTest, with_fast: bool
) -> None:
    """A real endpoint (loopback HTTP proxy) that answers 3 s late; the chain's timeout is 0.5 s."""
    live = devnet.config.chain(BASE).rpc_urls[0]
    expected = snapshots(devnet.config)[BASE]
    with slow_endpoint(live, 3.0) as slow:
        urls = [slow, live] if with_fast else [slow]
        cfg = edited(devnet.config, BASE, rpc_urls=urls, timeout_s=0.5, retries=1, backoff_s=0.01)
        started = time.monotonic()
        w = world(cfg)
        took = time.monotonic() - started
    snap = w.snapshot(BASE)
    problems: list[str] = []
    if took > 15:
        problems.append("took > 15")
    if with_fast:
        if not snap.ok or balances(snap) != balances(expected):
            problems.append("not snap.ok or balances(snap) != balances(expected)")
    else:
        if snap.ok or bool(snap.balances) or "TimeoutError" not in snap.errors[0]:
            problems.append(
                'snap.ok or bool(snap.balances) or "TimeoutError" not in snap.errors[0]'
            )
        d = decision(cfg, w, tmp_path / "s.sqlite", market="ETH", chain_id=BASE)
        if d["approved"] or "devnet-base" not in d["reason"]:
            problems.append('d["approved"] or "devnet-base" not in d["reason"]')
    reliability.record(
        FAMILY,
        "endpoint slower than the timeout",
        "loopback JSON-RPC proxy answering 3 s late, timeout 0.5 s; alone, and before a fast one",
        "alone: chain unavailable ('no endpoint answered (TimeoutError)'), authorisations on it "
        "refused; with a fast one: failover, exact snapshot; both within the timeouts",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, (took, snap))


@contextmanager
def _other_endpoint(live: str, kind: str) -> Iterator[str]:
    """An endpoint claiming chain 1 whose block at the head's height is another one."""
    height = int(rpc(live, "eth_blockNumber", []), 16)
    if kind == "impostor":  # an anvil with blocks of its own
        with extra_anvil("--chain-id", str(ETH)) as (url, _):
            rpc(url, "anvil_mine", [hex(height)])
            yield url
        return
    with replica(live, ETH) as (url, _):  # the same chain, then one different block each
        # the fork point: the live chain mines a block a second, maybe since the read above
        height = int(rpc(url, "eth_blockNumber", []), 16)
        rpc(live, "anvil_mine", ["0x1"])
        rpc(url, "evm_setNextBlockTimestamp", [int(time.time()) + 1000])
        rpc(url, "anvil_mine", ["0x1"])
        assert block_hash(url, height + 1) != block_hash(live, height + 1)
        yield url


@pytest.mark.parametrize("kind", ["impostor", "replica that diverged"])
def test_endpoints_that_disagree_on_the_pinned_block_refuse_the_chain(
    devnet_factory: Any, tmp_path: Path, reliability: ForTest, kind: str
) -> None:
    cfg = load_config(devnet_factory(3).config_path)
    live = cfg.chain(ETH).rpc_urls[0]
    with _other_endpoint(live, kind) as url:
        two = edited(cfg, ETH, rpc_urls=[live, url])
        w = world(two)
    snap = w.snapshot(ETH)
    problems: list[str] = []
    if snap.ok or snap.balances or "disagree" not in snap.errors[0]:
        problems.append(f"chain 1 read: {snap.status} {snap.errors}")
    d = decision(two, w, tmp_path / "s.sqlite", market="ETH", chain_id=ARB)
    if d["approved"] or "endpoints disagree" not in d["reason"]:
        problems.append(f"decision: {d['approved']} {d['reason']}")
    reliability.record(
        FAMILY,
        "two endpoints disagree on the pinned block",
        "chain 1's second endpoint: an anvil with blocks of its own, or a replica that mined "
        "another block at the same height",
        "chain unavailable ('endpoints disagree on block N (hash vs hash at url)'); "
        "authorisations refused",
        1,
        int(bool(problems)),
    )
    assert not problems, problems


def test_an_endpoint_of_another_chain_is_refused(devnet: Any, reliability: ForTest) -> None:
    other = devnet.config.chain(ARB).rpc_urls[0]
    snap = snapshots(edited(devnet.config, ETH, rpc_urls=[other]))[ETH]
    problems: list[str] = []
    if snap.ok or "serves chain id 31337002" not in snap.errors[0]:
        problems.append('snap.ok or "serves chain id 31337002" not in snap.errors[0]')
    reliability.record(
        FAMILY,
        "two endpoints disagree on the pinned block",
        "chain 1's endpoint pointing at chain 2",
        "chain unavailable ('url serves chain id X, the config says Y')",
        1,
        int(bool(problems)),
    )
    assert not problems, (problems, snap)
