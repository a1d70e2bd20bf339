#pragma version 0.4.3
"""
@title Multicall3 (the canonical aggregate3 / getBlockNumber / getBlockHash ABI) in Vyper
@notice Batches calls into one; each call may be allowed to fail. Same selectors as the
        canonical Multicall3 deployed at 0xcA11bde05977b3631167028862bE2a173976CA11, so the
        same reader code works on the devnet and on real networks.
"""

MAX_CALLS: constant(uint256) = 2048
MAX_CALLDATA: constant(uint256) = 196
MAX_RETURN: constant(uint256) = 192

struct Call3:
    target: address
    allowFailure: bool
    callData: Bytes[MAX_CALLDATA]

struct Result:
    success: bool
    returnData: Bytes[MAX_RETURN]


@payable
@external
def aggregate3(calls: DynArray[Call3, MAX_CALLS]) -> DynArray[Result, MAX_CALLS]:
    results: DynArray[Result, MAX_CALLS] = []
    for c: Call3 in calls:
        ok: bool = False
        data: Bytes[MAX_RETURN] = b""
        if c.target.is_contract:
            ok, data = raw_call(
                c.target, c.callData, max_outsize=MAX_RETURN, revert_on_failure=False
            )
        assert ok or c.allowFailure, "Multicall3: call failed"
        results.append(Result(success=ok, returnData=data))
    return results


@view
@external
def getBlockNumber() -> uint256:
    return block.number


@view
@external
def getBlockHash(blockNumber: uint256) -> bytes32:
    if blockNumber >= block.number or block.number - blockNumber > 256:
        return empty(bytes32)
    return blockhash(blockNumber)


@view
@external
def getCurrentBlockTimestamp() -> uint256:
    return block.timestamp


@view
@external
def getEthBalance(addr: address) -> uint256:
    return addr.balance


@view
@external
def getChainId() -> uint256:
    return chain.id
