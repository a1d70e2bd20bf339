"""The gate's decision in-process: one authorisation with 0, 4 and 16 attestations outstanding.

On a devnet of its own, an account is funded and its state read once (100,000 scenarios, the
policy's FHS model); k attestations spread over the ETH, BTC and LINK markets and both signs
are approved and left outstanding; then one more request is decided again and again (approved,
then released so that k stays k), timing the whole ``decide`` (rows read, worst case over the
corners, the durable SQLite transaction, the EIP-712 signature). The baselines in the same run:
the plain NumPy what-if IM of one position (the cost of the maths before the gate's contract),
and the brute force over every subset of the outstanding set (what exactness costs without the
corner argument). Prints one JSON object; ``--results`` writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from aggregator.attestation import load_signer_key
from aggregator.authorize import AccountState, Request, change_of, decide, fresh_state
from aggregator.cli_devnet import replay_history
from aggregator.gate import Change, im_of
from aggregator.margin import im_with_position
from aggregator.store import Store
from chains.config import load_config
from chains.devnet import devnet_down, devnet_up
from chains.devnet_control import mint_accounts
from chains.devnet_nodes import free_ports

ACCOUNT = "0x000000000000000000000000000000000000bEEF"
B = 31337002
ORDERS = [("ETH", "0.5"), ("BTC", "-0.01"), ("LINK", "20"), ("ETH", "-0.3")]


def _ms(xs: list[float]) -> dict[str, float]:
    ordered = sorted(xs)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"p50_ms": round(statistics.median(xs) * 1000, 3), "p99_ms": round(p99 * 1000, 3)}


def _brute_force_s(state: AccountState, changes: list[Change]) -> float:
    """Seconds to evaluate IM on every subset of ``changes`` (the exact answer without the
    corner argument)."""
    pnl, scen, policy = state.scenario_pnl(), state.scen, state.policy
    t0 = time.perf_counter()
    for k in range(len(changes) + 1):
        for subset in itertools.combinations(changes, k):
            moved = pnl.copy()
            for c in subset:
                moved += scen.column_returns(c.column) * c.exposure_usd
            im_of(moved[None, :], policy)
    return time.perf_counter() - t0


def run(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="omnimargin-gate-") as tmp:
        directory = Path(tmp)
        info = asyncio.run(devnet_up(directory, 3, history=replay_history(), ports=free_ports(3)))
        try:
            cfg = load_config(info.config_path)
            asyncio.run(
                mint_accounts(cfg, 31337001, "USDC", [ACCOUNT], [10**6 * 10**6], locked=True)
            )
            key = load_signer_key(cfg.signer)
            out: dict[str, Any] = {"repeats": repeats, "scenarios": 0, "cases": []}
            for k in (0, 4, 16):
                store = Store(directory / f"gate-{k}.sqlite")
                state = fresh_state(cfg, store, key, ACCOUNT)
                out["scenarios"] = int(state.scen.returns.shape[0])
                changes = []
                for i in range(k):
                    market, size = ORDERS[i % len(ORDERS)]
                    d = decide(cfg, state, Request(ACCOUNT, B, market, Decimal(size)), store, key)
                    assert d["approved"], d["reason"]
                    c = change_of(state.world, "position", market, Decimal(size))
                    assert c is not None
                    changes.append(c)
                times, corners = [], 0
                request = Request(ACCOUNT, B, "ETH", Decimal("0.1"))
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    d = decide(cfg, state, request, store, key)
                    times.append(time.perf_counter() - t0)
                    assert d["approved"] and d["outstanding"] == k, d["reason"]
                    corners = d["corners"]
                    store.release(d["reservation_id"])
                store.close()
                case = {"outstanding": k, "corners": corners, **_ms(times)}
                if k <= 8:
                    case["brute_force_ms"] = round(_brute_force_s(state, changes) * 1000, 3)
                else:  # 2**k subsets: timed on 8 of them, scaled
                    per = _brute_force_s(state, changes[:8]) / 2**8
                    case["brute_force_ms_estimated"] = round(per * 2**k * 1000, 1)
                out["cases"].append(case)
            pnl = state.scenario_pnl()
            base = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                im_with_position(pnl, state.scen, "ETH", 100.0, state.policy)
                base.append(time.perf_counter() - t0)
            out["baseline_whatif_im"] = _ms(base)
            out["columns"] = len(state.scen.columns)
            return out
        finally:
            devnet_down(directory)


def section(r: dict[str, Any]) -> str:
    lines = [
        "<!-- gate:start -->",
        "## The gate's decision (in-process, `python -m benchmarks.gate_decision`)",
        "",
        f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {r['scenarios']:,} "
        f"scenarios x {r['columns']} risk columns, {r['repeats']} decisions per case, each the "
        "whole `decide` (live rows read, worst case over the corners, the durable SQLite "
        "transaction, the EIP-712 signature).",
        f"* Baseline in the same run: the plain NumPy what-if IM of one position "
        f"{r['baseline_whatif_im']['p50_ms']} ms (p50); and the maths alone of the brute force "
        "over every subset of the outstanding set (no SQLite, no signature), which the corner "
        "argument replaces: with 16 outstanding, 2^16 IM evaluations against at most 2^G "
        "(G = the (column, kind) groups, here 3 markets).",
        "",
        "| outstanding | corners evaluated | p50 ms | p99 ms | brute force over subsets ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in r["cases"]:
        brute = c.get("brute_force_ms", c.get("brute_force_ms_estimated"))
        mark = "" if "brute_force_ms" in c else " (estimated)"
        lines.append(
            f"| {c['outstanding']} | {c['corners']} | {c['p50_ms']} | {c['p99_ms']} | "
            f"{brute}{mark} |"
        )
    return "\n".join([*lines, "<!-- gate:end -->", ""])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results import METHOD, RESULTS_PATH, write_sections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--results", action="store_true", help="Write RESULTS.md's section.")
    args = parser.parse_args(argv)
    record = run(args.repeats)
    print(json.dumps(record))
    if args.results:
        write_sections(RESULTS_PATH, METHOD, {"gate": section(record)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
