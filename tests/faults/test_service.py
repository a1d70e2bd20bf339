"""The service under attack and abuse, for real: schemathesis against its live OpenAPI, 100
racing authorisations, ``kill -9`` in the middle of a load, and the signer key looked for in
every log line and response."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from aggregator.service.launcher import Server, service_config, start_server
from aggregator.store import Store
from chains.config import load_config
from tests.faults.helpers import ARB
from tests.reliability import ForTest

FAMILY = "Service"
EXAMPLES = 120  # per operation and mode: > 1,000 requests in all
SEEN: list[str] = []  # every response body of this module, for the key test


@pytest.fixture(scope="module")
def server(devnet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service of this module's own (its devnet gets reservations and kills)."""
    info = devnet_factory(3)
    where = tmp_path_factory.mktemp("service-faults")
    config = service_config(info.config_path, where / "config.toml", max_risk_scenarios=20_000)
    s = start_server(config, where / "serve.log", "--epoch-interval", "2")
    try:
        yield s
    finally:
        s.stop()


def test_schemathesis_finds_no_5xx_and_no_response_off_the_schema(
    server: Server, reliability: ForTest
) -> None:
    """Every operation, schema-valid and schema-breaking data (negative mode must be refused
    with a 4xx). The positive-acceptance check is left out: a body valid by the schema may
    still break a business rule (an unknown chain, a zero size) and get a 400 naming it."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    counts: dict[str, int] = {}
    problems: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            n = [0]
            try:
                _fuzz(server, op, mode, n)()
            except Unsatisfiable:
                pass  # an operation without inputs has no schema-breaking variant
            except Exception as exc:  # a failure found: keep the others running, report all
                problems.append(f"{op.label} {mode.value}: {str(exc)[:600]}")
            counts[f"{op.label} {mode.value}"] = n[0]
    total = sum(counts.values())
    reliability.record(
        FAMILY,
        "schemathesis against the live OpenAPI",
        f"{total} generated requests over {len(counts) // 2} operations, schema-valid and "
        "schema-breaking (negative mode), with the API key",
        "no 5xx; every response matches its declared schema, status and content type; "
        "schema-breaking data refused with a 4xx naming the field",
        total,
        len(problems),
    )
    assert problems == []
    assert total >= 1000, counts


def _fuzz(server: Server, op: Any, mode: GenerationMode, n: list[int]) -> Any:
    """A Hypothesis test of one operation in one mode, counting its requests in ``n``."""

    @given(op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        n[0] += 1
        response = case.call(base_url=server.url, headers=server.auth, timeout=60)
        SEEN.append(response.text)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:  # every refusal names what was wrong
            assert response.json()["field"], response.text
        case.validate_response(
            response, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )

    return run


def _margin(server: Server, account: str) -> dict[str, Any]:
    with server.client() as c:
        for _ in range(100):
            r = c.get(f"/v1/accounts/{account}/margin")
            if r.status_code == 200:
                return dict(r.json())
            time.sleep(0.2)
    raise AssertionError(f"no margin for {account}: {r.text}")


def _body(account: str, size: Decimal) -> dict[str, Any]:
    return {"account": account, "chain_id": ARB, "market": "ETH", "size_delta": str(size)}


def test_racing_authorisations_never_exceed_the_free_margin(
    server: Server, reliability: ForTest
) -> None:
    """100 authorisations at once from 100 clients over three accounts; the worst case over
    each account's approved attestations must fit its equity, and no nonce may be issued
    twice."""
    cfg = load_config(server.config_path)
    accounts = [str(a) for a in cfg.accounts[:3]]
    free = {a: _margin(server, a)["free_margin"] for a in accounts}
    sizes: dict[str, Decimal] = {}
    with server.client(headers=server.auth) as c:
        for a in accounts:  # a probe: the increment of 20 ETH, scaled to a tenth of the margin
            probe = c.post("/v1/authorizations", json=_body(a, Decimal(20))).json()
            assert probe["approved"], probe["reason"]
            step = probe["initial_margin_after"] - probe["initial_margin_before"]
            sizes[a] = Decimal(20) * Decimal(repr(round(free[a] / 10 / step, 3)))

    async def race() -> list[tuple[str, dict[str, Any]]]:
        async def one(i: int) -> tuple[str, dict[str, Any]]:
            a = accounts[i % 3]
            async with (
                aiohttp.ClientSession(server.url, headers=server.auth) as s,
                s.post("/v1/authorizations", json=_body(a, sizes[a])) as r,
            ):
                return a, await r.json()

        return list(await asyncio.gather(*(one(i) for i in range(100))))

    results = asyncio.run(race())
    wrong = []
    for a in accounts:
        mine = [d for who, d in results if who == a]
        approved = [d for d in mine if d["approved"]]
        # each approval's IM is the worst case over every attestation outstanding with it (the
        # probe's and the racers'): the last one approved covers them all
        worst = max((d["initial_margin_after"] for d in approved), default=0.0)
        equity = _margin(server, a)["equity"]
        if worst > equity * (1 + 1e-9) or any(d["free_margin_after"] < 0 for d in approved):
            wrong.append(f"{a}: worst-case IM {worst:,.2f} over equity {equity:,.2f}")
        nonces = [d["attestation"]["typed_data"]["message"]["nonce"] for d in approved]
        if len(set(nonces)) != len(nonces):
            wrong.append(f"{a}: a nonce issued twice: {sorted(nonces)}")
        if not 0 < len(approved) < len(mine):
            wrong.append(f"{a}: {len(approved)} of {len(mine)} approved: the race was not tight")
        refused = [d["reason"] for d in mine if not d["approved"]]
        if not all("would be negative" in r for r in refused):
            wrong.append(f"{a}: refused for another reason: {refused[:2]}")
    reliability.record(
        FAMILY,
        "100 racing authorisations",
        "100 POST /v1/authorizations at once from 100 clients over 3 accounts, each about a "
        "tenth of its free margin",
        "the worst case over each account's approved attestations within its equity; nonces "
        "unique; the others refused ('free margin after ... would be negative')",
        len(results),
        len(wrong),
    )
    assert wrong == []


def test_kill_9_keeps_every_acknowledged_reservation_and_nonce(
    server: Server, tmp_path: Path, reliability: ForTest
) -> None:
    """A second server on the same store, killed with SIGKILL in the middle of a load."""
    cfg = load_config(server.config_path)
    victim = start_server(server.config_path, tmp_path / "victim.log", "--epoch-interval", "2")
    account = str(cfg.accounts[1])
    acknowledged: list[dict[str, Any]] = []
    stop = time.monotonic() + 3.0

    def client(_: int) -> None:
        with httpx.Client(base_url=victim.url, headers=victim.auth, timeout=10) as c:
            while time.monotonic() < stop + 5:
                try:
                    r = c.post("/v1/authorizations", json=_body(account, Decimal("0.001")))
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200 and r.json()["approved"]:
                    acknowledged.append(r.json())

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(8)]
        while time.monotonic() < stop:
            time.sleep(0.05)
        # its forkserver and epoch worker (a child of the forkserver, not of the server)
        helpers = psutil.Process(victim.process.pid).children(recursive=True)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        for f in futures:
            f.result()
    assert victim.process.returncode == -signal.SIGKILL and len(acknowledged) > 20
    assert helpers, "the victim's epoch worker was not found"
    _, alive = psutil.wait_procs(helpers, timeout=10)
    assert alive == [], f"processes left behind by the killed server: {alive}"

    store = Store(Path(str(cfg.store_path)))
    try:
        kept = {r.id: r for r in store.reservations(account)}
        used = store.used_nonces(account)
    finally:
        store.close()
    lost = []
    for d in acknowledged:
        r = kept.get(d["reservation_id"])
        nonce = d["attestation"]["typed_data"]["message"]["nonce"]
        if r is None or r.nonce != nonce or nonce not in used:
            lost.append(d["reservation_id"])
    # after a restart the next nonce is new
    restarted = start_server(server.config_path, tmp_path / "restarted.log")
    try:
        with restarted.client(headers=restarted.auth) as c:
            after = c.post("/v1/authorizations", json=_body(account, Decimal("0.001"))).json()
    finally:
        restarted.stop()
    issued = {d["attestation"]["typed_data"]["message"]["nonce"] for d in acknowledged}
    fresh = after["approved"] and (
        after["attestation"]["typed_data"]["message"]["nonce"] not in issued | used
    )
    reliability.record(
        FAMILY,
        "kill -9 during a load",
        "SIGKILL of `omnimargin serve` while 8 clients send authorisations, then a restart",
        "every acknowledged reservation and nonce is in SQLite after the kill; the restarted "
        "service issues a new nonce",
        len(acknowledged) + 1,
        len(lost) + (0 if fresh else 1),
    )
    assert lost == [] and fresh


def test_the_signer_key_is_in_no_log_line_and_no_response(
    server: Server, reliability: ForTest
) -> None:
    """After everything above (runs last in this module): the key file's secret is nowhere."""
    cfg = load_config(server.config_path)
    assert cfg.signer is not None and cfg.signer.key_file is not None
    secret = Path(cfg.signer.key_file).read_text().strip().removeprefix("0x").lower()
    assert len(secret) == 64
    with server.client(headers=server.auth) as c:
        for path in ("/metrics", "/v1/snapshot", "/v1/accounts", "/openapi.json", "/"):
            SEEN.append(c.get(path).text)
    texts = [*SEEN, server.log()]
    texts += [p.read_text(errors="replace") for p in server.log_path.parent.glob("*.log")]
    leaks = [t[:80] for t in texts if secret in t.lower()]
    reliability.record(
        FAMILY,
        "signer key in logs or responses",
        f"grep for the signer's private key in {len(texts)} texts: every response of this "
        "module (fuzz included) and the server logs",
        "absent everywhere",
        len(texts),
        len(leaks),
    )
    assert len(SEEN) > 1000 and leaks == []
