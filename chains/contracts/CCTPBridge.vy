#pragma version 0.4.3
"""
@title Burn/mint bridge with Circle's CCTP v1 interface, for the omnimargin devnet
@notice One contract per chain plays both CCTP v1 roles: TokenMessenger on the source side
        (`depositForBurn`, event `DepositForBurn`, as in Circle's TokenMessenger.sol) and
        MessageTransmitter on the destination side (`receiveMessage`, `usedNonces`, as in
        MessageTransmitter.sol). A reader written against this contract reads real CCTP v1.
        The message is CCTP v1's packed layout (Message.sol, BurnMessage.sol), 248 bytes:
          version u32 | sourceDomain u32 | destinationDomain u32 | nonce u64 | sender b32 |
          recipient b32 | destinationCaller b32 | body: version u32 | burnToken b32 |
          mintRecipient b32 | amount u256 | messageSender b32
        Simplifications (devnet only):
        - No attester signatures: only the owner (the devnet relayer, also the attester) may call
          `receiveMessage`, and `attestation` must be empty. Real CCTP checks attester signatures
          over keccak256(message) and lets anyone relay.
        - No burn limits, pausing or rescuing; destinationCaller is always zero.
        - A mint to a registered hook (a CollateralVault) calls its `on_bridged(token, amount,
          depositor)`, as CCTP v2's hooks let a recipient act on a mint: the vault credits
          the depositor, so a transfer into a vault is locked collateral from the burn on.
        - usedNonces is keyed by keccak256(abi.encodePacked(uint32 sourceDomain, uint64 nonce)),
          exactly as CCTP v1's MessageTransmitter.
"""

interface DepositHook:
    def on_bridged(_token: address, _amount: uint256, _depositor: address): nonpayable

interface MintBurnToken:
    def transferFrom(_from: address, _to: address, _value: uint256) -> bool: nonpayable
    def burn(_value: uint256): nonpayable
    def mint(_to: address, _value: uint256): nonpayable

# TokenMessenger (source side), field for field as CCTP v1
event DepositForBurn:
    nonce: indexed(uint64)
    burnToken: indexed(address)
    amount: uint256
    depositor: indexed(address)
    mintRecipient: bytes32
    destinationDomain: uint32
    destinationTokenMessenger: bytes32
    destinationCaller: bytes32

# MessageTransmitter (source side): the message the attester signs and the relayer delivers
event MessageSent:
    message: Bytes[248]

# MessageTransmitter (destination side)
event MessageReceived:
    caller: indexed(address)
    sourceDomain: uint32
    nonce: indexed(uint64)
    sender: bytes32
    messageBody: Bytes[132]

# TokenMessenger (destination side)
event MintAndWithdraw:
    mintRecipient: indexed(address)
    amount: uint256
    mintToken: indexed(address)

event RemoteTokenMessengerAdded:
    domain: uint32
    tokenMessenger: bytes32

event TokenPairLinked:
    localToken: address
    remoteDomain: uint32
    remoteToken: bytes32

MESSAGE_LEN: constant(uint256) = 248
BODY_INDEX: constant(uint256) = 116
BODY_LEN: constant(uint256) = 132

version: public(constant(uint32)) = 0
messageBodyVersion: public(constant(uint32)) = 0
localDomain: public(uint32)
owner: public(address)
nextAvailableNonce: public(uint64)
# keccak256(abi.encodePacked(sourceDomain, nonce)) -> 1 once received
usedNonces: public(HashMap[bytes32, uint256])
# domain -> the bridge (TokenMessenger and MessageTransmitter) there, as bytes32
remoteTokenMessengers: public(HashMap[uint32, bytes32])
# keccak256(abi.encodePacked(remoteDomain, remoteToken)) -> local token (as TokenMinter)
remoteTokensToLocalTokens: public(HashMap[bytes32, address])
burnable: public(HashMap[address, bool])
# mint recipients told of what they receive and for whom (as a CCTP v2 hook): collateral vaults
hooks: public(HashMap[address, bool])


@deploy
def __init__(_local_domain: uint32):
    self.localDomain = _local_domain
    self.owner = msg.sender


@internal
@pure
def _to_bytes32(_a: address) -> bytes32:
    return convert(convert(_a, uint256), bytes32)


@internal
@pure
def _to_address(_b: bytes32) -> address:
    assert convert(_b, uint256) < 2**160, "bridge: not an address"
    return convert(convert(_b, uint256), address)


@internal
@pure
def _u32(_m: Bytes[MESSAGE_LEN], _at: uint256) -> uint32:
    return convert(convert(slice(_m, _at, 4), bytes4), uint32)


@internal
@pure
def _source_and_nonce(_source: uint32, _nonce: uint64) -> bytes32:
    return keccak256(concat(convert(_source, bytes4), convert(_nonce, bytes8)))


@external
def set_remote(_domain: uint32, _remote_bridge: address):
    """@notice Trust `_remote_bridge` as the bridge on `_domain` (both directions)."""
    assert msg.sender == self.owner, "bridge: only owner"
    assert _domain != self.localDomain, "bridge: own domain"
    self.remoteTokenMessengers[_domain] = self._to_bytes32(_remote_bridge)
    log RemoteTokenMessengerAdded(domain=_domain, tokenMessenger=self._to_bytes32(_remote_bridge))


@external
def set_hook(_recipient: address, _on: bool):
    """@notice Tell `_recipient` (a CollateralVault) of every mint to it, with the depositor."""
    assert msg.sender == self.owner, "bridge: only owner"
    self.hooks[_recipient] = _on


@external
def set_token_pair(_local_token: address, _remote_domain: uint32, _remote_token: address):
    """@notice `_remote_token` burnt on `_remote_domain` mints `_local_token` here; the local
    token may be burnt here (this bridge must be one of its minters to receive)."""
    assert msg.sender == self.owner, "bridge: only owner"
    remote: bytes32 = self._to_bytes32(_remote_token)
    key: bytes32 = keccak256(concat(convert(_remote_domain, bytes4), remote))
    self.remoteTokensToLocalTokens[key] = _local_token
    self.burnable[_local_token] = True
    log TokenPairLinked(localToken=_local_token, remoteDomain=_remote_domain, remoteToken=remote)


@external
def depositForBurn(
    amount: uint256, destinationDomain: uint32, mintRecipient: bytes32, burnToken: address
) -> uint64:
    """@notice Burn `amount` of `burnToken` of the caller here, to be minted to `mintRecipient`
    on `destinationDomain`. Returns the message nonce (unique per source domain)."""
    assert amount > 0, "Amount must be nonzero"
    assert mintRecipient != empty(bytes32), "Mint recipient must be nonzero"
    remote: bytes32 = self.remoteTokenMessengers[destinationDomain]
    assert remote != empty(bytes32), "No TokenMessenger for domain"
    assert self.burnable[burnToken], "Burn token not supported"
    assert extcall MintBurnToken(burnToken).transferFrom(msg.sender, self, amount)
    extcall MintBurnToken(burnToken).burn(amount)
    nonce: uint64 = self.nextAvailableNonce
    self.nextAvailableNonce = nonce + 1
    body: Bytes[BODY_LEN] = concat(
        convert(messageBodyVersion, bytes4),
        self._to_bytes32(burnToken),
        mintRecipient,
        convert(amount, bytes32),
        self._to_bytes32(msg.sender),
    )
    message: Bytes[MESSAGE_LEN] = concat(
        convert(version, bytes4),
        convert(self.localDomain, bytes4),
        convert(destinationDomain, bytes4),
        convert(nonce, bytes8),
        self._to_bytes32(self),
        remote,
        empty(bytes32),
        body,
    )
    log MessageSent(message=message)
    log DepositForBurn(
        nonce=nonce,
        burnToken=burnToken,
        amount=amount,
        depositor=msg.sender,
        mintRecipient=mintRecipient,
        destinationDomain=destinationDomain,
        destinationTokenMessenger=remote,
        destinationCaller=empty(bytes32),
    )
    return nonce


@external
def receiveMessage(message: Bytes[MESSAGE_LEN], attestation: Bytes[65]) -> bool:
    """@notice Deliver a message sent by the bridge on its source domain: mark its
    (sourceDomain, nonce) used and mint the tokens. Devnet: the owner relays, no signatures."""
    assert msg.sender == self.owner, "bridge: only the relayer (owner)"
    assert len(attestation) == 0, "bridge: devnet takes no attestation"
    assert len(message) == MESSAGE_LEN, "Invalid message length"
    assert self._u32(message, 0) == version, "Invalid message version"
    assert self._u32(message, 8) == self.localDomain, "Invalid destination domain"
    source: uint32 = self._u32(message, 4)
    nonce: uint64 = convert(convert(slice(message, 12, 8), bytes8), uint64)
    sender: bytes32 = extract32(message, 20)
    assert sender == self.remoteTokenMessengers[source], "Remote TokenMessenger unsupported"
    assert extract32(message, 52) == self._to_bytes32(self), "Invalid recipient"
    key: bytes32 = self._source_and_nonce(source, nonce)
    assert self.usedNonces[key] == 0, "Nonce already used"
    self.usedNonces[key] = 1

    assert self._u32(message, BODY_INDEX) == messageBodyVersion, "Invalid message body version"
    burn_token: bytes32 = extract32(message, BODY_INDEX + 4)
    recipient: address = self._to_address(extract32(message, BODY_INDEX + 36))
    amount: uint256 = extract32(message, BODY_INDEX + 68, output_type=uint256)
    local: address = self.remoteTokensToLocalTokens[
        keccak256(concat(convert(source, bytes4), burn_token))
    ]
    assert local != empty(address), "Mint token not supported"
    extcall MintBurnToken(local).mint(recipient, amount)
    if self.hooks[recipient]:  # the depositor is the message's messageSender
        depositor: address = self._to_address(extract32(message, BODY_INDEX + 100))
        extcall DepositHook(recipient).on_bridged(local, amount, depositor)
    log MessageReceived(
        caller=msg.sender,
        sourceDomain=source,
        nonce=nonce,
        sender=sender,
        messageBody=slice(message, BODY_INDEX, BODY_LEN),
    )
    log MintAndWithdraw(mintRecipient=recipient, amount=amount, mintToken=local)
    return True
