"""The benchmark grid: which (accounts, assets, scenarios) cases run, and on which executors."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

ACCOUNTS = (1, 1_000, 10_000)
ASSETS = (16, 64)
SCENARIOS = (100_000, 1_000_000)
EXECUTORS = ("local", "ray")

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}
_CASE_RE = re.compile(r"^\s*(\d+[km]?)x(\d+[km]?)x(\d+[km]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Case:
    """One benchmark case: A accounts, n assets, M scenarios."""

    accounts: int
    assets: int
    scenarios: int

    @property
    def name(self) -> str:
        """Spelled as on the command line: ``1000x16x100000``."""
        return f"{self.accounts}x{self.assets}x{self.scenarios}"

    @property
    def large(self) -> bool:
        """Opt-in with ``--full``: 10,000 accounts or 1,000,000 scenarios."""
        return self.accounts >= 10_000 or self.scenarios >= 1_000_000


#: the case the targets are stated for
HEADLINE = Case(1_000, 16, 100_000)


def grid() -> list[Case]:
    """All 12 cases of accounts x assets x scenarios, smallest first."""
    cases = [Case(a, n, m) for m, a, n in itertools.product(SCENARIOS, ACCOUNTS, ASSETS)]
    return sorted(cases, key=lambda c: (c.large, c.scenarios, c.accounts, c.assets))


def _count(text: str) -> int:
    """``100000``, ``100k`` or ``1m`` -> an integer."""
    text = text.lower()
    unit = text[-1] if text[-1] in "km" else ""
    return int(text.removesuffix(unit)) * _SUFFIX[unit]


def parse_case(text: str) -> Case:
    """Parse ``ACCOUNTSxASSETSxSCENARIOS`` (``1000x16x100000`` or ``1000x16x100k``).

    Raises
    ------
    ValueError
        When the text is not three positive counts joined by ``x``.
    """
    match = _CASE_RE.match(text)
    if match is None:
        raise ValueError(
            f"bad case {text!r}: expected ACCOUNTSxASSETSxSCENARIOS, e.g. 1000x16x100k"
        )
    accounts, assets, scenarios = (_count(g) for g in match.groups())
    if min(accounts, assets, scenarios) < 1:
        raise ValueError(f"bad case {text!r}: every count must be >= 1")
    return Case(accounts, assets, scenarios)


def select_cases(spec: str | None, full: bool) -> list[Case]:
    """The cases to run.

    Parameters
    ----------
    spec : comma-separated case names (``--cases``); None for the default set.
    full : include the large cases (``--full``); ignored when ``spec`` names cases.
    """
    if spec:
        chosen = [parse_case(part) for part in spec.split(",") if part.strip()]
        return list(dict.fromkeys(chosen))
    return [c for c in grid() if full or not c.large]


def plan_runs(cases: list[Case], executor: str | None) -> dict[Case, tuple[str, ...]]:
    """The executors each case runs on, in order.

    ``None`` (the default): every case on the local executor, and the headline case on Ray
    as well. ``local`` or ``ray``: every case on that executor only. ``both``: every case on both.
    """
    if executor is None:
        return {c: EXECUTORS if c == HEADLINE else ("local",) for c in cases}
    if executor == "both":
        return dict.fromkeys(cases, EXECUTORS)
    if executor in EXECUTORS:
        return dict.fromkeys(cases, (executor,))
    raise ValueError(f"executor must be local, ray or both, got {executor!r}")
