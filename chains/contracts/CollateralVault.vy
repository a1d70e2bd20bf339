#pragma version 0.4.3
"""
@title Collateral vault
@notice Accounts lock ERC20 collateral here; balances are kept per account and token.
"""

from ethereum.ercs import IERC20

event Deposit:
    account: indexed(address)
    token: indexed(address)
    amount: uint256

event Withdraw:
    account: indexed(address)
    token: indexed(address)
    amount: uint256

# account -> token -> amount locked
collateral: public(HashMap[address, HashMap[address, uint256]])
total_locked: public(HashMap[address, uint256])


@external
def deposit(_token: address, _amount: uint256):
    self._deposit(msg.sender, _token, _amount)


@external
def deposit_for(_account: address, _token: address, _amount: uint256):
    """@notice Lock tokens of the caller as collateral of `_account`."""
    self._deposit(_account, _token, _amount)


@internal
def _deposit(_account: address, _token: address, _amount: uint256):
    assert _amount > 0, "vault: zero amount"
    assert extcall IERC20(_token).transferFrom(msg.sender, self, _amount), "vault: transfer failed"
    self.collateral[_account][_token] += _amount
    self.total_locked[_token] += _amount
    log Deposit(account=_account, token=_token, amount=_amount)


@external
def withdraw(_token: address, _amount: uint256):
    assert self.collateral[msg.sender][_token] >= _amount, "vault: insufficient collateral"
    self.collateral[msg.sender][_token] -= _amount
    self.total_locked[_token] -= _amount
    assert extcall IERC20(_token).transfer(msg.sender, _amount), "vault: transfer failed"
    log Withdraw(account=msg.sender, token=_token, amount=_amount)
