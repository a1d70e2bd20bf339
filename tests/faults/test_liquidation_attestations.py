"""Liquidation attestations attacked on chain: two valid steps of a liquidation plan of the demo
account, a close of 1 ETH of its +2 ETH position on chain 2's PerpMarket and a seizure of
1 WETH (0.05 of it the submitter's bonus) from its collateral in chain 1's CollateralVault,
then hundreds of mutations of each (every field: the target, the asset, the size, the amount,
the bonus, the recipient, the settlement, the figures, the window, the nonce, the counter; the
EIP-712 domain and type; the signature: high s, bad v, zero signer, truncated, other keys),
margin and withdrawal attestations' signatures passed off as a step's, steps that break the
contracts' rules though validly signed, the gate called by others than the step's target,
submissions to the other chain, replays and revocations, each sent to the real contracts with
``eth_call``. None may be accepted; the unmutated steps are (so the test can fail), are then
executed for real (the position shrinks by 1 ETH; the account's collateral drops by the amount,
the submitter's wallet gets the bonus, the fund's collateral the rest), and every replay of
them is refused."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from aggregator.attestation import (
    LiquidationAttestation,
    MarginAttestation,
    WithdrawalAttestation,
    load_signer_key,
    market_id,
    typed_data,
)
from chains.config import load_config
from chains.devnet_margin import DEVNET_FUND
from tests.faults.helpers import ACCOUNT, ARB, ETH
from tests.faults.mutations import (
    OTHER_ACCOUNT,
    ZERO,
    Attempts,
    Chain,
    account_variants,
    address_variants,
    common_variants,
    contract,
    domain_mutations,
    field_mutations,
    flip,
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

FAULT = "mutated liquidation attestations submitted on chain"
WEI = 10**18
PRICE_UNIT = 10**8  # the feeds' decimals
SIZE = 2 * WEI  # the demo account's ETH position on chain 2 (and on chain 1, for cross-chain)
CLOSE = -1 * WEI  # the close step: 1 ETH of it
SEIZED = 1 * WEI  # the seizure step: WETH, out of the 12.345678901234567891 locked on chain 1
BONUS = 5 * 10**16  # of which the submitter's
ETH_MARKET = market_id("ETH")
_nonces = itertools.count(30_000)


class Net(NamedTuple):
    chains: dict[int, Chain]
    signer: LocalAccount
    relayer: str  # submits every step (the keeper's role): the bonus goes to it
    owner: str  # of chain 1's gate (the devnet's deployer)


class Step(NamedTuple):
    """One valid liquidation step and where it goes."""

    name: str  # "close" or "seizure"
    att: LiquidationAttestation
    sig: bytes
    chain_id: int
    via: str  # "perp" or "vault": the contract whose liquidate() executes it
    other: int  # the other chain


def _margin(chain: Chain, account: str, market: bytes, size: int, **changes: Any) -> Any:
    att = MarginAttestation(
        account=account,
        market=market,
        size_delta=size,
        equity=50_000 * WEI,
        initial_margin=4_000 * WEI,
        snapshot_hash=keccak(b"open snapshot"),
        risk_model_hash=keccak(b"model"),
        **fresh_validity(chain, account, _nonces),
    )
    return dataclasses.replace(att, **changes)


def _open(chain: Chain, chain_id: int, signer: LocalAccount, relayer: str, *position: Any) -> None:
    """``position`` = (account, market, size) opened by a margin attestation of the signer."""
    att = _margin(chain, *position)
    sig = signature(att, chain_id, chain.gate.address, signer)
    send(chain.w3, chain.perp.functions.open(att.as_tuple(), sig), relayer)


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    cfg = load_config(devnet_factory(2).config_path)
    chains = load_chains(cfg)
    signer = load_signer_key(cfg.signer)
    relayer = str(list(chains[ETH].w3.eth.accounts)[7])
    eth, arb = chains[ETH], chains[ARB]
    # positions, opened with margin attestations: the demo account +2 ETH on chain 2 (the one
    # liquidated) and +2 BTC there (a step with the BTC market gets past the market's checks),
    # +2 ETH on chain 1 (a close moved there too); account 2 +2 ETH on chain 2
    _open(arb, ARB, signer, relayer, ACCOUNT, ETH_MARKET, SIZE)
    _open(arb, ARB, signer, relayer, ACCOUNT, market_id("BTC"), SIZE)
    _open(eth, ETH, signer, relayer, ACCOUNT, ETH_MARKET, SIZE)
    _open(arb, ARB, signer, relayer, OTHER_ACCOUNT, ETH_MARKET, SIZE)
    # collateral: the demo account also locks LINK on chain 1 and WETH on chain 2, account 2
    # WETH on chain 1, so that seizures with those changed reach the gate
    lock(eth, "LINK", ACCOUNT, 100 * WEI)
    lock(eth, "WETH", OTHER_ACCOUNT, 5 * WEI)
    lock(arb, "WETH", ACCOUNT, 20 * WEI)
    return Net(chains, signer, relayer, str(eth.gate.functions.owner().call()))


def _asset(address: str) -> bytes:
    """A token as a seizure's ``asset``: its address as a 32-byte big-endian number."""
    return int(address, 16).to_bytes(32, "big")


def _step(net: Net, name: str, chain_id: int, **changes: Any) -> LiquidationAttestation:
    """A valid close (name "close": 1 ETH of the demo account's position on the chain's
    PerpMarket) or seizure (1 WETH of its collateral in the chain's vault, 0.05 the bonus, the
    rest to the fund), made out for chain ``chain_id``, with ``changes``."""
    chain = net.chains[chain_id]
    close = name == "close"
    att = LiquidationAttestation(
        account=ACCOUNT,
        target=chain.perp.address if close else chain.vault.address,
        asset=ETH_MARKET if close else _asset(chain.tokens["WETH"].address),
        size_delta=CLOSE if close else 0,
        amount=0 if close else SEIZED,
        bonus=0 if close else BONUS,
        recipient=DEVNET_FUND,
        settle=0,
        equity=1_500 * WEI,
        maintenance_margin=2_000 * WEI,
        snapshot_hash=keccak(b"liquidation snapshot"),
        risk_model_hash=keccak(b"model"),
        **fresh_validity(chain, ACCOUNT, _nonces),
    )
    return dataclasses.replace(att, **changes)


def _sig(net: Net, att: Any, chain_id: int, key: Any = None, gate: str = "") -> bytes:
    return signature(att, chain_id, gate or net.chains[chain_id].gate.address, key or net.signer)


def _tdiv(a: int, b: int) -> int:
    """Vyper's integer division: truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def field_variants(net: Net, st: Step) -> dict[str, list[Any]]:
    """Each field's other values (in range for its type), to be sent with the signature kept."""
    att, here, there = st.att, net.chains[st.chain_id], net.chains[st.other]
    close = st.name == "close"
    # the contract that executes the step, and the gate's other kind of registered target
    own, other_kind = (here.perp, here.vault) if close else (here.vault, here.perp)
    variants: dict[str, list[Any]] = {
        "account": account_variants(att.account, OTHER_ACCOUNT, DEVNET_FUND, net.relayer),
        "target": address_variants(
            att.target,
            other_kind.address,
            there.perp.address,  # the other chain's market and vault
            there.vault.address,
            here.gate.address,
            here.tokens["WETH"].address,
        ),
        "recipient": address_variants(
            att.recipient, ACCOUNT, net.relayer, OTHER_ACCOUNT, own.address
        ),
        "equity": [
            att.equity + 1,
            att.equity - 1,
            -att.equity,
            0,
            2**255 - 1,
            -(2**255),
        ],
        "maintenance_margin": [
            att.maintenance_margin + 1,
            att.maintenance_margin - 1,
            0,
            2**256 - 1,
        ],
        **common_variants(att),
    }
    if close:
        return variants | {
            "asset": [
                market_id("BTC"),  # another market the account has a position in
                market_id("LINK"),  # another market, no position
                market_id("eth"),
                market_id("ETH "),
                _asset(here.tokens["WETH"].address),  # a token at the market
                bytes(32),
                flip(att.asset, 0),
                flip(att.asset, 31),
            ],
            "size_delta": [
                -att.size_delta,  # increases the position
                1,
                att.size_delta + 1,
                att.size_delta - 1,
                -SIZE,  # closes all of it
                -SIZE - 1,  # more than the position: through zero
                -3 * SIZE,
                att.size_delta // 2,
                0,  # settle stays 0: an empty step
                2**255 - 1,
                -(2**255),
            ],
            "amount": [1, SEIZED, 2**256 - 1],
            "bonus": [1, BONUS, 2**256 - 1],
            "settle": [1, -1, 1_000 * WEI, -1_000 * WEI, 2**255 - 1, -(2**255)],
        }
    locked = here.vault.functions.collateral(ACCOUNT, here.tokens["WETH"].address).call()
    return variants | {
        "asset": [
            _asset(here.tokens["LINK"].address),  # another token the account locked
            _asset(here.tokens["USDC"].address),  # one it did not
            _asset(here.tokens["WBTC"].address),
            _asset(there.tokens["WETH"].address),  # WETH of the other chain
            ETH_MARKET,  # a market id at the vault
            bytes(32),
            flip(att.asset, 31),
            flip(att.asset, 11),  # above 160 bits
            flip(att.asset, 0),
        ],
        "size_delta": [1, -1, CLOSE, -CLOSE, 2**255 - 1, -(2**255)],
        "amount": [
            att.amount + 1,
            att.amount - 1,
            att.amount * 2,
            locked - 1,
            locked,  # all of it
            locked + 1,  # more than the collateral
            att.bonus,  # all of it the bonus
            att.bonus - 1,  # bonus above amount
            0,
            2**256 - 1,
        ],
        "bonus": [
            att.bonus + 1,
            att.bonus - 1,
            0,
            att.amount,
            att.amount + 1,  # above the amount
            2**256 - 1,
        ],
        "settle": [1, -1, 1_000 * WEI, 2**255 - 1, -(2**255)],
    }


def rule_breakers(net: Net, st: Step) -> list[tuple[str, dict[str, Any], str]]:
    """Steps that break the executing contract's rules, validly signed: (what, changes, via)."""
    here, there = net.chains[st.chain_id], net.chains[st.other]
    if st.name == "close":
        return [
            ("increases the position", {"size_delta": -CLOSE}, "perp"),
            ("through zero", {"size_delta": -3 * SIZE}, "perp"),
            ("more than the position by 1 wei", {"size_delta": -SIZE - 1}, "perp"),
            ("size 0 and settle 0 (an empty step)", {"size_delta": 0}, "perp"),
            ("an amount", {"amount": 1}, "perp"),
            ("a bonus", {"bonus": 1}, "perp"),
            ("a token as the market", {"asset": _asset(here.tokens["WETH"].address)}, "perp"),
            ("a market the account has no position in", {"asset": market_id("LINK")}, "perp"),
            ("an account with no position", {"account": "0x" + "42" * 20}, "perp"),
            ("the vault as target, at the market", {"target": here.vault.address}, "perp"),
            ("the other chain's market as target", {"target": there.perp.address}, "perp"),
            ("the close submitted to the vault", {}, "vault"),
            (
                "the close targeting the vault, at the vault",
                {"target": here.vault.address},
                "vault",
            ),
        ]
    weth = here.tokens["WETH"].address
    locked = here.vault.functions.collateral(ACCOUNT, weth).call()
    return [
        ("bonus above the amount", {"bonus": SEIZED + 1}, "vault"),
        ("more than the collateral", {"amount": locked + 1}, "vault"),
        ("zero amount", {"amount": 0, "bonus": 0}, "vault"),
        ("zero recipient", {"recipient": ZERO}, "vault"),
        ("a market id as the token", {"asset": ETH_MARKET}, "vault"),
        (
            "a token the account did not lock",
            {"asset": _asset(here.tokens["USDC"].address)},
            "vault",
        ),
        ("an account with nothing locked", {"account": "0x" + "42" * 20}, "vault"),
        ("a size", {"size_delta": CLOSE}, "vault"),
        ("a settlement", {"settle": -1_000 * WEI}, "vault"),
        ("the market as target, at the vault", {"target": here.perp.address}, "vault"),
        ("the other chain's vault as target", {"target": there.vault.address}, "vault"),
        ("the seizure submitted to the market", {}, "perp"),
        ("the seizure targeting the market, at the market", {"target": here.perp.address}, "perp"),
    ]


def _type_mutations(st: Step, base: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The step's values under other EIP-712 types (name, field order, field types)."""
    return type_mutations(
        base,
        names=(
            "MarginAttestation",
            "WithdrawalAttestation",
            "liquidationAttestation",
            "Liquidation",
            "LiquidationAttestation2",
        ),
        swaps=(
            ("amount", "bonus"),  # both uint256
            ("sizeDelta", "settle"),  # both int256
            ("target", "recipient"),  # both addresses
            ("snapshotHash", "riskModelHash"),
        ),
        retypes=(
            ("amount", "uint128"),
            ("equity", "uint256"),  # as in the other two types
            ("maintenanceMargin", "int256"),
            ("settle", "int128"),
            ("asset", "bytes20" if st.name == "seizure" else "bytes31"),
        ),
        dropped=("counter", "recipient", "settle", "bonus"),
    )


def _margin_like(net: Net, st: Step, **changes: Any) -> MarginAttestation:
    """A margin attestation sharing the step's account, figures, window, nonce and counter."""
    att = st.att
    margin = MarginAttestation(
        market=att.asset if st.name == "close" else ETH_MARKET,
        size_delta=att.size_delta or CLOSE,
        equity=att.equity,
        initial_margin=att.maintenance_margin,
        **same_identity(att),
    )
    return dataclasses.replace(margin, **changes)


def _withdrawal_like(net: Net, st: Step, **changes: Any) -> WithdrawalAttestation:
    """A withdrawal attestation sharing the step's account, figures, window, nonce, counter
    (the seizure's vault, token, amount and recipient)."""
    att, here = st.att, net.chains[st.chain_id]
    withdrawal = WithdrawalAttestation(
        vault=here.vault.address,
        token=here.tokens["WETH"].address,
        amount=att.amount or SEIZED,
        recipient=att.recipient,
        equity=att.equity,
        initial_margin=att.maintenance_margin,
        **same_identity(att),
    )
    return dataclasses.replace(withdrawal, **changes)


def test_no_mutated_liquidation_attestation_is_accepted(net: Net, reliability: ForTest) -> None:
    eth, arb = net.chains[ETH], net.chains[ARB]
    close = _step(net, "close", ARB)
    seizure = _step(net, "seizure", ETH)
    steps = [
        Step("close", close, _sig(net, close, ARB), ARB, "perp", ETH),
        Step("seizure", seizure, _sig(net, seizure, ETH), ETH, "vault", ARB),
    ]
    attempts = {st.name: Attempts(st.name) for st in steps}

    def submit(a: Any, s: bytes, chain_id: int, via: str, sender: str = "") -> str | None:
        """The revert reason, None when the contract accepts (eth_call: nothing is mined)."""
        chain = net.chains[chain_id]
        calls = {
            "perp": lambda: chain.perp.functions.liquidate,
            "vault": lambda: chain.vault.functions.liquidate,
            "gate": lambda: chain.gate.functions.consume_liquidation,
            "open": lambda: chain.perp.functions.open,
            "withdraw": lambda: chain.vault.functions.withdraw,
        }
        return revert_reason(calls[via]()(a.as_tuple(), s), sender or net.relayer)

    def attempt(
        st: Step,
        kind: str,
        what: str,
        a: Any,
        s: bytes,
        chain_id: int = 0,
        via: str = "",
        sender: str = "",
    ) -> str | None:
        reason = submit(a, s, chain_id or st.chain_id, via or st.via, sender)
        return attempts[st.name].attempt(kind, what, reason)

    def accepted_fresh(st: Step) -> tuple[LiquidationAttestation, bytes]:
        """A new valid step like ``st`` and its signature, accepted as they are."""
        fresh = _step(net, st.name, st.chain_id)
        fresh_sig = _sig(net, fresh, st.chain_id)
        assert submit(fresh, fresh_sig, st.chain_id, st.via) is None, st.name
        return fresh, fresh_sig

    # the unmutated steps are accepted, and the same steps made out for the other chain there
    for st in steps:
        assert submit(st.att, st.sig, st.chain_id, st.via) is None, f"the {st.name} is refused"
        elsewhere = _step(net, st.name, st.other)
        assert submit(elsewhere, _sig(net, elsewhere, st.other), st.other, st.via) is None, st.name

    for st in steps:
        here, there = net.chains[st.chain_id], net.chains[st.other]
        att, sig = st.att, st.sig
        # each field mutation, and the same moved to the other chain (its target and token,
        # where the account also has a position or collateral), the signature kept
        twin = _step(net, st.name, st.other)
        to_other: dict[str, Any] = {"target": twin.target, "asset": twin.asset}
        for what, mutated in field_mutations(att, field_variants(net, st)):
            attempt(st, "fields", what, mutated, sig)
            kept = {k: v for k, v in to_other.items() if getattr(mutated, k) == getattr(att, k)}
            moved_att = dataclasses.replace(mutated, **kept)
            attempt(st, "cross-chain", f"{what}, moved", moved_att, sig, st.other)
        # validly signed, against the contracts' rules
        for what, changes, via in rule_breakers(net, st):
            signed = dataclasses.replace(att, **changes)
            attempt(st, "rules", what, signed, _sig(net, signed, st.chain_id), via=via)
        # the counter and the window (validly signed), the domain, the signature, other keys
        domains = domain_mutations(
            st.chain_id,
            here.gate.address,
            ("the other chain", st.other),
            [
                ("the other chain's gate", there.gate.address),
                ("the vault", here.vault.address),
                ("the market", here.perp.address),
            ],
        )
        for kind, what, a, s in signed_mutations(
            att,
            sig,
            net.signer,
            st.chain_id,
            here.gate.address,
            domains,
            "omnimargin liquidation attacker",
        ):
            attempt(st, kind, what, a, s)
        # type confusion: margin and withdrawal attestations over the step's values (each
        # valid where it belongs), the step's values under other EIP-712 types, the other
        # step's signature, and the step's signature on the others
        margin = _margin_like(net, st)
        margin_sig = _sig(net, margin, st.chain_id)
        assert submit(margin, margin_sig, st.chain_id, "open") is None, "the margin one is valid"
        withdrawal = _withdrawal_like(net, st)
        withdrawal_sig = _sig(net, withdrawal, st.chain_id)
        assert submit(withdrawal, withdrawal_sig, st.chain_id, "withdraw") is None, "valid too"
        attempt(st, "type confusion", "a margin attestation's signature", att, margin_sig)
        attempt(st, "type confusion", "a withdrawal attestation's signature", att, withdrawal_sig)
        base = typed_data(att, st.chain_id, here.gate.address)
        for what, data in _type_mutations(st, base):
            attempt(st, "type confusion", what, att, signed_typed(net.signer, data))
        other = next(o for o in steps if o is not st)
        attempt(st, "type confusion", f"the {other.name}'s signature", att, other.sig)
        what = "the step's signature on the margin attestation"
        attempt(st, "type confusion", what, margin, sig, via="open")
        what = "the step's signature on the withdrawal attestation"
        attempt(st, "type confusion", what, withdrawal, sig, via="withdraw")
        # the gate's consume_liquidation straight from others than the step's target
        outsiders = [
            ("the relayer", net.relayer),
            ("the account", ACCOUNT),
            ("the fund (the recipient)", DEVNET_FUND),
            ("the gate's owner", here.gate.functions.owner().call()),
            ("the signer", net.signer.address),
            ("the other chain's market address", there.perp.address),
            ("the other chain's vault address", there.vault.address),
            ("a token", here.tokens["WETH"].address),
        ]
        for what, caller in outsiders:
            attempt(st, "direct gate call", what, att, sig, via="gate", sender=caller)
        refused = attempts[st.name].reasons
        assert refused["direct gate call", "gate: only market or vault"] == len(outsiders), refused
        registered = here.vault.address if st.via == "perp" else here.perp.address
        what = "from the registered " + ("vault" if st.via == "perp" else "market")
        reason = attempt(st, "direct gate call", what, att, sig, via="gate", sender=registered)
        assert reason == "gate: other target", reason
        # cross-chain: the step at the other chain's contract and gate, signed for other domains
        attempt(st, "cross-chain", "at the other chain's " + st.via, att, sig, st.other)
        what = "consumed at the other chain's gate by its " + st.via
        target = there.perp.address if st.via == "perp" else there.vault.address
        attempt(st, "cross-chain", what, att, sig, st.other, "gate", target)
        for what, s in [
            ("signed for the other chain's domain", _sig(net, att, st.other)),
            (
                "signed with the other chain's id, this gate",
                _sig(net, att, st.other, gate=here.gate.address),
            ),
            (
                "signed with this chain's id, the other gate",
                _sig(net, att, st.chain_id, gate=there.gate.address),
            ),
        ]:
            attempt(st, "cross-chain", what, att, s)
        twin_sig = _sig(net, twin, st.other)
        attempt(st, "cross-chain", "the other chain's step here", twin, twin_sig, st.chain_id)
        here_twin = dataclasses.replace(twin, target=att.target, asset=att.asset)
        what = "the other chain's signature, this chain's target and asset"
        attempt(st, "cross-chain", what, here_twin, twin_sig)
        attempt(
            st, "cross-chain", "this step's signature on the other chain's", twin, sig, st.other
        )

    # the real steps go through: the position shrinks by 1 ETH, realising the P&L of the part
    # closed at the feed's price; the collateral is seized, the bonus to the submitter
    close_st, seize_st = steps
    size, entry, realized = arb.perp.functions.position(ACCOUNT, ETH_MARKET).call()
    assert size == SIZE
    feed = contract(arb.w3, arb.perp.functions.feed_of(ETH_MARKET).call(), "PriceFeed")
    price = feed.functions.latestRoundData().call()[1]
    send(arb.w3, arb.perp.functions.liquidate(close.as_tuple(), close_st.sig), net.relayer)
    pnl = _tdiv(-CLOSE * (price - entry), PRICE_UNIT)
    after = arb.perp.functions.position(ACCOUNT, ETH_MARKET).call()
    assert list(after) == [SIZE + CLOSE, entry, realized + pnl + close.settle], (after, pnl)
    weth = eth.tokens["WETH"]
    vault = eth.vault.functions
    locked = vault.collateral(ACCOUNT, weth.address).call()
    fund = vault.collateral(DEVNET_FUND, weth.address).call()
    wallet = weth.functions.balanceOf(net.relayer).call()
    total = vault.total_locked(weth.address).call()
    held = weth.functions.balanceOf(eth.vault.address).call()
    send(eth.w3, vault.liquidate(seizure.as_tuple(), seize_st.sig), net.relayer)
    assert vault.collateral(ACCOUNT, weth.address).call() == locked - SEIZED
    assert vault.collateral(DEVNET_FUND, weth.address).call() == fund + SEIZED - BONUS
    assert weth.functions.balanceOf(net.relayer).call() == wallet + BONUS
    assert vault.total_locked(weth.address).call() == total - BONUS
    assert weth.functions.balanceOf(eth.vault.address).call() == held - BONUS
    for st in steps:
        gate = net.chains[st.chain_id].gate
        assert gate.functions.nonce_status(ACCOUNT, st.att.nonce).call() == 1, st.name

    # then every replay is refused
    for st in steps:
        att, sig = st.att, st.sig
        reason = attempt(st, "replay", "the same step again", att, sig)
        assert reason == "gate: nonce used", reason
        attempt(st, "replay", "high-s twin of the spent one", att, high_s(sig))
        attempt(st, "replay", "the spent one at the other chain", att, sig, st.other)
        reuses: list[tuple[str, dict[str, Any]]] = [
            ("a later window", {"valid_until": att.valid_until + 60}),
            ("another recipient", {"recipient": OTHER_ACCOUNT}),
            ("new figures", {"equity": att.equity - 1, "snapshot_hash": keccak(b"later")}),
        ]
        if st.name == "close":
            reuses.append(("half the size", {"size_delta": CLOSE // 2}))
        else:
            reuses.append(("another amount", {"amount": SEIZED // 2, "bonus": BONUS // 2}))
            reuses.append(("LINK", {"asset": _asset(eth.tokens["LINK"].address)}))
        for what, changes in reuses:
            again = dataclasses.replace(att, **changes)  # validly signed, nonce spent
            reason = attempt(
                st, "replay", f"reusing the nonce: {what}", again, _sig(net, again, st.chain_id)
            )
            assert reason == "gate: nonce used", (what, reason)
        # one nonce space: a margin or withdrawal attestation reusing the spent nonce
        reused = _margin_like(net, st)
        reason = attempt(
            st,
            "replay",
            "a margin attestation reusing the nonce",
            reused,
            _sig(net, reused, st.chain_id),
            via="open",
        )
        assert reason == "gate: nonce used", reason
        if st.name == "seizure":
            reused_w = _withdrawal_like(net, st)
            what = "a withdrawal attestation reusing the nonce"
            reason = attempt(st, "replay", what, reused_w, _sig(net, reused_w, ETH), via="withdraw")
            assert reason == "gate: nonce used", reason

    # revoked before use: the account cancels the nonce, or bumps its counter (the escape
    # hatch's request does too), or the owner bumps the global counter
    for st in steps:
        chain = net.chains[st.chain_id]
        fresh, fresh_sig = accepted_fresh(st)
        send(chain.w3, chain.gate.functions.cancel(fresh.nonce), ACCOUNT)
        reason = attempt(st, "revoked", "nonce cancelled by the account", fresh, fresh_sig)
        assert reason == "gate: nonce cancelled", reason
        fresh, fresh_sig = accepted_fresh(st)
        send(chain.w3, chain.gate.functions.increment_account_counter(), ACCOUNT)
        reason = attempt(st, "revoked", "counter bumped by the account", fresh, fresh_sig)
        assert reason == "gate: old counter", reason
    # the escape hatch: all the WETH requested (the counter bumped: an earlier step dies), a
    # new step still seizes from the pending amount, but not more than it
    st = seize_st
    fresh, fresh_sig = accepted_fresh(st)
    all_weth = vault.collateral(ACCOUNT, weth.address).call()
    send(eth.w3, vault.request_withdrawal(weth.address, all_weth), ACCOUNT)
    assert vault.collateral(ACCOUNT, weth.address).call() == 0
    reason = attempt(st, "revoked", "counter bumped by the escape hatch", fresh, fresh_sig)
    assert reason == "gate: old counter", reason
    pending = _step(net, "seizure", ETH)
    assert submit(pending, _sig(net, pending, ETH), ETH, "vault") is None, "seized from pending"
    beyond = _step(net, "seizure", ETH, amount=all_weth + 1)
    reason = attempt(st, "rules", "more than the pending amount", beyond, _sig(net, beyond, ETH))
    assert reason == "vault: insufficient collateral", reason
    send(eth.w3, vault.cancel_withdrawal_request(weth.address), ACCOUNT)
    reason = attempt(
        st, "revoked", "... and still after the request is cancelled", fresh, fresh_sig
    )
    assert reason == "gate: old counter", reason
    for st in steps:
        chain = net.chains[st.chain_id]
        fresh, fresh_sig = accepted_fresh(st)
        send(chain.w3, chain.gate.functions.increment_counter(), net.owner)
        reason = attempt(st, "revoked", "global counter bumped by the owner", fresh, fresh_sig)
        assert reason == "gate: old counter", reason

    by_step = {name: part.total for name, part in attempts.items()}
    for part in attempts.values():
        part.report()
    whole = Attempts.combined(attempts.values())
    distinct = sorted({reason for _, reason in whole.reasons} - {"execution reverted"})
    silent = sum(n for (_, reason), n in whole.reasons.items() if reason == "execution reverted")
    whole.record(
        reliability,
        FAULT,
        f"mutations of two valid liquidation steps ({by_step['close']} of a close on "
        f"PerpMarket.liquidate, {by_step['seizure']} of a seizure on CollateralVault.liquidate), "
        "sent to the real contracts and MarginGate",
        "every one reverted (" + ", ".join(repr(r) for r in distinct) + f"; {silent} with no "
        "reason: a 66-byte signature fails to decode, a sizeDelta of -2**255 overflows abs()"
        "); the unmutated "
        "steps were accepted, executed once (the position shrank by the size, the collateral "
        "dropped by the amount, the submitter got the bonus, the fund the rest), then refused",
    )
    assert all(n >= 200 for n in by_step.values()) and not whole.accepted, (by_step, whole.accepted)
