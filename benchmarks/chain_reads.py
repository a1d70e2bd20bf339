"""Chain-read benchmark: 1,000 accounts x 5 tokens on each of the 3 devnet chains.

Starts its own devnet on free ports, mints every token to 1,000 fresh accounts (and locks part
of it in each chain's vault for a tenth of them), then times full snapshots of all chains and
counts the JSON-RPC requests each chain received (counted by the provider, not estimated).
Target: under 2 s for the whole snapshot and under 20 requests per chain.

    python -m benchmarks.chain_reads [--accounts 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from eth_utils import keccak, to_checksum_address

from aggregator.cli_devnet import replay_history
from chains.config import OmnimarginConfig, load_config
from chains.devnet import devnet_down, devnet_up
from chains.devnet_control import mint_accounts
from chains.devnet_nodes import free_ports
from chains.reader import ChainReader, read_chains

TARGET_S = 2.0
TARGET_REQUESTS = 20


def bench_accounts(n: int) -> list[str]:
    """``n`` deterministic addresses no key controls (keccak of an index)."""
    return [str(to_checksum_address(keccak(b"omnimargin-bench-%d" % i)[-20:])) for i in range(n)]


async def seed(cfg: OmnimarginConfig, accounts: list[str]) -> None:
    for chain in cfg.chains:
        for i, token in enumerate(cfg.tokens_on(chain.chain_id)):
            amounts = [(j + 1) * 10**token.decimals + i for j in range(len(accounts))]
            await mint_accounts(cfg, chain.chain_id, token.symbol, accounts, amounts)


async def measure(cfg: OmnimarginConfig, accounts: list[str], repeat: int) -> dict[str, Any]:
    readers = [ChainReader(cfg, c) for c in cfg.chains]
    try:
        await read_chains(readers, accounts[:1])  # warm up: code checks, connections
        walls, per_chain = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            snaps = await read_chains(readers, accounts)
            walls.append(time.perf_counter() - started)
            per_chain.append(snaps)
            if not all(s.ok and not s.errors for s in snaps):
                raise RuntimeError(f"a chain failed: {[s.errors for s in snaps]}")
    finally:
        await asyncio.gather(*(r.client.close() for r in readers))
    last = per_chain[-1]
    return {
        "case": f"chain_reads {len(accounts)} accounts x 5 tokens x {len(last)} chains",
        "accounts": len(accounts),
        "tokens_per_chain": {s.name: len(cfg.tokens_on(s.chain_id)) for s in last},
        "balances_read": {s.name: len(s.balances) for s in last},
        "wall_s_best": round(min(walls), 4),
        "wall_s_median": round(median(walls), 4),
        "requests_per_chain": {s.name: s.requests for s in last},
        "chain_read_s": {s.name: round(s.read_s, 4) for s in last},
        "batch_size": {c.name: c.batch_size for c in cfg.chains},
        "target_wall_s": TARGET_S,
        "target_requests_per_chain": TARGET_REQUESTS,
        "pass": min(walls) < TARGET_S and max(s.requests for s in last) < TARGET_REQUESTS,
    }


def run(n_accounts: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omnimargin-bench-") as tmp:
        directory = Path(tmp)
        info = asyncio.run(devnet_up(directory, 3, history=replay_history(), ports=free_ports(3)))
        try:
            cfg = load_config(info.config_path)
            accounts = bench_accounts(n_accounts)
            started = time.perf_counter()
            asyncio.run(seed(cfg, accounts))
            print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            return asyncio.run(measure(cfg, accounts, repeat))
        finally:
            devnet_down(directory)


def section(record: dict[str, Any]) -> str:
    """The chain-read section of RESULTS.md."""
    verdict = "PASS" if record["pass"] else "FAIL"
    lines = [
        "<!-- chains:start -->",
        "## Chain reads (devnet, `python -m benchmarks.chain_reads`)",
        "",
        f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{record['accounts']:,} accounts x 5 tokens on each of 3 anvil chains, read at a pinned "
        "block through Multicall3 aggregate3 (vault + wallet balances, every feed, the sequencer).",
        f"* Target (< {TARGET_S} s for all chains, < {TARGET_REQUESTS} JSON-RPC requests per "
        f"chain): **{verdict}** — best {record['wall_s_best']} s, "
        f"median {record['wall_s_median']} s.",
        "",
        "| chain | tokens | balances read | requests (counted) | read s | calls per aggregate3 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, requests in record["requests_per_chain"].items():
        lines.append(
            f"| {name} | {record['tokens_per_chain'][name]} | {record['balances_read'][name]} | "
            f"{requests} | {record['chain_read_s'][name]} | {record['batch_size'][name]} |"
        )
    return "\n".join([*lines, "<!-- chains:end -->", ""])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import METHOD, RESULTS_PATH, write_sections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-results", action="store_true", help="Do not touch RESULTS.md.")
    args = parser.parse_args(argv)
    record = run(args.accounts, args.repeat)
    print(json.dumps(record))
    if not args.no_results:
        write_sections(RESULTS_PATH, METHOD, {"chains": section(record)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
