"""Bridge and depeg risk as jump overlays: one shared draw per bridge over its risk columns."""

from __future__ import annotations

import numpy as np
import pytest

from bridge_adapters.errors import UnknownBridge
from bridge_adapters.risk import column_assets, jumps_for, parse_column, risk_column
from chains.config import OmnimarginConfig
from montecarlo.engine import RiskProblem, draw_scenarios
from montecarlo.models import GaussianModel, Jump, JumpOverlay

COLUMNS = ("ETH", "USDC", "USDC@arbitrum-canonical", "USDC@cctp", "USDC@arbitrum-canonical+cctp")


def test_column_names_round_trip() -> None:
    assert risk_column("USDC") == "USDC"
    assert risk_column("USDC", ["cctp", "arbitrum-canonical", "cctp"]) == COLUMNS[-1]
    assert parse_column(COLUMNS[-1]) == ("USDC", ("arbitrum-canonical", "cctp"))
    assert parse_column("ETH") == ("ETH", ())
    assert set(column_assets(COLUMNS).values()) == {"ETH", "USDC"}


def test_one_jump_per_bridge_over_its_columns_and_one_per_depeg(
    small_config: OmnimarginConfig,
) -> None:
    jumps = jumps_for(small_config, COLUMNS)
    assert jumps == [
        Jump("bridge:cctp", 0.0002, 1.0, ("USDC@cctp", "USDC@arbitrum-canonical+cctp")),
        Jump(
            "bridge:arbitrum-canonical",
            0.0005,
            0.9,
            ("USDC@arbitrum-canonical", "USDC@arbitrum-canonical+cctp"),
        ),
        Jump("depeg:USDC", 0.001, 0.1, COLUMNS[1:]),
    ]
    assert jumps_for(small_config, ["ETH"]) == []  # nothing exposed: no jumps


def test_a_column_over_an_unconfigured_bridge_is_refused(small_config: OmnimarginConfig) -> None:
    with pytest.raises(UnknownBridge, match="USDC@wormhole: bridge 'wormhole'"):
        jumps_for(small_config, ["USDC", "USDC@wormhole"])


def test_every_column_of_a_bridge_fails_in_the_same_scenarios(
    small_config: OmnimarginConfig,
) -> None:
    """No price moves (zero volatility): every loss is a jump, so the columns show the draws."""
    jumps = tuple(
        Jump(j.name, 0.05, j.loss, j.assets) for j in jumps_for(small_config, COLUMNS)
    )  # 5% each, to see enough hits
    base = GaussianModel(COLUMNS, np.zeros(len(COLUMNS)), np.eye(len(COLUMNS)))
    problem = RiskProblem(JumpOverlay(base, jumps), np.ones(len(COLUMNS)), 0.99, 100_000, seed=4)
    r = draw_scenarios(problem)
    eth, native, arb, cctp, both = (r[:, i] for i in range(5))
    assert np.all(eth == 0)
    depeg = native < 0
    arb_failed = arb < -0.5  # -0.9, or -0.91 with the depeg
    cctp_failed = cctp == -1.0
    m = r.shape[0]
    for hits in (depeg, arb_failed, cctp_failed):
        assert abs(hits.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / m)
    np.testing.assert_array_equal(both == -1.0, cctp_failed)  # the same cctp draw
    np.testing.assert_allclose(arb[arb_failed & ~depeg], -0.9)
    np.testing.assert_allclose(both[arb_failed & ~cctp_failed & depeg], (1 - 0.9) * (1 - 0.1) - 1)
