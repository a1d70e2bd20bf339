"""The devnet against real anvil nodes: chains, config, exact seeds, refusals, and stopping."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from chains.compile import load_artifact, runtime_codehash
from chains.config import OmnimarginConfig, load_config
from chains.devnet import (
    advance_prices,
    devnet_down,
    devnet_status,
    devnet_up,
    mint_accounts,
    set_feed,
    set_sequencer,
    warp,
)
from chains.devnet_deploy import (
    DEMO_ACCOUNTS,
    ERC4626_YIELD,
    SEEDS,
    SEQUENCER_UP_FOR_S,
)
from chains.devnet_nodes import STATE_FILE, free_ports, read_state, write_state
from chains.errors import DevnetError

EXPECTED_CHAINS = [
    (31337001, "devnet-eth", False),
    (31337002, "devnet-arb", True),
    (31337003, "devnet-base", True),
]


def web3_of(config: OmnimarginConfig, chain_id: int) -> Web3:
    return Web3(HTTPProvider(config.chain(chain_id).rpc_urls[0], request_kwargs={"timeout": 10}))


def contract(w3: Web3, name: str, address: str) -> Any:
    return w3.eth.contract(
        address=Web3.to_checksum_address(address), abi=list(load_artifact(name).abi)
    )


def token(config: OmnimarginConfig, chain_id: int, symbol: str) -> Any:
    (t,) = [t for t in config.tokens_on(chain_id) if t.symbol == symbol]
    return t


def contracts_of(config: OmnimarginConfig, chain_id: int) -> dict[str, str]:
    assert config.devnet is not None
    (entry,) = [c for c in config.devnet["chains"] if c["chain_id"] == chain_id]
    return dict(entry["contracts"])


def expected(place: str) -> dict[tuple[int, int, str], int]:
    """(account index, chain index, token) -> raw amount the seeds put in ``place``."""
    decimals = {"USDC": 6, "USDC.e": 6, "WBTC": 8, "WETH": 18}
    out: dict[tuple[int, int, str], int] = defaultdict(int)
    for s in SEEDS:
        if s.place == place:
            out[s.account, s.chain, s.token] += int(s.amount.scaleb(decimals[s.token]))
    return out


# --- the shared devnet -------------------------------------------------------------------


def test_three_chains_answer_with_distinct_chain_ids(devnet: Any) -> None:
    config = devnet.config
    assert [(c.chain_id, c.name, c.l2) for c in config.chains] == EXPECTED_CHAINS
    answered = [web3_of(config, c.chain_id).eth.chain_id for c in config.chains]
    assert answered == [cid for cid, _, _ in EXPECTED_CHAINS]
    ports = {c.rpc_urls[0] for c in config.chains}
    assert len(ports) == 3


def test_config_validates_and_pins_multicall3_code(devnet: Any) -> None:
    config = devnet.config
    assert load_config(devnet.directory / "config.toml") == config
    for chain in config.chains:
        assert chain.finality == "latest" and chain.confirmations == 0
        code = web3_of(config, chain.chain_id).eth.get_code(chain.multicall3)
        assert len(code) > 0
        assert chain.multicall3_codehash == "0x" + keccak(bytes(code)).hex()
        assert chain.multicall3_codehash == runtime_codehash("Multicall3")
        if chain.l2:
            assert chain.sequencer_feed is not None and chain.sequencer_grace_s == 3600
    assert len(config.accounts) == len(DEMO_ACCOUNTS)
    assert {f.asset for f in config.feeds_on(31337001)} == {"ETH", "BTC", "USDC", "USDT", "LINK"}
    assert {f.asset for f in config.feeds_on(31337003)} == {"ETH", "BTC", "USDC", "LINK"}
    for cid in (31337001, 31337002, 31337003):  # five tokens on every chain
        assert len(config.tokens_on(cid)) == 5
    usdc_e = token(config, 31337002, "USDC.e")
    assert (usdc_e.kind, usdc_e.bridge, usdc_e.asset) == (
        "canonical_bridge",
        "canonical-arb",
        "USDC",
    )
    kinds = [(s.chain_id, s.kind.value) for s in config.sources]
    assert (31337003, "erc4626") in kinds and (31337002, "erc4626") not in kinds


def test_contract_addresses_differ_between_chains(devnet: Any) -> None:
    usdc = {token(devnet.config, c.chain_id, "USDC").address for c in devnet.config.chains}
    assert len(usdc) == 3


def _anvil_accounts(config: OmnimarginConfig) -> list[str]:
    return [str(a) for a in web3_of(config, 31337001).eth.accounts]


@pytest.mark.parametrize(("place"), ["vault", "wallet"])
def test_seeded_balances_are_exact(devnet: Any, place: str) -> None:
    config = devnet.config
    accounts = _anvil_accounts(config)
    assert config.accounts == [accounts[i] for i in DEMO_ACCOUNTS]
    want = expected(place)
    for ci, chain in enumerate(config.chains):
        w3 = web3_of(config, chain.chain_id)
        vault = contract(
            w3, "CollateralVault", contracts_of(config, chain.chain_id)["CollateralVault"]
        )
        for t in config.tokens_on(chain.chain_id):
            erc20 = contract(w3, "ERC20", t.address)
            assert erc20.functions.decimals().call() == t.decimals
            for a in DEMO_ACCOUNTS:
                if place == "vault":
                    got = vault.functions.collateral(accounts[a], t.address).call()
                else:
                    got = erc20.functions.balanceOf(accounts[a]).call()
                assert got == want.get((a, ci, t.symbol), 0), (place, a, chain.name, t.symbol)


def test_seeds_with_6_8_18_decimals_to_the_last_unit(devnet: Any) -> None:
    config = devnet.config
    a1, a2 = _anvil_accounts(config)[1:3]
    eth = web3_of(config, 31337001)
    vault = contract(eth, "CollateralVault", contracts_of(config, 31337001)["CollateralVault"])
    weth, wbtc = token(config, 31337001, "WETH"), token(config, 31337001, "WBTC")
    assert vault.functions.collateral(a1, weth.address).call() == 12_345678901234567891
    assert vault.functions.collateral(a2, wbtc.address).call() == 51234567
    base = web3_of(config, 31337003)
    vault3 = contract(base, "CollateralVault", contracts_of(config, 31337003)["CollateralVault"])
    usdc = token(config, 31337003, "USDC")
    assert vault3.functions.collateral(a1, usdc.address).call() == 25000_123456


def test_account_1_is_on_chains_1_and_3_only(devnet: Any) -> None:
    config = devnet.config
    a1 = config.accounts[0]
    w3 = web3_of(config, 31337002)
    vault = contract(w3, "CollateralVault", contracts_of(config, 31337002)["CollateralVault"])
    for t in config.tokens_on(31337002):
        assert contract(w3, "ERC20", t.address).functions.balanceOf(a1).call() == 0
        assert vault.functions.collateral(a1, t.address).call() == 0
    assert {s.chain for s in SEEDS if s.account == 1} == {0, 2}


def test_erc4626_shares_are_worth_more_than_deposited(devnet: Any) -> None:
    config = devnet.config
    w3 = web3_of(config, 31337003)
    wallet, locked = sorted(
        (s for s in config.sources_on(31337003) if s.kind.value == "erc4626"),
        key=lambda s: s.locked_in is not None,
    )
    assert wallet.address is not None and wallet.address == locked.address
    assert wallet.tokens == locked.tokens == [token(config, 31337003, "USDC").address]
    assert locked.locked_in == contracts_of(config, 31337003)["CollateralVault"]
    yv = contract(w3, "ERC4626Vault", wallet.address)
    vault = contract(w3, "CollateralVault", locked.locked_in)
    held, in_vault = expected("erc4626"), expected("erc4626_locked")
    total = sum(held.values()) + sum(in_vault.values())
    for i, account in zip(DEMO_ACCOUNTS, config.accounts, strict=True):
        shares = yv.functions.balanceOf(account).call()
        assert shares == held.get((i, 2, "USDC"), 0)
        assert vault.functions.collateral(account, yv.address).call() == in_vault.get(
            (i, 2, "USDC"), 0
        )
        shares += in_vault.get((i, 2, "USDC"), 0)
        yield_share = shares * int(ERC4626_YIELD.scaleb(6)) // total
        assert yv.functions.convertToAssets(shares).call() == shares + yield_share


def test_feeds_have_a_first_round_and_sequencers_are_up(devnet: Any) -> None:
    config = devnet.config
    for chain in config.chains:
        w3 = web3_of(config, chain.chain_id)
        latest = w3.eth.get_block("latest")
        for f in config.feeds_on(chain.chain_id):
            feed = contract(w3, "PriceFeed", f.address)
            assert feed.functions.decimals().call() == 8
            _, answer, started, updated, _ = feed.functions.latestRoundData().call()
            assert 0 < updated <= latest["timestamp"] and started == updated
            assert f.min_usd < Decimal(answer).scaleb(-8) < f.max_usd
        if chain.sequencer_feed:
            seq = contract(w3, "PriceFeed", chain.sequencer_feed)
            _, answer, started, updated, _ = seq.functions.latestRoundData().call()
            genesis = w3.eth.get_block(0)["timestamp"]
            assert answer == 0 and started == genesis - SEQUENCER_UP_FOR_S
    btc = contract(web3_of(config, 31337002), "PriceFeed", config.feeds_on(31337002)[1].address)
    assert btc.functions.latestAnswer().call() == 95057_53906250  # the last close, 8 decimals


def test_status_lists_running_nodes_with_blocks(devnet: Any) -> None:
    statuses = asyncio.run(devnet_status(devnet.directory))
    assert [s.node.chain_id for s in statuses] == [cid for cid, _, _ in EXPECTED_CHAINS]
    assert all(s.running and s.block_number and s.block_number > 0 for s in statuses)
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("omnimargin")),
            "devnet",
            "status",
            "--json",
            "--dir",
            str(devnet.directory),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    chains = json.loads(out.stdout)["chains"]
    assert [(c["chain_id"], c["running"]) for c in chains] == [
        (s.node.chain_id, True) for s in statuses
    ]
    assert all(c["block"] >= s.block_number for c, s in zip(chains, statuses, strict=True))


# --- refusals ------------------------------------------------------------------------------


def test_starting_twice_in_the_same_dir_fails_clearly(devnet: Any) -> None:
    before = read_state(devnet.directory)
    with pytest.raises(DevnetError, match=r"devnet already running in .* \(pids \d+, \d+, \d+\)"):
        asyncio.run(devnet_up(devnet.directory, 3, ports=free_ports(3)))
    assert read_state(devnet.directory) == before
    assert web3_of(devnet.config, 31337001).eth.chain_id == 31337001


def test_a_port_in_use_fails_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevnetError, match=rf"port {port} in use on 127\.0\.0\.1"):
            asyncio.run(devnet_up(tmp_path, 1, ports=[port]))
    assert not (tmp_path / STATE_FILE).exists()


def test_bad_chain_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DevnetError, match="chains: must be between 1 and 9, got 0"):
        asyncio.run(devnet_up(tmp_path, 0))


# --- stopping -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_down_stops_only_our_pids(devnet: Any, devnet_factory: Any) -> None:
    info = devnet_factory(1)
    (mine,) = info.nodes
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    shared = read_state(devnet.directory)
    assert shared is not None
    shared_pid = shared["nodes"][0]["pid"]
    try:
        state = read_state(info.directory)
        assert state is not None
        imposters = [
            dict(state["nodes"][0], pid=decoy.pid),  # a recycled pid: not anvil
            dict(state["nodes"][0], pid=shared_pid, port=1),  # anvil, but not on our port
        ]
        write_state(info.directory, dict(state, nodes=state["nodes"] + imposters))
        stopped = devnet_down(info.directory)
        assert [n.pid for n in stopped] == [mine.pid]
        assert not _alive(mine.pid)
        assert decoy.poll() is None and _alive(shared_pid)
        assert web3_of(devnet.config, 31337001).eth.chain_id == 31337001
        assert not (info.directory / STATE_FILE).exists()
        assert not (info.directory / "config.toml").exists()
    finally:
        decoy.kill()
        decoy.wait()
    with pytest.raises(DevnetError, match="no devnet recorded in"):
        devnet_down(info.directory)


def test_a_dead_devnet_is_replaced(devnet_factory: Any, tmp_path: Path) -> None:
    info = devnet_factory(1, tmp_path / "dn")
    (node,) = info.nodes
    os.kill(node.pid, 9)
    deadline = time.monotonic() + 5
    while _alive(node.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    again = devnet_factory(1, info.directory)
    assert again.nodes[0].pid != node.pid


# --- controls, on a devnet of their own ------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(devnet_factory: Any) -> OmnimarginConfig:
    config: OmnimarginConfig = devnet_factory(2, start_day=-3).config
    return config


def _round(config: OmnimarginConfig, chain_id: int, address: str) -> tuple[int, ...]:
    feed = contract(web3_of(config, chain_id), "PriceFeed", address)
    return tuple(feed.functions.latestRoundData().call())


def test_advance_pushes_the_next_real_closes(scratch: OmnimarginConfig) -> None:
    prices = asyncio.run(advance_prices(scratch, days=1))
    assert prices["BTC"] == Decimal("97437.5546875")  # 2025-02-10
    prices = asyncio.run(advance_prices(scratch, days=1, assets=["ETH"]))
    assert prices == {"ETH": Decimal("2589.8212890625")}  # 2025-02-11
    for f in scratch.feeds:
        _, answer, _, _, _ = _round(scratch, f.chain_id, f.address)
        want = {"BTC": 97437_55468750, "ETH": 2589_82128906}.get(f.asset)
        if want is not None:
            assert answer == want
    past_end = asyncio.run(advance_prices(scratch, days=1, assets=["ETH"]))
    ratio = Decimal("2632.308349609375") / Decimal("2622.211181640625")  # first daily return
    assert abs(past_end["ETH"] - Decimal("2589.8212890625") * ratio) < Decimal("1e-8")


def test_set_feed_and_sequencer_produce_bad_states(scratch: OmnimarginConfig) -> None:
    eth = next(f for f in scratch.feeds_on(31337002) if f.asset == "ETH")
    asyncio.run(set_feed(scratch, 31337002, "ETH", answer=-5, updated_at=0, started_at=7))
    assert _round(scratch, 31337002, eth.address)[1:4] == (-5, 7, 0)
    asyncio.run(set_feed(scratch, 31337002, "ETH", price=Decimal("3000.5")))
    assert _round(scratch, 31337002, eth.address)[1] == 3000_50000000
    seq = scratch.chain(31337002).sequencer_feed
    assert seq is not None
    asyncio.run(set_sequencer(scratch, 31337002, up=False, since=1234))
    assert _round(scratch, 31337002, seq)[1:3] == (1, 1234)
    with pytest.raises(DevnetError, match="not an L2"):
        asyncio.run(set_sequencer(scratch, 31337001, up=True, since=0))


def test_warp_moves_every_chain_clock(scratch: OmnimarginConfig) -> None:
    before = [
        web3_of(scratch, c.chain_id).eth.get_block("latest")["timestamp"] for c in scratch.chains
    ]
    after = asyncio.run(warp(scratch, 3600))
    for chain, t0 in zip(scratch.chains, before, strict=True):
        assert after[chain.chain_id] >= t0 + 3600


def test_mint_accounts_seeds_1000_accounts_x_5_tokens_fast(scratch: OmnimarginConfig) -> None:
    accounts = [Account.create().address for _ in range(1000)]
    amounts = [10**6 + i for i in range(1000)]
    jobs = [(31337001, s) for s in ("USDC", "WBTC", "WETH")] + [
        (31337002, s) for s in ("USDC", "USDC.e")
    ]

    async def run() -> None:
        await asyncio.gather(*(mint_accounts(scratch, c, s, accounts, amounts) for c, s in jobs))

    t0 = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"1,000 accounts x 5 tokens took {elapsed:.1f} s"
    for chain_id, symbol in jobs:
        erc20 = contract(
            web3_of(scratch, chain_id), "ERC20", token(scratch, chain_id, symbol).address
        )
        assert erc20.functions.balanceOf(accounts[0]).call() == amounts[0]
        assert erc20.functions.balanceOf(accounts[-1]).call() == amounts[-1]


def test_mint_accounts_refuses_mismatched_lists(scratch: OmnimarginConfig) -> None:
    with pytest.raises(DevnetError, match="2 accounts but 1 amounts"):
        asyncio.run(mint_accounts(scratch, 31337001, "USDC", [scratch.accounts[0]] * 2, [1]))


def test_only_a_minter_may_mint_batch(scratch: OmnimarginConfig) -> None:
    w3 = web3_of(scratch, 31337001)
    usdc = contract(w3, "ERC20", token(scratch, 31337001, "USDC").address)
    outsider = scratch.accounts[0]
    with pytest.raises(ContractLogicError, match="only minter"):
        usdc.functions.mint_batch([outsider], [1]).transact({"from": outsider})
