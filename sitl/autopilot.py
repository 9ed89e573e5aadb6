"""The flight controller the built-in SITL pretends to be: modes, arming, failsafes, schedules.

This is the protocol-free core behind every flavour (PX4 and ArduPilot over MAVLink, custom
firmware over COBS+msgpack). It owns one simulated vehicle (a :class:`~sitl.sim.Sim` of batch
size 1), advances it in the Sim's fixed steps and runs the autopilot's own logic at
``LOGIC_RATE_HZ``: the mode state machine, the offboard/guided setpoint rules, the land detector,
the geofence and battery failsafes. The wire flavours only translate messages to calls on
:class:`Autopilot` and its state back to messages.

What differs between PX4 and ArduPilot is data (:class:`Rules`, ``PX4_RULES`` and
``ARDUPILOT_RULES``), measured against REFERENCE.md and the real ArduCopter recordings in
``data/ardupilot`` (see docs/sitl_autopilot.md for each figure and where it comes from).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.custom_protocol import AckResult
from firmware_bridge.frames import yaw_from_quat
from firmware_bridge.types import LandedState
from sitl.sim import SetpointKind, Sim

LOGIC_RATE_HZ = 50.0
"""Rate of the autopilot's own logic (mode machine, failsafes, setpoint shaping)."""

GRAVITY_M_S2 = 9.80665

F64 = NDArray[np.float64]


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
    """PX4: entering the external mode needs a setpoint stream above ``stream_min_rate_hz``
    for ``stream_warmup_s`` first (else TEMPORARILY_REJECTED)."""
    stream_min_rate_hz: float
    stream_warmup_s: float
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
    default_ready_delay_s: float
    """Boot to "position estimate ready" (arming allowed); a short test default."""
    real_ready_delay_s: float
    """The measured real figure (ArduCopter: EKF using GPS ~42 s after a cold boot)."""


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
    initial_mode=Mode.POSCTL,
    params=(
        ParamSpec("COM_OF_LOSS_T", 1.0),
        ParamSpec("COM_OBL_RC_ACT", 0, ParamType.INT32),
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
        ParamSpec("MAV_SYS_ID", 1, ParamType.INT32),
    ),
    loss_timeout_param="COM_OF_LOSS_T",
    loss_brakes_in_mode=False,
    external_needs_stream=True,
    stream_min_rate_hz=2.0,
    stream_warmup_s=1.0,
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
    rtl_alt_scale=1.0,
    land_detect_s=1.0,
    disarm_after_land_s=2.0,
    disarm_preflight_param="COM_DISARM_PRFLT",
    arm_not_ready_result=MavResult.TEMPORARILY_REJECTED,
    arm_not_ready_texts=("Arming denied: Preflight Fail: No valid position estimate",),
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
    default_ready_delay_s=1.0,
    real_ready_delay_s=10.0,
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
    ),
    loss_timeout_param="GUID_TIMEOUT",
    loss_brakes_in_mode=True,
    external_needs_stream=False,
    stream_min_rate_hz=0.0,
    stream_warmup_s=0.0,
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
    rtl_alt_scale=0.01,
    land_detect_s=1.0,
    disarm_after_land_s=1.1,
    disarm_preflight_param="DISARM_DELAY",
    arm_not_ready_result=MavResult.FAILED,
    arm_not_ready_texts=("Arm: Need Position Estimate",),
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
    default_ready_delay_s=2.0,
    real_ready_delay_s=42.0,
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
    external_needs_stream=False,
    stream_min_rate_hz=0.0,
    stream_warmup_s=0.0,
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


@dataclass(frozen=True, slots=True)
class CommandReply:
    """The answer to a command: the result plus the status texts that go with it."""

    result: MavResult
    texts: tuple[StatusText, ...] = ()
    texts_after: bool = False
    """True when the texts follow the ACK on the wire instead of preceding it."""


@dataclass(slots=True)
class _Shaper:
    """Jerk- and acceleration-limited tracking of a velocity target (ArduPilot's input shaping)."""

    accel_max_m_s2: float
    jerk_max_m_s3: float
    vel_m_s: F64 = field(default_factory=lambda: np.zeros(3))
    acc_m_s2: F64 = field(default_factory=lambda: np.zeros(3))

    def reset(self, vel_m_s: F64) -> None:
        self.vel_m_s = np.array(vel_m_s, dtype=np.float64)
        self.acc_m_s2 = np.zeros(3)

    def update(self, target_m_s: F64, dt_s: float) -> F64:
        err = target_m_s - self.vel_m_s
        # sqrt controller: the largest acceleration from which the jerk limit still stops at the
        # target without overshoot; the braking profile of AC_PosControl has the same shape.
        acc_des = np.sign(err) * np.minimum(
            self.accel_max_m_s2, np.sqrt(2.0 * self.jerk_max_m_s3 * np.abs(err))
        )
        step = self.jerk_max_m_s3 * dt_s
        self.acc_m_s2 = self.acc_m_s2 + np.clip(acc_des - self.acc_m_s2, -step, step)
        self.vel_m_s = self.vel_m_s + self.acc_m_s2 * dt_s
        # snap to the target once within one jerk step so that a zero target is exactly zero
        close = np.abs(target_m_s - self.vel_m_s) < step * dt_s
        self.vel_m_s = np.where(close, target_m_s, self.vel_m_s)
        self.acc_m_s2 = np.where(close, 0.0, self.acc_m_s2)
        return self.vel_m_s


class Autopilot:
    """One emulated flight controller over a batch-1 :class:`Sim`.

    Time is the Sim's own (``sim.time_s``); the autopilot's boot time is ``boot_s`` so a
    reboot restarts ``time_since_boot_s`` without rewinding physics.
    """

    def __init__(
        self,
        sim: Sim,
        rules: Rules,
        *,
        params: Mapping[str, float] | None = None,
        ready_delay_s: float | None = None,
    ) -> None:
        if sim.n != 1:
            raise ValueError(
                f"Autopilot flies one vehicle: got a Sim with n={sim.n}; build Sim(1, ...) for it"
            )
        self.sim = sim
        self.rules = rules
        self._specs = {p.name: p for p in rules.params}
        self.params: dict[str, float] = {p.name: float(p.default) for p in rules.params}
        for name, value in (params or {}).items():
            self.set_param(name, value)
        self.ready_delay_s = rules.default_ready_delay_s if ready_delay_s is None else float(ready_delay_s)
        if self.ready_delay_s < 0:
            raise ValueError(f"ready_delay_s must be >= 0 s, got {self.ready_delay_s}")
        self._logic_every = max(1, round(1.0 / (LOGIC_RATE_HZ * sim.dt_s)))
        self._steps = 0
        self._sp = np.zeros((1, 5))
        self._texts: deque[StatusText] = deque(maxlen=64)
        self._shaper = _Shaper(max(rules.shape_accel_m_s2, 1e-9), max(rules.shape_jerk_m_s3, 1e-9))
        self.home_ned_m = np.array(sim.pos_ned_m[0], dtype=np.float64)
        self._boot(sim.time_s)

    # ------------------------------------------------------------------ state
    def _boot(self, now_s: float) -> None:
        self.boot_s = now_s
        self.mode = self.rules.initial_mode
        self.mode_changed_s = now_s
        self.landed_state = LandedState.ON_GROUND if bool(self.sim.on_ground[0]) else LandedState.IN_AIR
        self.target: Target | None = None
        self.last_target_s = -math.inf
        self._stream_start_s = math.inf
        self._stream_last_s = -math.inf
        self._armed_s = math.inf
        self._flew = not bool(self.sim.on_ground[0])
        self._ground_since_s = math.inf
        self._hold_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._hold_yaw_rad = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))
        self._takeoff_alt_m = 0.0
        self._takeoff_start_s = math.inf
        self._takeoff_active = False
        self._land_target_d_m = 0.0
        self._rtl_phase = 0
        self._braking = False
        self._g_pos_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._g_integ = np.zeros(3)
        self._battery_stage = 0
        self._fence_breached = False
        self.failsafe: str | None = None
        self.mode_events = 0
        """Incremented on every mode change (the MAVLink flavour sends a HEARTBEAT at once)."""

    @property
    def armed(self) -> bool:
        """Whether the motors are armed."""
        return bool(self.sim.armed[0])

    @property
    def time_since_boot_s(self) -> float:
        """Seconds since the autopilot (re)booted."""
        return self.sim.time_s - self.boot_s

    @property
    def ready(self) -> bool:
        """Whether the position estimate is usable (arming allowed)."""
        return self.time_since_boot_s >= self.ready_delay_s

    @property
    def in_air(self) -> bool:
        """Whether the land detector says the vehicle flies."""
        return self.landed_state in (LandedState.IN_AIR, LandedState.TAKEOFF, LandedState.LANDING)

    def take_texts(self) -> list[StatusText]:
        """Status texts raised since the last call, oldest first."""
        out = list(self._texts)
        self._texts.clear()
        return out

    def _say(self, severity: Severity, text: str) -> None:
        self._texts.append(StatusText(severity, text[:50]))

    def param(self, name: str) -> float:
        """The current value of a parameter (KeyError names the known ones)."""
        try:
            return self.params[name]
        except KeyError:
            raise KeyError(f"unknown parameter {name!r}; this autopilot has {sorted(self.params)}") from None

    def param_spec(self, name: str) -> ParamSpec:
        """The declaration of a parameter."""
        return self._specs[name]

    def set_param(self, name: str, value: float) -> None:
        """Set a parameter; unknown names and non-finite values are refused."""
        if name not in self._specs:
            raise KeyError(f"unknown parameter {name!r}; this autopilot has {sorted(self._specs)}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"parameter {name} must be finite, got {value}")
        if self._specs[name].mav_type is not ParamType.REAL32:
            value = float(round(value))
        self.params[name] = value

    # ------------------------------------------------------------------ time
    def advance(self, now_s: float) -> None:
        """Run physics and autopilot logic up to ``now_s`` (sim time) in the Sim's fixed steps."""
        dt = self.sim.dt_s
        remaining = math.floor((now_s - self.sim.time_s) / dt + 1e-6)
        while remaining > 0:
            if self._steps % self._logic_every == 0:
                self._logic()
            chunk = min(remaining, self._logic_every - self._steps % self._logic_every)
            self.sim.step(chunk)
            self._steps += chunk
            remaining -= chunk

    # ------------------------------------------------------------------ commands
    def arm(self, *, force: bool = False) -> CommandReply:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=1."""
        if self.armed:
            return CommandReply(MavResult.ACCEPTED)
        if not force and not self.ready:
            texts = tuple(StatusText(Severity.CRITICAL, t) for t in self.rules.arm_not_ready_texts)
            return CommandReply(self.rules.arm_not_ready_result, texts, self.rules.arm_texts_after_ack)
        if (
            not force
            and self.rules.external_needs_stream
            and self.mode is Mode.OFFBOARD
            and not self.stream_ok()
        ):
            return CommandReply(MavResult.TEMPORARILY_REJECTED)
        self.sim.arm(np.array([True]))
        now = self.sim.time_s
        self._armed_s = now
        self._flew = not bool(self.sim.on_ground[0])
        self._ground_since_s = now
        self._hold_here()
        self._say(Severity.INFO, self.rules.arm_text)
        return CommandReply(MavResult.ACCEPTED)

    def disarm(self, *, force: bool = False, reason: str | None = None) -> CommandReply:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=0 (refused in the air unless forced)."""
        if not self.armed:
            return CommandReply(MavResult.ACCEPTED)
        if self.in_air and not force and not bool(self.sim.on_ground[0]):
            return CommandReply(
                MavResult.FAILED if self.rules.arm_texts_after_ack else MavResult.TEMPORARILY_REJECTED
            )
        self._do_disarm(reason or self.rules.disarm_text)
        return CommandReply(MavResult.ACCEPTED)

    def _do_disarm(self, text: str) -> None:
        self.sim.disarm(np.array([True]))
        self._armed_s = math.inf
        self._takeoff_active = False
        self.failsafe = None
        self.target = None
        self._say(Severity.INFO, text)
        if bool(self.sim.on_ground[0]):
            self.landed_state = LandedState.ON_GROUND

    def set_mode(self, mode: Mode) -> CommandReply:
        """DO_SET_MODE with a normalised mode."""
        if mode is self.rules.external_mode and self.rules.external_needs_stream and not self.stream_ok():
            label = "Offboard" if mode is Mode.OFFBOARD else mode.value
            text = StatusText(Severity.CRITICAL, self.rules.mode_reject_text.format(mode=label))
            return CommandReply(MavResult.TEMPORARILY_REJECTED, (text,), True)
        if mode is Mode.TAKEOFF:
            return self.takeoff(math.nan)
        self.failsafe = None  # a commanded mode change ends the failsafe state
        self._enter(mode)
        return CommandReply(MavResult.ACCEPTED)

    def takeoff(self, alt_m: float) -> CommandReply:
        """MAV_CMD_NAV_TAKEOFF to ``alt_m`` above home (NaN: the firmware's default)."""
        rules = self.rules
        if rules.takeoff_needs_armed and not self.armed:
            return CommandReply(MavResult.FAILED)
        if rules.takeoff_in_external_mode_only and self.mode is not rules.external_mode:
            return CommandReply(MavResult.FAILED)
        if rules.takeoff_needs_armed and self.in_air and self._flew:
            return CommandReply(MavResult.FAILED)
        if not self.ready:
            return CommandReply(
                MavResult.TEMPORARILY_REJECTED if not rules.takeoff_needs_armed else MavResult.FAILED
            )
        if not math.isfinite(alt_m) or alt_m <= 0:
            alt_m = self.param(rules.takeoff_alt_param) if rules.takeoff_alt_param else 0.0
            if alt_m <= 0:
                return CommandReply(MavResult.FAILED)
        self._takeoff_alt_m = float(alt_m)
        self._takeoff_active = True
        self._takeoff_start_s = self.sim.time_s
        if rules.takeoff_mode is not None and self.mode is not rules.takeoff_mode:
            self._enter(rules.takeoff_mode)
        self.target = None
        return CommandReply(MavResult.ACCEPTED)

    def land(self) -> CommandReply:
        """MAV_CMD_NAV_LAND at the current position."""
        self._enter(Mode.LAND)
        return CommandReply(MavResult.ACCEPTED)

    def return_to_launch(self) -> CommandReply:
        """MAV_CMD_NAV_RETURN_TO_LAUNCH."""
        if not self.armed:
            return CommandReply(
                MavResult.FAILED if self.rules.arm_texts_after_ack else MavResult.TEMPORARILY_REJECTED
            )
        self._enter(Mode.RTL)
        return CommandReply(MavResult.ACCEPTED)

    def reboot(self) -> None:
        """Restart the autopilot: disarmed, initial mode, boot clock from zero, physics on the ground."""
        # physics is not rewound: a reboot in the air drops the vehicle, as it would for real
        if self.armed:
            self.sim.disarm(np.array([True]))
        self._boot(self.sim.time_s)

    # ------------------------------------------------------------------ setpoints
    def stream_ok(self) -> bool:
        """PX4's offboard-signal gate: setpoints above the minimum rate for the warm-up time."""
        now = self.sim.time_s
        gap = 1.0 / self.rules.stream_min_rate_hz if self.rules.stream_min_rate_hz > 0 else math.inf
        fresh = now - self._stream_last_s <= gap
        return fresh and now - self._stream_start_s >= self.rules.stream_warmup_s - 1e-9

    def external_setpoint(self, target: Target) -> bool:
        """A setpoint from the companion; returns whether it was used.

        PX4 counts every setpoint toward the OFFBOARD stream gate whatever the mode; outside the
        external mode the setpoint itself is dropped silently (ArduPilot: no ACK, no text).
        """
        now = self.sim.time_s
        gap = 1.0 / self.rules.stream_min_rate_hz if self.rules.stream_min_rate_hz > 0 else math.inf
        if now - self._stream_last_s > gap:
            self._stream_start_s = now
        self._stream_last_s = now
        if self.rules.external_needs_stream:
            # PX4 keeps the latest offboard setpoint even before OFFBOARD is entered
            self.target = target
            self.last_target_s = now
            return self.mode is Mode.OFFBOARD
        if self.mode is not self.rules.external_mode:
            return False
        if not self._braking and (self.target is None or self.target.kind != target.kind):
            self._start_tracker()
        self._braking = False
        self.target = target
        self.last_target_s = now
        # a new guided target replaces a guided takeoff in progress, as in ArduCopter
        self._takeoff_active = False
        return True

    # ------------------------------------------------------------------ logic
    def _enter(self, mode: Mode) -> None:
        if mode is self.mode:
            return
        self.mode = mode
        self.mode_changed_s = self.sim.time_s
        self.mode_events += 1
        self._braking = False
        self._rtl_phase = 0
        if mode is not self.rules.external_mode and not self.rules.external_needs_stream:
            # ArduPilot forgets guided targets on leaving GUIDED; PX4 keeps the offboard stream's
            # latest setpoint (it is what OFFBOARD flies on re-entry)
            self.target = None
        if mode is Mode.LAND:
            self._land_target_d_m = float(self.sim.pos_ned_m[0, 2])
        if mode is not Mode.TAKEOFF and self.rules.takeoff_mode is not None:
            self._takeoff_active = False
        if mode is Mode.LAND and self.in_air:
            self.landed_state = LandedState.LANDING
        self._hold_here()

    def _start_tracker(self) -> None:
        self._shaper.reset(np.asarray(self.sim.vel_ned_m_s[0]))
        self._g_pos_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._g_integ = np.zeros(3)

    def _track(self, vel_target_m_s: F64, yaw_rate_rad_s: float, dt: float) -> None:
        """Fly a shaped velocity target (ArduCopter's guided velocity control)."""
        v = self._shaper.update(vel_target_m_s, dt)
        self._g_pos_ned_m = self._g_pos_ned_m + v * dt
        err = v + GUIDED_KP * (self._g_pos_ned_m - self.sim.pos_ned_m[0]) - self.sim.vel_ned_m_s[0]
        self._g_integ = self._g_integ + GUIDED_KI * err * dt
        acc = self._shaper.acc_m_s2 + GUIDED_KV * err + self._g_integ
        self._set(SetpointKind.ACCELERATION, acc[0], acc[1], acc[2], yaw_rate_rad_s)

    def _hold_here(self) -> None:
        self._hold_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._hold_yaw_rad = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))

    def _logic(self) -> None:
        now = self.sim.time_s
        dt = self._logic_every * self.sim.dt_s
        self._land_detector(now)
        if self.armed:
            self._check_setpoint_loss(now)
            self._check_battery()
            self._check_fence()
        if self.armed:
            self._fly(now, dt)

    def _land_detector(self, now: float) -> None:
        on_ground = bool(self.sim.on_ground[0])
        if not self.armed:
            self.landed_state = LandedState.ON_GROUND if on_ground else LandedState.IN_AIR
            self._ground_since_s = now if on_ground else math.inf
            return
        if not on_ground:
            self._ground_since_s = math.inf
            if not self._flew and float(self.sim.pos_ned_m[0, 2]) < self.home_ned_m[2] - 0.3:
                self._flew = True
            if self._takeoff_active:
                self.landed_state = LandedState.TAKEOFF
            elif self.mode is Mode.LAND or (self.mode is Mode.RTL and self._rtl_phase == 2):
                self.landed_state = LandedState.LANDING
            elif self._flew:
                self.landed_state = LandedState.IN_AIR
            return
        if self._ground_since_s == math.inf:
            self._ground_since_s = now
        grounded_s = now - self._ground_since_s
        if not self._flew:
            self.landed_state = (
                LandedState.TAKEOFF
                if self._takeoff_active and now >= self._takeoff_start_s + self.rules.takeoff_spool_s
                else LandedState.ON_GROUND
            )
            waiting = now - self._armed_s
            if not self._takeoff_active and waiting >= self.param(self.rules.disarm_preflight_param) > 0:
                self._do_disarm(self.rules.disarm_text)
            return
        if grounded_s >= self.rules.land_detect_s:
            self.landed_state = LandedState.ON_GROUND
            if grounded_s >= self.rules.land_detect_s + self.rules.disarm_after_land_s and self.mode in (
                Mode.LAND,
                Mode.RTL,
            ):
                self._do_disarm(self.rules.disarm_text)

    def _check_setpoint_loss(self, now: float) -> None:
        if self.mode is not self.rules.external_mode or self.target is None:
            return
        timeout = self.param(self.rules.loss_timeout_param)
        if now - self.last_target_s <= timeout:
            return
        if self.rules.loss_brakes_in_mode:
            if self.target.kind is not SetpointKind.POSITION and not self._braking:
                if self.target.kind is not SetpointKind.VELOCITY:
                    self._start_tracker()
                self._braking = True
            return
        code = int(self.param(self.rules.loss_action_param)) if self.rules.loss_action_param else 0
        action = self.rules.loss_action_codes.get(code, Action.POSCTL)
        self.failsafe = "offboard signal lost"
        self._say(Severity.CRITICAL, "Failsafe activated: no offboard signal")
        self._run_action(action)

    def _run_action(self, action: Action) -> None:
        if action is Action.POSCTL:
            self._enter(Mode.POSCTL)
        elif action is Action.ALTCTL:
            self._enter(Mode.ALTCTL)
        elif action is Action.HOLD:
            self._enter(Mode.HOLD)
        elif action is Action.RETURN:
            self._enter(Mode.RTL)
        elif action is Action.LAND:
            self._enter(Mode.LAND)
        elif action is Action.DISARM:
            self._do_disarm("Failsafe: disarming")

    def _check_battery(self) -> None:
        frac = float(self.sim.battery_frac[0])
        if self.rules.family == "px4":
            low, crit, emerg = (
                self.param("BAT_LOW_THR"),
                self.param("BAT_CRIT_THR"),
                self.param("BAT_EMERGEN_THR"),
            )
            act = int(self.param("COM_LOW_BAT_ACT"))
            stages = [
                (low, Action.WARN, "Low battery level, return advised"),
                (
                    crit,
                    {0: Action.WARN, 2: Action.LAND, 3: Action.RETURN}.get(act, Action.WARN),
                    "Critical battery level, executing failsafe",
                ),
                (emerg, Action.LAND if act in (2, 3) else Action.WARN, "Emergency battery level, landing"),
            ]
        else:
            cap = self.param("BATT_CAPACITY")
            low_mah, crt_mah = self.param("BATT_LOW_MAH"), self.param("BATT_CRT_MAH")
            stages = [
                (
                    low_mah / cap if cap > 0 and low_mah > 0 else -1.0,
                    _BATT_ACT_ARDUPILOT.get(int(self.param("BATT_FS_LOW_ACT")), Action.NONE),
                    "Battery 1 is low",
                ),
                (
                    crt_mah / cap if cap > 0 and crt_mah > 0 else -1.0,
                    _BATT_ACT_ARDUPILOT.get(int(self.param("BATT_FS_CRT_ACT")), Action.NONE),
                    "Battery 1 is critical",
                ),
            ]
        for i, (threshold, action, text) in enumerate(stages, start=1):
            if self._battery_stage < i and frac <= threshold:
                self._battery_stage = i
                self._say(Severity.CRITICAL if i > 1 else Severity.WARNING, text)
                if action not in (Action.NONE, Action.WARN) and self.in_air:
                    self.failsafe = "battery"
                    if not (action is Action.RETURN and self.mode in (Mode.RTL, Mode.LAND)):
                        self._run_action(action)

    def _fence(self) -> tuple[float, float, Action]:
        """(horizontal radius m, max altitude m, action); 0 = that limit disabled."""
        if self.rules.family == "px4":
            action = self.rules.fence_action_codes.get(int(self.param("GF_ACTION")), Action.HOLD)
            return self.param("GF_MAX_HOR_DIST"), self.param("GF_MAX_VER_DIST"), action
        if self.param("FENCE_ENABLE") < 0.5:
            return 0.0, 0.0, Action.NONE
        action = self.rules.fence_action_codes.get(int(self.param("FENCE_ACTION")), Action.RETURN)
        return self.param("FENCE_RADIUS"), self.param("FENCE_ALT_MAX"), action

    def _check_fence(self) -> None:
        radius, alt_max, action = self._fence()
        if (radius <= 0 and alt_max <= 0) or action is Action.NONE:
            return
        rel = np.asarray(self.sim.pos_ned_m[0]) - self.home_ned_m
        horiz = float(np.hypot(rel[0], rel[1]))
        breach = (radius > 0 and horiz > radius) or (alt_max > 0 and -float(rel[2]) > alt_max)
        if breach and not self._fence_breached:
            self._fence_breached = True
            self.failsafe = "geofence"
            self._say(
                Severity.CRITICAL, "Geofence breached" if self.rules.family == "px4" else "Fence Breached"
            )
            if action is not Action.WARN and self.mode not in (Mode.LAND,):
                self._run_action(action)
                if action is Action.HOLD:
                    self._hold_inside(radius, alt_max)
        elif not breach:
            self._fence_breached = False

    def _hold_inside(self, radius: float, alt_max: float) -> None:
        rel = self._hold_ned_m - self.home_ned_m
        horiz = float(np.hypot(rel[0], rel[1]))
        if radius > 0 and horiz > radius:
            rel[:2] *= radius / horiz
        if alt_max > 0:
            rel[2] = max(rel[2], -alt_max)
        self._hold_ned_m = self.home_ned_m + rel

    # ------------------------------------------------------------------ flying
    def _set(self, kind: SetpointKind, a: float, b: float, c: float, d: float, e: float = 0.0) -> None:
        sp = self._sp
        sp[0, 0], sp[0, 1], sp[0, 2], sp[0, 3], sp[0, 4] = a, b, c, d, e
        self.sim.set_setpoint(kind, sp)

    def _hold(self) -> None:
        h = self._hold_ned_m
        self._set(SetpointKind.POSITION, h[0], h[1], h[2], self._hold_yaw_rad)

    def _yaw_rate_for(self, target: Target) -> float:
        if math.isfinite(target.yaw_rate_rad_s):
            return target.yaw_rate_rad_s
        if math.isfinite(target.yaw_rad):
            yaw = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))
            err = math.remainder(target.yaw_rad - yaw, math.tau)
            return max(-1.0, min(1.0, 2.0 * err))
        return 0.0

    def _fly(self, now: float, dt: float) -> None:
        mode = self.mode
        if self._takeoff_active:
            self._fly_takeoff(now)
            return
        if mode is self.rules.external_mode:
            self._fly_external(now, dt)
        elif mode is Mode.LAND:
            self._fly_land(dt)
        elif mode is Mode.RTL:
            self._fly_rtl(dt)
        elif self._flew:
            self._hold()
        else:
            # armed on the ground in a hold mode: idle thrust, stay down
            self._set(
                SetpointKind.POSITION,
                self._hold_ned_m[0],
                self._hold_ned_m[1],
                self._hold_ned_m[2] + 1.0,
                self._hold_yaw_rad,
            )

    def _fly_takeoff(self, now: float) -> None:
        h = self._hold_ned_m
        if now < self._takeoff_start_s + self.rules.takeoff_spool_s:
            self._set(SetpointKind.POSITION, h[0], h[1], h[2] + 1.0, self._hold_yaw_rad)
            return
        goal_d = self.home_ned_m[2] - self._takeoff_alt_m
        d = float(self.sim.pos_ned_m[0, 2])
        # climb as a velocity command so the climb rate is the firmware's, then capture altitude
        if d - goal_d > 0.5:
            vd = -min(self.rules.climb_speed_m_s, max(0.3, 1.0 * (d - goal_d)))
            self._set(SetpointKind.VELOCITY, 0.0, 0.0, vd, 0.0)
            return
        self._set(SetpointKind.POSITION, h[0], h[1], goal_d, self._hold_yaw_rad)
        if abs(d - goal_d) < 0.15 or d < goal_d:
            self._takeoff_active = False
            self._flew = True
            self.landed_state = LandedState.IN_AIR
            self._hold_ned_m = np.array([h[0], h[1], goal_d])
            after = self.rules.after_takeoff_mode
            if after is not None and self.mode is Mode.TAKEOFF:
                self._enter(after)
                self._hold_ned_m = np.array([h[0], h[1], goal_d])

    def _fly_external(self, now: float, dt: float) -> None:
        target = self.target
        if target is None or (
            not self.rules.loss_brakes_in_mode
            and now - self.last_target_s > self.param(self.rules.loss_timeout_param)
        ):
            self._hold()
            return
        if self._braking:
            # after GUID_TIMEOUT: shape down to zero and keep the point where the shaping ends
            self._track(np.zeros(3), 0.0, dt)
            self._hold_here()
            return
        if target.kind is SetpointKind.POSITION:
            v = target.values
            yaw = target.yaw_rad if math.isfinite(target.yaw_rad) else self._hold_yaw_rad
            self._set(SetpointKind.POSITION, v[0], v[1], v[2], yaw)
            self._hold_ned_m = np.array(v[:3])
            return
        if target.kind is SetpointKind.VELOCITY:
            vel = np.array(target.values[:3], dtype=np.float64)
            if self.rules.shape_accel_m_s2 > 0:
                self._track(vel, self._yaw_rate_for(target), dt)
            else:
                self._set(SetpointKind.VELOCITY, vel[0], vel[1], vel[2], self._yaw_rate_for(target))
            self._hold_here()
            return
        if target.kind is SetpointKind.ACCELERATION:
            v = target.values
            self._set(SetpointKind.ACCELERATION, v[0], v[1], v[2], self._yaw_rate_for(target))
            self._hold_here()
            return
        self.sim.set_setpoint(target.kind, np.array([target.values]))
        self._hold_here()

    def _fly_land(self, dt: float) -> None:
        h = self._hold_ned_m
        speed = self.param(self.rules.land_speed_param) * self.rules.land_speed_scale
        d = float(self.sim.pos_ned_m[0, 2])
        # the target runs ahead at the land speed but never more than 1 m below the vehicle,
        # so touching down does not wind up a huge altitude error
        self._land_target_d_m = min(self._land_target_d_m + speed * dt, d + 1.0)
        self._set(SetpointKind.POSITION, h[0], h[1], self._land_target_d_m, self._hold_yaw_rad)

    def _fly_rtl(self, dt: float) -> None:
        home = self.home_ned_m
        pos = np.asarray(self.sim.pos_ned_m[0])
        rtl_d = home[2] - self.param(self.rules.rtl_alt_param) * self.rules.rtl_alt_scale
        if self._rtl_phase == 0:
            self._hold_ned_m[2] = min(self._hold_ned_m[2], rtl_d)
            self._set(
                SetpointKind.POSITION,
                self._hold_ned_m[0],
                self._hold_ned_m[1],
                self._hold_ned_m[2],
                self._hold_yaw_rad,
            )
            if pos[2] <= self._hold_ned_m[2] + 0.5:
                self._rtl_phase = 1
            return
        if self._rtl_phase == 1:
            self._set(SetpointKind.POSITION, home[0], home[1], self._hold_ned_m[2], self._hold_yaw_rad)
            if float(np.hypot(pos[0] - home[0], pos[1] - home[1])) < 1.0:
                self._rtl_phase = 2
                self._hold_ned_m = np.array([home[0], home[1], pos[2]])
                self._land_target_d_m = float(pos[2])
                self.landed_state = LandedState.LANDING
            return
        self._fly_land(dt)

    # ------------------------------------------------------------------ reporting
    def system_status(self) -> int:
        """MAV_STATE: STANDBY (3) disarmed or armed on the ground, ACTIVE (4) flying, CRITICAL (5) in failsafe."""
        if not self.armed:
            return 3
        if self.rules.family == "px4":
            return 5 if self.failsafe else 4
        return 4 if self.landed_state in (LandedState.IN_AIR, LandedState.TAKEOFF, LandedState.LANDING) else 3


def with_params(rules: Rules, **defaults: float) -> Rules:
    """A copy of ``rules`` whose parameter defaults are replaced (names must exist)."""
    names = {p.name for p in rules.params}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise KeyError(f"unknown parameters {unknown}; {rules.name} has {sorted(names)}")
    specs = tuple(replace(p, default=defaults.get(p.name, p.default)) for p in rules.params)
    return replace(rules, params=specs)
