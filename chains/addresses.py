"""Addresses that come in from outside (options, files, request bodies), checked one way.

eth-utils 6's ``is_address`` no longer checks EIP-55, so a mixed-case address with one digit
mistyped would pass and name another account. Here: ``0x`` and 40 ASCII hex digits; all lower
or all upper case is taken as is; mixed case must be the exact EIP-55 form. The error never
suggests a checksummed form: for a mistyped digit that would be a different account.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from eth_utils import to_checksum_address
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from chains.errors import AddressError

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
BAD_CHECKSUM = "bad EIP-55 checksum: the mixed-case spelling is invalid (a mistyped character?)"


def checksummed(field: str, text: str) -> str:
    """``text`` in EIP-55 form; raises :class:`AddressError` naming ``field`` if it is not
    ``0x`` and 40 hex digits, or is mixed case with an invalid checksum."""
    if not isinstance(text, str):
        raise AddressError(field, f"not an address: a {type(text).__name__}, not a string")
    if not _ADDRESS.fullmatch(text):
        raise AddressError(field, f"not an address (0x and 40 hex digits): {text[:60]!r}")
    out = _eip55(text)
    digits = text[2:]
    if digits not in (digits.lower(), digits.upper()) and text != out:
        raise AddressError(field, BAD_CHECKSUM)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _eip55(text: str) -> str:
    """The EIP-55 spelling (a keccak each: cached, the same few thousand addresses recur)."""
    return str(to_checksum_address(text))


def _validate(value: str) -> str:
    try:
        return checksummed("address", value)
    except AddressError as exc:  # pydantic names the field; the message is the reason alone
        raise PydanticCustomError("address", "{reason}", {"reason": exc.reason}) from None


#: a pydantic field type: an address checked by :func:`checksummed`, stored checksummed
ChecksumAddress = Annotated[str, AfterValidator(_validate)]
