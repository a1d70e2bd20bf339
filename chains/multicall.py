"""Multicall3 ``aggregate3`` batching: many reads at one pinned block in few requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak

from chains.errors import InconsistentChain
from chains.rpc import ChainClient, as_bytes

AGGREGATE3 = function_signature_to_4byte_selector("aggregate3((address,bool,bytes)[])")
#: concurrent aggregate3 requests per chain
MAX_IN_FLIGHT = 4


def selector(signature: str) -> bytes:
    return bytes(function_signature_to_4byte_selector(signature))


def calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    """ABI-encoded call: 4-byte selector of ``signature`` then the encoded ``args``."""
    return selector(signature) + (encode(types, args) if types else b"")


@dataclass(frozen=True)
class Call:
    target: str
    data: bytes


@dataclass(frozen=True)
class Result:
    """One sub-call's outcome; an empty returnData counts as a failure (DESIGN.md)."""

    success: bool
    data: bytes

    @property
    def ok(self) -> bool:
        return self.success and len(self.data) > 0


def encode_aggregate3(calls: list[Call]) -> bytes:
    return bytes(AGGREGATE3) + encode(
        ["(address,bool,bytes)[]"], [[(c.target, True, c.data) for c in calls]]
    )


def decode_aggregate3(data: bytes) -> list[Result]:
    (rows,) = decode(["(bool,bytes)[]"], data)
    return [Result(bool(ok), bytes(ret)) for ok, ret in rows]


async def aggregate3(
    client: ChainClient, multicall: str, calls: list[Call], block: dict[str, Any], batch: int
) -> list[Result]:
    """Run ``calls`` through Multicall3 at ``block`` (an EIP-1898 block object), in batches.

    Each sub-call may fail on its own (``allowFailure``); a batch whose answer does not hold one
    result per call is an error.
    """
    batches = [calls[i : i + batch] for i in range(0, len(calls), batch)]
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def run(part: list[Call]) -> list[Result]:
        async with gate:
            raw = await client.call(
                "eth_call", [{"to": multicall, "data": "0x" + encode_aggregate3(part).hex()}, block]
            )
        results = decode_aggregate3(as_bytes(raw))
        if len(results) != len(part):
            raise InconsistentChain(
                f"aggregate3 returned {len(results)} results for {len(part)} calls"
            )
        return results

    out: list[Result] = []
    for part in await asyncio.gather(*(run(b) for b in batches)):
        out.extend(part)
    return out


def codehash(code: bytes) -> str:
    return "0x" + bytes(keccak(code)).hex()
