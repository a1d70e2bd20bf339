"""``omnimargin keys rotate``: a new attestation signer on every chain's MarginGate.

Order, so that no moment leaves a chain unable to verify what the service signs:

1. a new key in ``<key_file>.next`` (created 0600, never readable by others);
2. ``add_signer(new)`` on every gate (skipped where it already is one: a re-run after a failure
   goes on where it stopped);
3. only when every gate has it, the key file is replaced by the new key (one ``os.replace``):
   from now on attestations are signed with it;
4. ``remove_signer(old)`` on every gate: the old key's attestations, submitted or not, are
   refused from here on.

The gates' owner sends the transactions: the devnet's deployer (an unlocked anvil account), or
a private key read from the environment variable the caller names. No key is ever printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import RPCEndpoint

from aggregator.attestation import load_signer_key
from aggregator.errors import InputError
from chains.compile import load_artifact
from chains.config import ChainConfig, OmnimarginConfig
from chains.devnet_margin import SIGNER_GAS


@dataclass(frozen=True)
class Step:
    chain_id: int
    action: str  # "add" | "remove" | "kept"
    signer: str
    tx: str | None


@dataclass(frozen=True)
class Rotation:
    old: str
    new: str
    steps: tuple[Step, ...]


def _new_key(path: Path) -> LocalAccount:
    """The pending new key: ``path`` if a previous run left one, else a fresh one (0600)."""
    if path.exists():
        return load_signer_key_file(path)
    account: LocalAccount = Account.create()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write("0x" + bytes(account.key).hex() + "\n")
    return account


def load_signer_key_file(path: Path) -> LocalAccount:
    from chains.config import SignerConfig

    return load_signer_key(SignerConfig(key_file=str(path)))


class _Gate:
    """One chain's MarginGate, transactions sent by its owner."""

    def __init__(self, chain: ChainConfig, owner: LocalAccount | None, devnet_owner: str | None):
        assert chain.margin_gate is not None
        self.chain = chain
        self.w3 = Web3(HTTPProvider(chain.rpc_urls[0], request_kwargs={"timeout": 30}))
        abi = list(load_artifact("MarginGate").abi)
        self.gate = self.w3.eth.contract(
            address=Web3.to_checksum_address(chain.margin_gate), abi=abi
        )
        self.owner, self.devnet_owner = owner, devnet_owner

    def is_signer(self, who: str) -> bool:
        return bool(self.gate.functions.is_signer(who).call())

    def send(self, fn: Any) -> str:
        if self.owner is not None:
            tx = fn.build_transaction(
                {
                    "from": self.owner.address,
                    "nonce": self.w3.eth.get_transaction_count(self.owner.address),
                    "chainId": self.chain.chain_id,
                }
            )
            signed = self.owner.sign_transaction(tx)
            sent = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        else:
            fn.call({"from": self.devnet_owner})  # a revert says why before anything is sent
            sent = fn.transact({"from": self.devnet_owner})
        receipt = self.w3.eth.wait_for_transaction_receipt(sent, timeout=120)
        if receipt["status"] != 1:
            raise InputError(
                "owner", f"chain {self.chain.chain_id}: transaction {sent.hex()} failed"
            )
        return "0x" + bytes(sent).hex().removeprefix("0x")


def rotate(
    cfg: OmnimarginConfig,
    owner: LocalAccount | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> Rotation:
    """Rotate the signer (see the module docstring). Raises InputError naming the chain that
    failed; the key file is switched only once every gate has the new signer."""
    if cfg.signer is None or cfg.signer.key_file is None:
        raise InputError(
            "signer.key_file",
            "rotation writes the new key to the signer's key file; with key_env, add the new "
            "signer to the gates and set the variable yourself",
        )
    key_file = Path(cfg.signer.key_file).expanduser()
    devnet_owner = None if owner is not None else (cfg.devnet or {}).get("deployer")
    if owner is None and devnet_owner is None:
        raise InputError("owner_key_env", "not a devnet: name the gate owner's key variable")
    gates = [_Gate(c, owner, devnet_owner) for c in cfg.chains if c.margin_gate is not None]
    pending, retire = (
        key_file.with_name(key_file.name + ".next"),
        key_file.with_name(key_file.name + ".retire"),
    )
    steps: list[Step] = []
    if retire.exists():  # a run that switched but could not retire everywhere: finish it
        old_address, new = retire.read_text().strip(), load_signer_key(cfg.signer)
    else:
        old_address = load_signer_key(cfg.signer).address
        new = _new_key(pending)
        for g in gates:
            steps.append(_step(g, "add", new.address, say))
        retire.write_text(old_address + "\n")  # an address, not a secret
        os.replace(pending, key_file)
        say(f"signing with {new.address} now")
    for g in gates:
        steps.append(_step(g, "remove", old_address, say))
    retire.unlink()
    return Rotation(old_address, new.address, tuple(steps))


def _step(g: _Gate, action: str, signer: str, say: Callable[[str], None]) -> Step:
    cid = g.chain.chain_id
    try:
        wanted = action == "add"
        if g.is_signer(signer) == wanted:
            return Step(cid, "kept", signer, None)
        fn = g.gate.functions.add_signer if wanted else g.gate.functions.remove_signer
        tx = g.send(fn(signer))
        if wanted and g.devnet_owner is not None:  # devnet: gas for its counter bumps
            g.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [signer, hex(SIGNER_GAS)])
    except (Web3Exception, ContractLogicError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        when = (
            "before switching: signing stays on the old key"
            if action == "add"
            else ("after switching: the old signer is still accepted there")
        )
        raise InputError(
            f"chains.{g.chain.name}",
            f"{action}_signer failed ({type(exc).__name__}); {when}; "
            "run `omnimargin keys rotate` again once the chain answers",
        ) from None
    say(f"chain {cid}: {action}_signer({signer})")
    return Step(cid, action, signer, tx)
