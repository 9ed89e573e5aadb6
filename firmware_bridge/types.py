"""Typed vehicle state and setpoints: the messages that cross the bridge.

Units and frames live in field names. MAVLink's convention is used throughout:
world frame NED (north, east, down, metres, relative to the autopilot's EKF origin),
body frame FRD (forward, right, down), quaternions in (w, x, y, z) order rotating
body FRD vectors into world NED.

Every signal carries its own monotonic receive time (``stamp_ns``, from the clock the
session was given) and the autopilot's own timestamp (``source_time_us``, 0 if the
message carries none), so freshness is judged per signal, never per state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]


class LandedState(IntEnum):
    """MAV_LANDED_STATE, as reported in EXTENDED_SYS_STATE."""

    UNDEFINED = 0
    ON_GROUND = 1
    IN_AIR = 2
    TAKEOFF = 3
    LANDING = 4


class Autopilot(IntEnum):
    """The flight-controller firmware family the bridge talks to."""

    PX4 = 12  # MAV_AUTOPILOT_PX4
    ARDUPILOT = 3  # MAV_AUTOPILOT_ARDUPILOTMEGA
    CUSTOM = 0  # our COBS+msgpack protocol


@dataclass(frozen=True, slots=True)
class Signal:
    """One time-stamped reading: ``value`` in the units its owner's name declares."""

    value: tuple[float, ...]
    stamp_ns: int
    """Local monotonic receive time, nanoseconds."""
    source_time_us: int = 0
    """The autopilot's timestamp (time_boot_ms*1000 or time_usec); 0 when the message has none."""


@dataclass(frozen=True, slots=True)
class VehicleState:
    """A snapshot of what the companion knows about the vehicle. ``None`` = never received."""

    pos_ned_m: Signal | None = None
    vel_ned_m_s: Signal | None = None
    q_wxyz: Signal | None = None
    """Attitude quaternion, body FRD → world NED, (w, x, y, z)."""
    rates_frd_rad_s: Signal | None = None
    battery: Signal | None = None
    """(remaining_frac in [0, 1] or NaN if unknown, voltage_v)."""
    armed: bool = False
    mode: str = "UNKNOWN"
    """Normalised mode name: OFFBOARD, GUIDED, POSCTL, ALTCTL, HOLD, LAND, RTL, TAKEOFF, MANUAL, STABILIZE, ..."""
    custom_mode: int = 0
    landed_state: LandedState = LandedState.UNDEFINED
    heartbeat_stamp_ns: int = 0
    """Monotonic receive time of the last autopilot HEARTBEAT; 0 = none yet."""
    link_up: bool = False
    autopilot: Autopilot = Autopilot.PX4
    params: dict[str, float] = field(default_factory=dict)
    """Autopilot parameters read at connect (e.g. COM_OF_LOSS_T, GUID_TIMEOUT)."""
    mission_counts: dict[int, int] = field(default_factory=dict)
    """Items the autopilot stores, per MAV_MISSION_TYPE (0 mission, 1 fence, 2 rally), from the
    MISSION_COUNT it sent (MavlinkSession.request_mission_count)."""
    prearm_ok: bool | None = None
    """SYS_STATUS pre-arm check health; None = the autopilot does not report that bit."""
    position_ok: bool | None = None
    """The estimator's own word that its absolute horizontal position is valid (PX4 ESTIMATOR_STATUS,
    ArduPilot EKF_STATUS_REPORT); None = not reported."""


# ---------------------------------------------------------------------------------------------
# Setpoints. One frozen dataclass per kind; the vehicle adapter turns them into the right
# MAVLink message, type_mask and frame (see firmware_bridge.adapters).


@dataclass(frozen=True, slots=True)
class VelocityNedYawRate:
    """Velocity setpoint in world NED plus yaw rate (MAVLink type_mask 1991 on PX4)."""

    vel_ned_m_s: Vec3
    yaw_rate_rad_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PositionNedYaw:
    """Position setpoint in world NED plus yaw (NaN yaw = keep current)."""

    pos_ned_m: Vec3
    yaw_rad: float = float("nan")


@dataclass(frozen=True, slots=True)
class AccelerationNedYawRate:
    """Acceleration setpoint in world NED plus yaw rate."""

    acc_ned_m_s2: Vec3
    yaw_rate_rad_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AttitudeThrust:
    """Attitude (body FRD → NED, wxyz) plus collective thrust normalised to [0, 1]."""

    q_wxyz: Quat
    thrust_frac: float


@dataclass(frozen=True, slots=True)
class RatesThrust:
    """Body rates (FRD) plus collective thrust normalised to [0, 1]."""

    rates_frd_rad_s: Vec3
    thrust_frac: float


Setpoint = VelocityNedYawRate | PositionNedYaw | AccelerationNedYawRate | AttitudeThrust | RatesThrust
