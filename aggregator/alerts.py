"""Margin calls: a signed webhook each time an account's health crosses a band.

Each epoch puts every account in one band (:func:`band_of`): ``liquidatable`` (equity below
MM), ``warning`` (health = equity / MM below ``warning_health``), ``healthy``, or ``unknown``
(status unknown: a position or debt whose prices are missing or stale; it is neither
liquidatable nor recovered). :class:`AlertTracker` keeps each account's last known band and
emits exactly one event per crossing: ``warning``, ``liquidatable`` or ``recovered`` (back to
healthy). Unknown epochs are skipped, so liquidatable -> unknown -> liquidatable is no new
event; an account first seen healthy emits nothing.

Every event goes to each ``[[alerts]]`` URL as canonical JSON (sorted keys, no spaces) with
``X-Omnimargin-Signature: sha256=<hex HMAC-SHA256 of the exact body>``. One thread per URL
sends its events in order from a bounded queue, retrying connection errors, 429 and 5xx after
``backoff_s``, doubling up to ``max_backoff_s``, ``retries`` times; the epoch loop only enqueues.
Receivers check the header with :func:`verify_signature`. Secrets are never logged, and URLs
are logged by host only (a webhook URL often carries a token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import httpx
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aggregator.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_WARNING_HEALTH = 1.25
SIGNATURE_HEADER = "X-Omnimargin-Signature"
EVENT_ID_HEADER = "X-Omnimargin-Event-Id"
TIMESTAMP_HEADER = "X-Omnimargin-Timestamp"


class Band(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    LIQUIDATABLE = "liquidatable"
    UNKNOWN = "unknown"


EventName = Literal["warning", "liquidatable", "recovered"]
KnownBand = Literal["healthy", "warning", "liquidatable"]
Outcome = Literal["pending", "delivered", "failed"]
_KNOWN: dict[Band, KnownBand] = {
    Band.HEALTHY: "healthy",
    Band.WARNING: "warning",
    Band.LIQUIDATABLE: "liquidatable",
}
_EVENT_OF: dict[Band, EventName] = {
    Band.HEALTHY: "recovered",
    Band.WARNING: "warning",
    Band.LIQUIDATABLE: "liquidatable",
}


class AlertConfig(BaseModel):
    """One ``[[alerts]]`` entry: where margin calls go and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl
    secret: SecretStr | None = None  # the HMAC key itself, or:
    secret_env: str | None = Field(None, min_length=1)  # the variable holding it
    warning_health: float = Field(DEFAULT_WARNING_HEALTH, gt=1.0, le=1e9)
    retries: int = Field(5, ge=0, le=20)  # attempts after the first
    backoff_s: float = Field(0.5, ge=0, le=60)
    max_backoff_s: float = Field(30.0, ge=0, le=3600)
    timeout_s: float = Field(5.0, gt=0, le=120)
    queue_size: int = Field(1000, ge=1, le=1_000_000)

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...)."""
        return float(min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s))


@dataclass(frozen=True)
class Destination:
    """A validated ``[[alerts]]`` entry with its HMAC key (never in a repr)."""

    label: str  # "alerts[0] (host)": what logs and the dashboard show
    config: AlertConfig
    key: bytes = field(repr=False)


def load_alerts(entries: Sequence[Any] | None) -> list[Destination]:
    """The config's ``[[alerts]]``; an InputError naming ``alerts[i].<field>`` otherwise."""
    out = []
    for i, raw in enumerate(entries or ()):
        where = f"alerts[{i}]"
        try:
            cfg = AlertConfig.model_validate(raw)
        except ValidationError as exc:
            raise _field_error(exc, where) from None
        if (cfg.secret is None) == (cfg.secret_env is None):
            raise InputError(f"{where}.secret", "set exactly one of secret and secret_env")
        if cfg.secret_env is not None:
            key = os.environ.get(cfg.secret_env, "")
            if not key:
                raise InputError(
                    f"{where}.secret_env", f"environment variable {cfg.secret_env} is not set"
                )
        else:
            assert cfg.secret is not None
            key = cfg.secret.get_secret_value()
            if not key:
                raise InputError(f"{where}.secret", "empty")
        out.append(Destination(f"{where} ({cfg.url.host})", cfg, key.encode()))
    return out


def _field_error(exc: ValidationError, where: str) -> InputError:
    """The first problem, named ``alerts[i].<field>`` (the config's other tables' style)."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
    if err["type"] == "missing":
        msg = "required"
    return InputError(f"{where}.{path}" if path else where, msg)


@dataclass(frozen=True)
class AccountFigures:
    """What a band is decided on: an account's margin report, the fields that matter."""

    status: str
    health: float | None
    liquidatable: bool | None
    equity: float
    maintenance_margin: float
    snapshot_hash: str | None = None

    @classmethod
    def of_report(cls, r: Mapping[str, Any]) -> AccountFigures:
        return cls(
            str(r["status"]),
            r["health"],
            r["liquidatable"],
            float(r["equity"]),
            float(r["maintenance_margin"]),
            r.get("snapshot_hash"),
        )


def band_of(f: AccountFigures, warning_health: float) -> Band:
    """The account's band: unknown when its status is (health and liquidatable null)."""
    if f.status == "unknown" or f.liquidatable is None:
        return Band.UNKNOWN
    if f.liquidatable:
        return Band.LIQUIDATABLE
    if f.health is not None and f.health < warning_health:
        return Band.WARNING
    return Band.HEALTHY  # health None with a known status: no MM, nothing at risk


class AlertEvent(BaseModel):
    """One margin call: the webhook's body and an item of ``GET /v1/alerts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    event: EventName
    account: str
    band: KnownBand
    previous_band: KnownBand | None  # None: the account's first known band
    health: float | None
    equity: float
    maintenance_margin: float
    status: str
    warning_health: float
    epoch: int
    blocks: dict[str, int | None]
    snapshot_hash: str | None
    timestamp: int  # unix seconds, also the X-Omnimargin-Timestamp header

    def body(self) -> bytes:
        """The canonical JSON that is sent and signed: sorted keys, no spaces, UTF-8."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode()


@dataclass(frozen=True)
class EpochMark:
    """Which epoch the figures come from."""

    number: int
    blocks: dict[str, int | None]


class AlertTracker:
    """Each account's last known band; :meth:`observe` returns the epoch's crossings.

    An account absent from an epoch is forgotten (it left the watch list, which only an
    account with nothing on any chain does: it was healthy)."""

    def __init__(
        self,
        warning_health: float = DEFAULT_WARNING_HEALTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.warning_health = warning_health
        self.clock = clock
        self.known: dict[str, Band] = {}  # the last band other than unknown
        self.current: dict[str, Band] = {}  # the bands of the latest epoch

    def observe(self, mark: EpochMark, accounts: Mapping[str, AccountFigures]) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        now = int(self.clock())
        known: dict[str, Band] = {}
        current: dict[str, Band] = {}
        for account, f in accounts.items():
            band = current[account] = band_of(f, self.warning_health)
            before = self.known.get(account)
            if band is Band.UNKNOWN:
                if before is not None:
                    known[account] = before
                continue
            known[account] = band
            if band != (before or Band.HEALTHY):
                events.append(self._event(mark, account, f, band, before, now))
        self.known, self.current = known, current
        return events

    def _event(
        self,
        mark: EpochMark,
        account: str,
        f: AccountFigures,
        band: Band,
        before: Band | None,
        now: int,
    ) -> AlertEvent:
        return AlertEvent(
            id=uuid.uuid4().hex,
            event=_EVENT_OF[band],
            account=account,
            band=_KNOWN[band],
            previous_band=None if before is None else _KNOWN[before],
            health=f.health,
            equity=f.equity,
            maintenance_margin=f.maintenance_margin,
            status=f.status,
            warning_health=self.warning_health,
            epoch=mark.number,
            blocks=mark.blocks,
            snapshot_hash=f.snapshot_hash,
            timestamp=now,
        )

    def counts(self) -> dict[str, int]:
        """Accounts of the latest epoch by band (every band, zeros included)."""
        out = {b.value: 0 for b in Band}
        for band in self.current.values():
            out[band.value] += 1
        return out


def sign(key: bytes, body: bytes) -> str:
    """The ``X-Omnimargin-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """A receiver's check: ``header`` is the signature of the exact ``body`` bytes under
    ``secret`` (compared in constant time)."""
    if not header:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.compare_digest(sign(key, body).encode(), header.strip().encode("utf-8", "replace"))


def signed_request(key: bytes, event: AlertEvent) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one margin call."""
    body = event.body()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "omnimargin-alerts/1",
        SIGNATURE_HEADER: sign(key, body),
        EVENT_ID_HEADER: event.id,
        TIMESTAMP_HEADER: str(event.timestamp),
    }
    return body, headers


class Delivery(BaseModel):
    """How one event fared at one destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    destination: str
    outcome: Outcome = "pending"
    attempts: int = 0
    detail: str | None = None  # the last answer ("HTTP 500", "ConnectError", "queue full")


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class WebhookSender:
    """One destination: a bounded queue and one daemon thread that POSTs each event in turn.

    ``done(event, delivery)`` is called once per event with its final delivery."""

    def __init__(
        self,
        dest: Destination,
        done: Callable[[AlertEvent, Delivery], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.dest = dest
        self._done = done
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(dest.config.queue_size)
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=dest.config.timeout_s, transport=transport)
        self._thread = threading.Thread(target=self._run, name="omnimargin-alerts", daemon=True)
        self._thread.start()

    def submit(self, event: AlertEvent) -> bool:
        """Queue ``event`` without waiting; False (and a failed delivery) when full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("margin call %s to %s dropped: queue full", event.id, self.dest.label)
            failed = Delivery(destination=self.dest.label, outcome="failed", detail="queue full")
            self._done(event, failed)
            return False
        return True

    def join(self) -> None:
        """Wait until every queued event has its final delivery (tests)."""
        self._queue.join()

    def close(self, grace_s: float = 2.0) -> None:
        """Send what is queued for up to ``grace_s``, then stop retrying and exit."""
        try:
            self._queue.put(None, timeout=grace_s)
            self._thread.join(grace_s)
        except queue.Full:
            pass
        self._stop.set()
        self._thread.join(grace_s)
        self._client.close()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._done(event, self.deliver(event))
            finally:
                self._queue.task_done()

    def deliver(self, event: AlertEvent) -> Delivery:
        """POST ``event`` until a 2xx, a final 4xx, or ``retries`` retries."""
        cfg = self.dest.config
        body, headers = signed_request(self.dest.key, event)
        detail, attempts = "", 0
        for attempt in range(cfg.retries + 1):
            if self._stop.wait(cfg.backoff(attempt) if attempt else 0):
                detail = f"{detail}, then shut down" if detail else "shut down"
                break
            attempts = attempt + 1
            try:
                r = self._client.post(str(cfg.url), content=body, headers=headers)
            except httpx.HTTPError as exc:
                detail = type(exc).__name__
                continue
            detail = f"HTTP {r.status_code}"
            if r.is_success:
                return Delivery(
                    destination=self.dest.label,
                    outcome="delivered",
                    attempts=attempts,
                    detail=detail,
                )
            if not _retryable(r.status_code):
                break
        log.warning(
            "margin call %s (%s of %s) to %s failed after %d attempts: %s",
            event.id,
            event.event,
            event.account,
            self.dest.label,
            attempts,
            detail,
        )
        return Delivery(
            destination=self.dest.label, outcome="failed", attempts=attempts, detail=detail
        )
