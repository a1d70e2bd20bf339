"""Exceptions of the chain layer: one tree, each class also the built-in it means."""

from __future__ import annotations


class ChainError(Exception):
    """Base class of every error raised by :mod:`chains`."""


class ConfigError(ChainError, ValueError):
    """The configuration is invalid; ``problems`` lists every ``key: reason``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class RpcUnavailable(ChainError, ConnectionError):
    """No endpoint of a chain answered (connection errors or timeouts after retries)."""


class InconsistentChain(ChainError, RuntimeError):
    """Endpoints of one chain disagree (block hash), or the chain is not what the config says."""


class DevnetError(ChainError, RuntimeError):
    """The local devnet could not be started, found or stopped."""


class AddressError(ChainError, ValueError):
    """An address that came in (an option, a file) is malformed or fails its EIP-55 checksum;
    ``field`` names where it came from, ``reason`` why it is refused."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
