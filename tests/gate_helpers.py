"""Tools of the gate's tests: a devnet with fresh funded accounts, a server over it with short
attestation lives, submitting and cancelling attestations on chain, and the fresh-read check of
the gate's invariant (IM <= equity of what was executed)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from aggregator.accounts import margin_report, policy_of, scenario_set
from aggregator.attestation import MarginAttestation, WithdrawalAttestation
from aggregator.service.launcher import Server, start_server
from aggregator.world import read_world
from chains.compile import load_artifact
from chains.config import OmnimarginConfig, load_config
from chains.devnet_control import mint_accounts
from chains.devnet_nodes import BLOCK_TIME_S

A, B, C = 31337001, 31337002, 31337003
FUNDING = 20_000  # USDC each fresh account holds on chain A
TTL_S = 10  # attestation lifetime of the gate's test servers
ALLOWANCE_S = 3  # their clock allowance


def fresh_accounts(n: int, seed: str) -> list[str]:
    """``n`` new addresses (keys derived from ``seed``: never anvil's unlocked ones)."""
    return [str(Account.from_key(Web3.keccak(text=f"{seed}/{i}")).address) for i in range(n)]


def fund(cfg: OmnimarginConfig, accounts: list[str], usdc: int = FUNDING) -> None:
    """Lock ``usdc`` USDC for each account in chain A's vault (its collateral: wallets do not
    back margin) and give it gas on every chain (it cancels its own attestations, impersonated
    on anvil)."""
    asyncio.run(
        mint_accounts(cfg, A, "USDC", accounts, [usdc * 10**6] * len(accounts), locked=True)
    )
    for chain in cfg.chains:
        w3 = Web3(HTTPProvider(chain.rpc_urls[0]))
        for a in accounts:
            w3.provider.make_request("anvil_setBalance", [a, hex(10**20)])  # type: ignore[arg-type]
            w3.provider.make_request("anvil_impersonateAccount", [a])  # type: ignore[arg-type]


def gate_config(
    devnet_config: Path, out: Path, accounts: list[str], store: Path, **margin: Any
) -> Path:
    """A copy of a devnet config watching ``accounts``, with short attestation lives, its own
    store file and an API key."""
    data = tomllib.loads(devnet_config.read_text())
    data["accounts"] = sorted(set(data.get("accounts", [])) | set(accounts))
    data["margin"] = {
        **data.get("margin", {}),
        "attestation_ttl_s": TTL_S,
        "clock_allowance_s": ALLOWANCE_S,
        **margin,
    }
    data["store_path"] = str(store)
    data["service"] = {**data.get("service", {}), "api_keys": ["gate-test-key"]}
    out.write_text(tomli_w.dumps(data))
    return out


@dataclass
class Chains:
    """web3 clients of the devnet's PerpMarkets and MarginGates; submits as anvil's account 7."""

    cfg: OmnimarginConfig
    w3: dict[int, Web3] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.cfg.chains:
            self.w3[c.chain_id] = Web3(HTTPProvider(c.rpc_urls[0], request_kwargs={"timeout": 30}))

    def contract(self, chain_id: int, name: str) -> Any:
        chain = self.cfg.chain(chain_id)
        if name == "CollateralVault":
            (address,) = [s.address for s in self.cfg.sources_on(chain_id) if s.kind == "vault"]
        else:
            address = chain.perp_market if name == "PerpMarket" else chain.margin_gate
        abi = list(load_artifact(name).abi)
        return self.w3[chain_id].eth.contract(address=address, abi=abi)

    def submit(self, decision: dict[str, Any]) -> str:
        """Execute the attested position change or withdrawal (sent by anvil's account 7);
        returns "" when it executed, else the revert reason."""
        typed = decision["attestation"]["typed_data"]
        chain_id = int(typed["domain"]["chainId"])
        sig = bytes.fromhex(decision["attestation"]["signature"][2:])
        if typed["primaryType"] == WithdrawalAttestation.PRIMARY:
            w = WithdrawalAttestation.from_typed_data(typed)
            fn = self.contract(chain_id, "CollateralVault").functions.withdraw(w.as_tuple(), sig)
        else:
            att = MarginAttestation.from_typed_data(typed)
            fn = self.contract(chain_id, "PerpMarket").functions.open(att.as_tuple(), sig)
        return self.send(chain_id, fn, self.w3[chain_id].eth.accounts[7])

    def send(self, chain_id: int, fn: Any, sender: str) -> str:
        """Send ``fn`` from ``sender``; "" when it executed, else the revert reason."""
        try:
            fn.call({"from": sender})
            tx = fn.transact({"from": sender, "gas": 1_000_000})
        except (ContractLogicError, Web3RPCError) as exc:
            return str(exc)
        receipt = self.w3[chain_id].eth.wait_for_transaction_receipt(
            tx, timeout=30, poll_latency=0.05
        )
        return "" if receipt["status"] == 1 else "reverted"

    def token(self, chain_id: int, symbol: str) -> Any:
        (t,) = [t for t in self.cfg.tokens_on(chain_id) if t.symbol == symbol]
        return self.w3[chain_id].eth.contract(
            address=t.address, abi=list(load_artifact("ERC20").abi)
        )

    def cancel(self, decision: dict[str, Any]) -> str:
        """The account cancels its attestation on the target chain's gate."""
        message = decision["attestation"]["typed_data"]["message"]
        chain_id = int(decision["attestation"]["typed_data"]["domain"]["chainId"])
        gate = self.contract(chain_id, "MarginGate")
        fn = gate.functions.cancel(int(message["nonce"]))
        try:
            fn.call({"from": message["account"]})
            tx = fn.transact({"from": message["account"]})
        except (ContractLogicError, Web3RPCError) as exc:
            return str(exc)
        self.w3[chain_id].eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.05)
        return ""

    def position(self, chain_id: int, account: str, market: str) -> Decimal:
        from chains.types import market_id

        size, _, _ = (
            self.contract(chain_id, "PerpMarket")
            .functions.position(account, market_id(market))
            .call()
        )
        return Decimal(size) / 10**18


_SCENARIOS: dict[tuple[str, Any], Any] = {}


def breaches(cfg: OmnimarginConfig, accounts: list[str]) -> list[str]:
    """Accounts whose executed positions need more IM than their equity, on a fresh read."""
    policy, _ = policy_of(cfg)
    world = asyncio.run(read_world(cfg, accounts))
    key = (cfg.chains[0].rpc_urls[0], repr(policy))
    scen = _SCENARIOS.get(key)
    if scen is None:  # the same draws every time: drawn once per devnet and policy
        scen = _SCENARIOS[key] = scenario_set(cfg, policy)
    out = []
    for a in accounts:
        _, figures = margin_report(world, a, scen, policy)
        equity = float(figures.equity)
        if figures.initial_margin > equity + 1e-6 * max(abs(equity), 1.0):
            out.append(f"{a}: IM {figures.initial_margin:,.2f} > equity {equity:,.2f}")
    return out


def live_rows(store: Path) -> list[tuple[str, int, str]]:
    """(account, valid_until, state) of the store's active rows, read as another process."""
    if not store.exists():
        return []
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT account, valid_until, state FROM reservations WHERE state = 'active'"
        ).fetchall()
    finally:
        db.close()
    return [(str(a), int(v), str(s)) for a, v, s in rows]


def serve(config: Path, log: Path) -> Server:
    return start_server(config, log, "--epoch-interval", "1")


def wait_epoch(server: Server, timeout_s: float = 30.0) -> int:
    """Wait until the server swaps in an epoch started after this call."""
    with server.client() as c:
        first = c.get("/readyz").json()["epoch"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = c.get("/readyz").json()["epoch"]
            if now is not None and first is not None and now >= first + 2:
                return int(now)
            time.sleep(0.1)
    raise AssertionError(f"no new epoch in {timeout_s} s")


def reload(path: Path) -> OmnimarginConfig:
    return load_config(path)


@contextlib.contextmanager
def blocks_held(cfg: OmnimarginConfig) -> Iterator[None]:
    """No block is mined on any chain inside the block (the devnet's interval mining paused;
    send no transaction meanwhile: it would wait), so two reads pin the same blocks."""
    w3s = [Web3(HTTPProvider(c.rpc_urls[0])) for c in cfg.chains]
    for w3 in w3s:
        w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
    try:
        yield
    finally:
        for w3 in w3s:
            with contextlib.suppress(OSError, ValueError):  # a node a test killed meanwhile
                w3.provider.make_request("evm_setIntervalMining", [BLOCK_TIME_S])  # type: ignore[arg-type]
