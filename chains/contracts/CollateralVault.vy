#pragma version 0.4.3
"""
@title Collateral vault: what backs margin, released only with the engine's consent
@notice Accounts lock ERC20 collateral here (ERC-4626 shares too: they are ERC20s); balances
        are kept per account and token. Nothing leaves without one of:
        - a WithdrawalAttestation signed by the engine, checked and spent by this chain's
          MarginGate (same signers, nonces and counters as margin attestations): the engine
          signs only when, with the amount gone, every outstanding approval stays covered;
        - the escape hatch, for when the engine is gone: `request_withdrawal` moves an amount
          out of `collateral` at once (it stops backing margin: the engine sees it leave) into
          `pending`, and `complete_withdrawal` releases it `withdrawal_delay` seconds later
          with no attestation. `cancel_withdrawal_request` puts it back. A request also bumps
          the account's counter on the gate: every approval it holds, granted while the amount
          still backed it, dies with it.
        - a LiquidationAttestation (a liquidation plan's step, checked and spent by the gate):
          it seizes collateral (from an escape-hatch request too, when the collateral is
          short: a pending amount is still seizable until it is released), the bonus to
          whoever submits, the rest to the recipient's collateral here (the insurance fund,
          an account like any other in this vault).
        docs/ARCHITECTURE.md, "Collateral that cannot leave" and "Liquidation".
"""

from ethereum.ercs import IERC20

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

struct Pending:
    amount: uint256
    ready_at: uint256

interface MarginGate:
    def consume_withdrawal(_att: WithdrawalAttestation, _signature: Bytes[65]) -> address: nonpayable
    def invalidate_account(_account: address) -> uint256: nonpayable
    def consume_liquidation(_att: LiquidationAttestation, _signature: Bytes[65]) -> address: nonpayable

event Deposit:
    account: indexed(address)
    token: indexed(address)
    amount: uint256

event Withdraw:
    account: indexed(address)
    token: indexed(address)
    amount: uint256
    recipient: address
    nonce: uint256  # the attestation's; 0 for the escape hatch

event WithdrawalRequested:
    account: indexed(address)
    token: indexed(address)
    amount: uint256
    ready_at: uint256

event WithdrawalRequestCancelled:
    account: indexed(address)
    token: indexed(address)
    amount: uint256

event Seized:
    account: indexed(address)
    token: indexed(address)
    amount: uint256
    bonus: uint256
    recipient: address
    liquidator: indexed(address)

event BridgeSet:
    bridge: indexed(address)

event GateSet:
    gate: indexed(address)

MAX_DELAY: constant(uint256) = 365 * 86400
MAX_BATCH: constant(uint256) = 1000

owner: public(address)
gate: public(address)
bridge: public(address)  # the burn/mint bridge whose mints to this vault it credits
withdrawal_delay: public(uint256)
# account -> token -> amount locked
collateral: public(HashMap[address, HashMap[address, uint256]])
total_locked: public(HashMap[address, uint256])
# account -> token -> amount requested through the escape hatch (no longer collateral)
pending: public(HashMap[address, HashMap[address, Pending]])


@deploy
def __init__(_withdrawal_delay: uint256):
    assert _withdrawal_delay <= MAX_DELAY, "vault: delay too long"
    self.owner = msg.sender
    self.withdrawal_delay = _withdrawal_delay


@external
@view
def held(_account: address, _token: address) -> (uint256, uint256):
    """@notice (collateral, amount requested through the escape hatch) of `_account` in
    `_token`: what a reader needs in one call."""
    return self.collateral[_account][_token], self.pending[_account][_token].amount


@external
def set_gate(_gate: address):
    """@notice The MarginGate that checks withdrawals: set once, by the owner."""
    assert msg.sender == self.owner, "vault: only owner"
    assert self.gate == empty(address), "vault: gate already set"
    assert _gate != empty(address), "vault: zero gate"
    self.gate = _gate
    log GateSet(gate=_gate)


@external
def set_bridge(_bridge: address):
    """@notice The bridge whose mints to this vault are deposits of their depositor."""
    assert msg.sender == self.owner, "vault: only owner"
    self.bridge = _bridge
    log BridgeSet(bridge=_bridge)


@external
def on_bridged(_token: address, _amount: uint256, _depositor: address):
    """@notice The bridge minted `_amount` of `_token` here for `_depositor`: it is their
    collateral (only the bridge may say so; the tokens are already here)."""
    assert msg.sender == self.bridge and msg.sender != empty(address), "vault: only the bridge"
    assert _depositor != empty(address), "vault: zero depositor"
    self.collateral[_depositor][_token] += _amount
    self.total_locked[_token] += _amount
    log Deposit(account=_depositor, token=_token, amount=_amount)


@external
def deposit(_token: address, _amount: uint256):
    self._deposit(msg.sender, _token, _amount)


@external
def deposit_for(_account: address, _token: address, _amount: uint256):
    """@notice Lock tokens of the caller as collateral of `_account`."""
    self._deposit(_account, _token, _amount)


@external
def deposit_for_many(
    _token: address, _accounts: DynArray[address, MAX_BATCH], _amounts: DynArray[uint256, MAX_BATCH]
):
    """@notice Lock tokens of the caller as collateral of each of `_accounts` (one transfer)."""
    assert len(_accounts) == len(_amounts), "vault: lengths differ"
    total: uint256 = 0
    for i: uint256 in range(len(_accounts), bound=MAX_BATCH):
        assert _amounts[i] > 0, "vault: zero amount"
        self.collateral[_accounts[i]][_token] += _amounts[i]
        total += _amounts[i]
        log Deposit(account=_accounts[i], token=_token, amount=_amounts[i])
    self.total_locked[_token] += total
    assert extcall IERC20(_token).transferFrom(msg.sender, self, total), "vault: transfer failed"


@internal
def _deposit(_account: address, _token: address, _amount: uint256):
    assert _amount > 0, "vault: zero amount"
    assert extcall IERC20(_token).transferFrom(msg.sender, self, _amount), "vault: transfer failed"
    self.collateral[_account][_token] += _amount
    self.total_locked[_token] += _amount
    log Deposit(account=_account, token=_token, amount=_amount)


@internal
def _release(_account: address, _token: address, _amount: uint256, _to: address, _nonce: uint256):
    self.total_locked[_token] -= _amount
    assert extcall IERC20(_token).transfer(_to, _amount), "vault: transfer failed"
    log Withdraw(account=_account, token=_token, amount=_amount, recipient=_to, nonce=_nonce)


@external
def withdraw(_att: WithdrawalAttestation, _signature: Bytes[65]):
    """@notice Release `_att.amount` of `_att.token` of `_att.account` to `_att.recipient`.
    Anyone may submit: the engine's signature, checked and spent by the gate, is the authority."""
    assert self.gate != empty(address), "vault: no gate"
    assert _att.amount > 0, "vault: zero amount"
    assert _att.recipient != empty(address), "vault: zero recipient"
    assert self.collateral[_att.account][_att.token] >= _att.amount, "vault: insufficient collateral"
    extcall MarginGate(self.gate).consume_withdrawal(_att, _signature)
    self.collateral[_att.account][_att.token] -= _att.amount
    self._release(_att.account, _att.token, _att.amount, _att.recipient, _att.nonce)


@external
def request_withdrawal(_token: address, _amount: uint256):
    """@notice Escape hatch: take `_amount` out of the caller's collateral now (it no longer
    backs margin); `complete_withdrawal` releases it after `withdrawal_delay` seconds. A
    second request adds to the first and restarts the delay."""
    assert _amount > 0, "vault: zero amount"
    assert self.collateral[msg.sender][_token] >= _amount, "vault: insufficient collateral"
    self.collateral[msg.sender][_token] -= _amount
    p: Pending = self.pending[msg.sender][_token]
    p.amount += _amount
    p.ready_at = block.timestamp + self.withdrawal_delay
    self.pending[msg.sender][_token] = p
    if self.gate != empty(address):
        extcall MarginGate(self.gate).invalidate_account(msg.sender)
    log WithdrawalRequested(account=msg.sender, token=_token, amount=p.amount, ready_at=p.ready_at)


@external
def cancel_withdrawal_request(_token: address):
    """@notice Put the caller's requested amount of `_token` back as collateral."""
    p: Pending = self.pending[msg.sender][_token]
    assert p.amount > 0, "vault: nothing requested"
    self.pending[msg.sender][_token] = empty(Pending)
    self.collateral[msg.sender][_token] += p.amount
    log WithdrawalRequestCancelled(account=msg.sender, token=_token, amount=p.amount)


@external
def complete_withdrawal(_token: address):
    """@notice Release the caller's requested amount of `_token` once the delay has passed."""
    p: Pending = self.pending[msg.sender][_token]
    assert p.amount > 0, "vault: nothing requested"
    assert block.timestamp >= p.ready_at, "vault: delay not over"
    self.pending[msg.sender][_token] = empty(Pending)
    self._release(msg.sender, _token, p.amount, msg.sender, 0)


@external
def liquidate(_att: LiquidationAttestation, _signature: Bytes[65]):
    """@notice Seize `_att.amount` of the token `_att.asset` from `_att.account`: `_att.bonus`
    to the submitter, the rest credited to `_att.recipient` here. Anyone may submit."""
    assert self.gate != empty(address), "vault: no gate"
    assert _att.sizeDelta == 0 and _att.settle == 0, "vault: not a collateral step"
    assert _att.amount > 0, "vault: zero amount"
    assert _att.bonus <= _att.amount, "vault: bonus above amount"
    assert _att.recipient != empty(address), "vault: zero recipient"
    assert convert(_att.asset, uint256) < 2**160, "vault: not a token"
    token: address = convert(convert(_att.asset, uint256), address)
    held: uint256 = self.collateral[_att.account][token]
    p: Pending = self.pending[_att.account][token]
    assert held + p.amount >= _att.amount, "vault: insufficient collateral"
    extcall MarginGate(self.gate).consume_liquidation(_att, _signature)
    if held >= _att.amount:
        self.collateral[_att.account][token] = held - _att.amount
    else:
        self.collateral[_att.account][token] = 0
        p.amount -= _att.amount - held
        self.pending[_att.account][token] = p
    self.collateral[_att.recipient][token] += _att.amount - _att.bonus
    if _att.bonus > 0:
        self.total_locked[token] -= _att.bonus
        assert extcall IERC20(token).transfer(msg.sender, _att.bonus), "vault: transfer failed"
    log Seized(
        account=_att.account,
        token=token,
        amount=_att.amount,
        bonus=_att.bonus,
        recipient=_att.recipient,
        liquidator=msg.sender,
    )
