"""The service against a real uvicorn server on loopback, backed by a devnet: every endpoint,
keys required and checked, 4xx naming the field, responses matching the OpenAPI schema, figures
equal to the CLI's."""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from aggregator.attestation import MarginAttestation, recover
from aggregator.service.launcher import Server, omnimargin_binary, service_config, start_server
from chains.devnet_margin import devnet_signer_address

ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # demo account: collateral on 2 chains
B = 31337002
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.json"


def _cli(server: Server, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [omnimargin_binary(), *args, "--config", str(server.config_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


class Schema:
    """Validates a response body against /openapi.json (operation, status code)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:api", resource)

    def check(self, method: str, path: str, response: httpx.Response) -> None:
        op = self.spec["paths"][path][method]
        declared = op["responses"].get(str(response.status_code))
        assert declared is not None, f"{method} {path}: {response.status_code} not declared"
        schema = declared["content"]["application/json"]["schema"]
        ref = {"$ref": "urn:api#" + schema["$ref"][1:]} if "$ref" in schema else schema
        Draft202012Validator(ref, registry=self.registry).validate(response.json())


@pytest.fixture(scope="module")
def schema(service: Server) -> Schema:
    with service.client() as c:
        return Schema(c.get("/openapi.json").json())


def test_health_ready_and_metrics(service: Server, schema: Schema) -> None:
    with service.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        schema.check("get", "/readyz", ready)
        assert ready.json()["ready"] is True and ready.json()["epoch"] >= 1
        c.get(f"/v1/accounts/{ACCOUNT}/margin")
        text = c.get("/metrics").text
    assert (
        'omnimargin_request_seconds_count{method="GET",route="/v1/accounts/{account}/margin"'
        in text
    )
    for chain in ("31337001", "31337002", "31337003"):
        assert f'omnimargin_snapshot_age_seconds{{chain_id="{chain}"}}' in text
    epochs = [
        ln for ln in text.splitlines() if ln.startswith('omnimargin_epochs_total{outcome="ok"}')
    ]
    assert epochs and float(epochs[0].split()[-1]) >= 1


def test_margin_is_the_clis_figure_at_the_same_blocks(service: Server, schema: Schema) -> None:
    with service.client() as c:
        for _ in range(20):  # the CLI pins afresh: take both at the same blocks
            cli = _cli(service, "margin", ACCOUNT)
            r = c.get(f"/v1/accounts/{ACCOUNT}/margin")
            if r.json()["snapshot_hash"] == cli["snapshot_hash"]:
                break
            time.sleep(0.5)
    schema.check("get", "/v1/accounts/{account}/margin", r)
    m = r.json()
    assert m["snapshot_hash"] == cli["snapshot_hash"]
    assert m["risk_model_hash"] == cli["risk_model_hash"]
    assert m["equity"] == cli["equity"]  # exact valuation: same bits
    for key in ("initial_margin", "maintenance_margin", "var", "es"):
        assert m[key] == pytest.approx(cli[key], rel=1e-12), key
    assert m["by_chain"] == pytest.approx(cli["by_chain"], rel=1e-9)
    assert sum(m["by_chain"].values()) == pytest.approx(m["es"], rel=1e-9)
    assert m["positions"] == cli["positions"]
    e = m["epoch"]
    assert e["snapshot_hash"] == m["snapshot_hash"] and not e["stale"] and e["age_s"] < 30
    assert e["blocks"] == {str(s["chain_id"]): s["block_number"] for s in m["snapshot"]}


def test_portfolio_has_exact_quantities_and_provenance(service: Server, schema: Schema) -> None:
    with service.client() as c:
        r = c.get(f"/v1/accounts/{ACCOUNT.lower()}/portfolio")
    schema.check("get", "/v1/accounts/{account}/portfolio", r)
    p = r.json()
    assert p["account"] == ACCOUNT
    usdc = [x for x in p["positions"] if x["asset"] == "USDC"]
    assert any(x["in_flight"] and x["source"] == "in_flight" for x in usdc)
    assert {x["chain_id"] for x in p["positions"]} >= {31337001, 31337003}
    for asset, total in p["quantities"].items():
        lines = [Decimal(x["quantity"]) for x in p["positions"] if x["asset"] == asset]
        assert Decimal(total) == sum(lines, Decimal(0))  # exact decimal strings add up
    for x in p["positions"]:
        assert x["block"].isdigit() and x["contract"].startswith("0x")


def test_snapshot_and_accounts(service: Server, schema: Schema) -> None:
    with service.client() as c:
        snap, accounts = c.get("/v1/snapshot"), c.get("/v1/accounts")
    schema.check("get", "/v1/snapshot", snap)
    schema.check("get", "/v1/accounts", accounts)
    s = snap.json()
    assert [ch["chain_id"] for ch in s["chains"]] == [31337001, 31337002, 31337003]
    assert all(ch["status"] == "ok" and ch["feeds"] for ch in s["chains"])
    assert all(f["status"] == "ok" for ch in s["chains"] for f in ch["feeds"])
    assert {p["asset"] for p in s["prices"]} >= {"BTC", "ETH", "USDC"}
    assert ACCOUNT in [a["account"] for a in accounts.json()["accounts"]]


def _auth_body(size: str = "0.5", market: str = "ETH", chain_id: int = B) -> dict[str, Any]:
    return {"account": ACCOUNT, "chain_id": chain_id, "market": market, "size_delta": size}


def test_authorisations_need_a_key(service: Server, schema: Schema) -> None:
    with service.client() as c:
        none = c.post("/v1/authorizations", json=_auth_body())
        wrong = c.post(
            "/v1/authorizations", json=_auth_body(), headers={"Authorization": "Bearer nope"}
        )
        basic = c.post(
            "/v1/authorizations",
            json=_auth_body(),
            headers={"Authorization": f"Basic {service.key}"},
        )
    for r in (none, wrong, basic):
        assert r.status_code == 401 and r.json()["field"] == "authorization"
        assert r.headers["www-authenticate"] == "Bearer"
        schema.check("post", "/v1/authorizations", r)
    assert service.key not in service.log()


def test_an_approval_is_signed_and_reserves_its_margin(service: Server, schema: Schema) -> None:
    with service.client(headers=service.auth) as c:
        before = c.get(f"/v1/accounts/{ACCOUNT}/margin").json()
        r = c.post("/v1/authorizations", json=_auth_body("0.25"))
        after = c.get(f"/v1/accounts/{ACCOUNT}/margin").json()
    schema.check("post", "/v1/authorizations", r)
    d = r.json()
    assert d["approved"] is True, d["reason"]
    msg = d["attestation"]["typed_data"]["message"]
    domain = d["attestation"]["typed_data"]["domain"]
    att = MarginAttestation(
        account=msg["account"],
        market=bytes.fromhex(msg["market"][2:]),
        size_delta=int(msg["sizeDelta"]),
        equity=int(msg["equity"]),
        initial_margin=int(msg["initialMargin"]),
        snapshot_hash=bytes.fromhex(msg["snapshotHash"][2:]),
        risk_model_hash=bytes.fromhex(msg["riskModelHash"][2:]),
        issued_at=int(msg["issuedAt"]),
        valid_until=int(msg["validUntil"]),
        nonce=int(msg["nonce"]),
        counter=int(msg["counter"]),
    )
    signer = recover(
        att, domain["chainId"], domain["verifyingContract"], d["attestation"]["signature"]
    )
    assert signer == devnet_signer_address()
    assert att.size_delta == 25 * 10**16 and att.account == ACCOUNT
    assert "0x" + att.snapshot_hash.hex() == d["snapshot_hash"] == d["epoch"]["snapshot_hash"]
    grew = d["initial_margin_after"] - d["initial_margin_before"]
    assert grew > 0 and d["corners"] >= 2 and d["valid_until"] > time.time()
    if after["epoch"]["number"] == before["epoch"]["number"]:  # held until seen executed
        assert after["reserved"] >= before["reserved"] + grew * (1 - 1e-9)
    assert after["free_margin"] < before["free_margin"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**_auth_body(), "account": "0x12"}, 422, "account"),
        ({**_auth_body(), "size_delta": "abc"}, 422, "size_delta"),
        ({**_auth_body(), "size_delta": "0"}, 400, "size_delta"),
        ({**_auth_body(), "chain_id": 5}, 400, "chain_id"),
        ({**_auth_body(), "market": "DOGE"}, 400, "market"),
        ({**_auth_body(), "extra": 1}, 422, "extra"),
        ({k: v for k, v in _auth_body().items() if k != "market"}, 422, "market"),
    ],
)
def test_bad_authorisation_bodies_name_the_field(
    service: Server, schema: Schema, body: dict[str, Any], status: int, field: str
) -> None:
    with service.client(headers=service.auth) as c:
        r = c.post("/v1/authorizations", json=body)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    schema.check("post", "/v1/authorizations", r)


def test_bad_paths_and_bodies_are_4xx_naming_the_field(service: Server) -> None:
    with service.client(headers=service.auth) as c:
        bad = c.get("/v1/accounts/0xnothex/margin")
        unknown = c.get("/v1/accounts/0x" + "12" * 20 + "/portfolio")
        not_json = c.post(
            "/v1/authorizations", content=b"{", headers={"content-type": "application/json"}
        )
        risk = c.post("/v1/risk", content=b'{"positions": []}')
        risk_q = c.post("/v1/risk?scenarios=5", content=EXAMPLE.read_bytes())
    assert (bad.status_code, bad.json()["field"]) == (422, "account")
    assert (unknown.status_code, unknown.json()["field"]) == (404, "account")
    assert "watched" in unknown.json()["reason"]
    assert not_json.status_code == 422
    assert (risk.status_code, risk.json()["field"]) == (400, "positions")
    assert (risk_q.status_code, risk_q.json()["field"]) == (422, "scenarios")


def test_risk_endpoint_is_the_clis_run(service: Server, schema: Schema) -> None:
    with service.client() as c:
        r = c.post("/v1/risk?scenarios=20000&seed=7&alpha=0.99", content=EXAMPLE.read_bytes())
    schema.check("post", "/v1/risk", r)
    out = subprocess.run(
        [
            omnimargin_binary(),
            "risk",
            "--portfolio",
            str(EXAMPLE),
            "--scenarios",
            "20000",
            "--seed",
            "7",
            "--alpha",
            "0.99",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    cli = json.loads(out.stdout)
    api = r.json()
    assert (api["var"], api["es"]) == (cli["var"], cli["es"])  # same engine, same bits
    assert api["contributions"] == cli["contributions"]


def test_a_stale_epoch_refuses_authorisations(service: Server, tmp_path: Path) -> None:
    """A second server whose epochs are 10 minutes apart and stale after 1 s."""
    config = service_config(service.config_path, tmp_path / "stale.toml", stale_after_s=1.0)
    slow = start_server(config, tmp_path / "serve.log", "--epoch-interval", "600")
    try:
        time.sleep(1.5)
        with slow.client(headers=slow.auth) as c:
            r = c.post("/v1/authorizations", json=_auth_body("0.01"))
            m = c.get(f"/v1/accounts/{ACCOUNT}/margin").json()
    finally:
        slow.stop()
    d = r.json()
    assert r.status_code == 200 and d["approved"] is False
    assert "stale" in d["reason"] and d["epoch"]["stale"] is True
    assert m["epoch"]["stale"] is True and m["epoch"]["age_s"] > 1.0
