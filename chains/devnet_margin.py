"""The devnet's margin contracts (DESIGN.md, "Attestations"): a MarginGate and a PerpMarket on
every chain, and the devnet's attestation signer.

The PerpMarket lists ETH, BTC and LINK (those of them with a feed on the chain), priced by that
chain's feeds, and is the gate's one registered market. The signer's key is fixed
(keccak256 of ``"omnimargin devnet signer"``), so every devnet trusts the same address; it is
written to ``<devnet dir>/signer.key`` (mode 0600) for the aggregator to load. It is a devnet
key, public by construction: never use it anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.types import RPCEndpoint

from chains.devnet_web3 import contract_at, deploy, send
from chains.errors import DevnetError
from chains.types import market_id

MARGIN_GATE = "MarginGate"
PERP_MARKET = "PerpMarket"
PERP_ASSETS = ("ETH", "BTC", "LINK")  # markets listed where the chain has the asset's feed
SIGNER_KEY_FILE = "signer.key"
DEVNET_SIGNER_KEY = bytes(keccak(text="omnimargin devnet signer"))
SIGNER_GAS = 100 * 10**18  # wei the devnet signer holds for its counter bumps
COLLATERAL_VAULT = "CollateralVault"
#: the devnet's insurance fund: an account in every CollateralVault (keccak of a fixed phrase:
#: nobody holds its key, so only liquidation attestations move what it holds)
DEVNET_FUND = to_checksum_address(bytes(keccak(text="omnimargin insurance fund"))[-20:])
#: what the devnet's fund starts with, USDC locked on the first chain
DEVNET_FUND_USDC = 50_000
#: anvil's unlocked account that the devnet's keeper sends liquidation steps from
KEEPER_ACCOUNT = 8
#: the escape hatch's delay on the devnet (seconds; DEFAULT_WITHDRAWAL_DELAY_S elsewhere)
DEVNET_WITHDRAWAL_DELAY_S = 8
#: a production vault's escape-hatch delay: long enough to liquidate what the amount backed
DEFAULT_WITHDRAWAL_DELAY_S = 7 * 86400


def devnet_signer_address() -> str:
    """The address of the devnet signer every devnet MarginGate trusts."""
    return str(Account.from_key(DEVNET_SIGNER_KEY).address)


async def deploy_margin(
    w3: AsyncWeb3[Any], deployer: str, contracts: Mapping[str, str], feeds: Mapping[str, str]
) -> dict[str, str]:
    """Deploy MarginGate and PerpMarket, list the perp markets, trust the devnet signer, and
    make the gate the one that checks the chain's CollateralVault's withdrawals.

    ``contracts`` is what the chain already has (it must not have a gate yet); ``feeds`` maps
    a canonical asset to its price feed's address. Returns the new contracts by name.
    """
    if MARGIN_GATE in contracts or PERP_MARKET in contracts:
        raise DevnetError("deploy margin contracts: the chain already has them")
    gate_addr = await deploy(w3, MARGIN_GATE, deployer)
    perp_addr = await deploy(w3, PERP_MARKET, deployer, gate_addr)
    gate, perp = contract_at(w3, MARGIN_GATE, gate_addr), contract_at(w3, PERP_MARKET, perp_addr)
    for asset in (a for a in PERP_ASSETS if a in feeds):
        call = perp.functions.add_market(market_id(asset), feeds[asset])
        await send(w3, call, deployer, f"add perp market {asset}")
    await send(w3, gate.functions.set_market(perp_addr, True), deployer, "register PerpMarket")
    if COLLATERAL_VAULT in contracts:
        vault_addr = contracts[COLLATERAL_VAULT]
        vault = contract_at(w3, COLLATERAL_VAULT, vault_addr)
        await send(w3, vault.functions.set_gate(gate_addr), deployer, "vault: set its gate")
        call = gate.functions.set_vault(vault_addr, True)
        await send(w3, call, deployer, "register CollateralVault")
    signer = devnet_signer_address()
    await send(w3, gate.functions.add_signer(signer), deployer, "add devnet signer")
    # the engine sends one transaction itself (bumping the gate counter on a new store): gas
    await w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [signer, hex(SIGNER_GAS)])
    return {MARGIN_GATE: str(gate_addr), PERP_MARKET: str(perp_addr)}


def write_signer_key(directory: Path) -> Path:
    """Write the devnet signer's key to ``<directory>/signer.key``, readable by the owner only
    (created 0600, never world-readable even for a moment); return the path."""
    path = directory / SIGNER_KEY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write("0x" + DEVNET_SIGNER_KEY.hex() + "\n")
    os.replace(tmp, path)
    return path
