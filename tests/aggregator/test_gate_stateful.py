"""The gate's contract as a property (README, "The gate's contract"): random sequences of
authorisations, executions in random order, expiries, cancellations, epochs and restarts of
the real server (same store, new store) over a real devnet, with the feeds held still. After
every step: what was executed keeps IM <= equity on a fresh read; no attestation is born
expired; no nonce is issued twice; no reservation outlives its attestation."""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aggregator.service.launcher import Server
from chains.config import load_config
from tests.gate_helpers import (
    ALLOWANCE_S,
    TTL_S,
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

EXAMPLES = int(os.environ.get("GATE_EXAMPLES", "8"))
STEPS = int(os.environ.get("GATE_STEPS", "12"))
# each account holds 20,000 USDC: about 69 ETH long fits alone, two of the larger sizes do not
SIZES = {
    "ETH": ["-40", "-25", "25", "40"],
    "BTC": ["-1", "1"],
}


class World:
    """What the machine shares across examples: one devnet, one server, a pool of accounts."""

    def __init__(self, devnet_config: Path, tmp: Path, counts: dict[str, int]) -> None:
        self.tmp, self.counts = tmp, counts
        self.pool = fresh_accounts(2 * (3 * EXAMPLES + 10), f"gate-stateful-{time.time()}")
        self.cfg = load_config(devnet_config)
        fund(self.cfg, self.pool)
        self.devnet_config = devnet_config
        self.stores = itertools.count()
        self.config = self._config()
        self.server: Server | None = serve(self.config, tmp / "serve.log")
        self.chains = Chains(self.cfg)
        self.next_account = 0

    def _config(self) -> Path:
        n = next(self.stores)
        return gate_config(
            self.devnet_config, self.tmp / f"gate-{n}.toml", self.pool, self.tmp / f"s{n}.sqlite"
        )

    @property
    def store(self) -> Path:
        return Path(load_config(self.config).store_path or "")

    def restart(self, new_store: bool) -> None:
        assert self.server is not None
        self.server.stop()
        if new_store:
            self.config = self._config()
        self.server = serve(self.config, self.tmp / f"serve-{time.monotonic_ns()}.log")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


class GateMachine(RuleBasedStateMachine):
    shared: World

    def __init__(self) -> None:
        super().__init__()
        self.approved: list[dict[str, Any]] = []  # not yet submitted
        self.nonces: set[int] = set()
        self.asked: list[tuple[int, int, str, str]] = []
        self.restarts = 0

    @initialize()
    def two_fresh_accounts(self) -> None:
        w = self.shared
        # fresh accounts for each example (shrinking replays examples: wrap around the pool)
        start = w.next_account % (len(w.pool) - 1)
        self.accounts = w.pool[start : start + 2]
        w.next_account += 2
        w.counts["examples"] += 1
        self._ask(0, B, "ETH", "30")  # every example starts with a position asked for

    @rule(
        who=st.integers(0, 1),
        chain=st.sampled_from([B, C]),
        order=st.sampled_from([(m, s) for m, sizes in SIZES.items() for s in sizes]),
    )
    def authorise(self, who: int, chain: int, order: tuple[str, str]) -> None:
        self._ask(who, chain, *order)

    @precondition(lambda self: bool(self.asked))
    @rule(data=st.data())
    def ask_again(self, data: st.DataObject) -> None:
        """The same request again (the attacker's way to stack approvals)."""
        self._ask(*data.draw(st.sampled_from(self.asked)))

    def _ask(self, who: int, chain: int, market: str, size: str, copies: int = 1) -> None:
        """``copies`` identical requests at once (racing each other on the server)."""
        self.asked.append((who, chain, market, size))
        w = self.shared
        assert w.server is not None
        body = {"account": self.accounts[who], "chain_id": chain, "market": market}

        def one(_: int) -> dict[str, Any]:
            assert w.server is not None
            with w.server.client(headers=w.server.auth) as c:
                r = c.post("/v1/authorizations", json={**body, "size_delta": size})
            assert r.status_code == 200, r.text
            return dict(r.json())

        with ThreadPoolExecutor(copies) as pool:
            answers = list(pool.map(one, range(copies)))
        for d in answers:
            w.counts["requests"] += 1
            if not d["approved"]:
                continue
            w.counts["approved"] += 1
            message = d["attestation"]["typed_data"]["message"]
            now = time.time()
            assert message["validUntil"] > now, f"born expired: {message['validUntil']} <= {now}"
            assert message["validUntil"] <= now + TTL_S + 1
            assert message["nonce"] not in self.nonces, "nonce issued twice"
            self.nonces.add(message["nonce"])
            self.approved.append(d)

    @precondition(lambda self: bool(self.asked))
    @rule(data=st.data(), copies=st.integers(2, 6))
    def race(self, data: st.DataObject, copies: int) -> None:
        """A request asked before, several times at once."""
        self._ask(*data.draw(st.sampled_from(self.asked)), copies=copies)

    @precondition(lambda self: bool(self.approved))
    @rule(data=st.data(), everything=st.booleans())
    def execute(self, data: st.DataObject, everything: bool) -> None:
        """Every approved attestation, or a random subset, in random order."""
        picked = data.draw(st.permutations(self.approved))
        if not everything:
            picked = picked[: data.draw(st.integers(1, len(picked)))]
        for d in picked:
            self.approved.remove(d)
            self.shared.counts["executed" if not self.shared.chains.submit(d) else "reverted"] += 1

    @precondition(lambda self: len(self.approved) >= 2)
    @rule(data=st.data())
    def cancel_one(self, data: st.DataObject) -> None:
        d = data.draw(st.sampled_from(self.approved))
        self.shared.chains.cancel(d)
        self.shared.counts["cancelled"] += 1  # may still be submitted: it must revert

    @precondition(lambda self: bool(self.approved))
    @rule()
    def let_the_oldest_expire(self) -> None:
        until = min(d["attestation"]["typed_data"]["message"]["validUntil"] for d in self.approved)
        time.sleep(max(until + 1 - time.time(), 0))
        self.shared.counts["expired"] += 1

    @rule()
    def an_epoch(self) -> None:
        assert self.shared.server is not None
        wait_epoch(self.shared.server)

    @precondition(lambda self: self.restarts < 1)
    @rule(new_store=st.booleans())
    def restart(self, new_store: bool) -> None:
        self.restarts += 1
        self.shared.restart(new_store)
        self.shared.counts["restarts_new_store" if new_store else "restarts_same_store"] += 1

    @invariant()
    def executed_positions_keep_im_within_equity(self) -> None:
        if hasattr(self, "accounts"):
            assert not breaches(self.shared.cfg, self.accounts)

    @invariant()
    def no_reservation_outlives_its_attestation(self) -> None:
        # an epoch marks it within a couple of seconds of validUntil + the clock allowance
        late = [r for r in live_rows(self.shared.store) if r[1] + ALLOWANCE_S + 15 < time.time()]
        assert not late, late


@pytest.fixture(scope="module")
def gate_world(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    counts: dict[str, int] = dict.fromkeys(
        ("examples", "requests", "approved", "executed", "reverted", "cancelled", "expired",
         "restarts_same_store", "restarts_new_store"),
        0,
    )  # fmt: skip
    info = devnet_factory(3)
    world = World(info.config_path, tmp_path_factory.mktemp("gate"), counts)
    try:
        yield world
    finally:
        world.close()


def test_the_gate_holds_under_random_sequences(gate_world: World, reliability: Any) -> None:
    GateMachine.shared = gate_world
    run = GateMachine.TestCase
    run.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    run().runTest()
    counts = gate_world.counts
    reliability.record(
        "Gate",
        f"random sequences of {STEPS} steps, {EXAMPLES} examples: authorisations, executions, "
        "expiries, cancels, epochs, restarts",
        f"{counts['examples']} examples of up to {STEPS} steps on a devnet and a real server: "
        f"{counts['requests']} requests, {counts['approved']} approved, {counts['executed']} "
        f"executed in random order, {counts['reverted']} refused on chain, "
        f"{counts['cancelled']} cancelled, {counts['restarts_same_store']} restarts on the same "
        f"store, {counts['restarts_new_store']} on a new one",
        "after every step: executed positions keep IM <= equity on a fresh read, no attestation "
        "born expired, no nonce issued twice, no reservation outlives its attestation",
        counts["requests"],
        0,
    )
    assert counts["approved"] > 0 and counts["executed"] > 0
