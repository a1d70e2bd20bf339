"""Attestations attacked on chain: a valid attestation for chain 2's PerpMarket, then hundreds
of mutations of it (every field, the EIP-712 domain, the signature: high s, bad v, zero signer,
truncated, other keys) plus replays and submissions to chain 1's market and gate, each sent to
the real contracts with ``eth_call``. None may be accepted; the unmutated one is (so the test
can fail), and is then refused as a replay."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from aggregator.attestation import MarginAttestation, load_signer_key, market_id, sign, typed_data
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, load_config
from tests.faults.helpers import ACCOUNT, ARB, ETH
from tests.reliability import ForTest

FAMILY = "Attestations"
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_nonces = itertools.count(10_000)


class Chain(NamedTuple):
    w3: Web3
    gate: Any
    perp: Any


class Net(NamedTuple):
    config: OmnimarginConfig
    chains: dict[int, Chain]
    signer: LocalAccount
    relayer: str


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    cfg = load_config(devnet_factory(2).config_path)
    chains = {}
    for cid in (ETH, ARB):
        c = cfg.chain(cid)
        w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 30}))
        gate = w3.eth.contract(address=c.margin_gate, abi=list(load_artifact("MarginGate").abi))
        perp = w3.eth.contract(address=c.perp_market, abi=list(load_artifact("PerpMarket").abi))
        chains[cid] = Chain(w3, gate, perp)
    relayer = str(chains[ARB].w3.eth.accounts[7])
    return Net(cfg, chains, load_signer_key(cfg.signer), relayer)


def _att(net: Net) -> MarginAttestation:
    now = int(net.chains[ARB].w3.eth.get_block("latest")["timestamp"])
    return MarginAttestation(
        account=ACCOUNT,
        market=market_id("ETH"),
        size_delta=10**16,
        equity=50_000 * 10**18,
        initial_margin=4_000 * 10**18,
        snapshot_hash=keccak(b"snapshot"),
        risk_model_hash=keccak(b"model"),
        issued_at=now - 60,
        valid_until=now + 3600,
        nonce=next(_nonces),
    )


def _sig(net: Net, att: MarginAttestation, chain_id: int = ARB, key: Any = None) -> bytes:
    gate = net.chains[chain_id].gate.address
    return bytes.fromhex(sign(att, chain_id, gate, key or net.signer)[2:])


def _sig_domain(net: Net, att: MarginAttestation, **domain: Any) -> bytes:
    """Signed by the real key over a domain with ``domain`` changed."""
    data = typed_data(att, ARB, net.chains[ARB].gate.address)
    data["domain"] = {**data["domain"], **domain}
    signed = net.signer.sign_message(encode_typed_data(full_message=data))
    return bytes(signed.signature)


def field_mutations(att: MarginAttestation) -> Iterator[tuple[str, MarginAttestation]]:
    """Each field changed several ways (in range for its type), signature kept."""
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]  # noqa: E731
    variants: dict[str, list[Any]] = {
        "account": [
            "0x" + "00" * 20,
            "0x" + "42" * 20,
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        ]
        + ["0x" + (int(ACCOUNT, 16) ^ (1 << k)).to_bytes(20, "big").hex() for k in (0, 80, 159)],
        "market": [market_id(a) for a in ("BTC", "LINK", "eth", "ETH ")]
        + [flip(att.market, i) for i in (0, 15, 31)],
        "size_delta": [
            att.size_delta + 1,
            att.size_delta - 1,
            att.size_delta * 2,
            -att.size_delta,
            0,
            2**255 - 1,
            -(2**255),
        ],
        "equity": [att.equity + 1, att.equity - 1, att.equity * 10, 0, 2**256 - 1],
        "initial_margin": [
            att.initial_margin + 1,
            att.initial_margin - 1,
            att.initial_margin // 2,
            0,
        ],
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
    }
    for name, values in variants.items():
        for i, value in enumerate(values):
            yield f"field {name} #{i}", dataclasses.replace(att, **{name: value})


def domain_mutations(net: Net) -> list[tuple[str, dict[str, Any]]]:
    gate = net.chains[ARB].gate.address
    other_gate = net.chains[ETH].gate.address
    return [
        ("domain name other", {"name": "omnimargin2"}),
        ("domain name case", {"name": "Omnimargin"}),
        ("domain name empty", {"name": ""}),
        ("domain version 2", {"version": "2"}),
        ("domain version 0", {"version": "0"}),
        ("domain version empty", {"version": ""}),
        ("domain chainId of chain 1", {"chainId": ETH}),
        ("domain chainId 1", {"chainId": 1}),
        ("domain chainId 0", {"chainId": 0}),
        ("domain chainId +1", {"chainId": ARB + 1}),
        ("domain contract: chain 1's gate", {"verifyingContract": other_gate}),
        ("domain contract: the market", {"verifyingContract": net.chains[ARB].perp.address}),
        ("domain contract: zero", {"verifyingContract": "0x" + "00" * 20}),
        (
            "domain contract: gate + 1",
            {"verifyingContract": "0x" + (int(gate, 16) + 1).to_bytes(20, "big").hex()},
        ),
    ]


def signature_mutations(sig: bytes) -> Iterator[tuple[str, bytes]]:
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    yield "high s (same signer)", r + (N - s).to_bytes(32, "big") + bytes([55 - v])
    yield "high s, v kept", r + (N - s).to_bytes(32, "big") + bytes([v])
    for bad_v in (0, 1, 26, 29, 55 - v, 255):
        yield f"v {bad_v}", sig[:64] + bytes([bad_v])
    yield "zero signer (r = 0)", bytes(32) + (1).to_bytes(32, "big") + bytes([27])
    yield "r = 0, s = 0", bytes(64) + bytes([v])
    yield "s = 0", r + bytes(32) + bytes([v])
    yield "r = N", N.to_bytes(32, "big") + sig[32:]
    for n in (0, 1, 64):
        yield f"truncated to {n} bytes", sig[:n]
    for i in range(64):  # every byte of r and s
        yield f"bit flipped in byte {i}", sig[:i] + bytes([sig[i] ^ 1]) + sig[i + 1 :]


def _submit(net: Net, chain_id: int, att: MarginAttestation, sig: bytes, via: str = "perp") -> bool:
    """Whether the contract accepts (eth_call from the relayer: nothing is mined)."""
    chain = net.chains[chain_id]
    fn = (chain.perp if via == "perp" else chain.gate).functions
    call = fn.open(att.as_tuple(), sig) if via == "perp" else fn.consume(att.as_tuple(), sig)
    try:
        call.call({"from": net.relayer})
    except ContractLogicError:
        return False
    return True


def test_no_mutated_attestation_is_accepted(net: Net, reliability: ForTest) -> None:
    att = _att(net)
    sig = _sig(net, att)
    assert _submit(net, ARB, att, sig), "the unmutated attestation must be accepted"
    tried: dict[str, int] = {}
    accepted: list[str] = []

    def attempt(
        kind: str, what: str, a: MarginAttestation, s: bytes, chain_id: int = ARB, via: str = "perp"
    ) -> None:
        tried[kind] = tried.get(kind, 0) + 1
        if _submit(net, chain_id, a, s, via):
            accepted.append(f"{kind}: {what}")

    for what, mutated in field_mutations(att):
        attempt("fields", what, mutated, sig)
        attempt("cross-chain", f"{what} at chain 1's market", mutated, sig, ETH)
    now = att.issued_at + 60
    for what, changes in [
        ("expired 1 s ago", {"valid_until": now - 1}),
        ("expired 10 min ago", {"issued_at": now - 1200, "valid_until": now - 600}),
        ("issued 60 s ahead", {"issued_at": now + 60}),
        ("issued 1 h ahead", {"issued_at": now + 3600, "valid_until": now + 7200}),
    ]:
        timed = dataclasses.replace(att, **changes)  # validly signed, outside its window
        attempt("time window", what, timed, _sig(net, timed))
    for what, domain in domain_mutations(net):
        attempt("domain", what, att, _sig_domain(net, att, **domain))
    for what, bad in signature_mutations(sig):
        attempt("signature", what, att, bad)
    for i in range(20):  # keys that are not in the gate's signer set
        key = Account.from_key(keccak(text=f"omnimargin attacker {i}"))
        attempt("signature", f"signed by another key #{i}", att, _sig(net, att, key=key))
    # cross-chain: chain 2's attestation at chain 1's market and gate; chain 1's at chain 2
    attempt("cross-chain", "at chain 1's market", att, sig, ETH)
    attempt("cross-chain", "consumed directly at chain 1's gate", att, sig, ETH, "gate")
    attempt("cross-chain", "consumed directly at chain 2's gate", att, sig, ARB, "gate")
    attempt("cross-chain", "signed for chain 1, sent to chain 2", att, _sig(net, att, ETH))
    # the real one goes through, then every replay of it is refused
    perp = net.chains[ARB].perp
    tx = perp.functions.open(att.as_tuple(), sig).transact({"from": net.relayer})
    assert net.chains[ARB].w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1
    attempt("replay", "the same attestation again", att, sig)
    attempt("replay", "high-s twin of the spent one", att, next(signature_mutations(sig))[1])
    attempt("replay", "the spent one at chain 1", att, sig, ETH)
    again = dataclasses.replace(att, size_delta=att.size_delta * 3)  # validly signed, nonce spent
    attempt("replay", "a new attestation reusing the nonce", again, _sig(net, again))
    total = sum(tried.values())
    reliability.record(
        FAMILY,
        "mutated attestations submitted on chain",
        ", ".join(f"{n} {k}" for k, n in tried.items())
        + " mutations of one valid attestation, sent to the real PerpMarket/MarginGate",
        "every one reverted ('gate: unknown signer', 'bad v', 'high s', 'bad signature', "
        "'nonce used', 'only market'); the unmutated one was accepted once",
        total,
        len(accepted),
    )
    assert total >= 200 and not accepted, (total, accepted)
