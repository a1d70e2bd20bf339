"""A real devnet (three anvil chains, contracts deployed, accounts seeded), started once per run.

Tests that change oracle state or time must use their own devnet (``devnet_factory``), so the
shared one stays as ``devnet up`` leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest

from chains.config import OmnimarginConfig, load_config
from chains.devnet import DevnetInfo, History, devnet_down, devnet_up
from chains.devnet_nodes import anvil_binary, free_ports
from chains.errors import DevnetError

# the last five real daily closes shipped in aggregator/data/prices
HISTORY: History = {
    "BTC": [
        ("2025-02-07", Decimal("96529.0859375")),
        ("2025-02-08", Decimal("96482.453125")),
        ("2025-02-09", Decimal("96500.09375")),
        ("2025-02-10", Decimal("97437.5546875")),
        ("2025-02-11", Decimal("95057.5390625")),
    ],
    "ETH": [
        ("2025-02-07", Decimal("2622.211181640625")),
        ("2025-02-08", Decimal("2632.308349609375")),
        ("2025-02-09", Decimal("2628.72119140625")),
        ("2025-02-10", Decimal("2661.166748046875")),
        ("2025-02-11", Decimal("2589.8212890625")),
    ],
    "USDC": [
        ("2025-02-07", Decimal("1.0001070499420166")),
        ("2025-02-08", Decimal("1.0000890493392944")),
        ("2025-02-09", Decimal("1.0000269412994385")),
        ("2025-02-10", Decimal("0.9999390244483948")),
        ("2025-02-11", Decimal("0.9999855756759644")),
    ],
    "LINK": [
        ("2025-02-07", Decimal("18.386972427368164")),
        ("2025-02-08", Decimal("18.464569091796875")),
        ("2025-02-09", Decimal("18.30515480041504")),
        ("2025-02-10", Decimal("18.766145706176758")),
        ("2025-02-11", Decimal("18.423974990844727")),
    ],
}


class Devnet(NamedTuple):
    config: OmnimarginConfig
    directory: Path


DevnetFactory = Callable[..., DevnetInfo]


def _require_anvil() -> None:
    try:
        anvil_binary()
    except DevnetError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def devnet_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetFactory]:
    """Start extra devnets on free ports in fresh directories; all are stopped at the end."""
    _require_anvil()
    started: list[Path] = []

    def start(chains: int = 3, directory: Path | None = None, start_day: int = -1) -> DevnetInfo:
        where = directory or tmp_path_factory.mktemp("devnet")
        ports = free_ports(chains)
        info = asyncio.run(
            devnet_up(where, chains, history=HISTORY, ports=ports, start_day=start_day)
        )
        started.append(where)
        return info

    yield start
    for where in started:
        with contextlib.suppress(DevnetError):  # a test may have stopped it already
            devnet_down(where)


@pytest.fixture(scope="session")
def devnet(devnet_factory: DevnetFactory) -> Devnet:
    """The shared devnet: do not change its prices, oracles or clock."""
    info = devnet_factory(3)
    return Devnet(load_config(info.config_path), info.directory)
