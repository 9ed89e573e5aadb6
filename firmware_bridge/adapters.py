"""Vehicle adapters: typed setpoints → the right message for PX4 OFFBOARD, ArduPilot GUIDED or custom firmware.

Each adapter also knows how to take control (``start_activation`` + ``activation_step``, driven
from the loop; :func:`activate` blocks for start-up) and whether it has control
(``in_control``). When the autopilot or the pilot takes control away (mode change, disarm)
``check_control`` reports it once as :class:`ControlLost`, and the adapter latches (the latch and
the contract, :class:`VehicleAdapter`, are in :mod:`firmware_bridge.control`, shared with the
custom-firmware adapter of :mod:`firmware_bridge.custom_adapter`): it never
re-enters OFFBOARD/GUIDED by itself, and ``start_activation`` refuses until someone calls
``acknowledge_loss`` on purpose.

Type masks (bits mean *ignore*; X1 Y2 Z4 VX8 VY16 VZ32 AX64 AY128 AZ256 FORCE512 YAW1024 YAW_RATE2048):

====================  =====  =========================================================
setpoint              mask   note
====================  =====  =========================================================
velocity + yaw rate   1991   PX4 always; ArduPilot when the yaw rate is non-zero
velocity, ArduPilot   3527   yaw rate 0: ArduPilot's documented velocity mask (ignore yaw and
                             yaw rate), the one the recorded real flight used, so Copter keeps
                             its own heading behaviour instead of being pinned to rate 0
position + yaw        2552   yaw NaN → 3576 (ignore yaw and yaw rate)
acceleration + rate   1087
====================  =====  =========================================================
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.control import (
    ActivationStatus,
    ControlLatch,
    ControlLost,
    LatchedControl,
    VehicleAdapter,
    check_setpoint_finite,
)
from firmware_bridge.errors import BridgeError, CommandError
from firmware_bridge.mavlink_codec import MavlinkEncoder
from firmware_bridge.session import CommandHandle, MavlinkSession
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    Autopilot,
    LandedState,
    PositionNedYaw,
    RatesThrust,
    Setpoint,
    VelocityNedYawRate,
)

MAV_FRAME_LOCAL_NED = 1
MASK_VELOCITY_YAW_RATE = 1991
MASK_VELOCITY_ARDUPILOT = 3527
MASK_POSITION_YAW = 2552
MASK_POSITION = 3576
MASK_ACCELERATION_YAW_RATE = 1087
ATT_MASK_ATTITUDE_THRUST = 0b0000_0111  # ignore the three body rates
ATT_MASK_RATES_THRUST = 0b1000_0000  # ignore the attitude

PRESTREAM_S = 1.0
"""PX4 wants an offboard setpoint stream for about a second before it accepts OFFBOARD."""
PRESTREAM_MAX_GAP_S = 0.5
"""...at more than 2 Hz: a gap longer than this restarts the count."""
OFFBOARD_ATTEMPTS = 5
"""Times activation asks for OFFBOARD when PX4 answers TEMPORARILY_REJECTED before giving up."""
ARM_RETRY_S = 2.0
"""How often activation retries an arm the autopilot refused (EKF not ready, ...)."""


def setpoint_to_mavlink(
    setpoint: Setpoint, autopilot: Autopilot, time_boot_ms: int, target_system: int, target_component: int
) -> Any:
    """The pymavlink message (SET_POSITION_TARGET_LOCAL_NED or SET_ATTITUDE_TARGET) for a setpoint."""
    check_setpoint_finite(setpoint)
    t, ts, tc = time_boot_ms & 0xFFFFFFFF, target_system, target_component
    if isinstance(setpoint, VelocityNedYawRate):
        vn, ve, vd = setpoint.vel_ned_m_s
        rate = setpoint.yaw_rate_rad_s
        mask = MASK_VELOCITY_YAW_RATE
        if autopilot == Autopilot.ARDUPILOT and rate == 0.0:
            mask = MASK_VELOCITY_ARDUPILOT
        return mavlink.MAVLink_set_position_target_local_ned_message(
            t, ts, tc, MAV_FRAME_LOCAL_NED, mask, 0, 0, 0, vn, ve, vd, 0, 0, 0, 0, rate
        )
    if isinstance(setpoint, PositionNedYaw):
        n, e, d = setpoint.pos_ned_m
        yaw = setpoint.yaw_rad
        mask, yaw_v = (MASK_POSITION, 0.0) if math.isnan(yaw) else (MASK_POSITION_YAW, yaw)
        return mavlink.MAVLink_set_position_target_local_ned_message(
            t, ts, tc, MAV_FRAME_LOCAL_NED, mask, n, e, d, 0, 0, 0, 0, 0, 0, yaw_v, 0
        )
    if isinstance(setpoint, AccelerationNedYawRate):
        an, ae, ad = setpoint.acc_ned_m_s2
        return mavlink.MAVLink_set_position_target_local_ned_message(
            t, ts, tc, MAV_FRAME_LOCAL_NED, MASK_ACCELERATION_YAW_RATE, 0, 0, 0, 0, 0, 0, an, ae, ad, 0,
            setpoint.yaw_rate_rad_s,
        )  # fmt: skip
    if isinstance(setpoint, AttitudeThrust):
        return mavlink.MAVLink_set_attitude_target_message(
            t, ts, tc, ATT_MASK_ATTITUDE_THRUST, list(setpoint.q_wxyz), 0, 0, 0, setpoint.thrust_frac
        )
    assert isinstance(setpoint, RatesThrust)
    p, q, r = setpoint.rates_frd_rad_s
    return mavlink.MAVLink_set_attitude_target_message(
        t, ts, tc, ATT_MASK_RATES_THRUST, [1.0, 0.0, 0.0, 0.0], p, q, r, setpoint.thrust_frac
    )


_SPT = mavlink.MAVLink_set_position_target_local_ned_message
_SPT_ID: int = _SPT.id
_SPT_CRC_EXTRA: int = _SPT.crc_extra
_SPT_PACK = _SPT.unpacker.pack
"""SET_POSITION_TARGET_LOCAL_NED's wire layout: time_boot_ms, x, y, z, vx, vy, vz, afx, afy, afz,
yaw, yaw_rate, type_mask, target_system, target_component, coordinate_frame (pymavlink's pack order)."""


def _velocity_payload(
    setpoint: VelocityNedYawRate,
    autopilot: Autopilot,
    time_boot_ms: int,
    target_system: int,
    target_component: int,
) -> bytes:
    """The packed SET_POSITION_TARGET_LOCAL_NED payload ``setpoint_to_mavlink`` would give, checks included."""
    vn, ve, vd = setpoint.vel_ned_m_s
    rate = setpoint.yaw_rate_rad_s
    if not (math.isfinite(vn) and math.isfinite(ve) and math.isfinite(vd) and math.isfinite(rate)):
        check_setpoint_finite(setpoint)  # raises, naming the setpoint
    mask = MASK_VELOCITY_YAW_RATE
    if autopilot == Autopilot.ARDUPILOT and rate == 0.0:
        mask = MASK_VELOCITY_ARDUPILOT
    return _SPT_PACK(
        time_boot_ms & 0xFFFFFFFF, 0, 0, 0, vn, ve, vd, 0, 0, 0, 0, rate, mask,
        target_system, target_component, MAV_FRAME_LOCAL_NED,
    )  # fmt: skip


def encode_setpoint(
    encoder: MavlinkEncoder,
    setpoint: Setpoint,
    autopilot: Autopilot,
    time_boot_ms: int,
    target_system: int,
    target_component: int,
) -> bytes:
    """One setpoint's MAVLink frame, as the adapters send it. A velocity setpoint (the loop's
    every-tick case) is packed straight from its floats without a pymavlink message object,
    byte-equal to ``encoder.encode(setpoint_to_mavlink(...))`` (a test pins it); other kinds go
    through :func:`setpoint_to_mavlink`."""
    if type(setpoint) is VelocityNedYawRate:
        payload = _velocity_payload(setpoint, autopilot, time_boot_ms, target_system, target_component)
        return encoder.encode_payload(_SPT_ID, _SPT_CRC_EXTRA, payload)
    return encoder.encode(
        setpoint_to_mavlink(setpoint, autopilot, time_boot_ms, target_system, target_component)
    )


class _MavlinkAdapter(LatchedControl):
    """Common part of the PX4 and ArduPilot adapters."""

    autopilot: Autopilot

    def __init__(self, session: MavlinkSession) -> None:
        self.session = session
        self._latch = ControlLatch()
        self._phase = "idle"
        self._handle: CommandHandle | None = None
        self._error: str | None = None
        self._detail = ""
        self._takeoff_alt_m = 0.0
        self._next_arm_ns = 0
        self.setpoints_sent = 0
        """Setpoints sent so far."""
        self._send_times: deque[int] = deque(maxlen=64)
        self._mode_attempts = 0

    def send(self, setpoint: Setpoint) -> None:
        """Encode and send one setpoint (frame MAV_FRAME_LOCAL_NED, mask per kind, see module doc)."""
        s = self.session
        sysid, compid = s._target()
        now = s._clock()
        time_boot_ms = (now - s._start_ns) // 1_000_000
        s.send_frame(encode_setpoint(s.encoder, setpoint, self.autopilot, time_boot_ms, sysid, compid))
        self.setpoints_sent += 1
        self._send_times.append(now)

    def start_activation(self, now_ns: int, takeoff_alt_m: float = 0.0) -> None:
        """Begin taking control; keep sending setpoints every tick and call activation_step."""
        if self._latch.lost is not None:
            raise BridgeError(
                f"control was taken away at {self._latch.lost.stamp_ns} ns ({self._latch.lost.reason}); "
                "the bridge never takes it back by itself: call acknowledge_loss() first if a person decided so"
            )
        self._takeoff_alt_m = takeoff_alt_m
        self._error = None
        self._detail = ""
        self._phase = "start"
        self._handle = None
        self._next_arm_ns = now_ns
        self._mode_attempts = 0

    def _status(self) -> ActivationStatus:
        return ActivationStatus(self._phase, self._phase == "done", self._error, self._detail)

    def _fail(self, message: str) -> ActivationStatus:
        self._phase = "failed"
        self._error = message
        return self._status()

    def _command_result(self, now_ns: int) -> bool | None:
        """True accepted, False refused (detail recorded), None pending."""
        h = self._handle
        if h is None or not h.done:
            return None
        self._handle = None
        if h.error is None:
            self._detail = ""
            return True
        self._detail = str(h.error)
        return False

    def _arm_step(self, now_ns: int, next_phase: str) -> ActivationStatus | None:
        state = self.session.state
        if state.armed:
            self._phase = next_phase
            return None
        if self._handle is None and now_ns >= self._next_arm_ns:
            self._handle = self.session.arm()
        res = self._command_result(now_ns)
        if res is False:
            h_err = self._detail
            if "no COMMAND_ACK" in h_err:
                return self._fail(h_err)
            # Refused (EKF not ready, pre-arm checks): retry, keeping the reason visible.
            self._next_arm_ns = now_ns + int(ARM_RETRY_S * 1e9)
        return None


class Px4Offboard(_MavlinkAdapter):
    """PX4 OFFBOARD: pre-stream setpoints > 2 Hz for ≥ 1 s, switch to OFFBOARD, arm (if needed)."""

    autopilot = Autopilot.PX4
    external_mode = "OFFBOARD"
    prestream = True

    def _prestreamed(self, now_ns: int) -> bool:
        times = [t for t in self._send_times if t >= now_ns - int((PRESTREAM_S + PRESTREAM_MAX_GAP_S) * 1e9)]
        if not times or now_ns - times[-1] > PRESTREAM_MAX_GAP_S * 1e9:
            return False
        start = times[-1]
        for earlier in reversed(times[:-1]):
            if start - earlier > PRESTREAM_MAX_GAP_S * 1e9:
                break
            start = earlier
        return times[-1] - start >= PRESTREAM_S * 1e9

    def activation_step(self, now_ns: int) -> ActivationStatus:
        """Advance: prestream → OFFBOARD → arm → done (in control)."""
        if self._phase in ("idle", "done", "failed"):
            return self._status()
        state = self.session.state
        if self._phase == "start":
            self._phase = "prestream"
        if self._phase == "prestream":
            if not state.link_up:
                self._detail = "waiting for the autopilot's heartbeat"
            elif self._prestreamed(now_ns):
                self._phase = "mode"
                self._handle = self.session.set_mode("OFFBOARD")
        if self._phase == "mode":
            res = self._command_result(now_ns)
            if res is False:
                # TEMPORARILY_REJECTED means PX4 has not yet seen a long enough setpoint stream
                # (a hiccup on a loaded link): keep streaming and ask again, a bounded number of times.
                temporary = "TEMPORARILY_REJECTED" in self._detail
                self._mode_attempts += 1
                if not temporary or self._mode_attempts >= OFFBOARD_ATTEMPTS:
                    tries = f" after {self._mode_attempts} attempts" if self._mode_attempts > 1 else ""
                    return self._fail(f"PX4 refused OFFBOARD{tries}: {self._detail}")
                self._phase = "prestream"
                self._send_times.clear()
            elif res is True or state.mode == "OFFBOARD":
                self._phase = "arm"
        if self._phase == "arm":
            failed = self._arm_step(now_ns, "wait")
            if failed is not None:
                return failed
        if self._phase == "wait" and self.in_control(state):
            self._phase = "done"
            self._latch.had_control = True
        return self._status()


class ArduPilotGuided(_MavlinkAdapter):
    """ArduCopter GUIDED: switch to GUIDED, arm (retried while refused), take off, done once airborne."""

    autopilot = Autopilot.ARDUPILOT
    external_mode = "GUIDED"
    # A velocity target in GUIDED replaces the takeoff in progress: stay quiet until airborne.
    prestream = False

    def activation_step(self, now_ns: int) -> ActivationStatus:
        """Advance: GUIDED → arm → takeoff → done (in control, in the air)."""
        if self._phase in ("idle", "done", "failed"):
            return self._status()
        state = self.session.state
        if self._phase == "start":
            if not state.link_up:
                self._detail = "waiting for the autopilot's heartbeat"
                return self._status()
            self._phase = "mode"
            self._handle = self.session.set_mode("GUIDED")
        if self._phase == "mode":
            res = self._command_result(now_ns)
            if res is False:
                return self._fail(f"ArduPilot refused GUIDED: {self._detail}")
            if res is True:
                self._phase = "arm"
        if self._phase == "arm":
            failed = self._arm_step(now_ns, "takeoff" if self._takeoff_alt_m > 0 else "wait")
            if failed is not None:
                return failed
            if self._phase == "takeoff":
                # Copter disarms itself if it has not taken off within ~10 s of arming: go at once.
                self._handle = self.session.takeoff(self._takeoff_alt_m)
        if self._phase == "takeoff":
            res = self._command_result(now_ns)
            if res is False:
                return self._fail(f"ArduPilot refused takeoff: {self._detail}")
            if res is True:
                self._phase = "climb"
        if self._phase == "climb":
            pos = state.pos_ned_m
            high_enough = pos is not None and -pos.value[2] >= 0.9 * self._takeoff_alt_m
            if high_enough or (pos is None and state.landed_state == LandedState.IN_AIR):
                self._phase = "wait"
        if self._phase == "wait" and self.in_control(state):
            self._phase = "done"
            self._latch.had_control = True
        return self._status()


def activate(
    adapter: VehicleAdapter,
    poll: Callable[[int], object],
    hold: Setpoint,
    clock: Callable[[], int],
    *,
    takeoff_alt_m: float = 0.0,
    timeout_s: float = 60.0,
    rate_hz: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ActivationStatus:
    """Blocking start-up helper: poll and step activation at ``rate_hz`` until in control.

    ``hold`` is streamed every step when the adapter needs a setpoint stream to take control
    (``adapter.prestream``, PX4) and once in control in any case.

    Raises CommandError if activation fails or does not finish within ``timeout_s``.
    """
    start = clock()
    adapter.start_activation(start, takeoff_alt_m)
    while True:
        now = clock()
        poll(now)
        if adapter.prestream:
            adapter.send(hold)
        status = adapter.activation_step(now)
        if status.done:
            adapter.send(hold)
            return status
        if status.error is not None:
            raise CommandError(f"taking control failed: {status.error}", command=0, result=None)
        if now - start > timeout_s * 1e9:
            raise CommandError(
                f"taking control did not finish within {timeout_s:.0f} s (stuck in {status.phase!r}: {status.detail})",
                command=0,
                result=None,
            )
        sleep(1.0 / rate_hz)


__all__ = [
    "ActivationStatus",
    "ArduPilotGuided",
    "ControlLost",
    "Px4Offboard",
    "VehicleAdapter",
    "activate",
    "encode_setpoint",
    "setpoint_to_mavlink",
]
