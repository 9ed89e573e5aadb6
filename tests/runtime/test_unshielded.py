"""The unshielded phases' checks as pure functions (edge_agent/unshielded.py): the take-off climb's
column hold and watch, and the end action's path against the mission."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_agent.mission import load_mission
from edge_agent.unshielded import ClimbGuard, choose_end_action, end_action_refusal, rtl_problem

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return load_mission(DEMO)  # mast at N 9 E 4 (r 3, up to 25 m), building N 8..14 E -12..-6


def test_the_climb_pulls_back_toward_its_column_clipped_to_the_speed_limit(demo) -> None:  # type: ignore[no-untyped-def]
    guard = ClimbGuard(demo, (0.0, 0.0), -10.0)
    step = guard.step((0.0, 0.5, -3.0), (0.0, 0.0, 0.0), 1.5)
    assert step.abort is None and step.vel_sp_ned_m_s == pytest.approx((0.0, -0.5, -1.5))
    step = guard.step((-1.9, 0.0, -3.0), (0.0, 0.0, 0.0), 1.5)
    assert step.abort is None and step.vel_sp_ned_m_s[0] == pytest.approx(1.9)
    far = ClimbGuard(demo, (0.0, 0.0), -10.0, gain_1_s=10.0).step((1.5, 0.0, -3.0), None, 1.5)
    assert math.hypot(*far.vel_sp_ned_m_s[:2]) == pytest.approx(demo.limits.horizontal_m_s)


def test_the_climb_is_aborted_off_its_column_or_where_it_would_stop_near_a_zone(demo) -> None:  # type: ignore[no-untyped-def]
    guard = ClimbGuard(demo, (0.0, 0.0), -10.0)
    step = guard.step((2.1, 0.0, -3.0), None, 1.5)
    assert step.abort is not None and "drifted 2.1 m off its take-off column" in step.abort
    assert step.vel_sp_ned_m_s[2] > 0.0  # aborted: coming down (straight down is clear here)
    assert guard.step((0.0, 0.0, -3.0), None, 1.5).abort == step.abort  # latched
    # 1.5 m from the mast's margin, but moving at it at 3 m/s: it would stop inside the margin
    near = ClimbGuard(demo, (4.0, 4.0), -10.0)
    assert near.step((4.5, 4.0, -3.0), (0.0, 0.0, 0.0), 1.5).abort is None
    moving = ClimbGuard(demo, (4.0, 4.0), -10.0).step((4.5, 4.0, -3.0), (3.0, 0.0, 0.0), 1.5)
    assert moving.abort is not None and "the keep-out cylinder at N 9 E 4" in moving.abort


def test_land_over_a_zone_and_rtl_across_one_become_hold(demo) -> None:  # type: ignore[no-untyped-def]
    params = {"RTL_RETURN_ALT": 15.0}
    home = (0.0, 0.0, 0.0)
    above_mast = (9.0, 4.0, -27.0)  # over the mast's top (25 m)
    choice = choose_end_action(demo, "land", above_mast, home, "PX4", params)
    assert choice.action == "hold" and "inside the keep-out cylinder at N 9 E 4" in (choice.refused or "")
    assert choose_end_action(demo, "land", (-20.0, -20.0, -10.0), home, "PX4", params).action == "land"
    # the demo's final waypoint (N 20 E -20) to home crosses the building at every altitude
    last = (20.0, -20.0, -10.0)
    why = rtl_problem(demo, last, home, "PX4", params) or ""
    assert "the straight line home" in why and "the keep-out box N 8..14 E -12..-6" in why, why
    assert choose_end_action(demo, "rtl", (-20.0, -20.0, -10.0), home, "PX4", params).action == "rtl"
    assert choose_end_action(demo, "hold", None, None, "PX4", {}).action == "hold"
    assert choose_end_action(demo, "land", None, home, "PX4", {}).action == "hold"  # no position


def test_rtl_that_cannot_be_known_is_unverifiable(demo) -> None:  # type: ignore[no-untyped-def]
    here = (-20.0, -20.0, -10.0)
    assert "home is not known" in (rtl_problem(demo, here, None, "PX4", {"RTL_RETURN_ALT": 15.0}) or "")
    assert "did not report RTL_RETURN_ALT" in (rtl_problem(demo, here, (0.0, 0.0, 0.0), "PX4", {}) or "")
    # ArduCopter: RTL_ALT in cm; 0 = return at the current altitude; RTL_CLIMB_MIN climbs first
    assert rtl_problem(demo, here, (0.0, 0.0, 0.0), "ARDUPILOT", {"RTL_ALT": 0.0}) is None
    high = rtl_problem(demo, here, (0.0, 0.0, 0.0), "ARDUPILOT", {"RTL_ALT": 0.0, "RTL_CLIMB_MIN": 2500.0})
    assert high is not None and "climbs to 35.0 m" in high


def test_startup_refuses_an_end_action_never_clear_from_the_final_waypoint(demo) -> None:  # type: ignore[no-untyped-def]
    home = (0.0, 0.0, 0.0)
    why = end_action_refusal(demo, "rtl", home, "PX4", {"RTL_RETURN_ALT": 15.0}) or ""
    assert why.startswith("--end rtl from the mission's final waypoint: the straight line home"), why
    assert "pass --end land or --end hold" in why
    assert end_action_refusal(demo, "land", home, "PX4", {}) is None
    assert end_action_refusal(demo, "hold", None, "PX4", {}) is None
