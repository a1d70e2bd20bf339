"""Devnets of this package's own (tests/chains/conftest.py's fixtures are not visible here)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.config import OmnimarginConfig, load_config, parse_config
from chains.devnet import devnet_down, devnet_up
from chains.devnet_nodes import anvil_binary, free_ports
from chains.errors import DevnetError

StartDevnet = Callable[[], OmnimarginConfig]


@pytest.fixture(scope="session")
def start_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartDevnet]:
    """Start a fresh three-chain devnet (its transfer still in flight); all stop at the end."""
    try:
        anvil_binary()
    except DevnetError as exc:
        pytest.fail(str(exc))
    started: list[Path] = []

    def start() -> OmnimarginConfig:
        where = tmp_path_factory.mktemp("bridge-devnet")
        info = asyncio.run(devnet_up(where, 3, ports=free_ports(3)))
        started.append(where)
        return load_config(info.config_path)

    yield start
    for where in started:
        with contextlib.suppress(DevnetError):
            devnet_down(where)


def _addr(n: int) -> str:
    return "0x" + f"{n:040x}"


@pytest.fixture
def small_data() -> dict[str, Any]:
    """Config data: three chains, USDC native everywhere plus USDC.e on Arbitrum, CCTP and a
    canonical bridge, a USDC depeg (no RPC is ever called)."""
    chain = {"multicall3": "0xcA11bde05977b3631167028862bE2a173976CA11"}
    return {
        "chains": [
            {**chain, "chain_id": 1, "name": "ethereum", "rpc_urls": ["http://127.0.0.1:1"]},
            {**chain, "chain_id": 42161, "name": "arb", "rpc_urls": ["http://127.0.0.1:2"]},
            {**chain, "chain_id": 8453, "name": "base", "rpc_urls": ["http://127.0.0.1:3"]},
        ],
        "tokens": [
            {"chain_id": 1, "address": _addr(1), "symbol": "USDC", "decimals": 6, "asset": "USDC"},
            {"chain_id": 1, "address": _addr(2), "symbol": "WETH", "decimals": 18, "asset": "ETH"},
            {
                "chain_id": 42161,
                "address": _addr(3),
                "symbol": "USDC",
                "decimals": 6,
                "asset": "USDC",
            },
            {
                "chain_id": 42161,
                "address": _addr(4),
                "symbol": "USDC.e",
                "decimals": 6,
                "asset": "USDC",
                "kind": "canonical_bridge",
                "bridge": "arbitrum-canonical",
            },
            {
                "chain_id": 8453,
                "address": _addr(5),
                "symbol": "USDC",
                "decimals": 6,
                "asset": "USDC",
            },
        ],
        "bridges": [
            {
                "name": "cctp",
                "kind": "cctp",
                "failure_probability": 0.0002,
                "loss_given_failure": 1.0,
                "contracts": {"1": _addr(10), "42161": _addr(11), "8453": _addr(12)},
                "domains": {"1": 0, "42161": 3, "8453": 6},
            },
            {
                "name": "arbitrum-canonical",
                "kind": "canonical",
                "failure_probability": 0.0005,
                "loss_given_failure": 0.9,
            },
        ],
        "depegs": [{"asset": "USDC", "probability": 0.001, "loss": 0.1}],
    }


@pytest.fixture
def small_config(small_data: dict[str, Any]) -> OmnimarginConfig:
    return parse_config(small_data)
