"""``omnimargin devnet shock``: one asset's feeds moved by a percentage on every chain at once,
the replay continuing from there; bad input named."""

from __future__ import annotations

import asyncio
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregator.service.launcher import omnimargin_binary
from aggregator.world import read_world
from chains.config import load_config
from chains.devnet_control import advance_prices


def _cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [omnimargin_binary(), "devnet", "shock", "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def own(devnet_factory: Any) -> tuple[Path, Any]:
    info = devnet_factory(3)
    return info.directory, load_config(info.config_path)


def test_a_shock_moves_every_chains_feed_and_nothing_else(own: tuple[Path, Any]) -> None:
    directory, cfg = own
    before = asyncio.run(read_world(cfg, [])).prices
    done = _cli(directory, "--asset", "ETH", "--pct", "-40", "--json")
    assert done.returncode == 0, done.stderr
    moved = {int(c): Decimal(p) for c, p in json.loads(done.stdout)["prices"].items()}
    eth_chains = {f.chain_id for f in cfg.feeds if f.asset == "ETH"}
    assert set(moved) == eth_chains and len(eth_chains) == 3
    after = asyncio.run(read_world(cfg, [])).prices
    old, new = before["ETH"].price, after["ETH"].price
    assert old is not None and new is not None
    assert Decimal(new.numerator) / Decimal(new.denominator) == moved[min(moved)]
    assert abs(float(new / old) - 0.6) < 1e-8  # -40 %, to the feed's 8 decimals
    for asset, p in before.items():
        if asset != "ETH":
            assert after[asset].price == p.price, asset
    for snap in asyncio.run(read_world(cfg, [])).snapshots:
        (eth,) = [r for r in snap.prices if r.asset == "ETH"]
        assert eth.status.value == "ok"  # a fresh round, not a stale one
    # the replay goes on from the shocked price
    nxt = asyncio.run(advance_prices(cfg, 1, ["ETH"]))["ETH"]
    assert abs(float(nxt) / float(moved[min(moved)]) - 1) < 0.5


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--asset", "ETH", "--pct", "-100"), "pct"),
        (("--asset", "ETH", "--pct", "1e2"), "pct"),
        (("--asset", "DOGE", "--pct", "-10"), "asset"),
    ],
)
def test_bad_shocks_name_the_field(
    own: tuple[Path, Any], args: tuple[str, ...], field: str
) -> None:
    done = _cli(own[0], *args)
    assert done.returncode == 2
    assert field in done.stderr and "Traceback" not in done.stderr
