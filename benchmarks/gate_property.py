"""The gate's property test, run longer than ``make test`` does: more examples, more steps.

Runs ``tests/aggregator/test_gate_stateful.py`` (hypothesis ``RuleBasedStateMachine`` over a real
devnet and server) with ``GATE_EXAMPLES`` and ``GATE_STEPS`` raised; its counts go to
``build/reliability.json`` as a row of their own, and ``python -m benchmarks.reliability``
renders them into docs/RELIABILITY.md::

    python -m benchmarks.gate_property [--examples 40] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/aggregator/test_gate_stateful.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    env = {**os.environ, "GATE_EXAMPLES": str(args.examples), "GATE_STEPS": str(args.steps)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=0", TEST]
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode == 0:
        subprocess.run([sys.executable, "-m", "benchmarks.reliability"], cwd=ROOT, check=True)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
