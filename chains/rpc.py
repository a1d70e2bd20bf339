"""JSON-RPC access to one chain through AsyncWeb3, with failover over its endpoints.

Only idempotent reads go through here. Connection errors and timeouts are retried with backoff
(bounded), then the next endpoint is tried; a JSON-RPC error (a revert, a missing block) is an
answer and is never failed over. Every HTTP request is counted, per endpoint, so benchmarks
report requests measured rather than guessed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import RPCEndpoint

from chains.config import ChainConfig
from chains.errors import RpcUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

#: errors after which the same read may be sent again, or to another endpoint
TRANSIENT: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


class CountingProvider(AsyncHTTPProvider):
    """AsyncHTTPProvider without its own retries, counting the HTTP requests it sends."""

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__(
            url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)},
            exception_retry_configuration=None,
        )
        self.requests = 0

    async def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        self.requests += 1
        return await super()._make_request(method, request_data)


@dataclass
class Endpoint:
    url: str
    provider: CountingProvider
    w3: AsyncWeb3[Any]


class ChainClient:
    """The endpoints of one chain and the failover policy over them."""

    def __init__(self, chain: ChainConfig) -> None:
        self.chain = chain
        self.endpoints = []
        for url in chain.rpc_urls:
            provider = CountingProvider(url, chain.timeout_s)
            # no middleware: no ENS look-ups (extra requests) on the read path
            self.endpoints.append(Endpoint(url, provider, AsyncWeb3(provider, middleware=[])))
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def requests(self) -> int:
        return sum(e.provider.requests for e in self.endpoints)

    async def call(self, method: str, params: list[Any]) -> Any:
        """``method(params)`` on the first endpoint that answers; raises RpcUnavailable."""
        return await self.with_failover(lambda ep: _request(ep, method, params), method)

    async def with_failover(self, fn: Callable[[Endpoint], Awaitable[T]], what: str) -> T:
        n = len(self.endpoints)
        last: BaseException | None = None
        for step in range(n):
            index = (self._preferred + step) % n
            endpoint = self.endpoints[index]
            for attempt in range(self.chain.retries + 1):
                try:
                    result = await asyncio.wait_for(fn(endpoint), self.chain.timeout_s)
                except TRANSIENT as exc:
                    last = exc
                    log.info("%s %s: %s (attempt %d)", endpoint.url, what, _why(exc), attempt + 1)
                    if attempt < self.chain.retries:
                        await asyncio.sleep(self.chain.backoff_s * 2**attempt)
                    continue
                self._preferred = index
                return result
        raise RpcUnavailable(
            f"{self.chain.name}: {what}: no endpoint answered ({_why(last) if last else 'none'})"
        )

    async def on_each(
        self, method: str, params: list[Any], endpoints: list[Endpoint] | None = None
    ) -> list[Any]:
        """``method`` once on each endpoint (default: all; no retries): results or exceptions."""

        async def one(ep: Endpoint) -> Any:
            return await asyncio.wait_for(_request(ep, method, params), self.chain.timeout_s)

        chosen = self.endpoints if endpoints is None else endpoints
        return list(await asyncio.gather(*(one(e) for e in chosen), return_exceptions=True))

    async def light_call(self, method: str, params: list[Any]) -> Any:
        """``call`` over a plain aiohttp session: the raw JSON-RPC result (hex strings), for
        hot paths where web3's provider costs more than the request (a block hash checked on
        every authorisation). Same failover, counting and error semantics."""
        return await self.with_failover(lambda ep: self._post(ep, method, params), method)

    async def _post(self, endpoint: Endpoint, method: str, params: list[Any]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        endpoint.provider.requests += 1
        async with self._session.post(endpoint.url, json=body) as response:
            response.raise_for_status()
            data = await response.json(content_type=None)
        error = data.get("error")
        if error is not None:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            raise Web3RPCError(f"{method}: {message}", rpc_response=data)
        return data.get("result")

    async def close(self) -> None:
        for e in self.endpoints:
            await e.provider.disconnect()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _request(endpoint: Endpoint, method: str, params: list[Any]) -> Any:
    return await endpoint.w3.manager.coro_request(RPCEndpoint(method), params)


def as_int(value: Any) -> int:
    """A JSON-RPC quantity (``"0x1a"``) or an already decoded int."""
    return int(value, 16) if isinstance(value, str) else int(value)


def as_bytes(value: Any) -> bytes:
    """JSON-RPC data (``"0x..."``) or already decoded bytes."""
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def as_hash(value: Any) -> str:
    """A 32-byte hash as lower-case 0x-hex."""
    return "0x" + as_bytes(value).hex()


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
