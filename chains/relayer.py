"""The devnet relayer: completes CCTP transfers in flight (``omnimargin bridge relay``).

For each pending transfer (chains/inflight.py at freshly pinned blocks) it takes the message the
source bridge emitted (``MessageSent`` in the burn's receipt, CCTP v1's packed message) and
delivers it with ``receiveMessage`` on the destination, sent by that bridge's owner: the devnet
CCTPBridge's stand-in for Circle's attestation (an unlocked anvil account). On a real network
Circle's attestation service signs the message and anyone may relay it; this module refuses to
run on a config without a ``[devnet]`` table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from chains.config import OmnimarginConfig
from chains.devnet_web3 import connect, contract_at, send
from chains.errors import ChainError, ConfigError, DevnetError, InconsistentChain
from chains.inflight import InflightRead, InflightTransfer, read_inflight
from chains.reader import ChainReader, PinnedBlock
from chains.rpc import as_bytes

BRIDGE_CONTRACT = "CCTPBridge"
MESSAGE_SENT = "0x" + bytes(keccak(text="MessageSent(bytes)")).hex()
NONCE_AT = slice(12, 20)  # CCTP v1 message: version, sourceDomain, destinationDomain, nonce


async def pending(
    config: OmnimarginConfig, bridge_name: str, accounts: Collection[str] | None = None
) -> InflightRead:
    """The bridge's transfers in flight now: every chain of the bridge pinned afresh."""
    try:
        bridge = config.bridge(bridge_name)
    except KeyError as exc:
        raise ConfigError([f"bridge: {exc.args[0]}"]) from None
    readers = {cid: ChainReader(config, config.chain(cid)) for cid in bridge.contracts}
    try:
        pins = await asyncio.gather(*(r.pin() for r in readers.values()), return_exceptions=True)
        pinned: dict[int, PinnedBlock] = {}
        for cid, pin in zip(readers, pins, strict=True):
            if isinstance(pin, PinnedBlock):
                pinned[cid] = pin
            elif not isinstance(pin, ChainError):
                raise pin
        clients = {cid: r.client for cid, r in readers.items()}
        return await read_inflight(config, bridge, pinned, clients, accounts)
    finally:
        await asyncio.gather(*(r.client.close() for r in readers.values()))


async def relay(
    config: OmnimarginConfig, bridge_name: str, limit: int | None = None
) -> list[InflightTransfer]:
    """Deliver up to ``limit`` pending transfers (oldest first); return those delivered.

    Transfers whose destination cannot be read are left alone.
    """
    if config.devnet is None:
        raise DevnetError(
            "relay: this config has no [devnet] table; on a real network Circle's attestation "
            "service and any relayer complete CCTP transfers"
        )
    read = await pending(config, bridge_name)
    todo = [t for t in read.transfers if not t.dest_unreadable][:limit]
    done = []
    for t in todo:
        message = await _message(config, t)
        await _deliver(config, t, message)
        done.append(t)
    return done


async def _message(config: OmnimarginConfig, t: InflightTransfer) -> bytes:
    """The CCTP message of ``t``: the source bridge's MessageSent in the burn's receipt."""
    bridge = config.bridge(t.bridge)
    source = to_checksum_address(bridge.contracts[t.source_chain])
    async with connect(config.chain(t.source_chain).rpc_urls[0]) as w3:
        receipt = await w3.eth.get_transaction_receipt(t.tx_hash)  # type: ignore[arg-type]
    for log in receipt["logs"]:
        if to_checksum_address(log["address"]) != source or not log["topics"]:
            continue
        if "0x" + bytes(log["topics"][0]).hex() != MESSAGE_SENT:
            continue
        (message,) = decode(["bytes"], as_bytes(log["data"]))
        if int.from_bytes(message[NONCE_AT], "big") == t.nonce:
            return bytes(message)
    raise InconsistentChain(
        f"chain {t.source_chain}: no MessageSent for nonce {t.nonce} in {t.tx_hash}"
    )


async def _deliver(config: OmnimarginConfig, t: InflightTransfer, message: bytes) -> None:
    bridge = config.bridge(t.bridge)
    async with connect(config.chain(t.dest_chain).rpc_urls[0]) as w3:
        contract = contract_at(w3, BRIDGE_CONTRACT, bridge.transmitter(t.dest_chain))
        owner = await contract.functions.owner().call()
        call = contract.functions.receiveMessage(message, b"")
        what = f"relay {t.bridge} nonce {t.nonce} from chain {t.source_chain} to {t.dest_chain}"
        await send(w3, call, str(owner), what)
