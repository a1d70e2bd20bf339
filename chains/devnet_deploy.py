"""What the devnet deploys on each chain and how it seeds the demo accounts, as data.

Chain 1 is the L1 (devnet-eth); the others play L2s with a sequencer uptime feed and a bridged
``USDC.e``. Chain 3 also has an ERC-4626 vault over USDC (``yvUSDC``) that earned some yield, so
its shares are worth more than 1:1. Demo account 1 holds collateral on chains 1 and 3 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.types import RPCEndpoint

from chains.compile import runtime_codehash
from chains.devnet_margin import DEVNET_WITHDRAWAL_DELAY_S, deploy_margin
from chains.devnet_nodes import Node
from chains.devnet_web3 import connect, contract_at, deploy, latest_timestamp, send, to_raw
from chains.errors import DevnetError

FEED_DECIMALS = 8  # as Chainlink's USD feeds
SEQUENCER_UP_FOR_S = 7200  # the sequencer came up 2 h before genesis: past its 1 h grace period
MAX_UINT256 = 2**256 - 1
NONCE_STRIDE = 1000  # the deployer's first nonce on chain index i is i * 1000

# erc4626_locked: yvUSDC shares deposited in the CollateralVault (they back margin)
Place = Literal["vault", "wallet", "erc4626", "erc4626_locked"]


@dataclass(frozen=True)
class TokenSpec:
    symbol: str
    name: str
    decimals: int
    asset: str
    on_l1: bool = True
    on_l2: bool = True
    kind: Literal["native", "canonical_bridge", "third_party_bridge"] = "native"


@dataclass(frozen=True)
class FeedSpec:
    asset: str
    min_usd: Decimal
    max_usd: Decimal
    default_usd: Decimal  # the first round when no history is given
    l1_only: bool = False


@dataclass(frozen=True)
class Seed:
    """Demo account ``account`` (anvil index) holds ``amount`` of ``token`` on chain index
    ``chain`` (0 = devnet-eth), in the collateral vault, its wallet, or as yvUSDC shares."""

    account: int
    chain: int
    token: str
    amount: Decimal
    place: Place


TOKENS = (
    TokenSpec("USDC", "USD Coin", 6, "USDC"),
    TokenSpec("WBTC", "Wrapped BTC", 8, "BTC"),
    TokenSpec("WETH", "Wrapped Ether", 18, "ETH"),
    TokenSpec("USDC.e", "Bridged USDC", 6, "USDC", on_l1=False, kind="canonical_bridge"),
    TokenSpec("LINK", "ChainLink Token", 18, "LINK"),
    TokenSpec("USDT", "Tether USD", 6, "USDT", on_l2=False),
)
FEEDS = (
    FeedSpec("ETH", Decimal(10), Decimal(100_000), Decimal(3000)),
    FeedSpec("BTC", Decimal(1000), Decimal(1_000_000), Decimal(60_000)),
    FeedSpec("USDC", Decimal("0.5"), Decimal(2), Decimal(1)),
    FeedSpec("LINK", Decimal("0.1"), Decimal(10_000), Decimal(15)),
    FeedSpec("USDT", Decimal("0.5"), Decimal(2), Decimal(1), l1_only=True),
)
ERC4626_CHAIN = 2  # chain index of yvUSDC
ERC4626_ASSET = "USDC"  # its underlying token
ERC4626_YIELD = Decimal(750)  # USDC the vault earned after the demo deposits (assets, no shares)
DEMO_ACCOUNTS = (1, 2, 3)
D = Decimal
SEEDS = (
    # account 1: WETH on chain 1, USDC in the vault and in yvUSDC on chain 3, nothing on chain 2
    Seed(1, 0, "WETH", D("12.345678901234567891"), "vault"),
    Seed(1, 0, "WETH", D("0.5"), "wallet"),
    Seed(1, 2, "USDC", D("25000.123456"), "vault"),
    Seed(1, 2, "USDC", D("10000"), "erc4626_locked"),
    Seed(1, 2, "USDC", D("1500.5"), "wallet"),
    # account 2: on all three chains
    Seed(2, 0, "USDC", D("50000"), "vault"),
    Seed(2, 0, "WBTC", D("0.51234567"), "vault"),
    Seed(2, 1, "USDC.e", D("20000.5"), "vault"),
    Seed(2, 1, "WETH", D("5"), "wallet"),
    Seed(2, 2, "WBTC", D("0.25"), "wallet"),
    # account 3: mostly on the L2s
    Seed(3, 0, "WETH", D("2.5"), "wallet"),
    Seed(3, 1, "WBTC", D("1.5"), "vault"),
    Seed(3, 1, "USDC", D("10000"), "vault"),
    Seed(3, 2, "WETH", D("3.000000000000000001"), "vault"),
    Seed(3, 2, "USDC", D("5000"), "erc4626"),
)


def feed_name(asset: str) -> str:
    return f"{asset}/USD"


SEQUENCER_NAME = "SequencerUptime"
ERC4626_NAME = "yvUSDC"


@dataclass(frozen=True)
class Deployment:
    """What one chain got: every contract address by name, its tokens and feeds."""

    node: Node
    index: int
    contracts: dict[str, str]
    tokens: tuple[TokenSpec, ...]
    feeds: tuple[FeedSpec, ...]
    genesis_time: int
    multicall3_codehash: str

    @property
    def bridge(self) -> str:
        return "canonical-" + self.node.name.removeprefix("devnet-")


def tokens_for(index: int) -> tuple[TokenSpec, ...]:
    return tuple(t for t in TOKENS if (t.on_l2 if index > 0 else t.on_l1))


def feeds_for(index: int) -> tuple[FeedSpec, ...]:
    return tuple(f for f in FEEDS if index == 0 or not f.l1_only)


def seeds_for(index: int) -> tuple[Seed, ...]:
    return tuple(s for s in SEEDS if s.chain == index)


def price_answer(price: Decimal) -> int:
    """A USD price -> the feed's raw answer with 8 decimals (rounded half-even)."""
    return int(price.scaleb(FEED_DECIMALS).to_integral_value())


async def deploy_chain(
    node: Node, index: int, deployer: str, accounts: list[str], prices: dict[str, Decimal]
) -> Deployment:
    """Deploy the contracts on one chain, push the first feed rounds and seed the accounts."""
    async with connect(node.rpc_url) as w3:
        genesis = await w3.eth.get_block(0)
        # distinct addresses on each chain, so a reader that mixes chains up reads nothing
        nonce = hex(index * NONCE_STRIDE)
        await w3.provider.make_request(RPCEndpoint("anvil_setNonce"), [deployer, nonce])
        contracts = await _deploy_contracts(w3, index, deployer)
        codehash = await _codehash(w3, contracts["Multicall3"])
        dep = Deployment(
            node,
            index,
            contracts,
            tokens_for(index),
            feeds_for(index),
            int(genesis["timestamp"]),
            codehash,
        )
        await _push_first_rounds(w3, dep, deployer, prices)
        await _seed(w3, dep, deployer, accounts)
    return dep


async def _codehash(w3: AsyncWeb3[Any], address: str) -> str:
    """keccak of the code at ``address``; it must be Multicall3's compiled runtime code."""
    code = await w3.eth.get_code(to_checksum_address(address))
    got = "0x" + keccak(bytes(code)).hex()
    if got != runtime_codehash("Multicall3"):
        raise DevnetError(f"Multicall3 at {address}: code hash {got} is not the compiled one")
    return got


async def _deploy_contracts(w3: AsyncWeb3[Any], index: int, deployer: str) -> dict[str, str]:
    out: dict[str, str] = {}
    out["Multicall3"] = await deploy(w3, "Multicall3", deployer)
    out["CollateralVault"] = await deploy(
        w3, "CollateralVault", deployer, DEVNET_WITHDRAWAL_DELAY_S
    )
    for t in tokens_for(index):
        out[t.symbol] = await deploy(w3, "ERC20", deployer, t.name, t.symbol, t.decimals)
    if index == ERC4626_CHAIN:
        out[ERC4626_NAME] = await deploy(
            w3, "ERC4626Vault", deployer, out[ERC4626_ASSET], "USDC vault", ERC4626_NAME, 6
        )
    for f in feeds_for(index):
        out[feed_name(f.asset)] = await deploy(
            w3, "PriceFeed", deployer, FEED_DECIMALS, f"{f.asset} / USD"
        )
    if index > 0:
        out[SEQUENCER_NAME] = await deploy(
            w3, "PriceFeed", deployer, 0, "L2 Sequencer Uptime Status Feed"
        )
    feeds = {f.asset: out[feed_name(f.asset)] for f in feeds_for(index)}
    out |= await deploy_margin(w3, deployer, out, feeds)
    return out


async def _push_first_rounds(
    w3: AsyncWeb3[Any], dep: Deployment, deployer: str, prices: dict[str, Decimal]
) -> None:
    for f in dep.feeds:
        answer = price_answer(prices.get(f.asset, f.default_usd))
        now = await latest_timestamp(w3)
        feed = contract_at(w3, "PriceFeed", dep.contracts[feed_name(f.asset)])
        await send(w3, feed.functions.push(answer, now, now), deployer, f"push {f.asset} round")
    if SEQUENCER_NAME in dep.contracts:
        feed = contract_at(w3, "PriceFeed", dep.contracts[SEQUENCER_NAME])
        since = dep.genesis_time - SEQUENCER_UP_FOR_S
        now = await latest_timestamp(w3)
        await send(w3, feed.functions.push(0, since, now), deployer, "push sequencer round")


async def _seed(w3: AsyncWeb3[Any], dep: Deployment, deployer: str, accounts: list[str]) -> None:
    """Mint each token once for all accounts, then approve and deposit as the accounts."""
    seeds = seeds_for(dep.index)
    decimals = {t.symbol: t.decimals for t in dep.tokens}
    for symbol in dict.fromkeys(s.token for s in seeds):
        mine = [s for s in seeds if s.token == symbol]
        to = [accounts[s.account] for s in mine]
        amounts = [to_raw(s.amount, decimals[symbol]) for s in mine]
        token = contract_at(w3, "ERC20", dep.contracts[symbol])
        await send(w3, token.functions.mint_batch(to, amounts), deployer, f"mint {symbol}")
    approved: set[tuple[str, str, str]] = set()
    for s in seeds:
        if s.place == "wallet":
            continue
        who, raw = accounts[s.account], to_raw(s.amount, decimals[s.token])
        spender = dep.contracts["CollateralVault" if s.place == "vault" else ERC4626_NAME]
        token = contract_at(w3, "ERC20", dep.contracts[s.token])
        if (who, s.token, spender) not in approved:
            what = f"approve {s.token} of account {s.account}"
            await send(w3, token.functions.approve(spender, MAX_UINT256), who, what)
            approved.add((who, s.token, spender))
        if s.place == "vault":
            vault = contract_at(w3, "CollateralVault", spender)
            call = vault.functions.deposit(dep.contracts[s.token], raw)
        else:
            call = contract_at(w3, "ERC4626Vault", spender).functions.deposit(raw, who)
        await send(w3, call, who, f"deposit {s.amount} {s.token} of account {s.account}")
        if s.place == "erc4626_locked":  # no yield yet: one share per unit of assets
            shares = contract_at(w3, "ERC4626Vault", spender)
            vault_addr = dep.contracts["CollateralVault"]
            what = f"lock yvUSDC shares of account {s.account}"
            await send(w3, shares.functions.approve(vault_addr, raw), who, what)
            call = contract_at(w3, "CollateralVault", vault_addr).functions.deposit(spender, raw)
            await send(w3, call, who, what)
    if ERC4626_NAME in dep.contracts:
        usdc = contract_at(w3, "ERC20", dep.contracts[ERC4626_ASSET])
        raw = to_raw(ERC4626_YIELD, 6)
        await send(w3, usdc.functions.mint(dep.contracts[ERC4626_NAME], raw), deployer, "yield")
