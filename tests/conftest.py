"""Shared fixtures: real services started once per test run (a Ray, a devnet of three anvil
chains with the contracts deployed and accounts seeded).

Tests that change oracle state, balances or time must use their own devnet
(``devnet_factory``), so the shared one stays as ``devnet up`` leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from aggregator.cli_devnet import replay_history
from aggregator.service.launcher import Server, start_server
from chains.config import OmnimarginConfig, load_config
from chains.devnet import DevnetInfo, History, devnet_down, devnet_up
from chains.devnet_nodes import anvil_binary, free_ports
from chains.errors import DevnetError
from tests.reliability import ForTest, Recorder

# the real daily closes shipped in aggregator/data/prices, last five days
HISTORY: History = {a: days[-5:] for a, days in replay_history().items()}


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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real local Ray with 2 CPUs, started once for the whole run."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def service(
    devnet_factory: DevnetFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real ``omnimargin serve`` (uvicorn on loopback) over a devnet of its own, with an
    epoch every second; started once for the whole run."""
    info = devnet_factory(3)
    server = start_server(
        info.config_path, tmp_path_factory.mktemp("service") / "serve.log", "--epoch-interval", "1"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reliability_run() -> Iterator[Recorder]:
    """The fault suite's counts, written to build/reliability.json at the end of the run."""
    recorder = Recorder()
    yield recorder
    recorder.write()


@pytest.fixture
def reliability(reliability_run: Recorder, request: pytest.FixtureRequest) -> ForTest:
    """``reliability.record(family, fault, injected, behaviour, cases, wrong)``: one row of
    docs/RELIABILITY.md (tests/reliability.py)."""
    return reliability_run.for_test(request.node.nodeid)
