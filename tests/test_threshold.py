"""The range-limit state machine (alerts/threshold.py) on its own, reading by reading."""

from __future__ import annotations

import pytest

from alerts.threshold import Action, Phase, ThresholdState, step
from domain.limits import Limit

MIN_MS = 60_000
MAX_GAP_MS = 15 * MIN_MS
# Free chlorine 0.3-1.0 mg/L, 10 min pending and clearing, 0.05 mg/L hysteresis.
LIMIT = Limit(
    parameter="free_chlorine",
    unit="mg/L",
    clause="test",
    confidence="test",
    standard="test",
    profile="test",
    min=0.3,
    max=1.0,
    hysteresis=0.05,
    pending_s=600,
    clear_s=600,
)


def _feed(s: ThresholdState, readings: list[tuple[int, float]], valid: bool = True) -> list[Action]:
    """Readings as (minute, value); returns the action of each."""
    return [step(s, m * MIN_MS, v, valid, LIMIT, MAX_GAP_MS) for m, v in readings]


def _minutes(first: int, last: int, value: float) -> list[tuple[int, float]]:
    return [(m, value) for m in range(first, last + 1)]


def test_inside_raises_nothing() -> None:
    s = ThresholdState()
    assert set(_feed(s, _minutes(0, 30, 0.6))) == {Action.NONE}
    assert s.phase is Phase.NORMAL


def test_violation_opens_only_after_the_pending_time() -> None:
    s = ThresholdState()
    actions = _feed(s, _minutes(0, 10, 1.4))
    assert actions[:10] == [Action.NONE] * 10  # minutes 0-9: pending
    assert s.phase is Phase.ACTIVE and actions[10] is Action.OPEN  # 10 min after the first
    assert (s.episode_start_ms, s.count, s.first_value) == (0, 11, 1.4)


def test_brief_excursion_returns_to_normal_without_an_alert() -> None:
    s = ThresholdState()
    actions = _feed(s, [*_minutes(0, 5, 1.4), *_minutes(6, 30, 0.6)])
    assert Action.OPEN not in actions
    assert s.phase is Phase.NORMAL


def test_worst_value_and_updates_while_active() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 10, 1.2))
    actions = _feed(s, [(11, 1.6), (12, 1.3)])
    assert actions == [Action.UPDATE, Action.UPDATE]
    assert (s.worst_value, s.worst_ms, s.last_value) == (1.6, 11 * MIN_MS, 1.3)


def test_clears_only_after_clear_time_clearly_inside() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 10, 1.2))
    actions = _feed(s, _minutes(11, 21, 0.6))
    assert actions[:10] == [Action.NONE] * 10
    assert s.phase is Phase.NORMAL and actions[10] is Action.RESOLVE  # 10 min after minute 11


def test_hysteresis_band_neither_clears_nor_updates() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 10, 1.2))
    # 0.98 is inside the limit but within 0.05 of it: the episode stays active, for any time.
    assert set(_feed(s, _minutes(11, 60, 0.98))) == {Action.NONE}
    assert s.phase is Phase.ACTIVE
    actions = _feed(s, _minutes(61, 71, 0.9))
    assert actions[-1] is Action.RESOLVE


def test_violation_while_clearing_continues_the_same_episode() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 10, 1.2))
    _feed(s, _minutes(11, 15, 0.6))
    assert s.phase is Phase.CLEARING
    assert _feed(s, [(16, 1.1)]) == [Action.UPDATE]
    assert s.phase is Phase.ACTIVE and s.episode_start_ms == 0
    # The clearing time starts again from the next reading clearly inside.
    actions = _feed(s, _minutes(17, 27, 0.6))
    assert actions[:10] == [Action.NONE] * 10 and actions[10] is Action.RESOLVE


def test_flagged_readings_are_not_judged_but_counted_in_an_episode() -> None:
    s = ThresholdState()
    # Flagged (calibration) readings far outside the limit start nothing.
    assert set(_feed(s, _minutes(0, 30, 5.0), valid=False)) == {Action.NONE}
    assert s.phase is Phase.NORMAL and s.excluded == 0
    _feed(s, _minutes(31, 41, 1.2))
    assert s.phase is Phase.ACTIVE
    assert _feed(s, _minutes(42, 44, 0.6), valid=False) == [Action.NONE] * 3
    assert s.phase is Phase.ACTIVE and s.excluded == 3  # flagged values neither clear nor worsen
    assert s.worst_value == 1.2


@pytest.mark.parametrize("late_minute", [5, 3])
def test_out_of_order_and_redelivered_readings_are_ignored(late_minute: int) -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 5, 1.2))
    before = s.to_json()
    # A reading older than (or as old as) the last one judged: already judged, or arrived late.
    assert _feed(s, [(late_minute, 0.6)]) == [Action.NONE]
    assert s.to_json() == before


def test_pending_across_a_gap_starts_again() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 5, 1.2))
    # 20 min without readings (more than max_gap): persistence across the gap is unknown.
    assert _feed(s, [(25, 1.3)]) == [Action.NONE]
    assert s.phase is Phase.PENDING and s.episode_start_ms == 25 * MIN_MS and s.count == 1
    actions = _feed(s, _minutes(26, 35, 1.3))
    assert actions[-1] is Action.OPEN and actions[:-1] == [Action.NONE] * 9


def test_state_round_trips_through_json() -> None:
    s = ThresholdState()
    _feed(s, _minutes(0, 12, 1.2))
    restored = ThresholdState.from_json(s.to_json())
    assert restored == s
    assert _feed(restored, [(13, 1.5)]) == _feed(s, [(13, 1.5)])
