"""Chain tokens as representations of canonical assets, and the config rules behind them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge_adapters.canonical import Representation, Representations
from bridge_adapters.errors import UnmappedToken
from chains.config import OmnimarginConfig, parse_config
from chains.errors import ConfigError


def test_each_token_is_one_representation_of_its_asset(small_config: OmnimarginConfig) -> None:
    reps = Representations.from_config(small_config)
    usdc_e = reps.lookup(42161, "0x" + "0" * 39 + "4")  # lower case: still found
    assert usdc_e == Representation("USDC", "canonical_bridge", "arbitrum-canonical", "USDC.e", 6)
    assert usdc_e.name == "arbitrum-canonical"
    native = reps.lookup(8453, "0x" + "0" * 39 + "5")
    assert (native.asset, native.name, native.bridge) == ("USDC", "native", None)
    assert reps.assets() == ("ETH", "USDC")


def test_an_unlisted_token_is_an_error_naming_it(small_config: OmnimarginConfig) -> None:
    reps = Representations.from_config(small_config)
    stranger = "0x" + "ab" * 20
    with pytest.raises(UnmappedToken) as err:
        reps.lookup(1, stranger)
    assert "0xABaB" in str(err.value) and "chain 1" in str(err.value)
    with pytest.raises(UnmappedToken):  # USDC of chain 1 is not a token of chain 8453
        reps.lookup(8453, "0x" + "0" * 39 + "1")


def _add_cctp_chain(data: dict[str, Any], chain: str) -> None:
    data["bridges"][0]["contracts"][chain] = "0x" + "1" * 40
    data["bridges"][0]["domains"][chain] = 99


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.problems


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["tokens"][3].update(bridge="nope"), "tokens[3].bridge: unknown bridge 'nope'"),
        (
            lambda d: d["tokens"][3].pop("bridge"),
            "tokens[3]: a canonical_bridge token needs bridge",
        ),
        (lambda d: d["tokens"][0].update(bridge="cctp"), "tokens[0]: a native token names no"),
        (lambda d: d["bridges"].append(dict(d["bridges"][1])), "duplicate bridge"),
        (lambda d: d["bridges"][0]["domains"].pop("8453"), "contracts and domains must name"),
        (lambda d: d["bridges"][0]["domains"].update({"8453": 3}), "two chains share a domain"),
        (lambda d: _add_cctp_chain(d, "5"), "bridges[0].contracts: unknown chain 5"),
        (lambda d: d["bridges"][1].update(domains={"1": 0}), "a canonical bridge takes no"),
        (lambda d: d["bridges"][0].update(failure_probability=1.5), "less than or equal to 1"),
        (lambda d: d["depegs"].append({"asset": "DAI", "probability": 0.1, "loss": 0.1}), "DAI"),
        (lambda d: d["depegs"].append(dict(d["depegs"][0])), "duplicate depeg of 'USDC'"),
    ],
)
def test_bridge_config_problems_name_the_key(
    small_data: dict[str, Any], edit: Any, expected: str
) -> None:
    data = copy.deepcopy(small_data)
    edit(data)
    assert any(expected in p for p in _problems(data)), _problems(data)


def test_a_token_naming_an_unconfigured_bridge_is_refused(small_data: dict[str, Any]) -> None:
    """Its bridge risk would otherwise be silently zero."""
    data = copy.deepcopy(small_data)
    del data["bridges"]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any("unknown bridge" in p and p.startswith("tokens[") for p in info.value.problems)


def test_cctp_transmitter_defaults_to_the_messenger(small_config: OmnimarginConfig) -> None:
    cctp = small_config.bridge("cctp")
    assert cctp.transmitter(8453) == cctp.contracts[8453]
    other = cctp.model_copy(update={"transmitters": {8453: "0x" + "9" * 40}})
    assert other.transmitter(8453) == "0x" + "9" * 40
    with pytest.raises(KeyError, match="known: cctp, arbitrum-canonical"):
        small_config.bridge("wormhole")
