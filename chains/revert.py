"""Why a transaction reverted: the ``Error(string)`` a contract gave, decoded, or what the node
said (the CLI's ``devnet submit`` and the keeper report it by name)."""

from __future__ import annotations

from typing import Any

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


def revert_reason(data: Any, message: str | None = None) -> str:
    """The reason of a revert: ``Error(string)`` data decoded, else the node's message."""
    from eth_abi import decode
    from eth_abi.exceptions import DecodingError

    raw: bytes | None = None
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x…"}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            raw = None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    if raw is not None and raw[:4] == ERROR_SELECTOR:
        try:
            (text,) = decode(["string"], raw[4:])
            return str(text)
        except (DecodingError, OverflowError, UnicodeDecodeError):
            pass
    text = (message or "").removeprefix("execution reverted").lstrip(": ")
    return text or "no reason given"


def mined_revert_reason(w3: Any, tx: Any, receipt: Any) -> str:
    """Why a mined transaction reverted: its trace's output (anvil, geth), else the call
    replayed on the state of its block."""
    from web3.exceptions import ContractLogicError, Web3Exception

    try:
        trace = w3.provider.make_request(
            "debug_traceTransaction", [tx.to_0x_hex(), {"tracer": "callTracer"}]
        )
        result = trace.get("result") or {}
        if result.get("output") or result.get("revertReason"):
            return revert_reason(result.get("output"), result.get("revertReason"))
    except (Web3Exception, OSError, ValueError, AttributeError):
        pass
    sent = w3.eth.get_transaction(tx)
    try:
        w3.eth.call(
            {"from": sent["from"], "to": sent["to"], "data": sent["input"], "gas": sent["gas"]},
            receipt["blockNumber"],
        )
    except ContractLogicError as exc:
        return revert_reason(exc.data, exc.message)
    return "no reason given"
