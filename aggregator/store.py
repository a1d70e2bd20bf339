"""Durable reservations, attestation nonces, gate counters and idempotency keys in SQLite.

Every approved attestation is a reservation: it stays outstanding, and the gate's invariant
counts it (aggregator/gate.py), until a pinned state shows it executed, cancelled, superseded
by the gate's counter, or past its ``validUntil`` (docs/ARCHITECTURE.md, "The gate's
contract"). Nonces are random 256-bit numbers, so no store, new or restored, reuses one; the
counter the store issues under is the gate's, bumped when the store is new or behind the chain.
Every approval is one ``BEGIN IMMEDIATE`` transaction, which serialises writers across threads
and processes; the commit is durable (WAL journal, ``synchronous=FULL``) before
:meth:`Store.authorize` returns, so whatever a client was told survives a ``kill -9``.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from aggregator.errors import AggregatorError, InputError
from aggregator.inputs import account as checked_account

ACTIVE: Final = "active"  # outstanding: signed, not yet seen executed or dead
FILLED: Final = "filled"  # seen executed at ``seen_block`` of its chain
CANCELLED: Final = "cancelled"  # seen cancelled by the account, or its counter superseded
EXPIRED: Final = "expired"  # seen unused at a pinned block past its validUntil
RELEASED: Final = "released"  # given up before anyone was told (never signed out)
STATES: Final = (ACTIVE, FILLED, CANCELLED, EXPIRED, RELEASED)
LIVE: Final = (ACTIVE, FILLED)  # rows a decision on an older pinned state may still need

SCHEMA_VERSION: Final = 2
BUSY_TIMEOUT_S: Final = 10.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    chain_id    INTEGER NOT NULL,
    market      TEXT    NOT NULL,
    size_delta  TEXT    NOT NULL,
    amount_usd  TEXT    NOT NULL,
    nonce       TEXT    NOT NULL,
    counter     TEXT    NOT NULL,
    issued_at   INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN {STATES!r}),
    seen_block  INTEGER,
    UNIQUE (account, nonce)
);
CREATE INDEX IF NOT EXISTS reservations_live ON reservations (account, state);
CREATE INDEX IF NOT EXISTS reservations_state ON reservations (state);
CREATE TABLE IF NOT EXISTS counters (
    chain_id INTEGER PRIMARY KEY,
    gate     TEXT    NOT NULL,
    counter  TEXT    NOT NULL,
    block    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bad_debts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    account      TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    shortfall    TEXT    NOT NULL,
    covered      TEXT    NOT NULL,
    uncovered    TEXT    NOT NULL,
    snapshot     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT    PRIMARY KEY,
    body_hash  TEXT    NOT NULL,
    response   TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
"""
_COLUMNS = (
    "id, account, kind, chain_id, market, size_delta, amount_usd, nonce, counter, issued_at,"
    " valid_until, state, seen_block"
)

Row = tuple[int, str, str, int, str, str, str, str, str, int, int, str, int | None]


def _insert(
    db: sqlite3.Connection,
    account: str,
    new: NewReservation,
    amount: Decimal,
    nonce: int | None = None,
) -> Reservation:
    """Insert one active reservation (a random 256-bit nonce unless given) and return it."""
    drawn = nonce if nonce is not None else secrets.randbits(256)
    cursor = db.execute(
        f"INSERT INTO reservations ({_COLUMNS.split(', ', 1)[1]}) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', NULL)",
        (
            account,
            new.kind,
            new.chain_id,
            new.market,
            new.size_delta,
            str(amount),
            str(drawn),
            str(new.counter),
            new.issued_at,
            new.valid_until,
        ),
    )
    assert cursor.lastrowid is not None
    return Reservation(
        cursor.lastrowid,
        account,
        new.kind,
        new.chain_id,
        new.market,
        new.size_delta,
        amount,
        drawn,
        new.counter,
        new.issued_at,
        new.valid_until,
        ACTIVE,
    )


class IdempotentReplay(AggregatorError):
    """An idempotency key already used within its lifetime: the body hash it was used with and
    the response then given."""

    def __init__(self, key: str, body_hash: str, response: str) -> None:
        super().__init__(f"idempotency key {key!r} already used")
        self.key, self.body_hash, self.response = key, body_hash, response


class StoreError(AggregatorError):
    """The store cannot be opened, read or written; names the database file."""


@dataclass(frozen=True)
class Reservation:
    """One approved attestation and what has been seen of it.

    ``kind`` is what it authorises (``position``); ``size_delta`` the attested change as a
    decimal string on ``market`` of chain ``chain_id``; ``amount_usd`` the margin the worst case
    grew by when it was approved (informative: decisions recompute the worst case); ``nonce``
    its random 256-bit nonce and ``counter`` the gate counter it carries; ``issued_at`` and
    ``valid_until`` unix seconds (wall clock); ``state`` one of :data:`STATES`, and
    ``seen_block`` the block of ``chain_id`` at which a final state was seen.
    """

    id: int
    account: str
    kind: str
    chain_id: int
    market: str
    size_delta: str
    amount_usd: Decimal
    nonce: int
    counter: int
    issued_at: int
    valid_until: int
    state: str
    seen_block: int | None = None

    @classmethod
    def from_row(cls, row: Row) -> Reservation:
        """Build from a ``reservations`` row in the order of ``_COLUMNS``."""
        rid, account, kind, chain, market, size, amount, nonce, counter = row[:9]
        issued, until, state, seen = row[9], row[10], row[11], row[12]
        return cls(
            rid,
            account,
            kind,
            chain,
            market,
            size,
            Decimal(amount),
            int(nonce),
            int(counter),
            issued,
            until,
            state,
            seen,
        )


@dataclass(frozen=True)
class NewReservation:
    """What :meth:`Store.authorize` stores when the decision approves."""

    kind: str
    chain_id: int
    market: str
    size_delta: str
    issued_at: int
    valid_until: int
    counter: int  # the gate's counter_of(account) the attestation carries


@dataclass(frozen=True)
class GateCounter:
    """The counter the store issues attestations under on one chain's gate, set at ``block``."""

    chain_id: int
    gate: str
    counter: int
    block: int


def checksum_account(account: str) -> str:
    """The EIP-55 form of ``account``; raises `InputError` if it is not an address or its
    mixed case fails the checksum."""
    return checked_account(account)


def _check_decimal(field: str, value: str | Decimal) -> Decimal:
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InputError(field, f"not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise InputError(field, f"must be finite, got {value!r}")
    return number


class Store:
    """Reservations and used nonces in the SQLite file ``path``.

    Safe to share between threads (one connection per thread) and to open from several
    processes on the same file; open it in the process that uses it, not before a fork.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._write_lock = threading.Lock()  # one writer per process; BEGIN IMMEDIATE across
        self._registry_lock = threading.Lock()  # guards _connections
        self._pid = os.getpid()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot create its directory: {exc}") from exc
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"store {self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                    " (a store of an older omnimargin: move it away; the engine bumps the gate"
                    " counters when it starts on a new store)"
                )
            _create_schema(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_bad_debt(
        self, account: str, shortfall: Decimal, covered: Decimal, snapshot: str, at: int
    ) -> int:
        """Record durably that ``account``'s liquidation left ``shortfall`` USD below zero, of
        which the insurance fund's plan covers ``covered``; returns the record's id."""
        account = checksum_account(account)
        uncovered = max(shortfall - covered, Decimal(0))
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO bad_debts (account, recorded_at, shortfall, covered, uncovered,"
                " snapshot) VALUES (?, ?, ?, ?, ?, ?)",
                (account, at, str(shortfall), str(covered), str(uncovered), snapshot),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def bad_debts(self) -> list[dict[str, object]]:
        """Every bad-debt record, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, account, recorded_at, shortfall, covered, uncovered, snapshot"
                " FROM bad_debts ORDER BY id"
            ).fetchall()
        keys = ("id", "account", "recorded_at", "shortfall_usd", "covered_usd", "uncovered_usd")
        return [{**dict(zip(keys, r[:6], strict=True)), "snapshot_hash": r[6]} for r in rows]

    def last_filled(self, kinds: tuple[str, ...], since: int = 0) -> dict[str, int]:
        """Per account, when (issued_at) its latest executed row of one of ``kinds`` issued at
        or after ``since`` was signed (one query for every account)."""
        marks = ",".join("?" * len(kinds))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT account, MAX(issued_at) FROM reservations WHERE state = 'filled'"
                f" AND kind IN ({marks}) AND issued_at >= ? GROUP BY account",
                (*kinds, since),
            ).fetchall()
        return {str(a): int(t) for a, t in rows}

    def reserve(
        self,
        groups: list[tuple[str, list[tuple[str, NewReservation]]]],
        exclusive: tuple[str, ...] = (),
    ) -> list[list[Reservation] | None]:
        """Store groups of ``(account, new)`` in one transaction, with no decision (a
        liquidation plan's steps: the plan is the decision), each with a random nonce. A group
        whose first element, an account, already has an active row of a kind in ``exclusive``
        is skipped (None): two plans for one account never both stand."""
        checked = [
            (checksum_account(owner), [(checksum_account(a), new) for a, new in items])
            for owner, items in groups
        ]
        for _, items in checked:
            for _, new in items:
                _check_decimal("size_delta", new.size_delta)
        out: list[list[Reservation] | None] = []
        with self._transaction() as db:
            for owner, items in checked:
                for _, new in items:
                    counter = _counter(db, new.chain_id)
                    if counter is None or new.counter >> 128 != counter.counter:
                        raise StoreError(
                            f"store {self.path}: chain {new.chain_id}: the step's counter is "
                            "not the one the store issues under (the gate counters were resynced)"
                        )
                marks = ",".join("?" * len(exclusive))
                if (
                    exclusive
                    and db.execute(
                        f"SELECT 1 FROM reservations WHERE account = ? AND state = 'active'"
                        f" AND kind IN ({marks}) LIMIT 1",
                        (owner, *exclusive),
                    ).fetchone()
                ):
                    out.append(None)
                    continue
                out.append([_insert(db, a, new, Decimal(0)) for a, new in items])
        return out

    def authorize(
        self,
        account: str,
        new: NewReservation,
        decide: Callable[[list[Reservation]], Decimal | None],
        nonce: int | None = None,
        idempotency: tuple[str, str] | None = None,
        since: int = 0,
        respond: Callable[[Reservation], str] | None = None,
    ) -> Reservation | None:
        """Store ``new`` for ``account`` if ``decide`` approves, in one transaction.

        ``decide`` gets the account's live reservations (``active`` and ``filled``: the decision
        keeps those its pinned state has not seen executed; filled rows valid until before
        ``since``, the oldest pinned block time of the decision, cannot matter) and returns
        the margin the new one holds, or None to refuse. It runs inside the write lock: keep it
        quick and do not call the store from it. On approval a random 256-bit nonce (or
        ``nonce``) is drawn and the row stored durably. ``idempotency`` =
        (key, body hash) is claimed in the same transaction with the response ``respond``
        makes of the new reservation; a key still alive raises :class:`IdempotentReplay`.
        """
        account = checksum_account(account)
        _check_decimal("size_delta", new.size_delta)
        if new.valid_until < new.issued_at:
            raise InputError("valid_until", f"{new.valid_until} is before {new.issued_at}")
        with self._transaction() as db:
            if idempotency is not None:
                _claimable(db, idempotency[0], new.issued_at)
            counter = _counter(db, new.chain_id)
            if counter is None or new.counter >> 128 != counter.counter:
                raise StoreError(
                    f"store {self.path}: chain {new.chain_id}: the attestation's counter is not "
                    "the one the store issues under (the gate counters were resynced meanwhile)"
                )
            amount = decide(_live(db, account, since))
            if amount is None:
                return None
            if amount < 0:
                raise InputError("amount_usd", f"must be >= 0, got {amount}")
            made = _insert(db, account, new, amount, nonce)
            if idempotency is not None:
                db.execute(
                    "INSERT INTO idempotency (key, body_hash, response, expires_at)"
                    " VALUES (?, ?, ?, ?)",
                    (
                        idempotency[0],
                        idempotency[1],
                        respond(made) if respond else "",
                        new.valid_until,
                    ),
                )
            return made

    def live(self, account: str, since: int = 0) -> list[Reservation]:
        """``account``'s reservations that a decision may still count: active ones, and filled
        ones valid until ``since`` or later."""
        with self._reading() as db:
            return _live(db, checksum_account(account), since)

    def active(self) -> list[Reservation]:
        """Every account's active reservations (what an epoch asks the gates about)."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM reservations WHERE state = 'active' ORDER BY id"
            ).fetchall()
        return [Reservation.from_row(row) for row in rows]

    def mark(self, updates: Iterable[tuple[int, str, int]]) -> int:
        """Record final states seen at pinned blocks: (reservation id, state, block). Only
        active rows change (a row seen filled stays filled). Returns rows changed."""
        changed = 0
        with self._transaction() as db:
            for rid, state, block in updates:
                if state not in (FILLED, CANCELLED, EXPIRED):
                    raise StoreError(f"store {self.path}: cannot mark a reservation {state!r}")
                cursor = db.execute(
                    "UPDATE reservations SET state = ?, seen_block = ?"
                    " WHERE id = ? AND state = 'active'",
                    (state, block, rid),
                )
                changed += cursor.rowcount
        return changed

    def release(self, reservation_id: int) -> None:
        """Stop an active reservation holding margin (its attestation was never handed out)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT state FROM reservations WHERE id = ?", (reservation_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"store {self.path}: no reservation with id {reservation_id}")
            db.execute(
                "UPDATE reservations SET state = 'released' WHERE id = ? AND state = 'active'",
                (reservation_id,),
            )

    def reservations(self, account: str | None = None) -> list[Reservation]:
        """All reservations, or ``account``'s, in the order they were made."""
        query = f"SELECT {_COLUMNS} FROM reservations"
        params: tuple[str, ...] = ()
        if account is not None:
            query += " WHERE account = ?"
            params = (checksum_account(account),)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY id", params).fetchall()
        return [Reservation.from_row(row) for row in rows]

    def used_nonces(self, account: str) -> set[int]:
        """Every nonce issued to ``account``, whatever became of its reservation."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT nonce FROM reservations WHERE account = ?", (checksum_account(account),)
            ).fetchall()
        return {int(nonce) for (nonce,) in rows}

    # gate counters -------------------------------------------------------------------------

    def counters(self) -> dict[int, GateCounter]:
        """The counter the store issues under, per chain id (empty for a new store)."""
        with self._reading() as db:
            rows = db.execute("SELECT chain_id, gate, counter, block FROM counters").fetchall()
        return {c: GateCounter(c, g, int(n), b) for c, g, n, b in rows}

    def set_counter(self, counter: GateCounter) -> None:
        """Issue under ``counter`` on its chain from now on. Rows under an older counter are
        marked cancelled once a pinned state at or after ``counter.block`` shows it
        (aggregator.gate.settled), not here."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO counters (chain_id, gate, counter, block) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (chain_id) DO UPDATE SET gate = excluded.gate,"
                " counter = excluded.counter, block = excluded.block",
                (counter.chain_id, counter.gate, str(counter.counter), counter.block),
            )

    # idempotency keys ----------------------------------------------------------------------

    def remembered(self, key: str, now: int) -> tuple[str, str] | None:
        """(body hash, response JSON) stored under ``key`` and alive at ``now``."""
        with self._reading() as db:
            row = db.execute(
                "SELECT body_hash, response FROM idempotency WHERE key = ? AND expires_at >= ?",
                (key, now),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def live_by_account(self, since: int = 0) -> dict[str, list[Reservation]]:
        """Every account's live reservations (as :meth:`live`), in one query."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM reservations WHERE state = 'active'"
                " OR (state = 'filled' AND valid_until >= ?) ORDER BY id",
                (since,),
            ).fetchall()
        out: dict[str, list[Reservation]] = {}
        for row in rows:
            r = Reservation.from_row(row)
            out.setdefault(r.account, []).append(r)
        return out

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._registry_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"store {self.path}: closed")
        if os.getpid() != self._pid:
            raise StoreError(f"store {self.path}: opened in process {self._pid}, open it anew")
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error:
                connection.close()
                raise
            self._local.connection = connection
            with self._registry_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error."""
        with self._write_lock, self._errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            yield self._connection()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc


def _create_schema(db: sqlite3.Connection) -> None:
    # executescript would COMMIT the open transaction first; run the statements one by one
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _live(db: sqlite3.Connection, account: str, since: int) -> list[Reservation]:
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM reservations WHERE account = ? AND (state = 'active'"
        " OR (state = 'filled' AND valid_until >= ?)) ORDER BY id",
        (account, since),
    ).fetchall()
    return [Reservation.from_row(row) for row in rows]


def _claimable(db: sqlite3.Connection, key: str, now: int) -> None:
    """Raise IdempotentReplay if ``key`` is alive at ``now``; forget it if it expired."""
    row = db.execute(
        "SELECT body_hash, response, expires_at FROM idempotency WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return
    if int(row[2]) >= now:
        raise IdempotentReplay(key, str(row[0]), str(row[1]))
    db.execute("DELETE FROM idempotency WHERE key = ?", (key,))


def _counter(db: sqlite3.Connection, chain_id: int) -> GateCounter | None:
    row = db.execute(
        "SELECT chain_id, gate, counter, block FROM counters WHERE chain_id = ?", (chain_id,)
    ).fetchone()
    return None if row is None else GateCounter(row[0], row[1], int(row[2]), row[3])
