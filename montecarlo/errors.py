"""Exceptions of the Monte Carlo engine.

Every error names the parameter it is about, so the CLI and the API can turn it into one
readable line (exit code 2 / HTTP 422) without a traceback.
"""

from __future__ import annotations


class MonteCarloError(Exception):
    """Base class of every error raised by :mod:`montecarlo`."""


class InvalidParameter(MonteCarloError, ValueError):
    """A model or run parameter is out of its domain.

    Parameters
    ----------
    field:
        Dotted name of the parameter, e.g. ``"model.correlation.matrix"``.
    reason:
        What is wrong with it, with the offending value where useful.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BackendUnavailable(MonteCarloError, RuntimeError):
    """The requested array backend cannot run on this machine."""


class InconsistentResult(MonteCarloError, RuntimeError):
    """An internal cross-check between the two passes of a run failed."""
