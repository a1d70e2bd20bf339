#pragma version 0.4.3
"""
@title AggregatorV3Interface-compatible price feed for the devnet
@notice The owner pushes rounds. Also serves as an L2 sequencer uptime feed (answer 0 = up,
        1 = down; startedAt = when the status last changed), as Chainlink's does.
"""

struct Round:
    answer: int256
    startedAt: uint256
    updatedAt: uint256

event AnswerUpdated:
    current: indexed(int256)
    roundId: indexed(uint256)
    updatedAt: uint256

decimals: public(uint8)
description: public(String[64])
version: public(uint256)
owner: public(address)
latestRound: public(uint80)
rounds: HashMap[uint80, Round]


@deploy
def __init__(_decimals: uint8, _description: String[64]):
    self.decimals = _decimals
    self.description = _description
    self.version = 4
    self.owner = msg.sender


@external
def push(_answer: int256, _started_at: uint256, _updated_at: uint256) -> uint80:
    """@notice Record a new round; timestamps are given so a devnet can replay history."""
    assert msg.sender == self.owner, "feed: only owner"
    round_id: uint80 = self.latestRound + 1
    self.rounds[round_id] = Round(answer=_answer, startedAt=_started_at, updatedAt=_updated_at)
    self.latestRound = round_id
    log AnswerUpdated(current=_answer, roundId=convert(round_id, uint256), updatedAt=_updated_at)
    return round_id


@view
@external
def getRoundData(_round_id: uint80) -> (uint80, int256, uint256, uint256, uint80):
    r: Round = self.rounds[_round_id]
    assert r.updatedAt != 0, "feed: no data present"
    return (_round_id, r.answer, r.startedAt, r.updatedAt, _round_id)


@view
@external
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    round_id: uint80 = self.latestRound
    r: Round = self.rounds[round_id]
    assert round_id != 0, "feed: no data present"
    return (round_id, r.answer, r.startedAt, r.updatedAt, round_id)


@view
@external
def latestAnswer() -> int256:
    return self.rounds[self.latestRound].answer
