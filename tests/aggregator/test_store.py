"""The reservation store on real SQLite files: the decision sees every live reservation inside
its transaction, random nonces never repeat across threads, processes and new stores, final
states are kept, idempotency keys replay, and what was acknowledged survives kill -9."""

from __future__ import annotations

import multiprocessing
import re
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from multiprocessing.queues import Queue
from pathlib import Path

import pytest

from aggregator.store import (
    GateCounter,
    IdempotentReplay,
    NewReservation,
    Reservation,
    Store,
    StoreError,
)

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
NOW = 1_700_000_000
CHAIN = 31337
COUNTER = 7  # the store's global counter on CHAIN
FULL = COUNTER << 128  # counter_of(account) for an account that never bumped its own
LIMIT = 5  # a toy limit: at most five live reservations per account


def _new(size: str = "10", until: int = NOW + 60) -> NewReservation:
    return NewReservation("position", CHAIN, "ETH", size, NOW, until, FULL)


def _fits(rows: list[Reservation]) -> Decimal | None:
    return Decimal(100) if len(rows) < LIMIT else None


def _authorize(store: Store, account: str = ALICE, until: int = NOW + 60) -> Reservation | None:
    return store.authorize(account, _new(until=until), _fits)


def _open(path: Path) -> Store:
    store = Store(path)
    store.set_counter(GateCounter(CHAIN, "0x" + "11" * 20, COUNTER, 100))
    return store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return _open(tmp_path / "state" / "store.db")


def test_decide_sees_the_live_rows_of_its_account_only(store: Store) -> None:
    seen: list[list[int]] = []

    def decide(rows: list[Reservation]) -> Decimal | None:
        seen.append([r.id for r in rows])
        return Decimal("1.5")

    first = store.authorize(ALICE, _new("5"), decide)
    second = store.authorize(ALICE, _new("-5"), decide)
    other = store.authorize(BOB, _new("1"), decide)
    assert first is not None and second is not None and other is not None
    assert seen == [[], [first.id], []]
    assert (second.size_delta, second.amount_usd, second.counter) == ("-5", Decimal("1.5"), FULL)
    assert first.nonce != second.nonce and first.nonce.bit_length() > 200  # random 256-bit
    assert [r.id for r in store.live(ALICE)] == [first.id, second.id]
    assert store.authorize(ALICE, _new(), lambda rows: None) is None  # a refusal stores nothing
    assert len(store.reservations(ALICE)) == 2


def test_an_approval_needs_the_counter_the_store_issues_under(tmp_path: Path) -> None:
    fresh = Store(tmp_path / "new.db")
    with pytest.raises(StoreError, match="counter"):
        fresh.authorize(ALICE, _new(), _fits)  # a new store has none: it must sync first
    fresh.set_counter(GateCounter(CHAIN, "0x" + "11" * 20, COUNTER + 1, 120))
    with pytest.raises(StoreError, match="counter"):
        fresh.authorize(ALICE, _new(), _fits)  # issued under an older counter
    assert fresh.counters()[CHAIN].block == 120
    fresh.close()


def test_twenty_threads_approve_exactly_what_fits(store: Store) -> None:
    barrier = threading.Barrier(20)
    results: list[Reservation | None] = []

    def slow_fits(rows: list[Reservation]) -> Decimal | None:
        time.sleep(0.005)  # let the other threads run while this one decides
        return _fits(rows)

    def attempt() -> None:
        barrier.wait()
        results.append(store.authorize(ALICE, _new(), slow_fits))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    approved = [r for r in results if r is not None]
    assert len(results) == 20 and len(approved) == LIMIT
    assert len({r.nonce for r in approved}) == LIMIT
    assert len(store.live(ALICE)) == LIMIT


def _process_attempts(path: Path, start: threading.Event, out: Queue[list[int]]) -> None:
    start.wait()
    with Store(path) as store:
        out.put([r.nonce for _ in range(10) if (r := _authorize(store)) is not None])


def test_four_processes_share_the_limit_and_the_nonces(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _open(path).close()
    context = multiprocessing.get_context("fork")
    start = context.Event()
    out: Queue[list[int]] = context.Queue()
    workers = [context.Process(target=_process_attempts, args=(path, start, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    nonces = [n for _ in workers for n in out.get(timeout=30)]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert len(nonces) == LIMIT and len(set(nonces)) == LIMIT
    with Store(path) as store:
        assert store.used_nonces(ALICE) == set(nonces)


def test_final_states_stay_and_only_live_rows_are_loaded(store: Store) -> None:
    rows = [_authorize(store) for _ in range(4)]
    assert all(r is not None for r in rows)
    a, b, c, d = (r.id for r in rows if r is not None)
    assert store.mark([(a, "filled", 10), (b, "cancelled", 11), (c, "expired", 12)]) == 3
    assert store.mark([(a, "expired", 13)]) == 0  # a row seen filled stays filled
    states = {r.id: (r.state, r.seen_block) for r in store.reservations(ALICE)}
    assert states == {
        a: ("filled", 10),
        b: ("cancelled", 11),
        c: ("expired", 12),
        d: ("active", None),
    }
    assert [r.id for r in store.live(ALICE)] == [a, d]  # filled rows may matter to old states
    assert [r.id for r in store.live(ALICE, since=NOW + 61)] == [d]  # ... until past validity
    assert [r.id for r in store.active()] == [d]
    with pytest.raises(StoreError, match="cannot mark"):
        store.mark([(d, "active", 1)])
    store.release(d)
    assert store.live(ALICE, since=NOW + 61) == []


def test_an_idempotency_key_replays_within_its_lifetime(store: Store) -> None:
    first = store.authorize(
        ALICE, _new(), _fits, idempotency=("k1", "hash-a"), respond=lambda r: f'{{"id": {r.id}}}'
    )
    assert first is not None
    with pytest.raises(IdempotentReplay) as replay:
        store.authorize(ALICE, _new(), _fits, idempotency=("k1", "hash-b"))
    assert (replay.value.body_hash, replay.value.response) == ("hash-a", f'{{"id": {first.id}}}')
    assert len(store.reservations(ALICE)) == 1
    # past the attestation's lifetime the key is free again
    later = NewReservation("position", CHAIN, "ETH", "1", NOW + 61, NOW + 120, FULL)
    assert store.authorize(ALICE, later, _fits, idempotency=("k1", "hash-b")) is not None
    assert store.remembered("k1", NOW + 61) == ("hash-b", "")


def test_a_restart_keeps_reservations_and_a_new_store_never_reuses_a_nonce(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    with _open(path) as store:
        first = [_authorize(store) for _ in range(3)]
    with Store(path) as store:
        assert [r.id for r in store.live(ALICE)] == [r.id for r in first if r is not None]
        assert store.counters()[CHAIN].counter == COUNTER
    with _open(tmp_path / "other.db") as other:
        again = [_authorize(other) for _ in range(3)]
    old = {r.nonce for r in first if r is not None}
    assert not old & {r.nonce for r in again if r is not None}


_CHILD = """
import sys
from decimal import Decimal
from pathlib import Path
from aggregator.store import GateCounter, NewReservation, Store

store = Store(Path(sys.argv[1]))
store.set_counter(GateCounter(1, "0x" + "11" * 20, 0, 0))
new = NewReservation("position", 1, "ETH", "1", 0, 10, 0)
while True:
    r = store.authorize(sys.argv[2], new, lambda rows: Decimal(1))
    print(r.nonce, flush=True)
"""


def test_every_acknowledged_nonce_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), ALICE], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = [int(child.stdout.readline()) for _ in range(30)]
    child.send_signal(signal.SIGKILL)
    acknowledged += [int(line) for line in child.stdout.read().split()]
    assert child.wait(timeout=10) == -signal.SIGKILL
    with Store(path) as store:
        stored = {r.nonce for r in store.reservations(ALICE) if r.state == "active"}
    assert set(acknowledged) <= stored
    assert len(set(acknowledged)) == len(acknowledged)


def test_unknown_reservation_and_closed_store(store: Store) -> None:
    with pytest.raises(StoreError, match="no reservation with id 7"):
        store.release(7)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.live(ALICE)


def test_an_old_schema_is_refused_with_its_path(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 1")
    db.close()
    with pytest.raises(StoreError, match=r"schema version 1, expected 2"):
        Store(path)


def test_a_corrupt_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        Store(path)


def test_an_unwritable_path_names_itself(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path, tmp_path / "file" / "store.db"):
        with pytest.raises(StoreError, match=re.escape(str(path))):
            Store(path)
