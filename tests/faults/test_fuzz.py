"""Hypothesis fuzz of the three files a user writes: the config (TOML), the portfolio (JSON)
and the venues file (JSON). Inputs are a valid file with one value replaced, deleted or added
at a random key path, and raw text or bytes. Every bad input must raise the package's error
naming the field (or the bad value), never another exception."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.accounts import load_venues
from aggregator.errors import InputError
from aggregator.portfolio_file import load_portfolio
from chains.config import load_config
from chains.errors import ConfigError
from tests.faults.helpers import ACCOUNT
from tests.reliability import ForTest

FAMILY = "Input files"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 1_000
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
VENUES = [
    {"venue": "cex-a", "account": ACCOUNT, "asset": "BTC", "quantity": 1.5},
    {"venue": "cex-b", "account": ACCOUNT, "asset": "USDC", "quantity": -2500},
]

Path_ = tuple[str | int, ...]


def paths(data: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key path in ``data`` (dict keys and list indices), parents before children."""
    out: list[Path_] = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, (*prefix, i))
    return out


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


BAD_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["0x" + "00" * 20, "0xZZ", "http://", "-1", "1e400", "NaN", ""]),
)


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> tuple[Any, str, str]:
    """``base`` (a deep copy) with one change; the changed path and a text of the change."""
    data = json.loads(json.dumps(base, default=str))
    path = draw(st.sampled_from(paths(data)))
    *parent_path, last = path
    parent = data
    for part in parent_path:
        parent = parent[part]
    how = draw(st.sampled_from(["replace", "delete", "add"]))
    if how == "delete":
        del parent[last]
        # a list item gone shifts the others: any clear error about what refers to it will do
        return data, "" if isinstance(last, int) else dotted(path), ""
    if how == "add" and isinstance(parent, dict):
        name = draw(st.sampled_from(["unknown_key", "extra", "rpc"]))
        parent[name] = draw(BAD_VALUES)
        return data, dotted((*parent_path, name)), name
    value = draw(BAD_VALUES)
    parent[last] = value
    return data, dotted(path), str(value)


def _named(message: str, field: str, value: str) -> bool:
    """The error names the mutated field, a field inside or around it, its key (a cross
    reference: ``tokens[4].bridge: unknown bridge 'x' (add it to [[bridges]])``) or the bad
    value."""
    keys = [p.split(": ", 1)[0] for p in message.split("; ")]
    near = any(k.startswith(field) or field.startswith(k) for k in keys if k)
    key = field.rsplit(".", 1)[-1].split("[", 1)[0].removesuffix("s")  # tokens: token's
    return near or bool(key and key in message) or bool(value and value in message)


def _run(
    load: Callable[[Path], Any], error: type[Exception], path: Path, text: str | bytes
) -> tuple[bool, str]:
    """(raised the package's error, its message); any other exception propagates."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    try:
        load(path)
    except error as exc:
        return True, str(exc)
    return False, ""


def _config_base() -> dict[str, Any]:
    return tomllib.loads((ROOT / "examples" / "mainnet.toml").read_text())


def _toml(data: Any) -> str | None:
    try:
        return tomli_w.dumps(data)
    except (TypeError, ValueError):
        return None  # not expressible in TOML (a list of mixed tables, ...): not a file


CASES: dict[
    str, tuple[Callable[[Path], Any], type[Exception], Any, Callable[[Any], str | None]]
] = {
    "config file (TOML)": (load_config, ConfigError, _config_base(), _toml),
    "portfolio JSON": (
        load_portfolio,
        InputError,
        json.loads((ROOT / "examples" / "portfolio.json").read_text()),
        json.dumps,
    ),
    "venues file (JSON)": (load_venues, InputError, VENUES, json.dumps),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_bad_file_is_a_clear_error(name: str, tmp_path: Path, reliability: ForTest) -> None:
    load, error, base, dump = CASES[name]
    prefix = "venues" if name.startswith("venues") else ""
    file = tmp_path / "input"
    text = dump(base)
    assert text is not None and _run(load, error, file, text) == (False, "")  # base is valid
    counts = {"cases": 0, "errors": 0}
    unclear: list[str] = []

    @SETTINGS
    @given(mutated(base))
    def structured(case: tuple[Any, str, str]) -> None:
        data, field, value = case
        field = prefix + field
        text = dump(data)
        if text is None:
            return
        counts["cases"] += 1
        raised, message = _run(load, error, file, text)
        counts["errors"] += raised
        if raised and not _named(message, field, value):
            unclear.append(f"{field} = {value!r}: {message}")

    @SETTINGS
    @given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
    def raw(text: str | bytes) -> None:
        counts["cases"] += 1
        raised, message = _run(load, error, file, text)
        counts["errors"] += raised
        if raised and not message.split(":", 1)[0]:
            unclear.append(f"{text!r}: {message}")

    structured()
    raw()
    reliability.record(
        FAMILY,
        f"{name} fuzzed",
        f"{counts['cases']:,} inputs: the valid example with one value replaced, deleted or "
        "added at a random key path; random text and bytes",
        f"{counts['errors']:,} rejected with {error.__name__} naming the field or the value; "
        "the rest valid; never another exception",
        counts["cases"],
        len(unclear),
    )
    assert not unclear, unclear[:5]
