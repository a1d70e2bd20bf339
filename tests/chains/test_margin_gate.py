"""MarginGate and PerpMarket on real anvil chains (DESIGN.md, "Attestations"): a signed
attestation opens a position on chain B that the next snapshot shows; replays, other chains'
gates, expired or altered attestations, malleable or malformed signatures, rotated-out signers
and non-market callers are refused. Plus the EIP-712 hash against the gate's and a hand-rolled
one, and the signer key's loading rules."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from aggregator.attestation import (
    FIELDS,
    LiquidationAttestation,
    MarginAttestation,
    WithdrawalAttestation,
    digest,
    load_signer_key,
    market_id,
    recover,
    reference_digest,
    sign,
    typed_data,
)
from aggregator.errors import InputError
from aggregator.snapshot_view import chain_json
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, SignerConfig, load_config
from chains.devnet_margin import DEVNET_SIGNER_KEY, SIGNER_KEY_FILE, devnet_signer_address
from chains.reader import snapshot_all
from chains.types import PerpPosition

CHAIN_A, CHAIN_B = 31337001, 31337002
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_nonces = itertools.count(1)


class Chain(NamedTuple):
    w3: Web3
    gate: Any
    perp: Any


class Net(NamedTuple):
    config: OmnimarginConfig
    directory: Path
    chains: dict[int, Chain]
    owner: str
    relayer: str
    signer: LocalAccount


def _chain(config: OmnimarginConfig, chain_id: int) -> Chain:
    c = config.chain(chain_id)
    assert c.margin_gate is not None and c.perp_market is not None
    w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 10}))
    gate = w3.eth.contract(address=c.margin_gate, abi=list(load_artifact("MarginGate").abi))
    perp = w3.eth.contract(address=c.perp_market, abi=list(load_artifact("PerpMarket").abi))
    return Chain(w3, gate, perp)


@pytest.fixture(scope="module")
def net(devnet_factory: Any) -> Net:
    """Two chains of this module's own: the tests open positions and rotate signers."""
    info = devnet_factory(2)
    config = load_config(info.config_path)
    chains = {cid: _chain(config, cid) for cid in (CHAIN_A, CHAIN_B)}
    assert config.devnet is not None
    relayer = str(chains[CHAIN_B].w3.eth.accounts[7])
    signer = load_signer_key(config.signer)
    return Net(config, info.directory, chains, config.devnet["deployer"], relayer, signer)


def _att(net: Net, chain_id: int = CHAIN_B, **changes: Any) -> MarginAttestation:
    now = int(net.chains[chain_id].w3.eth.get_block("latest")["timestamp"])
    fields: dict[str, Any] = {
        "account": net.config.accounts[0],
        "market": market_id("ETH"),
        "size_delta": 2 * 10**18,
        "equity": 50_000 * 10**18,
        "initial_margin": 4_000 * 10**18,
        "snapshot_hash": keccak(b"snapshot"),
        "risk_model_hash": keccak(b"model"),
        "issued_at": now - 60,
        "valid_until": now + 3600,
        "nonce": next(_nonces),
    }
    return MarginAttestation(**(fields | changes))


def _signed(net: Net, att: MarginAttestation, chain_id: int = CHAIN_B) -> bytes:
    gate = net.chains[chain_id].gate.address
    return bytes.fromhex(sign(att, chain_id, gate, net.signer)[2:])


def _refused(net: Net, chain_id: int, att: MarginAttestation, sig: bytes, reason: str) -> None:
    """``open`` reverts with ``reason`` (eth_call from the relayer: nothing is mined)."""
    perp = net.chains[chain_id].perp
    with pytest.raises(ContractLogicError, match=reason):
        perp.functions.open(att.as_tuple(), sig).call({"from": net.relayer})


def _transact(net: Net, chain_id: int, call: Any, sender: str) -> Any:
    w3 = net.chains[chain_id].w3
    receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": sender}), timeout=30)
    assert receipt["status"] == 1
    return receipt


def _open(net: Net, att: MarginAttestation, sig: bytes, chain_id: int = CHAIN_B) -> Any:
    perp = net.chains[chain_id].perp
    return _transact(net, chain_id, perp.functions.open(att.as_tuple(), sig), net.relayer)


def _positions(net: Net, account: str) -> dict[int, tuple[PerpPosition, ...]]:
    snaps = asyncio.run(snapshot_all(net.config, [account], timeout_s=30))
    assert all(s.ok and not s.errors for s in snaps), [s.errors for s in snaps]
    return {s.chain_id: s.positions for s in snaps}


# --- pure -----------------------------------------------------------------------------------


def _hand_digest(att: MarginAttestation, chain_id: int, gate: str) -> bytes:
    """EIP-712 written out: keccak(0x1901 ‖ domainSeparator ‖ hashStruct)."""
    domain_type = (
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    domain = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [keccak(domain_type), keccak(b"omnimargin"), keccak(b"1"), chain_id, gate],
        )
    )
    fields = ",".join(f"{t} {k}" for k, t, _ in FIELDS)
    typehash = keccak(f"MarginAttestation({fields})".encode())
    types = ["bytes32"] + [t for _, t, _ in FIELDS]
    struct = keccak(encode(types, [typehash, *att.as_tuple()]))
    return bytes(keccak(b"\x19\x01" + domain + struct))


def test_typed_data_is_the_eip712_json_and_hashes_as_written_out() -> None:
    gate = "0x" + "ab" * 20
    att = MarginAttestation(
        "0x" + "11" * 20, market_id("BTC"), -(3 * 10**17), 10**22, 10**21,
        keccak(b"s"), keccak(b"r"), 100, 200, 2**200,
    )  # fmt: skip
    data = typed_data(att, CHAIN_B, gate)
    assert data["primaryType"] == "MarginAttestation"
    assert data["domain"] == {
        "name": "omnimargin",
        "version": "1",
        "chainId": CHAIN_B,
        "verifyingContract": Web3.to_checksum_address(gate),
    }
    assert data["message"]["sizeDelta"] == -(3 * 10**17)  # ints stay ints
    assert data["message"]["market"] == "0x" + keccak(b"BTC").hex()
    assert digest(att, CHAIN_B, gate) == _hand_digest(att, CHAIN_B, gate)
    sig = sign(att, CHAIN_B, gate, DEVNET_SIGNER_KEY)
    assert len(bytes.fromhex(sig[2:])) == 65
    assert recover(att, CHAIN_B, gate, sig) == devnet_signer_address()
    assert recover(att, CHAIN_A, gate, sig) != devnet_signer_address()


def test_attestation_fields_are_checked() -> None:
    with pytest.raises(InputError, match="market"):
        MarginAttestation("0x" + "11" * 20, b"ETH", 1, 0, 0, bytes(32), bytes(32), 0, 1, 0)
    with pytest.raises(InputError, match="issued_at"):
        MarginAttestation("0x" + "11" * 20, bytes(32), 1, 0, 0, bytes(32), bytes(32), -1, 1, 0)


def test_signer_key_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_hex = "0x" + DEVNET_SIGNER_KEY.hex()
    path = tmp_path / "k"
    path.write_text(key_hex + "\n")
    path.chmod(0o640)
    with pytest.raises(InputError, match=f"{path} is open to group or others") as err:
        load_signer_key(SignerConfig(key_file=str(path)))
    path.chmod(0o600)
    assert load_signer_key(SignerConfig(key_file=str(path))).address == devnet_signer_address()
    path.write_text("not a key but a secret")
    with pytest.raises(InputError, match="does not hold a private key") as err:
        load_signer_key(SignerConfig(key_file=str(path)))
    assert "secret" not in str(err.value)
    monkeypatch.setenv("OM_TEST_KEY", key_hex)
    assert load_signer_key(SignerConfig(key_env="OM_TEST_KEY")).address == devnet_signer_address()
    monkeypatch.setenv("OM_TEST_KEY", key_hex[:-1] + "x")
    with pytest.raises(InputError, match="OM_TEST_KEY") as err:
        load_signer_key(SignerConfig(key_env="OM_TEST_KEY"))
    assert key_hex[2:-1] not in str(err.value)
    with pytest.raises(ValueError, match="exactly one"):
        SignerConfig(key_file=str(path), key_env="OM_TEST_KEY")


# --- on the devnet --------------------------------------------------------------------------


def test_devnet_deploys_gates_markets_and_a_private_signer_key(net: Net) -> None:
    key_file = net.directory / SIGNER_KEY_FILE
    assert net.config.signer is not None and net.config.signer.key_file == str(key_file)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert net.signer.address == devnet_signer_address()
    for cid, chain in net.chains.items():
        assert chain.gate.functions.is_signer(net.signer.address).call()
        assert chain.gate.functions.is_market(chain.perp.address).call()
        assert chain.perp.functions.gate().call() == chain.gate.address
        n = chain.perp.functions.markets_count().call()
        ids = {chain.perp.functions.market_ids(i).call() for i in range(n)}
        assert ids == {market_id(a) for a in ("ETH", "BTC", "LINK")}, cid
        eth_feed = next(f for f in net.config.feeds_on(cid) if f.asset == "ETH").address
        assert chain.perp.functions.feed_of(market_id("ETH")).call() == eth_feed


def test_gate_hashes_as_typed_data_and_verify_returns_the_signer(net: Net) -> None:
    gate = net.chains[CHAIN_B].gate
    att = _att(net)
    assert gate.functions.hash_attestation(att.as_tuple()).call() == digest(
        att, CHAIN_B, gate.address
    )
    written_out = _hand_digest(att, CHAIN_B, gate.address)
    assert gate.functions.hash_attestation(att.as_tuple()).call() == written_out
    sig = _signed(net, att)
    assert gate.functions.verify(att.as_tuple(), sig).call() == net.signer.address


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_attestation_type_hashes_as_the_gate_and_the_reference_encoder(
    net: Net, data: st.DataObject
) -> None:
    """The direct EIP-712 encoding that signs (``digest``) equals eth-account's general
    encoder and the gate's own hash, for random values of every field of every type."""
    gate = net.chains[CHAIN_B].gate
    for cls, on_chain in (
        (MarginAttestation, gate.functions.hash_attestation),
        (WithdrawalAttestation, gate.functions.hash_withdrawal),
        (LiquidationAttestation, gate.functions.hash_liquidation),
    ):
        fields: dict[str, Any] = {}
        for _, kind, name in cls.FIELDS:
            if kind == "address":
                raw = data.draw(st.binary(min_size=20, max_size=20), label=name)
                fields[name] = Web3.to_checksum_address(raw)
            elif kind == "bytes32":
                fields[name] = data.draw(st.binary(min_size=32, max_size=32), label=name)
            elif kind == "int256":
                fields[name] = data.draw(st.integers(-(2**255), 2**255 - 1), label=name)
            elif kind == "uint64":
                fields[name] = data.draw(st.integers(0, 2**64 - 1), label=name)
            else:
                fields[name] = data.draw(st.integers(0, 2**256 - 1), label=name)
        low, high = sorted((fields["issued_at"], fields["valid_until"]))
        att = cls(**{**fields, "issued_at": low, "valid_until": high})
        mine = digest(att, CHAIN_B, gate.address)
        assert mine == reference_digest(att, CHAIN_B, gate.address)
        assert on_chain(att.as_tuple()).call() == mine
        # the fast signature is eth-account's, byte for byte (RFC 6979 is deterministic)
        full = encode_typed_data(full_message=typed_data(att, CHAIN_B, gate.address))
        theirs = "0x" + bytes(net.signer.sign_message(full).signature).hex()
        assert sign(att, CHAIN_B, gate.address, net.signer) == theirs


def test_open_on_chain_b_shows_in_the_next_snapshot_and_is_refused_twice(net: Net) -> None:
    account = net.config.accounts[0]
    att = _att(net, size_delta=2 * 10**18)
    sig = _signed(net, att)
    receipt = _open(net, att, sig)
    chain = net.chains[CHAIN_B]
    (consumed,) = chain.gate.events.AttestationConsumed().process_receipt(receipt, DISCARD)
    assert consumed["args"]["account"] == account and consumed["args"]["nonce"] == att.nonce
    assert consumed["args"]["signer"] == net.signer.address
    assert chain.gate.functions.nonce_used(account, att.nonce).call()
    (changed,) = chain.perp.events.PositionChanged().process_receipt(receipt, DISCARD)
    price = changed["args"]["price"]
    feed = next(f for f in net.config.feeds_on(CHAIN_B) if f.asset == "ETH")
    feed_c = chain.w3.eth.contract(address=feed.address, abi=list(load_artifact("PriceFeed").abi))
    assert price == feed_c.functions.latestRoundData().call()[1] > 0

    positions = _positions(net, account)
    assert positions[CHAIN_A] == ()
    (pos,) = positions[CHAIN_B]
    assert pos == PerpPosition(
        account, "ETH", "0x" + market_id("ETH").hex(), 2 * 10**18, price, chain_id=CHAIN_B
    )
    snaps = asyncio.run(snapshot_all(net.config, [account], timeout_s=30))
    (row,) = chain_json(snaps[1])["positions"]
    assert row["market"] == "ETH" and row["size"] == str(2 * 10**18)

    _refused(net, CHAIN_B, att, sig, "gate: nonce used")  # the same attestation again
    # the same attestation at chain A's market: its gate's domain gives another digest
    _refused(net, CHAIN_A, att, sig, "gate: unknown signer")
    # shrinking keeps the entry price; the reader sees the new size
    smaller = _att(net, size_delta=-(5 * 10**17))
    _open(net, smaller, _signed(net, smaller))
    (pos,) = _positions(net, account)[CHAIN_B]
    assert (pos.size, pos.entry_price) == (15 * 10**17, price)


def test_expired_and_not_yet_valid_are_refused(net: Net) -> None:
    now = int(net.chains[CHAIN_B].w3.eth.get_block("latest")["timestamp"])
    old = _att(net, issued_at=now - 600, valid_until=now - 1)
    _refused(net, CHAIN_B, old, _signed(net, old), "gate: expired")
    early = _att(net, issued_at=now + 600, valid_until=now + 1200)
    _refused(net, CHAIN_B, early, _signed(net, early), "gate: not yet valid")


@pytest.fixture
def rotated(net: Net) -> Iterator[LocalAccount]:
    """A second signer; the devnet signer is back in the set afterwards, the new one out."""
    new: LocalAccount = Account.from_key(keccak(text="omnimargin test signer 2"))
    gate = net.chains[CHAIN_B].gate
    yield new
    _transact(net, CHAIN_B, gate.functions.add_signer(net.signer.address), net.owner)
    _transact(net, CHAIN_B, gate.functions.remove_signer(new.address), net.owner)


def test_rotated_out_signer_is_refused_and_the_new_one_works(
    net: Net, rotated: LocalAccount
) -> None:
    gate = net.chains[CHAIN_B].gate
    fresh = _att(net, account=net.config.accounts[1])
    by_new = bytes.fromhex(sign(fresh, CHAIN_B, gate.address, rotated)[2:])
    _refused(net, CHAIN_B, fresh, by_new, "gate: unknown signer")
    with pytest.raises(ContractLogicError, match="gate: only owner"):
        gate.functions.add_signer(rotated.address).call({"from": net.relayer})
    _transact(net, CHAIN_B, gate.functions.add_signer(rotated.address), net.owner)
    _transact(net, CHAIN_B, gate.functions.remove_signer(net.signer.address), net.owner)
    assert not gate.functions.is_signer(net.signer.address).call()
    old = _att(net, account=net.config.accounts[1])
    _refused(net, CHAIN_B, old, _signed(net, old), "gate: unknown signer")
    _open(net, fresh, by_new)
    (pos,) = _positions(net, net.config.accounts[1])[CHAIN_B]
    assert pos.size == fresh.size_delta


def test_consume_is_for_registered_markets_only(net: Net) -> None:
    att = _att(net)
    sig = _signed(net, att)
    gate = net.chains[CHAIN_B].gate
    for caller in (net.relayer, net.owner, net.config.accounts[0]):
        with pytest.raises(ContractLogicError, match="gate: only market"):
            gate.functions.consume(att.as_tuple(), sig).call({"from": caller})
    assert not gate.functions.nonce_used(att.account, att.nonce).call()
