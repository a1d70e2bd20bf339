#pragma version 0.4.3
"""
@title MarginGate: verifies the aggregator's signed margin attestations (EIP-712)
@notice DESIGN.md, "Attestations". Domain {name "omnimargin", version "1", chainId = chain.id,
        verifyingContract = this gate}. An attestation is accepted when its signature is a
        canonical secp256k1 signature (65 bytes, v 27 or 28, s in the lower half order) by a
        signer in the owner's signer set, it is within [issuedAt, validUntil], its nonce is
        neither spent nor cancelled for its account, and its counter is the account's current
        counter. Registered markets consume it: the nonce is then spent.
        Counters (as Seaport's incrementCounter): `counter_of(account)` is
        global_counter * 2**128 + account_counter[account]. The owner or a signer bumps the
        global counter (every earlier attestation of every account dies: the engine does this
        when its store is new or behind the chain); an account bumps its own. An account may
        also cancel one outstanding attestation by its nonce.
        A WithdrawalAttestation lets a registered CollateralVault release `amount` of `token`
        of `account` to `recipient`. It shares the signer set, the nonce space and the
        counter of margin attestations: one outstanding set, one invariant. A
        LiquidationAttestation is one step of a liquidation plan, executed by the registered
        market or vault it names (`target`) for whoever submits it.
        docs/ARCHITECTURE.md, "The gate's contract".
"""

struct MarginAttestation:
    account: address
    market: bytes32
    sizeDelta: int256
    equity: uint256
    initialMargin: uint256
    snapshotHash: bytes32
    riskModelHash: bytes32
    issuedAt: uint64
    validUntil: uint64
    nonce: uint256
    counter: uint256

struct WithdrawalAttestation:
    account: address
    vault: address
    token: address
    amount: uint256
    recipient: address
    equity: uint256
    initialMargin: uint256
    snapshotHash: bytes32
    riskModelHash: bytes32
    issuedAt: uint64
    validUntil: uint64
    nonce: uint256
    counter: uint256

struct LiquidationAttestation:
    account: address
    target: address
    asset: bytes32
    sizeDelta: int256
    amount: uint256
    bonus: uint256
    recipient: address
    settle: int256
    equity: int256
    maintenanceMargin: uint256
    snapshotHash: bytes32
    riskModelHash: bytes32
    issuedAt: uint64
    validUntil: uint64
    nonce: uint256
    counter: uint256

event SignerAdded:
    signer: indexed(address)

event SignerRemoved:
    signer: indexed(address)

event MarketSet:
    market: indexed(address)
    allowed: bool

event VaultSet:
    vault: indexed(address)
    allowed: bool

event OwnershipTransferred:
    previous_owner: indexed(address)
    new_owner: indexed(address)

event AttestationCancelled:
    account: indexed(address)
    nonce: uint256

event CounterIncremented:
    account: indexed(address)  # empty(address): the global counter
    counter: uint256

event AttestationConsumed:
    account: indexed(address)
    market: indexed(bytes32)
    nonce: uint256
    signer: indexed(address)
    sizeDelta: int256

event WithdrawalConsumed:
    account: indexed(address)
    vault: indexed(address)
    nonce: uint256
    signer: indexed(address)
    token: address
    amount: uint256

event LiquidationConsumed:
    account: indexed(address)
    target: indexed(address)
    nonce: uint256
    signer: indexed(address)
    asset: bytes32
    sizeDelta: int256
    amount: uint256

DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ATTESTATION_TYPEHASH: constant(bytes32) = keccak256(
    "MarginAttestation(address account,bytes32 market,int256 sizeDelta,uint256 equity,"
    "uint256 initialMargin,bytes32 snapshotHash,bytes32 riskModelHash,uint64 issuedAt,"
    "uint64 validUntil,uint256 nonce,uint256 counter)"
)
WITHDRAWAL_TYPEHASH: constant(bytes32) = keccak256(
    "WithdrawalAttestation(address account,address vault,address token,uint256 amount,"
    "address recipient,uint256 equity,uint256 initialMargin,bytes32 snapshotHash,"
    "bytes32 riskModelHash,uint64 issuedAt,uint64 validUntil,uint256 nonce,uint256 counter)"
)
LIQUIDATION_TYPEHASH: constant(bytes32) = keccak256(
    "LiquidationAttestation(address account,address target,bytes32 asset,int256 sizeDelta,"
    "uint256 amount,uint256 bonus,address recipient,int256 settle,int256 equity,"
    "uint256 maintenanceMargin,bytes32 snapshotHash,bytes32 riskModelHash,uint64 issuedAt,"
    "uint64 validUntil,uint256 nonce,uint256 counter)"
)
NAME_HASH: constant(bytes32) = keccak256("omnimargin")
VERSION_HASH: constant(bytes32) = keccak256("1")
# secp256k1n / 2 = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0: a larger s
# is the malleable twin of a valid signature (EIP-2)
HALF_N: constant(uint256) = (
    57896044618658097711785492504343953926418782139537452191302581570759080747168
)

owner: public(address)
is_signer: public(HashMap[address, bool])
is_market: public(HashMap[address, bool])
is_vault: public(HashMap[address, bool])
# account -> nonce -> spent
nonce_used: public(HashMap[address, HashMap[uint256, bool]])
# account -> nonce -> cancelled by the account
nonce_cancelled: public(HashMap[address, HashMap[uint256, bool]])
global_counter: public(uint256)
account_counter: public(HashMap[address, uint256])
COUNTER_SHIFT: constant(uint256) = 2**128


@deploy
def __init__():
    self.owner = msg.sender
    log OwnershipTransferred(previous_owner=empty(address), new_owner=msg.sender)


@internal
@view
def _only_owner():
    assert msg.sender == self.owner, "gate: only owner"


@external
def transfer_ownership(_new_owner: address):
    self._only_owner()
    assert _new_owner != empty(address), "gate: zero owner"
    log OwnershipTransferred(previous_owner=self.owner, new_owner=_new_owner)
    self.owner = _new_owner


@external
def add_signer(_signer: address):
    self._only_owner()
    assert _signer != empty(address), "gate: zero signer"
    self.is_signer[_signer] = True
    log SignerAdded(signer=_signer)


@external
def remove_signer(_signer: address):
    self._only_owner()
    self.is_signer[_signer] = False
    log SignerRemoved(signer=_signer)


@external
def set_market(_market: address, _allowed: bool):
    """@notice Allow (or stop) `_market` to consume attestations."""
    self._only_owner()
    self.is_market[_market] = _allowed
    log MarketSet(market=_market, allowed=_allowed)


@external
def set_vault(_vault: address, _allowed: bool):
    """@notice Allow (or stop) `_vault` to consume withdrawal attestations."""
    self._only_owner()
    self.is_vault[_vault] = _allowed
    log VaultSet(vault=_vault, allowed=_allowed)


@internal
@view
def _counter_of(_account: address) -> uint256:
    return self.global_counter * COUNTER_SHIFT + self.account_counter[_account]


@external
@view
def counter_of(_account: address) -> uint256:
    """@notice The counter an attestation of `_account` must carry to be accepted now."""
    return self._counter_of(_account)


@external
@view
def nonce_status(_account: address, _nonce: uint256) -> uint256:
    """@notice 0: unused, 1: consumed (its position was opened), 2: cancelled by the account."""
    if self.nonce_used[_account][_nonce]:
        return 1
    if self.nonce_cancelled[_account][_nonce]:
        return 2
    return 0


@external
def increment_counter() -> uint256:
    """@notice Invalidate every attestation issued so far, of every account (owner or signer)."""
    assert msg.sender == self.owner or self.is_signer[msg.sender], "gate: only owner or signer"
    self.global_counter += 1
    log CounterIncremented(account=empty(address), counter=self.global_counter)
    return self.global_counter


@external
def increment_account_counter() -> uint256:
    """@notice Invalidate every attestation issued so far to the caller's account."""
    self.account_counter[msg.sender] += 1
    log CounterIncremented(account=msg.sender, counter=self.account_counter[msg.sender])
    return self._counter_of(msg.sender)


@external
def invalidate_account(_account: address) -> uint256:
    """@notice A registered vault kills `_account`'s attestations (its collateral is leaving
    through the escape hatch, so approvals granted against it no longer hold)."""
    assert self.is_vault[msg.sender], "gate: only vault"
    self.account_counter[_account] += 1
    log CounterIncremented(account=_account, counter=self.account_counter[_account])
    return self._counter_of(_account)


@external
def cancel(_nonce: uint256):
    """@notice The caller gives up its attestation `_nonce` (unless already consumed)."""
    assert not self.nonce_used[msg.sender][_nonce], "gate: nonce used"
    self.nonce_cancelled[msg.sender][_nonce] = True
    log AttestationCancelled(account=msg.sender, nonce=_nonce)


@internal
@view
def _domain_separator() -> bytes32:
    return keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, chain.id, self))


@external
@view
def domain_separator() -> bytes32:
    return self._domain_separator()


@internal
@view
def _digest(_att: MarginAttestation) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(
            ATTESTATION_TYPEHASH,
            _att.account,
            _att.market,
            _att.sizeDelta,
            _att.equity,
            _att.initialMargin,
            _att.snapshotHash,
            _att.riskModelHash,
            _att.issuedAt,
            _att.validUntil,
            _att.nonce,
            _att.counter,
        )
    )
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@external
@view
def hash_attestation(_att: MarginAttestation) -> bytes32:
    """@notice The EIP-712 digest the signer signs: keccak256(0x1901, domain, struct hash)."""
    return self._digest(_att)


@internal
@view
def _signer_of(_digest: bytes32, _signature: Bytes[65]) -> address:
    assert len(_signature) == 65, "gate: bad signature"
    r: uint256 = convert(extract32(_signature, 0), uint256)
    s: uint256 = convert(extract32(_signature, 32), uint256)
    v: uint256 = convert(slice(_signature, 64, 1), uint256)
    assert v == 27 or v == 28, "gate: bad v"
    assert s <= HALF_N, "gate: high s"
    signer: address = ecrecover(_digest, v, r, s)
    assert signer != empty(address), "gate: bad signature"
    assert self.is_signer[signer], "gate: unknown signer"
    return signer


@internal
@view
def _check_live(
    _account: address, _issued_at: uint64, _valid_until: uint64, _nonce: uint256, _counter: uint256
):
    assert block.timestamp <= convert(_valid_until, uint256), "gate: expired"
    assert convert(_issued_at, uint256) <= block.timestamp, "gate: not yet valid"
    assert not self.nonce_used[_account][_nonce], "gate: nonce used"
    assert not self.nonce_cancelled[_account][_nonce], "gate: nonce cancelled"
    assert _counter == self._counter_of(_account), "gate: old counter"


@internal
@view
def _verify(_att: MarginAttestation, _signature: Bytes[65]) -> address:
    signer: address = self._signer_of(self._digest(_att), _signature)
    self._check_live(_att.account, _att.issuedAt, _att.validUntil, _att.nonce, _att.counter)
    return signer


@external
@view
def verify(_att: MarginAttestation, _signature: Bytes[65]) -> address:
    """@notice The signer of a valid, unexpired, unspent attestation; reverts otherwise."""
    return self._verify(_att, _signature)


@external
def consume(_att: MarginAttestation, _signature: Bytes[65]) -> address:
    """@notice Verify and spend the attestation's nonce; only registered markets may."""
    assert self.is_market[msg.sender], "gate: only market"
    signer: address = self._verify(_att, _signature)
    self.nonce_used[_att.account][_att.nonce] = True
    log AttestationConsumed(
        account=_att.account,
        market=_att.market,
        nonce=_att.nonce,
        signer=signer,
        sizeDelta=_att.sizeDelta,
    )
    return signer


@internal
@view
def _withdrawal_digest(_att: WithdrawalAttestation) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(
            WITHDRAWAL_TYPEHASH,
            _att.account,
            _att.vault,
            _att.token,
            _att.amount,
            _att.recipient,
            _att.equity,
            _att.initialMargin,
            _att.snapshotHash,
            _att.riskModelHash,
            _att.issuedAt,
            _att.validUntil,
            _att.nonce,
            _att.counter,
        )
    )
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@external
@view
def hash_withdrawal(_att: WithdrawalAttestation) -> bytes32:
    """@notice The EIP-712 digest of a withdrawal attestation."""
    return self._withdrawal_digest(_att)


@internal
@view
def _verify_withdrawal(_att: WithdrawalAttestation, _signature: Bytes[65]) -> address:
    signer: address = self._signer_of(self._withdrawal_digest(_att), _signature)
    self._check_live(_att.account, _att.issuedAt, _att.validUntil, _att.nonce, _att.counter)
    return signer


@external
@view
def verify_withdrawal(_att: WithdrawalAttestation, _signature: Bytes[65]) -> address:
    """@notice The signer of a valid, unexpired, unspent withdrawal; reverts otherwise."""
    return self._verify_withdrawal(_att, _signature)


@external
def consume_withdrawal(_att: WithdrawalAttestation, _signature: Bytes[65]) -> address:
    """@notice Verify and spend a withdrawal's nonce; only the registered vault it names."""
    assert self.is_vault[msg.sender], "gate: only vault"
    assert _att.vault == msg.sender, "gate: other vault"
    signer: address = self._verify_withdrawal(_att, _signature)
    self.nonce_used[_att.account][_att.nonce] = True
    log WithdrawalConsumed(
        account=_att.account,
        vault=msg.sender,
        nonce=_att.nonce,
        signer=signer,
        token=_att.token,
        amount=_att.amount,
    )
    return signer


@internal
@view
def _liquidation_digest(_att: LiquidationAttestation) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(
            LIQUIDATION_TYPEHASH,
            _att.account,
            _att.target,
            _att.asset,
            _att.sizeDelta,
            _att.amount,
            _att.bonus,
            _att.recipient,
            _att.settle,
            _att.equity,
            _att.maintenanceMargin,
            _att.snapshotHash,
            _att.riskModelHash,
            _att.issuedAt,
            _att.validUntil,
            _att.nonce,
            _att.counter,
        )
    )
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@external
@view
def hash_liquidation(_att: LiquidationAttestation) -> bytes32:
    """@notice The EIP-712 digest of a liquidation attestation."""
    return self._liquidation_digest(_att)


@internal
@view
def _verify_liquidation(_att: LiquidationAttestation, _signature: Bytes[65]) -> address:
    signer: address = self._signer_of(self._liquidation_digest(_att), _signature)
    self._check_live(_att.account, _att.issuedAt, _att.validUntil, _att.nonce, _att.counter)
    return signer


@external
@view
def verify_liquidation(_att: LiquidationAttestation, _signature: Bytes[65]) -> address:
    """@notice The signer of a valid, unexpired, unspent liquidation step; reverts otherwise."""
    return self._verify_liquidation(_att, _signature)


@external
def consume_liquidation(_att: LiquidationAttestation, _signature: Bytes[65]) -> address:
    """@notice Verify and spend a liquidation step's nonce; only the registered market or
    vault it names."""
    assert self.is_market[msg.sender] or self.is_vault[msg.sender], "gate: only market or vault"
    assert _att.target == msg.sender, "gate: other target"
    signer: address = self._verify_liquidation(_att, _signature)
    self.nonce_used[_att.account][_att.nonce] = True
    log LiquidationConsumed(
        account=_att.account,
        target=msg.sender,
        nonce=_att.nonce,
        signer=signer,
        asset=_att.asset,
        sizeDelta=_att.sizeDelta,
        amount=_att.amount,
    )
    return signer
