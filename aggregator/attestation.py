"""Margin attestations: EIP-712 typed data the aggregator signs and MarginGate verifies.

docs/ARCHITECTURE.md, "Attestations". The domain is {name "omnimargin", version "1", chainId =
the target chain, verifyingContract = its MarginGate}; the primary types are
``MarginAttestation`` (a position change) and ``WithdrawalAttestation`` (collateral leaving a
vault) below, the same structs, field for field, as ``chains/contracts/MarginGate.vy``. USD
amounts are 1e18 fixed point; ``market`` is keccak256 of the canonical asset name
(:func:`market_id`).
EIP-712: https://eips.ethereum.org/EIPS/eip-712.

The signer's private key comes from a file only its owner can read, or from an environment
variable; it never appears in a log line or an error message.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import coincurve
from eth_abi import encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from eth_utils.crypto import keccak

from aggregator.errors import InputError
from aggregator.inputs import account as checked_account
from chains.config import SignerConfig
from chains.types import market_id

__all__ = [
    "Attestation",
    "LiquidationAttestation",
    "MarginAttestation",
    "WithdrawalAttestation",
    "digest",
    "load_signer_key",
    "market_id",
    "recover",
    "sign",
    "typed_data",
]

DOMAIN_NAME = "omnimargin"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
#: (EIP-712 name, Solidity type, dataclass field), in the struct's order
FIELDS = (
    ("account", "address", "account"),
    ("market", "bytes32", "market"),
    ("sizeDelta", "int256", "size_delta"),
    ("equity", "uint256", "equity"),
    ("initialMargin", "uint256", "initial_margin"),
    ("snapshotHash", "bytes32", "snapshot_hash"),
    ("riskModelHash", "bytes32", "risk_model_hash"),
    ("issuedAt", "uint64", "issued_at"),
    ("validUntil", "uint64", "valid_until"),
    ("nonce", "uint256", "nonce"),
    ("counter", "uint256", "counter"),
)
WITHDRAWAL_FIELDS = (
    ("account", "address", "account"),
    ("vault", "address", "vault"),
    ("token", "address", "token"),
    ("amount", "uint256", "amount"),
    ("recipient", "address", "recipient"),
    ("equity", "uint256", "equity"),
    ("initialMargin", "uint256", "initial_margin"),
    ("snapshotHash", "bytes32", "snapshot_hash"),
    ("riskModelHash", "bytes32", "risk_model_hash"),
    ("issuedAt", "uint64", "issued_at"),
    ("validUntil", "uint64", "valid_until"),
    ("nonce", "uint256", "nonce"),
    ("counter", "uint256", "counter"),
)
LIQUIDATION_FIELDS = (
    ("account", "address", "account"),
    ("target", "address", "target"),
    ("asset", "bytes32", "asset"),
    ("sizeDelta", "int256", "size_delta"),
    ("amount", "uint256", "amount"),
    ("bonus", "uint256", "bonus"),
    ("recipient", "address", "recipient"),
    ("settle", "int256", "settle"),
    ("equity", "int256", "equity"),
    ("maintenanceMargin", "uint256", "maintenance_margin"),
    ("snapshotHash", "bytes32", "snapshot_hash"),
    ("riskModelHash", "bytes32", "risk_model_hash"),
    ("issuedAt", "uint64", "issued_at"),
    ("validUntil", "uint64", "valid_until"),
    ("nonce", "uint256", "nonce"),
    ("counter", "uint256", "counter"),
)
_RANGES = {
    "int256": (-(2**255), 2**255 - 1),
    "uint256": (0, 2**256 - 1),
    "uint64": (0, 2**64 - 1),
}
Fields = tuple[tuple[str, str, str], ...]


class _Signed:
    """An EIP-712 struct the gate verifies: ``PRIMARY`` names it, ``FIELDS`` lists
    (EIP-712 name, Solidity type, attribute) in the contract's order. Subclasses are frozen
    dataclasses; every field is checked against its Solidity type on construction."""

    PRIMARY: ClassVar[str]
    FIELDS: ClassVar[Fields]
    issued_at: int
    valid_until: int

    def __post_init__(self) -> None:
        for _, kind, name in self.FIELDS:
            value = getattr(self, name)
            if kind == "address":
                object.__setattr__(self, name, _address_field(value, name))
            elif kind == "bytes32" and not (isinstance(value, bytes) and len(value) == 32):
                raise InputError(name, f"must be 32 bytes, got {value!r}")
            elif kind in _RANGES:
                low, high = _RANGES[kind]
                if not (isinstance(value, int) and low <= value <= high):
                    raise InputError(name, f"must be an integer in {kind} range, got {value!r}")
        if self.valid_until < self.issued_at:
            raise InputError("valid_until", f"{self.valid_until} is before {self.issued_at}")

    @classmethod
    def from_typed_data(cls, typed: dict[str, Any]) -> Self:
        """The attestation in an EIP-712 JSON written by :func:`typed_data`."""
        if typed.get("primaryType", cls.PRIMARY) != cls.PRIMARY:
            raise InputError("typed_data.primaryType", f"must be {cls.PRIMARY}")
        message = typed.get("message")
        if not isinstance(message, dict):
            raise InputError("typed_data.message", "missing")
        fields: dict[str, Any] = {}
        for typed_name, kind, name in cls.FIELDS:
            if typed_name not in message:
                raise InputError(f"typed_data.message.{typed_name}", "missing")
            value = message[typed_name]
            if kind == "bytes32":
                try:
                    value = bytes.fromhex(str(value).removeprefix("0x"))
                except ValueError:
                    raise InputError(f"typed_data.message.{typed_name}", "not hex") from None
            fields[name] = value
        return cls(**fields)

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct as an ABI tuple (what a contract call taking the struct takes)."""
        return tuple(getattr(self, name) for _, _, name in self.FIELDS)


@dataclass(frozen=True)
class MarginAttestation(_Signed):
    """One authorisation: ``account`` may change its ``market`` position by ``size_delta``
    (18 decimals of the asset), given ``equity`` and ``initial_margin`` (USD, 1e18 fixed point)
    computed from the chain reads ``snapshot_hash`` with the model ``risk_model_hash``; valid
    from ``issued_at`` to ``valid_until`` (unix seconds), once per (account, nonce), and only
    while the gate's ``counter_of(account)`` is still ``counter``."""

    PRIMARY: ClassVar[str] = "MarginAttestation"
    FIELDS: ClassVar[Fields] = FIELDS
    account: str
    market: bytes
    size_delta: int
    equity: int
    initial_margin: int
    snapshot_hash: bytes
    risk_model_hash: bytes
    issued_at: int
    valid_until: int
    nonce: int
    counter: int = 0


@dataclass(frozen=True)
class WithdrawalAttestation(_Signed):
    """``vault`` (a CollateralVault the gate registered) may release ``amount`` (raw) of
    ``token`` of ``account`` to ``recipient``; ``equity`` and ``initial_margin`` are the
    account's figures after it, with the same validity, nonce space and counter as
    :class:`MarginAttestation`."""

    PRIMARY: ClassVar[str] = "WithdrawalAttestation"
    FIELDS: ClassVar[Fields] = WITHDRAWAL_FIELDS
    account: str
    vault: str
    token: str
    amount: int
    recipient: str
    equity: int
    initial_margin: int
    snapshot_hash: bytes
    risk_model_hash: bytes
    issued_at: int
    valid_until: int
    nonce: int
    counter: int = 0


@dataclass(frozen=True)
class LiquidationAttestation(_Signed):
    """One step of a liquidation plan, executed by ``target`` for anyone who submits it:

    * a PerpMarket closes ``size_delta`` (18 decimals; it must shrink the position, never
      through zero) of ``account``'s ``asset`` market (its market id) at its feed's price, and
      adds ``settle`` (USD, 1e18) to its realised P&L (a loss paid by seized collateral and
      the insurance fund: only in a bad-debt plan);
    * a CollateralVault seizes ``amount`` (raw) of the token ``asset`` (the address as a
      bytes32) from ``account``'s collateral (or, if short, from its escape-hatch request):
      ``bonus`` goes to the submitter, the rest to ``recipient``'s collateral in the vault
      (the insurance fund; the fund's own cover of a bad debt goes to the treasury).

    ``equity`` (signed) and ``maintenance_margin`` are the figures the plan was made on."""

    PRIMARY: ClassVar[str] = "LiquidationAttestation"
    FIELDS: ClassVar[Fields] = LIQUIDATION_FIELDS
    account: str
    target: str
    asset: bytes
    size_delta: int
    amount: int
    bonus: int
    recipient: str
    settle: int
    equity: int
    maintenance_margin: int
    snapshot_hash: bytes
    risk_model_hash: bytes
    issued_at: int
    valid_until: int
    nonce: int
    counter: int = 0


Attestation = MarginAttestation | WithdrawalAttestation | LiquidationAttestation


def typed_data(att: Attestation, chain_id: int, gate: str) -> dict[str, Any]:
    """The EIP-712 JSON (``types``, ``domain``, ``primaryType``, ``message``) for the gate
    ``gate`` on chain ``chain_id``: integers as integers, bytes32 as ``0x`` hex."""
    message: dict[str, Any] = {}
    for key, kind, name in att.FIELDS:
        value = getattr(att, name)
        message[key] = "0x" + value.hex() if kind == "bytes32" else value
    return {
        "types": {
            "EIP712Domain": DOMAIN_TYPE,
            att.PRIMARY: [{"name": k, "type": t} for k, t, _ in att.FIELDS],
        },
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": _checked_address(gate, "verifyingContract"),
        },
        "primaryType": att.PRIMARY,
        "message": message,
    }


def _signable(att: Attestation, chain_id: int, gate: str) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(att, chain_id, gate))


def reference_digest(att: Attestation, chain_id: int, gate: str) -> bytes:
    """The digest by eth-account's general EIP-712 encoder (the reference :func:`digest`
    is checked against)."""
    m = _signable(att, chain_id, gate)
    return bytes(keccak(b"\x19" + m.version + m.header + m.body))


@functools.lru_cache(maxsize=65536)
def _checked_address(value: str, name: str) -> str:
    """EIP-55 form of an address field (a keeper signs thousands naming the same few)."""
    return checked_account(value, name)


def _address_field(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(name, f"must be a 0x address string, got {type(value).__name__}")
    return _checked_address(value, name)


@functools.cache
def _type_hash(primary: str, fields: Fields) -> bytes:
    listed = ",".join(f"{kind} {name}" for name, kind, _ in fields)
    return bytes(keccak(text=f"{primary}({listed})"))


@functools.cache
def _domain_separator(chain_id: int, gate: str) -> bytes:
    typ = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    return bytes(
        keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    keccak(text=typ),
                    keccak(text=DOMAIN_NAME),
                    keccak(text=DOMAIN_VERSION),
                    chain_id,
                    to_checksum_address(gate),
                ],
            )
        )
    )


def digest(att: Attestation, chain_id: int, gate: str) -> bytes:
    """keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(att)): what is signed. Encoded
    directly (every field is a static type, so hashStruct is keccak of the ABI encoding of the
    type hash and the values), about 10x faster than the general encoder it is tested
    against (:func:`reference_digest`)."""
    words = [_type_hash(att.PRIMARY, att.FIELDS)]
    words += [_word(kind, getattr(att, name)) for _, kind, name in att.FIELDS]
    struct = keccak(b"".join(words))
    return bytes(keccak(b"\x19\x01" + _domain_separator(chain_id, gate) + struct))


def _word(kind: str, value: Any) -> bytes:
    """One static ABI word (the values were range-checked when the attestation was made)."""
    if kind == "bytes32":
        return bytes(value)
    if kind == "address":
        return bytes(12) + bytes.fromhex(value[2:])
    if kind == "int256":
        return (int(value) % 2**256).to_bytes(32, "big")
    return int(value).to_bytes(32, "big")  # uint256, uint64


@functools.lru_cache(maxsize=8)
def _secp256k1(secret: bytes) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(secret)


def sign(att: Attestation, chain_id: int, gate: str, key: LocalAccount | bytes | str) -> str:
    """The 65-byte signature (r ‖ s ‖ v, v in {27, 28}, low s) as ``0x`` hex: libsecp256k1's
    deterministic (RFC 6979), low-s signature of :func:`digest`, the same bytes eth-account
    gives (tested), without its per-call overhead (a keeper signs thousands a round)."""
    account = key if isinstance(key, LocalAccount) else Account.from_key(key)
    rsv = _secp256k1(bytes(account.key)).sign_recoverable(digest(att, chain_id, gate), None)
    return "0x" + rsv[:64].hex() + bytes([27 + rsv[64]]).hex()


def recover(att: Attestation, chain_id: int, gate: str, signature: str | bytes) -> str:
    """The checksummed address that signed ``att`` for that gate and chain."""
    return str(Account.recover_message(_signable(att, chain_id, gate), signature=signature))


def load_signer_key(config: SignerConfig | None) -> LocalAccount:
    """The attestation signer from ``[signer]``: its ``key_file`` (which group and others must
    not be able to read) or its ``key_env`` variable. Errors never contain the key."""
    if config is None:
        raise InputError("signer", "no [signer] in the config: set key_file or key_env")
    if config.key_file is not None:
        return _from_text(_read_key_file(Path(config.key_file).expanduser()), "signer.key_file")
    assert config.key_env is not None  # SignerConfig requires exactly one
    raw = os.environ.get(config.key_env)
    if not raw:
        raise InputError("signer.key_env", f"environment variable {config.key_env} is not set")
    return _from_text(raw, f"signer.key_env ({config.key_env})")


def _read_key_file(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError("signer.key_file", f"cannot read {path} ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError("signer.key_file", f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise InputError(
            "signer.key_file",
            f"{path} is open to group or others (mode {mode:04o}): run chmod 600 {path}",
        )
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise InputError("signer.key_file", f"cannot read {path} ({reason})") from None


def _from_text(text: str, where: str) -> LocalAccount:
    """A key from ``0x``-prefixed or bare hex; the message says what is wrong, not the key."""
    hexkey = text.strip().removeprefix("0x")
    bad = InputError(where, "does not hold a private key (64 hex digits, 0x optional)")
    if len(hexkey) != 64:
        raise bad
    try:
        account: LocalAccount = Account.from_key(bytes.fromhex(hexkey))
    except ValueError:
        raise bad from None
    return account
