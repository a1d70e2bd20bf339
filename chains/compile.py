"""Compile the Vyper contracts in ``chains/contracts`` with the pinned ``vyper`` package.

Outputs are cached on disk, keyed by sha256 of (source, vyper version), so a devnet start
after the first compiles nothing. The cache is ``$OMNIMARGIN_VYPER_CACHE``, else
``$XDG_CACHE_HOME/omnimargin/vyper``, else ``~/.cache/omnimargin/vyper``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

from chains.errors import DevnetError

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
CACHE_ENV = "OMNIMARGIN_VYPER_CACHE"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI, deploy (init) bytecode and runtime bytecode, as hex."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    runtime: str


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omnimargin" / "vyper"


def contract_names() -> list[str]:
    """Names of the contracts shipped in ``chains/contracts`` (file stems)."""
    return sorted(p.stem for p in CONTRACTS_DIR.glob("*.vy"))


def _vyper_version() -> str:
    from importlib.metadata import version

    return version("vyper")


def _cache_key(source: str, vyper_version: str) -> str:
    return hashlib.sha256(f"{vyper_version}\0{source}".encode()).hexdigest()


def _compile(name: str, source: str) -> dict[str, Any]:
    import vyper  # slow to import: only when the cache misses

    try:
        out = vyper.compile_code(
            source,
            contract_path=f"{name}.vy",
            output_formats=["abi", "bytecode", "bytecode_runtime"],
        )
    except Exception as exc:  # vyper raises its own tree; report it as ours, with the file
        raise DevnetError(f"contract {name}.vy does not compile: {exc}") from exc
    return {"abi": out["abi"], "bytecode": out["bytecode"], "runtime": out["bytecode_runtime"]}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def compile_contract(name: str, cache_dir: Path | None = None) -> Artifact:
    """Compile ``chains/contracts/<name>.vy``, or read it from the cache."""
    path = CONTRACTS_DIR / f"{name}.vy"
    try:
        source = path.read_text()
    except OSError as exc:
        known = ", ".join(contract_names())
        raise DevnetError(
            f"contract {name!r}: cannot read {path} ({exc.strerror}); known: {known}"
        ) from None
    key = _cache_key(source, _vyper_version())
    cached = (cache_dir or default_cache_dir()) / f"{name}-{key}.json"
    data: dict[str, Any] | None = None
    try:
        data = json.loads(cached.read_text())
    except (OSError, ValueError):
        data = None
    if data is None or not {"abi", "bytecode", "runtime"} <= data.keys():
        data = _compile(name, source)
        with contextlib.suppress(OSError):  # a read-only cache only costs time
            _write_atomic(cached, json.dumps(data))
    return Artifact(name, tuple(data["abi"]), data["bytecode"], data["runtime"])


@cache
def load_artifact(name: str) -> Artifact:
    """The compiled contract ``name`` (``"ERC20"``, ``"Multicall3"``, ...), cached per process."""
    return compile_contract(name)


def runtime_codehash(name: str) -> str:
    """keccak256 of the contract's runtime bytecode, ``0x``-prefixed hex.

    For a contract without immutables (Multicall3) this is what ``eth_getCode`` hashes to, so a
    reader can check at start-up that the configured address holds the code it expects.
    """
    runtime = load_artifact(name).runtime
    return "0x" + keccak(hexstr=runtime).hex()
