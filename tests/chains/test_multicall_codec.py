"""The hand-rolled aggregate3 codec against eth-abi's generic one."""

from __future__ import annotations

import pytest
from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.multicall import AGGREGATE3, Call, address_word, decode_aggregate3, encode_aggregate3

addresses = st.binary(min_size=20, max_size=20).map(lambda b: str(to_checksum_address(b)))
calls = st.lists(st.builds(Call, addresses, st.binary(max_size=100)), max_size=30)
results = st.lists(st.tuples(st.booleans(), st.binary(max_size=100)), max_size=30)


@settings(max_examples=300, derandomize=True)
@given(calls)
def test_encoding_matches_eth_abi(cs: list[Call]) -> None:
    expected = bytes(AGGREGATE3) + encode(
        ["(address,bool,bytes)[]"], [[(c.target, True, c.data) for c in cs]]
    )
    assert encode_aggregate3(cs) == expected


@settings(max_examples=300, derandomize=True)
@given(results)
def test_decoding_matches_eth_abi(rows: list[tuple[bool, bytes]]) -> None:
    data = encode(["(bool,bytes)[]"], [rows])
    ours = decode_aggregate3(data)
    (theirs,) = decode(["(bool,bytes)[]"], data)
    assert [(r.success, r.data) for r in ours] == [(bool(a), bytes(b)) for a, b in theirs]


def test_truncated_answers_are_decoding_errors() -> None:
    data = encode(["(bool,bytes)[]"], [[(True, b"\x01" * 40)] * 3])
    for cut in (0, 31, 64, 100, len(data) - 30):  # the last cut removes data, not padding
        with pytest.raises(DecodingError):
            decode_aggregate3(data[:cut])


def test_address_word() -> None:
    a = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
    assert address_word(a) == encode(["address"], [a])
    with pytest.raises(ValueError):
        address_word("0x1234")
