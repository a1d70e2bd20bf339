"""``omnimargin keys rotate`` on a devnet of its own: the new signer on every gate, signing
switched, the old one retired (its attestations refused on chain), no key ever printed; a chain
that cannot be reached stops the rotation before the switch."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from aggregator.attestation import MarginAttestation, load_signer_key
from aggregator.authorize import Request, authorize
from aggregator.store import Store
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, load_config
from chains.devnet_nodes import nodes_of, read_state, stop_node
from tests.reliability import ForTest

B = 31337002
ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OMNIMARGIN = str(Path(sys.executable).with_name("omnimargin"))


def _contract(cfg: OmnimarginConfig, chain_id: int, name: str) -> Any:
    c = cfg.chain(chain_id)
    w3 = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 30}))
    address = c.margin_gate if name == "MarginGate" else c.perp_market
    return w3, w3.eth.contract(address=address, abi=list(load_artifact(name).abi))


def _authorise(cfg: OmnimarginConfig, store: Path, size: str) -> tuple[MarginAttestation, bytes]:
    s = Store(store)
    try:
        d = authorize(
            cfg, Request(ACCOUNT, B, "ETH", Decimal(size)), s, load_signer_key(cfg.signer)
        )
    finally:
        s.close()
    assert d["approved"], d["reason"]
    att = MarginAttestation.from_typed_data(d["attestation"]["typed_data"])
    return att, bytes.fromhex(d["attestation"]["signature"][2:])


def _opens(cfg: OmnimarginConfig, att: MarginAttestation, sig: bytes) -> bool:
    w3, perp = _contract(cfg, B, "PerpMarket")
    try:
        perp.functions.open(att.as_tuple(), sig).call({"from": w3.eth.accounts[7]})
    except ContractLogicError:
        return False
    receipt = w3.eth.wait_for_transaction_receipt(
        perp.functions.open(att.as_tuple(), sig).transact({"from": w3.eth.accounts[7]})
    )
    return bool(receipt["status"] == 1)


def _rotate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OMNIMARGIN, "keys", "rotate", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rotation_switches_signing_and_retires_the_old_signer(
    devnet_factory: Any, tmp_path: Path, reliability: ForTest
) -> None:
    info = devnet_factory(3)
    cfg = load_config(info.config_path)
    assert cfg.signer is not None and cfg.signer.key_file is not None
    key_file = Path(cfg.signer.key_file)
    old_secret = key_file.read_text().strip().removeprefix("0x").lower()
    old = load_signer_key(cfg.signer).address
    store = tmp_path / "state.sqlite"
    first, first_sig = _authorise(cfg, store, "0.5")
    assert _opens(cfg, first, first_sig)  # the old key works before the rotation
    pending, pending_sig = _authorise(cfg, store, "0.25")  # signed, not yet submitted

    run = _rotate(info.config_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    new_secret = key_file.read_text().strip().removeprefix("0x").lower()
    new = load_signer_key(cfg.signer).address
    checks = {
        "addresses reported": (out["old_signer"], out["new_signer"]) == (old, new) and old != new,
        "key file 0600": stat.S_IMODE(key_file.stat().st_mode) == 0o600,
        "no key printed": all(
            k not in (run.stdout + run.stderr).lower() for k in (old_secret, new_secret)
        ),
        "no leftovers": sorted(p.name for p in key_file.parent.glob(key_file.name + ".*")) == [],
    }
    for chain in cfg.chains:
        _, gate = _contract(cfg, chain.chain_id, "MarginGate")
        checks[f"chain {chain.chain_id}: new signer"] = gate.functions.is_signer(new).call()
        checks[f"chain {chain.chain_id}: old retired"] = not gate.functions.is_signer(old).call()
    checks["old attestation refused"] = not _opens(cfg, pending, pending_sig)
    fresh, fresh_sig = _authorise(cfg, store, "0.1")
    checks["new attestation accepted"] = _opens(cfg, fresh, fresh_sig)
    again = _rotate(info.config_path)  # and once more: a rotation is repeatable
    checks["second rotation"] = (
        again.returncode == 0 and json.loads(again.stdout)["old_signer"] == new
    )
    wrong = [k for k, ok in checks.items() if not ok]
    reliability.record(
        "Keys",
        "signer rotation",
        "`omnimargin keys rotate` on 3 chains, with an attestation signed by the old key and "
        "not yet submitted",
        "new signer on every gate, signing switched, old signer retired: its attestation "
        "refused on chain, a new one accepted; key file 0600; no key in the output",
        len(checks),
        len(wrong),
    )
    assert wrong == []


def test_a_chain_down_stops_the_rotation_before_the_switch(
    devnet_factory: Any, reliability: ForTest
) -> None:
    info = devnet_factory(3)
    cfg = load_config(info.config_path)
    assert cfg.signer is not None and cfg.signer.key_file is not None
    key_file = Path(cfg.signer.key_file)
    before = key_file.read_text()
    state = read_state(info.directory)
    assert state is not None
    assert stop_node(next(n for n in nodes_of(state) if n.chain_id == 31337003))
    run = _rotate(info.config_path)
    problems = []
    last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    if run.returncode != 2 or not last.startswith("error: chains.devnet-base:"):
        problems.append(f"exit {run.returncode}: {run.stderr[:200]}")
    if "signing stays on the old key" not in run.stderr or key_file.read_text() != before:
        problems.append("signing switched although a chain did not get the new signer")
    reliability.record(
        "Keys",
        "signer rotation with a chain down",
        "`omnimargin keys rotate` with devnet-base's node stopped",
        "exit 2 naming the chain; the key file unchanged (signing stays on the old key)",
        1,
        len(problems),
    )
    assert problems == []
    pending = key_file.with_name(key_file.name + ".next")  # kept for the re-run, owner-only
    assert pending.exists() and stat.S_IMODE(pending.stat().st_mode) == 0o600
