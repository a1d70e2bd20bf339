"""The MarginGate's state as the engine needs it: nonce statuses and counters at a pinned block,
and the one transaction the engine itself sends (bumping the global counter).

docs/ARCHITECTURE.md, "The gate's contract". An attestation is outstanding until the pinned
state a decision reads shows its nonce consumed (its position is in the portfolio), cancelled,
its counter superseded, or its chain's clock past its ``validUntil``. Everything here is read
at one block hash through Multicall3, like the rest of a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3Exception

from chains.compile import load_artifact
from chains.config import ChainConfig
from chains.errors import ChainError, RpcUnavailable
from chains.multicall import Call, address_word, aggregate3, selector, word_uint
from chains.rpc import ChainClient

NONCE_STATUS = selector("nonce_status(address,uint256)")
COUNTER_OF = selector("counter_of(address)")
GLOBAL_COUNTER = selector("global_counter()")
COUNTER_SHIFT = 2**128


class NonceStatus(IntEnum):
    """What ``MarginGate.nonce_status`` answers."""

    UNUSED = 0
    CONSUMED = 1
    CANCELLED = 2


@dataclass(frozen=True)
class GateState:
    """One chain's MarginGate at a pinned block (number, hash, timestamp).

    ``statuses`` has the status of every (account, nonce) asked; ``counters`` the counter an
    attestation of each account asked must carry at that block (``counter_of``).
    """

    chain_id: int
    block_number: int
    block_hash: str
    timestamp: int
    global_counter: int
    statuses: dict[tuple[str, int], NonceStatus] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def status(self, account: str, nonce: int) -> NonceStatus | None:
        """The nonce's status at the block, or None when it was not asked (it was issued after
        the block was pinned, so it cannot be consumed in it)."""
        return self.statuses.get((account, nonce))


async def read_gate(
    client: ChainClient,
    chain: ChainConfig,
    block: tuple[int, str, int],
    nonces: Iterable[tuple[str, int]],
    accounts: Iterable[str] = (),
) -> GateState:
    """The gate of ``chain`` at ``block`` = (number, hash, timestamp): the status of each
    (account, nonce) and the counter of each account among them and ``accounts``, in
    aggregate3 batches of ``chain.batch_size`` calls at that exact block hash. Raises
    ChainError when a read fails."""
    if chain.margin_gate is None:
        raise ChainError(f"{chain.name}: no margin_gate in the config")
    gate = chain.margin_gate
    asked = sorted(set(nonces))
    accounts = sorted({a for a, _ in asked} | set(accounts))
    calls = [Call(gate, GLOBAL_COUNTER)]
    calls += [Call(gate, COUNTER_OF + address_word(a)) for a in accounts]
    calls += [Call(gate, NONCE_STATUS + address_word(a) + n.to_bytes(32, "big")) for a, n in asked]
    number, block_hash, timestamp = block
    selector_ = {"blockHash": block_hash, "requireCanonical": True}
    results = await aggregate3(client, chain.multicall3, calls, selector_, chain.batch_size)
    failed = sum(not r.ok for r in results)
    if failed:
        raise ChainError(f"{chain.name}: {failed} MarginGate reads at block {number} failed")
    try:
        words = [word_uint(r.data) for r in results]
        tail = words[1 + len(accounts) :]
        statuses = {k: NonceStatus(w) for k, w in zip(asked, tail, strict=True)}
    except (DecodingError, ValueError) as exc:
        raise ChainError(f"{chain.name}: MarginGate answered garbage ({exc})") from None
    counters = dict(zip(accounts, words[1 : 1 + len(accounts)], strict=True))
    return GateState(chain.chain_id, number, block_hash, timestamp, words[0], statuses, counters)


def counter_for(state: GateState | None, account: str, global_counter: int) -> int:
    """The counter a new attestation of ``account`` must carry: the gate's ``counter_of`` at the
    pinned block when known, else the global counter the engine last set (account part 0)."""
    if state is not None and account in state.counters:
        return state.counters[account]
    return global_counter * COUNTER_SHIFT


@dataclass(frozen=True)
class CounterBump:
    chain_id: int
    global_counter: int
    block_number: int
    tx_hash: str


def gate_contract(w3: Web3, chain: ChainConfig) -> Any:
    """The chain's MarginGate as a web3 contract (its compiled ABI)."""
    assert chain.margin_gate is not None
    abi = list(load_artifact("MarginGate").abi)
    return w3.eth.contract(address=Web3.to_checksum_address(chain.margin_gate), abi=abi)


def global_counter(chain: ChainConfig, timeout_s: float = 30.0) -> int:
    """The gate's global counter at the chain's head."""
    w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": timeout_s}))
    try:
        return int(gate_contract(w3, chain).functions.global_counter().call())
    except (Web3Exception, OSError, ValueError) as exc:
        raise RpcUnavailable(f"{chain.name}: cannot read the gate's counter ({exc})") from None


def bump_global_counter(
    chain: ChainConfig, signer: LocalAccount, timeout_s: float = 120.0
) -> CounterBump:
    """Send ``increment_counter()`` from ``signer`` (a signer of the gate, holding gas on the
    chain) and wait for it: every attestation issued before it is dead from its block on."""
    w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
    gate = gate_contract(w3, chain)
    try:
        fn = gate.functions.increment_counter()
        fn.call({"from": signer.address})  # a revert says why before anything is sent
        tx = fn.build_transaction(
            {
                "from": signer.address,
                "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
                "chainId": chain.chain_id,
            }
        )
        sent = w3.eth.send_raw_transaction(signer.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=timeout_s, poll_latency=0.05)
        counter = int(gate.functions.global_counter().call(block_identifier=receipt["blockNumber"]))
    except (Web3Exception, OSError, ValueError) as exc:
        raise ChainError(
            f"{chain.name}: cannot bump the MarginGate counter from the signer "
            f"{signer.address} (it must be a signer of the gate and hold gas): {exc}"
        ) from None
    if receipt["status"] != 1:
        raise ChainError(f"{chain.name}: increment_counter transaction {sent.hex()} reverted")
    return CounterBump(chain.chain_id, counter, int(receipt["blockNumber"]), "0x" + sent.hex())
