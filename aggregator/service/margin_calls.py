"""The service's margin calls (:mod:`aggregator.alerts`): every epoch's accounts through one
tracker per warning level, each crossing queued to the ``[[alerts]]`` destinations of that
level, and the recent events with their deliveries for the dashboard, ``GET /v1/alerts`` and
``/metrics``."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from aggregator.alerts import (
    DEFAULT_WARNING_HEALTH,
    AccountFigures,
    AlertEvent,
    AlertTracker,
    Delivery,
    Destination,
    EpochMark,
    WebhookSender,
)


class AlertItem(BaseModel):
    """An event of ``GET /v1/alerts`` with how each destination took it."""

    model_config = ConfigDict(extra="forbid")

    event: AlertEvent
    deliveries: list[Delivery]


class AlertsReport(BaseModel):
    """``GET /v1/alerts``: the latest epoch's accounts by band and the recent margin calls."""

    model_config = ConfigDict(extra="forbid")

    warning_health: float
    bands: dict[str, int]
    alerts: list[AlertItem]  # newest first


class _State(Protocol):
    @property
    def report(self) -> dict[str, Any]: ...


class _Epoch(Protocol):
    @property
    def number(self) -> int: ...
    @property
    def accounts(self) -> Mapping[str, _State]: ...
    def blocks(self) -> dict[str, int | None]: ...


class MarginCalls:
    """The service's margin calls: one tracker per warning level, one sender per destination,
    the last ``keep`` events with their deliveries. Without destinations the events are still
    tracked (dashboard, ``/v1/alerts``, ``/metrics``) at the default warning level.

    ``on_outcome(event, outcome)`` counts each final delivery (from the senders' threads)."""

    def __init__(
        self,
        destinations: Sequence[Destination] = (),
        keep: int = 100,
        on_outcome: Callable[[str, str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        first = destinations[0].config.warning_health if destinations else DEFAULT_WARNING_HEALTH
        self.warning_health = first  # the level of the dashboard's and /metrics' bands
        levels = {first} | {d.config.warning_health for d in destinations}
        self.trackers = {level: AlertTracker(level) for level in sorted(levels)}
        self.keep = keep
        self.on_outcome = on_outcome
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, tuple[AlertEvent, dict[str, Delivery]]] = OrderedDict()
        self.senders = [WebhookSender(d, self._delivered, transport) for d in destinations]

    def on_epoch(self, epoch: _Epoch) -> list[AlertEvent]:
        """Feed the epoch's accounts to every tracker and queue the crossings (no waiting)."""
        mark = EpochMark(epoch.number, epoch.blocks())
        figures = {a: AccountFigures.of_report(s.report) for a, s in epoch.accounts.items()}
        return self.observe(mark, figures)

    def observe(self, mark: EpochMark, accounts: Mapping[str, AccountFigures]) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for level, tracker in self.trackers.items():
            senders = [s for s in self.senders if s.dest.config.warning_health == level]
            for event in tracker.observe(mark, accounts):
                self._remember(event, [s.dest.label for s in senders])
                for s in senders:
                    s.submit(event)
                out.append(event)
        return out

    def bands(self) -> dict[str, int]:
        return self.trackers[self.warning_health].counts()

    def _remember(self, event: AlertEvent, labels: list[str]) -> None:
        pending = {label: Delivery(destination=label) for label in labels}
        with self._lock:
            self._recent[event.id] = (event, pending)
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)

    def _delivered(self, event: AlertEvent, delivery: Delivery) -> None:
        with self._lock:
            kept = self._recent.get(event.id)
            if kept is not None:
                kept[1][delivery.destination] = delivery
        if self.on_outcome is not None:
            self.on_outcome(event.event, delivery.outcome)

    def report(self) -> AlertsReport:
        with self._lock:
            items = [
                AlertItem(event=e, deliveries=list(d.values()))
                for e, d in reversed(self._recent.values())
            ]
        return AlertsReport(warning_health=self.warning_health, bands=self.bands(), alerts=items)

    def join(self) -> None:
        """Wait until every queued event is delivered or failed (tests)."""
        for s in self.senders:
            s.join()

    def close(self, grace_s: float = 2.0) -> None:
        for s in self.senders:
            s.close(grace_s)
