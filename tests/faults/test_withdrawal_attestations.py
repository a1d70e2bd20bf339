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
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from aggregator.attestation import (
    MarginAttestation,
    WithdrawalAttestation,
    load_signer_key,
    market_id,
    sign,
    typed_data,
)
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, load_config
from tests.faults.helpers import ACCOUNT, ARB, ETH
from tests.reliability import ForTest

FAMILY = "Attestations"
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
WEI = 10**18
AMOUNT = 1 * WEI  # of WETH, out of the 12.345678901234567891 the demo account locked on chain 1
#: demo account 2: given WETH in chain 1's vault below, so a changed account gets to the gate
OTHER_ACCOUNT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
_nonces = itertools.count(20_000)


class Chain(NamedTuple):
    w3: Web3
    gate: Any
    vault: Any
    perp: Any
    tokens: dict[str, Any]  # by symbol


class Net(NamedTuple):
    config: OmnimarginConfig
    chains: dict[int, Chain]
    signer: LocalAccount
    relayer: str
    recipient: str


def _send(w3: Web3, call: Any, sender: str) -> None:
    tx = call.transact({"from": sender})
    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1


def _lock(chain: Chain, symbol: str, account: str, amount: int) -> None:
    """``amount`` of ``symbol`` minted by its owner and locked in the vault for ``account``."""
    token = chain.tokens[symbol]
    owner = token.functions.owner().call()
    _send(chain.w3, token.functions.mint(owner, amount), owner)
    _send(chain.w3, token.functions.approve(chain.vault.address, amount), owner)
    _send(chain.w3, chain.vault.functions.deposit_for(account, token.address, amount), owner)


def _contract(w3: Web3, address: str | None, name: str) -> Any:
    assert address is not None, name
    return w3.eth.contract(address=to_checksum_address(address), abi=list(load_artifact(name).abi))


def _with(att: Any, **changes: Any) -> Any:
    """``att`` (either kind of attestation) with ``changes``."""
    return dataclasses.replace(att, **changes)


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    cfg = load_config(devnet_factory(2).config_path)
    chains = {}
    for cid in (ETH, ARB):
        c = cfg.chain(cid)
        w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 30}))
        vaults = [s.address for s in cfg.sources_on(cid) if s.kind.value == "vault"]
        assert len(vaults) == 1 and vaults[0] is not None, vaults
        chains[cid] = Chain(
            w3,
            _contract(w3, c.margin_gate, "MarginGate"),
            _contract(w3, vaults[0], "CollateralVault"),
            _contract(w3, c.perp_market, "PerpMarket"),
            {t.symbol: _contract(w3, t.address, "ERC20") for t in cfg.tokens_on(cid)},
        )
    # chain 1: the demo account also locks LINK (another token it has there, 18 decimals as
    # WETH), and account 2 WETH; chain 2: the demo account locks WETH too, so that what is sent
    # there can get past the vault's balance check to the gate
    _lock(chains[ETH], "LINK", ACCOUNT, 100 * WEI)
    _lock(chains[ETH], "WETH", OTHER_ACCOUNT, 5 * WEI)
    _lock(chains[ARB], "WETH", ACCOUNT, 20 * WEI)
    accounts = list(chains[ETH].w3.eth.accounts)
    return Net(cfg, chains, load_signer_key(cfg.signer), str(accounts[7]), str(accounts[8]))


def _now(net: Net, chain_id: int = ETH) -> int:
    return int(net.chains[chain_id].w3.eth.get_block("latest")["timestamp"])


def _att(net: Net, chain_id: int = ETH, **changes: Any) -> WithdrawalAttestation:
    chain, now = net.chains[chain_id], _now(net, chain_id)
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
        issued_at=now - 60,
        valid_until=now + 3600,
        nonce=next(_nonces),
        counter=chain.gate.functions.counter_of(ACCOUNT).call(),
    )
    return dataclasses.replace(att, **changes)


def _sig(net: Net, att: Any, chain_id: int = ETH, key: Any = None, gate: str = "") -> bytes:
    gate = gate or net.chains[chain_id].gate.address
    return bytes.fromhex(sign(att, chain_id, gate, key or net.signer)[2:])


def _sig_typed(net: Net, data: dict[str, Any]) -> bytes:
    """Signed by the real key over EIP-712 data the test made up."""
    return bytes(net.signer.sign_message(encode_typed_data(full_message=data)).signature)


def _sig_domain(net: Net, att: WithdrawalAttestation, **domain: Any) -> bytes:
    """Signed by the real key over a domain with ``domain`` changed."""
    data = typed_data(att, ETH, net.chains[ETH].gate.address)
    data["domain"] = {**data["domain"], **domain}
    return _sig_typed(net, data)


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def _addr_flip(address: str, bit: int) -> str:
    return "0x" + (int(address, 16) ^ (1 << bit)).to_bytes(20, "big").hex()


def field_mutations(net: Net, att: WithdrawalAttestation) -> Iterator[tuple[str, Any]]:
    """Each field changed several ways (in range for its type), signature kept."""
    eth, arb = net.chains[ETH], net.chains[ARB]
    locked = eth.vault.functions.collateral(ACCOUNT, att.token).call()
    random_address = "0x" + keccak(b"random address")[:20].hex()
    variants: dict[str, list[Any]] = {
        "account": ["0x" + "00" * 20, "0x" + "42" * 20, OTHER_ACCOUNT, net.recipient]
        + [_addr_flip(ACCOUNT, k) for k in (0, 80, 159)],
        "vault": [
            arb.vault.address,  # the other chain's vault
            random_address,
            "0x" + "00" * 20,
            eth.gate.address,
            eth.perp.address,
            _addr_flip(att.vault, 0),
            _addr_flip(att.vault, 159),
        ],
        "token": [
            eth.tokens["LINK"].address,  # locked by the account too
            eth.tokens["USDC"].address,  # not locked by it
            eth.tokens["WBTC"].address,
            arb.tokens["WETH"].address,  # WETH of the other chain
            random_address,
            "0x" + "00" * 20,
            _addr_flip(att.token, 0),
        ],
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
        "recipient": [
            ACCOUNT,
            net.relayer,
            OTHER_ACCOUNT,
            random_address,
            eth.vault.address,
            "0x" + "00" * 20,
            _addr_flip(att.recipient, 0),
            _addr_flip(att.recipient, 159),
        ],
        "equity": [att.equity + 1, att.equity - 1, att.equity * 10, 0, 2**256 - 1],
        "initial_margin": [att.initial_margin + 1, 10**18, 2**256 - 1],
        "snapshot_hash": [_flip(att.snapshot_hash, i) for i in (0, 7, 31)]
        + [bytes(32), att.risk_model_hash],
        "risk_model_hash": [_flip(att.risk_model_hash, i) for i in (0, 7, 31)]
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
    for name, values in variants.items():
        for i, value in enumerate(values):
            yield f"field {name} #{i}", dataclasses.replace(att, **{name: value})


def domain_mutations(net: Net) -> list[tuple[str, dict[str, Any]]]:
    gate = net.chains[ETH].gate.address
    return [
        ("domain name other", {"name": "omnimargin2"}),
        ("domain name case", {"name": "Omnimargin"}),
        ("domain name empty", {"name": ""}),
        ("domain version 2", {"version": "2"}),
        ("domain version 0", {"version": "0"}),
        ("domain version empty", {"version": ""}),
        ("domain chainId of chain 2", {"chainId": ARB}),
        ("domain chainId 1", {"chainId": 1}),
        ("domain chainId 0", {"chainId": 0}),
        ("domain chainId +1", {"chainId": ETH + 1}),
        ("domain contract: chain 2's gate", {"verifyingContract": net.chains[ARB].gate.address}),
        ("domain contract: the vault", {"verifyingContract": net.chains[ETH].vault.address}),
        ("domain contract: the market", {"verifyingContract": net.chains[ETH].perp.address}),
        ("domain contract: zero", {"verifyingContract": "0x" + "00" * 20}),
        (
            "domain contract: gate + 1",
            {"verifyingContract": "0x" + (int(gate, 16) + 1).to_bytes(20, "big").hex()},
        ),
    ]


def type_mutations(net: Net, att: WithdrawalAttestation) -> Iterator[tuple[str, dict[str, Any]]]:
    """The attestation's values under another EIP-712 type (name, order, field types)."""
    base = typed_data(att, ETH, net.chains[ETH].gate.address)
    fields = base["types"]["WithdrawalAttestation"]

    def typed(name: str, fields: list[dict[str, str]], drop: str = "") -> dict[str, Any]:
        message = {k: v for k, v in base["message"].items() if k != drop}
        types = {"EIP712Domain": base["types"]["EIP712Domain"], name: fields}
        return {**base, "types": types, "primaryType": name, "message": message}

    for name in (
        "MarginAttestation",
        "withdrawalAttestation",
        "Withdrawal",
        "WithdrawalAttestation2",
    ):
        yield f"type named {name}", typed(name, fields)
    swapped = list(fields)
    swapped[2], swapped[4] = swapped[4], swapped[2]  # token <-> recipient (both addresses)
    yield "fields token and recipient swapped in the type", typed("WithdrawalAttestation", swapped)
    swapped = list(fields)
    swapped[1], swapped[2] = swapped[2], swapped[1]  # vault <-> token
    yield "fields vault and token swapped in the type", typed("WithdrawalAttestation", swapped)
    retyped = [{**f, "type": "uint128"} if f["name"] == "amount" else f for f in fields]
    yield "amount typed uint128", typed("WithdrawalAttestation", retyped)
    retyped = [{**f, "type": "uint256"} if f["type"] == "uint64" else f for f in fields]
    yield "times typed uint256", typed("WithdrawalAttestation", retyped)
    short = [f for f in fields if f["name"] != "counter"]
    yield "counter left out of the type", typed("WithdrawalAttestation", short, drop="counter")
    short = [f for f in fields if f["name"] != "recipient"]
    yield "recipient left out of the type", typed("WithdrawalAttestation", short, drop="recipient")


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
        yield f"bit flipped in byte {i}", _flip(sig, i)


def _margin_att(net: Net, att: WithdrawalAttestation, **changes: Any) -> MarginAttestation:
    """A margin attestation sharing the withdrawal's account, figures, window, nonce, counter."""
    margin = MarginAttestation(
        account=att.account,
        market=market_id("ETH"),
        size_delta=10**16,
        equity=50_000 * WEI,
        initial_margin=4_000 * WEI,
        snapshot_hash=att.snapshot_hash,
        risk_model_hash=att.risk_model_hash,
        issued_at=att.issued_at,
        valid_until=att.valid_until,
        nonce=att.nonce,
        counter=att.counter,
    )
    return dataclasses.replace(margin, **changes)


def _reason(exc: ContractLogicError) -> str:
    return str(exc.message or exc).removeprefix("execution reverted: ")


def test_no_mutated_withdrawal_attestation_is_accepted(net: Net, reliability: ForTest) -> None:
    eth, arb = net.chains[ETH], net.chains[ARB]
    att = _att(net)
    sig = _sig(net, att)
    tried: dict[str, int] = {}
    accepted: list[str] = []
    reasons: Counter[tuple[str, str]] = Counter()  # (kind, revert reason)

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
        try:
            call.call({"from": sender or net.relayer})
        except ContractLogicError as exc:
            return _reason(exc)
        return None

    def attempt(kind: str, what: str, a: Any, s: bytes, chain_id: int = ETH, **how: str) -> None:
        tried[kind] = tried.get(kind, 0) + 1
        reason = submit(a, s, chain_id, **how)
        if reason is None:
            accepted.append(f"{kind}: {what}")
        else:
            reasons[kind, reason] += 1

    assert submit(att, sig) is None, "the unmutated withdrawal attestation must be accepted"
    # the same withdrawal made out for chain 2's vault (and its WETH) is accepted there
    arb_att = _att(net, ARB)
    assert submit(arb_att, _sig(net, arb_att, ARB), ARB) is None, "chain 2's must be accepted"

    # each mutation also moved to chain 2 (its vault and WETH, where the account has some),
    # chain 1's signature kept: there it gets past the vault's balance check to the gate
    to_arb = {"vault": arb_att.vault, "token": arb_att.token}
    for what, mutated in field_mutations(net, att):
        attempt("fields", what, mutated, sig)
        moved = {k: v for k, v in to_arb.items() if getattr(mutated, k) == getattr(att, k)}
        attempt("cross-chain", f"{what}, moved to chain 2", _with(mutated, **moved), sig, ARB)
    for what, changes in [  # validly signed, still refused
        ("counter + 1", {"counter": att.counter + 1}),
        ("counter - 1", {"counter": (att.counter - 1) % 2**256}),
        ("counter + 2**128 (a global bump ahead)", {"counter": att.counter + 2**128}),
    ]:
        signed = _with(att, **changes)
        attempt("counter", what, signed, _sig(net, signed))
    now = att.issued_at + 60
    for what, changes in [
        ("expired 1 s ago", {"valid_until": now - 1}),
        ("expired 10 min ago", {"issued_at": now - 1200, "valid_until": now - 600}),
        ("issued 60 s ahead", {"issued_at": now + 60}),
        ("issued 1 h ahead", {"issued_at": now + 3600, "valid_until": now + 7200}),
    ]:
        timed = _with(att, **changes)  # validly signed, outside its window
        attempt("time window", what, timed, _sig(net, timed))
    for what, domain in domain_mutations(net):
        attempt("domain", what, att, _sig_domain(net, att, **domain))
    for what, bad in signature_mutations(sig):
        attempt("signature", what, att, bad)
    attempt("signature", "padded to 66 bytes", att, sig + b"\x00")
    for i in range(20):  # keys that are not in the gate's signer set
        key = Account.from_key(keccak(text=f"omnimargin withdrawal attacker {i}"))
        attempt("signature", f"signed by another key #{i}", att, _sig(net, att, key=key))
    # type confusion: a margin attestation's signature, the withdrawal's values under other
    # EIP-712 types, a signed withdrawal with another amount, and the other way round
    margin = _margin_att(net, att)
    margin_sig = _sig(net, margin)
    assert submit(margin, margin_sig, via="perp") is None, "the margin attestation is accepted"
    attempt("type confusion", "a margin attestation's signature", att, margin_sig)
    zeroed = _margin_att(net, att, size_delta=0, equity=att.equity, initial_margin=0)
    attempt("type confusion", "a margin attestation's (same figures)", att, _sig(net, zeroed))
    for what, data in type_mutations(net, att):
        attempt("type confusion", what, att, _sig_typed(net, data))
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
    assert reasons["direct gate call", "gate: only vault"] == len(callers), reasons
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
    _send(eth.w3, eth.vault.functions.withdraw(att.as_tuple(), sig), net.relayer)
    assert weth.functions.balanceOf(net.recipient).call() == balance + AMOUNT
    assert eth.vault.functions.collateral(ACCOUNT, weth.address).call() == locked - AMOUNT
    assert weth.functions.balanceOf(eth.vault.address).call() == held - AMOUNT
    assert eth.gate.functions.nonce_status(ACCOUNT, att.nonce).call() == 1
    # then every replay is refused
    attempt("replay", "the same attestation again", att, sig)
    attempt("replay", "high-s twin of the spent one", att, next(signature_mutations(sig))[1])
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
    cancelled = _att(net)
    assert submit(cancelled, _sig(net, cancelled)) is None
    _send(eth.w3, eth.gate.functions.cancel(cancelled.nonce), ACCOUNT)
    attempt("revoked", "nonce cancelled by the account", cancelled, _sig(net, cancelled))
    bumped = _att(net)
    bumped_sig = _sig(net, bumped)
    assert submit(bumped, bumped_sig) is None
    _send(eth.w3, eth.vault.functions.request_withdrawal(weth.address, 1), ACCOUNT)
    attempt("revoked", "counter bumped by the escape hatch", bumped, bumped_sig)
    _send(eth.w3, eth.vault.functions.cancel_withdrawal_request(weth.address), ACCOUNT)
    attempt("revoked", "... and still after the request is cancelled", bumped, bumped_sig)
    bumped = _att(net)
    bumped_sig = _sig(net, bumped)
    assert submit(bumped, bumped_sig) is None
    _send(eth.w3, eth.gate.functions.increment_account_counter(), ACCOUNT)
    attempt("revoked", "counter bumped by the account", bumped, bumped_sig)

    total = sum(tried.values())
    print(f"\n{total} mutations: {tried}")
    for (kind, reason), n in sorted(reasons.items()):
        print(f"  {kind}: {n} x {reason!r}")
    reliability.record(
        FAMILY,
        "mutated withdrawal attestations submitted on chain",
        ", ".join(f"{n} {k}" for k, n in tried.items())
        + " mutations of one valid withdrawal attestation, sent to the real "
        "CollateralVault/MarginGate",
        "every one reverted (gate: 'unknown signer', 'bad signature', 'bad v', 'high s', "
        "'other vault', 'only vault', 'old counter', 'nonce used', 'nonce cancelled', "
        "'expired', 'not yet valid'; vault: 'insufficient collateral', 'zero amount', "
        "'zero recipient'; a 66-byte signature fails to decode); the unmutated one was "
        "accepted, executed once (the recipient got the amount, the vault's collateral "
        "dropped by it), then refused",
        total,
        len(accepted),
    )
    assert total >= 200 and not accepted, (total, accepted)
