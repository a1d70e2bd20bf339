"""Epochs in-process: the engine's figures for every account equal the CLI path's, the same
on Ray as locally, and a failed epoch keeps the previous one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator.accounts import margin_report, policy_of, scenario_model, scenario_set
from aggregator.service.epochs import EpochRunner, ExecutorSpec, compute_accounts
from aggregator.world import read_world
from chains.config import OmnimarginConfig
from montecarlo import LocalExecutor, RayExecutor
from tests.gate_helpers import blocks_held


@pytest.fixture(scope="module")
def runner(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EpochRunner]:
    cfg: OmnimarginConfig = devnet.config
    store = str(tmp_path_factory.mktemp("epochs") / "state.sqlite")
    r = EpochRunner(cfg, store, ExecutorSpec("local", workers=2), accounts=set(cfg.accounts))
    yield r
    r.close()


def test_epoch_figures_are_the_cli_paths(runner: EpochRunner) -> None:
    cfg = runner.cfg
    with blocks_held(cfg):
        epoch = asyncio.run(runner.step())
        world = asyncio.run(read_world(cfg, cfg.accounts))  # the CLI's read: the same blocks
    policy, _ = policy_of(cfg)
    scen = scenario_set(cfg, policy)
    assert np.array_equal(scen.returns, epoch.scen.returns)  # the same draws
    assert set(epoch.accounts) == set(cfg.accounts) and len(cfg.accounts) >= 3
    assert world.snapshot_hash == epoch.world.snapshot_hash  # no block mined between
    for account, state in epoch.accounts.items():
        cli, _ = margin_report(world, account, scen, policy)
        got = state.report
        assert got["equity"] == cli["equity"]
        for key in ("var", "es", "initial_margin", "maintenance_margin"):
            assert got[key] == pytest.approx(cli[key], rel=1e-12), (account, key)
        assert got["by_asset"] == pytest.approx(cli["by_asset"], rel=1e-9, abs=1e-9)
        assert got["risk_model_hash"] == cli["risk_model_hash"]
        pnl = epoch.scen.returns @ state.exposures
        assert float(np.sort(-pnl)[-1]) >= got["es"] >= got["var"]


def test_ray_epochs_equal_local_ones(runner: EpochRunner, ray_cluster: Any) -> None:
    """The function the epoch worker runs, with the engine local and on Ray."""
    cfg = runner.cfg
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, cfg.accounts))
    model = scenario_model(cfg, policy)
    with LocalExecutor(2) as pool:
        local = compute_accounts(world, cfg.accounts, model, policy, pool, {})
    ray = RayExecutor(workers=2)
    try:
        remote = compute_accounts(world, cfg.accounts, model, policy, ray, {})
    finally:
        ray.close()
    assert len(local) == len(cfg.accounts) >= 3
    for a in cfg.accounts:
        assert remote[a].summary == local[a].summary  # bit for bit
        assert remote[a].margin_json == local[a].margin_json
        assert np.array_equal(remote[a].exposures, local[a].exposures)


def test_a_failed_epoch_keeps_the_previous_one(runner: EpochRunner, tmp_path: Path) -> None:
    """A config whose history cannot be calibrated (a real failure inside the epoch)."""
    first = runner.current or asyncio.run(runner.step())
    broken = runner.cfg.model_copy(update={"margin": {"scenarios": 5}})
    failing = EpochRunner(broken, runner.store_path, runner.spec, accounts=runner.accounts)
    failing.current = first

    async def once() -> None:
        task = asyncio.create_task(failing.run())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(once())
    assert failing.current is first and failing.failures >= 1
    assert failing.last_error is not None and "margin.scenarios" in failing.last_error
