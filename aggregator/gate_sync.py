"""The store and the gates agree on a counter before anything is approved.

A store that is new, or behind the chain, cannot know every attestation still outstanding: it
bumps the global counter of every MarginGate (every earlier attestation dies from that block on)
and approves nothing on a pinned state older than the bump (docs/ARCHITECTURE.md, "The gate's
contract"). Behind means: the gate's counter is not the one the store issues under, the gate
is another contract, or the gate consumed a nonce since the store's bump that the store never
issued (a store restored from a backup).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3Exception

from aggregator.errors import AggregatorError
from aggregator.store import GateCounter, Store
from chains.config import ChainConfig, OmnimarginConfig
from chains.errors import ChainError, RpcUnavailable
from chains.margin_gate import bump_global_counter, gate_contract, global_counter

LOG_CHUNK = 10_000  # blocks per eth_getLogs
CONSUMED = ("AttestationConsumed", "WithdrawalConsumed", "LiquidationConsumed")
log = logging.getLogger(__name__)


def unknown_consumed(chain: ChainConfig, store: Store, since: int) -> int:
    """How many nonces the gate consumed from block ``since`` on that ``store`` never issued."""
    assert chain.margin_gate is not None
    w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
    gate = gate_contract(w3, chain)
    try:
        head = int(w3.eth.block_number)
        events = []
        for start in range(since, head + 1, LOG_CHUNK):
            end = min(start + LOG_CHUNK - 1, head)
            for kind in CONSUMED:  # one nonce space: positions, withdrawals, liquidations
                events += getattr(gate.events, kind)().get_logs(from_block=start, to_block=end)
    except (Web3Exception, OSError, ValueError) as exc:
        raise RpcUnavailable(
            f"{chain.name}: cannot scan the gate's consumed nonces ({exc})"
        ) from None
    issued: dict[str, set[int]] = {}
    unknown = 0
    for ev in events:
        account = str(ev["args"]["account"])
        if account not in issued:
            issued[account] = store.used_nonces(account)
        unknown += int(ev["args"]["nonce"]) not in issued[account]
    return unknown


def _behind(chain: ChainConfig, store: Store, since: int) -> str | None:
    """Why the store is behind ``chain``'s gate since block ``since``, or None. History that
    cannot be checked counts as behind (fail closed: a bump only invalidates)."""
    try:
        n = unknown_consumed(chain, store, since)
    except ChainError as exc:
        return f"the gate's history could not be checked ({exc})"
    return f"the gate consumed {n} nonce(s) this store never issued" if n else None


def sync_counters(
    cfg: OmnimarginConfig,
    store: Store,
    signer: LocalAccount,
    say: Callable[[str], None] = lambda _m: None,
) -> list[GateCounter]:
    """Make the store issue under each gate's current global counter, bumping it first when
    the store is new or behind that chain. A chain that cannot be asked is left as it is
    (decisions then refuse: its gate's state is unknown). Returns the counters bumped."""
    recorded = store.counters()
    bumped = []
    for chain in cfg.chains:
        if chain.margin_gate is None:
            continue
        mine = recorded.get(chain.chain_id)
        try:
            on_chain = global_counter(chain)
        except ChainError as exc:  # decisions refuse: this chain is unavailable or unsynced
            say(f"chain {chain.name} ({chain.chain_id}): counter not synced: {exc}")
            continue
        why = None
        if mine is None:
            why = "the store is new"
        elif mine.gate.lower() != chain.margin_gate.lower():
            why = f"the store issued under another gate ({mine.gate})"
        elif mine.counter != on_chain:
            why = f"the gate's counter is {on_chain}, the store issued under {mine.counter}"
        else:
            why = _behind(chain, store, mine.block)
        if why is None:
            continue
        bump = bump_global_counter(chain, signer)
        counter = GateCounter(
            chain.chain_id, chain.margin_gate, bump.global_counter, bump.block_number
        )
        store.set_counter(counter)
        say(
            f"chain {chain.name} ({chain.chain_id}): {why}; MarginGate counter bumped to "
            f"{bump.global_counter} at block {bump.block_number}"
        )
        bumped.append(counter)
    return bumped


class CounterWatch:
    """Resyncs in the background when an epoch finds a gate's counter other than the store's
    (another engine, or an operator, bumped it): this store cannot know what was issued
    under it, so it bumps again; decisions are refused meanwhile (the counters differ)."""

    def __init__(self, cfg: OmnimarginConfig, store: Store, signer: LocalAccount) -> None:
        self.cfg, self.store, self.signer = cfg, store, signer
        self._busy = threading.Lock()
        self.resyncs = 0

    def check(self, gates: dict[int, int], say: Callable[[str], None] = log.warning) -> bool:
        """``gates``: chain id -> the global counter an epoch read. Returns True if a resync
        was started."""
        recorded = self.store.counters()
        if all(c in recorded and recorded[c].counter == n for c, n in gates.items()):
            return False
        if not self._busy.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                sync_counters(self.cfg, self.store, self.signer, say)
                self.resyncs += 1
            except (ChainError, AggregatorError) as exc:
                say(f"gate counters: resync failed: {exc}")
            finally:
                self._busy.release()

        threading.Thread(target=run, name="omnimargin-counter-resync", daemon=True).start()
        return True
