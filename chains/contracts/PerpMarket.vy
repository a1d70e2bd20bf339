#pragma version 0.4.3
"""
@title PerpMarket: the devnet's perpetual markets, opened only through the MarginGate
@notice One per chain, many markets. A market id is keccak256 of the canonical asset name in
        UTF-8 (keccak256("ETH"), keccak256("BTC"), ...), the same id the attestation's `market`
        carries. Sizes are int256 with 18 decimals of the asset (negative = short); entry
        prices are the market's AggregatorV3 feed answer (8 decimals), size-weighted when a
        position grows, kept when it shrinks, reset when it flips or closes. The P&L of the
        part closed (size closed x (price - entry)) is realised into `realized` (USD, 18
        decimals), so a trade at the mark moves no equity: position value + realised is
        conserved, however the position is cut. `liquidate` executes a liquidation plan's
        step (a LiquidationAttestation the gate checks): it only shrinks a position, never
        through zero, and may settle realised P&L paid by seized collateral or the fund.
"""

struct MarginAttestation:
    account: address
    market: bytes32
    sizeDelta: int256
    equity: uint256
    initialMargin: uint256
    snapshotHash: bytes32
    riskModelHash: bytes32
    issuedAt: uint64
    validUntil: uint64
    nonce: uint256
    counter: uint256

struct LiquidationAttestation:
    account: address
    target: address
    asset: bytes32
    sizeDelta: int256
    amount: uint256
    bonus: uint256
    recipient: address
    settle: int256
    equity: int256
    maintenanceMargin: uint256
    snapshotHash: bytes32
    riskModelHash: bytes32
    issuedAt: uint64
    validUntil: uint64
    nonce: uint256
    counter: uint256

struct Position:
    size: int256
    entry_price: uint256

interface MarginGate:
    def consume(_att: MarginAttestation, _signature: Bytes[65]) -> address: nonpayable
    def consume_liquidation(_att: LiquidationAttestation, _signature: Bytes[65]) -> address: nonpayable

interface AggregatorV3:
    def latestRoundData() -> (uint80, int256, uint256, uint256, uint80): view

event MarketAdded:
    market_id: indexed(bytes32)
    price_feed: address

event PositionChanged:
    account: indexed(address)
    market: indexed(bytes32)
    sizeDelta: int256
    newSize: int256
    price: uint256

event Liquidated:
    account: indexed(address)
    market: indexed(bytes32)
    sizeDelta: int256
    newSize: int256
    price: uint256
    settle: int256
    liquidator: indexed(address)

MAX_MARKETS: constant(uint256) = 64

owner: public(address)
gate: public(address)
feed_of: public(HashMap[bytes32, address])
market_ids: public(DynArray[bytes32, MAX_MARKETS])
positions: HashMap[address, HashMap[bytes32, Position]]
# account -> market -> P&L realised by reductions, USD with 18 decimals
realized: HashMap[address, HashMap[bytes32, int256]]
PRICE_UNIT: constant(int256) = 10**8  # the feeds' 8 decimals


@deploy
def __init__(_gate: address):
    assert _gate != empty(address), "perp: zero gate"
    self.owner = msg.sender
    self.gate = _gate


@external
def add_market(_market_id: bytes32, _price_feed: address):
    """@notice List `_market_id` (keccak256 of the asset name), priced by `_price_feed`."""
    assert msg.sender == self.owner, "perp: only owner"
    assert _price_feed != empty(address), "perp: zero feed"
    assert self.feed_of[_market_id] == empty(address), "perp: market exists"
    self.feed_of[_market_id] = _price_feed
    self.market_ids.append(_market_id)
    log MarketAdded(market_id=_market_id, price_feed=_price_feed)


@view
@external
def markets_count() -> uint256:
    return len(self.market_ids)


@view
@external
def position(_account: address, _market_id: bytes32) -> (int256, uint256, int256):
    """@notice (size, entry_price, realised P&L) of `_account` in `_market_id`."""
    p: Position = self.positions[_account][_market_id]
    return (p.size, p.entry_price, self.realized[_account][_market_id])


@internal
@pure
def _closed(_old: int256, _delta: int256) -> int256:
    """The signed part of `_old` that `_delta` closes (0 when it adds to the position)."""
    if _old == 0 or (_old > 0) == (_delta > 0):
        return 0
    if abs(_delta) >= abs(_old):
        return _old
    return -_delta


@internal
@view
def _price(_feed: address) -> uint256:
    answer: int256 = 0
    updated_at: uint256 = 0
    _: uint80 = 0
    _s: uint256 = 0
    _a: uint80 = 0
    _, answer, _s, updated_at, _a = staticcall AggregatorV3(_feed).latestRoundData()
    assert answer > 0 and updated_at != 0, "perp: bad price"
    return convert(answer, uint256)


@internal
@pure
def _entry(_old: Position, _delta: int256, _new_size: int256, _price: uint256) -> uint256:
    if _new_size == 0:
        return 0
    if _old.size == 0 or (_old.size > 0) != (_new_size > 0):
        return _price  # opened, or flipped through zero
    if (_old.size > 0) != (_delta > 0):
        return _old.entry_price  # reduced: the remaining part keeps its entry
    grown: uint256 = convert(abs(_old.size), uint256) * _old.entry_price
    grown += convert(abs(_delta), uint256) * _price
    return grown // convert(abs(_new_size), uint256)


@internal
def _trade(_account: address, _market: bytes32, _delta: int256) -> (int256, uint256):
    """Change `_account`'s `_market` position by `_delta` at the feed's price, realising the
    P&L of the part closed; returns (new size, price)."""
    feed: address = self.feed_of[_market]
    price: uint256 = self._price(feed)
    old: Position = self.positions[_account][_market]
    closed: int256 = self._closed(old.size, _delta)
    if closed != 0:
        move: int256 = convert(price, int256) - convert(old.entry_price, int256)
        self.realized[_account][_market] += closed * move // PRICE_UNIT
    new_size: int256 = old.size + _delta
    self.positions[_account][_market] = Position(
        size=new_size, entry_price=self._entry(old, _delta, new_size, price)
    )
    return new_size, price


@external
def open(_att: MarginAttestation, _signature: Bytes[65]):
    """@notice Change `_att.account`'s position by `_att.sizeDelta`, as the gate allows.
    Anyone may submit (the account or a relayer): the signed attestation is the authority."""
    assert self.feed_of[_att.market] != empty(address), "perp: unknown market"
    assert _att.sizeDelta != 0, "perp: zero size"
    extcall MarginGate(self.gate).consume(_att, _signature)
    new_size: int256 = 0
    price: uint256 = 0
    new_size, price = self._trade(_att.account, _att.market, _att.sizeDelta)
    log PositionChanged(
        account=_att.account,
        market=_att.market,
        sizeDelta=_att.sizeDelta,
        newSize=new_size,
        price=price,
    )


@external
def liquidate(_att: LiquidationAttestation, _signature: Bytes[65]):
    """@notice Execute one step of a liquidation plan: close `_att.sizeDelta` of the position
    (shrinking it, never through zero) at the feed's price and settle `_att.settle` into its
    realised P&L. Anyone may submit: the signed step is the authority."""
    assert self.feed_of[_att.asset] != empty(address), "perp: unknown market"
    assert _att.amount == 0 and _att.bonus == 0, "perp: not a position step"
    assert _att.sizeDelta != 0 or _att.settle != 0, "perp: empty step"
    old: int256 = self.positions[_att.account][_att.asset].size
    if _att.sizeDelta != 0:
        assert old != 0 and (old > 0) != (_att.sizeDelta > 0), "perp: not a reduction"
        assert abs(_att.sizeDelta) <= abs(old), "perp: through zero"
    extcall MarginGate(self.gate).consume_liquidation(_att, _signature)
    new_size: int256 = old
    price: uint256 = 0
    if _att.sizeDelta != 0:
        new_size, price = self._trade(_att.account, _att.asset, _att.sizeDelta)
    self.realized[_att.account][_att.asset] += _att.settle
    log Liquidated(
        account=_att.account,
        market=_att.asset,
        sizeDelta=_att.sizeDelta,
        newSize=new_size,
        price=price,
        settle=_att.settle,
        liquidator=msg.sender,
    )
