"""Values typed by a person (options, files, request bodies), each checked one way.

Every refusal is an :class:`InputError` naming the field and the reason.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from aggregator.errors import InputError
from chains.addresses import checksummed
from chains.errors import AddressError

#: a size or quantity as text: ASCII digits, an optional sign and fraction, nothing else
#: (Python's ``Decimal`` would also take ``1_000``, ``١٢``, spaces, ``1e3``, ``Infinity``)
_DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def account(text: str, field: str = "account") -> str:
    """The EIP-55 form of an address given as input (see :func:`chains.addresses.checksummed`)."""
    try:
        return checksummed(field, text)
    except AddressError as exc:
        raise InputError(exc.field, exc.reason) from None


def parse_decimal(field: str, text: str) -> Decimal:
    """A decimal written ``[+-]digits[.digits]`` in ASCII, exactly; anything else is refused."""
    if not isinstance(text, str):
        raise InputError(field, f"must be a decimal string, got a {type(text).__name__}")
    if not _DECIMAL.fullmatch(text):
        raise InputError(
            field,
            f"not a plain decimal number (ASCII digits, optional sign and fraction, no "
            f"exponent): {text[:40]!r}",
        )
    return Decimal(text)


class DuplicateKey(ValueError):
    """A JSON object names one key twice (raised by :func:`unique_object`)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"duplicate key {key!r}")


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: a key given twice is an error, not the last
    one silently winning."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def load_json(text: str | bytes, field: str, **kwargs: Any) -> Any:
    """``json.loads`` with duplicate keys refused; every problem an :class:`InputError`."""
    try:
        return json.loads(text, object_pairs_hook=unique_object, **kwargs)
    except DuplicateKey as exc:
        raise InputError(field, f"duplicate key {exc.key[:60]!r} in a JSON object") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            field, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(field, "not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError as exc:
        raise InputError(field, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
