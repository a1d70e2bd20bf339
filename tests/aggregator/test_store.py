"""The reservation store on real SQLite files: margin held until filled or expired, nonces
never issued twice across threads and processes, and what was acknowledged survives kill -9."""

from __future__ import annotations

import multiprocessing
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from decimal import Decimal
from multiprocessing.queues import Queue
from pathlib import Path

import pytest

from aggregator.errors import InputError
from aggregator.store import Reservation, Store, StoreError

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
NOW = 1_700_000_000
FREE = Decimal("500")  # free margin covering five authorisations of AMOUNT
AMOUNT = Decimal("100")


def _fits(reserved: Decimal) -> bool:
    return FREE - reserved - AMOUNT >= 0


def _authorize(store: Store, account: str = ALICE, until: int = NOW + 60) -> Reservation | None:
    return store.authorize(account, 31337, "ETH-PERP", "10", AMOUNT, NOW, until, _fits)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "store.db")


def test_decide_sees_the_reserved_sum_and_refuses_what_fits_only_alone(store: Store) -> None:
    seen: list[Decimal] = []

    def decide(reserved: Decimal) -> bool:
        seen.append(reserved)
        return Decimal("150") - reserved - Decimal("100") >= 0

    first = store.authorize(ALICE, 1, "ETH-PERP", "5", Decimal("100"), NOW, NOW + 60, decide)
    second = store.authorize(ALICE, 10, "BTC-PERP", "-5", Decimal("100"), NOW, NOW + 60, decide)
    assert first is not None and second is None
    assert seen == [Decimal(0), Decimal("100")]
    assert first.nonce == 1 and first.state == "active" and first.amount_usd == Decimal("100")
    assert store.reserved(ALICE, NOW) == Decimal("100")
    assert store.reserved(BOB, NOW) == Decimal(0)


def test_amounts_are_exact_and_accounts_checksummed(store: Store) -> None:
    for _ in range(3):
        store.authorize(
            ALICE.lower(), 1, "ETH-PERP", "1", Decimal("0.1"), NOW, NOW + 60, lambda r: True
        )
    assert store.reserved(ALICE, NOW) == Decimal("0.3")
    assert {r.account for r in store.reservations()} == {ALICE}
    assert store.used_nonces(ALICE.upper().replace("0X", "0x")) == {1, 2, 3}


def test_bad_input_is_refused(store: Store) -> None:
    with pytest.raises(InputError, match="account"):
        store.authorize("alice", 1, "m", "1", AMOUNT, NOW, NOW + 1, _fits)
    with pytest.raises(InputError, match="amount_usd"):
        store.authorize(ALICE, 1, "m", "1", Decimal("-1"), NOW, NOW + 1, _fits)
    with pytest.raises(InputError, match="valid_until"):
        store.authorize(ALICE, 1, "m", "1", AMOUNT, NOW, NOW - 1, _fits)
    assert store.reservations() == []


def test_twenty_threads_approve_exactly_what_fits(store: Store) -> None:
    barrier = threading.Barrier(20)
    results: list[Reservation | None] = []

    def slow_fits(reserved: Decimal) -> bool:
        time.sleep(0.005)  # let the other threads run while this one decides
        return _fits(reserved)

    def attempt() -> None:
        barrier.wait()
        results.append(store.authorize(ALICE, 1, "ETH-PERP", "1", AMOUNT, NOW, NOW + 60, slow_fits))

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    approved = [r for r in results if r is not None]
    assert len(results) == 20 and len(approved) == 5
    assert sorted(r.nonce for r in approved) == [1, 2, 3, 4, 5]
    assert store.reserved(ALICE, NOW) == FREE


def _process_attempts(path: Path, start: threading.Event, out: Queue[list[int]]) -> None:
    start.wait()
    with Store(path) as store:
        out.put([r.nonce for _ in range(10) if (r := _authorize(store)) is not None])


def test_four_processes_share_the_limit_and_the_nonces(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store(path).close()
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
    assert len(nonces) == 5 and len(set(nonces)) == 5
    with Store(path) as store:
        assert sorted(store.used_nonces(ALICE)) == sorted(nonces)
        assert store.reserved(ALICE, NOW) == FREE


def test_a_restart_keeps_reservations_and_continues_the_nonces(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        first = [_authorize(store) for _ in range(3)]
        store.mark_filled(ALICE, [1, 2, 3])
    with Store(path) as store:
        assert store.reservations(ALICE) == [
            replace(r, state="filled") for r in first if r is not None
        ]
        later = _authorize(store)
        assert later is not None and later.nonce == 4
        assert store.used_nonces(ALICE) == {1, 2, 3, 4}


_CHILD = """
import sys
from decimal import Decimal
from pathlib import Path
from aggregator.store import Store

store = Store(Path(sys.argv[1]))
while True:
    r = store.authorize(sys.argv[2], 1, "ETH-PERP", "1", Decimal("1"), 0, 10, lambda s: True)
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
    assert acknowledged == list(range(1, len(acknowledged) + 1))


def test_expired_and_filled_reservations_stop_holding_margin(store: Store) -> None:
    short = _authorize(store, until=NOW + 10)
    long = _authorize(store, until=NOW + 100)
    assert short is not None and long is not None
    assert store.reserved(ALICE, NOW + 10) == 2 * AMOUNT
    assert store.reserved(ALICE, NOW + 11) == AMOUNT
    later = store.authorize(ALICE, 1, "m", "1", AMOUNT, NOW + 11, NOW + 60, _fits)
    assert later is not None
    states = {r.nonce: r.state for r in store.reservations(ALICE)}
    assert states == {1: "expired", 2: "active", 3: "active"}
    assert store.mark_filled(ALICE, [2, 2, 99]) == 1
    assert store.reserved(ALICE, NOW + 11) == AMOUNT
    store.release(later.id)
    assert store.reserved(ALICE, NOW + 11) == Decimal(0)
    assert store.used_nonces(ALICE) == {1, 2, 3}


def test_unknown_reservation_and_closed_store(store: Store) -> None:
    with pytest.raises(StoreError, match="no reservation with id 7"):
        store.release(7)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.reserved(ALICE, NOW)


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
