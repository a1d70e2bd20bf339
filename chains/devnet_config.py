"""The configuration file the devnet writes (``<dir>/config.toml``), in chains/config.py's schema.

Built from what was deployed, validated with :func:`chains.config.parse_config` before it is
written: a devnet that writes an invalid config is a bug and says so.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w

from chains.config import OmnimarginConfig, parse_config
from chains.devnet_bridge import BRIDGE_CONTRACT, BRIDGE_NAME, cctp_domain
from chains.devnet_deploy import (
    ERC4626_ASSET,
    ERC4626_NAME,
    SEQUENCER_NAME,
    Deployment,
    feed_name,
)
from chains.devnet_margin import (
    MARGIN_GATE,
    PERP_ASSETS,
    PERP_MARKET,
    SIGNER_KEY_FILE,
    write_signer_key,
)
from chains.errors import ConfigError, DevnetError

CONFIG_FILE = "config.toml"
HEARTBEAT_S = 86_400
SEQUENCER_GRACE_S = 3600


#: calls per aggregate3 on the devnet (its Multicall3 takes up to 2,048)
DEVNET_BATCH = 2000


def _number(value: Decimal) -> int | float:
    """TOML has no decimals: integral bounds as integers, the others as short floats."""
    return int(value) if value == value.to_integral_value() else float(value)


def _chain(dep: Deployment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chain_id": dep.node.chain_id,
        "name": dep.node.name,
        "rpc_urls": [dep.node.rpc_url],
        "finality": "latest",
        "confirmations": 0,
        "multicall3": dep.contracts["Multicall3"],
        "multicall3_codehash": dep.multicall3_codehash,
        "l2": dep.node.l2,
        "batch_size": DEVNET_BATCH,
    }
    if dep.node.l2:
        out["sequencer_feed"] = dep.contracts[SEQUENCER_NAME]
        out["sequencer_grace_s"] = SEQUENCER_GRACE_S
    for key, name in (("margin_gate", MARGIN_GATE), ("perp_market", PERP_MARKET)):
        if name in dep.contracts:
            out[key] = dep.contracts[name]
    if PERP_MARKET in dep.contracts:
        fed = {f.asset for f in dep.feeds}
        out["perp_markets"] = [a for a in PERP_ASSETS if a in fed]
    return out


def _tokens(dep: Deployment) -> list[dict[str, Any]]:
    out = []
    for t in dep.tokens:
        row: dict[str, Any] = {
            "chain_id": dep.node.chain_id,
            "address": dep.contracts[t.symbol],
            "symbol": t.symbol,
            "decimals": t.decimals,
            "asset": t.asset,
            "kind": t.kind,
        }
        if t.kind != "native":
            row["bridge"] = dep.bridge
        out.append(row)
    return out


def _feeds(dep: Deployment) -> list[dict[str, Any]]:
    return [
        {
            "chain_id": dep.node.chain_id,
            "address": dep.contracts[feed_name(f.asset)],
            "asset": f.asset,
            "heartbeat_s": HEARTBEAT_S,
            "min_usd": _number(f.min_usd),
            "max_usd": _number(f.max_usd),
        }
        for f in dep.feeds
    ]


def _sources(dep: Deployment) -> list[dict[str, Any]]:
    cid = dep.node.chain_id
    out: list[dict[str, Any]] = [
        {"chain_id": cid, "kind": "vault", "address": dep.contracts["CollateralVault"]},
        {"chain_id": cid, "kind": "erc20_wallet"},
    ]
    if ERC4626_NAME in dep.contracts:
        vault, underlying = dep.contracts[ERC4626_NAME], dep.contracts[ERC4626_ASSET]
        out.append({"chain_id": cid, "kind": "erc4626", "address": vault, "tokens": [underlying]})
        locked_in = dep.contracts["CollateralVault"]
        out.append(
            {
                "chain_id": cid,
                "kind": "erc4626",
                "address": vault,
                "tokens": [underlying],
                "locked_in": locked_in,
            }
        )
    return out


# Illustrative bridge and depeg parameters for the demo, not estimates of any real bridge's risk.
CANONICAL_FAILURE = 0.0005  # per risk horizon
CCTP_FAILURE = 0.0002
BRIDGE_LOSS = 1.0
USDC_DEPEG = {"asset": "USDC", "probability": 0.001, "loss": 0.1}


def _bridges(deps: list[Deployment]) -> list[dict[str, Any]]:
    """The CCTP bridge (when every chain has one) and the canonical bridges the tokens name."""
    out: list[dict[str, Any]] = []
    if len(deps) > 1 and all(BRIDGE_CONTRACT in d.contracts for d in deps):
        out.append(
            {
                "name": BRIDGE_NAME,
                "kind": "cctp",
                "failure_probability": CCTP_FAILURE,
                "loss_given_failure": BRIDGE_LOSS,
                "contracts": {str(d.node.chain_id): d.contracts[BRIDGE_CONTRACT] for d in deps},
                "domains": {str(d.node.chain_id): cctp_domain(d.index) for d in deps},
            }
        )
    canonical = dict.fromkeys(d.bridge for d in deps if any(t.kind != "native" for t in d.tokens))
    for name in canonical:
        out.append(
            {
                "name": name,
                "kind": "canonical",
                "failure_probability": CANONICAL_FAILURE,
                "loss_given_failure": BRIDGE_LOSS,
            }
        )
    return out


def _devnet_table(
    directory: Path, anvil: str, deployer: str, started_at: float, deps: list[Deployment]
) -> dict[str, Any]:
    return {
        "dir": str(directory),
        "anvil": anvil,
        "deployer": deployer,
        "started_at": int(started_at),
        "chains": [
            {
                "chain_id": d.node.chain_id,
                "name": d.node.name,
                "port": d.node.port,
                "pid": d.node.pid,
                "log": d.node.log,
                "contracts": dict(d.contracts),
            }
            for d in deps
        ],
    }


def build_config(
    directory: Path,
    anvil: str,
    deployer: str,
    accounts: list[str],
    started_at: float,
    deps: list[Deployment],
) -> dict[str, Any]:
    """The config as TOML-ready data: chains, tokens, feeds, sources, accounts, [devnet]."""
    return {
        "accounts": accounts,
        "chains": [_chain(d) for d in deps],
        "tokens": [row for d in deps for row in _tokens(d)],
        "feeds": [row for d in deps for row in _feeds(d)],
        "sources": [row for d in deps for row in _sources(d)],
        "bridges": _bridges(deps),
        "depegs": [USDC_DEPEG] if any(t.asset == "USDC" for d in deps for t in d.tokens) else [],
        "signer": {"key_file": str(directory / SIGNER_KEY_FILE)},
        "store_path": str(directory / "state.sqlite"),
        # the margin policy; illustrative settings for the demo (see aggregator/accounts.py)
        "margin": {"mm_alpha": 0.975, "im_alpha": 0.99, "horizon_days": 1.0, "scenarios": 100_000},
        # `omnimargin serve`: a fresh API key per devnet (authorisations need it)
        "service": {
            "epoch_interval_s": 5.0,
            "stale_after_s": 60.0,
            "api_keys": [secrets.token_urlsafe(24)],
        },
        "devnet": _devnet_table(directory, anvil, deployer, started_at, deps),
    }


def write_config(directory: Path, data: dict[str, Any]) -> tuple[Path, OmnimarginConfig]:
    """Validate ``data`` and write it to ``<dir>/config.toml``; return the path and the model."""
    try:
        config = parse_config(data)
    except ConfigError as exc:
        raise DevnetError(f"the devnet built an invalid config (a bug): {exc}") from exc
    write_signer_key(directory)
    path = directory / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# Written by `omnimargin devnet up`; rewritten on every start.\n" + tomli_w.dumps(data)
    )
    os.replace(tmp, path)
    return path, config
