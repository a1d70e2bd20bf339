"""Drive a running devnet into the states tests and demos need: prices, oracles, time, balances.

Every function takes the devnet's config (its ``[devnet]`` table names the directory and the
deployer) and sends transactions from anvil's unlocked deployer account.

Price replay: the feeds start at the close of one day of a real daily history (the last day by
default); ``advance_prices`` pushes the following days' closes. Past the last day the history's
daily returns are replayed from its start, chained onto the last price, so prices stay
continuous.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from web3.types import RPCEndpoint

from chains.config import FeedConfig, OmnimarginConfig
from chains.devnet_deploy import FEED_DECIMALS, price_answer
from chains.devnet_nodes import read_state, write_state
from chains.devnet_web3 import connect, contract_at, latest_timestamp, send
from chains.errors import DevnetError
from chains.types import SourceKind

History = dict[str, list[tuple[str, Decimal]]]
"""Asset -> its daily closes ``[(ISO date, close in USD), ...]`` in increasing date order."""

HISTORY_FILE = "history.json"
MINT_BATCH = 1000  # ERC20.mint_batch's bound


def initial_replay(history: History, start_day: int) -> dict[str, Any]:
    """The replay state at start: each asset's day index and price (close at ``start_day``)."""
    day: dict[str, int] = {}
    price: dict[str, str] = {}
    for asset, rows in history.items():
        n = len(rows)
        index = start_day if start_day >= 0 else n + start_day
        if not 0 <= index < n:
            raise DevnetError(f"start_day: {start_day} is outside {asset}'s {n} days of history")
        day[asset], price[asset] = index, str(rows[index][1])
    return {"day": day, "price": price}


def replay_step(closes: list[Decimal], day: int, price: Decimal) -> tuple[int, Decimal]:
    """One day forward: the next real close, or past the end the next replayed daily return."""
    nxt = day + 1
    if nxt < len(closes):
        return nxt, closes[nxt]
    if len(closes) < 2:
        raise DevnetError("history: need at least 2 days to replay returns")
    m = 1 + (nxt - len(closes)) % (len(closes) - 1)
    moved = price * closes[m] / closes[m - 1]
    return nxt, moved.quantize(Decimal(1).scaleb(-FEED_DECIMALS))


def _devnet(config: OmnimarginConfig) -> dict[str, Any]:
    if not config.devnet:
        raise DevnetError("config has no [devnet] table: these controls work on a devnet only")
    return config.devnet


def _feed(config: OmnimarginConfig, chain_id: int, asset: str) -> FeedConfig:
    for f in config.feeds_on(chain_id):
        if f.asset == asset:
            return f
    raise DevnetError(f"no {asset} feed on chain {chain_id}")


def load_saved_history(directory: Path) -> History:
    path = directory / HISTORY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DevnetError(f"{path}: cannot be read ({exc})") from None
    return {a: [(d, Decimal(c)) for d, c in rows] for a, rows in data.items()}


async def _push(config: OmnimarginConfig, chain_id: int, pushes: list[tuple[str, int]]) -> None:
    """Push ``(feed address, answer)`` rounds on one chain, stamped with its latest block time."""
    deployer = _devnet(config)["deployer"]
    async with connect(config.chain(chain_id).rpc_urls[0]) as w3:
        now = await latest_timestamp(w3)
        for address, answer in pushes:
            feed = contract_at(w3, "PriceFeed", address)
            what = f"push {answer} to feed {address} on chain {chain_id}"
            await send(w3, feed.functions.push(answer, now, now), deployer, what)


async def advance_prices(
    config: OmnimarginConfig,
    days: int = 1,
    assets: list[str] | None = None,
    history: History | None = None,
) -> dict[str, Decimal]:
    """Move the feeds of ``assets`` (default: all with history) ``days`` days forward.

    Every feed of an asset, on every chain, gets one new round with the new price and
    updatedAt = startedAt = that chain's latest block time. Returns the new prices.
    """
    if days < 1:
        raise DevnetError(f"days: must be at least 1, got {days}")
    directory = Path(_devnet(config)["dir"])
    state = read_state(directory)
    if state is None or "replay" not in state:
        raise DevnetError(f"no running devnet recorded in {directory}")
    history = history if history is not None else load_saved_history(directory)
    replay = state["replay"]
    feed_assets = list(dict.fromkeys(f.asset for f in config.feeds))
    chosen = assets if assets is not None else [a for a in feed_assets if a in history]
    missing = [a for a in chosen if a not in history or a not in feed_assets]
    if missing:
        raise DevnetError(f"assets: no history or no feed for {', '.join(missing)}")
    moved: dict[str, Decimal] = {}
    for asset in chosen:
        closes = [c for _, c in history[asset]]
        day = replay["day"].get(asset, len(closes) - 1)
        price = Decimal(replay["price"].get(asset, closes[day]))
        for _ in range(days):
            day, price = replay_step(closes, day, price)
        replay["day"][asset], replay["price"][asset] = day, str(price)
        moved[asset] = price
    pushes: dict[int, list[tuple[str, int]]] = {}
    for f in config.feeds:
        if f.asset in moved:
            pushes.setdefault(f.chain_id, []).append((f.address, price_answer(moved[f.asset])))
    await asyncio.gather(*(_push(config, cid, p) for cid, p in pushes.items()))
    write_state(directory, state)
    return moved


async def shock(config: OmnimarginConfig, asset: str, pct: Decimal) -> dict[int, Decimal]:
    """Move ``asset``'s price by ``pct`` percent on every chain at once (one new round on each
    of its feeds, updatedAt = that chain's latest block time), from the devnet's replay price;
    later ``advance_prices`` steps go on from the shocked price. Returns chain id -> price."""
    if not Decimal(-100) < pct:
        raise DevnetError(f"pct: must be above -100, got {pct}")
    directory = Path(_devnet(config)["dir"])
    state = read_state(directory)
    if state is None or "replay" not in state:
        raise DevnetError(f"no running devnet recorded in {directory}")
    feeds = [f for f in config.feeds if f.asset == asset]
    if not feeds:
        known = sorted({f.asset for f in config.feeds})
        raise DevnetError(f"asset: no {asset!r} feed on this devnet (feeds: {', '.join(known)})")
    replay = state["replay"]
    if asset not in replay["price"]:
        raise DevnetError(f"asset: {asset} has no replay price to move")
    before = Decimal(replay["price"][asset])
    price = (before * (1 + pct / 100)).quantize(Decimal(1).scaleb(-FEED_DECIMALS))
    if price <= 0:
        raise DevnetError(f"pct: {pct} % takes {asset} to {price}, not a price")
    pushes: dict[int, list[tuple[str, int]]] = {}
    for f in feeds:
        pushes.setdefault(f.chain_id, []).append((f.address, price_answer(price)))
    await asyncio.gather(*(_push(config, cid, p) for cid, p in pushes.items()))
    replay["price"][asset] = str(price)
    write_state(directory, state)
    return {cid: price for cid in pushes}


async def set_feed(
    config: OmnimarginConfig,
    chain_id: int,
    asset: str,
    *,
    answer: int | None = None,
    price: Decimal | None = None,
    updated_at: int | None = None,
    started_at: int | None = None,
) -> int:
    """Push one round exactly as given: raw ``answer`` (8 decimals) or a USD ``price``.

    ``updated_at`` defaults to the chain's latest block time, ``started_at`` to ``updated_at``;
    any value goes (0, in the future, negative answers), so readers can be tested on bad
    rounds. Returns the new round id.
    """
    if (answer is None) == (price is None):
        raise DevnetError("set_feed: give exactly one of answer and price")
    raw = answer if answer is not None else price_answer(price or Decimal(0))
    feed = _feed(config, chain_id, asset)
    deployer = _devnet(config)["deployer"]
    async with connect(config.chain(chain_id).rpc_urls[0]) as w3:
        updated = updated_at if updated_at is not None else await latest_timestamp(w3)
        started = started_at if started_at is not None else updated
        contract = contract_at(w3, "PriceFeed", feed.address)
        what = f"set {asset} feed on chain {chain_id}"
        await send(w3, contract.functions.push(raw, started, updated), deployer, what)
        return int(await contract.functions.latestRound().call())


async def set_sequencer(config: OmnimarginConfig, chain_id: int, up: bool, since: int) -> None:
    """Set an L2's sequencer uptime feed: up (answer 0) or down (1), status changed at ``since``."""
    chain = config.chain(chain_id)
    if chain.sequencer_feed is None:
        raise DevnetError(f"chain {chain_id} has no sequencer feed (not an L2)")
    deployer = _devnet(config)["deployer"]
    async with connect(chain.rpc_urls[0]) as w3:
        now = await latest_timestamp(w3)
        feed = contract_at(w3, "PriceFeed", chain.sequencer_feed)
        what = f"set sequencer {'up' if up else 'down'} on chain {chain_id}"
        await send(w3, feed.functions.push(0 if up else 1, since, now), deployer, what)


async def warp(config: OmnimarginConfig, seconds: int) -> dict[int, int]:
    """Move every chain's clock ``seconds`` forward and mine a block; chain id -> new time."""
    if seconds < 0:
        raise DevnetError(f"seconds: must be >= 0, got {seconds}")

    async def one(url: str) -> int:
        async with connect(url) as w3:
            await w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
            await w3.provider.make_request(RPCEndpoint("evm_mine"), [])
            return await latest_timestamp(w3)

    chains = config.chains
    times = await asyncio.gather(*(one(c.rpc_urls[0]) for c in chains))
    return {c.chain_id: t for c, t in zip(chains, times, strict=True)}


async def mint_accounts(
    config: OmnimarginConfig,
    chain_id: int,
    token_symbol: str,
    accounts: list[str],
    amounts: list[int],
    locked: bool = False,
) -> None:
    """Mint raw ``amounts[i]`` of a token to ``accounts[i]``, 1,000 per transaction; with
    ``locked``, into the chain's CollateralVault as their collateral (what backs margin)
    instead of their wallets."""
    if len(accounts) != len(amounts):
        raise DevnetError(f"mint_accounts: {len(accounts)} accounts but {len(amounts)} amounts")
    tokens = [t for t in config.tokens_on(chain_id) if t.symbol == token_symbol]
    if not tokens:
        raise DevnetError(f"no token {token_symbol} on chain {chain_id}")
    deployer = _devnet(config)["deployer"]
    async with connect(config.chain(chain_id).rpc_urls[0]) as w3:
        token = contract_at(w3, "ERC20", tokens[0].address)
        vaults = [s.address for s in config.sources_on(chain_id) if s.kind is SourceKind.VAULT]
        if locked and not vaults:
            raise DevnetError(f"chain {chain_id} has no CollateralVault to lock {token_symbol} in")
        for i in range(0, len(accounts), MINT_BATCH):
            to = [to_checksum_address(a) for a in accounts[i : i + MINT_BATCH]]
            raw = amounts[i : i + MINT_BATCH]
            what = f"mint {token_symbol} to {len(to)} accounts on chain {chain_id}"
            if not locked:
                await send(w3, token.functions.mint_batch(to, raw), deployer, what)
                continue
            vault = contract_at(w3, "CollateralVault", str(vaults[0]))
            await send(w3, token.functions.mint(deployer, sum(raw)), deployer, what)
            await send(w3, token.functions.approve(vault.address, sum(raw)), deployer, what)
            call = vault.functions.deposit_for_many(tokens[0].address, to, raw)
            await send(w3, call, deployer, f"lock {token_symbol} of {len(to)} accounts")
