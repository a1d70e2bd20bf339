"""The omnimargin configuration file (TOML), validated by pydantic.

It lists chains, tokens, price feeds, collateral sources, bridges and depegs; the devnet writes
one, and a real deployment is the same file with other RPC URLs and addresses (see
``examples/mainnet.toml``).
Every problem is reported as ``key: reason`` with the key's path in the file, all at once.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from chains.addresses import ChecksumAddress
from chains.errors import ConfigError
from chains.types import SourceKind

CONFIG_ENV = "OMNIMARGIN_CONFIG"


def _hash32(value: str) -> str:
    v = value.lower()
    if not (v.startswith("0x") and len(v) == 66 and all(c in "0123456789abcdef" for c in v[2:])):
        raise ValueError(f"not a 32-byte hex hash: {value!r}")
    return v


def _rpc_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


AddressField = ChecksumAddress
Hash32 = Annotated[str, AfterValidator(_hash32)]
RpcUrl = Annotated[str, AfterValidator(_rpc_url)]
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChainConfig(_Strict):
    """One EVM chain: how to reach it and how to pin a trustworthy block."""

    chain_id: Annotated[int, Field(gt=0, lt=2**64)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    rpc_urls: Annotated[list[RpcUrl], Field(min_length=1)]
    finality: Literal["finalized", "safe", "latest"] = "finalized"
    confirmations: Annotated[int, Field(ge=0, le=10_000)] = 0
    multicall3: AddressField
    multicall3_codehash: Hash32 | None = None
    l2: bool = False
    sequencer_feed: AddressField | None = None
    sequencer_grace_s: Annotated[int, Field(ge=0)] = 3600
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    backoff_s: Annotated[float, Field(ge=0, le=10)] = 0.2
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500  # calls per aggregate3
    margin_gate: AddressField | None = None  # MarginGate verifying attestations for this chain
    perp_market: AddressField | None = None  # PerpMarket whose positions snapshots read
    perp_markets: list[Symbol] | None = (
        None  # its markets (canonical assets); default: every fed asset
    )

    @model_validator(mode="after")
    def _l2_has_sequencer(self) -> ChainConfig:
        if self.l2 and self.sequencer_feed is None:
            raise ValueError("an L2 chain needs sequencer_feed")
        return self


class TokenConfig(_Strict):
    """A token on one chain, and the canonical asset it represents."""

    chain_id: int
    address: AddressField
    symbol: Symbol
    decimals: Annotated[int, Field(ge=0, le=36)]
    asset: Symbol
    kind: Literal["native", "canonical_bridge", "third_party_bridge"] = "native"
    bridge: Symbol | None = None  # a [[bridges]] name; required unless kind is native

    @model_validator(mode="after")
    def _bridged_names_bridge(self) -> TokenConfig:
        if self.kind != "native" and self.bridge is None:
            raise ValueError(f"a {self.kind} token needs bridge")
        if self.kind == "native" and self.bridge is not None:
            raise ValueError(f"a native token names no bridge (got {self.bridge!r})")
        return self


class FeedConfig(_Strict):
    """A price feed (AggregatorV3Interface) for one canonical asset, in USD."""

    chain_id: int
    address: AddressField
    asset: Symbol
    heartbeat_s: Annotated[int, Field(gt=0)]
    staleness_s: Annotated[int, Field(gt=0)] | None = None  # default: heartbeat + 10%
    min_usd: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    max_usd: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _bounds(self) -> FeedConfig:
        if self.min_usd >= self.max_usd:
            raise ValueError("min_usd must be below max_usd")
        return self

    @property
    def staleness_limit(self) -> int:
        return self.staleness_s if self.staleness_s is not None else self.heartbeat_s * 11 // 10


class SourceConfig(_Strict):
    """Where collateral sits: a vault, plain wallet balances, or ERC-4626 vault shares."""

    chain_id: int
    kind: SourceKind
    address: AddressField | None = None
    tokens: list[AddressField] | None = None  # default: every token of the chain
    # erc4626 only: the CollateralVault its shares are locked in (read there, not in wallets)
    locked_in: AddressField | None = None

    @model_validator(mode="after")
    def _address_for_contracts(self) -> SourceConfig:
        if self.kind is not SourceKind.ERC20_WALLET and self.address is None:
            raise ValueError(f"a {self.kind.value} source needs address")
        if self.kind is SourceKind.ERC4626 and (self.tokens is None or len(self.tokens) != 1):
            raise ValueError("an erc4626 source needs tokens = [its underlying asset]")
        if self.kind is SourceKind.VAULT_PENDING:
            raise ValueError("vault_pending is read from a vault source, not configured")
        if self.locked_in is not None and self.kind is not SourceKind.ERC4626:
            raise ValueError("locked_in is for erc4626 sources (shares locked in a vault)")
        return self

    @property
    def locked(self) -> bool:
        """Whether what this source holds cannot leave without the engine's consent (a
        CollateralVault's balances, or ERC-4626 shares locked in one): only that backs
        margin (docs/ARCHITECTURE.md, "Collateral that cannot leave")."""
        return self.kind is SourceKind.VAULT or self.locked_in is not None


class SignerConfig(_Strict):
    """Where the attestation signer's private key is: a file (mode 0600) or an environment
    variable; exactly one. The key itself is never in the config."""

    key_file: str | None = None
    key_env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SignerConfig:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_file and key_env")
        return self


Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class BridgeConfig(_Strict):
    """A bridge and its risk: it fails within the risk horizon with ``failure_probability``, and
    then every representation bridged through it (and every transfer in flight over it) loses
    ``loss_given_failure`` of its value (bridge_adapters/risk.py).

    For ``kind = "cctp"`` (Circle CCTP v1, or the devnet's CCTPBridge), ``contracts`` is the
    TokenMessenger per chain (whose ``DepositForBurn`` logs are read), ``transmitters`` the
    MessageTransmitter per chain (``usedNonces``; default: the same address, as on the devnet),
    ``domains`` CCTP's domain per chain; logs are read over the last ``lookback_blocks`` before
    each pinned block, ``log_chunk_blocks`` per ``eth_getLogs``; a transfer still in flight
    ``timeout_s`` after its burn is flagged expired (chains/inflight.py).
    """

    name: Symbol
    kind: Literal["cctp", "canonical", "third_party"]
    failure_probability: Probability
    loss_given_failure: Probability
    contracts: dict[int, AddressField] = Field(default_factory=dict)
    transmitters: dict[int, AddressField] = Field(default_factory=dict)
    domains: dict[int, Annotated[int, Field(ge=0, lt=2**32)]] = Field(default_factory=dict)
    lookback_blocks: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    log_chunk_blocks: Annotated[int, Field(ge=1, le=1_000_000)] = 2_000
    timeout_s: Annotated[int, Field(gt=0)] = 86_400

    @model_validator(mode="after")
    def _cctp_has_domains(self) -> BridgeConfig:
        if self.kind != "cctp":
            if self.contracts or self.transmitters or self.domains:
                raise ValueError(f"a {self.kind} bridge takes no contracts/transmitters/domains")
            return self
        if set(self.contracts) != set(self.domains):
            raise ValueError("contracts and domains must name the same chains")
        if len(self.contracts) < 2:
            raise ValueError("a cctp bridge needs contracts on at least two chains")
        if not set(self.transmitters) <= set(self.contracts):
            raise ValueError("transmitters names a chain that contracts does not")
        if len(set(self.domains.values())) != len(self.domains):
            raise ValueError(f"two chains share a domain in {self.domains}")
        return self

    def transmitter(self, chain_id: int) -> str:
        """The MessageTransmitter (``usedNonces``) on ``chain_id``."""
        return self.transmitters.get(chain_id) or self.contracts[chain_id]


class DepegConfig(_Strict):
    """A stablecoin depeg: with ``probability`` within the horizon, ``asset`` (every
    representation of it, in flight too) loses ``loss`` of its value."""

    asset: Symbol
    probability: Probability
    loss: Probability


class OmnimarginConfig(_Strict):
    """The whole file."""

    chains: Annotated[list[ChainConfig], Field(min_length=1)]
    tokens: list[TokenConfig] = Field(default_factory=list)
    feeds: list[FeedConfig] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    accounts: list[AddressField] = Field(default_factory=list)
    bridges: list[BridgeConfig] = Field(default_factory=list)
    depegs: list[DepegConfig] = Field(default_factory=list)
    signer: SignerConfig | None = None
    margin: dict[str, Any] | None = None  # the aggregator's margin policy (it validates it)
    liquidation: dict[str, Any] | None = None  # [liquidation] (aggregator/liquidation.py)
    store_path: str | None = None  # SQLite file of reservations and used nonces
    service: dict[str, Any] | None = None  # `omnimargin serve` settings (the service validates)
    alerts: list[dict[str, Any]] | None = None  # margin calls of `serve` (aggregator.alerts)
    devnet: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cross_references(self) -> OmnimarginConfig:
        problems = cross_reference_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def chain(self, chain_id: int) -> ChainConfig:
        for c in self.chains:
            if c.chain_id == chain_id:
                return c
        raise KeyError(chain_id)

    def tokens_on(self, chain_id: int) -> list[TokenConfig]:
        return [t for t in self.tokens if t.chain_id == chain_id]

    def feeds_on(self, chain_id: int) -> list[FeedConfig]:
        return [f for f in self.feeds if f.chain_id == chain_id]

    def sources_on(self, chain_id: int) -> list[SourceConfig]:
        return [s for s in self.sources if s.chain_id == chain_id]

    def bridge(self, name: str) -> BridgeConfig:
        for b in self.bridges:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.bridges) or "none"
        raise KeyError(f"bridge {name!r} is not configured (known: {known})")


def cross_reference_problems(cfg: OmnimarginConfig) -> list[str]:
    """Problems that span sections: unknown chains, duplicates, sources naming unknown tokens."""
    problems: list[str] = []
    ids = [c.chain_id for c in cfg.chains]
    for i, cid in enumerate(ids):
        if cid in ids[:i]:
            problems.append(f"chains[{i}].chain_id: duplicate chain id {cid}")
    known = set(ids)
    for section in ("tokens", "feeds", "sources"):
        for i, item in enumerate(getattr(cfg, section)):
            if item.chain_id not in known:
                problems.append(f"{section}[{i}].chain_id: unknown chain {item.chain_id}")
    seen: set[tuple[int, str]] = set()
    for i, t in enumerate(cfg.tokens):
        if (t.chain_id, t.address) in seen:
            problems.append(f"tokens[{i}].address: token listed twice on chain {t.chain_id}")
        seen.add((t.chain_id, t.address))
    for i, s in enumerate(cfg.sources):
        for j, tok in enumerate(s.tokens or []):
            if (s.chain_id, tok) not in seen:
                problems.append(
                    f"sources[{i}].tokens[{j}]: {tok} is not a token of chain {s.chain_id}"
                )
    return problems + _bridge_problems(cfg, known)


def _bridge_problems(cfg: OmnimarginConfig, chains: set[int]) -> list[str]:
    """Bridges and depegs: unique names, known chains, tokens naming configured bridges."""
    problems: list[str] = []
    names = [b.name for b in cfg.bridges]
    for i, b in enumerate(cfg.bridges):
        if b.name in names[:i]:
            problems.append(f"bridges[{i}].name: duplicate bridge {b.name!r}")
        for cid in sorted(set(b.contracts) - chains):
            problems.append(f"bridges[{i}].contracts: unknown chain {cid}")
    # every bridge a token names must be configured, or its risk would silently be zero
    for i, t in enumerate(cfg.tokens):
        if t.bridge is not None and t.bridge not in names:
            problems.append(
                f"tokens[{i}].bridge: unknown bridge {t.bridge!r} (add it to [[bridges]])"
            )
    assets = {t.asset for t in cfg.tokens}
    depegged = [d.asset for d in cfg.depegs]
    for i, d in enumerate(cfg.depegs):
        if d.asset in depegged[:i]:
            problems.append(f"depegs[{i}].asset: duplicate depeg of {d.asset!r}")
        if d.asset not in assets:
            problems.append(f"depegs[{i}].asset: {d.asset!r} is no token's asset")
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        key = _loc(tuple(err["loc"])) or "config"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        for part in msg.split("; "):
            out.append(part if key == "config" and ":" in part else f"{key}: {part}")
    return out


def parse_config(data: dict[str, Any]) -> OmnimarginConfig:
    """Validate decoded TOML; raise :class:`ConfigError` listing every problem."""
    try:
        return OmnimarginConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def config_path(explicit: Path | None = None) -> Path:
    """``--config``, else ``$OMNIMARGIN_CONFIG``, else ``.omnimargin/config.toml``."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path(".omnimargin") / "config.toml"


def load_config(path: Path) -> OmnimarginConfig:
    """Read and validate a TOML configuration file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"config: cannot read {path} ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: {path} is not valid TOML ({exc})"]) from None
    return parse_config(data)
