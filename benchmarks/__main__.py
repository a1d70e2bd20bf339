"""``python -m benchmarks``: time the risk engine against a naive baseline and a reference.

One JSON object per case and executor is printed on stdout, one per line; progress goes to
stderr; ``benchmarks/RESULTS.md`` is rewritten with the run's table (``--no-results`` to skip).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.cases import plan_runs, select_cases
from benchmarks.machine import machine_info
from benchmarks.params import real_parameters
from benchmarks.results import RESULTS_PATH, RunContext, write_results
from benchmarks.runner import ExecutorPool, Settings, run_case, say
from montecarlo import resolve_backend
from montecarlo.errors import MonteCarloError


@dataclass(frozen=True)
class Options:
    """The parsed command line."""

    full: bool
    cases: str | None
    executor: str | None
    results: Path | None
    settings: Settings


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line into :class:`Options`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--full", action="store_true", help="add 10,000 accounts and 1M scenarios")
    p.add_argument("--cases", help="comma-separated AxNxM cases, e.g. 1000x16x100000,1x64x100k")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument(
        "--executor",
        choices=("local", "ray", "both"),
        help="default: local for every case, plus ray for 1000x16x100000",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs per figure; best is kept")
    p.add_argument("--baseline-seconds", type=float, default=10.0, help="naive baseline budget")
    p.add_argument("--ray-workers", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="stage profile for every case")
    p.add_argument("--results", type=Path, default=RESULTS_PATH, help="markdown file to write")
    p.add_argument("--no-results", action="store_true", help="do not write the markdown file")
    a = p.parse_args(argv)
    if a.repeat < 1 or a.ray_workers < 1 or a.baseline_seconds < 0:
        p.error("--repeat and --ray-workers must be >= 1, --baseline-seconds >= 0")
    settings = Settings(a.backend, a.repeat, a.baseline_seconds, a.ray_workers, a.profile)
    results = None if a.no_results else a.results
    return Options(a.full, a.cases, a.executor, results, settings)


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases; 0 on success, 2 on a bad case list or an unusable backend."""
    opts = parse_args(argv)
    try:
        runs = plan_runs(select_cases(opts.cases, opts.full), opts.executor)
        resolve_backend(opts.settings.backend)
    except (ValueError, MonteCarloError) as exc:
        say(f"error: {exc}")
        return 2
    machine = machine_info(with_gpu=opts.settings.backend == "cupy")
    say(f"machine: {json.dumps(machine)}")
    real = real_parameters()
    say("cases: " + ", ".join(f"{c.name} on {'+'.join(e)}" for c, e in runs.items()))
    pool = ExecutorPool(opts.settings)
    records = []
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        for case, executors in runs.items():
            for rec in run_case(case, executors, opts.settings, real, pool):
                rec["date"], rec["machine"] = date, machine
                print(json.dumps(rec), flush=True)
                records.append(rec)
    finally:
        pool.close()
    if opts.results is not None and records:
        command = shlex.join(
            ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
        )
        ctx = RunContext(date, command, machine, real, opts.settings.repeat)
        write_results(opts.settings.backend, records, ctx, opts.results)
        say(f"wrote {opts.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
