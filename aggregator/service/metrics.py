"""Prometheus metrics of the service (prometheus-client), in a registry of the app's own."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aggregator.service.epochs import Epoch

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "omnimargin_request_seconds",
            "Request latency by route and status class.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.authorizations = Counter(
            "omnimargin_authorizations",
            "Authorisation decisions.",
            ["outcome"],
            registry=r,
        )
        self.snapshot_age = Gauge(
            "omnimargin_snapshot_age_seconds",
            "Age of the latest epoch's pinned block, per chain (by the chain's own clock).",
            ["chain_id"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "omnimargin_rpc_errors",
            "Chains that could not be read in an epoch.",
            ["chain_id"],
            registry=r,
        )
        self.epochs = Counter("omnimargin_epochs", "Epochs by outcome.", ["outcome"], registry=r)
        self.epoch_seconds = Histogram(
            "omnimargin_epoch_seconds",
            "Epoch duration by stage.",
            ["stage"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.epoch_number = Gauge("omnimargin_epoch", "The current epoch's number.", registry=r)
        self.accounts = Gauge("omnimargin_accounts", "Accounts in the current epoch.", registry=r)
        self.by_status = Gauge(
            "omnimargin_accounts_by_status",
            "Accounts of the current epoch by margin status (unknown: a position or debt whose "
            "prices are missing or stale: health unknown, no new risk, no liquidation).",
            ["status"],
            registry=r,
        )
        self.watched = Gauge(
            "omnimargin_watched_accounts",
            "Accounts on the watch list (the config's and those added since).",
            registry=r,
        )
        self.unwatched = Counter(
            "omnimargin_unwatched_accounts",
            "Accounts that left the watch list, idle (nothing on any chain) for too many epochs.",
            registry=r,
        )
        self.liquidation_steps = Counter(
            "omnimargin_liquidation_steps",
            "Liquidation steps signed by the keeper, by kind (liquidation: a close, seizure: "
            "collateral) and outcome (signed, executed, reverted).",
            ["kind", "outcome"],
            registry=r,
        )
        self.fund_usd = Gauge(
            "omnimargin_insurance_fund_usd",
            "The insurance fund's collateral in every vault, USD at collateral prices.",
            registry=r,
        )
        self.bad_debt_usd = Gauge(
            "omnimargin_bad_debt_usd",
            "Bad debt on record, USD: covered by the fund's plan, or uncovered.",
            ["state"],
            registry=r,
        )
        self.by_band = Gauge(
            "omnimargin_accounts_by_health_band",
            "Accounts of the current epoch by health band (healthy, warning: health under the "
            "first [[alerts]] warning_health, liquidatable: equity under MM, unknown).",
            ["band"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "omnimargin_alerts_sent",
            "Margin calls by event and final outcome at each destination (delivered, failed).",
            ["event", "outcome"],
            registry=r,
        )

    def watch_list(self, accounts: Collection[str]) -> None:
        """The watched-accounts gauge reads ``accounts`` (the runner's set) when scraped."""
        self.watched.set_function(lambda: len(accounts))

    def health_bands(self, counts: Mapping[str, int]) -> None:
        for band, n in counts.items():
            self.by_band.labels(band).set(n)

    def alert_sent(self, event: str, outcome: str) -> None:
        self.alerts_sent.labels(event, outcome).inc()

    def on_epoch(self, epoch: Epoch) -> None:
        self.epochs.labels("ok").inc()
        self.epoch_seconds.labels("read").observe(epoch.read_s)
        self.epoch_seconds.labels("compute").observe(epoch.compute_s)
        self.epoch_number.set(epoch.number)
        self.accounts.set(len(epoch.accounts))
        counts = dict.fromkeys(("ok", "degraded", "unknown"), 0)
        for state in epoch.accounts.values():
            status = str(state.report["status"])
            counts[status] = counts.get(status, 0) + 1
        for status, n in counts.items():
            self.by_status.labels(status).set(n)
        now = time.time()
        for s in epoch.world.snapshots:
            if s.ok and s.timestamp is not None:
                self.snapshot_age.labels(str(s.chain_id)).set(max(now - s.timestamp, 0.0))
            else:
                self.rpc_errors.labels(str(s.chain_id)).inc()

    def liquidation_round(self, round_: dict[str, object]) -> None:
        """Count a keeper round's steps (signed, and executed or reverted when submitted)."""
        steps = round_.get("steps") or []
        submitted = round_.get("submitted") or []
        assert isinstance(steps, list) and isinstance(submitted, list)
        for step in steps:
            self.liquidation_steps.labels(step["kind"], "signed").inc()
        kinds = {s["reservation_id"]: s["kind"] for s in steps}
        for r in submitted:
            outcome = "executed" if r["executed"] else "reverted"
            self.liquidation_steps.labels(kinds.get(r["reservation_id"], "?"), outcome).inc()

    def fund(self, report: Mapping[str, object]) -> None:
        """The insurance fund's value and the bad debts on record (``fund_report``)."""
        self.fund_usd.set(float(report["total_usd"]))  # type: ignore[arg-type]
        self.bad_debt_usd.labels("covered").set(float(report["bad_debt_covered_usd"]))  # type: ignore[arg-type]
        self.bad_debt_usd.labels("uncovered").set(float(report["bad_debt_uncovered_usd"]))  # type: ignore[arg-type]
