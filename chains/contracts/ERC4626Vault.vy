#pragma version 0.4.3
"""
@title Minimal ERC-4626 tokenised vault for the devnet
@notice Shares of one underlying asset. The owner can add yield (assets without shares), so
        convertToAssets differs from 1:1 and readers must use it.
"""

from ethereum.ercs import IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

event Deposit:
    sender: indexed(address)
    owner: indexed(address)
    assets: uint256
    shares: uint256

event Withdraw:
    sender: indexed(address)
    receiver: indexed(address)
    owner: indexed(address)
    assets: uint256
    shares: uint256

asset: public(address)
name: public(String[64])
symbol: public(String[32])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@deploy
def __init__(_asset: address, _name: String[64], _symbol: String[32], _decimals: uint8):
    self.asset = _asset
    self.name = _name
    self.symbol = _symbol
    self.decimals = _decimals


@view
@external
def totalAssets() -> uint256:
    return staticcall IERC20(self.asset).balanceOf(self)


@view
@internal
def _to_shares(_assets: uint256, _total_assets: uint256) -> uint256:
    if self.totalSupply == 0 or _total_assets == 0:
        return _assets
    return _assets * self.totalSupply // _total_assets


@view
@internal
def _to_assets(_shares: uint256) -> uint256:
    supply: uint256 = self.totalSupply
    if supply == 0:
        return _shares
    return _shares * staticcall IERC20(self.asset).balanceOf(self) // supply


@view
@external
def convertToAssets(_shares: uint256) -> uint256:
    return self._to_assets(_shares)


@view
@external
def convertToShares(_assets: uint256) -> uint256:
    return self._to_shares(_assets, staticcall IERC20(self.asset).balanceOf(self))


@external
def deposit(_assets: uint256, _receiver: address) -> uint256:
    shares: uint256 = self._to_shares(_assets, staticcall IERC20(self.asset).balanceOf(self))
    assert shares > 0, "4626: zero shares"
    assert extcall IERC20(self.asset).transferFrom(msg.sender, self, _assets), "4626: transfer"
    self.totalSupply += shares
    self.balanceOf[_receiver] += shares
    log Transfer(sender=empty(address), receiver=_receiver, value=shares)
    log Deposit(sender=msg.sender, owner=_receiver, assets=_assets, shares=shares)
    return shares


@external
def redeem(_shares: uint256, _receiver: address, _owner: address) -> uint256:
    assert msg.sender == _owner, "4626: only owner redeems"
    assert self.balanceOf[_owner] >= _shares, "4626: insufficient shares"
    assets: uint256 = self._to_assets(_shares)
    self.balanceOf[_owner] -= _shares
    self.totalSupply -= _shares
    assert extcall IERC20(self.asset).transfer(_receiver, assets), "4626: transfer"
    log Transfer(sender=_owner, receiver=empty(address), value=_shares)
    log Withdraw(sender=msg.sender, receiver=_receiver, owner=_owner, assets=assets, shares=_shares)
    return assets


@internal
def _transfer(_from: address, _to: address, _value: uint256):
    assert _to != empty(address), "4626: zero receiver"
    assert self.balanceOf[_from] >= _value, "4626: insufficient shares"
    self.balanceOf[_from] -= _value
    self.balanceOf[_to] += _value
    log Transfer(sender=_from, receiver=_to, value=_value)


@external
def transfer(_to: address, _value: uint256) -> bool:
    """@notice Shares are ERC20s: they can be locked in a CollateralVault."""
    self._transfer(msg.sender, _to, _value)
    return True


@external
def transferFrom(_from: address, _to: address, _value: uint256) -> bool:
    allowed: uint256 = self.allowance[_from][msg.sender]
    assert allowed >= _value, "4626: insufficient allowance"
    if allowed != max_value(uint256):
        self.allowance[_from][msg.sender] = allowed - _value
    self._transfer(_from, _to, _value)
    return True


@external
def approve(_spender: address, _value: uint256) -> bool:
    self.allowance[msg.sender][_spender] = _value
    log Approval(owner=msg.sender, spender=_spender, value=_value)
    return True
