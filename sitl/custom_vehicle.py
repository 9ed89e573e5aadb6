"""The custom-firmware flavour of the emulated flight controller: COBS+msgpack frames.

Speaks :mod:`firmware_bridge.custom_protocol` from the vehicle side with that module's own
encoder and decoder (the protocol has one implementation, shared by both ends). Behaviour is
the core's :data:`~sitl.autopilot.CUSTOM_RULES`: PX4-like failsafes and parameters, OFFBOARD
entered without a setpoint pre-stream. Sans-IO like the MAVLink flavour:
:meth:`CustomVehicle.receive` then :meth:`CustomVehicle.step`.
"""

from __future__ import annotations

import math

import numpy as np

from firmware_bridge import custom_protocol as cp
from firmware_bridge.errors import ProtocolError
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    PositionNedYaw,
    RatesThrust,
    VelocityNedYawRate,
)
from sitl.autopilot import CUSTOM_RULES, Autopilot, CommandReply, MavResult, Mode, SetpointKind, Target
from sitl.sim import Sim

FIRMWARE_NAME = "edge-agent-sitl"
"""What the vehicle's Hello says it runs."""

DEFAULT_STATE_RATE_HZ = 50.0
"""Rate of STATE frames (the protocol has no interval command; this is the firmware's choice)."""


class CustomVehicle:
    """An emulated custom-firmware vehicle on the vehicle side of a COBS+msgpack link."""

    def __init__(self, autopilot: Autopilot, *, state_rate_hz: float = DEFAULT_STATE_RATE_HZ) -> None:
        if autopilot.rules.name != CUSTOM_RULES.name:
            raise ValueError(
                f"the custom flavour needs an Autopilot built with CUSTOM_RULES, got {autopilot.rules.name} rules"
            )
        if not (math.isfinite(state_rate_hz) and 0.0 < state_rate_hz <= 1000.0):
            raise ValueError(f"state_rate_hz must be in (0, 1000], got {state_rate_hz}")
        self.ap = autopilot
        self.state_period_s = 1.0 / state_rate_hz
        self.encoder = cp.CustomEncoder()
        self.decoder = cp.CustomDecoder()
        self.companion_hello: cp.Hello | None = None
        self.protocol_errors: list[str] = []
        self.ignored_setpoints = 0
        self._out = bytearray()
        now = autopilot.sim.time_s
        self._next_hb_s = now
        self._next_state_s = now
        self._send(cp.Hello(cp.PROTOCOL_VERSION, "vehicle", FIRMWARE_NAME))

    def _send(self, msg: cp.Message) -> None:
        self._out += self.encoder.encode(msg)

    def receive(self, data: bytes, now_s: float) -> None:
        """Feed bytes from the companion received at ``now_s``; bad frames are counted by the decoder."""
        self.ap.advance(now_s)
        for msg in self.decoder.feed(data):
            if isinstance(msg, cp.Hello):
                try:
                    cp.check_hello(msg, "companion")
                except ProtocolError as exc:
                    self.protocol_errors.append(str(exc))
                    continue
                self.companion_hello = msg
                self._send(cp.Hello(cp.PROTOCOL_VERSION, "vehicle", FIRMWARE_NAME))
            elif isinstance(msg, cp.Command):
                self._command(msg)
            elif isinstance(msg, cp.SetpointMsg):
                self._setpoint(msg)

    def step(self, now_s: float) -> bytes:
        """Advance to ``now_s``; return the frames the vehicle sends."""
        ap = self.ap
        ap.advance(now_s)
        now = ap.sim.time_s
        for t in ap.take_texts():
            self._send(cp.StatusText(int(t.severity), t.text))
        if now >= self._next_hb_s - 1e-9:
            self._send(cp.Heartbeat(ap.armed, ap.mode.value, ap.ready))
            self._next_hb_s = _next(self._next_hb_s, 1.0, now)
        if now >= self._next_state_s - 1e-9:
            self._next_state_s = _next(self._next_state_s, self.state_period_s, now)
            meas = ap.sim.measure()
            if bool(meas.valid[0]):
                pos = meas.pos_ned_m[0] - ap.home_ned_m
                self._send(
                    cp.State(
                        time_us=max(0, int(ap.time_since_boot_s * 1e6)),
                        pos_ned_m=_t3(pos),
                        vel_ned_m_s=_t3(meas.vel_ned_m_s[0]),
                        q_wxyz=(*(float(v) for v in meas.q_wxyz[0]),),  # type: ignore[arg-type]
                        rates_frd_rad_s=_t3(meas.rates_frd_rad_s[0]),
                        battery_frac=float(meas.battery_frac[0]),
                        battery_v=float(meas.battery_v[0]),
                        landed_state=ap.landed_state,
                    )
                )
        out = bytes(self._out)
        self._out.clear()
        return out

    def _command(self, msg: cp.Command) -> None:
        ap = self.ap
        kind = msg.kind
        reply: CommandReply
        if kind is cp.CommandKind.ARM:
            reply = ap.arm()
        elif kind is cp.CommandKind.DISARM:
            reply = ap.disarm()
        elif kind is cp.CommandKind.SET_MODE:
            try:
                mode = Mode(msg.text.upper())
            except ValueError:
                known = ", ".join(m.value for m in Mode if m is not Mode.GUIDED)
                self._send(
                    cp.CommandAck(
                        msg.command_id,
                        kind,
                        cp.AckResult.DENIED,
                        f"unknown mode {msg.text!r}; known: {known}",
                    )
                )
                return
            reply = ap.set_mode(mode) if mode is not Mode.GUIDED else CommandReply(MavResult.DENIED)
        elif kind is cp.CommandKind.TAKEOFF:
            reply = ap.takeoff(float(msg.param))
        elif kind is cp.CommandKind.LAND:
            reply = ap.land()
        elif kind is cp.CommandKind.RETURN:
            reply = ap.return_to_launch()
        else:  # pragma: no cover - the decoder only yields known kinds
            reply = CommandReply(MavResult.UNSUPPORTED)
        text = reply.texts[0].text if reply.texts else ""
        self._send(cp.CommandAck(msg.command_id, kind, reply.result, text))
        for t in reply.texts:
            self._send(cp.StatusText(int(t.severity), t.text))

    def _setpoint(self, msg: cp.SetpointMsg) -> None:
        sp = msg.setpoint
        now = self.ap.sim.time_s
        home = self.ap.home_ned_m
        if isinstance(sp, VelocityNedYawRate):
            target = Target(
                SetpointKind.VELOCITY,
                (*sp.vel_ned_m_s, sp.yaw_rate_rad_s, 0.0),
                now,
                yaw_rate_rad_s=sp.yaw_rate_rad_s,
            )
        elif isinstance(sp, PositionNedYaw):
            p = np.asarray(sp.pos_ned_m, dtype=np.float64) + home
            target = Target(
                SetpointKind.POSITION,
                (float(p[0]), float(p[1]), float(p[2]), 0.0, 0.0),
                now,
                yaw_rad=sp.yaw_rad,
            )
        elif isinstance(sp, AccelerationNedYawRate):
            target = Target(
                SetpointKind.ACCELERATION,
                (*sp.acc_ned_m_s2, sp.yaw_rate_rad_s, 0.0),
                now,
                yaw_rate_rad_s=sp.yaw_rate_rad_s,
            )
        elif isinstance(sp, AttitudeThrust):
            target = Target(SetpointKind.ATTITUDE, (*sp.q_wxyz, sp.thrust_frac), now)
        elif isinstance(sp, RatesThrust):
            target = Target(SetpointKind.RATES, (*sp.rates_frd_rad_s, sp.thrust_frac, 0.0), now)
        else:  # pragma: no cover - the decoder only yields the five kinds
            self.ignored_setpoints += 1
            return
        finite = [
            v for i, v in enumerate(target.values) if not (target.kind is SetpointKind.POSITION and i >= 3)
        ]
        if not all(math.isfinite(v) for v in finite) or not self.ap.external_setpoint(target):
            self.ignored_setpoints += 1


def _next(due_s: float, interval_s: float, now_s: float) -> float:
    nxt = due_s + interval_s
    return nxt if nxt > now_s - 1e-9 else now_s + interval_s


def _t3(v: np.ndarray) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])


def make_custom_vehicle(
    sim: Sim,
    *,
    params: dict[str, float] | None = None,
    ready_delay_s: float | None = None,
    state_rate_hz: float = DEFAULT_STATE_RATE_HZ,
) -> CustomVehicle:
    """Build an :class:`Autopilot` with ``CUSTOM_RULES`` over ``sim`` and wrap it."""
    ap = Autopilot(sim, CUSTOM_RULES, params=params, ready_delay_s=ready_delay_s)
    return CustomVehicle(ap, state_rate_hz=state_rate_hz)
