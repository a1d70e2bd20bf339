"""Soak run: a real ``omnimargin serve`` taking an epoch every 2 s under a steady load of margin
reads and authorisations for a bounded time; its memory must not grow (< 10 % after warm-up)
and no response may be an error. Not part of the test suite.

    python -m benchmarks.soak [--minutes 10] [--accounts 200] [--reads 100] [--auths 20]
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
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import tomli_w

from aggregator.cli_devnet import replay_history
from aggregator.service.launcher import Server, start_server
from benchmarks.chain_reads import bench_accounts
from benchmarks.service_load import seed
from chains.config import load_config
from chains.devnet import devnet_down, devnet_up
from chains.devnet_nodes import free_ports

TARGET_GROWTH = 0.10
WARM_UP = 0.2  # the first fifth of the run: caches fill, the first epochs settle


async def drive(
    server: Server, accounts: list[str], seconds: float, reads: float, auths: float
) -> dict[str, Any]:
    """Open-loop load (reads/s and auths/s) while sampling the server's RSS every 2 s."""
    proc = psutil.Process(server.process.pid)
    lat: dict[str, list[float]] = {"margin": [], "authorization": []}
    statuses: dict[str, int] = {}
    errors: list[str] = []
    rss: list[tuple[float, int]] = []
    start = time.perf_counter()

    async with aiohttp.ClientSession(server.url, headers=server.auth) as session:

        async def one(kind: str, due: float, account: str) -> None:
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))
            try:
                if kind == "margin":
                    req = session.get(f"/v1/accounts/{account}/margin")
                else:
                    body = {
                        "account": account,
                        "chain_id": 31337002,
                        "market": "ETH",
                        "size_delta": "0.0001",
                    }
                    req = session.post("/v1/authorizations", json=body)
                async with req as r:
                    await r.read()
                    statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
                    if r.status != 200:
                        errors.append(f"{kind} {r.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{kind} {type(exc).__name__}")
            lat[kind].append((time.perf_counter() - due) * 1000)

        async def stream(kind: str, rate: float, seed_: int) -> None:
            rng = random.Random(seed_)
            tasks, k = [], 0
            while (due := start + k / rate) < start + seconds:
                k += 1
                tasks.append(asyncio.create_task(one(kind, due, rng.choice(accounts))))
                if len(tasks) > 512:
                    await asyncio.gather(*tasks[:256])
                    del tasks[:256]
                await asyncio.sleep(max(due - time.perf_counter(), 0.0))
            await asyncio.gather(*tasks)

        async def sample() -> None:
            while time.perf_counter() - start < seconds:
                rss.append((time.perf_counter() - start, proc.memory_info().rss))
                await asyncio.sleep(2.0)

        await asyncio.gather(
            stream("margin", reads, 1), stream("authorization", auths, 2), sample()
        )
    warm = [m for t, m in rss if t >= WARM_UP * seconds]
    base, end = warm[0], float(np.median([m for _, m in rss[-5:]]))
    return {
        "seconds": seconds,
        "statuses": statuses,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:10],
        "rss_mb_after_warm_up": round(base / 2**20, 1),
        "rss_mb_end": round(end / 2**20, 1),
        "rss_mb_max": round(max(m for _, m in rss) / 2**20, 1),
        "growth": round((end - base) / base, 4),
        **{
            f"{k}_p{q}_ms": round(float(np.percentile(v, q)), 2)
            for k, v in lat.items()
            for q in (50, 99)
        },
    }


def run(minutes: float, n_accounts: int, reads: float, auths: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omnimargin-soak-") as tmp:
        directory = Path(tmp)
        info = asyncio.run(devnet_up(directory, 3, history=replay_history(), ports=free_ports(3)))
        try:
            accounts = bench_accounts(n_accounts)
            data = tomllib.loads(info.config_path.read_text())
            data["accounts"] = [*data["accounts"], *accounts]
            data["service"] = {**data["service"], "epoch_interval_s": 2.0, "stale_after_s": 120.0}
            path = directory / "soak.toml"
            path.write_text(tomli_w.dumps(data))
            asyncio.run(seed(load_config(path), accounts))
            server = start_server(path, directory / "serve.log", ready_s=300)
            try:
                record = asyncio.run(drive(server, accounts, minutes * 60, reads, auths))
                with server.client() as c:
                    metrics = c.get("/metrics").text
            finally:
                server.stop()
        finally:
            devnet_down(directory)
    epochs = [
        ln for ln in metrics.splitlines() if ln.startswith('omnimargin_epochs_total{outcome="ok"}')
    ]
    record.update(
        accounts=n_accounts,
        reads_per_s=reads,
        auths_per_s=auths,
        epochs=float(epochs[0].split()[-1]) if epochs else 0.0,
    )
    record["pass"] = record["errors"] == 0 and record["growth"] < TARGET_GROWTH
    return record


def section(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["pass"] else "FAIL"
    return "\n".join(
        [
            "<!-- soak:start -->",
            "## Soak (devnet, `python -m benchmarks.soak`)",
            "",
            f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"{r['seconds'] / 60:g} minutes, {r['accounts']} accounts, an epoch every 2 s "
            f"({r['epochs']:.0f} epochs), {r['reads_per_s']:g} margin reads/s and "
            f"{r['auths_per_s']:g} authorisations/s, open loop.",
            f"* Targets (memory growth after warm-up < {TARGET_GROWTH:.0%}, no error response):"
            f" **{verdict}** — RSS {r['rss_mb_after_warm_up']} MB after warm-up, "
            f"{r['rss_mb_end']} MB at the end (growth {r['growth']:.1%}, max "
            f"{r['rss_mb_max']} MB); {r['errors']} errors; statuses {r['statuses']}.",
            f"* Latency: margin reads p50 {r['margin_p50_ms']} ms, p99 {r['margin_p99_ms']} ms;"
            f" authorisations p50 {r['authorization_p50_ms']} ms, p99 "
            f"{r['authorization_p99_ms']} ms.",
            "<!-- soak:end -->",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import METHOD, RESULTS_PATH, write_sections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--reads", type=float, default=100.0)
    parser.add_argument("--auths", type=float, default=20.0)
    parser.add_argument("--no-results", action="store_true", help="Do not touch RESULTS.md.")
    args = parser.parse_args(argv)
    record = run(args.minutes, args.accounts, args.reads, args.auths)
    print(json.dumps(record))
    if not args.no_results:
        write_sections(RESULTS_PATH, METHOD, {"soak": section(record)})
    return 0 if record["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
