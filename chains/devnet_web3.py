"""Small async web3 helpers for the devnet: connect, deploy, transact from unlocked accounts.

anvil's default accounts are unlocked, so every transaction is a plain ``eth_sendTransaction``
with ``from``; a revert (found when web3 estimates gas) or a failed receipt is a DevnetError
that says what was being done.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import Web3Exception
from web3.types import TxReceipt

from chains.compile import load_artifact
from chains.errors import DevnetError

RPC_TIMEOUT_S = 30.0
RPC_ERRORS = (Web3Exception, aiohttp.ClientError, OSError, TimeoutError)
# web3's contract functions and constructors are built at run time; both have .transact()
Transactable = Any
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Lock]]
_LOCKS = weakref.WeakKeyDictionary()


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[AsyncWeb3[AsyncHTTPProvider]]:
    """An AsyncWeb3 on ``url`` whose HTTP session is closed on exit."""
    provider = AsyncHTTPProvider(
        url, request_kwargs={"timeout": RPC_TIMEOUT_S}, exception_retry_configuration=None
    )
    w3 = AsyncWeb3(provider)
    try:
        yield w3
    finally:
        await provider.disconnect()


def contract_at(w3: AsyncWeb3[Any], name: str, address: str) -> AsyncContract:
    """The deployed contract ``name`` (a file in chains/contracts) at ``address``."""
    return w3.eth.contract(address=to_checksum_address(address), abi=list(load_artifact(name).abi))


def _sender_lock(w3: AsyncWeb3[Any], sender: str) -> asyncio.Lock:
    """One lock per (event loop, endpoint, sender): web3 picks the nonce, so two concurrent
    transactions of one account on one chain would collide."""
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    key = (str(getattr(w3.provider, "endpoint_uri", "")), sender.lower())
    return locks.setdefault(key, asyncio.Lock())


async def send(w3: AsyncWeb3[Any], call: Transactable, sender: str, what: str) -> TxReceipt:
    """Send ``call`` from the unlocked ``sender`` and wait for a successful receipt."""
    try:
        async with _sender_lock(w3, sender):
            tx = await call.transact({"from": to_checksum_address(sender)})
            receipt = await w3.eth.wait_for_transaction_receipt(
                tx, timeout=RPC_TIMEOUT_S, poll_latency=0.005
            )
    except RPC_ERRORS as exc:
        raise DevnetError(f"{what}: {exc}") from exc
    if receipt["status"] != 1:
        raise DevnetError(f"{what}: transaction {tx.to_0x_hex()} reverted")
    return receipt


async def deploy(w3: AsyncWeb3[Any], name: str, sender: str, *args: Any) -> ChecksumAddress:
    """Deploy contract ``name`` with constructor ``args``; return its address."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)
    receipt = await send(w3, factory.constructor(*args), sender, f"deploy {name}{args!r}")
    address = receipt["contractAddress"]
    if address is None:
        raise DevnetError(f"deploy {name}: the receipt has no contract address")
    return address


async def latest_timestamp(w3: AsyncWeb3[Any]) -> int:
    block = await w3.eth.get_block("latest")
    return int(block["timestamp"])


def to_raw(amount: Decimal, decimals: int) -> int:
    """``amount`` in token units -> raw integer; refuses to round (an exact seed is the point)."""
    scaled = amount.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise DevnetError(f"amount {amount} has more than {decimals} decimals")
    return int(scaled)
