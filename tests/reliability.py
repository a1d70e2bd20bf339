"""Counts of the fault suite, recorded by the tests themselves (docs/RELIABILITY.md).

A test injects a fault, checks every case, then calls ``reliability.record(...)`` with how many
cases it tried and how many gave a wrong result (it asserts that number is 0 right after, so a
failing run still writes the truth). At the end of the session the rows are merged into
``build/reliability.json`` by ``family/fault`` (a partial run replaces only its own rows) and
``python -m benchmarks.reliability`` renders the table from that file.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "build" / "reliability.json"


@dataclass
class Row:
    """One fault or attack: what was injected, what the system did, and the counts."""

    family: str
    fault: str
    injected: list[str]  # one text per distinct injection (several tests may share a row)
    behaviour: list[str]
    cases: int = 0
    wrong: int = 0
    tests: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.family}/{self.fault}"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out + ("+dirty" if dirty else "")


class Recorder:
    """The rows of one test session; a fault recorded by several tests adds up its counts."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def record(
        self,
        family: str,
        fault: str,
        injected: str,
        behaviour: str,
        cases: int,
        wrong: int = 0,
        test: str = "",
    ) -> None:
        """Add ``cases`` tried and ``wrong`` wrong results to the row ``family/fault``."""
        if cases <= 0 or wrong < 0 or wrong > cases:
            raise ValueError(f"{family}/{fault}: cases {cases}, wrong {wrong}")
        row = self.rows.setdefault(f"{family}/{fault}", Row(family, fault, [], []))
        if injected not in row.injected:
            row.injected.append(injected)
        if behaviour not in row.behaviour:
            row.behaviour.append(behaviour)
        row.cases += cases
        row.wrong += wrong
        if test and test not in row.tests:
            row.tests.append(test)

    def for_test(self, nodeid: str) -> ForTest:
        """This recorder, with every row naming the test ``nodeid``."""
        return ForTest(self, nodeid)

    def write(self, path: Path = DEFAULT_PATH) -> None:
        """Merge this session's rows into ``path`` (rows of other families/faults are kept)."""
        if not self.rows:
            return
        runs: dict[str, Any] = {}
        if path.is_file():
            try:
                runs = {r["family"] + "/" + r["fault"]: r for r in json.loads(path.read_text())}
            except (ValueError, KeyError, TypeError):
                runs = {}
        stamp = {
            "commit": _commit(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        for key, row in self.rows.items():
            texts = {"injected": "; ".join(row.injected), "behaviour": "; ".join(row.behaviour)}
            runs[key] = asdict(row) | texts | stamp
        path.parent.mkdir(parents=True, exist_ok=True)
        ordered = [runs[k] for k in sorted(runs)]
        path.write_text(json.dumps(ordered, indent=1) + "\n")


@dataclass(frozen=True)
class ForTest:
    """What a test gets from the ``reliability`` fixture: ``record`` naming the test."""

    recorder: Recorder
    nodeid: str

    def record(
        self, family: str, fault: str, injected: str, behaviour: str, cases: int, wrong: int = 0
    ) -> None:
        """See :meth:`Recorder.record`."""
        self.recorder.record(family, fault, injected, behaviour, cases, wrong, self.nodeid)
