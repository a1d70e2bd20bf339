"""Attestations attacked on chain: a valid attestation for chain 2's PerpMarket, then hundreds
of mutations of it (every field, the counter and the window validly signed, the EIP-712 domain,
the signature: high s, bad v, zero signer, truncated, padded, other keys) plus replays and
submissions to chain 1's market and gate, each sent to the real contracts with ``eth_call``.
None may be accepted; the unmutated one is (so the test can fail), and is then refused as a
replay."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, NamedTuple

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from aggregator.attestation import MarginAttestation, load_signer_key, market_id
from chains.config import load_config
from tests.faults.helpers import ACCOUNT, ARB, ETH
from tests.faults.mutations import (
    OTHER_ACCOUNT,
    Attempts,
    Chain,
    account_variants,
    common_variants,
    domain_mutations,
    field_mutations,
    flip,
    fresh_validity,
    high_s,
    load_chains,
    revert_reason,
    send,
    signature,
    signed_mutations,
)
from tests.reliability import ForTest

_nonces = itertools.count(10_000)


class Net(NamedTuple):
    chains: dict[int, Chain]
    signer: LocalAccount
    relayer: str


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    cfg = load_config(devnet_factory(2).config_path)
    chains = load_chains(cfg)
    return Net(chains, load_signer_key(cfg.signer), str(list(chains[ARB].w3.eth.accounts)[7]))


def _att(net: Net) -> MarginAttestation:
    return MarginAttestation(
        account=ACCOUNT,
        market=market_id("ETH"),
        size_delta=10**16,
        equity=50_000 * 10**18,
        initial_margin=4_000 * 10**18,
        snapshot_hash=keccak(b"snapshot"),
        risk_model_hash=keccak(b"model"),
        **fresh_validity(net.chains[ARB], ACCOUNT, _nonces),
    )


def _sig(net: Net, att: MarginAttestation, chain_id: int = ARB) -> bytes:
    return signature(att, chain_id, net.chains[chain_id].gate.address, net.signer)


def field_variants(att: MarginAttestation) -> dict[str, list[Any]]:
    """Each field's other values (in range for its type), to be sent with the signature kept."""
    return {
        "account": account_variants(att.account, OTHER_ACCOUNT),
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
        **common_variants(att),
    }


def _submit(
    net: Net, chain_id: int, att: MarginAttestation, sig: bytes, via: str = "perp"
) -> str | None:
    """Why the contract refuses, None when it accepts (eth_call from the relayer)."""
    chain = net.chains[chain_id]
    fn = (chain.perp if via == "perp" else chain.gate).functions
    call = fn.open(att.as_tuple(), sig) if via == "perp" else fn.consume(att.as_tuple(), sig)
    return revert_reason(call, net.relayer)


def test_no_mutated_attestation_is_accepted(net: Net, reliability: ForTest) -> None:
    arb = net.chains[ARB]
    att = _att(net)
    sig = _sig(net, att)
    assert _submit(net, ARB, att, sig) is None, "the unmutated attestation must be accepted"
    attempts = Attempts()

    def attempt(
        kind: str, what: str, a: MarginAttestation, s: bytes, chain_id: int = ARB, via: str = "perp"
    ) -> None:
        attempts.attempt(kind, what, _submit(net, chain_id, a, s, via))

    for what, mutated in field_mutations(att, field_variants(att)):
        attempt("fields", what, mutated, sig)
        attempt("cross-chain", f"{what} at chain 1's market", mutated, sig, ETH)
    # the counter and the window (validly signed), the domain, the signature, other keys
    domains = domain_mutations(
        ARB,
        arb.gate.address,
        ("chain 1", ETH),
        [("chain 1's gate", net.chains[ETH].gate.address), ("the market", arb.perp.address)],
    )
    for kind, what, a, s in signed_mutations(
        att, sig, net.signer, ARB, arb.gate.address, domains, "omnimargin attacker"
    ):
        attempt(kind, what, a, s)
    # cross-chain: chain 2's attestation at chain 1's market and gate; chain 1's at chain 2
    attempt("cross-chain", "at chain 1's market", att, sig, ETH)
    attempt("cross-chain", "consumed directly at chain 1's gate", att, sig, ETH, "gate")
    attempt("cross-chain", "consumed directly at chain 2's gate", att, sig, ARB, "gate")
    attempt("cross-chain", "signed for chain 1, sent to chain 2", att, _sig(net, att, ETH))
    # the real one goes through, then every replay of it is refused
    send(arb.w3, arb.perp.functions.open(att.as_tuple(), sig), net.relayer)
    attempt("replay", "the same attestation again", att, sig)
    attempt("replay", "high-s twin of the spent one", att, high_s(sig))
    attempt("replay", "the spent one at chain 1", att, sig, ETH)
    again = dataclasses.replace(att, size_delta=att.size_delta * 3)  # validly signed, nonce spent
    attempt("replay", "a new attestation reusing the nonce", again, _sig(net, again))
    attempts.report()
    attempts.record(
        reliability,
        "mutated attestations submitted on chain",
        "mutations of one valid attestation, sent to the real PerpMarket/MarginGate",
        "every one reverted (gate: 'unknown signer', 'bad signature', 'bad v', 'high s', "
        "'old counter', 'expired', 'not yet valid', 'nonce used', 'only market'; perp: "
        "'unknown market', 'zero size'; a 66-byte signature fails to decode); the unmutated "
        "one was accepted once",
    )
    assert attempts.total >= 200 and not attempts.accepted, (attempts.tried, attempts.accepted)
