"""What differs between the emulated firmwares, as data: modes, parameters, failsafe numbering.

:class:`Rules` (``PX4_RULES``, ``ARDUPILOT_RULES``, ``CUSTOM_RULES``) and the small value types
the autopilot core (:mod:`sitl.autopilot`) and the wire flavours share. Every figure is checked
against REFERENCE.md, ../shared/firmware/README.md and the real ArduCopter recordings in
``data/ardupilot`` (docs/sitl_autopilot.md says where each one comes from).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum

from firmware_bridge.custom_protocol import AckResult
from sitl.sim import SetpointKind

#: MAV_RESULT, the answer to a command: the custom protocol's enum, numbered like MAV_RESULT, so
#: both flavours of the emulator answer with the one definition.
MavResult = AckResult


class Mode(StrEnum):
    """Normalised flight modes (the names ``VehicleState.mode`` uses)."""

    STABILIZE = "STABILIZE"
    ALTCTL = "ALTCTL"
    POSCTL = "POSCTL"
    HOLD = "HOLD"
    OFFBOARD = "OFFBOARD"
    GUIDED = "GUIDED"
    TAKEOFF = "TAKEOFF"
    LAND = "LAND"
    RTL = "RTL"
    MISSION = "MISSION"
    """Flying the uploaded mission (PX4 AUTO.MISSION, ArduCopter AUTO)."""


SR_GROUPS = (
    "RAW_SENS",
    "EXT_STAT",
    "RC_CHAN",
    "RAW_CTRL",
    "POSITION",
    "EXTRA1",
    "EXTRA2",
    "EXTRA3",
    "PARAMS",
    "ADSB",
)
"""ArduPilot's stream groups, in the order of its SRx_ parameters (GCS_MAVLink_Parameters::var_info)."""


class Action(StrEnum):
    """What a failsafe does."""

    NONE = "none"
    WARN = "warn"
    POSCTL = "posctl"
    ALTCTL = "altctl"
    HOLD = "hold"
    RETURN = "return"
    LAND = "land"
    DISARM = "disarm"


class Severity(IntEnum):
    """MAV_SEVERITY of a status text."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


class ParamType(IntEnum):
    """MAV_PARAM_TYPE used to report a parameter."""

    INT8 = 2
    INT16 = 4
    INT32 = 6
    REAL32 = 9


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One autopilot parameter: name, default value and how the firmware reports its type."""

    name: str
    default: float
    mav_type: ParamType = ParamType.REAL32


@dataclass(frozen=True, slots=True)
class StatusText:
    """A STATUSTEXT the autopilot wants to send."""

    severity: Severity
    text: str


@dataclass(frozen=True, slots=True)
class Target:
    """An external (offboard / guided) setpoint as received, in NED.

    ``values`` follow :meth:`Sim.set_setpoint`'s layout for ``kind``; ``yaw_rad`` (an absolute
    heading the autopilot steers to) and ``yaw_rate_rad_s`` are NaN when not commanded.
    """

    kind: SetpointKind
    values: tuple[float, float, float, float, float]
    received_s: float
    yaw_rad: float = math.nan
    yaw_rate_rad_s: float = math.nan


@dataclass(frozen=True, slots=True)
class Rules:
    """How one firmware family behaves, as data (figures and sources in docs/sitl_autopilot.md)."""

    name: str
    family: str
    """Whose parameter names and failsafe numbering apply: "px4" or "ardupilot"."""
    external_mode: Mode
    """The mode in which external setpoints fly the vehicle (OFFBOARD / GUIDED)."""
    initial_mode: Mode
    params: tuple[ParamSpec, ...]
    loss_timeout_param: str
    """Seconds without setpoints before the loss rule fires (COM_OF_LOSS_T / GUID_TIMEOUT)."""
    loss_brakes_in_mode: bool
    """True: ArduPilot (stop, stay in GUIDED; position targets never time out).
    False: PX4 (leave OFFBOARD into the failsafe action; every target kind times out)."""
    external_needs_stream: bool
    """PX4: while armed, entering the external mode needs a setpoint received within the last
    ``loss_timeout_param`` seconds (else TEMPORARILY_REJECTED); one setpoint is enough (measured
    on real PX4 SIH, ../shared/firmware/README.md). While disarmed the mode is accepted without
    one, and arming in it waits for setpoints."""
    shape_accel_m_s2: float
    """Acceleration limit of the autopilot's own velocity-target shaping; 0 = no shaping (the
    target goes straight to the Sim's velocity loop). With shaping, velocity targets are flown
    ArduCopter-style: a jerk-limited trajectory tracked by a position/velocity loop with
    acceleration feed-forward (``GUIDED_KP``, ``GUIDED_KV``, ``GUIDED_KI``)."""
    shape_jerk_m_s3: float
    takeoff_needs_armed: bool
    """ArduPilot answers NAV_TAKEOFF while disarmed with FAILED; PX4 switches to TAKEOFF."""
    takeoff_in_external_mode_only: bool
    takeoff_mode: Mode | None
    """Mode entered by NAV_TAKEOFF (PX4 TAKEOFF); None = stay in the current mode (ArduPilot)."""
    after_takeoff_mode: Mode | None
    takeoff_alt_param: str
    takeoff_spool_s: float
    """Delay between the takeoff command and lift-off (measured ~3 s in ArduCopter SITL)."""
    climb_speed_m_s: float
    land_speed_param: str
    land_speed_scale: float
    """Multiplier that turns the land-speed parameter into m/s (ArduPilot stores cm/s)."""
    rtl_alt_param: str
    cruise_speed_param: str
    """Horizontal speed of missions, goto and RTL (PX4 MPC_XY_CRUISE m/s, ArduPilot WPNAV_SPEED cm/s)."""
    acceptance_radius_param: str
    """Distance at which a mission waypoint counts as reached (NAV_ACC_RAD m, WPNAV_RADIUS cm)."""
    distance_scale: float
    """Multiplier that turns cruise-speed and radius parameters into m/s and m (ArduPilot: cm)."""
    mission_has_home_item: bool
    """ArduPilot: mission item 0 is home and is not flown; PX4 flies from item 0."""
    rtl_alt_scale: float
    land_detect_s: float
    """Seconds on the ground (after flying) before landed_state becomes ON_GROUND."""
    disarm_after_land_s: float
    """Further seconds before the automatic disarm after landing in LAND / RTL."""
    disarm_preflight_param: str
    arm_not_ready_result: MavResult
    arm_not_ready_texts: tuple[str, ...]
    arm_texts_after_ack: bool
    """ArduPilot sends the FAILED ACK first and the "Arm: ..." texts right after (recording)."""
    arm_text: str
    disarm_text: str
    mode_reject_text: str
    """Format string with ``{mode}``: the text sent when a mode switch is refused."""
    loss_action_param: str | None
    loss_action_codes: Mapping[int, Action]
    fence_action_param: str
    fence_action_codes: Mapping[int, Action]
    ready_delay_s: float
    """Boot to "position estimate ready" (arming allowed), as measured on the real firmware after
    a cold boot (PX4 SIH: ~5 s after its first HEARTBEAT; ArduCopter: EKF using GPS ~42 s)."""
    fast_ready_delay_s: float
    """The same for a fast boot (``--fast-boot``, ``make_vehicle(fast_boot=True)``): for tests."""
    boot_status: int
    """MAV_STATE the HEARTBEAT reports while the firmware starts (PX4 UNINIT 0, ArduCopter BOOT 1)."""
    boot_status_s: float
    """How long it reports it (measured: the first one or two HEARTBEATs)."""
    arm_boot_texts: tuple[str, ...] = ()
    """The refusal texts while the firmware starts (ArduCopter 'System not initialised')."""
    arm_texts_rotate: bool = False
    """ArduCopter names one failing pre-arm check per attempt, a different one as its sensors
    settle; True: one of ``arm_not_ready_texts`` per attempt, in turn (after a fast boot only the
    last, the position estimate's). False (PX4): all of them, every attempt."""
    no_rc_descends: bool = False
    """PX4: a stick mode (Position, Altitude) entered by a failsafe with no RC (COM_RC_IN_MODE 1 or 4)
    cannot run ('Matching flight task was not able to run'): the vehicle brakes and descends to a
    landing while the HEARTBEAT keeps naming the mode (real PX4 SIH, ../shared/firmware/README.md)."""


_PX4_LOSS_ACTIONS = {
    0: Action.POSCTL,
    1: Action.ALTCTL,
    2: Action.POSCTL,  # Manual without RC sticks behaves as a hold here
    3: Action.RETURN,
    4: Action.LAND,
    5: Action.HOLD,
    6: Action.DISARM,  # Terminate
    7: Action.DISARM,
}

PX4_RULES = Rules(
    name="px4",
    family="px4",
    external_mode=Mode.OFFBOARD,
    initial_mode=Mode.HOLD,  # real PX4 SIH boots in AUTO.LOITER (Hold)
    params=(
        ParamSpec("COM_OF_LOSS_T", 1.0),
        ParamSpec("COM_OBL_RC_ACT", 0, ParamType.INT32),
        ParamSpec("COM_RC_IN_MODE", 3, ParamType.INT32),  # PX4's default; its SIH airframe sets 1 (no RC)
        ParamSpec("COM_DISARM_PRFLT", 10.0),
        ParamSpec("COM_DISARM_LAND", 2.0),
        ParamSpec("COM_LOW_BAT_ACT", 3, ParamType.INT32),
        ParamSpec("BAT_LOW_THR", 0.15),
        ParamSpec("BAT_CRIT_THR", 0.07),
        ParamSpec("BAT_EMERGEN_THR", 0.05),
        ParamSpec("GF_ACTION", 2, ParamType.INT32),
        ParamSpec("GF_MAX_HOR_DIST", 0.0),
        ParamSpec("GF_MAX_VER_DIST", 0.0),
        ParamSpec("MIS_TAKEOFF_ALT", 2.5),
        ParamSpec("MPC_LAND_SPEED", 0.7),
        ParamSpec("RTL_RETURN_ALT", 60.0),
        ParamSpec("RTL_TYPE", 0, ParamType.INT32),  # home or the nearest rally point, straight
        ParamSpec("MAV_SYS_ID", 1, ParamType.INT32),
        ParamSpec("MPC_XY_CRUISE", 5.0),
        ParamSpec("NAV_ACC_RAD", 2.0),
    ),
    loss_timeout_param="COM_OF_LOSS_T",
    loss_brakes_in_mode=False,
    external_needs_stream=True,
    shape_accel_m_s2=0.0,
    shape_jerk_m_s3=0.0,
    takeoff_needs_armed=False,
    takeoff_in_external_mode_only=False,
    takeoff_mode=Mode.TAKEOFF,
    after_takeoff_mode=Mode.HOLD,
    takeoff_alt_param="MIS_TAKEOFF_ALT",
    takeoff_spool_s=0.5,
    climb_speed_m_s=1.5,
    land_speed_param="MPC_LAND_SPEED",
    land_speed_scale=1.0,
    rtl_alt_param="RTL_RETURN_ALT",
    cruise_speed_param="MPC_XY_CRUISE",
    acceptance_radius_param="NAV_ACC_RAD",
    distance_scale=1.0,
    mission_has_home_item=False,
    rtl_alt_scale=1.0,
    land_detect_s=1.0,
    disarm_after_land_s=2.0,
    disarm_preflight_param="COM_DISARM_PRFLT",
    arm_not_ready_result=MavResult.TEMPORARILY_REJECTED,
    arm_not_ready_texts=("Arming denied: Preflight Fail: No valid position estimate",),
    arm_boot_texts=("Arming denied: Resolve system health failures first",),  # real SIH at 0.5 s
    arm_texts_after_ack=False,
    arm_text="Armed by external command",
    disarm_text="Disarmed by external command",
    mode_reject_text="Switching to {mode} is currently not available",
    loss_action_param="COM_OBL_RC_ACT",
    loss_action_codes=_PX4_LOSS_ACTIONS,
    fence_action_param="GF_ACTION",
    fence_action_codes={
        0: Action.NONE,
        1: Action.WARN,
        2: Action.HOLD,
        3: Action.RETURN,
        4: Action.DISARM,
        5: Action.LAND,
    },
    ready_delay_s=5.0,
    fast_ready_delay_s=1.0,
    boot_status=0,
    boot_status_s=2.0,
    no_rc_descends=True,
)
"""PX4 v1.14-like multicopter behaviour."""

ARDUPILOT_RULES = Rules(
    name="ardupilot",
    family="ardupilot",
    external_mode=Mode.GUIDED,
    initial_mode=Mode.STABILIZE,
    params=(
        ParamSpec("GUID_TIMEOUT", 3.0),
        ParamSpec("DISARM_DELAY", 10, ParamType.INT8),
        ParamSpec("LAND_SPEED", 50, ParamType.INT16),
        ParamSpec("RTL_ALT", 1500, ParamType.INT32),
        ParamSpec("RTL_ALT_TYPE", 0, ParamType.INT8),  # RTL_ALT above home (1: above terrain)
        ParamSpec("RALLY_TOTAL", 0, ParamType.INT8),  # rally points (the rally list's count)
        ParamSpec("FENCE_ENABLE", 0, ParamType.INT8),
        ParamSpec("FENCE_ACTION", 1, ParamType.INT8),
        ParamSpec("FENCE_RADIUS", 300.0),
        ParamSpec("FENCE_ALT_MAX", 100.0),
        ParamSpec("BATT_CAPACITY", 3300, ParamType.INT32),
        ParamSpec("BATT_LOW_MAH", 0.0),
        ParamSpec("BATT_CRT_MAH", 0.0),
        ParamSpec("BATT_FS_LOW_ACT", 0, ParamType.INT8),
        ParamSpec("BATT_FS_CRT_ACT", 0, ParamType.INT8),
        ParamSpec("SYSID_THISMAV", 1, ParamType.INT16),
        ParamSpec("WPNAV_SPEED", 1000.0),
        ParamSpec("WPNAV_RADIUS", 200.0),
        # stream rates (Hz) of serial port 0, the emulator's one link; 0 by default, as in
        # ArduCopter (GCS_MAVLink_Parameters): nothing streams until a client asks
        *(ParamSpec(f"SR0_{group}", 0, ParamType.INT16) for group in SR_GROUPS),
    ),
    loss_timeout_param="GUID_TIMEOUT",
    loss_brakes_in_mode=True,
    external_needs_stream=False,
    shape_accel_m_s2=2.0,
    shape_jerk_m_s3=3.0,
    takeoff_needs_armed=True,
    takeoff_in_external_mode_only=True,
    takeoff_mode=None,
    after_takeoff_mode=None,
    takeoff_alt_param="",
    takeoff_spool_s=3.0,
    climb_speed_m_s=2.5,
    land_speed_param="LAND_SPEED",
    land_speed_scale=0.01,
    rtl_alt_param="RTL_ALT",
    cruise_speed_param="WPNAV_SPEED",
    acceptance_radius_param="WPNAV_RADIUS",
    distance_scale=0.01,
    mission_has_home_item=True,
    rtl_alt_scale=0.01,
    land_detect_s=1.0,
    disarm_after_land_s=1.1,
    disarm_preflight_param="DISARM_DELAY",
    arm_not_ready_result=MavResult.FAILED,
    # what real ArduCopter SITL named, one per attempt, while its EKF settled (conformance suite)
    arm_not_ready_texts=(
        "Arm: Accels inconsistent",
        "Arm: AHRS: waiting for home",
        "Arm: Gyros inconsistent",
        "Arm: Need Position Estimate",
    ),
    arm_texts_after_ack=True,
    arm_text="Arming motors",
    disarm_text="Disarming motors",
    mode_reject_text="Flight mode change failed",
    loss_action_param=None,
    loss_action_codes={},
    fence_action_param="FENCE_ACTION",
    fence_action_codes={
        0: Action.WARN,
        1: Action.RETURN,
        2: Action.LAND,
        3: Action.RETURN,
        4: Action.HOLD,
        5: Action.LAND,
    },
    ready_delay_s=42.0,
    fast_ready_delay_s=2.0,
    boot_status=1,
    boot_status_s=2.0,
    arm_boot_texts=("Arm: System not initialised",),
    arm_texts_rotate=True,
)
"""ArduCopter 4.x behaviour, as recorded in data/ardupilot (GUIDED = custom_mode 4)."""

GUIDED_KP = 0.5
"""Position-error gain (1/s) of the shaped guided-velocity tracker."""
GUIDED_KV = 4.0
"""Velocity-error gain (1/s) of the shaped guided-velocity tracker."""
GUIDED_KI = 1.0
"""Velocity-error integral gain (1/s²): removes the drag/wind steady-state error."""
# The shaping limits and gains were fitted (grid search, docs/sitl_autopilot.md) so that this Sim's
# X500 reproduces the ArduCopter response in data/ardupilot/flight.tlog; they are not ArduPilot's
# own parameter values, which act on a different vehicle model.

CUSTOM_RULES = replace(
    PX4_RULES,
    name="custom",
    initial_mode=Mode.POSCTL,
    external_needs_stream=False,
    ready_delay_s=PX4_RULES.fast_ready_delay_s,  # no real firmware to measure: the short one
    boot_status=3,
    boot_status_s=0.0,
    arm_boot_texts=(),
    no_rc_descends=False,
)
"""Custom firmware: PX4-like failsafes and parameters, OFFBOARD without a setpoint pre-stream
(the bridge's custom adapter does not pre-stream)."""

_BATT_ACT_ARDUPILOT = {
    0: Action.NONE,
    1: Action.LAND,
    2: Action.RETURN,
    3: Action.RETURN,
    4: Action.RETURN,
    5: Action.DISARM,
}


def with_params(rules: Rules, **defaults: float) -> Rules:
    """A copy of ``rules`` whose parameter defaults are replaced (names must exist)."""
    names = {p.name for p in rules.params}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise KeyError(f"unknown parameters {unknown}; {rules.name} has {sorted(names)}")
    specs = tuple(replace(p, default=defaults.get(p.name, p.default)) for p in rules.params)
    return replace(rules, params=specs)


def battery_stages(rules: Rules, param: Callable[[str], float]) -> list[tuple[float, Action, str]]:
    """The battery failsafe's stages, mildest first: (remaining fraction at or below which it
    fires, action, status text), from the firmware's parameters (-1 = stage disabled)."""
    if rules.family == "px4":
        act = int(param("COM_LOW_BAT_ACT"))
        return [
            (param("BAT_LOW_THR"), Action.WARN, "Low battery level, return advised"),
            (
                param("BAT_CRIT_THR"),
                {0: Action.WARN, 2: Action.LAND, 3: Action.RETURN}.get(act, Action.WARN),
                "Critical battery level, executing failsafe",
            ),
            (
                param("BAT_EMERGEN_THR"),
                Action.LAND if act in (2, 3) else Action.WARN,
                "Emergency battery level, landing",
            ),
        ]
    cap = param("BATT_CAPACITY")
    low_mah, crt_mah = param("BATT_LOW_MAH"), param("BATT_CRT_MAH")
    return [
        (
            low_mah / cap if cap > 0 and low_mah > 0 else -1.0,
            _BATT_ACT_ARDUPILOT.get(int(param("BATT_FS_LOW_ACT")), Action.NONE),
            "Battery 1 is low",
        ),
        (
            crt_mah / cap if cap > 0 and crt_mah > 0 else -1.0,
            _BATT_ACT_ARDUPILOT.get(int(param("BATT_FS_CRT_ACT")), Action.NONE),
            "Battery 1 is critical",
        ),
    ]


def fence_limits(rules: Rules, param: Callable[[str], float]) -> tuple[float, float, Action]:
    """The autopilot's geofence: (horizontal radius m, max altitude m, action); 0 = that limit off."""
    if rules.family == "px4":
        action = rules.fence_action_codes.get(int(param("GF_ACTION")), Action.HOLD)
        return param("GF_MAX_HOR_DIST"), param("GF_MAX_VER_DIST"), action
    if param("FENCE_ENABLE") < 0.5:
        return 0.0, 0.0, Action.NONE
    action = rules.fence_action_codes.get(int(param("FENCE_ACTION")), Action.RETURN)
    return param("FENCE_RADIUS"), param("FENCE_ALT_MAX"), action
