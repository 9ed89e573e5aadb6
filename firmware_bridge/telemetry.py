"""Decoded MAVLink telemetry → an immutable :class:`~firmware_bridge.types.VehicleState`.

The tracker locks onto the first autopilot that sends a HEARTBEAT (or the sysid/compid it is
given) and ignores other sources (ground stations, other companions, cameras). Every signal is
stamped with the local monotonic receive time passed to :meth:`TelemetryTracker.update` and the
autopilot's own timestamp. Mode names are normalised across PX4 and ArduCopter (tables below,
public so the SITL can speak the same numbers).
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from firmware_bridge.types import Autopilot, LandedState, Signal, VehicleState

MAV_AUTOPILOT_INVALID = 8
MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_AUTOPILOT_PX4 = 12
MAV_TYPE_GCS = 6
MAV_TYPE_ONBOARD_CONTROLLER = 18
MAV_MODE_FLAG_SAFETY_ARMED = 0x80
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 0x01
MAV_FRAME_LOCAL_NED = 1
MAV_FRAME_BODY_FRD = 12

PX4_MAIN_MODES: dict[int, str] = {
    1: "MANUAL",
    2: "ALTCTL",
    3: "POSCTL",
    5: "ACRO",
    6: "OFFBOARD",
    7: "STABILIZE",
    8: "RATTITUDE",
}
"""PX4 main modes (custom_mode bits 16-23) other than AUTO, by normalised name."""
PX4_AUTO_SUB_MODES: dict[int, str] = {
    1: "READY",
    2: "TAKEOFF",
    3: "HOLD",  # AUTO.LOITER, shown as "Hold" in QGroundControl
    4: "MISSION",
    5: "RTL",
    6: "LAND",
    8: "FOLLOW",
    9: "PRECLAND",
    10: "VTOL_TAKEOFF",
}
"""PX4 AUTO (main mode 4) sub-modes (custom_mode bits 24-31)."""
PX4_MAIN_AUTO = 4
PX4_MAIN_OFFBOARD = 6

ARDUCOPTER_MODES: dict[int, str] = {
    0: "STABILIZE",
    1: "ACRO",
    2: "ALTCTL",  # ALT_HOLD
    3: "MISSION",  # AUTO
    4: "GUIDED",
    5: "LOITER",  # follows the sticks: with the throttle low (no pilot) it descends into the ground
    6: "RTL",
    7: "CIRCLE",
    9: "LAND",
    11: "DRIFT",
    13: "SPORT",
    14: "FLIP",
    15: "AUTOTUNE",
    16: "POSCTL",  # POSHOLD: pilot-controlled position, PX4's POSCTL
    17: "HOLD",  # BRAKE: stops and holds position whatever the sticks say, PX4's Hold
    18: "THROW",
    19: "AVOID_ADSB",
    20: "GUIDED_NOGPS",
    21: "SMART_RTL",
    22: "FLOWHOLD",
    23: "FOLLOW",
    24: "ZIGZAG",
    25: "SYSTEMID",
    26: "AUTOROTATE",
    27: "AUTO_RTL",
    28: "TURTLE",
}
"""ArduCopter custom_mode numbers, by normalised name (ArduPilot's own name in comments where it differs)."""
ARDUCOPTER_GUIDED = 4

_PX4_INT_PARAM_TYPES = frozenset({1, 2, 3, 4, 5, 6})  # MAV_PARAM_TYPE_UINT8 .. INT32
_STATUSTEXT_CHUNK = 50
"""Characters in one STATUSTEXT; a shorter (NUL-terminated) chunk is a long text's last."""
_STATUSTEXT_MAX_CHUNKS = 16
"""Longest reassembly kept (800 characters): a sender that never ends a sequence cannot grow it."""
_F32 = struct.Struct("<f")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")


def px4_mode_name(custom_mode: int) -> str:
    """Normalised name of a PX4 HEARTBEAT custom_mode (main mode bits 16-23, sub mode 24-31)."""
    main = (custom_mode >> 16) & 0xFF
    sub = (custom_mode >> 24) & 0xFF
    if main == PX4_MAIN_AUTO:
        return PX4_AUTO_SUB_MODES.get(sub, f"AUTO_{sub}")
    if main == 3 and sub == 1:
        return "ORBIT"
    return PX4_MAIN_MODES.get(main, f"PX4_{main}_{sub}")


def px4_custom_mode(name: str) -> int:
    """The PX4 custom_mode for a normalised mode name; KeyError if PX4 has no such mode."""
    for main, n in PX4_MAIN_MODES.items():
        if n == name:
            return main << 16
    for sub, n in PX4_AUTO_SUB_MODES.items():
        if n == name:
            return (PX4_MAIN_AUTO << 16) | (sub << 24)
    raise KeyError(
        f"PX4 has no mode {name!r}; known: {sorted({*PX4_MAIN_MODES.values(), *PX4_AUTO_SUB_MODES.values()})}"
    )


def arducopter_mode_name(custom_mode: int) -> str:
    """Normalised name of an ArduCopter HEARTBEAT custom_mode."""
    return ARDUCOPTER_MODES.get(custom_mode, f"COPTER_{custom_mode}")


def arducopter_custom_mode(name: str) -> int:
    """The ArduCopter custom_mode for a normalised mode name; KeyError if Copter has no such mode."""
    for num, n in ARDUCOPTER_MODES.items():
        if n == name:
            return num
    raise KeyError(f"ArduCopter has no mode {name!r}; known: {sorted(ARDUCOPTER_MODES.values())}")


def quat_from_euler(roll_rad: float, pitch_rad: float, yaw_rad: float) -> tuple[float, float, float, float]:
    """ZYX Euler angles (MAVLink ATTITUDE) → quaternion (w, x, y, z), body FRD → NED."""
    cr, sr = math.cos(roll_rad / 2), math.sin(roll_rad / 2)
    cp, sp = math.cos(pitch_rad / 2), math.sin(pitch_rad / 2)
    cy, sy = math.cos(yaw_rad / 2), math.sin(yaw_rad / 2)
    return (
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    )


def _rotate(
    q: tuple[float, float, float, float], v: tuple[float, float, float]
) -> tuple[float, float, float]:
    w, x, y, z = q
    vx, vy, vz = v
    # v' = v + 2w(u×v) + 2u×(u×v), u = (x, y, z)
    tx = 2 * (y * vz - z * vy)
    ty = 2 * (z * vx - x * vz)
    tz = 2 * (x * vy - y * vx)
    return (
        vx + w * tx + (y * tz - z * ty),
        vy + w * ty + (z * tx - x * tz),
        vz + w * tz + (x * ty - y * tx),
    )


_POS_HORIZ_ABS = 16
"""ESTIMATOR_POS_HORIZ_ABS (PX4 ESTIMATOR_STATUS) = EKF_POS_HORIZ_ABS (ArduPilot EKF_STATUS_REPORT)."""
_PREARM_CHECK = 0x10000000
"""MAV_SYS_STATUS_PREARM_CHECK: the autopilot's own pre-arm checks pass (ArduPilot, PX4)."""


@dataclass(frozen=True, slots=True)
class ModeChange:
    """The autopilot's mode or armed flag changed (from its HEARTBEAT)."""

    stamp_ns: int
    old_mode: str
    new_mode: str
    old_armed: bool
    new_armed: bool


@dataclass(frozen=True, slots=True)
class StatusTextEntry:
    """A STATUSTEXT from the autopilot."""

    stamp_ns: int
    severity: int
    text: str


class TelemetryTracker:
    """Folds decoded MAVLink messages into a VehicleState; ``state`` is an immutable snapshot."""

    def __init__(
        self, *, target_sysid: int | None = None, target_compid: int | None = None, max_statustexts: int = 32
    ) -> None:
        self.target_sysid = target_sysid
        """sysid of the autopilot; None = lock onto the first autopilot HEARTBEAT."""
        self.target_compid = target_compid
        self._fields: dict[str, Any] = {}
        self._params: dict[str, float] = {}
        self._mission_counts: dict[int, int] = {}
        self._snapshot: VehicleState | None = VehicleState()
        self._autopilot: Autopilot = Autopilot.PX4
        self._armed = False
        self._mode = "UNKNOWN"
        self._seen_heartbeat = False
        self.mode_changes: deque[ModeChange] = deque(maxlen=32)
        """Recent mode/armed changes, oldest first (consumers pop what they have handled)."""
        self.statustexts: deque[StatusTextEntry] = deque(maxlen=max_statustexts)
        """Recent STATUSTEXTs from the autopilot, oldest first (chunked ones reassembled)."""
        self._text_chunks: tuple[int, int, int, list[str]] | None = None
        """A chunked STATUSTEXT being reassembled: (id, stamp of its first chunk, severity, chunks)."""
        self.ignored_frames = 0
        """Messages from other sources or in frames this tracker does not use."""
        self._handlers = {
            "HEARTBEAT": self._heartbeat,
            "LOCAL_POSITION_NED": self._local_position,
            "ODOMETRY": self._odometry,
            "ATTITUDE_QUATERNION": self._attitude_quaternion,
            "ATTITUDE": self._attitude,
            "HIGHRES_IMU": self._highres_imu,
            "SYS_STATUS": self._sys_status,
            "BATTERY_STATUS": self._battery_status,
            "EXTENDED_SYS_STATE": self._extended_sys_state,
            "STATUSTEXT": self._statustext,
            "PARAM_VALUE": self._param_value,
            "MISSION_COUNT": self._mission_count,
            "ESTIMATOR_STATUS": self._estimator_flags,
            "EKF_STATUS_REPORT": self._estimator_flags,
        }

    @property
    def locked(self) -> bool:
        """Whether the tracker knows which (sysid, compid) the autopilot is."""
        return self.target_sysid is not None and self.target_compid is not None

    @property
    def state(self) -> VehicleState:
        """The current snapshot (rebuilt only after something changed)."""
        snap = self._snapshot
        if snap is None:
            snap = VehicleState(
                **self._fields,
                armed=self._armed,
                mode=self._mode,
                autopilot=self._autopilot,
                params=dict(self._params),
                mission_counts=dict(self._mission_counts),
            )
            self._snapshot = snap
        return snap

    def set_link_up(self, up: bool) -> None:
        """Record peer liveness as judged by the session."""
        if self._fields.get("link_up") != up:
            self._fields["link_up"] = up
            self._snapshot = None

    def update(self, msg: Any, now_ns: int) -> bool:
        """Fold one decoded message in; return True if it was from the autopilot and used."""
        handler = self._handlers.get(msg.get_type())
        if handler is None:
            return False
        hdr = msg._header  # direct attribute: get_srcSystem() costs a call per message at 1 kHz
        if msg.get_type() == "HEARTBEAT" and not self.locked:
            if msg.autopilot == MAV_AUTOPILOT_INVALID or msg.type in (
                MAV_TYPE_GCS,
                MAV_TYPE_ONBOARD_CONTROLLER,
            ):
                self.ignored_frames += 1
                return False
            if self.target_sysid is None or self.target_sysid == hdr.srcSystem:
                self.target_sysid = hdr.srcSystem
                self.target_compid = hdr.srcComponent if self.target_compid is None else self.target_compid
        if hdr.srcSystem != self.target_sysid or hdr.srcComponent != self.target_compid:
            self.ignored_frames += 1
            return False
        handler(msg, now_ns)
        return True

    # -- handlers ----------------------------------------------------------------------------------

    def _set(self, name: str, value: Any) -> None:
        self._fields[name] = value
        self._snapshot = None

    def _heartbeat(self, m: Any, now: int) -> None:
        if m.autopilot == MAV_AUTOPILOT_ARDUPILOTMEGA:
            self._autopilot = Autopilot.ARDUPILOT
            mode = arducopter_mode_name(m.custom_mode)
        elif m.autopilot == MAV_AUTOPILOT_PX4:
            self._autopilot = Autopilot.PX4
            mode = px4_mode_name(m.custom_mode)
        else:
            mode = f"CUSTOM_{m.custom_mode}"
        armed = bool(m.base_mode & MAV_MODE_FLAG_SAFETY_ARMED)
        if self._seen_heartbeat and (mode != self._mode or armed != self._armed):
            self.mode_changes.append(ModeChange(now, self._mode, mode, self._armed, armed))
        self._seen_heartbeat = True
        self._mode = mode
        self._armed = armed
        self._fields["custom_mode"] = int(m.custom_mode)
        self._fields["heartbeat_stamp_ns"] = now
        self._snapshot = None

    def _local_position(self, m: Any, now: int) -> None:
        t = int(m.time_boot_ms) * 1000
        self._fields["pos_ned_m"] = Signal((m.x, m.y, m.z), now, t)
        self._fields["vel_ned_m_s"] = Signal((m.vx, m.vy, m.vz), now, t)
        self._snapshot = None

    def _odometry(self, m: Any, now: int) -> None:
        if m.frame_id != MAV_FRAME_LOCAL_NED:
            # LOCAL_FRD and others are not aligned with north: using them as NED would be a frame bug.
            self.ignored_frames += 1
            return
        t = int(m.time_usec)
        q = (float(m.q[0]), float(m.q[1]), float(m.q[2]), float(m.q[3]))
        vel = (m.vx, m.vy, m.vz)
        if m.child_frame_id == MAV_FRAME_BODY_FRD:
            vel = _rotate(q, vel)  # PX4 reports ODOMETRY velocity in the body frame
        self._fields["pos_ned_m"] = Signal((m.x, m.y, m.z), now, t)
        self._fields["vel_ned_m_s"] = Signal(vel, now, t)
        if not math.isnan(q[0]):
            self._fields["q_wxyz"] = Signal(q, now, t)
        self._fields["rates_frd_rad_s"] = Signal((m.rollspeed, m.pitchspeed, m.yawspeed), now, t)
        self._snapshot = None

    def _attitude_quaternion(self, m: Any, now: int) -> None:
        t = int(m.time_boot_ms) * 1000
        self._fields["q_wxyz"] = Signal((m.q1, m.q2, m.q3, m.q4), now, t)
        self._fields["rates_frd_rad_s"] = Signal((m.rollspeed, m.pitchspeed, m.yawspeed), now, t)
        self._snapshot = None

    def _attitude(self, m: Any, now: int) -> None:
        t = int(m.time_boot_ms) * 1000
        self._fields["q_wxyz"] = Signal(quat_from_euler(m.roll, m.pitch, m.yaw), now, t)
        self._fields["rates_frd_rad_s"] = Signal((m.rollspeed, m.pitchspeed, m.yawspeed), now, t)
        self._snapshot = None

    def _highres_imu(self, m: Any, now: int) -> None:
        self._set("rates_frd_rad_s", Signal((m.xgyro, m.ygyro, m.zgyro), now, int(m.time_usec)))

    def _battery(self, remaining_pct: int, voltage_v: float, now: int) -> None:
        frac = remaining_pct / 100.0 if remaining_pct >= 0 else math.nan
        self._set("battery", Signal((frac, voltage_v), now, 0))

    def _sys_status(self, m: Any, now: int) -> None:
        volts = m.voltage_battery / 1000.0 if m.voltage_battery != 0xFFFF else math.nan
        self._battery(m.battery_remaining, volts, now)
        if m.onboard_control_sensors_present & _PREARM_CHECK:
            ok = bool(m.onboard_control_sensors_health & _PREARM_CHECK)
            if self._fields.get("prearm_ok") != ok:
                self._set("prearm_ok", ok)

    def _estimator_flags(self, m: Any, now: int) -> None:
        # ESTIMATOR_POS_HORIZ_ABS and EKF_POS_HORIZ_ABS are the same bit (16).
        ok = bool(m.flags & _POS_HORIZ_ABS)
        if self._fields.get("position_ok") != ok:
            self._set("position_ok", ok)

    def _battery_status(self, m: Any, now: int) -> None:
        if m.id != 0:
            return
        cells = [v for v in m.voltages if v != 0xFFFF]
        volts = sum(cells) / 1000.0 if cells else math.nan
        self._battery(m.battery_remaining, volts, now)

    def _extended_sys_state(self, m: Any, now: int) -> None:
        try:
            landed = LandedState(m.landed_state)
        except ValueError:
            landed = LandedState.UNDEFINED
        self._set("landed_state", landed)

    def _statustext(self, m: Any, now: int) -> None:
        """One STATUSTEXT; a long one arrives in 50-character chunks that share a nonzero ``id``
        (MAVLink 2; PX4 sends them so) and is kept whole once its last chunk (shorter than 50,
        NUL-terminated) is in. A sequence cut short is kept as far as it came, marked '…'."""
        text, severity = str(m.text), int(m.severity)
        text_id = int(getattr(m, "id", 0) or 0)
        pending = self._text_chunks
        if pending is not None and (text_id != pending[0] or int(m.chunk_seq) != len(pending[3])):
            self._flush_text_chunks(partial=True)
            pending = None
        if text_id == 0:
            self.statustexts.append(StatusTextEntry(now, severity, text))
            return
        if pending is None:
            if int(m.chunk_seq) != 0:
                self.statustexts.append(StatusTextEntry(now, severity, "…" + text))  # its start was lost
                return
            pending = self._text_chunks = (text_id, now, severity, [])
        pending[3].append(text)
        if len(text) < _STATUSTEXT_CHUNK or len(pending[3]) >= _STATUSTEXT_MAX_CHUNKS:
            self._flush_text_chunks(partial=False)

    def _flush_text_chunks(self, *, partial: bool) -> None:
        assert self._text_chunks is not None
        _, stamp, severity, parts = self._text_chunks
        self._text_chunks = None
        self.statustexts.append(StatusTextEntry(stamp, severity, "".join(parts) + ("…" if partial else "")))

    def _param_value(self, m: Any, now: int) -> None:
        value = float(m.param_value)
        if self._autopilot == Autopilot.PX4 and m.param_type in _PX4_INT_PARAM_TYPES:
            # PX4 sends integer parameters bytewise in the float's bits (MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE).
            raw = _F32.pack(m.param_value)
            value = float(_I32.unpack(raw)[0] if m.param_type in (2, 4, 6) else _U32.unpack(raw)[0])
        self._params[str(m.param_id)] = value
        self._snapshot = None

    def _mission_count(self, m: Any, now: int) -> None:
        # Whoever asked (the agent or a ground station), it is what the autopilot stores.
        self._mission_counts[int(getattr(m, "mission_type", 0))] = int(m.count)
        self._snapshot = None

    # -- for the session ------------------------------------------------------------------------

    def statustexts_since(self, stamp_ns: int) -> list[StatusTextEntry]:
        """STATUSTEXTs received at or after ``stamp_ns``."""
        return [s for s in self.statustexts if s.stamp_ns >= stamp_ns]
