"""Per-session log floors (``logging/setLevel``): what a session gets of the levels, least severe first."""

from __future__ import annotations

import pytest

from mcp_gateway.core.log_levels import LEVELS, LogLevels


@pytest.mark.parametrize(
    ("floor", "level", "wanted"),
    [
        (None, "debug", True),  # a session that never asked gets everything
        (None, "emergency", True),
        ("warning", "info", False),
        ("warning", "warning", True),
        ("warning", "error", True),
        ("emergency", "alert", False),
        ("debug", "debug", True),
        (None, "verbose", False),  # not a level: goes nowhere
        ("info", "verbose", False),
    ],
)
def test_a_session_gets_the_levels_at_or_above_the_one_it_asked_for(
    floor: str | None, level: str, wanted: bool
) -> None:
    levels = LogLevels()
    if floor is not None:
        levels.set("s1", floor)
    assert levels.wants("s1", level) is wanted


def test_one_sessions_level_leaves_other_sessions_and_sessionless_requests_alone() -> None:
    levels = LogLevels()
    levels.set("s1", "emergency")
    assert all(levels.wants("s2", level) for level in LEVELS)
    assert all(levels.wants(None, level) for level in LEVELS)


def test_a_forgotten_session_is_dropped() -> None:
    levels = LogLevels()
    levels.set("s1", "error")
    levels.forget("s1")
    levels.forget("never-seen")
    assert len(levels) == 0
    assert levels.wants("s1", "debug")


def test_levels_are_the_specs_severities_least_severe_first() -> None:
    assert LEVELS == ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
