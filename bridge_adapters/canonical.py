"""Chain tokens as representations of canonical assets (DESIGN.md, "bridge_adapters/").

Native USDC on Base, USDC.e on Arbitrum and USDC on Ethereum are one asset ``USDC``; what tells
them apart is the representation: ``native``, or the bridge that issued it. The table comes from
the config's ``[[tokens]]`` only; a token it does not list is an error naming the token, never
dropped and never priced as another asset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eth_utils import to_checksum_address

from bridge_adapters.errors import UnmappedToken
from chains.config import OmnimarginConfig, TokenConfig

NATIVE = "native"


@dataclass(frozen=True)
class Representation:
    """What one chain token is: ``asset`` held natively or through ``bridge``."""

    asset: str
    kind: str  # "native" | "canonical_bridge" | "third_party_bridge"
    bridge: str | None
    symbol: str
    decimals: int

    @property
    def name(self) -> str:
        """``"native"`` or the bridge's name."""
        return self.bridge if self.bridge is not None else NATIVE


class Representations:
    """(chain id, token address) -> :class:`Representation`, from the config's tokens."""

    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self._table: dict[tuple[int, str], Representation] = {}
        for t in tokens:
            bridge = t.bridge if t.kind != NATIVE else None
            rep = Representation(t.asset, t.kind, bridge, t.symbol, t.decimals)
            self._table[(t.chain_id, str(to_checksum_address(t.address)))] = rep

    @classmethod
    def from_config(cls, config: OmnimarginConfig) -> Representations:
        return cls(config.tokens)

    def lookup(self, chain_id: int, token: str) -> Representation:
        """The representation of ``token`` on ``chain_id``; :class:`UnmappedToken` if unlisted."""
        address = str(to_checksum_address(token))
        try:
            return self._table[(chain_id, address)]
        except KeyError:
            raise UnmappedToken(
                f"token {address} on chain {chain_id} is not in [[tokens]]: "
                "add it with its canonical asset"
            ) from None

    def assets(self) -> tuple[str, ...]:
        """The canonical assets, sorted."""
        return tuple(sorted({r.asset for r in self._table.values()}))
