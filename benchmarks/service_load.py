"""Service load benchmark: a real ``omnimargin serve`` over a devnet with 1,000 accounts and 64+
risk columns, 100,000 scenarios per epoch, 32 concurrent clients.

The devnet gets extra third-party-bridged tokens of the assets it prices (each bridge is its own
risk column, ``ETH@xb03``), every account holds every token, then the server starts and two
phases run from this process: margin reads, then authorisations. Against the same run: the
HTTP stack's own limit (``/healthz``, no work) and the plain NumPy cost of one authorisation's
maths (P&L, IM with the position) in this process.

    python -m benchmarks.service_load [--accounts 1000] [--clients 32] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tomli_w

from aggregator.cli_devnet import replay_history
from aggregator.service.launcher import Server, start_server
from benchmarks.chain_reads import bench_accounts
from chains.config import OmnimarginConfig, load_config
from chains.devnet import devnet_down, devnet_up
from chains.devnet_control import mint_accounts
from chains.devnet_nodes import free_ports
from chains.devnet_web3 import connect, deploy

TARGET_READ_P99_MS = 20.0
TARGET_AUTH_RPS = 200.0
TARGET_AUTH_P99_MS = 100.0
READ_RATE = 500.0  # margin reads per second offered by the 32 clients together
CHAIN_INDEX = 1  # devnet-arb gets the extra tokens
ASSETS = ("ETH", "BTC", "USDC", "LINK")
BRIDGES = 15  # 4 assets x 15 bridges = 60 extra columns


async def add_bridged_tokens(cfg: OmnimarginConfig, path: Path, epoch_s: float) -> Path:
    """Deploy the extra tokens, add them and their bridges to a copy of the config."""
    chain = cfg.chains[CHAIN_INDEX]
    deployer = cfg.devnet["deployer"]  # type: ignore[index]
    data = tomllib.loads(path.read_text())
    decimals = {t.asset: t.decimals for t in cfg.tokens if t.kind == "native"}
    async with connect(chain.rpc_urls[0]) as w3:
        for b in range(BRIDGES):
            bridge = f"xb{b:02d}"
            data["bridges"].append(
                {
                    "name": bridge,
                    "kind": "third_party",
                    "failure_probability": 0.0005 + 0.0001 * b,
                    "loss_given_failure": 0.8,
                }
            )
            for asset in ASSETS:
                symbol = f"{asset}.{bridge}"
                address = await deploy(w3, "ERC20", deployer, symbol, symbol, decimals[asset])
                data["tokens"].append(
                    {
                        "chain_id": chain.chain_id,
                        "address": address,
                        "symbol": symbol,
                        "decimals": decimals[asset],
                        "asset": asset,
                        "kind": "third_party_bridge",
                        "bridge": bridge,
                    }
                )
    data["service"] = {**data.get("service", {}), "epoch_interval_s": epoch_s}
    data["service"]["stale_after_s"] = 600.0
    out = path.with_name("bench.toml")
    out.write_text(tomli_w.dumps(data))
    return out


async def seed(cfg: OmnimarginConfig, accounts: list[str]) -> None:
    rng = random.Random(7)
    for chain in cfg.chains:
        for token in cfg.tokens_on(chain.chain_id):
            unit = 10 ** max(token.decimals - 4, 0)  # small amounts, locked: margins stay positive
            amounts = [rng.randint(1, 10_000) * unit for _ in accounts]
            await mint_accounts(cfg, chain.chain_id, token.symbol, accounts, amounts, locked=True)


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


Request = Callable[[aiohttp.ClientSession, str], Awaitable[int]]


async def load(
    url: str,
    clients: int,
    seconds: float,
    request: Request,
    accounts: list[str],
    rate: float | None = None,
) -> dict[str, Any]:
    """``clients`` concurrent clients calling ``request(session, account)`` for ``seconds``.

    ``rate`` None: closed loop (each client sends its next request when the last one is
    answered: the server's capacity). Else open loop: the clients together send ``rate``
    requests per second on a fixed schedule, and latency counts from the scheduled time, so a
    server falling behind shows in the figures (no coordinated omission).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        start = time.perf_counter() + 0.05
        deadline = start + seconds

        async def client(i: int) -> None:
            rng = random.Random(i)
            k = 0
            while True:
                due = start + (k * clients + i) / rate if rate else time.perf_counter()
                if due >= deadline:
                    return
                k += 1
                if rate:
                    await asyncio.sleep(max(due - time.perf_counter(), 0.0))
                status = await request(session, rng.choice(accounts))
                latencies.append((time.perf_counter() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - start
    return {
        "mode": f"open loop at {rate:g}/s" if rate else "closed loop",
        "requests": len(latencies),
        "rps": round(len(latencies) / wall, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **_percentiles(latencies),
    }


def numpy_authorisation_ms(server: Server, account: str) -> float:
    """The plain NumPy maths of one authorisation (P&L = R e, IM with the position), in this
    process on the same scenario set: the floor under an authorisation's latency."""
    from aggregator.accounts import policy_of, scenario_set
    from aggregator.margin import im_with_position

    cfg = load_config(server.config_path)
    policy, _ = policy_of(cfg)
    scen = scenario_set(cfg, policy)
    e = np.random.default_rng(0).normal(size=len(scen.columns)) * 1000
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        pnl = scen.returns @ e
        im_with_position(pnl, scen, "ETH", 100.0, policy)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 2)


def run(n_accounts: int, clients: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omnimargin-load-") as tmp:
        directory = Path(tmp)
        info = asyncio.run(devnet_up(directory, 3, history=replay_history(), ports=free_ports(3)))
        try:
            cfg = load_config(info.config_path)
            bench_path = asyncio.run(add_bridged_tokens(cfg, info.config_path, 10.0))
            accounts = bench_accounts(n_accounts)
            data = tomllib.loads(bench_path.read_text())
            data["accounts"] = [*data["accounts"], *accounts]
            bench_path.write_text(tomli_w.dumps(data))
            bench = load_config(bench_path)
            t0 = time.perf_counter()
            asyncio.run(seed(bench, accounts))
            print(
                f"seeded {len(bench.tokens)} tokens x {n_accounts} accounts in "
                f"{time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
            server = start_server(bench_path, directory / "serve.log", ready_s=600)
            try:
                return measure(server, accounts, clients, seconds)
            finally:
                server.stop()
        finally:
            devnet_down(directory)


def measure(server: Server, accounts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    with server.client() as c:
        first = c.get(f"/v1/accounts/{accounts[0]}/margin").json()
    auth = server.auth

    async def health(s: aiohttp.ClientSession, _: str) -> int:
        async with s.get("/healthz") as r:
            await r.read()
            return r.status

    async def margin(s: aiohttp.ClientSession, account: str) -> int:
        async with s.get(f"/v1/accounts/{account}/margin") as r:
            await r.read()
            return r.status

    async def authorize(s: aiohttp.ClientSession, account: str) -> int:
        body = {"account": account, "chain_id": 31337002, "market": "ETH", "size_delta": "0.001"}
        async with s.post("/v1/authorizations", json=body, headers=auth) as r:
            await r.read()
            return r.status

    def run(request: Request, rate: float | None, span: float = seconds) -> dict[str, Any]:
        return asyncio.run(load(server.url, clients, span, request, accounts, rate))

    out: dict[str, Any] = {
        "accounts": len(accounts),
        "clients": clients,
        "seconds_per_phase": seconds,
        "epoch": first["epoch"],
        "healthz": run(health, None, seconds / 3),
        "margin_capacity": run(margin, None),
        "margin_reads": run(margin, READ_RATE),
        "authorization_capacity": run(authorize, None),
        "authorizations": run(authorize, TARGET_AUTH_RPS),
        "numpy_authorisation_ms": numpy_authorisation_ms(server, accounts[0]),
    }
    with server.client() as c:
        m = c.get("/metrics").text
    out["epoch_seconds"] = {stage: _metric_mean(m, stage) for stage in ("read", "compute")}
    out["epochs"] = _counter(m, 'omnimargin_epochs_total{outcome="ok"}')
    out["approved"] = _counter(m, 'omnimargin_authorizations_total{outcome="approved"}')
    out["refused"] = _counter(m, 'omnimargin_authorizations_total{outcome="refused"}')
    out["columns"] = _columns(server)
    reads, auths = out["margin_reads"], out["authorizations"]
    out["pass"] = bool(
        reads["p99_ms"] < TARGET_READ_P99_MS
        and auths["rps"] >= 0.97 * TARGET_AUTH_RPS
        and auths["p99_ms"] < TARGET_AUTH_P99_MS
        and set(reads["statuses"]) == {"200"}
        and set(auths["statuses"]) == {"200"}
    )
    return out


def _columns(server: Server) -> int:
    from aggregator.accounts import universe_columns

    return len(universe_columns(load_config(server.config_path)))


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _metric_mean(text: str, stage: str) -> float | None:
    total = _counter(text, f'omnimargin_epoch_seconds_sum{{stage="{stage}"}}')
    count = _counter(text, f'omnimargin_epoch_seconds_count{{stage="{stage}"}}')
    return round(total / count, 3) if count else None


def section(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["pass"] else "FAIL"
    rows = [
        ("`GET /healthz` (the HTTP stack's own limit)", r["healthz"]),
        ("margin reads `GET /v1/accounts/{a}/margin`", r["margin_capacity"]),
        ("margin reads", r["margin_reads"]),
        ("authorisations `POST /v1/authorizations`", r["authorization_capacity"]),
        ("authorisations", r["authorizations"]),
    ]
    lines = [
        "<!-- service:start -->",
        "## Service under load (devnet, `python -m benchmarks.service_load`)",
        "",
        f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {r['accounts']:,} "
        f"accounts, {r['columns']} risk columns, 100,000 scenarios per epoch, an epoch every "
        f"10 s (mean read {r['epoch_seconds']['read']} s, compute "
        f"{r['epoch_seconds']['compute']} s), {r['clients']} concurrent clients from one "
        "process on the same 2-core machine as the server and the three anvil nodes.",
        f"* Targets (margin p99 < {TARGET_READ_P99_MS:g} ms at {READ_RATE:g} reads/s; "
        f"authorisations >= {TARGET_AUTH_RPS:g}/s with p99 < {TARGET_AUTH_P99_MS:g} ms): "
        f"**{verdict}**. Closed loop: each client sends when answered (the capacity); open "
        "loop: the clients send at a fixed total rate and latency counts from the scheduled "
        "time.",
        f"* Plain NumPy maths of one authorisation in-process (P&L and IM with the position): "
        f"{r['numpy_authorisation_ms']} ms. Approved {r['approved']:.0f}, refused "
        f"{r['refused']:.0f} (refused: did not fit the free margin left).",
        "",
        "| endpoint | load | requests | per s | p50 ms | p99 ms | max ms | statuses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, x in rows:
        lines.append(
            f"| {name} | {x['mode']} | {x['requests']:,} | {x['rps']} | {x['p50_ms']} | "
            f"{x['p99_ms']} | "
            f"{x['max_ms']} | {x['statuses']} |"
        )
    return "\n".join([*lines, "<!-- service:end -->", ""])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import METHOD, RESULTS_PATH, write_sections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-results", action="store_true", help="Do not touch RESULTS.md.")
    args = parser.parse_args(argv)
    record = run(args.accounts, args.clients, args.seconds)
    print(json.dumps(record))
    if not args.no_results:
        write_sections(RESULTS_PATH, METHOD, {"service": section(record)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
