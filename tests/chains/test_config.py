"""The configuration file: valid files load, every problem is named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chains.config import load_config, parse_config
from chains.errors import ConfigError

MC = "0xcA11bde05977b3631167028862bE2a173976CA11"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _valid() -> dict[str, Any]:
    return {
        "chains": [
            {
                "chain_id": 1,
                "name": "ethereum",
                "rpc_urls": ["https://eth.example"],
                "multicall3": MC,
            },
        ],
        "tokens": [
            {"chain_id": 1, "address": USDC, "symbol": "USDC", "decimals": 6, "asset": "USDC"}
        ],
        "sources": [{"chain_id": 1, "kind": "erc20_wallet"}],
    }


def test_a_valid_config_loads_with_checksummed_addresses() -> None:
    raw = _valid()
    raw["tokens"][0]["address"] = USDC.lower()
    cfg = parse_config(raw)
    assert cfg.tokens[0].address == USDC
    assert cfg.chains[0].finality == "finalized"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["chains"][0].update(rpc_urls=[]), "chains[0].rpc_urls"),
        (lambda c: c["chains"][0].update(rpc_urls=["ws://x"]), "chains[0].rpc_urls[0]"),
        (lambda c: c["chains"][0].update(multicall3="0x12"), "chains[0].multicall3"),
        (
            lambda c: c["chains"][0].update(multicall3=MC[:-1] + "a"),
            "chains[0].multicall3: bad EIP-55",
        ),
        (lambda c: c["chains"][0].update(finality="soon"), "chains[0].finality"),
        (lambda c: c["chains"][0].update(l2=True), "chains[0]: an L2 chain needs sequencer_feed"),
        (lambda c: c["chains"][0].update(surprise=1), "chains[0].surprise: unknown key"),
        (lambda c: c["tokens"][0].update(decimals=-1), "tokens[0].decimals"),
        (lambda c: c["tokens"][0].update(chain_id=9), "tokens[0].chain_id: unknown chain 9"),
        (
            lambda c: c["tokens"].append(dict(c["tokens"][0])),
            "tokens[1].address: token listed twice",
        ),
        (
            lambda c: c["sources"].append({"chain_id": 1, "kind": "vault"}),
            "sources[1]: a vault source needs address",
        ),
        (
            lambda c: c["sources"].append({"chain_id": 1, "kind": "erc20_wallet", "tokens": [MC]}),
            "sources[1].tokens[0]",
        ),
        (
            lambda c: c.update(
                feeds=[
                    {
                        "chain_id": 1,
                        "address": MC,
                        "asset": "ETH",
                        "heartbeat_s": 60,
                        "min_usd": 5,
                        "max_usd": 1,
                    }
                ]
            ),
            "feeds[0]: min_usd must be below max_usd",
        ),
        (lambda c: c.update(chains=[]), "chains"),
    ],
)
def test_each_problem_names_its_key(edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    raw = _valid()
    edit(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_all_problems_are_reported_at_once() -> None:
    raw = _valid()
    raw["chains"][0]["multicall3"] = "nope"
    raw["tokens"][0]["decimals"] = 99
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert len(info.value.problems) == 2


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[chains]\nchain_id = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
