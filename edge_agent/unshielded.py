"""The phases of flight the shield does not filter, checked against the mission (issue 18).

Two stretches of a flight move the vehicle without the shield's barrier: the take-off climb
(below the mission's floor every command would be a floor breach, so the shield cannot run) and
whatever the autopilot does after the agent hands it the vehicle (``--end land|rtl|hold``). Both
are checked here against the mission's fence and keep-outs, with the same batched geometry the
shield uses (:class:`~edge_agent.mission.MissionGeometry`):

* :class:`ClimbGuard` holds the take-off column (a horizontal velocity back toward where the climb
  started) and watches it every step: it aborts the climb when the vehicle, or where it would stop,
  comes within the mission's margins of the fence or a keep-out along the rest of its climb. Off
  its column by more than :data:`CLIMB_DRIFT_LIMIT_M` it pauses the climb, and aborts it when that
  lasts :data:`CLIMB_DRIFT_GRACE_S` or the drift doubles.
* :func:`choose_end_action` checks the end action's path before it is commanded: LAND descends
  vertically from where the vehicle is; RTL climbs to the return altitude, flies a straight line
  home and descends there (only that return is checked: another RTL type, a terrain-relative
  altitude or any rally point makes it unknowable). A path that is not clear, or that cannot be
  known, becomes Hold (the autopilot's position hold, where the shield's last certified setpoint
  left the vehicle).
* :func:`end_action_refusal` refuses at start-up an end action whose path from the mission's final
  waypoint is never clear (``--end rtl`` with a keep-out between the route's end and home).

Pure functions of values: the loop does the I/O (edge_agent/loop.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.mission import Keepout, KeepoutCylinder, Mission
from edge_agent.observation import state_arrays
from firmware_bridge.types import VehicleState

F64 = NDArray[np.float64]

CLIMB_HOLD_GAIN_1_S = 1.0
"""Horizontal velocity per metre off the take-off column (1/s), clipped to the mission's speed limit.
Slower than the autopilot's own velocity loop (time constant ~0.55 s on the X500, docs/shield.md), so
the pull back does not overshoot. In the emulator an 8 m/s cross wind moved a 10 m climb 3.7 m off
its column without it, 0.9 m with it (1.3 m at gain 0.5, 0.7 m at 1.5)."""
CLIMB_DRIFT_LIMIT_M = 2.0
"""Off the column by more than this and the climb pauses (no climbing, still pulling back) even with
nothing near: the column check before take-off covered the column, not the sky around it. Off by
more for longer than :data:`CLIMB_DRIFT_GRACE_S`, or by twice this at any time, and the climb is
aborted: the vehicle is not doing what it is told (a wind beyond it, a wrong velocity estimate)."""
CLIMB_DRIFT_GRACE_S = 3.0
"""How long the climb may stay paused off its column before it is aborted: a gust at lift-off
(seconds) is waited out; a wind the vehicle cannot hold against is not. Every step of a pause is
still watched for the fence and the keep-outs."""
ROUTE_STEP_M = 0.25
"""Spacing of the points a path is checked at (a return's strip: vertically twice that); with a
zero margin a zone thinner than this between two points could be missed."""
MAX_PATH_POINTS = 4096
"""Per axis: a path longer than ROUTE_STEP_M times this is checked more coarsely."""
LATENCY_S = 0.12
"""Dead time before the autopilot reacts to an abort (edge_agent.shield.ShieldConfig.latency_s)."""
RTL_PARAMS: dict[str, tuple[str, float]] = {"PX4": ("RTL_RETURN_ALT", 1.0), "ARDUPILOT": ("RTL_ALT", 0.01)}
"""Per autopilot: the parameter of the return altitude above home and its unit in metres.
PX4 RTL_RETURN_ALT is metres (default 60); ArduCopter RTL_ALT is centimetres (default 1500, 0 =
return at the current altitude). Both return at the current altitude when already above it."""
RTL_CLIMB_MIN = ("RTL_CLIMB_MIN", 0.01)
"""ArduCopter: the least climb before the return (cm), whatever RTL_ALT says."""
RTL_ROUTE_PARAMS: dict[str, tuple[str, str]] = {
    "PX4": ("RTL_TYPE", "a mission landing or the mission's own path instead of straight home"),
    "ARDUPILOT": ("RTL_ALT_TYPE", "its return altitude above the terrain, not above home"),
}
"""Per autopilot: the parameter that must be 0 for the return to be the straight one checked here,
and what it flies otherwise. PX4 RTL_TYPE 0 is home or the nearest rally point, straight; 1–3 go to
a mission landing or along the mission. ArduCopter RTL_ALT_TYPE 1 holds RTL_ALT above terrain."""
MISSION_TYPE_RALLY = 2
"""MAV_MISSION_TYPE_RALLY: the autopilot's rally points, read with the mission protocol's count.
Both firmwares return to the nearest rally point (or home) when they have any."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Where a path comes too near the fence or a keep-out zone."""

    kind: str
    """"fence" or "keepout"."""
    distance_m: float
    """Fence: horizontal distance inside the fence (negative outside); zone: 3-D distance (negative inside)."""
    margin_m: float
    """The distance it had to keep."""
    zone: str = ""
    """The zone, in words ("the keep-out cylinder at N 9 E 4 (radius 3 m)")."""

    def describe(self) -> str:
        """ "0.5 m inside the fence, closer than the mission's fence margin (1 m)" and the like."""
        d = self.distance_m
        if self.kind == "fence":
            side = f"{d:.1f} m inside the fence" if d > 0 else f"{-d:.1f} m outside the fence"
            return f"{side}, closer than the mission's fence margin ({self.margin_m:g} m)"
        gap = f"{d:.1f} m from" if d > 0 else "inside"
        return f"passing {gap} {self.zone}, closer than the mission's keep-out margin ({self.margin_m:g} m)"


def describe_zone(zone: Keepout) -> str:
    """A keep-out zone in words: "the keep-out cylinder at N 9 E 4 (radius 3 m)"."""
    if isinstance(zone, KeepoutCylinder):
        n, e = zone.center_ne_m
        return f"the keep-out cylinder at N {n:g} E {e:g} (radius {zone.radius_m:g} m)"
    return f"the keep-out box N {zone.north_min_m:g}..{zone.north_max_m:g} E {zone.east_min_m:g}..{zone.east_max_m:g}"


def path_conflict(
    mission: Mission, points_ned_m: F64, *, fence_m: float, keepout_m: float
) -> Conflict | None:
    """The worst way the points ``[P, 3]`` come within ``fence_m`` of the fence or ``keepout_m`` of a
    keep-out zone (the fence first), or None when every point keeps both. The fence is horizontal:
    its altitude band is not checked here (a landing is meant to leave it, the ceiling is checked
    by the callers that climb)."""
    g = mission.geometry
    fence = float(g.fence_distance(points_ned_m)[0].min())
    if fence <= fence_m:
        return Conflict("fence", fence, fence_m)
    if g.n_zones:
        per_zone = g.keepout_distance(points_ned_m)[0].min(axis=0)
        z = int(np.argmin(per_zone))
        if per_zone[z] <= keepout_m:
            return Conflict("keepout", float(per_zone[z]), keepout_m, describe_zone(g.zones[z]))
    return None


def column(north: float, east: float, top_down: float, bottom_down: float) -> F64:
    """Points ``[P, 3]`` of the vertical column at (north, east) between two heights (NED down)."""
    n = min(MAX_PATH_POINTS, max(2, math.ceil(abs(bottom_down - top_down) / ROUTE_STEP_M) + 1))
    return np.column_stack((np.full(n, north), np.full(n, east), np.linspace(top_down, bottom_down, n)))


def curtain(a_ne: tuple[float, float], b_ne: tuple[float, float], top_down: float, bottom_down: float) -> F64:
    """Points ``[P, 3]`` of the vertical strip over the straight line a → b between two heights:
    every altitude a return between them could fly (a return-altitude cone lowers it, never below
    where the vehicle is)."""
    length = math.hypot(b_ne[0] - a_ne[0], b_ne[1] - a_ne[1])
    nh = min(MAX_PATH_POINTS, max(2, math.ceil(length / ROUTE_STEP_M) + 1))
    nv = min(MAX_PATH_POINTS // 16, max(2, math.ceil(abs(bottom_down - top_down) / (2 * ROUTE_STEP_M)) + 1))
    s = np.linspace(0.0, 1.0, nh)
    ne = np.asarray(a_ne)[None] + s[:, None] * (np.asarray(b_ne) - np.asarray(a_ne))[None]
    downs = np.linspace(top_down, bottom_down, nv)
    return np.column_stack((np.repeat(ne, nv, axis=0), np.tile(downs, nh)))


# ---------------------------------------------------------------------------------------------
# The take-off climb


@dataclass(frozen=True, slots=True)
class ClimbStep:
    """One step of the take-off climb: the velocity to command, and whether the climb is aborted."""

    vel_sp_ned_m_s: tuple[float, float, float]
    abort: str | None = None
    """Why the climb was aborted (this step or an earlier one), or None: the steps then bring the
    vehicle back down over its column."""
    drift_m: float = 0.0
    """Horizontal distance from the take-off column."""
    paused: bool = False
    """Off the column by more than the drift limit: not climbing, pulling back (not aborted yet)."""


class ClimbGuard:
    """Holds the take-off column and watches it: a pure step per climb step.

    Aborted, it stops climbing and comes back down at the mission's landing speed while still
    pulling toward the column, the one place the start-up check showed clear (the autopilot's LAND
    would hold where the vehicle is, inside the margin it just broke: in the emulator, handed a
    vehicle blown toward a building at lift-off by a 14 m/s wind, LAND touched down 0.9 m inside
    it). It descends only where straight down is clear of every zone, and holds its height
    otherwise. The loop then has the autopilot land it (touch down, disarm)."""

    def __init__(
        self,
        mission: Mission,
        column_ne_m: tuple[float, ...],
        target_down_m: float,
        ground_down_m: float = 0.0,
        *,
        gain_1_s: float = CLIMB_HOLD_GAIN_1_S,
        drift_limit_m: float = CLIMB_DRIFT_LIMIT_M,
        drift_grace_s: float = CLIMB_DRIFT_GRACE_S,
    ) -> None:
        self.mission = mission
        self.column_ne_m = (float(column_ne_m[0]), float(column_ne_m[1]))
        self.target_down_m = float(target_down_m)
        self.ground_down_m = float(ground_down_m)
        self.gain_1_s = gain_1_s
        self.drift_limit_m = drift_limit_m
        self.drift_grace_s = drift_grace_s
        self._off_since_s: float | None = None
        """When the vehicle last went beyond the drift limit (None: within it)."""
        self.paused_s = 0.0
        """Seconds the climb has spent paused off its column so far."""
        self._last_s: float | None = None
        self.max_drift_m = 0.0
        """The largest drift from the column seen so far (for the log and the tests)."""
        self.aborted: str | None = None
        """Why the climb was aborted, once it was."""

    def stop_point(self, pos_ned_m: tuple[float, ...], vel_ned_m_s: tuple[float, ...]) -> tuple[float, float]:
        """Where the vehicle stops horizontally if told to now: the latency, then the autopilot's brake."""
        vn, ve = float(vel_ned_m_s[0]), float(vel_ned_m_s[1])
        speed = math.hypot(vn, ve)
        reach = LATENCY_S + speed / (2.0 * self.mission.autopilot.brake_decel_m_s2)
        return float(pos_ned_m[0]) + vn * reach, float(pos_ned_m[1]) + ve * reach

    def _why_abort(
        self, pos: tuple[float, float, float], vel: tuple[float, float], drift: float, now_s: float
    ) -> str | None:
        north, east, down = pos
        here = f"at N {north:.1f} E {east:.1f} m, {-down:.1f} m up"
        if drift <= self.drift_limit_m:
            self._off_since_s = None
        elif self._off_since_s is None:
            self._off_since_s = now_s
        off_s = 0.0 if self._off_since_s is None else now_s - self._off_since_s
        if drift > 2.0 * self.drift_limit_m or off_s > self.drift_grace_s:
            return (
                f"the vehicle drifted {drift:.1f} m off its take-off column ({here}; the climb pauses "
                f"beyond {self.drift_limit_m:g} m and gives up after {self.drift_grace_s:g} s there or "
                f"beyond {2.0 * self.drift_limit_m:g} m): it is not holding the column it was told to"
            )
        sn, se = self.stop_point(pos, (*vel, 0.0))
        top = min(down, self.target_down_m)
        pts = np.concatenate((column(north, east, top, down), column(sn, se, top, down)))
        m = self.mission.margins
        hit = path_conflict(self.mission, pts, fence_m=m.fence_m, keepout_m=m.keepout_m)
        if hit is None:
            return None
        return f"the climb {here}, {drift:.1f} m off its column, was {hit.describe()}"

    def step(
        self, pos_ned_m: tuple[float, ...], vel_ned_m_s: tuple[float, ...] | None, up_m_s: float, now_s: float
    ) -> ClimbStep:
        """The command for this step (at ``now_s``, seconds on any monotonic clock) at ``up_m_s``
        upward holding the column; paused (not climbing) while off it beyond the drift limit; once
        aborted, back down over it."""
        north, east, down = (float(v) for v in pos_ned_m[:3])
        cn, ce = self.column_ne_m
        off_n, off_e = cn - north, ce - east
        drift = math.hypot(off_n, off_e)
        self.max_drift_m = max(self.max_drift_m, drift)
        if not all(math.isfinite(v) for v in (north, east, down)):
            self.aborted = self.aborted or "the position estimate is not finite"
            return ClimbStep((0.0, 0.0, 0.0), self.aborted, drift)
        vel = (0.0, 0.0) if vel_ned_m_s is None else (float(vel_ned_m_s[0]), float(vel_ned_m_s[1]))
        if self.aborted is None:
            self.aborted = self._why_abort((north, east, down), vel, drift, now_s)
        paused = self.aborted is None and self._off_since_s is not None
        if paused and self._last_s is not None:
            self.paused_s += now_s - self._last_s
        self._last_s = now_s
        vn, ve = self.gain_1_s * off_n, self.gain_1_s * off_e
        limit = self.mission.limits.horizontal_m_s
        speed = math.hypot(vn, ve)
        if speed > limit:
            vn, ve = vn * limit / speed, ve * limit / speed
        if self.aborted is None:
            return ClimbStep((vn, ve, 0.0 if paused else -up_m_s), None, drift, paused)
        clear = land_problem(self.mission, (north, east, down), self.ground_down_m, margins=False) is None
        down_m_s = self.mission.fallback.land_speed_m_s if clear else 0.0
        return ClimbStep((vn, ve, down_m_s), self.aborted, drift)


def climb_record(
    state: VehicleState, now_ns: int, t0_ns: int, setpoint: tuple[float, float, float, float], done_ns: int
) -> dict[str, Any]:
    """One climb step with a tick record's fields (no policy, no shield, no margin): kind ``climb``,
    so that the report's figures of the policy's flight leave the take-off out and use it only when
    the policy never flew. ``t_s`` on the clock since ``t0_ns`` (the connect clock)."""
    arrays = state_arrays(state, now_ns)
    nan = float("nan")
    return {
        "k": "climb",
        "t_s": (now_ns - t0_ns) * 1e-9,
        "pos_ned_m": arrays.pos_ned_m[0].tolist(),
        "vel_ned_m_s": arrays.vel_ned_m_s[0].tolist(),
        "age_s": arrays.signal_age_s[0].tolist(),
        "raw_action": list(setpoint),
        "setpoint": list(setpoint),
        "layer": 0,
        "reason": 0,
        "stage": 0,
        "margin_m": 0.0,
        "score_m": nan,
        "miscoverage": nan,
        "alarm": False,
        "slack_m": nan,
        "goal": 0,
        "infer_us": 0.0,
        "tick_us": (done_ns - now_ns) * 1e-3,
        "late_us": 0.0,
        "mode": state.mode,
    }


# ---------------------------------------------------------------------------------------------
# The end action


def rtl_return_alt_m(autopilot: str, params: Mapping[str, float]) -> float | None:
    """The autopilot's return altitude above home (metres), or None when it did not report it."""
    name, unit = RTL_PARAMS.get(autopilot, ("", 0.0))
    if name not in params:
        return None
    return float(params[name]) * unit


def end_action_reads(end_action: str, autopilot: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """What the end action's path depends on, read from the autopilot before it is checked: the
    parameters, and the mission types whose item counts matter (MAV_MISSION_TYPE)."""
    if end_action != "rtl":
        return (), ()
    rally = (MISSION_TYPE_RALLY,)
    if autopilot == "ARDUPILOT":
        return (RTL_PARAMS["ARDUPILOT"][0], RTL_CLIMB_MIN[0], RTL_ROUTE_PARAMS["ARDUPILOT"][0]), rally
    return ((RTL_PARAMS["PX4"][0], RTL_ROUTE_PARAMS["PX4"][0]) if autopilot == "PX4" else ()), rally


def rally_points(state: VehicleState) -> int | None:
    """How many rally points the autopilot said it has (None: it did not say)."""
    return state.mission_counts.get(MISSION_TYPE_RALLY)


@dataclass(frozen=True, slots=True)
class EndChoice:
    """The end action to command, and why the one asked for was not, if it was not."""

    action: str
    """"land", "rtl" or "hold" (LoopConfig.end_action's words)."""
    refused: str | None = None
    """Why the requested action's path is not clear (or cannot be known), or None."""


def land_problem(
    mission: Mission, pos_ned_m: tuple[float, ...], ground_down_m: float, *, margins: bool = True
) -> str | None:
    """Why a vertical descent from ``pos_ned_m`` to the ground is not clear, or None. With
    ``margins`` False only entering the fence's outside or a zone counts (the vehicle is already
    within a margin when a climb is aborted)."""
    north, east, down = (float(v) for v in pos_ned_m[:3])
    m = mission.margins
    fm, km = (m.fence_m, m.keepout_m) if margins else (0.0, 0.0)
    hit = path_conflict(
        mission, column(north, east, down, max(down, ground_down_m)), fence_m=fm, keepout_m=km
    )
    if hit is None:
        return None
    return f"landing straight down from N {north:.1f} E {east:.1f} m ({-down:.1f} m up) would come {hit.describe()}"


def rtl_problem(
    mission: Mission,
    pos_ned_m: tuple[float, ...],
    home_ned_m: tuple[float, float, float] | None,
    autopilot: str,
    params: Mapping[str, float],
    rally_points: int | None,
) -> str | None:
    """Why the autopilot's return to launch from ``pos_ned_m`` is not clear or cannot be known, or
    None: the climb to the return altitude, the straight line home at every altitude up to it, and
    the descent at home, against the fence, the keep-outs and the mission's ceiling. Only a return
    straight home is checked: another route (:data:`RTL_ROUTE_PARAMS` not 0) or any rally point
    (``rally_points``, None when the autopilot did not say) cannot be known, so it is a problem."""
    found = _rtl_check(mission, pos_ned_m, home_ned_m, autopilot, params, rally_points)
    return None if found is None else found[0]


def _rtl_check(
    mission: Mission,
    pos_ned_m: tuple[float, ...],
    home_ned_m: tuple[float, float, float] | None,
    autopilot: str,
    params: Mapping[str, float],
    rally_points: int | None,
) -> tuple[str, str] | None:
    """(why, fix) of :func:`rtl_problem`."""
    other = "pass --end land or --end hold"
    if home_ned_m is None:
        return (
            "the autopilot's home is not known to the agent (the vehicle was armed before the agent "
            "connected, so home may be anywhere): its return path cannot be checked",
            other,
        )
    name, unit = RTL_PARAMS.get(autopilot, ("its return altitude", 0.0))
    ret = rtl_return_alt_m(autopilot, params)
    if ret is None:
        return f"the autopilot did not report {name}: the altitude of its return cannot be known", other
    route = _rtl_route_problem(autopilot, params, rally_points, other)
    if route is not None:
        return route
    north, east, down = (float(v) for v in pos_ned_m[:3])
    home_alt = 0.0 - home_ned_m[2]  # 0.0 - : never "-0.0 m" in a message
    climb_min = (
        float(params.get(RTL_CLIMB_MIN[0], 0.0)) * RTL_CLIMB_MIN[1] if autopilot == "ARDUPILOT" else 0.0
    )
    ret_alt = max(-down + climb_min, home_alt + ret)
    top = mission.geofence.ceiling_alt_m - mission.margins.altitude_m
    if ret_alt > top:
        most = math.floor((top - home_alt) / unit * 10.0) / 10.0
        return (
            f"the return climbs to {ret_alt:.1f} m ({name} {params[name]:g} above home at {home_alt:.1f} m), "
            f"above the mission's ceiling less its margin ({top:g} m)",
            f"set {name} to at most {most:g} on the autopilot, or {other}",
        )
    m = mission.margins
    legs = (
        ("the climb to the return altitude", column(north, east, -ret_alt, down)),
        ("the straight line home", curtain((north, east), (home_ned_m[0], home_ned_m[1]), -ret_alt, down)),
        ("the descent at home", column(home_ned_m[0], home_ned_m[1], -ret_alt, home_ned_m[2])),
    )
    for what, pts in legs:
        hit = path_conflict(mission, pts, fence_m=m.fence_m, keepout_m=m.keepout_m)
        if hit is not None:
            return (
                f"{what} from N {north:.1f} E {east:.1f} m to home N {home_ned_m[0]:.1f} E {home_ned_m[1]:.1f} "
                f"at up to {ret_alt:.1f} m would come {hit.describe()}",
                f"{other}, or take off from (and so return to) a home whose way back is clear",
            )
    return None


def _rtl_route_problem(
    autopilot: str, params: Mapping[str, float], rally_points: int | None, other: str
) -> tuple[str, str] | None:
    """(why, fix) when the return may not go straight home, or where it goes cannot be known."""
    if autopilot in RTL_ROUTE_PARAMS:
        name, instead = RTL_ROUTE_PARAMS[autopilot]
        if name not in params:
            return f"the autopilot did not report {name}: the route of its return cannot be known", other
        if params[name] != 0:
            return (
                f"{name} is {params[name]:g}: the return flies {instead}, which the agent does not check",
                f"set {name} to 0 on the autopilot, or {other}",
            )
    if rally_points is None:
        return (
            "the autopilot did not say how many rally points it has (MISSION_COUNT of the rally "
            "list): its return may go to one of them, which the agent does not check",
            other,
        )
    if rally_points > 0:
        return (
            f"the autopilot has {rally_points} rally point{'s' * (rally_points != 1)}: its return "
            "goes to the nearest of them or home, which the agent does not check",
            f"clear the rally points (QGroundControl's Rally tab, MAVProxy `rally clear`), or {other}",
        )
    return None


def choose_end_action(
    mission: Mission, requested: str, vehicle: VehicleState, home_ned_m: tuple[float, float, float] | None
) -> EndChoice:
    """The end action to command from where ``vehicle`` is: ``requested`` when its path is clear,
    else Hold (the autopilot holds where the shield's last certified setpoint left the vehicle).
    The autopilot's return settings are those ``vehicle`` carries (:func:`end_action_reads`)."""
    if requested == "hold":
        return EndChoice("hold")
    pos_ned_m = None if vehicle.pos_ned_m is None else vehicle.pos_ned_m.value
    if pos_ned_m is None or not all(math.isfinite(float(v)) for v in pos_ned_m[:3]):
        return EndChoice("hold", f"without a position estimate the {requested} path cannot be checked")
    ground = home_ned_m[2] if home_ned_m is not None else 0.0
    why = (
        land_problem(mission, pos_ned_m, max(ground, 0.0))
        if requested == "land"
        else rtl_problem(
            mission, pos_ned_m, home_ned_m, vehicle.autopilot.name, vehicle.params, rally_points(vehicle)
        )
    )
    return EndChoice(requested) if why is None else EndChoice("hold", why)


def end_action_refusal(
    mission: Mission, requested: str, vehicle: VehicleState, home_ned_m: tuple[float, float, float] | None
) -> str | None:
    """Why ``requested`` can never be flown as asked at the end of this mission (from its final
    waypoint, where a completed mission ends) with the autopilot settings ``vehicle`` carries, with
    the fix; None when it can."""
    if requested == "hold":
        return None
    last = mission.waypoints_ned_m[-1]
    ground = max(home_ned_m[2], 0.0) if home_ned_m is not None else 0.0
    if requested == "land":
        why = land_problem(mission, last, ground)
        if why is None:
            return None
        return (
            f"--end land at the mission's final waypoint: {why}; the agent would hold there instead of "
            f"landing; pass --end hold, or move the last waypoint of [route] clear of what lies below it"
        )
    found = _rtl_check(
        mission, last, home_ned_m, vehicle.autopilot.name, vehicle.params, rally_points(vehicle)
    )
    if found is None:
        return None
    why, fix = found
    return (
        f"--end rtl from the mission's final waypoint: {why}; the agent would hold there instead of "
        f"returning; {fix}"
    )


__all__ = [
    "CLIMB_DRIFT_LIMIT_M",
    "CLIMB_HOLD_GAIN_1_S",
    "MISSION_TYPE_RALLY",
    "RTL_ROUTE_PARAMS",
    "ClimbGuard",
    "ClimbStep",
    "Conflict",
    "EndChoice",
    "choose_end_action",
    "climb_record",
    "column",
    "curtain",
    "describe_zone",
    "end_action_reads",
    "end_action_refusal",
    "land_problem",
    "path_conflict",
    "rally_points",
    "rtl_problem",
    "rtl_return_alt_m",
]
