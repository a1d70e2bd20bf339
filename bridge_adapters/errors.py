"""Exceptions of the bridge adapters: one tree, each class also the built-in it means."""

from __future__ import annotations


class BridgeAdapterError(Exception):
    """Base class of every error raised by :mod:`bridge_adapters`."""


class UnmappedToken(BridgeAdapterError, KeyError):
    """A token read on a chain is not in the config's ``[[tokens]]``: it has no canonical asset."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class InconsistentReads(BridgeAdapterError, ValueError):
    """Snapshots and in-flight reads that cannot be counted together (another pinned block,
    the same chain twice): counting them could count a transfer twice or not at all."""


class UnknownBridge(BridgeAdapterError, KeyError):
    """A risk column is exposed to a bridge that has no ``[[bridges]]`` entry (no risk figure)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
