"""Exceptions of the aggregator: bad input, missing data."""

from __future__ import annotations


class AggregatorError(Exception):
    """Base class of the aggregator's errors; the CLI turns these into exit code 2."""


class InputError(AggregatorError, ValueError):
    """User input (a file, an option) is invalid; names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
