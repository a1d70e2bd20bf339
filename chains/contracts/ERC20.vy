#pragma version 0.4.3
"""
@title Mintable ERC20 token for the omnimargin devnet
@notice Standard ERC20 with configurable decimals; the owner grants minting rights (to itself,
        to a bridge). Holders may burn their own tokens (the bridge burns what it locks).
"""

from ethereum.ercs import IERC20

implements: IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

event MinterSet:
    minter: indexed(address)
    allowed: bool

name: public(String[64])
symbol: public(String[32])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
owner: public(address)
minters: public(HashMap[address, bool])


@deploy
def __init__(_name: String[64], _symbol: String[32], _decimals: uint8):
    self.name = _name
    self.symbol = _symbol
    self.decimals = _decimals
    self.owner = msg.sender
    self.minters[msg.sender] = True


@internal
def _transfer(_from: address, _to: address, _value: uint256):
    assert _to != empty(address), "ERC20: transfer to zero address"
    assert self.balanceOf[_from] >= _value, "ERC20: insufficient balance"
    self.balanceOf[_from] -= _value
    self.balanceOf[_to] += _value
    log Transfer(sender=_from, receiver=_to, value=_value)


@external
def transfer(_to: address, _value: uint256) -> bool:
    self._transfer(msg.sender, _to, _value)
    return True


@external
def transferFrom(_from: address, _to: address, _value: uint256) -> bool:
    allowed: uint256 = self.allowance[_from][msg.sender]
    assert allowed >= _value, "ERC20: insufficient allowance"
    if allowed != max_value(uint256):
        self.allowance[_from][msg.sender] = allowed - _value
    self._transfer(_from, _to, _value)
    return True


@external
def approve(_spender: address, _value: uint256) -> bool:
    self.allowance[msg.sender][_spender] = _value
    log Approval(owner=msg.sender, spender=_spender, value=_value)
    return True


@external
def set_minter(_minter: address, _allowed: bool):
    assert msg.sender == self.owner, "ERC20: only owner"
    self.minters[_minter] = _allowed
    log MinterSet(minter=_minter, allowed=_allowed)


@external
def mint(_to: address, _value: uint256):
    assert self.minters[msg.sender], "ERC20: only minter"
    assert _to != empty(address), "ERC20: mint to zero address"
    self.totalSupply += _value
    self.balanceOf[_to] += _value
    log Transfer(sender=empty(address), receiver=_to, value=_value)


@external
def burn(_value: uint256):
    assert self.balanceOf[msg.sender] >= _value, "ERC20: burn exceeds balance"
    self.balanceOf[msg.sender] -= _value
    self.totalSupply -= _value
    log Transfer(sender=msg.sender, receiver=empty(address), value=_value)


@external
def mint_batch(_to: DynArray[address, 1000], _amounts: DynArray[uint256, 1000]):
    """@notice Mint `_amounts[i]` to `_to[i]`: seeds many accounts in one transaction."""
    assert self.minters[msg.sender], "ERC20: only minter"
    assert len(_to) == len(_amounts), "ERC20: lengths differ"
    total: uint256 = 0
    for i: uint256 in range(len(_to), bound=1000):
        receiver: address = _to[i]
        assert receiver != empty(address), "ERC20: mint to zero address"
        self.balanceOf[receiver] += _amounts[i]
        total += _amounts[i]
        log Transfer(sender=empty(address), receiver=receiver, value=_amounts[i])
    self.totalSupply += total
