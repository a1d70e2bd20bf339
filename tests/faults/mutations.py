"""What the three attestation attack suites share (test_attestations.py,
test_withdrawal_attestations.py, test_liquidation_attestations.py): each chain's contracts,
signing (the real key, other keys, a changed EIP-712 domain or type), the mutations every kind
of attestation gets (the signature, the domain, the type, addresses, hashes, the window, the
nonce and the counter), and the bookkeeping of what was tried, what each refusal said and the
reliability record."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from aggregator.attestation import sign, typed_data
from chains.compile import load_artifact
from chains.config import OmnimarginConfig
from tests.faults.helpers import ARB, ETH
from tests.reliability import ForTest

#: the reliability family of every attestation attack
FAMILY = "Attestations"
#: the order of secp256k1: ``N - s`` is the high-s twin of a signature's ``s``
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ZERO = "0x" + "00" * 20
RANDOM = "0x" + keccak(b"random address")[:20].hex()
#: demo account 2 (the suites give it positions or collateral where they need a real account)
OTHER_ACCOUNT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

#: the fields every kind of attestation has, besides its figures
IDENTITY = (
    "account",
    "snapshot_hash",
    "risk_model_hash",
    "issued_at",
    "valid_until",
    "nonce",
    "counter",
)
Mutations = list[tuple[str, dict[str, Any]]]  # (what, the fields or domain entries changed)


# --- the contracts ---------------------------------------------------------------------------


class Chain(NamedTuple):
    """One devnet chain's contracts."""

    w3: Web3
    gate: Any
    vault: Any
    perp: Any
    tokens: dict[str, Any]  # by symbol


def contract(w3: Web3, address: str | None, name: str) -> Any:
    """The deployed contract ``name`` (its artifact's ABI) at ``address``."""
    assert address is not None, name
    return w3.eth.contract(address=to_checksum_address(address), abi=list(load_artifact(name).abi))


def load_chains(cfg: OmnimarginConfig, chain_ids: Iterable[int] = (ETH, ARB)) -> dict[int, Chain]:
    """Each chain's MarginGate, its one CollateralVault, PerpMarket and tokens."""
    chains = {}
    for cid in chain_ids:
        c = cfg.chain(cid)
        w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 30}))
        vaults = [s.address for s in cfg.sources_on(cid) if s.kind.value == "vault"]
        assert len(vaults) == 1 and vaults[0] is not None, vaults
        chains[cid] = Chain(
            w3,
            contract(w3, c.margin_gate, "MarginGate"),
            contract(w3, vaults[0], "CollateralVault"),
            contract(w3, c.perp_market, "PerpMarket"),
            {t.symbol: contract(w3, t.address, "ERC20") for t in cfg.tokens_on(cid)},
        )
    return chains


def now(chain: Chain) -> int:
    """The chain's latest block time."""
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def fresh_validity(chain: Chain, account: str, nonces: Iterator[int]) -> dict[str, int]:
    """A new attestation's window (issued a minute ago, valid for an hour), nonce (the suite's
    next) and counter (``account``'s current one at the chain's gate)."""
    t = now(chain)
    return {
        "issued_at": t - 60,
        "valid_until": t + 3600,
        "nonce": next(nonces),
        "counter": chain.gate.functions.counter_of(account).call(),
    }


def send(w3: Web3, call: Any, sender: str) -> None:
    """``call`` mined as a transaction from ``sender``; it must succeed."""
    tx = call.transact({"from": sender})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1


def lock(chain: Chain, symbol: str, account: str, amount: int) -> None:
    """``amount`` of ``symbol`` minted by its owner and locked in the vault for ``account``."""
    token = chain.tokens[symbol]
    owner = token.functions.owner().call()
    send(chain.w3, token.functions.mint(owner, amount), owner)
    send(chain.w3, token.functions.approve(chain.vault.address, amount), owner)
    send(chain.w3, chain.vault.functions.deposit_for(account, token.address, amount), owner)


def revert_reason(call: Any, sender: str) -> str | None:
    """Why ``call`` reverts as an ``eth_call`` from ``sender`` (nothing is mined), None when
    the contract accepts it."""
    try:
        call.call({"from": sender})
    except ContractLogicError as exc:
        return str(exc.message or exc).removeprefix("execution reverted: ")
    return None


# --- signing -------------------------------------------------------------------------------


def signature(att: Any, chain_id: int, gate: str, key: Any) -> bytes:
    """``att`` (any kind of attestation) signed by ``key`` for ``gate`` on ``chain_id``."""
    return bytes.fromhex(sign(att, chain_id, gate, key)[2:])


def signed_typed(key: LocalAccount, data: dict[str, Any]) -> bytes:
    """EIP-712 data the test made up, signed by ``key``."""
    return bytes(key.sign_message(encode_typed_data(full_message=data)).signature)


def signed_in_domain(
    key: LocalAccount, att: Any, chain_id: int, gate: str, domain: dict[str, Any]
) -> bytes:
    """``att`` signed by ``key`` over the domain of ``gate`` on ``chain_id``, ``domain``
    entries changed."""
    data = typed_data(att, chain_id, gate)
    data["domain"] = {**data["domain"], **domain}
    return signed_typed(key, data)


def other_keys(label: str, n: int = 20) -> list[LocalAccount]:
    """``n`` keys that are not in any gate's signer set (the same ones on every run)."""
    return [Account.from_key(keccak(text=f"{label} {i}")) for i in range(n)]


# --- mutations -----------------------------------------------------------------------------


def flip(b: bytes, i: int) -> bytes:
    """``b`` with the low bit of byte ``i`` flipped."""
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def addr_flip(address: str, bit: int) -> str:
    """``address`` with bit ``bit`` (0: the lowest, 159: the highest) flipped."""
    return "0x" + (int(address, 16) ^ (1 << bit)).to_bytes(20, "big").hex()


def addr_plus_one(address: str) -> str:
    """The address after ``address``."""
    return "0x" + (int(address, 16) + 1).to_bytes(20, "big").hex()


def high_s(sig: bytes) -> bytes:
    """The malleable twin of ``sig`` (r, N - s, the other v): the same signer recovers."""
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    return r + (N - s).to_bytes(32, "big") + bytes([55 - v])


def signature_mutations(sig: bytes) -> Iterator[tuple[str, bytes]]:
    """A 65-byte signature made invalid: high s (first), bad v, zero signer, zero or overflowing
    r and s, truncated and padded, and a bit flipped in every byte of r and s."""
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    yield "high s (same signer)", high_s(sig)
    yield "high s, v kept", r + (N - s).to_bytes(32, "big") + bytes([v])
    for bad_v in (0, 1, 26, 29, 55 - v, 255):
        yield f"v {bad_v}", sig[:64] + bytes([bad_v])
    yield "zero signer (r = 0)", bytes(32) + (1).to_bytes(32, "big") + bytes([27])
    yield "r = 0, s = 0", bytes(64) + bytes([v])
    yield "s = 0", r + bytes(32) + bytes([v])
    yield "r = N", N.to_bytes(32, "big") + sig[32:]
    for n in (0, 1, 64):
        yield f"truncated to {n} bytes", sig[:n]
    yield "padded to 66 bytes", sig + b"\x00"
    for i in range(64):  # every byte of r and s
        yield f"bit flipped in byte {i}", flip(sig, i)


def domain_mutations(
    chain_id: int, gate: str, other: tuple[str, int], contracts: Iterable[tuple[str, str]]
) -> Mutations:
    """The EIP-712 domain of ``gate`` on ``chain_id`` changed: the name, the version, the chain
    id (``other`` = (its name, id) of the other chain among them), the verifying contract
    (``contracts`` = (what, address), then zero and the gate's address + 1)."""
    other_name, other_id = other
    return [
        ("domain name other", {"name": "omnimargin2"}),
        ("domain name case", {"name": "Omnimargin"}),
        ("domain name empty", {"name": ""}),
        ("domain version 2", {"version": "2"}),
        ("domain version 0", {"version": "0"}),
        ("domain version empty", {"version": ""}),
        (f"domain chainId of {other_name}", {"chainId": other_id}),
        ("domain chainId 1", {"chainId": 1}),
        ("domain chainId 0", {"chainId": 0}),
        ("domain chainId +1", {"chainId": chain_id + 1}),
        *((f"domain contract: {what}", {"verifyingContract": a}) for what, a in contracts),
        ("domain contract: zero", {"verifyingContract": ZERO}),
        ("domain contract: gate + 1", {"verifyingContract": addr_plus_one(gate)}),
    ]


def type_mutations(
    base: dict[str, Any],
    names: Iterable[str],
    swaps: Iterable[tuple[str, str]],
    retypes: Iterable[tuple[str, str]],
    dropped: Iterable[str],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The values of the EIP-712 data ``base`` under other types: the primary type renamed
    (``names``), two fields' places swapped (``swaps``, EIP-712 names), a field given another
    type (``retypes``: (field, type); a ``bytesN`` one keeps the value's last N bytes), every
    uint64 a uint256, and a field left out (``dropped``, from the message too)."""
    primary = base["primaryType"]
    fields: list[dict[str, str]] = base["types"][primary]
    index = {f["name"]: i for i, f in enumerate(fields)}

    def typed(name: str, fields: list[dict[str, str]], drop: str = "") -> dict[str, Any]:
        message = {k: v for k, v in base["message"].items() if k != drop}
        types = {"EIP712Domain": base["types"]["EIP712Domain"], name: fields}
        return {**base, "types": types, "primaryType": name, "message": message}

    for name in names:
        yield f"type named {name}", typed(name, fields)
    for a, b in swaps:
        swapped = list(fields)
        swapped[index[a]], swapped[index[b]] = swapped[index[b]], swapped[index[a]]
        yield f"fields {a} and {b} swapped in the type", typed(primary, swapped)
    for field, kind in retypes:
        data = typed(primary, [{**f, "type": kind} if f["name"] == field else f for f in fields])
        if kind.startswith("bytes"):  # the value cut to the type's width
            width = int(kind.removeprefix("bytes"))
            data["message"][field] = "0x" + str(base["message"][field])[-2 * width :]
        yield f"{field} typed {kind}", data
    retyped = [{**f, "type": "uint256"} if f["type"] == "uint64" else f for f in fields]
    yield "times typed uint256", typed(primary, retyped)
    for name in dropped:
        short = [f for f in fields if f["name"] != name]
        yield f"{name} left out of the type", typed(primary, short, drop=name)


def account_variants(account: str, *others: str) -> list[str]:
    """Other accounts for ``account``: zero, a made-up one, ``others``, and three bits flipped."""
    return [ZERO, "0x" + "42" * 20, *others] + [addr_flip(account, k) for k in (0, 80, 159)]


def address_variants(address: str, *others: str) -> list[str]:
    """Other addresses for a contract or recipient ``address``: ``others``, a random one, zero,
    and its lowest and highest bits flipped."""
    return [*others, RANDOM, ZERO, addr_flip(address, 0), addr_flip(address, 159)]


def common_variants(att: Any) -> dict[str, list[Any]]:
    """Other values for the fields every kind of attestation has: the hashes, the window, the
    nonce and the counter."""
    return {
        "snapshot_hash": [flip(att.snapshot_hash, i) for i in (0, 7, 31)]
        + [bytes(32), att.risk_model_hash],
        "risk_model_hash": [flip(att.risk_model_hash, i) for i in (0, 7, 31)]
        + [bytes(32), att.snapshot_hash],
        "issued_at": [att.issued_at - 1, att.issued_at + 1, att.issued_at - 3600, 0],
        "valid_until": [
            att.valid_until + 1,
            att.valid_until - 1,
            att.valid_until + 86_400,
            2**64 - 1,
        ],
        "nonce": [att.nonce + 1, att.nonce - 1, 0, 2**256 - 1, att.nonce + 2**128],
        "counter": [
            att.counter + 1,
            (att.counter - 1) % 2**256,
            att.counter + 2**128,
            att.counter ^ 2**255,
        ],
    }


def same_identity(att: Any) -> dict[str, Any]:
    """The fields of ``att`` that any other kind of attestation has too (the account, the
    hashes, the window, the nonce and the counter): to make one of another kind that shares
    them, for type confusion."""
    return {name: getattr(att, name) for name in IDENTITY}


def field_mutations(att: Any, variants: dict[str, list[Any]]) -> Iterator[tuple[str, Any]]:
    """``att`` with one field changed to each of its ``variants`` (by field name), in turn."""
    for name, values in variants.items():
        for i, value in enumerate(values):
            yield f"field {name} #{i}", dataclasses.replace(att, **{name: value})


def counter_mutations(att: Any) -> Mutations:
    """The counter off by one, or a global bump ahead (to be signed validly: still refused)."""
    return [
        ("counter + 1", {"counter": att.counter + 1}),
        ("counter - 1", {"counter": (att.counter - 1) % 2**256}),
        ("counter + 2**128 (a global bump ahead)", {"counter": att.counter + 2**128}),
    ]


def window_mutations(att: Any) -> Mutations:
    """A window passed or not begun a minute after ``att`` was issued (to be signed validly)."""
    t = att.issued_at + 60
    return [
        ("expired 1 s ago", {"valid_until": t - 1}),
        ("expired 10 min ago", {"issued_at": t - 1200, "valid_until": t - 600}),
        ("issued 60 s ahead", {"issued_at": t + 60}),
        ("issued 1 h ahead", {"issued_at": t + 3600, "valid_until": t + 7200}),
    ]


def signed_mutations(
    att: Any,
    sig: bytes,
    key: LocalAccount,
    chain_id: int,
    gate: str,
    domains: Mutations,
    attackers: str,
) -> Iterator[tuple[str, str, Any, bytes]]:
    """(kind, what, attestation, signature) of what every suite sends to ``gate`` on
    ``chain_id``: the counter off and the window outside (signed by ``key``), ``domains``
    (signed by ``key``), ``sig`` mutated, and ``att`` signed by 20 keys that are not signers
    (``other_keys(attackers)``)."""
    for kind, changes in (
        ("counter", counter_mutations(att)),
        ("time window", window_mutations(att)),
    ):
        for what, change in changes:
            changed = dataclasses.replace(att, **change)  # validly signed, still refused
            yield kind, what, changed, signature(changed, chain_id, gate, key)
    for what, domain in domains:
        yield "domain", what, att, signed_in_domain(key, att, chain_id, gate, domain)
    for what, bad in signature_mutations(sig):
        yield "signature", what, att, bad
    for i, other in enumerate(other_keys(attackers)):
        yield "signature", f"signed by another key #{i}", att, signature(att, chain_id, gate, other)


# --- bookkeeping ---------------------------------------------------------------------------


class Attempts:
    """What a suite sent, by kind: how many, which were accepted (none may be) and what each
    refusal said. ``name`` (a liquidation step's) prefixes what is reported."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.tried: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.reasons: Counter[tuple[str, str]] = Counter()  # (kind, revert reason)

    def attempt(self, kind: str, what: str, reason: str | None) -> str | None:
        """Count one mutation of ``kind``; ``reason`` is why the contract refused it, None when
        it accepted. Returns ``reason``."""
        self.tried[kind] += 1
        if reason is None:
            self.accepted.append(f"{self.name}, {kind}: {what}" if self.name else f"{kind}: {what}")
        else:
            self.reasons[kind, reason] += 1
        return reason

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    @classmethod
    def combined(cls, parts: Iterable[Attempts]) -> Attempts:
        """All of ``parts`` together (by kind, the names dropped)."""
        whole = cls()
        for part in parts:
            whole.tried.update(part.tried)
            whole.accepted += part.accepted
            whole.reasons.update(part.reasons)
        return whole

    def report(self) -> None:
        """Print the counts by kind and by revert reason (seen with ``pytest -s``)."""
        name = f"{self.name} " if self.name else ""
        print(f"\n{self.total} {name}mutations: {dict(self.tried)}")
        for (kind, reason), n in sorted(self.reasons.items()):
            print(f"  {name}{kind}: {n} x {reason!r}")

    def record(self, reliability: ForTest, fault: str, injected: str, behaviour: str) -> None:
        """The reliability row ``Attestations/fault``: the counts by kind, then ``injected``;
        every mutation a case, every accepted one wrong."""
        summary = ", ".join(f"{n} {kind}" for kind, n in self.tried.items())
        reliability.record(
            FAMILY, fault, f"{summary} {injected}", behaviour, self.total, len(self.accepted)
        )
