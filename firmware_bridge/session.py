"""A MAVLink session with one autopilot, driven by ``poll(now_ns)`` from a single-threaded loop.

What it does on each poll: read the link in one chunk, decode, fold telemetry into the
VehicleState, answer the autopilot's TIMESYNC requests, match COMMAND_ACKs, judge peer liveness
(link down after ``liveness_timeout_s`` without an autopilot HEARTBEAT, up again on the next
one), send the companion HEARTBEAT when due *and only while the agent says it is healthy*,
resend or fail commands whose ACK is late, and on every (re)connect request the message
intervals and the failsafe parameters the shield needs.

Nothing here blocks except :meth:`MavlinkSession.wait`, the start-up convenience.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import BridgeError, CommandError, LinkDownError
from firmware_bridge.links import Link
from firmware_bridge.mavlink_codec import MavlinkEncoder, MavlinkParser, SigningConfig
from firmware_bridge.telemetry import (
    MAV_TYPE_ONBOARD_CONTROLLER,
    PX4_MAIN_AUTO,
    TelemetryTracker,
    arducopter_custom_mode,
    px4_custom_mode,
)
from firmware_bridge.types import Autopilot, VehicleState

MAV_AUTOPILOT_INVALID = 8
MAV_STATE_ACTIVE = 4
MAV_COMP_ID_ONBOARD_COMPUTER = 191

MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_SET_MODE = 176
MAV_CMD_COMPONENT_ARM_DISARM = 400
MAV_CMD_SET_MESSAGE_INTERVAL = 511

MAV_RESULT_ACCEPTED = 0
MAV_RESULT_IN_PROGRESS = 5
MAV_RESULT_NAMES = {
    0: "ACCEPTED",
    1: "TEMPORARILY_REJECTED",
    2: "DENIED",
    3: "UNSUPPORTED",
    4: "FAILED",
    5: "IN_PROGRESS",
    6: "CANCELLED",
}
"""MAV_RESULT numbers → names, for error messages."""

DEFAULT_MESSAGE_RATES_HZ: tuple[tuple[int, float], ...] = (
    (mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED, 50.0),
    (mavlink.MAVLINK_MSG_ID_ATTITUDE_QUATERNION, 100.0),
    (mavlink.MAVLINK_MSG_ID_HIGHRES_IMU, 100.0),
    (mavlink.MAVLINK_MSG_ID_SYS_STATUS, 2.0),
    (mavlink.MAVLINK_MSG_ID_BATTERY_STATUS, 1.0),
    (mavlink.MAVLINK_MSG_ID_EXTENDED_SYS_STATE, 2.0),
    (
        mavlink.MAVLINK_MSG_ID_EKF_STATUS_REPORT,
        2.0,
    ),  # ArduPilot's estimator health (PX4 sends ESTIMATOR_STATUS)
)
"""Streams requested on every connect: (msgid, rate Hz)."""

MAX_STATE_STREAM_HZ = 250.0
"""The fastest the state streams are asked for: PX4's EKF2 publishes its estimate at up to
~250 Hz on common boards (ArduCopter's EKF3 at its 400 Hz main loop); asking for more only loads
the link."""
STATE_MESSAGES = (mavlink.MAVLINK_MSG_ID_LOCAL_POSITION_NED, mavlink.MAVLINK_MSG_ID_ATTITUDE_QUATERNION)
"""The streams a control tick reads its state from (position and velocity; attitude and rates)."""


def stream_rates_for(
    control_rate_hz: float, rates_hz: tuple[tuple[int, float], ...] = DEFAULT_MESSAGE_RATES_HZ
) -> tuple[tuple[int, float], ...]:
    """``rates_hz`` with the state streams raised to the control rate (up to
    :data:`MAX_STATE_STREAM_HZ`; never lowered): a 250 Hz loop fed 50 Hz positions acts on the
    same sample five times, and its telemetry-to-setpoint latency is the stream's period."""
    fast = min(control_rate_hz, MAX_STATE_STREAM_HZ)
    return tuple((m, max(hz, fast) if m in STATE_MESSAGES else hz) for m, hz in rates_hz)


PX4_FAILSAFE_PARAMS = ("COM_OF_LOSS_T", "COM_OBL_RC_ACT")
"""PX4 parameters read at connect: offboard-loss timeout and action."""
ARDUPILOT_FAILSAFE_PARAMS = ("GUID_TIMEOUT",)
"""ArduPilot parameters read at connect: how long GUIDED keeps the last velocity target."""
AIRFRAME_PARAMS = {Autopilot.PX4: ("SYS_AUTOSTART",), Autopilot.ARDUPILOT: ("FRAME_CLASS", "FRAME_TYPE")}
OPTIONAL_PARAMS = {Autopilot.PX4: ("COM_RC_IN_MODE",)}
"""Read at connect where the autopilot has them: whether PX4 expects a pilot's sticks (its
offboard-loss mode may need them)."""
"""Read at connect too, where the autopilot has them (our emulator does not): which airframe this is,
for the check that the bundle was calibrated on this vehicle (edge_agent.vehicle)."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How the companion presents itself and how patient it is."""

    sysid: int = 1
    """Our MAVLink system id: the vehicle's own, as PX4 and MAVSDK expect of an onboard computer."""
    compid: int = MAV_COMP_ID_ONBOARD_COMPUTER
    """MAV_COMP_ID_ONBOARD_COMPUTER; 0 (pymavlink's default) is not a valid source."""
    target_sysid: int | None = None
    """The autopilot's sysid (``--target-system``): which vehicle to fly on a link several share;
    None = the first autopilot whose HEARTBEAT arrives."""
    target_compid: int | None = None
    heartbeat_period_s: float = 1.0
    liveness_timeout_s: float = 3.0
    command_timeout_s: float = 0.5
    command_retries: int = 3
    """Re-sends after the first attempt (MAVSDK's figure): four attempts in all, then CommandError."""
    command_in_progress_timeout_s: float = 10.0
    """How long a command answered IN_PROGRESS may take before it fails."""
    message_rates_hz: tuple[tuple[int, float], ...] = DEFAULT_MESSAGE_RATES_HZ
    timesync_period_s: float = 5.0
    timesync_max_rtt_s: float = 0.010
    param_retry_s: float = 1.0
    param_attempts: int = 3
    signing: SigningConfig | None = None
    max_events: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.sysid <= 255 or not 1 <= self.compid <= 255:
            raise BridgeError(
                f"sysid and compid must be in 1..255 (compid 191 for an onboard computer), got {self.sysid}, {self.compid}"
            )
        for name in ("target_sysid", "target_compid"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 255:
                raise BridgeError(
                    f"{name} must be a MAVLink id in 1..255 (or None: the first autopilot), got {value}"
                )
        for name in ("heartbeat_period_s", "liveness_timeout_s", "command_timeout_s", "timesync_period_s"):
            if not getattr(self, name) > 0:
                raise BridgeError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.command_retries < 0:
            raise BridgeError(f"command_retries must be >= 0, got {self.command_retries}")


class SessionEventKind(Enum):
    """What a session reports besides telemetry."""

    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    COMMAND_FAILED = "command_failed"
    PARAM_MISSING = "param_missing"
    FOREIGN_SENDER = "foreign_sender"
    """Datagrams from another sender than the autopilot locked onto arrived and were dropped."""


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A link, command or parameter event, stamped with the session clock."""

    kind: SessionEventKind
    stamp_ns: int
    detail: str


class CommandHandle:
    """A command in flight; poll ``done`` (the session resolves it), then read ``result`` or ``error``."""

    __slots__ = (
        "_deadline_ns",
        "_msg_params",
        "attempts",
        "command",
        "done",
        "error",
        "name",
        "result",
        "started_ns",
    )

    def __init__(self, command: int, name: str, params: tuple[float, ...]) -> None:
        self.command = command
        """MAV_CMD number."""
        self.name = name
        """Human name for messages (e.g. "arm", "set mode OFFBOARD")."""
        self._msg_params = params
        self.attempts = 0
        """COMMAND_LONGs sent so far."""
        self.done = False
        self.result: int | None = None
        """MAV_RESULT of the final ACK; None while pending or when no ACK ever came."""
        self.error: CommandError | None = None
        self.started_ns = 0
        self._deadline_ns = 0

    @property
    def accepted(self) -> bool:
        """Done and accepted."""
        return self.done and self.error is None

    def raise_for_result(self) -> None:
        """Raise the CommandError if the command failed (BridgeError if still pending)."""
        if not self.done:
            raise BridgeError(f"command {self.name!r} is still pending; poll the session until done")
        if self.error is not None:
            raise self.error

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("accepted" if self.error is None else "failed")
        return f"CommandHandle({self.name!r}, {state}, attempts={self.attempts})"


class _ParamRead:
    """One retried read: a parameter (PARAM_REQUEST_READ), or with ``mission_type`` the number of
    items of that type the autopilot stores (MISSION_REQUEST_LIST → MISSION_COUNT)."""

    __slots__ = ("attempts", "mission_type", "name", "next_ns", "optional")

    def __init__(self, name: str, *, optional: bool = False, mission_type: int | None = None) -> None:
        self.name = name
        self.optional = optional
        self.mission_type = mission_type
        self.attempts = 0
        self.next_ns = 0

    def done(self, state: VehicleState) -> bool:
        if self.mission_type is None:
            return self.name in state.params
        return self.mission_type in state.mission_counts


def _ms(ns: int) -> int:
    return (ns // 1_000_000) & 0xFFFFFFFF


class MavlinkSession:
    """The companion's MAVLink session over one link (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        clock: Callable[[], int],
        config: SessionConfig | None = None,
        *,
        unix_time_us: Callable[[], int] | None = None,
    ) -> None:
        self.link = link
        self.config = cfg = config if config is not None else SessionConfig()
        self._clock = clock
        if unix_time_us is None:
            self.encoder = MavlinkEncoder(cfg.sysid, cfg.compid, signing=cfg.signing)
        else:
            self.encoder = MavlinkEncoder(
                cfg.sysid, cfg.compid, signing=cfg.signing, unix_time_us=unix_time_us
            )
        self.parser = MavlinkParser(signing=cfg.signing)
        self.telemetry = TelemetryTracker(target_sysid=cfg.target_sysid, target_compid=cfg.target_compid)
        self._start_ns = clock()
        self._healthy = False
        self._next_heartbeat_ns = 0
        self._link_up = False
        self._last_hb_ns = 0
        self._commands: list[CommandHandle] = []
        self._param_reads: list[_ParamRead] = []
        self._next_timesync_ns = 0
        self._timesync_sent: deque[int] = deque(maxlen=8)
        self._offsets: deque[int] = deque(maxlen=9)
        self._events: deque[SessionEvent] = deque(maxlen=cfg.max_events)
        self._statustext_id = 0
        self.heartbeats_sent = 0
        """Companion HEARTBEATs sent so far."""
        self.link_errors = 0
        """LinkDownErrors seen from a plain (non-reconnecting) link."""
        self._rx_source: tuple[str, int] | None = None
        self._foreign_reported = 0
        self._foreign_next_event = 1

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> VehicleState:
        """The current VehicleState snapshot."""
        return self.telemetry.state

    @property
    def link_up(self) -> bool:
        """Whether the autopilot's HEARTBEATs are arriving (within ``liveness_timeout_s``)."""
        return self._link_up

    @property
    def healthy(self) -> bool:
        """What the agent last said about itself (heartbeats are sent only while True)."""
        return self._healthy

    @property
    def timesync_offset_ns(self) -> int | None:
        """Autopilot clock minus our clock (median of recent good samples), None before the first."""
        if not self._offsets:
            return None
        return sorted(self._offsets)[len(self._offsets) // 2]

    def set_healthy(self, healthy: bool) -> None:
        """The agent's own watchdog verdict. False stops the companion HEARTBEAT at once."""
        if healthy and not self._healthy:
            self._next_heartbeat_ns = 0  # announce recovery at the next poll
        self._healthy = healthy

    def events(self) -> list[SessionEvent]:
        """Drain the queued session events, oldest first."""
        if not self._events:  # the loop asks every tick
            return []
        out = list(self._events)
        self._events.clear()
        return out

    # -- the tick ----------------------------------------------------------------------------------

    def poll(self, now_ns: int) -> None:
        """Read and process what arrived, then send what is due. Cheap when nothing is due."""
        try:
            # A plain link that already failed stays closed; its LinkDownError was reported once.
            data = self.link.read() if self.link.is_open else b""
        except LinkDownError as exc:
            self.link_errors += 1
            self._event(SessionEventKind.LINK_DOWN, now_ns, str(exc))
            data = b""
        if data:
            self._rx_source = self.link.source  # a UDP listener: one read, one sender
            for msg in self.parser.feed(data):
                self._handle(msg, now_ns)
        foreign = self.link.foreign_datagrams
        if foreign != self._foreign_reported:
            self._report_foreign(foreign, now_ns)
        if self._link_up and now_ns - self._last_hb_ns > self.config.liveness_timeout_s * 1e9:
            self._link_up = False
            self.telemetry.set_link_up(False)
            if self.link.locked_source is not None:
                # A rebooted autopilot may come back from another port: listen for it again. Only
                # the same sysid/compid is accepted (the telemetry lock stays).
                self.link.lock_source(None)
            self._event(
                SessionEventKind.LINK_DOWN,
                now_ns,
                f"no autopilot HEARTBEAT for {self.config.liveness_timeout_s:.1f} s",
            )
        if self._healthy and now_ns >= self._next_heartbeat_ns:
            self._send_heartbeat(now_ns)
        if self._commands:
            self._service_commands(now_ns)
        if self._link_up:
            if self._param_reads:
                self._service_params(now_ns)
            if now_ns >= self._next_timesync_ns:
                self._next_timesync_ns = now_ns + int(self.config.timesync_period_s * 1e9)
                self._timesync_sent.append(now_ns)
                self.send(mavlink.MAVLink_timesync_message(0, now_ns))

    def send(self, msg: Any) -> None:
        """Encode and write one pymavlink message (adapters send setpoints through this)."""
        try:
            self.link.write(self.encoder.encode(msg))
        except LinkDownError as exc:
            self.link_errors += 1
            self._event(SessionEventKind.LINK_DOWN, self._clock(), str(exc))

    def send_frame(self, frame: bytes) -> None:
        """Write one frame this session's encoder made (the adapters' setpoints); as ``send`` otherwise."""
        try:
            self.link.write(frame)
        except LinkDownError as exc:
            self.link_errors += 1
            self._event(SessionEventKind.LINK_DOWN, self._clock(), str(exc))

    def wait(
        self,
        handle: CommandHandle,
        *,
        sleep: Callable[[float], None] = time.sleep,
        period_s: float = 0.005,
    ) -> None:
        """Block, polling, until ``handle`` resolves; raise its CommandError. For start-up only.

        It cannot hang: every command resolves within its retries' timeouts (or the
        in-progress limit) as long as the session clock advances.
        """
        while not handle.done:
            self.poll(self._clock())
            if not handle.done:
                sleep(period_s)
        handle.raise_for_result()

    # -- commands ----------------------------------------------------------------------------------

    def command_long(self, command: int, params: tuple[float, ...] = (), name: str = "") -> CommandHandle:
        """Queue a COMMAND_LONG (up to 7 params); returns a handle the session resolves."""
        if len(params) > 7:
            raise BridgeError(f"COMMAND_LONG takes at most 7 params, got {len(params)}")
        padded = tuple(float(p) for p in params) + (0.0,) * (7 - len(params))
        handle = CommandHandle(command, name or f"MAV_CMD {command}", padded)
        self._commands.append(handle)
        # Only one command per MAV_CMD number may be in flight: ACKs name the command, not the request.
        if not any(h.command == command and h.attempts > 0 for h in self._commands):
            self._transmit(handle, self._clock())
        return handle

    def arm(self) -> CommandHandle:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=1."""
        return self.command_long(MAV_CMD_COMPONENT_ARM_DISARM, (1.0,), "arm")

    def disarm(self, force: bool = False) -> CommandHandle:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=0 (p2=21196 forces it, even in the air)."""
        return self.command_long(MAV_CMD_COMPONENT_ARM_DISARM, (0.0, 21196.0 if force else 0.0), "disarm")

    def set_mode(self, mode: str) -> CommandHandle:
        """MAV_CMD_DO_SET_MODE for a normalised mode name, numbered for the connected autopilot."""
        if self.telemetry.state.autopilot == Autopilot.ARDUPILOT:
            custom = arducopter_custom_mode(mode)
            return self.command_long(MAV_CMD_DO_SET_MODE, (1.0, float(custom)), f"set mode {mode}")
        custom = px4_custom_mode(mode)
        main, sub = (custom >> 16) & 0xFF, (custom >> 24) & 0xFF
        params = (1.0, float(main), float(sub)) if main == PX4_MAIN_AUTO else (1.0, float(main))
        return self.command_long(MAV_CMD_DO_SET_MODE, params, f"set mode {mode}")

    def set_message_interval(self, msgid: int, rate_hz: float) -> CommandHandle:
        """MAV_CMD_SET_MESSAGE_INTERVAL: p1 msgid, p2 interval µs (rate <= 0 disables the stream)."""
        interval_us = 1e6 / rate_hz if rate_hz > 0 else -1.0
        return self.command_long(
            MAV_CMD_SET_MESSAGE_INTERVAL, (float(msgid), interval_us), f"message interval {msgid}"
        )

    def takeoff(self, altitude_m: float) -> CommandHandle:
        """MAV_CMD_NAV_TAKEOFF, p7 = altitude (ArduPilot: above home; PX4: AMSL, NaN = its default)."""
        nan = float("nan")
        return self.command_long(MAV_CMD_NAV_TAKEOFF, (0.0, 0.0, 0.0, nan, nan, nan, altitude_m), "takeoff")

    def land(self) -> CommandHandle:
        """MAV_CMD_NAV_LAND here."""
        nan = float("nan")
        return self.command_long(MAV_CMD_NAV_LAND, (0.0, 0.0, 0.0, nan, nan, nan, nan), "land")

    def return_to_launch(self) -> CommandHandle:
        """MAV_CMD_NAV_RETURN_TO_LAUNCH."""
        return self.command_long(MAV_CMD_NAV_RETURN_TO_LAUNCH, (), "return to launch")

    def request_param(self, name: str, *, optional: bool = False) -> None:
        """Read one autopilot parameter (PARAM_REQUEST_READ, retried); it lands in ``state.params``.
        An ``optional`` one that never comes is not reported as PARAM_MISSING."""
        if len(name) > 16:
            raise BridgeError(f"parameter names have at most 16 characters, {name!r} has {len(name)}")
        if not any(p.name == name for p in self._param_reads):
            self._param_reads.append(_ParamRead(name, optional=optional))

    def reading(self, name: str) -> bool:
        """True while a :meth:`request_param` read of ``name`` is still being retried."""
        return name not in self.state.params and any(p.name == name for p in self._param_reads)

    def request_mission_count(self, mission_type: int) -> None:
        """Ask how many items of ``mission_type`` (MAV_MISSION_TYPE: 0 mission, 1 fence, 2 rally)
        the autopilot stores (MISSION_REQUEST_LIST, retried as a parameter read is); the answer
        lands in ``state.mission_counts``. Only the count is read: a download of the items is
        cancelled (MISSION_ACK OPERATION_CANCELLED) so the autopilot does not wait for it."""
        name = f"mission count {mission_type}"
        if not any(p.name == name for p in self._param_reads):
            self._param_reads.append(_ParamRead(name, optional=True, mission_type=mission_type))

    def reading_mission_count(self, mission_type: int) -> bool:
        """True while a :meth:`request_mission_count` of ``mission_type`` is still being retried."""
        return any(p.mission_type == mission_type and not p.done(self.state) for p in self._param_reads)

    # -- ground-station messages ----------------------------------------------------------------

    def send_statustext(self, severity: int, text: str) -> None:
        """STATUSTEXT to the ground station; longer than 50 characters is sent in chunks (MAVLink 2)."""
        if not 0 <= severity <= 7:
            raise BridgeError(f"severity is MAV_SEVERITY 0 (emergency) .. 7 (debug), got {severity}")
        raw = text.encode("ascii", errors="replace")
        if len(raw) <= 50:
            self.send(mavlink.MAVLink_statustext_message(severity, raw, 0, 0))
            return
        self._statustext_id = self._statustext_id % 0xFFFF + 1
        chunks = [raw[k : k + 50] for k in range(0, len(raw), 50)]
        for seq, chunk in enumerate(chunks):
            self.send(mavlink.MAVLink_statustext_message(severity, chunk, self._statustext_id, seq))

    def send_named_value_float(self, name: str, value: float) -> None:
        """NAMED_VALUE_FLOAT (e.g. margin, coverage) for QGroundControl / Mission Planner graphs."""
        raw = name.encode("ascii", errors="replace")
        if not 1 <= len(raw) <= 10:
            raise BridgeError(f"NAMED_VALUE_FLOAT names have 1..10 characters, {name!r} has {len(raw)}")
        self.send(
            mavlink.MAVLink_named_value_float_message(_ms(self._clock() - self._start_ns), raw, float(value))
        )

    # -- internals ---------------------------------------------------------------------------------

    def _event(self, kind: SessionEventKind, now_ns: int, detail: str) -> None:
        self._events.append(SessionEvent(kind, now_ns, detail))

    def _target(self) -> tuple[int, int]:
        t = self.telemetry
        return (t.target_sysid or 1, t.target_compid or 1)

    def _send_heartbeat(self, now_ns: int) -> None:
        self._next_heartbeat_ns = now_ns + int(self.config.heartbeat_period_s * 1e9)
        if self.link.source is not None and self.link.locked_source is None:
            # A UDP listener that has heard someone but not yet the autopilot: whoever it is (another
            # vehicle, a second emulator) must not hear a companion from us.
            return
        self.heartbeats_sent += 1
        self.send(
            mavlink.MAVLink_heartbeat_message(
                MAV_TYPE_ONBOARD_CONTROLLER, MAV_AUTOPILOT_INVALID, 0, 0, MAV_STATE_ACTIVE, 3
            )
        )

    def _handle(self, msg: Any, now_ns: int) -> None:
        used = self.telemetry.update(msg, now_ns)
        mtype = msg.get_type()
        if mtype == "TIMESYNC":
            self._timesync(msg, now_ns)
            return
        if mtype == "HEARTBEAT" and used:
            self._last_hb_ns = now_ns
            if self._rx_source is not None and self.link.locked_source is None:
                # From now on the link drops (and counts) every other sender, and replies only here.
                self.link.lock_source(self._rx_source)
            if not self._link_up:
                self._link_up = True
                self.telemetry.set_link_up(True)
                self._event(SessionEventKind.LINK_UP, now_ns, f"autopilot {self._target()} heartbeat")
                self._on_connect(now_ns)
        elif mtype == "COMMAND_ACK":
            hdr = msg._header
            tgt_sys, tgt_comp = msg.target_system, msg.target_component
            from_autopilot = (hdr.srcSystem, hdr.srcComponent) == self._target()
            # target fields are a MAVLink 2 extension: 0 when the autopilot leaves them out.
            for_us = tgt_sys in (0, self.config.sysid) and tgt_comp in (0, self.config.compid)
            if from_autopilot and for_us:
                self._ack(msg, now_ns)

    def _report_foreign(self, foreign: int, now_ns: int) -> None:
        # At the first dropped datagram, then at 10, 100, 1000, ...: a flood must not fill the queue.
        self._foreign_reported = foreign
        if foreign < self._foreign_next_event:
            return
        while self._foreign_next_event <= foreign:
            self._foreign_next_event *= 10
        locked = self.link.locked_source
        where = f"{locked[0]}:{locked[1]}" if locked is not None else "?"
        self._event(
            SessionEventKind.FOREIGN_SENDER,
            now_ns,
            f"{foreign} datagram(s) from other senders dropped: only the autopilot at {where} "
            f"(sysid {self.telemetry.target_sysid}) is heard; is a second program sending to this port?",
        )

    def _on_connect(self, now_ns: int) -> None:
        # Intervals persist per channel on ArduPilot but not across PX4 reboots: ask every time.
        for msgid, rate in self.config.message_rates_hz:
            self.set_message_interval(msgid, rate)
        names = (
            ARDUPILOT_FAILSAFE_PARAMS if self.state.autopilot == Autopilot.ARDUPILOT else PX4_FAILSAFE_PARAMS
        )
        for name in names:
            if name not in self.state.params:
                self.request_param(name)
        for name in AIRFRAME_PARAMS.get(self.state.autopilot, ()) + OPTIONAL_PARAMS.get(
            self.state.autopilot, ()
        ):
            if name not in self.state.params:
                self.request_param(name, optional=True)
        self._next_timesync_ns = now_ns

    def _timesync(self, msg: Any, now_ns: int) -> None:
        if msg.tc1 == 0:
            # A request from the autopilot (ArduPilot every 10 s, PX4 at 10 Hz): answer with our
            # clock; only the autopilot's own, and only once a UDP listener has locked onto it (a
            # second vehicle on the port must not hear a companion from us).
            hdr = msg._header
            unlocked = self.link.source is not None and self.link.locked_source is None
            if (hdr.srcSystem, hdr.srcComponent) == self._target() and self.telemetry.locked and not unlocked:
                self.send(mavlink.MAVLink_timesync_message(now_ns, msg.ts1))
            return
        if msg.ts1 not in self._timesync_sent:
            return
        rtt = now_ns - msg.ts1
        if 0 <= rtt < self.config.timesync_max_rtt_s * 1e9:
            self._offsets.append((2 * msg.tc1 - (msg.ts1 + now_ns)) // 2)

    def _transmit(self, h: CommandHandle, now_ns: int) -> None:
        sysid, compid = self._target()
        p = h._msg_params
        if h.attempts == 0:
            h.started_ns = now_ns
        # confirmation counts re-sends, so the autopilot can tell a retry from a new command.
        self.send(
            mavlink.MAVLink_command_long_message(
                sysid, compid, h.command, min(h.attempts, 255), p[0], p[1], p[2], p[3], p[4], p[5], p[6]
            )
        )
        h.attempts += 1
        h._deadline_ns = now_ns + int(self.config.command_timeout_s * 1e9)

    def _finish(self, h: CommandHandle, now_ns: int, result: int | None, error: CommandError | None) -> None:
        h.done = True
        h.result = result
        h.error = error
        self._commands.remove(h)
        if error is not None:
            self._event(SessionEventKind.COMMAND_FAILED, now_ns, str(error))
        for other in self._commands:  # release the next command of the same number
            if other.command == h.command and other.attempts == 0:
                self._transmit(other, now_ns)
                break

    def _ack(self, msg: Any, now_ns: int) -> None:
        for h in self._commands:
            if h.command == msg.command and h.attempts > 0:
                break
        else:
            return
        if msg.result == MAV_RESULT_IN_PROGRESS:
            h._deadline_ns = max(
                h._deadline_ns, now_ns + int(self.config.command_in_progress_timeout_s * 1e9)
            )
            h.attempts = max(h.attempts, self.config.command_retries + 1)  # no re-sends while it works
            return
        if msg.result == MAV_RESULT_ACCEPTED:
            self._finish(h, now_ns, MAV_RESULT_ACCEPTED, None)
            return
        name = MAV_RESULT_NAMES.get(msg.result, str(msg.result))
        texts = [s.text for s in self.telemetry.statustexts_since(h.started_ns)]
        why = f"; autopilot said: {' | '.join(texts)}" if texts else ""
        error = CommandError(
            f"{h.name} refused by the autopilot: MAV_RESULT {msg.result} ({name}){why}",
            command=h.command,
            result=int(msg.result),
        )
        self._finish(h, now_ns, int(msg.result), error)

    def _service_commands(self, now_ns: int) -> None:
        for h in list(self._commands):
            if h.attempts == 0 or now_ns < h._deadline_ns:
                continue
            if h.attempts <= self.config.command_retries:
                self._transmit(h, now_ns)
                continue
            error = CommandError(
                f"{h.name}: no COMMAND_ACK after {h.attempts} attempts "
                f"({self.config.command_timeout_s:.1f} s apart); is the autopilot connected and addressed "
                f"as sysid/compid {self._target()}?",
                command=h.command,
                result=None,
            )
            self._finish(h, now_ns, None, error)

    def _service_params(self, now_ns: int) -> None:
        sysid, compid = self._target()
        state = self.state
        for p in list(self._param_reads):
            if p.done(state):
                self._param_reads.remove(p)
                if p.mission_type is not None and p.attempts and state.mission_counts[p.mission_type]:
                    self.send(
                        mavlink.MAVLink_mission_ack_message(
                            sysid, compid, mavlink.MAV_MISSION_OPERATION_CANCELLED, p.mission_type
                        )
                    )
            elif now_ns >= p.next_ns:
                if p.attempts >= self.config.param_attempts:
                    self._param_reads.remove(p)
                    if not p.optional:
                        self._event(
                            SessionEventKind.PARAM_MISSING, now_ns, f"autopilot did not report {p.name}"
                        )
                    continue
                p.attempts += 1
                p.next_ns = now_ns + int(self.config.param_retry_s * 1e9)
                if p.mission_type is None:
                    self.send(mavlink.MAVLink_param_request_read_message(sysid, compid, p.name.encode(), -1))
                else:
                    self.send(mavlink.MAVLink_mission_request_list_message(sysid, compid, p.mission_type))
