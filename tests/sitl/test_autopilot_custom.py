"""The custom-firmware flavour (COBS+msgpack), driven by the protocol's own codec as the companion."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import custom_protocol as cp
from firmware_bridge.types import LandedState, PositionNedYaw, VelocityNedYawRate
from sitl.autopilot import CUSTOM_RULES, PX4_RULES, Autopilot
from sitl.custom_vehicle import FIRMWARE_NAME, CustomVehicle, make_custom_vehicle
from sitl.sim import Sim

DT_S = 0.01


class Client:
    """A companion speaking the custom protocol in lock-step with the vehicle."""

    def __init__(self, vehicle: CustomVehicle) -> None:
        self.v = vehicle
        self.enc = cp.CustomEncoder()
        self.dec = cp.CustomDecoder()
        self.t = 0.0
        self.log: list[tuple[float, cp.Message]] = []
        self.stream: VelocityNedYawRate | None = None
        self._next_id = 1

    def send(self, msg: cp.Message) -> None:
        self.v.receive(self.enc.encode(msg), self.t)

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            if self.stream is not None and round(self.t / DT_S) % 5 == 0:
                self.send(cp.SetpointMsg(self.stream))
            self.t += DT_S
            for m in self.dec.feed(self.v.step(self.t)):
                self.log.append((self.t, m))

    def command(self, kind: cp.CommandKind, param: float = 0.0, text: str = "") -> cp.CommandAck:
        cid = self._next_id
        self._next_id += 1
        self.send(cp.Command(cid, kind, param, text))
        self.run(DT_S)
        acks = [m for _, m in self.log if isinstance(m, cp.CommandAck) and m.command_id == cid]
        assert len(acks) == 1
        return acks[0]

    def of(self, kind: type, since_s: float = -1.0) -> list:
        return [m for t, m in self.log if isinstance(m, kind) and t > since_s]


def vehicle(**kw: object) -> CustomVehicle:
    return make_custom_vehicle(Sim(1, rng=np.random.default_rng(5)), **kw)  # type: ignore[arg-type]


def test_hello_heartbeat_and_state_rate() -> None:
    c = Client(vehicle())
    c.send(cp.Hello(cp.PROTOCOL_VERSION, "companion", "test"))
    c.run(2.05)
    hellos = c.of(cp.Hello)
    assert hellos and all(h == cp.Hello(cp.PROTOCOL_VERSION, "vehicle", FIRMWARE_NAME) for h in hellos)
    hbs = c.of(cp.Heartbeat)
    assert len(hbs) == 3 and hbs[-1].mode == "POSCTL" and not hbs[-1].armed and hbs[-1].healthy
    states = [m for t, m in c.log if isinstance(m, cp.State) and 1.0 + 1e-6 < t <= 2.0 + 1e-6]
    assert len(states) == 50  # 50 Hz
    assert states[-1].landed_state == LandedState.ON_GROUND
    assert c.dec.counters().crc_errors == 0


def test_offboard_without_prestream_arm_takeoff_and_fly() -> None:
    c = Client(vehicle(ready_delay_s=0.0))
    c.run(0.1)
    assert c.command(cp.CommandKind.SET_MODE, text="OFFBOARD").result == cp.AckResult.ACCEPTED
    assert c.command(cp.CommandKind.ARM).result == cp.AckResult.ACCEPTED
    c.stream = VelocityNedYawRate((0.0, 0.0, -1.5))
    c.run(3.0)
    c.stream = VelocityNedYawRate((1.0, 0.0, 0.0))
    start = c.of(cp.State)[-1]
    c.run(4.0)
    end = c.of(cp.State)[-1]
    assert end.vel_ned_m_s[0] == pytest.approx(1.0, abs=0.15)
    assert end.pos_ned_m[0] - start.pos_ned_m[0] == pytest.approx(3.5, abs=0.7)
    assert end.landed_state == LandedState.IN_AIR
    assert c.of(cp.Heartbeat)[-1].mode == "OFFBOARD"


def test_setpoint_loss_failsafe_and_unknown_mode() -> None:
    c = Client(vehicle(ready_delay_s=0.0, params={"COM_OBL_RC_ACT": 4}))
    c.run(0.1)
    ack = c.command(cp.CommandKind.SET_MODE, text="ACRO")
    assert ack.result == cp.AckResult.DENIED and "unknown mode 'ACRO'" in ack.text
    c.command(cp.CommandKind.SET_MODE, text="OFFBOARD")
    c.command(cp.CommandKind.ARM)
    c.stream = VelocityNedYawRate((0.0, 0.0, -1.5))
    c.run(2.0)
    c.stream = None
    c.run(1.5)
    assert c.v.ap.mode.value == "LAND"
    assert any(t.text.startswith("Failsafe activated") for t in c.of(cp.StatusText))


def test_position_setpoint_and_takeoff_and_refusals() -> None:
    c = Client(vehicle(ready_delay_s=0.0))
    c.run(0.1)
    ack = c.command(cp.CommandKind.RETURN)
    assert ack.result == cp.AckResult.TEMPORARILY_REJECTED  # nothing to return from while disarmed
    c.command(cp.CommandKind.ARM)
    assert c.command(cp.CommandKind.TAKEOFF, 3.0).result == cp.AckResult.ACCEPTED
    c.run(6.0)
    assert c.of(cp.Heartbeat)[-1].mode == "HOLD"
    assert -c.of(cp.State)[-1].pos_ned_m[2] == pytest.approx(3.0, abs=0.3)
    c.command(cp.CommandKind.SET_MODE, text="OFFBOARD")
    for _ in range(80):
        c.send(cp.SetpointMsg(PositionNedYaw((2.0, 1.0, -3.0))))
        c.run(0.05)
    pos = c.of(cp.State)[-1].pos_ned_m
    assert pos == pytest.approx((2.0, 1.0, -3.0), abs=0.3)


def test_garbage_and_wrong_hello_never_crash_it() -> None:
    rng = np.random.default_rng(11)
    c = Client(vehicle(ready_delay_s=0.0))
    c.send(cp.Hello(99, "companion", "future"))
    for _ in range(200):
        c.v.receive(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes(), c.t)
        c.run(DT_S)
    c.v.receive(b"\x00", c.t)  # a delimiter resynchronises
    assert "version 99" in c.v.protocol_errors[0]
    assert c.v.decoder.crc_errors > 0
    assert c.command(cp.CommandKind.ARM).result == cp.AckResult.ACCEPTED


def test_custom_vehicle_needs_custom_rules() -> None:
    ap = Autopilot(Sim(1, rng=np.random.default_rng(0)), PX4_RULES)
    with pytest.raises(ValueError, match="needs an Autopilot built with CUSTOM_RULES, got px4 rules"):
        CustomVehicle(ap)
    ap2 = Autopilot(Sim(1, rng=np.random.default_rng(0)), CUSTOM_RULES)
    with pytest.raises(ValueError, match=r"state_rate_hz must be in \(0, 1000\], got 0"):
        CustomVehicle(ap2, state_rate_hz=0)
