"""Margin calls: band crossings (hypothesis against a reference count), signed webhooks to a
real HTTP receiver on loopback (HMAC verified, one call per crossing, retries with backoff,
giving up), config errors naming the field, and a real ``omnimargin serve`` calling out."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from aggregator.alerts import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AccountFigures,
    AlertTracker,
    Band,
    EpochMark,
    band_of,
    load_alerts,
    sign,
    verify_signature,
)
from aggregator.errors import InputError
from aggregator.service.launcher import Server, omnimargin_binary, start_server
from aggregator.service.margin_calls import MarginCalls
from aggregator.service.metrics import Metrics
from chains.config import parse_config

SECRET = "test-secret-not-a-real-one"

#: figures in each band (warning level 1.25); two healthy ones: no MM at all is healthy too
FIGURES: dict[Band, list[AccountFigures]] = {
    Band.HEALTHY: [
        AccountFigures("ok", 2.0, False, 200.0, 100.0),
        AccountFigures("ok", None, False, 0.0, 0.0),
    ],
    Band.WARNING: [AccountFigures("degraded", 1.1, False, 110.0, 100.0)],
    Band.LIQUIDATABLE: [AccountFigures("ok", 0.5, True, 50.0, 100.0)],
    Band.UNKNOWN: [AccountFigures("unknown", None, None, 80.0, 100.0)],
}
EVENT_OF = {Band.HEALTHY: "recovered", Band.WARNING: "warning", Band.LIQUIDATABLE: "liquidatable"}


def crossings(bands: list[Band]) -> list[str]:
    """The reference: unknown skipped, every change of the known band from healthy is one."""
    out, before = [], Band.HEALTHY
    for band in bands:
        if band is not Band.UNKNOWN and band is not before:
            out.append(EVENT_OF[band])
            before = band
    return out


def feed(tracker: AlertTracker | MarginCalls, runs: dict[str, list[Band]]) -> list[Any]:
    """Every account's bands epoch after epoch (all accounts in every epoch)."""
    events = []
    for n in range(max(len(r) for r in runs.values())):
        epoch = {a: FIGURES[r[n]][0] for a, r in runs.items() if n < len(r)}
        events += tracker.observe(EpochMark(n + 1, {"1": 100 + n}), epoch)
    return events


# --- bands and crossings


def test_bands() -> None:
    assert band_of(AccountFigures("ok", 1.25, False, 125.0, 100.0), 1.25) is Band.HEALTHY
    assert band_of(AccountFigures("ok", 1.2499, False, 124.99, 100.0), 1.25) is Band.WARNING
    assert band_of(AccountFigures("degraded", 0.99, True, 99.0, 100.0), 1.25) is Band.LIQUIDATABLE
    assert band_of(AccountFigures("unknown", None, None, 99.0, 100.0), 1.25) is Band.UNKNOWN
    for band, figures in FIGURES.items():
        assert all(band_of(f, 1.25) is band for f in figures)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["0xA", "0xB", "0xC"]),
        st.lists(st.sampled_from(list(Band)), min_size=1, max_size=25),
        min_size=1,
    ),
    st.data(),
)
def test_one_event_per_crossing(runs: dict[str, list[Band]], data: st.DataObject) -> None:
    tracker = AlertTracker(1.25)
    events = []
    for n in range(max(len(r) for r in runs.values())):
        epoch = {
            a: data.draw(st.sampled_from(FIGURES[r[n]])) for a, r in runs.items() if n < len(r)
        }
        events += tracker.observe(EpochMark(n, {}), epoch)
    for account, bands in runs.items():
        mine = [e for e in events if e.account == account]
        assert [e.event for e in mine] == crossings(bands)
        assert all(a.event != b.event for a, b in pairwise(mine))
        # each event names the band it left: the one the previous event entered
        assert [e.previous_band for e in mine[1:]] == [e.band for e in mine[:-1]]
        assert all(e.status != "unknown" for e in mine)
    assert len({e.id for e in events}) == len(events)


def test_unknown_in_between_is_no_new_event() -> None:
    tracker = AlertTracker()
    L, U, H, W = Band.LIQUIDATABLE, Band.UNKNOWN, Band.HEALTHY, Band.WARNING
    assert [e.event for e in feed(tracker, {"0xA": [L, U, U, L, L]})] == ["liquidatable"]
    assert [e.event for e in feed(AlertTracker(), {"0xA": [U, H, U, H]})] == []
    assert [e.event for e in feed(AlertTracker(), {"0xA": [U, W]})] == ["warning"]
    got = feed(AlertTracker(), {"0xA": [H, W, L, U, W, H]})
    assert [(e.event, e.previous_band) for e in got] == [
        ("warning", "healthy"),
        ("liquidatable", "warning"),
        ("warning", "liquidatable"),
        ("recovered", "warning"),
    ]
    # first sighting: an event only when not healthy
    first = feed(AlertTracker(), {"0xA": [H], "0xB": [W], "0xC": [L], "0xD": [U]})
    assert sorted((e.account, e.event, e.previous_band) for e in first) == [
        ("0xB", "warning", None),
        ("0xC", "liquidatable", None),
    ]


def test_events_carry_the_epoch_and_the_figures() -> None:
    tracker = AlertTracker(1.5, clock=lambda: 1_700_000_000.7)
    (e,) = tracker.observe(EpochMark(7, {"31337001": 42}), {"0xA": FIGURES[Band.WARNING][0]})
    assert (e.event, e.account, e.health, e.equity, e.maintenance_margin) == (
        "warning", "0xA", 1.1, 110.0, 100.0,
    )  # fmt: skip
    assert (e.epoch, e.blocks, e.timestamp, e.warning_health) == (
        7, {"31337001": 42}, 1_700_000_000, 1.5,
    )  # fmt: skip
    assert tracker.counts() == {"healthy": 0, "warning": 1, "liquidatable": 0, "unknown": 0}
    body = e.body()
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()


def test_an_account_that_leaves_is_forgotten() -> None:
    tracker = AlertTracker()
    tracker.observe(EpochMark(1, {}), {"0xA": FIGURES[Band.WARNING][0]})
    tracker.observe(EpochMark(2, {}), {})
    assert tracker.known == {} and tracker.counts()["warning"] == 0


# --- signatures


def test_signature_verifies_only_the_exact_body_under_the_key() -> None:
    body = b'{"a":1}'
    header = sign(SECRET.encode(), body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert verify_signature(SECRET.encode(), body, header)
    assert not verify_signature("another secret", body, header)
    assert not verify_signature(SECRET, b'{"a": 1}', header)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "sha256=" + "0" * 64)
    assert not verify_signature(SECRET, body, "sha256=é")


# --- a real receiver on loopback


class Receiver:
    """An HTTP server in a thread on 127.0.0.1 (a free port) that records every request and
    answers with the next status of ``script`` (then 200)."""

    def __init__(self, script: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script = list(script or [])
        self.delay_s = delay_s
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append((dict(self.headers), body))
                    status = outer.script.pop(0) if outer.script else 200
                time.sleep(outer.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/margin?token=t0k3n"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for _, b in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def calls_to(url: str, metrics: Metrics | None = None, **entry: Any) -> MarginCalls:
    dest = load_alerts([{"url": url, "secret": SECRET, "backoff_s": 0.01, **entry}])
    return MarginCalls(dest, on_outcome=metrics.alert_sent if metrics else None)


def test_exactly_one_signed_call_per_crossing(receiver: Receiver) -> None:
    W, L, H, U = Band.WARNING, Band.LIQUIDATABLE, Band.HEALTHY, Band.UNKNOWN
    runs = {"0xA": [H, W, W, L, U, L, H, H], "0xB": [L, L, U, U, L], "0xC": [H, H, H, U, H]}
    calls = calls_to(receiver.url)
    try:
        events = feed(calls, runs)
        calls.join()
        report = calls.report()
    finally:
        calls.close()
    assert len(events) == sum(len(crossings(r)) for r in runs.values()) == 4
    assert len(receiver.requests) == len(events)
    for headers, body in receiver.requests:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
        assert not verify_signature("wrong secret", body, headers[SIGNATURE_HEADER])
        sent = json.loads(body)
        assert headers[EVENT_ID_HEADER] == sent["id"]
        assert headers[TIMESTAMP_HEADER] == str(sent["timestamp"])
        assert headers["Content-Type"] == "application/json"
    got = sorted((b["account"], b["epoch"], b["event"]) for b in receiver.bodies())
    assert got == [
        ("0xA", 2, "warning"),
        ("0xA", 4, "liquidatable"),
        ("0xA", 7, "recovered"),
        ("0xB", 1, "liquidatable"),
    ]
    assert [i.event.id for i in report.alerts] == [e.id for e in reversed(events)]
    for item in report.alerts:
        (d,) = item.deliveries
        assert (d.outcome, d.attempts, d.destination) == ("delivered", 1, "alerts[0] (127.0.0.1)")


def test_retries_after_two_500s_deliver_once() -> None:
    receiver = Receiver(script=[500, 500])
    metrics = Metrics()
    calls = calls_to(receiver.url, metrics)
    try:
        (event,) = feed(calls, {"0xA": [Band.LIQUIDATABLE]})
        calls.join()
        (item,) = calls.report().alerts
    finally:
        calls.close()
        receiver.close()
    assert [json.loads(b)["id"] for _, b in receiver.requests] == [event.id] * 3
    assert len({b for _, b in receiver.requests}) == 1  # the same signed body each time
    assert all(verify_signature(SECRET, b, h[SIGNATURE_HEADER]) for h, b in receiver.requests)
    (d,) = item.deliveries
    assert (d.outcome, d.attempts, d.detail) == ("delivered", 3, "HTTP 200")
    text = generate_latest(metrics.registry).decode()
    assert 'omnimargin_alerts_sent_total{event="liquidatable",outcome="delivered"} 1.0' in text
    assert 'outcome="failed"' not in text


def test_gives_up_after_the_retries_and_counts_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(script=[503] * 10)
    metrics = Metrics()
    calls = calls_to(receiver.url, metrics, retries=2)
    try:
        with caplog.at_level(logging.WARNING, logger="aggregator.alerts"):
            feed(calls, {"0xA": [Band.WARNING]})
            calls.join()
        (item,) = calls.report().alerts
    finally:
        calls.close()
        receiver.close()
    assert len(receiver.requests) == 3
    (d,) = item.deliveries
    assert (d.outcome, d.attempts, d.detail) == ("failed", 3, "HTTP 503")
    text = generate_latest(metrics.registry).decode()
    assert 'omnimargin_alerts_sent_total{event="warning",outcome="failed"} 1.0' in text
    # the log names the destination by host: neither the secret nor the URL's token
    assert "failed after 3 attempts" in caplog.text
    assert SECRET not in caplog.text and "t0k3n" not in caplog.text


def test_a_4xx_is_not_retried_and_a_dead_port_is() -> None:
    receiver = Receiver(script=[400])
    calls = calls_to(receiver.url)
    try:
        feed(calls, {"0xA": [Band.WARNING]})
        calls.join()
        (item,) = calls.report().alerts
    finally:
        calls.close()
    assert len(receiver.requests) == 1 and item.deliveries[0].outcome == "failed"
    url = receiver.url
    receiver.close()  # nothing listens there now
    calls = calls_to(url, retries=2, timeout_s=2)
    try:
        feed(calls, {"0xA": [Band.WARNING]})
        calls.join()
        (d,) = calls.report().alerts[0].deliveries
    finally:
        calls.close()
    assert (d.outcome, d.attempts, d.detail) == ("failed", 3, "ConnectError")


def test_the_epoch_loop_never_waits_on_a_slow_receiver() -> None:
    receiver = Receiver(delay_s=1.0)
    calls = calls_to(receiver.url, queue_size=2)
    warn = FIGURES[Band.WARNING][0]
    try:
        calls.observe(EpochMark(1, {}), {"0x0": warn})
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:  # in the receiver's hands
            time.sleep(0.01)
        started = time.perf_counter()
        events = calls.observe(EpochMark(2, {}), {f"0x{i}": warn for i in range(1, 6)})
        took = time.perf_counter() - started
        calls.join()
        deliveries = [i.deliveries[0] for i in calls.report().alerts]
    finally:
        calls.close()
        receiver.close()
    assert len(events) == 5 and took < 0.5
    # one at the receiver, two queued, the other three dropped (and counted) at once
    assert sorted(d.outcome for d in deliveries) == ["delivered"] * 3 + ["failed"] * 3
    assert {d.detail for d in deliveries if d.outcome == "failed"} == {"queue full"}


def test_without_destinations_events_are_still_kept() -> None:
    calls = MarginCalls()
    feed(calls, {"0xA": [Band.HEALTHY, Band.LIQUIDATABLE], "0xB": [Band.UNKNOWN] * 2})
    report = calls.report()
    assert [(i.event.event, i.deliveries) for i in report.alerts] == [("liquidatable", [])]
    assert report.bands == {"healthy": 0, "warning": 0, "liquidatable": 1, "unknown": 1}
    assert report.warning_health == 1.25


# --- config


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([{"url": "ftp://example.com/hook", "secret": "s"}], "alerts[0].url"),
        ([{"url": "not a url", "secret": "s"}], "alerts[0].url"),
        ([{"secret": "s"}], "alerts[0].url"),
        ([{"url": "https://a.example/h", "secret": "s"}, {"url": "https://b.example/h"}],
         "alerts[1].secret"),
        ([{"url": "https://a.example/h", "secret": "s", "secret_env": "X"}], "alerts[0].secret"),
        ([{"url": "https://a.example/h", "secret_env": "OMNIMARGIN_TEST_UNSET_VAR"}],
         "alerts[0].secret_env"),
        ([{"url": "https://a.example/h", "secret": "s", "warning_health": 0.9}],
         "alerts[0].warning_health"),
        ([{"url": "https://a.example/h", "secret": "s", "retries": -1}], "alerts[0].retries"),
        ([{"url": "https://a.example/h", "secret": "s", "sekret": "s"}], "alerts[0].sekret"),
        ([7], "alerts[0]"),
    ],
)  # fmt: skip
def test_config_errors_name_the_field(entries: list[Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        load_alerts(entries)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_the_secret_comes_from_the_environment_and_stays_out_of_reprs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNIMARGIN_TEST_HOOK_KEY", SECRET)
    (dest,) = load_alerts(
        [{"url": "https://hooks.example/x", "secret_env": "OMNIMARGIN_TEST_HOOK_KEY"}]
    )
    assert dest.key == SECRET.encode() and SECRET not in repr(dest)
    (inline,) = load_alerts([{"url": "https://hooks.example/x", "secret": SECRET}])
    assert SECRET not in repr(inline) and dest.config.retries == 5


def test_the_config_file_takes_an_alerts_array_of_tables(tmp_path: Path) -> None:
    """``[[alerts]]`` is a table of the config (other commands accept the file), checked when
    ``serve`` starts: a bad URL stops it with exit code 2 and the field named."""
    text = """
accounts = []
[[chains]]
chain_id = 1
name = "one"
rpc_urls = ["http://127.0.0.1:1"]
multicall3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
[service]
api_keys = ["k"]
[[alerts]]
url = "ftp://hooks.example/margin"
secret = "s"
"""
    data = tomllib.loads(text)
    assert parse_config(data).alerts == data["alerts"]
    path = tmp_path / "config.toml"
    path.write_text(text)
    out = subprocess.run(
        [omnimargin_binary(), "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "error: alerts[0].url: URL scheme should be 'http' or 'https'" in out.stderr


# --- end to end: a real `omnimargin serve` (over the shared service's devnet) calls out


def _metric_lines(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{")]


def test_a_real_server_sends_one_signed_call_per_account_crossing(
    service: Server, tmp_path: Path, receiver: Receiver
) -> None:
    """A warning level above every account's health: each account with a finite health
    crosses into ``warning`` (or is liquidatable) at its first epoch, once, and no epoch after
    sends anything again while the bands stay."""
    with service.client() as c:
        healths = [a["health"] for a in c.get("/v1/accounts").json()["accounts"]]
    level = max([2.0] + [2 * h for h in healths if h is not None])
    data = tomllib.loads(service.config_path.read_text())
    data["alerts"] = [{"url": receiver.url, "secret": SECRET, "warning_health": level}]
    config = tmp_path / "alerts.toml"
    config.write_text(tomli_w.dumps(data))
    server = start_server(config, tmp_path / "serve.log", "--epoch-interval", "1")
    try:
        with server.client() as c:
            first = c.get("/readyz").json()["epoch"]
            deadline = time.monotonic() + 60
            while c.get("/readyz").json()["epoch"] < first + 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            accounts = c.get("/v1/accounts").json()["accounts"]
            time.sleep(1.0)  # the last epoch's calls delivered
            report = c.get("/v1/alerts").json()
            metrics = c.get("/metrics").text
    finally:
        server.stop()
    expected = {
        a["account"]: "liquidatable" if a["health"] < 1 else "warning"
        for a in accounts
        if a["health"] is not None and a["status"] != "unknown"
    }
    assert expected, accounts
    for headers, body in receiver.requests:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    got = {b["account"]: b["event"] for b in receiver.bodies()}
    assert len(receiver.requests) == len(expected) and got == expected
    assert {i["event"]["account"] for i in report["alerts"]} == set(expected)
    assert all(i["deliveries"][0]["outcome"] == "delivered" for i in report["alerts"])
    assert report["bands"]["warning"] + report["bands"]["liquidatable"] == len(expected)
    sent = _metric_lines(metrics, "omnimargin_alerts_sent_total")
    assert sum(float(ln.split()[-1]) for ln in sent if 'outcome="delivered"' in ln) == len(expected)
    bands = _metric_lines(metrics, "omnimargin_accounts_by_health_band")
    assert len(bands) == 4 and sum(float(ln.split()[-1]) for ln in bands) == len(accounts)
