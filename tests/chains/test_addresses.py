"""``checksummed``: the one check of an address that comes in (issue 11). eth-utils 6's
``is_address`` no longer checks EIP-55, so a mixed-case address with a digit mistyped passed."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import is_address

from chains.addresses import checksummed
from chains.config import parse_config
from chains.errors import AddressError, ChainError, ConfigError

GOOD = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TYPO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C9"  # one digit mistyped, mixed case kept


@pytest.mark.parametrize("text", [GOOD, GOOD.lower(), "0x" + GOOD[2:].upper()])
def test_well_formed_addresses_come_back_checksummed(text: str) -> None:
    assert checksummed("account", text) == GOOD


def test_a_mixed_case_typo_is_refused_without_suggesting_an_address() -> None:
    assert is_address(TYPO)  # eth-utils alone takes it: why the helper exists
    with pytest.raises(AddressError) as err:
        checksummed("account", TYPO)
    assert err.value.field == "account"
    assert "EIP-55 checksum" in err.value.reason and "invalid" in err.value.reason
    assert "0x" not in err.value.reason  # no checksummed form of the typo (another account)
    assert str(err.value).startswith("account: ")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ChainError)


@pytest.mark.parametrize(
    "text",
    [
        GOOD[2:],  # no 0x: eth-utils takes it
        "0X" + GOOD[2:],
        GOOD + "0",
        GOOD[:-1],
        " " + GOOD,
        GOOD[:-1] + "g",
        GOOD[:-1] + "٨",  # an Arabic-Indic digit
        "",
    ],
)
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(AddressError, match=r"^account: not an address"):
        checksummed("account", text)


def test_a_non_string_is_refused() -> None:
    bad: Any = bytes(20)
    with pytest.raises(AddressError, match="not a string"):
        checksummed("account", bad)


def test_the_config_refuses_a_mistyped_account() -> None:
    raw: dict[str, Any] = {
        "chains": [
            {
                "chain_id": 1,
                "name": "ethereum",
                "rpc_urls": ["https://eth.example"],
                "multicall3": "0xcA11bde05977b3631167028862bE2a173976CA11",
            }
        ],
        "accounts": [GOOD, TYPO],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.problems[0].startswith("accounts[1]: bad EIP-55 checksum"), err.value
    raw["accounts"] = [GOOD.lower(), "0x" + GOOD[2:].upper()]
    assert parse_config(raw).accounts == [GOOD, GOOD]
