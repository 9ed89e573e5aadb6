"""The PX4 and ArduPilot flavours of the emulated flight controller, over MAVLink v2.

Sans-IO: :meth:`MavlinkVehicle.receive` takes the bytes the companion sent and
:meth:`MavlinkVehicle.step` advances the simulation to ``now_s`` and returns the bytes the
vehicle sends. A runner (``sitl.runner``) does the I/O. Messages are built with pymavlink's
generated ``ardupilotmega`` dialect (a superset of ``common``), the vehicle side of the wire,
so the bridge under test is never used to test itself.

Wire facts per flavour are in :class:`FlavorSpec` (``PX4`` / ``ARDUPILOT``); the behaviour behind
them is :mod:`sitl.autopilot`. docs/sitl_autopilot.md lists every figure and its source.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.types import LandedState
from sitl.autopilot import (
    ARDUPILOT_RULES,
    PX4_RULES,
    Autopilot,
    CommandReply,
    MavResult,
    Mode,
    ParamType,
    Rules,
    SetpointKind,
    Severity,
    StatusText,
    Target,
)
from sitl.autopilot_rules import SR_GROUPS
from sitl.mavlink_streams import AP_STREAM_BY_ID, AP_STREAM_GROUPS, StreamSchedule, ftp_reply, next_deadline
from sitl.mavlink_telemetry import STREAMABLE, Home, TelemetryEncoder, euler, statustext_messages
from sitl.mission_protocol import MissionProtocol
from sitl.sim import Measurement, Sim

_SAFETY_ARMED = mavlink.MAV_MODE_FLAG_SAFETY_ARMED
_CUSTOM = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
_MANUAL = mavlink.MAV_MODE_FLAG_MANUAL_INPUT_ENABLED
_STAB = mavlink.MAV_MODE_FLAG_STABILIZE_ENABLED
_GUIDED = mavlink.MAV_MODE_FLAG_GUIDED_ENABLED
_AUTO = mavlink.MAV_MODE_FLAG_AUTO_ENABLED

FORCE_ARM_MAGIC = 21196
"""param2 of COMPONENT_ARM_DISARM that skips the checks (both firmwares)."""

DEFAULT_HOME = Home()
HOME_LAT_DEG = DEFAULT_HOME.lat_deg
HOME_LON_DEG = DEFAULT_HOME.lon_deg
HOME_ALT_AMSL_M = DEFAULT_HOME.alt_amsl_m
"""Default home: ArduPilot SITL's (CMAC), as in data/ardupilot/flight.tlog; ``home=`` sets another."""


class Flavor(StrEnum):
    """Which firmware the vehicle pretends to be."""

    PX4 = "px4"
    ARDUPILOT = "ardupilot"


# PX4: custom_mode = main_mode << 16 | sub_mode << 24 (px4_custom_mode.h)
_PX4_MAIN = {"MANUAL": 1, "ALTCTL": 2, "POSCTL": 3, "AUTO": 4, "ACRO": 5, "OFFBOARD": 6, "STABILIZED": 7}
_PX4_MODES: dict[Mode, tuple[int, int]] = {
    Mode.STABILIZE: (7, 0),
    Mode.ALTCTL: (2, 0),
    Mode.POSCTL: (3, 0),
    Mode.OFFBOARD: (6, 0),
    Mode.TAKEOFF: (4, 2),
    Mode.HOLD: (4, 3),
    Mode.MISSION: (4, 4),
    Mode.RTL: (4, 5),
    Mode.LAND: (4, 6),
}
# ArduCopter custom_mode numbers (ArduCopter/mode.h)
_AP_MODES: dict[Mode, int] = {
    Mode.STABILIZE: 0,
    Mode.ALTCTL: 2,
    Mode.MISSION: 3,  # AUTO
    Mode.GUIDED: 4,
    Mode.HOLD: 17,  # BRAKE (LOITER, 5, follows the sticks: the real one descended into the ground)
    Mode.RTL: 6,
    Mode.LAND: 9,
    Mode.POSCTL: 16,  # POSHOLD
}


@dataclass(frozen=True, slots=True)
class FlavorSpec:
    """What one firmware puts on the wire (beyond the behaviour in :class:`Rules`)."""

    flavor: Flavor
    rules: Rules
    autopilot_id: int
    default_streams_hz: dict[int, float]
    """Messages streamed before anyone asks (ArduPilot: none; PX4: its onboard-link profile)."""
    heartbeat_on_mode_change: bool
    timesync_period_s: float
    vtol_state: int
    param_bytewise: bool
    """PX4 packs integer parameters bytewise into PARAM_VALUE's float; ArduPilot casts."""
    unsupported_interval_result: MavResult
    ack_set_mode_message: bool
    """ArduPilot answers the legacy SET_MODE message with COMMAND_ACK(command=11)."""


PX4 = FlavorSpec(
    flavor=Flavor.PX4,
    rules=PX4_RULES,
    autopilot_id=mavlink.MAV_AUTOPILOT_PX4,
    # measured on real PX4 SIH's onboard link (../shared/firmware/README.md, tests/conformance);
    # of what it sends unasked, the emulator leaves out CURRENT_MODE only
    default_streams_hz={
        mavlink.MAVLINK_MSG_ID_ATTITUDE: 100.0,
        mavlink.MAVLINK_MSG_ID_ATTITUDE_QUATERNION: 50.0,
        mavlink.MAVLINK_MSG_ID_GLOBAL_POSITION_INT: 40.0,  # PX4 asks 50 Hz; SIH delivered 30-36
        mavlink.MAVLINK_MSG_ID_HIGHRES_IMU: 50.0,
        mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED: 30.0,
        mavlink.MAVLINK_MSG_ID_ODOMETRY: 30.0,
        mavlink.MAVLINK_MSG_ID_ALTITUDE: 10.0,
        mavlink.MAVLINK_MSG_ID_VFR_HUD: 10.0,
        mavlink.MAVLINK_MSG_ID_GPS_RAW_INT: 8.0,
        mavlink.MAVLINK_MSG_ID_ATTITUDE_TARGET: 10.0,
        mavlink.MAVLINK_MSG_ID_POSITION_TARGET_LOCAL_NED: 10.0,
        mavlink.MAVLINK_MSG_ID_SERVO_OUTPUT_RAW: 10.0,
        mavlink.MAVLINK_MSG_ID_DISTANCE_SENSOR: 10.0,
        mavlink.MAVLINK_MSG_ID_PING: 1.0,
        mavlink.MAVLINK_MSG_ID_OPEN_DRONE_ID_LOCATION: 1.0,
        mavlink.MAVLINK_MSG_ID_OPEN_DRONE_ID_SYSTEM: 1.0,
        mavlink.MAVLINK_MSG_ID_VIBRATION: 0.5,
        mavlink.MAVLINK_MSG_ID_GPS_GLOBAL_ORIGIN: 0.2,
        mavlink.MAVLINK_MSG_ID_SYS_STATUS: 5.0,
        mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE: 5.0,
        mavlink.MAVLINK_MSG_ID_MISSION_CURRENT: 1.0,
        mavlink.MAVLINK_MSG_ID_ESTIMATOR_STATUS: 1.0,
        mavlink.MAVLINK_MSG_ID_SCALED_PRESSURE: 1.0,
        mavlink.MAVLINK_MSG_ID_SYSTEM_TIME: 1.0,
        mavlink.MAVLINK_MSG_ID_BATTERY_STATUS: 0.5,
        mavlink.MAVLINK_MSG_ID_HOME_POSITION: 0.5,
    },
    heartbeat_on_mode_change=False,
    timesync_period_s=0.1,  # real PX4 SIH: TIMESYNC requests at 10 Hz
    vtol_state=mavlink.MAV_VTOL_STATE_UNDEFINED,
    param_bytewise=True,
    unsupported_interval_result=MavResult.FAILED,
    ack_set_mode_message=False,
)
"""PX4 v1.14-like (onboard-link stream profile, approximately mavlink_main.cpp's)."""

ARDUPILOT = FlavorSpec(
    flavor=Flavor.ARDUPILOT,
    rules=ARDUPILOT_RULES,
    autopilot_id=mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA,
    default_streams_hz={},
    heartbeat_on_mode_change=True,
    timesync_period_s=10.0,
    vtol_state=mavlink.MAV_VTOL_STATE_MC,
    param_bytewise=False,
    unsupported_interval_result=MavResult.DENIED,
    ack_set_mode_message=True,
)
"""ArduCopter as recorded in data/ardupilot (HEARTBEAT only until streams are requested)."""

FLAVORS = {Flavor.PX4: PX4, Flavor.ARDUPILOT: ARDUPILOT}

assert set(AP_STREAM_GROUPS) <= set(SR_GROUPS)

_STREAMABLE = STREAMABLE
_ON_REQUEST = (
    *_STREAMABLE,
    mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
    mavlink.MAVLINK_MSG_ID_HEARTBEAT,
)


@dataclass(slots=True)
class VehicleCounters:
    """What the vehicle saw on the link (for tests and the runner's status line)."""

    messages_in: int = 0
    bad_frames: int = 0
    ignored_setpoints: int = 0
    """Setpoints dropped: outside the external mode, unsupported frame or type mask, NaN."""
    handler_errors: int = 0
    unsupported_commands: int = 0
    last_error: str = ""
    commands: list[int] = field(default_factory=list)


class _Sink:
    """pymavlink writes packed frames to ``file``; this collects them."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data


class MavlinkVehicle:
    """An emulated PX4 or ArduPilot flight controller on the vehicle side of a MAVLink v2 link."""

    def __init__(
        self,
        autopilot: Autopilot,
        flavor: Flavor | str,
        *,
        sysid: int = 1,
        compid: int = 1,
        signing_key: bytes | None = None,
        signing_epoch_s: float = 0.0,
        home: Home = DEFAULT_HOME,
    ) -> None:
        try:
            self.spec = FLAVORS[Flavor(flavor)]
        except ValueError:
            raise ValueError(
                f"unknown MAVLink flavour {flavor!r}; choose one of {[f.value for f in Flavor]}"
            ) from None
        if autopilot.rules.family != self.spec.rules.family or autopilot.rules.name == "custom":
            raise ValueError(
                f"flavour {self.spec.flavor.value} needs an Autopilot built with {self.spec.rules.name} rules, "
                f"got {autopilot.rules.name}"
            )
        if signing_key is not None and len(signing_key) != 32:
            raise ValueError(f"a MAVLink signing key is 32 bytes, got {len(signing_key)}")
        self.ap = autopilot
        self.sysid = sysid
        self.compid = compid
        self._signing_key = signing_key
        self._signing_epoch_s = signing_epoch_s
        self.home = home
        self.counters = VehicleCounters()
        self._text_id = 0
        self._sink = _Sink()
        self._new_mav()
        self.telemetry = TelemetryEncoder(self.mav, autopilot, home, epoch_s=signing_epoch_s)
        self.missions = MissionProtocol(autopilot, home, self.mav, self._send_mission_current)
        self._reset_streams()

    # ------------------------------------------------------------------ setup
    def _new_mav(self) -> None:
        self.mav = mavlink.MAVLink(self._sink, srcSystem=self.sysid, srcComponent=self.compid)
        self.mav.robust_parsing = True
        if hasattr(self, "telemetry"):
            self.telemetry.mav = self.mav
            self.missions.mav = self.mav
        if self._signing_key is not None:
            sig = self.mav.signing
            sig.secret_key = self._signing_key
            sig.sign_outgoing = True
            sig.link_id = 0
            # signing time: 10 µs units since 2015-01-01, from the injected wall epoch
            sig.timestamp = max(1, int((self._signing_epoch_s - 1420070400.0) * 1e5))

    def _reset_streams(self) -> None:
        now = self.ap.sim.time_s
        self.streams = StreamSchedule(self.spec.default_streams_hz, now)
        if self.spec.flavor is Flavor.ARDUPILOT:
            # ArduPilot reads its SRx_ stream rates once, when the link starts (GCS_MAVLINK::
            # initialise_message_intervals_from_streamrates); later PARAM_SETs apply at reboot
            for group in AP_STREAM_GROUPS:
                self.streams.set_group(group, self.ap.param(f"SR0_{group}"), now)
        self._next_heartbeat_s = now
        self._next_timesync_s = self.ap.boot_s + self.spec.timesync_period_s
        self._mode_events_seen = self.ap.mode_events

    def reboot(self) -> None:
        """Simulate a flight-controller reboot: heartbeat sequence from 0, streams and mode reset."""
        self.ap.reboot()
        self._new_mav()
        self._reset_streams()

    @property
    def intervals_s(self) -> dict[int, float]:
        """Current stream intervals by message id (seconds)."""
        return self.streams.intervals_s

    # ------------------------------------------------------------------ I/O
    def receive(self, data: bytes, now_s: float) -> None:
        """Feed bytes from the companion received at ``now_s``; garbage is counted, never raised."""
        self.ap.advance(now_s)
        try:
            msgs = self.mav.parse_buffer(data) or []
        except (mavlink.MAVError, struct.error, ValueError, IndexError) as exc:
            self.counters.bad_frames += 1
            self.counters.last_error = f"parse: {exc}"
            msgs = []
        for msg in msgs:
            if msg.get_type() == "BAD_DATA":
                self.counters.bad_frames += 1
                continue
            self.counters.messages_in += 1
            try:
                self._handle(msg)
                if self.spec.heartbeat_on_mode_change and self.ap.mode_events != self._mode_events_seen:
                    # ArduCopter sends a HEARTBEAT from the mode-change handler itself
                    self._mode_events_seen = self.ap.mode_events
                    self._send_heartbeat()
            except (ValueError, OverflowError, TypeError, struct.error, mavlink.MAVError) as exc:
                # a well-formed frame with absurd contents must not stop the vehicle
                self.counters.handler_errors += 1
                self.counters.last_error = f"{msg.get_type()}: {exc}"

    def step(self, now_s: float) -> bytes:
        """Advance to ``now_s`` and return everything the vehicle sends up to then."""
        self.ap.advance(now_s)
        now = self.ap.sim.time_s
        self._flush_texts(self.ap.take_texts())
        self.missions.step(now)
        reached = self.ap.plan.take_reached()
        for seq in reached:
            self.mav.send(self.mav.mission_item_reached_encode(seq))
        if reached:
            self._send_mission_current()
        if self.spec.heartbeat_on_mode_change and self.ap.mode_events != self._mode_events_seen:
            self._send_heartbeat()
        self._mode_events_seen = self.ap.mode_events
        if now >= self._next_heartbeat_s - 1e-9:
            self._send_heartbeat()
            self._next_heartbeat_s = next_deadline(self._next_heartbeat_s, 1.0, now)
        if now >= self._next_timesync_s - 1e-9:
            ns = self._now_ns()
            ts1 = ns + self.sysid if self.spec.flavor is Flavor.ARDUPILOT else ns
            self.mav.send(self.mav.timesync_encode(0, ts1))
            self._next_timesync_s = next_deadline(self._next_timesync_s, self.spec.timesync_period_s, now)
        due = self.streams.take_due(now)
        if due:
            meas = self.ap.sim.measure()
            for msgid in due:
                self._send_stream(msgid, meas)
        out = bytes(self._sink.buf)
        self._sink.buf.clear()
        return out

    # ------------------------------------------------------------------ time helpers
    def _boot_us(self) -> int:
        return self.telemetry.boot_us()

    def _now_ns(self) -> int:
        return self._boot_us() * 1000

    # ------------------------------------------------------------------ outgoing
    def mode_to_custom(self, mode: Mode) -> tuple[int, int]:
        """(base_mode without the armed bit, custom_mode) for a normalised mode."""
        if self.spec.flavor is Flavor.PX4:
            main, sub = _PX4_MODES[mode]
            if mode is Mode.OFFBOARD:
                base = _CUSTOM | _STAB  # real PX4 SIH: 145 armed
            elif mode in (Mode.TAKEOFF, Mode.HOLD, Mode.RTL, Mode.LAND, Mode.MISSION):
                base = _CUSTOM | _AUTO | _STAB | _GUIDED  # real PX4 SIH in Hold: 29
            elif mode is Mode.POSCTL:
                base = _CUSTOM | _MANUAL | _STAB | _GUIDED
            else:
                base = _CUSTOM | _MANUAL | _STAB
            return base, (main << 16) | (sub << 24)
        base = _CUSTOM | _MANUAL | _STAB
        if mode in (Mode.GUIDED, Mode.LAND, Mode.RTL) or self.ap.booting:
            base |= _GUIDED  # real ArduCopter also says GUIDED_ENABLED (89) while it boots
        return base, _AP_MODES[mode]

    def custom_to_mode(self, custom_mode: int, sub_mode: int | None = None) -> Mode | None:
        """The normalised mode for a DO_SET_MODE request, or None if the firmware has no such mode."""
        if self.spec.flavor is Flavor.PX4:
            main = custom_mode
            sub = 0 if sub_mode is None else sub_mode
            for mode, (m, s) in _PX4_MODES.items():
                if m == main and (s == sub or (main == 4 and sub == 0 and s == 3)):
                    return mode
            if main == 1:
                return Mode.POSCTL  # MANUAL: without sticks the emulator holds position
            return None
        for mode, number in _AP_MODES.items():
            if number == custom_mode:
                return mode
        return None

    def _send_heartbeat(self) -> None:
        base, custom = self.mode_to_custom(self.ap.mode)
        if self.ap.armed:
            base |= _SAFETY_ARMED
        self.mav.send(
            self.mav.heartbeat_encode(
                mavlink.MAV_TYPE_QUADROTOR, self.spec.autopilot_id, base, custom, self.ap.system_status(), 3
            )
        )

    def _flush_texts(self, texts: list[StatusText]) -> None:
        for t in texts:
            chunked = self.spec.flavor is Flavor.PX4  # PX4 chunks a long text; ArduPilot cuts it at 50
            self._text_id = self._text_id % 0xFFFF + 1 if chunked else 0
            for msg in statustext_messages(self.mav, int(t.severity), t.text, self._text_id):
                self.mav.send(msg)

    def _send_stream(self, msgid: int, meas: Measurement) -> None:
        msg = self._build(msgid, meas)
        if msg is not None:
            self.mav.send(msg)

    def _send_mission_current(self) -> None:
        self._send_stream(mavlink.MAVLINK_MSG_ID_MISSION_CURRENT, self.ap.sim.measure())

    def _build(self, msgid: int, meas: Measurement) -> mavlink.MAVLink_message | None:
        if msgid == mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION:
            cap = (
                mavlink.MAV_PROTOCOL_CAPABILITY_MAVLINK2
                | mavlink.MAV_PROTOCOL_CAPABILITY_COMMAND_INT
                | mavlink.MAV_PROTOCOL_CAPABILITY_MISSION_INT
                | mavlink.MAV_PROTOCOL_CAPABILITY_PARAM_FLOAT
                | mavlink.MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_LOCAL_NED
                | mavlink.MAV_PROTOCOL_CAPABILITY_SET_ATTITUDE_TARGET
                | (
                    mavlink.MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE
                    if self.spec.param_bytewise
                    else mavlink.MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_C_CAST
                )
            )
            zeros8 = [0] * 8
            return self.mav.autopilot_version_encode(
                cap, 0x010E00FF, 0, 0, 0, zeros8, zeros8, zeros8, 0, 0, self.sysid
            )
        if msgid == mavlink.MAVLINK_MSG_ID_HEARTBEAT:
            base, custom = self.mode_to_custom(self.ap.mode)
            base |= _SAFETY_ARMED if self.ap.armed else 0
            return self.mav.heartbeat_encode(
                mavlink.MAV_TYPE_QUADROTOR, self.spec.autopilot_id, base, custom, self.ap.system_status(), 3
            )
        return self.telemetry.build(msgid, meas)

    def _ack(self, command: int, result: MavResult, msg: mavlink.MAVLink_message) -> None:
        self.mav.send(
            self.mav.command_ack_encode(
                command, int(result), 0, 0, msg.get_srcSystem(), msg.get_srcComponent()
            )
        )

    # ------------------------------------------------------------------ incoming
    def _for_us(self, target_system: int, target_component: int | None = None) -> bool:
        if target_system not in (0, self.sysid):
            return False
        return target_component is None or target_component in (0, self.compid)

    def _handle(self, msg: mavlink.MAVLink_message) -> None:
        kind = msg.get_type()
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            if self._for_us(msg.target_system, msg.target_component):
                self._command(msg)
        elif kind == "SET_POSITION_TARGET_LOCAL_NED":
            if self._for_us(msg.target_system, msg.target_component):
                self._position_target(msg)
        elif kind == "SET_ATTITUDE_TARGET":
            if self._for_us(msg.target_system, msg.target_component):
                self._attitude_target(msg)
        elif kind == "TIMESYNC":
            if msg.tc1 == 0:
                self.mav.send(self.mav.timesync_encode(self._now_ns(), msg.ts1))
        elif kind == "SET_MODE":
            if self._for_us(msg.target_system):
                mode = self.custom_to_mode(
                    (msg.custom_mode >> 16) & 0xFF if self.spec.flavor is Flavor.PX4 else msg.custom_mode,
                    (msg.custom_mode >> 24) & 0xFF if self.spec.flavor is Flavor.PX4 else None,
                )
                result = MavResult.FAILED if mode is None else self._set_mode(mode)
                if self.spec.ack_set_mode_message:
                    self._ack(mavlink.MAVLINK_MSG_ID_SET_MODE, result, msg)
        elif kind == "PARAM_REQUEST_READ":
            if self._for_us(msg.target_system, msg.target_component):
                self._param_read(msg)
        elif kind == "PARAM_REQUEST_LIST":
            if self._for_us(msg.target_system, msg.target_component):
                for name in self.ap.params:
                    self._param_value(name)
        elif kind == "PARAM_SET" and self._for_us(msg.target_system, msg.target_component):
            name = _param_name(msg.param_id)
            if name in self.ap.params:
                value = self._decode_param(name, msg.param_value)
                self.ap.set_param(name, value)
                self._param_value(name)
            # an unknown name: real PX4 SIH and ArduCopter answer nothing at all (conformance suite)
        elif kind == "REQUEST_DATA_STREAM":
            if self.spec.flavor is Flavor.ARDUPILOT and self._for_us(msg.target_system, msg.target_component):
                self._request_data_stream(
                    int(msg.req_stream_id), int(msg.req_message_rate), int(msg.start_stop)
                )
        elif kind.startswith("MISSION_") and kind != "MISSION_ACK":
            if self._for_us(msg.target_system, msg.target_component):
                self.missions.handle(msg, self.ap.sim.time_s)
        elif kind == "FILE_TRANSFER_PROTOCOL" and self._for_us(msg.target_system, msg.target_component):
            self._ftp(msg)

    def _set_mode(self, mode: Mode) -> MavResult:
        reply = self.ap.set_mode(mode)
        self._deliver(reply.texts, reply.texts_after, lambda: None)
        return reply.result

    def _deliver(self, texts: tuple[StatusText, ...], after: bool, ack: object) -> None:
        if not after:
            self._flush_texts(list(texts))
        if callable(ack):
            ack()
        if after:
            self._flush_texts(list(texts))

    def _command(self, msg: mavlink.MAVLink_message) -> None:
        cmd = int(msg.command)
        self.counters.commands.append(cmd)
        p1, p2, p3 = float(msg.param1), float(msg.param2), float(msg.param3)
        p7 = float(msg.param7) if msg.get_type() == "COMMAND_LONG" else float(msg.z)
        ap = self.ap
        reply = None
        if cmd == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
            force = abs(p2 - FORCE_ARM_MAGIC) < 0.5
            reply = ap.arm(force=force) if p1 > 0.5 else ap.disarm(force=force)
        elif cmd == mavlink.MAV_CMD_DO_SET_MODE:
            if not (int(p1) & _CUSTOM):
                self._ack(cmd, MavResult.DENIED, msg)
                return
            mode = self.custom_to_mode(int(p2), int(p3) if self.spec.flavor is Flavor.PX4 else None)
            if mode is None:
                self._ack(cmd, MavResult.DENIED if self.spec.flavor is Flavor.PX4 else MavResult.FAILED, msg)
                return
            reply = ap.set_mode(mode)
        elif cmd == mavlink.MAV_CMD_NAV_TAKEOFF:
            if self.spec.flavor is Flavor.PX4:
                alt = p7 - self.home.alt_amsl_m if math.isfinite(p7) else math.nan  # PX4: param7 is AMSL
            else:
                alt = p7  # ArduCopter: param7 is the altitude above home
            reply = ap.takeoff(alt)
        elif cmd == mavlink.MAV_CMD_NAV_LAND:
            reply = ap.land()
        elif cmd == mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            reply = ap.return_to_launch()
        elif cmd == mavlink.MAV_CMD_SET_MESSAGE_INTERVAL:
            result = self._set_interval(int(p1), p2)
            if result is not MavResult.ACCEPTED and self.spec.flavor is Flavor.ARDUPILOT:
                self._flush_texts([StatusText(Severity.INFO, f"No ap_message for mavlink id ({int(p1)})")])
            self._ack(cmd, result, msg)
            return
        elif cmd == mavlink.MAV_CMD_REQUEST_MESSAGE:
            msgid = int(p1)
            if msgid not in _ON_REQUEST:
                self._ack(cmd, self.spec.unsupported_interval_result, msg)
                return
            self._ack(cmd, MavResult.ACCEPTED, msg)
            self._send_stream(msgid, ap.sim.measure())
            return
        elif cmd == mavlink.MAV_CMD_GET_HOME_POSITION:
            self._ack(cmd, MavResult.ACCEPTED, msg)
            self._send_stream(mavlink.MAVLINK_MSG_ID_HOME_POSITION, ap.sim.measure())
            return
        elif cmd == mavlink.MAV_CMD_DO_REPOSITION:
            reply = self._reposition(msg)
        elif cmd == mavlink.MAV_CMD_MISSION_START:
            reply = ap.set_mode(Mode.MISSION)
        elif cmd == mavlink.MAV_CMD_DO_SET_MISSION_CURRENT:
            ok = ap.plan.set_current(int(p1))
            self._ack(cmd, MavResult.ACCEPTED if ok else MavResult.DENIED, msg)
            if ok:
                self._send_mission_current()
            return
        elif cmd == mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES:
            self._ack(cmd, MavResult.ACCEPTED, msg)
            self._send_stream(mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION, ap.sim.measure())
            return
        elif cmd == mavlink.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN:
            if int(p1) != 1:
                self._ack(cmd, MavResult.UNSUPPORTED, msg)
                return
            if ap.armed:
                self._ack(cmd, MavResult.DENIED if self.spec.flavor is Flavor.PX4 else MavResult.FAILED, msg)
                return
            self._ack(cmd, MavResult.ACCEPTED, msg)  # queued in the sink, so it leaves before the reboot
            self.reboot()
            return
        else:
            self.counters.unsupported_commands += 1
            self._ack(cmd, MavResult.UNSUPPORTED, msg)
            return
        self._deliver(reply.texts, reply.texts_after, lambda: self._ack(cmd, reply.result, msg))

    def _reposition(self, msg: mavlink.MAVLink_message) -> CommandReply:
        """MAV_CMD_DO_REPOSITION (MAVSDK goto_location): p1 speed (-1 default), x/y lat/lon, z altitude."""
        is_int = msg.get_type() == "COMMAND_INT"
        frame = int(msg.frame) if is_int else mavlink.MAV_FRAME_GLOBAL
        lat = float(msg.x) * 1e-7 if is_int else float(msg.param5)
        lon = float(msg.y) * 1e-7 if is_int else float(msg.param6)
        alt = float(msg.z) if is_int else float(msg.param7)
        if frame not in (
            mavlink.MAV_FRAME_GLOBAL,
            mavlink.MAV_FRAME_GLOBAL_INT,
            mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT,
            mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        ):
            return CommandReply(MavResult.UNSUPPORTED)
        home_ned = self.ap.home_ned_m
        north = east = down = math.nan
        if math.isfinite(lat) and math.isfinite(lon) and not (is_int and msg.x == 0 and msg.y == 0):
            dn, de = self.home.offset(lat, lon)
            north, east = float(home_ned[0]) + dn, float(home_ned[1]) + de
        if math.isfinite(alt):
            relative = frame in (
                mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT,
                mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            )
            down = float(home_ned[2]) - (alt if relative else alt - self.home.alt_amsl_m)
        speed = float(msg.param1)
        return self.ap.goto((north, east, down), speed if speed > 0 else math.nan)

    def _request_data_stream(self, stream_id: int, rate_hz: int, start_stop: int) -> None:
        """ArduPilot's REQUEST_DATA_STREAM (no ACK): ALL sets every group but PARAMS."""
        if start_stop not in (0, 1):
            return
        rate = rate_hz if start_stop == 1 else 0
        if stream_id == mavlink.MAV_DATA_STREAM_ALL:
            groups = list(AP_STREAM_GROUPS)
        elif stream_id in AP_STREAM_BY_ID:
            groups = [AP_STREAM_BY_ID[stream_id]]
        else:
            return
        for group in groups:
            # the in-memory SRx_ value follows, as streamRates[i].set(freq) does (not saved)
            self.ap.set_param(f"SR0_{group}", rate)
            self.streams.set_group(group, rate, self.ap.sim.time_s)

    def _ftp(self, msg: mavlink.MAVLink_message) -> None:
        reply = ftp_reply(bytes(msg.payload))
        if reply is not None:
            self.mav.send(
                self.mav.file_transfer_protocol_encode(
                    0, msg.get_srcSystem(), msg.get_srcComponent(), list(reply)
                )
            )

    def _set_interval(self, msgid: int, interval_us: float) -> MavResult:
        if msgid not in _STREAMABLE:
            return self.spec.unsupported_interval_result
        if not math.isfinite(interval_us) or interval_us < -1.5:
            return MavResult.DENIED
        now = self.ap.sim.time_s
        if interval_us < -0.5:
            self.streams.stop(msgid)
        elif interval_us < 0.5:
            self.streams.set_default(msgid, now)
        else:
            self.streams.set(msgid, max(interval_us * 1e-6, 0.001), now)
        return MavResult.ACCEPTED

    def _param_read(self, msg: mavlink.MAVLink_message) -> None:
        names = list(self.ap.params)
        if msg.param_index >= 0:
            if msg.param_index < len(names):
                self._param_value(names[msg.param_index])
            return
        name = _param_name(msg.param_id)
        if name in self.ap.params:
            self._param_value(name)

    def _param_value(self, name: str) -> None:
        names = list(self.ap.params)
        spec = self.ap.param_spec(name)
        value = self.ap.params[name]
        wire = value
        if self.spec.param_bytewise and spec.mav_type is not ParamType.REAL32:
            wire = struct.unpack("<f", struct.pack("<i", int(value)))[0]
        self.mav.send(
            self.mav.param_value_encode(
                name.encode(), wire, int(spec.mav_type), len(names), names.index(name)
            )
        )

    def _decode_param(self, name: str, wire: float) -> float:
        spec = self.ap.param_spec(name)
        if self.spec.param_bytewise and spec.mav_type is not ParamType.REAL32:
            return float(struct.unpack("<i", struct.pack("<f", wire))[0])
        return float(wire)

    # ------------------------------------------------------------------ setpoints
    def _position_target(self, msg: mavlink.MAVLink_message) -> None:
        mask = int(msg.type_mask)
        frame = int(msg.coordinate_frame)
        if frame not in (mavlink.MAV_FRAME_LOCAL_NED, mavlink.MAV_FRAME_BODY_NED):
            self.counters.ignored_setpoints += 1
            return
        yaw = float(msg.yaw) if not mask & 1024 else math.nan
        yaw_rate = float(msg.yaw_rate) if not mask & 2048 else math.nan
        home = self.ap.home_ned_m
        if mask & 7 != 7:
            kind = SetpointKind.POSITION
            vec = np.array([msg.x, msg.y, msg.z], dtype=np.float64)
            if frame == mavlink.MAV_FRAME_BODY_NED:
                self.counters.ignored_setpoints += 1
                return
            vec = vec + home
        elif mask & 56 != 56:
            kind = SetpointKind.VELOCITY
            vec = np.array([msg.vx, msg.vy, msg.vz], dtype=np.float64)
        elif mask & 448 != 448:
            kind = SetpointKind.ACCELERATION
            vec = np.array([msg.afx, msg.afy, msg.afz], dtype=np.float64)
        else:
            self.counters.ignored_setpoints += 1
            return
        if frame == mavlink.MAV_FRAME_BODY_NED:
            # BODY_NED: axes turned by the vehicle's heading, not its tilt
            heading = euler(np.asarray(self.ap.sim.q_wxyz[0]))[2]
            c, s = math.cos(heading), math.sin(heading)
            vec = np.array([c * vec[0] - s * vec[1], s * vec[0] + c * vec[1], vec[2]])
        if not np.all(np.isfinite(vec)):
            self.counters.ignored_setpoints += 1
            return
        extra = yaw if kind is SetpointKind.POSITION else yaw_rate
        values = (
            float(vec[0]),
            float(vec[1]),
            float(vec[2]),
            0.0 if not math.isfinite(extra) else extra,
            0.0,
        )
        target = Target(kind, values, self.ap.sim.time_s, yaw_rad=yaw, yaw_rate_rad_s=yaw_rate)
        if not self.ap.external_setpoint(target):
            self.counters.ignored_setpoints += 1

    def _attitude_target(self, msg: mavlink.MAVLink_message) -> None:
        mask = int(msg.type_mask)
        thrust = float(msg.thrust)
        if mask & 128:
            rates = (float(msg.body_roll_rate), float(msg.body_pitch_rate), float(msg.body_yaw_rate))
            values = (*rates, thrust, 0.0)
            kind = SetpointKind.RATES
        else:
            q = np.asarray(msg.q, dtype=np.float64)
            norm = float(np.linalg.norm(q))
            if not math.isfinite(norm) or norm < 1e-6:
                self.counters.ignored_setpoints += 1
                return
            q = q / norm
            values = (float(q[0]), float(q[1]), float(q[2]), float(q[3]), thrust)
            kind = SetpointKind.ATTITUDE
        if not all(math.isfinite(v) for v in values) or not 0.0 <= thrust <= 1.0:
            self.counters.ignored_setpoints += 1
            return
        if not self.ap.external_setpoint(Target(kind, values, self.ap.sim.time_s)):
            self.counters.ignored_setpoints += 1


def _param_name(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    return raw.split("\x00", 1)[0]


def make_vehicle(
    sim: Sim,
    flavor: Flavor | str,
    *,
    params: dict[str, float] | None = None,
    ready_delay_s: float | None = None,
    fast_boot: bool = False,
    sysid: int = 1,
    signing_key: bytes | None = None,
    signing_epoch_s: float = 0.0,
    home: Home = DEFAULT_HOME,
) -> MavlinkVehicle:
    """Build an :class:`Autopilot` with the flavour's rules over ``sim`` and wrap it.

    The vehicle starts as the real firmware does after a cold boot (PX4 SIH: ready to arm ~5 s
    after its first HEARTBEAT; ArduCopter: ~42 s, while its EKF converges); ``fast_boot`` (for
    tests) shortens that to 1-2 s; ``ready_delay_s`` sets any value.
    """
    spec = FLAVORS[Flavor(flavor)]
    ap = Autopilot(sim, spec.rules, params=params, ready_delay_s=ready_delay_s, fast_boot=fast_boot)
    return MavlinkVehicle(
        ap, spec.flavor, sysid=sysid, signing_key=signing_key, signing_epoch_s=signing_epoch_s, home=home
    )


__all__ = [
    "ARDUPILOT",
    "FLAVORS",
    "PX4",
    "Flavor",
    "FlavorSpec",
    "Home",
    "LandedState",
    "MavlinkVehicle",
    "VehicleCounters",
    "make_vehicle",
]
