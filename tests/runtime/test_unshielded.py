"""The unshielded phases' checks as pure functions (edge_agent/unshielded.py): the take-off climb's
column hold and watch, and the end action's path against the mission."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_agent.mission import load_mission
from edge_agent.unshielded import ClimbGuard, choose_end_action, end_action_refusal, rtl_problem
from firmware_bridge.types import Autopilot, Signal, VehicleState

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"


PX4_RTL = {"RTL_RETURN_ALT": 15.0, "RTL_TYPE": 0.0}
"""A PX4 whose return is checkable: 15 m up, straight home (RTL_TYPE 0)."""


def vehicle(
    pos: tuple[float, float, float] | None,
    params: dict[str, float],
    rally: int | None = 0,
    autopilot: Autopilot = Autopilot.PX4,
) -> VehicleState:
    """What the loop hands the end-action check: position, parameters and the rally count read."""
    return VehicleState(
        pos_ned_m=None if pos is None else Signal(pos, 0),
        autopilot=autopilot,
        params=params,
        mission_counts={} if rally is None else {2: rally},
    )


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return load_mission(DEMO)  # mast at N 9 E 4 (r 3, up to 25 m), building N 8..14 E -12..-6


def test_the_climb_pulls_back_toward_its_column_clipped_to_the_speed_limit(demo) -> None:  # type: ignore[no-untyped-def]
    guard = ClimbGuard(demo, (0.0, 0.0), -10.0)
    step = guard.step((0.0, 0.5, -3.0), (0.0, 0.0, 0.0), 1.5, 0.0)
    assert step.abort is None and step.vel_sp_ned_m_s == pytest.approx((0.0, -0.5, -1.5))
    step = guard.step((-1.9, 0.0, -3.0), (0.0, 0.0, 0.0), 1.5, 0.02)
    assert step.abort is None and step.vel_sp_ned_m_s[0] == pytest.approx(1.9)
    far = ClimbGuard(demo, (0.0, 0.0), -10.0, gain_1_s=10.0).step((1.5, 0.0, -3.0), None, 1.5, 0.0)
    assert math.hypot(*far.vel_sp_ned_m_s[:2]) == pytest.approx(demo.limits.horizontal_m_s)


def test_the_climb_is_aborted_off_its_column_or_where_it_would_stop_near_a_zone(demo) -> None:  # type: ignore[no-untyped-def]
    guard = ClimbGuard(demo, (0.0, 0.0), -10.0)
    step = guard.step((4.1, 0.0, -3.0), None, 1.5, 0.0)  # beyond twice the drift limit: at once
    assert step.abort is not None and "drifted 4.1 m off its take-off column" in step.abort
    assert step.vel_sp_ned_m_s[2] > 0.0  # aborted: coming down (straight down is clear here)
    assert guard.step((0.0, 0.0, -3.0), None, 1.5, 0.02).abort == step.abort  # latched
    # 1.5 m from the mast's margin, but moving at it at 3 m/s: it would stop inside the margin
    near = ClimbGuard(demo, (4.0, 4.0), -10.0)
    assert near.step((4.5, 4.0, -3.0), (0.0, 0.0, 0.0), 1.5, 0.0).abort is None
    moving = ClimbGuard(demo, (4.0, 4.0), -10.0).step((4.5, 4.0, -3.0), (3.0, 0.0, 0.0), 1.5, 0.0)
    assert moving.abort is not None and "the keep-out cylinder at N 9 E 4" in moving.abort


def test_a_gust_off_the_column_pauses_the_climb_and_only_a_lasting_drift_aborts_it(demo) -> None:  # type: ignore[no-untyped-def]
    """Beyond the 2 m drift limit the climb stops climbing and pulls back; back within it, it climbs
    on (a gust at lift-off no longer ends the flight); off it for more than 3 s, it is aborted."""
    guard = ClimbGuard(demo, (-20.0, -20.0), -10.0)  # in the open, far from the zones and the fence
    assert guard.step((-20.0, -22.5, -3.0), None, 1.5, 0.0).paused  # blown 2.5 m off
    gust = guard.step((-20.0, -22.5, -3.0), None, 1.5, 0.5)
    assert gust.abort is None and gust.paused and gust.vel_sp_ned_m_s[2] == 0.0
    assert gust.vel_sp_ned_m_s[1] > 0.0  # pulling back east, toward the column
    calm = guard.step((-20.0, -21.0, -3.0), None, 1.5, 2.0)
    assert calm.abort is None and not calm.paused and calm.vel_sp_ned_m_s[2] == -1.5
    assert guard.paused_s == pytest.approx(0.5)
    for t in (3.0, 4.0, 5.0, 6.0):  # blown off again, and it stays off
        step = guard.step((-20.0, -22.5, -3.0), None, 1.5, t)
    assert step.abort is None and step.paused  # 3.0 s off: still waiting
    step = guard.step((-20.0, -22.5, -3.0), None, 1.5, 6.1)
    assert step.abort is not None and "drifted 2.5 m off its take-off column" in step.abort
    assert "gives up after 3 s there" in step.abort


def test_land_over_a_zone_and_rtl_across_one_become_hold(demo) -> None:  # type: ignore[no-untyped-def]
    home = (0.0, 0.0, 0.0)
    above_mast = (9.0, 4.0, -27.0)  # over the mast's top (25 m)
    choice = choose_end_action(demo, "land", vehicle(above_mast, PX4_RTL), home)
    assert choice.action == "hold" and "inside the keep-out cylinder at N 9 E 4" in (choice.refused or "")
    assert choose_end_action(demo, "land", vehicle((-20.0, -20.0, -10.0), PX4_RTL), home).action == "land"
    # the demo's final waypoint (N 20 E -20) to home crosses the building at every altitude
    last = (20.0, -20.0, -10.0)
    why = rtl_problem(demo, last, home, "PX4", PX4_RTL, 0) or ""
    assert "the straight line home" in why and "the keep-out box N 8..14 E -12..-6" in why, why
    assert choose_end_action(demo, "rtl", vehicle((-20.0, -20.0, -10.0), PX4_RTL), home).action == "rtl"
    assert choose_end_action(demo, "hold", vehicle(None, {}), None).action == "hold"
    assert choose_end_action(demo, "land", vehicle(None, {}), home).action == "hold"  # no position


def test_rtl_that_cannot_be_known_is_unverifiable(demo) -> None:  # type: ignore[no-untyped-def]
    here, home = (-20.0, -20.0, -10.0), (0.0, 0.0, 0.0)
    assert "home is not known" in (rtl_problem(demo, here, None, "PX4", PX4_RTL, 0) or "")
    assert "did not report RTL_RETURN_ALT" in (rtl_problem(demo, here, home, "PX4", {}, 0) or "")
    # ArduCopter: RTL_ALT in cm; 0 = return at the current altitude; RTL_CLIMB_MIN climbs first
    ap = {"RTL_ALT": 0.0, "RTL_ALT_TYPE": 0.0}
    assert rtl_problem(demo, here, home, "ARDUPILOT", ap, 0) is None
    high = rtl_problem(demo, here, home, "ARDUPILOT", {**ap, "RTL_CLIMB_MIN": 2500.0}, 0)
    assert high is not None and "climbs to 35.0 m" in high


@pytest.mark.parametrize(
    ("autopilot", "params", "rally", "expect"),
    [
        ("PX4", {"RTL_RETURN_ALT": 15.0}, 0, "did not report RTL_TYPE"),
        ("PX4", {**PX4_RTL, "RTL_TYPE": 1.0}, 0, "RTL_TYPE is 1: the return flies a mission landing"),
        ("PX4", PX4_RTL, 2, "the autopilot has 2 rally points"),
        ("PX4", PX4_RTL, None, "did not say how many rally points"),
        ("ARDUPILOT", {"RTL_ALT": 1000.0}, 0, "did not report RTL_ALT_TYPE"),
        ("ARDUPILOT", {"RTL_ALT": 1000.0, "RTL_ALT_TYPE": 1.0}, 0, "RTL_ALT_TYPE is 1"),
        ("ARDUPILOT", {"RTL_ALT": 1000.0, "RTL_ALT_TYPE": 0.0}, 1, "the autopilot has 1 rally point:"),
    ],
)
def test_a_return_that_may_not_go_straight_home_is_unverifiable(  # type: ignore[no-untyped-def]
    demo, autopilot: str, params: dict[str, float], rally: int | None, expect: str
) -> None:
    """A clear straight line home is not enough when the autopilot may fly somewhere else: another
    RTL_TYPE, terrain-relative altitude, or a rally point nearer than home. Each becomes hold."""
    here, home = (-20.0, -20.0, -10.0), (0.0, 0.0, 0.0)
    why = rtl_problem(demo, here, home, autopilot, params, rally) or ""
    assert expect in why, why
    state = vehicle(here, params, rally, Autopilot[autopilot])
    choice = choose_end_action(demo, "rtl", state, home)
    assert choice.action == "hold" and choice.refused == why
    refusal = end_action_refusal(demo, "rtl", state, home) or ""
    assert expect in refusal and "pass --end land or --end hold" in refusal, refusal


def test_startup_refuses_an_end_action_never_clear_from_the_final_waypoint(demo) -> None:  # type: ignore[no-untyped-def]
    home = (0.0, 0.0, 0.0)
    why = end_action_refusal(demo, "rtl", vehicle(None, PX4_RTL), home) or ""
    assert why.startswith("--end rtl from the mission's final waypoint: the straight line home"), why
    assert "pass --end land or --end hold" in why
    assert end_action_refusal(demo, "land", vehicle(None, {}), home) is None
    assert end_action_refusal(demo, "hold", vehicle(None, {}), None) is None
