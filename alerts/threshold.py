"""Range-limit state machine for one (device, parameter): pending time, hysteresis, clear time.

Pure: it decides, the engine writes. Phases:
  normal --violation--> pending --still violated after pending_s--> active (alert opened)
  active --clearly inside (hysteresis)--> clearing --inside for clear_s--> normal (alert resolved)
  pending --back inside--> normal (a brief excursion raises nothing)
  clearing --violation--> active (the same episode goes on)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from domain.limits import Limit


class Phase(StrEnum):
    NORMAL = "normal"
    PENDING = "pending"
    ACTIVE = "active"
    CLEARING = "clearing"


class Action(StrEnum):
    NONE = "none"
    OPEN = "open"  # the episode became an alert
    UPDATE = "update"  # a further violating reading of an open alert
    RESOLVE = "resolve"


@dataclass(slots=True)
class ThresholdState:
    phase: Phase = Phase.NORMAL
    since_ms: int = 0  # start of the pending violation, or of the clearing period
    episode_start_ms: int = 0
    last_ts: int = -1
    first_value: float = 0.0
    last_value: float = 0.0
    worst_value: float = 0.0
    worst_ms: int = 0
    count: int = 0
    excluded: int = 0  # readings skipped during the episode because of their data flag

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ThresholdState:
        d = dict(d)
        d["phase"] = Phase(d["phase"])
        return cls(**d)


def step(
    s: ThresholdState, ts_ms: int, value: float, valid: bool, limit: Limit, max_gap_ms: int
) -> Action:
    """Advance the state by one reading in sensor-time order."""
    if ts_ms <= s.last_ts:
        return Action.NONE  # redelivered or out of order: already judged
    gap = ts_ms - s.last_ts if s.last_ts >= 0 else 0
    s.last_ts = ts_ms
    if not valid:
        if s.phase is not Phase.NORMAL:
            s.excluded += 1
        return Action.NONE
    violated = limit.violated(value)
    if s.phase is Phase.NORMAL:
        if violated:
            _start_episode(s, ts_ms, value)
            return _promote_if_due(s, ts_ms, limit)
        return Action.NONE
    if s.phase is Phase.PENDING:
        if not violated:
            s.phase = Phase.NORMAL
            return Action.NONE
        if gap > max_gap_ms:
            # Not seen for too long: persistence across the gap is unknown, so start again.
            _start_episode(s, ts_ms, value)
        else:
            _observe(s, ts_ms, value, limit)
        return _promote_if_due(s, ts_ms, limit)
    if violated:
        s.phase = Phase.ACTIVE
        _observe(s, ts_ms, value, limit)
        return Action.UPDATE
    if not limit.clearly_inside(value):
        # Inside the limit but within the hysteresis band: neither worse nor cleared.
        s.phase = Phase.ACTIVE
        return Action.NONE
    if s.phase is Phase.ACTIVE:
        s.phase = Phase.CLEARING
        s.since_ms = ts_ms
    if ts_ms - s.since_ms >= limit.clear_s * 1000:
        s.phase = Phase.NORMAL
        return Action.RESOLVE
    return Action.NONE


def _start_episode(s: ThresholdState, ts_ms: int, value: float) -> None:
    s.phase = Phase.PENDING
    s.since_ms = s.episode_start_ms = ts_ms
    s.first_value = s.last_value = s.worst_value = value
    s.worst_ms = ts_ms
    s.count = 1
    s.excluded = 0


def _observe(s: ThresholdState, ts_ms: int, value: float, limit: Limit) -> None:
    s.last_value = value
    s.count += 1
    if limit.badness(value) > limit.badness(s.worst_value):
        s.worst_value, s.worst_ms = value, ts_ms


def _promote_if_due(s: ThresholdState, ts_ms: int, limit: Limit) -> Action:
    if ts_ms - s.since_ms >= limit.pending_s * 1000:
        s.phase = Phase.ACTIVE
        return Action.OPEN
    return Action.NONE
