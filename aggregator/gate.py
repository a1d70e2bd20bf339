"""The gate's contract, as pure functions of an account's scenario P&L (docs/ARCHITECTURE.md,
"The gate's contract").

Let O be the account's outstanding attestations (approved, not expired, not executed in the
pinned state the decision reads). The invariant: for every subset S of O, executed in any
order, IM(portfolio + S) <= equity + the equity S moves, at the decision's prices and scenarios.

Evaluated exactly, not bounded. Group O by (risk column, kind); within a group every change
moves the same column and moves equity in the same fixed ratio (a perp moves none, a
withdrawal of collateral its whole value), so a subset acts through one total per group, and
the totals a subset can reach lie in a box [sum of the negative changes, sum of the positive
ones] per group whose corners are reached by subsets. IM on fixed scenarios is convex in the
exposures (ES is the maximum of the means over k scenarios, a maximum of linear functions), and
equity is linear, so the worst subset is a corner of that box: 2**G evaluations for G groups,
whatever the number of attestations. Past ``MAX_GROUPS`` groups a decision is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aggregator.margin import MarginPolicy, ScenarioSet
from aggregator.store import ACTIVE, CANCELLED, EXPIRED, FILLED, Reservation
from chains.margin_gate import GateState, NonceStatus
from montecarlo.measures import tail_count

#: groups of outstanding changes evaluated exactly (2**MAX_GROUPS corners); past it, refuse
MAX_GROUPS = 6
#: equity a kind of change moves per USD of exposure it moves
EQUITY_RATIO = {"position": 0.0, "withdrawal": 1.0, "liquidation": 0.0, "seizure": 1.0}


@dataclass(frozen=True)
class Change:
    """One attested change in USD at the decision's prices: ``exposure_usd`` on ``column``
    (a perp's size times the price; minus a withdrawal's value); ``kind`` sets how much equity
    it moves (``EQUITY_RATIO``)."""

    column: str
    kind: str
    exposure_usd: float

    @property
    def equity_usd(self) -> float:
        return EQUITY_RATIO[self.kind] * self.exposure_usd


@dataclass(frozen=True)
class Corner:
    """One corner of the box: the total change per (column, kind) group and the equity moved."""

    totals: tuple[tuple[str, str, float], ...]
    equity_usd: float


def corners(changes: Sequence[Change]) -> list[Corner]:
    """Every corner of the groups' box (the empty corner first when there are no changes)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for c in changes:
        groups.setdefault((c.column, c.kind), []).append(c.exposure_usd)
    keys = sorted(groups)
    ends = [
        sorted({sum(x for x in v if x < 0), sum(x for x in v if x > 0)})
        for v in (groups[k] for k in keys)
    ]
    out = []
    for pick in itertools.product(*ends):
        totals = tuple((col, kind, t) for (col, kind), t in zip(keys, pick, strict=True))
        out.append(Corner(totals, sum(EQUITY_RATIO[k] * t for _, k, t in totals)))
    return out


def group_count(changes: Sequence[Change]) -> int:
    return len({(c.column, c.kind) for c in changes})


def corner_ims(
    pnl: np.ndarray, scen: ScenarioSet, cs: Sequence[Corner], policy: MarginPolicy
) -> np.ndarray:
    """IM at each corner (C,): one (C, M) P&L matrix, one partial selection per row."""
    cols = sorted({col for c in cs for col, _, _ in c.totals})
    if not cols:
        return np.array([im_of(pnl[None, :], policy)[0] for _ in cs])
    index = {col: j for j, col in enumerate(cols)}
    moves = np.zeros((len(cs), len(cols)))
    for i, c in enumerate(cs):
        for col, _, t in c.totals:
            moves[i, index[col]] += t
    r = np.stack([scen.column_returns(col) for col in cols])  # (G', M)
    return im_of(pnl[None, :] + moves @ r, policy)


def im_of(pnl: np.ndarray, policy: MarginPolicy) -> np.ndarray:
    """IM of each row of scenario P&L (C, M) -> (C,): ES of the loss, floored at 0."""
    alpha = policy.mm_alpha if policy.im_multiplier is not None else policy.im_alpha
    losses = -pnl
    k = tail_count(alpha, int(losses.shape[-1]))
    es = np.array([tail_mean(row, k) for row in losses])
    if policy.im_multiplier is not None:
        es = es * policy.im_multiplier
    out: np.ndarray = np.maximum(es, 0.0)
    return out


#: a strided sample of this many losses sets the threshold of :func:`tail_mean`
SAMPLE = 8192


def tail_mean(losses: np.ndarray, k: int) -> float:
    """Mean of the k largest of ``losses`` (M,), exactly, without partitioning all M.

    A threshold t from a strided sample (a value the sample ranks somewhat past k): if at
    least k losses are >= t, the k-th largest is >= t and every one of the k largest is among
    them, so partitioning those candidates alone gives the same k values. Otherwise (a
    sample that misjudged the tail) the whole row is partitioned, as ``expected_shortfall``
    does. About 4x faster than partitioning 100,000 losses for k = 1,000.
    """
    m = losses.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k = {k} outside 1..{m}")
    candidates = losses
    stride = m // SAMPLE
    if stride >= 4 and k <= m // 8:
        sample = losses[::stride]
        rank = min(len(sample) - 1, int(1.25 * k / stride) + 16)  # from the top, 0-based
        t = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
        above = losses[losses >= t]
        if len(above) >= k:
            candidates = above
    top = np.partition(candidates, len(candidates) - k)[len(candidates) - k :]
    return float(top.mean())


@dataclass(frozen=True)
class WorstCase:
    """The invariant's worst subset: ``im`` at it, ``shortfall`` = im - equity moved (what
    equity must cover), and how many corners were evaluated."""

    im: float
    shortfall: float
    corners: int


def worst_case(
    pnl: np.ndarray, scen: ScenarioSet, changes: Sequence[Change], policy: MarginPolicy
) -> WorstCase:
    """max over subsets S of ``changes`` of IM(P + S) - equity moved by S (exact; see above)."""
    cs = corners(changes)
    ims = corner_ims(pnl, scen, cs, policy)
    need = ims - np.array([c.equity_usd for c in cs])
    worst = int(np.argmax(need))
    return WorstCase(float(ims[worst]), float(need[worst]), len(cs))


def lowers_im_everywhere(
    pnl: np.ndarray,
    scen: ScenarioSet,
    outstanding: Sequence[Change],
    new: Change,
    policy: MarginPolicy,
) -> bool:
    """True if adding ``new`` lowers IM (or leaves it) at every corner of ``outstanding``'s box
    and leaves equity as it is: a reduce-only change in the gate's sense."""
    if new.equity_usd != 0:
        return False
    cs = corners(outstanding)
    moved = [
        Corner((*c.totals, (new.column, new.kind, new.exposure_usd)), c.equity_usd) for c in cs
    ]
    before = corner_ims(pnl, scen, cs, policy)
    after = corner_ims(pnl, scen, moved, policy)
    return bool(np.all(after <= before))


def reduces_position(size: float, outstanding: Sequence[float], delta: float) -> bool:
    """True if ``delta`` shrinks the position ``size`` (one market on one chain) towards zero
    without crossing it, whichever of the ``outstanding`` size changes execute first."""
    if delta == 0 or size == 0:
        return False
    if delta < 0:  # cutting a long: it must stay >= 0 even after every outstanding cut
        low = size + sum(x for x in outstanding if x < 0)
        return low > 0 and low + delta >= 0
    high = size + sum(x for x in outstanding if x > 0)
    return high < 0 and high + delta <= 0


def outstanding(rows: Sequence[Reservation], gates: dict[int, GateState]) -> list[Reservation]:
    """The rows still outstanding for a decision that reads the pinned ``gates``.

    A row leaves O when the pinned state shows it executed (its position is in the portfolio
    the decision reads: consumed there, or seen filled at or before that block), cancelled,
    superseded by the account's counter, or when the chain's pinned clock is past its
    ``validUntil`` with the nonce unused (it can never execute). A row not asked about (issued
    after the gates were read) cannot have executed in that state. A row whose chain's gate is
    not in ``gates`` stays (the decision is refused anyway: it cannot know)."""
    out = []
    for r in rows:
        g = gates.get(r.chain_id)
        if g is None:
            out.append(r)
            continue
        status = g.status(r.account, r.nonce)
        if status is NonceStatus.CONSUMED or status is NonceStatus.CANCELLED:
            continue
        if r.state == FILLED and r.seen_block is not None and r.seen_block <= g.block_number:
            continue
        if r.state not in (ACTIVE, FILLED):
            continue
        if g.timestamp > r.valid_until:
            continue
        counter = g.counters.get(r.account)
        if counter is not None and r.counter < counter:  # counters only grow
            continue
        out.append(r)
    return out


def settled(rows: Sequence[Reservation], gates: dict[int, GateState]) -> list[tuple[int, str, int]]:
    """What the pinned ``gates`` show of the ``active`` rows they were asked about, as
    :meth:`Store.mark` updates: (id, state, block)."""
    out = []
    for r in rows:
        g = gates.get(r.chain_id)
        if g is None or r.state != ACTIVE:
            continue
        status = g.status(r.account, r.nonce)
        if status is None:
            continue
        if status is NonceStatus.CONSUMED:
            out.append((r.id, FILLED, g.block_number))
        elif status is NonceStatus.CANCELLED or g.counters.get(r.account, r.counter) > r.counter:
            out.append((r.id, CANCELLED, g.block_number))
        elif g.timestamp > r.valid_until:
            out.append((r.id, EXPIRED, g.block_number))
    return out
