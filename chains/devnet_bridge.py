"""The devnet's CCTP v1 stand-in (chains/contracts/CCTPBridge.vy) on every chain, and one
transfer left in flight.

Runs after every chain is deployed, since each bridge must know the others: it deploys one
CCTPBridge per chain with CCTP's domain numbering (devnet-eth 0 as Ethereum, devnet-arb 3 as
Arbitrum, devnet-base 6 as Base), links every pair of bridges and their native USDC (burn USDC on
one chain, mint USDC on another: the bridge becomes a minter of each chain's USDC), then burns
2,000 USDC of demo account 1 on devnet-eth towards devnet-base and leaves it unrelayed, so a
fresh devnet always shows one transfer in flight (``omnimargin bridge relay`` completes it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from chains.devnet_deploy import MAX_UINT256, Deployment
from chains.devnet_web3 import connect, contract_at, deploy, send, to_raw
from chains.errors import DevnetError

BRIDGE_CONTRACT = "CCTPBridge"
BRIDGE_NAME = "cctp"  # its [[bridges]] name in the config
BRIDGED_TOKEN = "USDC"  # native USDC on every chain, burnt on one and minted on another
CCTP_DOMAINS = (0, 3, 6)  # Circle's domains of Ethereum, Arbitrum and Base


@dataclass(frozen=True)
class InflightSeed:
    """Demo account ``account`` burns ``amount`` of ``token`` on chain index ``source`` towards
    chain index ``dest`` (into its CollateralVault, or to the account's wallet); nobody relays
    it."""

    account: int
    source: int
    dest: int
    token: str
    amount: Decimal
    into_vault: bool = True  # minted into the destination's CollateralVault (locked collateral)


INFLIGHT_SEEDS = (InflightSeed(1, 0, 2, BRIDGED_TOKEN, Decimal(2000)),)


def cctp_domain(index: int) -> int:
    """The CCTP domain of chain index ``index`` (extra devnet chains get 100 + index)."""
    return CCTP_DOMAINS[index] if index < len(CCTP_DOMAINS) else 100 + index


def recipient_word(address: str) -> bytes:
    """An address as CCTP's ``mintRecipient``: bytes32, left-padded with zeros."""
    return bytes(12) + bytes.fromhex(address.removeprefix("0x"))


async def deploy_bridges(
    deps: list[Deployment], deployer: str, accounts: list[str]
) -> list[Deployment]:
    """Deploy and link the bridges, seed the in-flight transfers; return the deployments with
    ``"CCTPBridge"`` added to each chain's contracts. Fewer than two chains: nothing to do."""
    if len(deps) < 2:
        return deps
    if any(BRIDGED_TOKEN not in d.contracts for d in deps):
        raise DevnetError(f"bridges: every chain needs {BRIDGED_TOKEN}")
    addresses = await asyncio.gather(*(_deploy_one(d, deployer) for d in deps))
    deps = [
        dataclasses.replace(d, contracts={**d.contracts, BRIDGE_CONTRACT: a})
        for d, a in zip(deps, addresses, strict=True)
    ]
    await asyncio.gather(*(_link(d, deps, deployer) for d in deps))
    for seed in INFLIGHT_SEEDS:
        if seed.source < len(deps) and seed.dest < len(deps):
            await _burn(deps[seed.source], deps[seed.dest], seed, deployer, accounts)
    return deps


async def _deploy_one(dep: Deployment, deployer: str) -> str:
    async with connect(dep.node.rpc_url) as w3:
        address = await deploy(w3, BRIDGE_CONTRACT, deployer, cctp_domain(dep.index))
        token = contract_at(w3, "ERC20", dep.contracts[BRIDGED_TOKEN])
        call = token.functions.set_minter(address, True)
        await send(w3, call, deployer, f"{dep.node.name}: bridge mints {BRIDGED_TOKEN}")
    return str(address)


async def _link(dep: Deployment, deps: list[Deployment], deployer: str) -> None:
    """Trust every other chain's bridge and pair the local USDC with theirs."""
    async with connect(dep.node.rpc_url) as w3:
        bridge = contract_at(w3, BRIDGE_CONTRACT, dep.contracts[BRIDGE_CONTRACT])
        local = dep.contracts[BRIDGED_TOKEN]
        for other in deps:
            if other.index == dep.index:
                continue
            domain, where = cctp_domain(other.index), f"{dep.node.name} -> {other.node.name}"
            remote = other.contracts[BRIDGE_CONTRACT]
            await send(w3, bridge.functions.set_remote(domain, remote), deployer, f"link {where}")
            pair = bridge.functions.set_token_pair(local, domain, other.contracts[BRIDGED_TOKEN])
            await send(w3, pair, deployer, f"pair {BRIDGED_TOKEN} {where}")
        # mints into the chain's CollateralVault are deposits of their depositor
        vault_address = dep.contracts["CollateralVault"]
        hook = bridge.functions.set_hook(vault_address, True)
        await send(w3, hook, deployer, f"{dep.node.name}: the vault hears of mints to it")
        vault = contract_at(w3, "CollateralVault", vault_address)
        link = vault.functions.set_bridge(dep.contracts[BRIDGE_CONTRACT])
        await send(w3, link, deployer, f"{dep.node.name}: the vault trusts its bridge")


async def _burn(
    source: Deployment, dest: Deployment, seed: InflightSeed, deployer: str, accounts: list[str]
) -> None:
    """Mint the seed's amount to the account on the source chain, then burn it towards dest
    (so the account's seeded balances stay as devnet_deploy.SEEDS says)."""
    who, what = accounts[seed.account], f"in-flight seed of account {seed.account}"
    decimals = {t.symbol: t.decimals for t in source.tokens}[seed.token]
    raw = to_raw(seed.amount, decimals)
    bridge_address = source.contracts[BRIDGE_CONTRACT]
    async with connect(source.node.rpc_url) as w3:
        token = contract_at(w3, "ERC20", source.contracts[seed.token])
        bridge = contract_at(w3, BRIDGE_CONTRACT, bridge_address)
        await send(w3, token.functions.mint(who, raw), deployer, f"{what}: mint")
        approve = token.functions.approve(bridge_address, MAX_UINT256)
        await send(w3, approve, who, f"{what}: approve")
        to = dest.contracts["CollateralVault"] if seed.into_vault else who
        call = bridge.functions.depositForBurn(
            raw, cctp_domain(dest.index), recipient_word(to), source.contracts[seed.token]
        )
        await send(w3, call, who, f"{what}: depositForBurn")
