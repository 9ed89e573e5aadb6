"""Checks of one flight's settings against the mission, before any link is opened.

Every number given on the command line that moves the vehicle or bounds the flight is checked
here against the mission it is flown with, so that a typo (``--takeoff-alt 100`` under a 30 m
ceiling, ``--takeoff-alt -5``) is refused on the ground, never discovered in the air. The mission
file's own fields are validated by :mod:`edge_agent.mission`; the ones that relate two of them
for the take-off and the fallback are checked here as well.
"""

from __future__ import annotations

import math

from edge_agent.errors import ConfigError
from edge_agent.mission import Mission
from edge_agent.unshielded import column, path_conflict
from firmware_bridge.types import Autopilot

MIN_STREAM_RATE_HZ = 2.0
"""PX4 leaves (or refuses) OFFBOARD when the setpoint stream is not faster than 2 Hz (REFERENCE.md)."""


def takeoff_band_m(mission: Mission) -> tuple[float, float]:
    """The take-off heights (up-positive, metres above the origin) the mission allows: the
    geofence's altitude band less the altitude margin, and above the ground."""
    fence, margin = mission.geofence, mission.margins.altitude_m
    low = max(fence.floor_alt_m + margin, 0.0)
    high = fence.ceiling_alt_m - margin
    ap_fence = mission.autopilot.fence
    if ap_fence is not None:
        high = min(high, ap_fence.ceiling_alt_m - margin)
    return low, high


def check_takeoff_alt(takeoff_alt_m: float, mission: Mission) -> None:
    """Refuse a take-off height outside the mission's altitude band (ConfigError naming band and fix)."""
    low, high = takeoff_band_m(mission)
    fence = mission.geofence
    band = (
        f"the mission's altitude band is {fence.floor_alt_m:g}–{fence.ceiling_alt_m:g} m (floor–ceiling) "
        f"with a {mission.margins.altitude_m:g} m altitude margin, so take-off heights {low:g}–{high:g} m "
        f"are allowed"
    )
    if not math.isfinite(takeoff_alt_m):
        raise ConfigError(f"--takeoff-alt must be a finite height in metres, got {takeoff_alt_m}; {band}")
    if takeoff_alt_m <= 0.0:
        raise ConfigError(
            f"--takeoff-alt {takeoff_alt_m:g} m is not above the ground (heights are up-positive, metres "
            f"above the origin); {band}: pass --takeoff-alt within it"
        )
    if takeoff_alt_m > high:
        raise ConfigError(
            f"--takeoff-alt {takeoff_alt_m:g} m is above the mission's ceiling: {band}; pass --takeoff-alt "
            f"within it, or raise ceiling_alt_m in the mission's [geofence] (and the autopilot's fence)"
        )
    if takeoff_alt_m < low:
        raise ConfigError(
            f"--takeoff-alt {takeoff_alt_m:g} m is below the mission's floor: {band}; pass --takeoff-alt "
            f"within it (the shield takes over only inside the band), or lower floor_alt_m in [geofence]"
        )


def check_flight_settings(
    mission: Mission,
    *,
    takeoff_alt_m: float,
    rate_hz: float,
    max_duration_s: float,
) -> None:
    """Every physical setting of one flight against the mission; ConfigError on the first bad one."""
    check_takeoff_alt(takeoff_alt_m, mission)
    if not rate_hz > MIN_STREAM_RATE_HZ:
        raise ConfigError(
            f"--rate {rate_hz:g} Hz is too slow: the autopilot needs setpoints faster than "
            f"{MIN_STREAM_RATE_HZ:g} Hz to stay in OFFBOARD/GUIDED; leave --rate out (the bundle's rate)"
        )
    if math.isnan(max_duration_s) or max_duration_s <= 0.0:
        raise ConfigError(
            f"--max-duration must be a positive number of seconds (leave it out for no limit), got "
            f"{max_duration_s:g}"
        )
    plan, limits = mission.fallback, mission.limits
    if plan.land_speed_m_s > limits.down_m_s:
        raise ConfigError(
            f"the mission's [fallback] land_speed_m_s {plan.land_speed_m_s:g} m/s exceeds its [limits] "
            f"down_speed_m_s {limits.down_m_s:g} m/s; lower the landing speed or raise the limit"
        )


__all__ = ["MIN_STREAM_RATE_HZ", "check_flight_settings", "check_takeoff_alt", "takeoff_band_m"]


_STICK_MODES = {0: "Position", 1: "Altitude", 2: "Manual"}
"""PX4 COM_OBL_RC_ACT values that hand the vehicle to a pilot's sticks."""
_NO_RC = (1, 4)
"""PX4 COM_RC_IN_MODE values with no RC receiver: joystick over MAVLink only (1), none (4)."""


def failsafe_refusal(autopilot: str, params: dict[str, float]) -> str | None:
    """Why the autopilot's own reaction to the agent falling silent cannot stop the vehicle where the
    shield assumes it stops, with the fix; None when it can (or the parameters do not say).

    PX4's offboard-loss action COM_OBL_RC_ACT defaults to Position mode, which follows the pilot's
    sticks. With no RC (COM_RC_IN_MODE joystick-only or none, as in SIH) Position mode cannot run and
    PX4 falls to a descent that holds zero *estimated* velocity, not a position: on real PX4 SIH,
    whose velocity estimate was biased by 0.2 m/s, the vehicle drifted 1.9 m after a kill, 0.26 m
    into a keep-out (experiments.firmware_kill, docs/safety.md). Hold (5) and Land (4) hold a
    position on the position estimate, and with Hold 0 of 40 kills breached."""
    if autopilot != "PX4" or "COM_OBL_RC_ACT" not in params:
        return None
    action, rc_mode = int(params["COM_OBL_RC_ACT"]), int(params.get("COM_RC_IN_MODE", -1))
    if action not in _STICK_MODES or rc_mode not in _NO_RC:
        return None
    return (
        f"PX4 would fall to {_STICK_MODES[action]} mode if the agent went silent (COM_OBL_RC_ACT {action}) "
        f"but it has no RC (COM_RC_IN_MODE {rc_mode}): that mode cannot run without sticks, and PX4 then "
        f"drifts with its velocity estimate instead of stopping where the shield assumes; set COM_OBL_RC_ACT "
        f"to 5 (Hold) or 4 (Land) before flying (QGroundControl's parameters, MAVProxy `param set "
        f"COM_OBL_RC_ACT 5`, or `edge-agent sitl --firmware px4 --param COM_OBL_RC_ACT=5`)"
    )


_FLAVOUR_AUTOPILOT = {"px4": "PX4", "ardupilot": "ARDUPILOT"}
_DEMO_MISSION = {"px4": "demo.toml", "ardupilot": "demo_ardupilot.toml"}


def flavour_refusal(mission: Mission, autopilot: Autopilot, url: str) -> str | None:
    """Why a mission for one autopilot must not be flown on the ``autopilot`` whose HEARTBEAT is
    heard on ``url`` (the shield's silence model comes from the flavour), with the fix; None when
    they agree."""
    want = mission.autopilot.flavour
    if _FLAVOUR_AUTOPILOT[want] == autopilot.name:
        return None
    other = {"PX4": "px4", "ARDUPILOT": "ardupilot"}.get(autopilot.name, autopilot.name.lower())
    return (
        f"the mission is for {want} ([autopilot] flavour = {want!r}) but the vehicle on {url} "
        f"is {autopilot.name} (its HEARTBEAT): the shield would assume {want}'s behaviour when the agent "
        f"falls silent; fly a mission with flavour = {other!r} and that autopilot's silence_hold_s and "
        f"brake_decel_m_s2 (e.g. examples/missions/{_DEMO_MISSION.get(other, 'demo.toml')})"
    )


def takeoff_column_refusal(
    mission: Mission, pos_ned_m: tuple[float, ...], takeoff_alt_m: float
) -> str | None:
    """Why the vertical climb from ``pos_ned_m`` to ``takeoff_alt_m`` is not safe to fly, or None.

    The take-off climb is not the policy's: the shield takes over above the mission's floor. So
    the column the climb passes through must keep the mission's margins from the fence and from
    every keep-out zone (a vehicle parked under the mast's overhang, or beside the fence, would
    climb into it unfiltered). The climb holds that column and is watched while it flies
    (edge_agent.unshielded.ClimbGuard)."""
    north, east, down = pos_ned_m
    top_down = -takeoff_alt_m
    if down <= top_down:
        return None  # already at or above the take-off height: no climb
    m = mission.margins
    hit = path_conflict(
        mission, column(north, east, top_down, down), fence_m=m.fence_m, keepout_m=m.keepout_m
    )
    if hit is None:
        return None
    where = (
        f"the vehicle stands at N {north:.1f} E {east:.1f} m and climbs straight up to {takeoff_alt_m:g} m"
    )
    fix = "move the vehicle inside the fence" if hit.kind == "fence" else "move the vehicle clear of it"
    return f"{where}, {hit.describe()}; the climb is not shielded: {fix} before flying"
