"""The gate's failures found by an attacker (issue: "The margin gate is sound"), each as a
test on a real devnet, and 200 racing authorisations in both directions. Each of these
approved what it must not on the code before the gate's contract."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator.attestation import load_signer_key
from aggregator.authorize import Request, authorize, decide, fresh_state, held_margin
from aggregator.gate_sync import sync_counters
from aggregator.service.launcher import Server
from aggregator.store import Store
from chains.config import load_config, parse_config
from chains.devnet_control import set_feed
from tests.gate_helpers import (
    A,
    B,
    C,
    Chains,
    breaches,
    fresh_accounts,
    fund,
    gate_config,
    live_rows,
    serve,
    wait_epoch,
)


class Net:
    """A devnet of the module's own, a pool of funded fresh accounts, a server over them."""

    def __init__(self, devnet_config: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.pool = fresh_accounts(12, f"gate-regressions-{time.time()}")
        self.cfg = load_config(devnet_config)
        fund(self.cfg, self.pool)
        self.config = gate_config(
            devnet_config, tmp / "gate.toml", self.pool, tmp / "s.sqlite", attestation_ttl_s=120
        )
        self.server = serve(self.config, tmp / "serve.log")
        self.chains = Chains(self.cfg)
        self.taken = 0

    def account(self) -> str:
        self.taken += 1
        return self.pool[self.taken - 1]

    def authorise(self, account: str, size: str, market: str = "ETH", chain: int = B) -> Any:
        body = {"account": account, "chain_id": chain, "market": market, "size_delta": size}
        with self.server.client(headers=self.server.auth) as c:
            r = c.post("/v1/authorizations", json=body)
        assert r.status_code == 200, r.text
        return r.json()


class Quiet:
    """A devnet of its own with no server (in-process stores bump its gates' counters)."""

    def __init__(self, devnet_config: Path) -> None:
        self.pool = fresh_accounts(8, f"gate-quiet-{time.time()}")
        self.cfg = load_config(devnet_config)
        fund(self.cfg, self.pool)
        self.chains = Chains(self.cfg)
        self.taken = 0

    def account(self) -> str:
        self.taken += 1
        return self.pool[self.taken - 1]


@pytest.fixture(scope="module")
def quiet(devnet_factory: Any) -> Quiet:
    return Quiet(devnet_factory(3).config_path)


@pytest.fixture(scope="module")
def net(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    info = devnet_factory(3)
    n = Net(info.config_path, tmp_path_factory.mktemp("gate-regressions"))
    try:
        yield n
    finally:
        n.server.stop()


async def _race(server: Server, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(server.url, headers=server.auth) as s:

        async def one(body: dict[str, Any]) -> dict[str, Any]:
            async with s.post("/v1/authorizations", json=body) as r:
                assert r.status == 200, await r.text()
                return dict(await r.json())

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def _open(net: Net, account: str, size: str) -> None:
    d = net.authorise(account, size)
    assert d["approved"], d["reason"]
    assert net.chains.submit(d) == ""


def test_closes_cannot_be_stacked_past_the_margin(net: Net) -> None:
    """Long L ETH, then ten parallel requests for -1.25 L: each alone lowers IM; together they
    would leave the account short 11.5 L. Executed together, what was approved must fit."""
    account = net.account()
    _open(net, account, "40")
    wait_epoch(net.server)
    body = {"account": account, "chain_id": B, "market": "ETH", "size_delta": "-50"}
    results = asyncio.run(_race(net.server, [body] * 10))
    approved = [d for d in results if d["approved"]]
    assert 1 <= len(approved) < 10, [d["reason"] for d in results]
    for d in approved:
        assert net.chains.submit(d) == ""
    assert breaches(net.cfg, [account]) == []
    # two closes of the whole position: the second would flip it; alone it is refused unless
    # the flip fits, and then both executed must fit too
    size = net.chains.position(B, account, "ETH")
    closes = [net.authorise(account, str(-size)) for _ in range(2)]
    for d in closes:
        if d["approved"]:
            assert net.chains.submit(d) == ""
    assert breaches(net.cfg, [account]) == []


def test_a_fill_is_never_forgotten_for_an_epoch(quiet: Quiet, tmp_path: Path) -> None:
    """The decision reads a pinned state from before a fill that the store has already seen
    (a newer state): the fill is in neither, unless the reservation still counts."""
    cfg, net = quiet.cfg, quiet
    account = net.account()
    key = load_signer_key(cfg.signer)
    store = Store(tmp_path / "s.sqlite")
    try:
        old = fresh_state(cfg, store, key, account)
        probe = decide(cfg, old, Request(account, B, "ETH", Decimal(1)), store, key)
        assert probe["approved"], probe["reason"]
        step = probe["initial_margin_after"] - probe["initial_margin_before"]
        big = Decimal(int(0.7 * (old.figures.free_margin - step) / step))
        first = decide(cfg, old, Request(account, B, "ETH", big), store, key)
        assert first["approved"], first["reason"]
        assert net.chains.submit(first) == ""
        new = fresh_state(cfg, store, key, account)  # sees the fill: the row is filled now
        states = {r.id: r.state for r in store.reservations(account)}
        assert states[first["reservation_id"]] == "filled"
        again_old = decide(cfg, old, Request(account, B, "ETH", big), store, key)
        again_new = decide(cfg, new, Request(account, B, "ETH", big), store, key)
    finally:
        store.close()
    assert not again_old["approved"], "the fill was in neither the old state nor the store"
    assert not again_new["approved"]
    assert "negative" in again_old["reason"] and "negative" in again_new["reason"]


def _blocks_since(w3: Any, seconds: float, after: int) -> int:
    """How many blocks back the last block at least ``seconds`` old is, once that block is
    at or after block ``after`` (waits for it)."""
    while True:
        head = int(w3.eth.block_number)
        for back in range(head - after + 1):
            if int(w3.eth.get_block(head - back)["timestamp"]) <= time.time() - seconds:
                return back
        time.sleep(1.0)


def test_attestations_are_timed_by_the_wall_clock(quiet: Quiet, tmp_path: Path) -> None:
    """Pins 30 blocks (seconds) behind the head, as finalized pins are on a real chain: the
    attestation is still valid for its whole lifetime from now, and executes."""
    net = quiet
    key = load_signer_key(net.cfg.signer)
    store = Store(tmp_path / "s.sqlite")
    bumped = {c.chain_id: c.block for c in sync_counters(net.cfg, store, key)}
    raw = net.cfg.model_dump(mode="json")
    raw["margin"] = dict(raw.get("margin") or {})
    for chain in raw["chains"]:  # pinned 12 s back (the counter bump before the pin)
        w3 = net.chains.w3[chain["chain_id"]]
        chain["confirmations"] = _blocks_since(w3, 12, bumped[chain["chain_id"]])
    raw["margin"]["attestation_ttl_s"] = 10
    cfg = parse_config(raw)
    account = net.account()
    try:
        state = fresh_state(cfg, store, key, account)
        pinned = state.world.snapshot(B).timestamp or 0
        assert pinned < time.time() - 11  # the pin is older than the attestation's life
        d = decide(cfg, state, Request(account, B, "ETH", Decimal("0.1")), store, key)
    finally:
        store.close()
    assert d["approved"], d["reason"]
    message = d["attestation"]["typed_data"]["message"]
    assert message["validUntil"] >= time.time() + 10 - 2
    assert net.chains.submit(d) == ""


def test_a_new_store_never_reuses_a_nonce_and_kills_what_it_cannot_know(
    quiet: Quiet, tmp_path: Path
) -> None:
    cfg, net = quiet.cfg, quiet
    account = net.account()
    key = load_signer_key(cfg.signer)
    made = []
    for name in ("first", "second"):
        store = Store(tmp_path / f"{name}.sqlite")
        try:
            state = fresh_state(cfg, store, key, account)
            for _ in range(2):
                d = decide(cfg, state, Request(account, C, "ETH", Decimal("0.1")), store, key)
                assert d["approved"], d["reason"]
                made.append(d)
        finally:
            store.close()
    nonces = [d["attestation"]["typed_data"]["message"]["nonce"] for d in made]
    assert len(set(nonces)) == 4
    # the first store's attestations died with the new store's counter bump
    assert "old counter" in net.chains.submit(made[0])
    assert net.chains.submit(made[2]) == "" and net.chains.submit(made[3]) == ""


def test_two_hundred_racing_authorisations_in_both_directions(net: Net) -> None:
    account = net.account()
    _open(net, account, "20")
    wait_epoch(net.server)
    rng = random.Random(7)
    sizes = [rng.choice(["-40", "-20", "-10", "-5", "5", "10", "20", "40"]) for _ in range(200)]
    bodies = [
        {"account": account, "chain_id": rng.choice([B, C]), "market": "ETH", "size_delta": s}
        for s in sizes
    ]
    results = asyncio.run(_race(net.server, bodies))
    approved = [d for d in results if d["approved"]]
    assert 0 < len(approved) < 200
    nonces = [d["attestation"]["typed_data"]["message"]["nonce"] for d in approved]
    assert len(set(nonces)) == len(nonces)
    rng.shuffle(approved)
    failed = [why for d in approved if (why := net.chains.submit(d))]
    assert failed == []
    assert breaches(net.cfg, [account]) == []


def test_cutting_risk_is_approved_below_margin_adding_it_is_not(
    quiet: Quiet, tmp_path: Path
) -> None:
    """Under water after a -40 % ETH move: a partial close is approved (reduce-only), more
    risk and a close that flips the position are refused. (It moves the quiet devnet's ETH
    feeds: the tests after it see the moved price.)"""
    cfg, chains = quiet.cfg, quiet.chains
    account = quiet.account()
    key = load_signer_key(cfg.signer)
    store = Store(tmp_path / "s.sqlite")
    try:

        def ask(size: str) -> dict[str, Any]:
            state = fresh_state(cfg, store, key, account)
            return decide(cfg, state, Request(account, B, "ETH", Decimal(size)), store, key)

        state = fresh_state(cfg, store, key, account)
        eth = state.world.prices["ETH"].price
        assert eth is not None
        size = int(0.5 * float(state.figures.equity) / float(eth) * 10)  # ~5x leverage
        opened = ask(str(size))
        assert opened["approved"], opened["reason"]
        assert chains.submit(opened) == ""
        for cid in (A, B, C):
            asyncio.run(set_feed(cfg, cid, "ETH", price=Decimal(str(float(eth) * 0.6))))
        under = fresh_state(cfg, store, key, account)
        assert under.figures.initial_margin > float(under.figures.equity)
        more = ask("1")
        cut = ask(str(-(size // 4)))
        flip = ask(str(-(size + size // 2)))
    finally:
        store.close()
    assert not more["approved"] and "negative" in more["reason"]
    assert cut["approved"] and cut["reduce_only"], cut["reason"]
    assert not flip["approved"]
    assert chains.submit(cut) == ""


def test_an_idempotency_key_returns_the_same_attestation(net: Net) -> None:
    account = net.account()
    body = {"account": account, "chain_id": B, "market": "ETH", "size_delta": "2"}
    headers = {**net.server.auth, "Idempotency-Key": f"order-{time.time_ns()}"}
    with net.server.client(headers=headers) as c:
        first = c.post("/v1/authorizations", json=body)
        again = c.post("/v1/authorizations", json=body)
        other = c.post("/v1/authorizations", json={**body, "size_delta": "3"})
        bad = c.post("/v1/authorizations", json=body, headers={"Idempotency-Key": "two words"})
    assert first.status_code == again.status_code == 200
    assert first.json()["approved"] and first.json() == again.json()
    assert (other.status_code, other.json()["field"]) == (409, "Idempotency-Key")
    assert bad.status_code == 422 and "idempotency" in bad.json()["field"].lower()
    store_rows = [
        r for r in live_rows(Path(str(load_config(net.config).store_path))) if r[0] == account
    ]
    assert len(store_rows) == 1  # one reservation, not two


def test_a_cancelled_attestation_stops_holding_margin(quiet: Quiet, tmp_path: Path) -> None:
    cfg, account = quiet.cfg, quiet.account()
    key = load_signer_key(cfg.signer)
    store = Store(tmp_path / "s.sqlite")
    try:
        state = fresh_state(cfg, store, key, account)
        d = decide(cfg, state, Request(account, C, "ETH", Decimal(20)), store, key)
        assert d["approved"], d["reason"]
        assert held_margin(fresh_state(cfg, store, key, account), store.live(account)) > 0
        assert quiet.chains.cancel(d) == ""
        after = fresh_state(cfg, store, key, account)
        assert [r.state for r in store.reservations(account)] == ["cancelled"]
        assert held_margin(after, store.live(account)) == 0
    finally:
        store.close()
    assert "nonce cancelled" in quiet.chains.submit(d)


def test_a_target_chain_whose_clock_is_off_is_refused_by_name(quiet: Quiet, tmp_path: Path) -> None:
    """(Last: it moves the quiet devnet's chain B clock two minutes ahead.)"""
    cfg, account = quiet.cfg, quiet.account()
    key = load_signer_key(cfg.signer)
    w3 = quiet.chains.w3[B]
    w3.provider.make_request("evm_setNextBlockTimestamp", [int(time.time()) + 120])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    store = Store(tmp_path / "s.sqlite")
    try:
        on_b = authorize(cfg, Request(account, B, "ETH", Decimal(1)), store, key)
        on_c = authorize(cfg, Request(account, C, "ETH", Decimal(1)), store, key)
    finally:
        store.close()
    assert not on_b["approved"] and "devnet-arb (31337002)" in on_b["reason"]
    assert "from the wall clock" in on_b["reason"]
    assert on_c["approved"], on_c["reason"]
