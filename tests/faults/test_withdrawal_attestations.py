"""Withdrawal attestations attacked on chain: a valid WithdrawalAttestation releasing 1 WETH of
the demo account from chain 1's CollateralVault, then hundreds of mutations of it (every field,
the vault, the token, the amount, the recipient, the counter, the EIP-712 domain and type, the
signature: high s, bad v, zero signer, truncated, other keys), a margin attestation's signature
passed off as a withdrawal's, the gate called by non-vaults, submissions to chain 2's vault,
replays and revocations, each sent to the real contracts with ``eth_call``. None may be
accepted; the unmutated one is (so the test can fail), is then executed for real (the recipient
gets the amount, the vault's collateral drops), and every replay of it is refused."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, NamedTuple

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from aggregator.attestation import (
    MarginAttestation,
    WithdrawalAttestation,
    load_signer_key,
    market_id,
    typed_data,
)
from chains.config import load_config
from tests.faults.helpers import ACCOUNT, ARB, ETH
from tests.faults.mutations import (
    OTHER_ACCOUNT,
    Attempts,
    Chain,
    account_variants,
    address_variants,
    common_variants,
    domain_mutations,
    field_mutations,
    fresh_validity,
    high_s,
    load_chains,
    lock,
    revert_reason,
    same_identity,
    send,
    signature,
    signed_mutations,
    signed_typed,
    type_mutations,
)
from tests.reliability import ForTest

WEI = 10**18
AMOUNT = 1 * WEI  # of WETH, out of the 12.345678901234567891 the demo account locked on chain 1
_nonces = itertools.count(20_000)


class Net(NamedTuple):
    chains: dict[int, Chain]
    signer: LocalAccount
    relayer: str
    recipient: str


def _with(att: Any, **changes: Any) -> Any:
    """``att`` (either kind of attestation) with ``changes``."""
    return dataclasses.replace(att, **changes)


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    cfg = load_config(devnet_factory(2).config_path)
    chains = load_chains(cfg)
    # chain 1: the demo account also locks LINK (another token it has there, 18 decimals as
    # WETH), and account 2 WETH; chain 2: the demo account locks WETH too, so that what is sent
    # there can get past the vault's balance check to the gate
    lock(chains[ETH], "LINK", ACCOUNT, 100 * WEI)
    lock(chains[ETH], "WETH", OTHER_ACCOUNT, 5 * WEI)
    lock(chains[ARB], "WETH", ACCOUNT, 20 * WEI)
    accounts = list(chains[ETH].w3.eth.accounts)
    return Net(chains, load_signer_key(cfg.signer), str(accounts[7]), str(accounts[8]))


def _att(net: Net, chain_id: int = ETH, **changes: Any) -> WithdrawalAttestation:
    chain = net.chains[chain_id]
    att = WithdrawalAttestation(
        account=ACCOUNT,
        vault=chain.vault.address,
        token=chain.tokens["WETH"].address,
        amount=AMOUNT,
        recipient=net.recipient,
        equity=40_000 * WEI,
        initial_margin=0,
        snapshot_hash=keccak(b"withdrawal snapshot"),
        risk_model_hash=keccak(b"model"),
        **fresh_validity(chain, ACCOUNT, _nonces),
    )
    return dataclasses.replace(att, **changes)


def _sig(net: Net, att: Any, chain_id: int = ETH, key: Any = None, gate: str = "") -> bytes:
    return signature(att, chain_id, gate or net.chains[chain_id].gate.address, key or net.signer)


def field_variants(net: Net, att: WithdrawalAttestation) -> dict[str, list[Any]]:
    """Each field's other values (in range for its type), to be sent with the signature kept."""
    eth, arb = net.chains[ETH], net.chains[ARB]
    locked = eth.vault.functions.collateral(ACCOUNT, att.token).call()
    return {
        "account": account_variants(att.account, OTHER_ACCOUNT, net.recipient),
        # the other chain's vault, the gate, the market
        "vault": address_variants(att.vault, arb.vault.address, eth.gate.address, eth.perp.address),
        "token": address_variants(
            att.token,
            eth.tokens["LINK"].address,  # locked by the account too
            eth.tokens["USDC"].address,  # not locked by it
            eth.tokens["WBTC"].address,
            arb.tokens["WETH"].address,  # WETH of the other chain
        ),
        "amount": [
            att.amount + 1,
            att.amount - 1,
            att.amount * 2,
            locked - 1,  # all but one unit
            locked,  # all of it
            locked + 1,  # more than locked
            0,
            1,
            2**256 - 1,
        ],
        "recipient": address_variants(
            att.recipient, ACCOUNT, net.relayer, OTHER_ACCOUNT, eth.vault.address
        ),
        "equity": [att.equity + 1, att.equity - 1, att.equity * 10, 0, 2**256 - 1],
        "initial_margin": [att.initial_margin + 1, 10**18, 2**256 - 1],
        **common_variants(att),
    }


def _margin_att(net: Net, att: WithdrawalAttestation, **changes: Any) -> MarginAttestation:
    """A margin attestation sharing the withdrawal's account, figures, window, nonce, counter."""
    margin = MarginAttestation(
        market=market_id("ETH"),
        size_delta=10**16,
        equity=50_000 * WEI,
        initial_margin=4_000 * WEI,
        **same_identity(att),
    )
    return dataclasses.replace(margin, **changes)


def test_no_mutated_withdrawal_attestation_is_accepted(net: Net, reliability: ForTest) -> None:
    eth, arb = net.chains[ETH], net.chains[ARB]
    att = _att(net)
    sig = _sig(net, att)
    attempts = Attempts()

    def submit(
        a: Any, s: bytes, chain_id: int = ETH, via: str = "vault", sender: str = ""
    ) -> str | None:
        """The revert reason, None when the contract accepts (eth_call: nothing is mined)."""
        chain = net.chains[chain_id]
        if via == "vault":
            call = chain.vault.functions.withdraw(a.as_tuple(), s)
        elif via == "gate":
            call = chain.gate.functions.consume_withdrawal(a.as_tuple(), s)
        else:
            call = chain.perp.functions.open(a.as_tuple(), s)
        return revert_reason(call, sender or net.relayer)

    def attempt(kind: str, what: str, a: Any, s: bytes, chain_id: int = ETH, **how: str) -> None:
        attempts.attempt(kind, what, submit(a, s, chain_id, **how))

    def accepted_fresh() -> tuple[WithdrawalAttestation, bytes]:
        """A new valid withdrawal and its signature, accepted as it is."""
        fresh = _att(net)
        fresh_sig = _sig(net, fresh)
        assert submit(fresh, fresh_sig) is None
        return fresh, fresh_sig

    assert submit(att, sig) is None, "the unmutated withdrawal attestation must be accepted"
    # the same withdrawal made out for chain 2's vault (and its WETH) is accepted there
    arb_att = _att(net, ARB)
    assert submit(arb_att, _sig(net, arb_att, ARB), ARB) is None, "chain 2's must be accepted"

    # each mutation also moved to chain 2 (its vault and WETH, where the account has some),
    # chain 1's signature kept: there it gets past the vault's balance check to the gate
    to_arb = {"vault": arb_att.vault, "token": arb_att.token}
    for what, mutated in field_mutations(att, field_variants(net, att)):
        attempt("fields", what, mutated, sig)
        moved = {k: v for k, v in to_arb.items() if getattr(mutated, k) == getattr(att, k)}
        attempt("cross-chain", f"{what}, moved to chain 2", _with(mutated, **moved), sig, ARB)
    # the counter and the window (validly signed), the domain, the signature, other keys
    domains = domain_mutations(
        ETH,
        eth.gate.address,
        ("chain 2", ARB),
        [
            ("chain 2's gate", arb.gate.address),
            ("the vault", eth.vault.address),
            ("the market", eth.perp.address),
        ],
    )
    for kind, what, a, s in signed_mutations(
        att, sig, net.signer, ETH, eth.gate.address, domains, "omnimargin withdrawal attacker"
    ):
        attempt(kind, what, a, s)
    # type confusion: a margin attestation's signature, the withdrawal's values under other
    # EIP-712 types, a signed withdrawal with another amount, and the other way round
    margin = _margin_att(net, att)
    margin_sig = _sig(net, margin)
    assert submit(margin, margin_sig, via="perp") is None, "the margin attestation is accepted"
    attempt("type confusion", "a margin attestation's signature", att, margin_sig)
    zeroed = _margin_att(net, att, size_delta=0, equity=att.equity, initial_margin=0)
    attempt("type confusion", "a margin attestation's (same figures)", att, _sig(net, zeroed))
    for what, data in type_mutations(
        typed_data(att, ETH, eth.gate.address),
        names=(
            "MarginAttestation",
            "withdrawalAttestation",
            "Withdrawal",
            "WithdrawalAttestation2",
        ),
        swaps=(("token", "recipient"), ("vault", "token")),
        retypes=(("amount", "uint128"),),
        dropped=("counter", "recipient"),
    ):
        attempt("type confusion", what, att, signed_typed(net.signer, data))
    for amount in (AMOUNT * 3, AMOUNT // 2):
        attempt(
            "type confusion",
            f"signed for {AMOUNT}, submitted for {amount}",
            dataclasses.replace(att, amount=amount),
            sig,
        )
    what = "the withdrawal's signature on a margin attestation"
    attempt("type confusion", what, margin, sig, via="perp")
    # the gate's consume_withdrawal straight from non-vaults: always "gate: only vault"
    signer = net.signer.address
    owner = eth.gate.functions.owner().call()
    callers = [
        ("the relayer", net.relayer),
        ("the account", ACCOUNT),
        ("the recipient", net.recipient),
        ("the gate's owner", owner),
        ("the signer", signer),
        ("the PerpMarket (a registered market)", eth.perp.address),
        ("chain 2's vault address", arb.vault.address),
    ]
    for what, caller in callers:
        attempt("direct gate call", what, att, sig, via="gate", sender=caller)
    assert attempts.reasons["direct gate call", "gate: only vault"] == len(callers), (
        attempts.reasons
    )
    # cross-chain: chain 1's withdrawal at chain 2's vault and gate, chain 2's signed for chain 1
    attempt("cross-chain", "at chain 2's vault", att, sig, ARB)
    attempt("cross-chain", "consumed directly at chain 2's gate", att, sig, ARB, via="gate")
    arb_token = dataclasses.replace(att, token=arb.tokens["WETH"].address)
    what = "chain 2's WETH, chain 1's vault, at chain 2's vault"
    attempt("cross-chain", what, arb_token, _sig(net, arb_token), ARB)
    arb_sig = _sig(net, arb_att, ARB)
    for what, s in [
        ("signed for chain 1's domain", _sig(net, arb_att, ETH)),
        (
            "signed with chain 1's id, chain 2's gate",
            _sig(net, arb_att, ETH, gate=arb.gate.address),
        ),
        (
            "signed with chain 2's id, chain 1's gate",
            _sig(net, arb_att, ARB, gate=eth.gate.address),
        ),
    ]:
        attempt("cross-chain", f"chain 2's withdrawal {what}", arb_att, s, ARB)
    attempt("cross-chain", "chain 2's withdrawal at chain 1's vault", arb_att, arb_sig)
    arb_as_eth = dataclasses.replace(arb_att, token=att.token, vault=att.vault)
    attempt("cross-chain", "chain 2's signature, chain 1's vault and token", arb_as_eth, arb_sig)

    # the real one goes through: the recipient gets the amount, the vault's collateral drops
    weth = eth.tokens["WETH"]
    balance = weth.functions.balanceOf(net.recipient).call()
    locked = eth.vault.functions.collateral(ACCOUNT, weth.address).call()
    held = weth.functions.balanceOf(eth.vault.address).call()
    send(eth.w3, eth.vault.functions.withdraw(att.as_tuple(), sig), net.relayer)
    assert weth.functions.balanceOf(net.recipient).call() == balance + AMOUNT
    assert eth.vault.functions.collateral(ACCOUNT, weth.address).call() == locked - AMOUNT
    assert weth.functions.balanceOf(eth.vault.address).call() == held - AMOUNT
    assert eth.gate.functions.nonce_status(ACCOUNT, att.nonce).call() == 1
    # then every replay is refused
    attempt("replay", "the same attestation again", att, sig)
    attempt("replay", "high-s twin of the spent one", att, high_s(sig))
    attempt("replay", "the spent one at chain 2's vault", att, sig, ARB)
    attempt("replay", "the spent one consumed directly at the gate", att, sig, via="gate")
    reuses: list[tuple[str, dict[str, Any]]] = [
        ("another amount", {"amount": AMOUNT // 2}),
        ("another recipient", {"recipient": OTHER_ACCOUNT}),
        ("another token", {"token": eth.tokens["LINK"].address}),
        ("a later window", {"valid_until": att.valid_until + 60}),
    ]
    for what, changes in reuses:
        again = _with(att, **changes)  # validly signed, nonce spent
        attempt("replay", f"a new withdrawal reusing the nonce: {what}", again, _sig(net, again))
    # one nonce space: a margin attestation reusing the spent nonce is refused too
    fresh = _margin_att(net, att, nonce=next(_nonces))
    assert submit(fresh, _sig(net, fresh), via="perp") is None, "a fresh one is accepted"
    attempt("replay", "a margin attestation reusing the nonce", margin, margin_sig, via="perp")
    # revoked before use: the account cancels the nonce, or its escape hatch bumps its counter
    cancelled, cancelled_sig = accepted_fresh()
    send(eth.w3, eth.gate.functions.cancel(cancelled.nonce), ACCOUNT)
    attempt("revoked", "nonce cancelled by the account", cancelled, cancelled_sig)
    bumped, bumped_sig = accepted_fresh()
    send(eth.w3, eth.vault.functions.request_withdrawal(weth.address, 1), ACCOUNT)
    attempt("revoked", "counter bumped by the escape hatch", bumped, bumped_sig)
    send(eth.w3, eth.vault.functions.cancel_withdrawal_request(weth.address), ACCOUNT)
    attempt("revoked", "... and still after the request is cancelled", bumped, bumped_sig)
    bumped, bumped_sig = accepted_fresh()
    send(eth.w3, eth.gate.functions.increment_account_counter(), ACCOUNT)
    attempt("revoked", "counter bumped by the account", bumped, bumped_sig)

    attempts.report()
    attempts.record(
        reliability,
        "mutated withdrawal attestations submitted on chain",
        "mutations of one valid withdrawal attestation, sent to the real "
        "CollateralVault/MarginGate",
        "every one reverted (gate: 'unknown signer', 'bad signature', 'bad v', 'high s', "
        "'other vault', 'only vault', 'old counter', 'nonce used', 'nonce cancelled', "
        "'expired', 'not yet valid'; vault: 'insufficient collateral', 'zero amount', "
        "'zero recipient'; a 66-byte signature fails to decode); the unmutated one was "
        "accepted, executed once (the recipient got the amount, the vault's collateral "
        "dropped by it), then refused",
    )
    assert attempts.total >= 200 and not attempts.accepted, (attempts.tried, attempts.accepted)
