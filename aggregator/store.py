"""Durable margin reservations and attestation nonces in SQLite.

An approved authorisation reserves its margin until its position appears on chain
(``mark_filled``) or its attestation expires, so two authorisations that each fit alone but not
together cannot both be approved. Every approval is one ``BEGIN IMMEDIATE`` transaction, which
serialises writers across threads and processes; the commit is durable (WAL journal,
``synchronous=FULL``) before :meth:`Store.authorize` returns, so whatever a client was told
survives a ``kill -9`` or a power cut.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from eth_utils import is_address, to_checksum_address

from aggregator.errors import AggregatorError, InputError

ACTIVE: Final = "active"
FILLED: Final = "filled"
EXPIRED: Final = "expired"
RELEASED: Final = "released"
STATES: Final = (ACTIVE, FILLED, EXPIRED, RELEASED)

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_S: Final = 10.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT    NOT NULL,
    chain_id    INTEGER NOT NULL,
    market      TEXT    NOT NULL,
    size_delta  TEXT    NOT NULL,
    amount_usd  TEXT    NOT NULL,
    nonce       INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN {STATES!r}),
    UNIQUE (account, nonce)
);
CREATE INDEX IF NOT EXISTS reservations_active ON reservations (account, state);
CREATE TABLE IF NOT EXISTS nonces (
    account TEXT    PRIMARY KEY,
    last    INTEGER NOT NULL
);
"""
_COLUMNS = (
    "id, account, chain_id, market, size_delta, amount_usd, nonce, issued_at, valid_until, state"
)

Row = tuple[int, str, int, str, str, str, int, int, int, str]


class StoreError(AggregatorError):
    """The store cannot be opened, read or written; names the database file."""


@dataclass(frozen=True)
class Reservation:
    """Margin held by one approved authorisation.

    ``size_delta`` is the attested size change as a decimal string; ``amount_usd`` the margin
    it holds; ``nonce`` the attestation's nonce, unique per account; ``issued_at`` and
    ``valid_until`` unix seconds; ``state`` one of ``active``, ``filled``, ``expired``,
    ``released``. Only ``active`` reservations with ``valid_until >= now`` hold margin.
    """

    id: int
    account: str
    chain_id: int
    market: str
    size_delta: str
    amount_usd: Decimal
    nonce: int
    issued_at: int
    valid_until: int
    state: str

    @classmethod
    def from_row(cls, row: Row) -> Reservation:
        """Build from a ``reservations`` row in the order of ``_COLUMNS``."""
        rid, account, chain_id, market, size, amount, nonce, issued, until, state = row
        return cls(
            rid, account, chain_id, market, size, Decimal(amount), nonce, issued, until, state
        )


def checksum_account(account: str) -> str:
    """The EIP-55 form of ``account``; raises `InputError` if it is not an address."""
    if not is_address(account):
        raise InputError("account", f"not an address: {account!r}")
    return str(to_checksum_address(account))


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
                )
            _create_schema(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorize(
        self,
        account: str,
        chain_id: int,
        market: str,
        size_delta: str,
        amount_usd: Decimal,
        now: int,
        valid_until: int,
        decide: Callable[[Decimal], bool],
    ) -> Reservation | None:
        """Reserve ``amount_usd`` for ``account`` if ``decide`` approves, in one transaction.

        The account's reservations past ``valid_until`` are marked expired, then ``decide`` gets the
        USD the account's other active reservations hold and returns whether the new one fits
        (free margin - reserved - amount >= 0). It runs inside the write lock: keep it quick and
        do not call the store from it. On approval the account's next nonce is taken and the
        reservation stored; the commit is durable before this returns. Returns ``None`` when
        ``decide`` refuses.
        """
        account = checksum_account(account)
        _check_decimal("size_delta", size_delta)
        amount = _check_decimal("amount_usd", amount_usd)
        if amount < 0:
            raise InputError("amount_usd", f"must be >= 0, got {amount_usd}")
        if valid_until < now:
            raise InputError("valid_until", f"{valid_until} is before now ({now})")
        with self._transaction() as db:
            _expire(db, account, now)
            if not decide(_active_sum(db, account, now)):
                return None
            db.execute(
                "INSERT INTO nonces (account, last) VALUES (?, 1)"
                " ON CONFLICT (account) DO UPDATE SET last = last + 1",
                (account,),
            )
            nonce = db.execute("SELECT last FROM nonces WHERE account = ?", (account,)).fetchone()[
                0
            ]
            cursor = db.execute(
                "INSERT INTO reservations (account, chain_id, market, size_delta, amount_usd,"
                " nonce, issued_at, valid_until, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active')",
                (account, chain_id, market, size_delta, str(amount), nonce, now, valid_until),
            )
            assert cursor.lastrowid is not None
            return Reservation(
                id=cursor.lastrowid,
                account=account,
                chain_id=chain_id,
                market=market,
                size_delta=size_delta,
                amount_usd=amount,
                nonce=nonce,
                issued_at=now,
                valid_until=valid_until,
                state=ACTIVE,
            )

    def reserved(self, account: str, now: int) -> Decimal:
        """USD held by ``account``'s active reservations still valid at ``now``."""
        with self._reading() as db:
            return _active_sum(db, checksum_account(account), now)

    def mark_filled(self, account: str, nonces: Iterable[int]) -> int:
        """Mark the reservations whose nonces the gate consumed as filled: their positions are
        on chain and count in the portfolio, so they stop holding margin. Returns rows changed.
        """
        account = checksum_account(account)
        changed = 0
        with self._transaction() as db:
            for nonce in set(nonces):
                cursor = db.execute(
                    "UPDATE reservations SET state = 'filled'"
                    " WHERE account = ? AND nonce = ? AND state != 'filled'",
                    (account, nonce),
                )
                changed += cursor.rowcount
        return changed

    def release(self, reservation_id: int) -> None:
        """Stop an active reservation holding margin (its attestation will not be used)."""
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
        return {nonce for (nonce,) in rows}

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


def _expire(db: sqlite3.Connection, account: str, now: int) -> None:
    """Mark ``account``'s active reservations past their validity expired (by the index)."""
    db.execute(
        "UPDATE reservations SET state = 'expired'"
        " WHERE account = ? AND state = 'active' AND valid_until < ?",
        (account, now),
    )


def _active_sum(db: sqlite3.Connection, account: str, now: int) -> Decimal:
    """Exact sum of the amounts (TEXT) of ``account``'s active reservations valid at ``now``."""
    rows = db.execute(
        "SELECT amount_usd FROM reservations"
        " WHERE account = ? AND state = 'active' AND valid_until >= ?",
        (account, now),
    ).fetchall()
    return sum((Decimal(amount) for (amount,) in rows), Decimal(0))
