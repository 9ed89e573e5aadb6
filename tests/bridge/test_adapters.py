"""Vehicle adapters: masks and frames per setpoint, activation, loss of control, custom firmware."""

from __future__ import annotations

import math
import random
import re
import time
from typing import Any

import pytest
from bridge_fakes import FakeAutopilot, FakeClock
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge import custom_protocol as cp
from firmware_bridge.adapters import (
    ArduPilotGuided,
    Px4Offboard,
    activate,
    setpoint_to_mavlink,
)
from firmware_bridge.custom_adapter import CustomFirmware
from firmware_bridge.errors import BridgeError, CommandError
from firmware_bridge.links import Link
from firmware_bridge.session import MavlinkSession
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    Autopilot,
    LandedState,
    PositionNedYaw,
    RatesThrust,
    VelocityNedYawRate,
)


@pytest.mark.parametrize(
    ("setpoint", "autopilot", "mask"),
    [
        (VelocityNedYawRate((1.0, 2.0, -0.5), 0.3), Autopilot.PX4, 1991),
        (VelocityNedYawRate((1.0, 2.0, -0.5), 0.0), Autopilot.PX4, 1991),
        (VelocityNedYawRate((1.0, 2.0, -0.5), 0.0), Autopilot.ARDUPILOT, 3527),
        (VelocityNedYawRate((1.0, 2.0, -0.5), 0.3), Autopilot.ARDUPILOT, 1991),
        (PositionNedYaw((1.0, 2.0, -3.0), 0.5), Autopilot.PX4, 2552),
        (PositionNedYaw((1.0, 2.0, -3.0)), Autopilot.PX4, 3576),
        (AccelerationNedYawRate((0.1, 0.2, 0.3), 0.1), Autopilot.PX4, 1087),
    ],
)
def test_position_target_masks_and_frame(setpoint: Any, autopilot: Autopilot, mask: int) -> None:
    m = setpoint_to_mavlink(setpoint, autopilot, 1234, 1, 1)
    assert m.get_type() == "SET_POSITION_TARGET_LOCAL_NED"
    assert (m.coordinate_frame, m.type_mask, m.time_boot_ms) == (1, mask, 1234)
    used = {  # the fields the mask does not ignore must carry the setpoint
        1991: (m.vx, m.vy, m.vz, m.yaw_rate),
        3527: (m.vx, m.vy, m.vz),
        2552: (m.x, m.y, m.z, m.yaw),
        3576: (m.x, m.y, m.z),
        1087: (m.afx, m.afy, m.afz, m.yaw_rate),
    }[mask]
    values = [
        v
        for v in (getattr(setpoint, f) for f in setpoint.__slots__)
        for v in (v if isinstance(v, tuple) else (v,))
    ]
    assert used == pytest.approx(tuple(values[: len(used)]))


def test_attitude_and_rates_use_set_attitude_target() -> None:
    q = (math.cos(0.25), 0.0, 0.0, math.sin(0.25))
    a = setpoint_to_mavlink(AttitudeThrust(q, 0.6), Autopilot.PX4, 1, 1, 1)
    assert (a.get_type(), a.type_mask, a.thrust) == ("SET_ATTITUDE_TARGET", 7, pytest.approx(0.6))
    assert a.q == pytest.approx(list(q))
    r = setpoint_to_mavlink(RatesThrust((0.1, 0.2, 0.3), 0.5), Autopilot.PX4, 1, 1, 1)
    assert (r.type_mask, r.body_roll_rate, r.body_yaw_rate) == (128, pytest.approx(0.1), pytest.approx(0.3))


def test_non_finite_and_out_of_range_setpoints_are_refused() -> None:
    with pytest.raises(BridgeError, match=re.escape("refusing to send a non-finite setpoint")):
        setpoint_to_mavlink(VelocityNedYawRate((math.nan, 0.0, 0.0)), Autopilot.PX4, 0, 1, 1)
    with pytest.raises(BridgeError, match=re.escape("thrust_frac must be in [0, 1], got 1.5")):
        setpoint_to_mavlink(RatesThrust((0.0, 0.0, 0.0), 1.5), Autopilot.PX4, 0, 1, 1)


class _Capture(Link):
    def __init__(self) -> None:
        super().__init__("capture://")
        self.frames: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def _read_raw(self, max_bytes: int) -> bytes:
        return b""

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        self.frames.append(bytes(data))
        return len(data)

    def _close_raw(self) -> None:
        pass


@pytest.mark.parametrize("autopilot", [Autopilot.PX4, Autopilot.ARDUPILOT])
def test_velocity_setpoints_are_byte_equal_to_the_pymavlink_message(autopilot: Autopilot) -> None:
    """The adapter packs velocity setpoints without a message object; the frames must not change."""
    rng = random.Random(7)
    cases = [
        (0.0, 0.0, 0.0, 0.0),
        (-0.0, 1e-40, -3.5, -0.0),
        (12.5, -7.25, 2.0, 0.7),
        (3e38, -3e38, 1.0, 1e-7),
    ]
    cases += [tuple(rng.uniform(-20, 20) for _ in range(4)) for _ in range(50)]  # type: ignore[misc]
    adapter_cls = ArduPilotGuided if autopilot == Autopilot.ARDUPILOT else Px4Offboard
    for vn, ve, vd, rate in cases:
        sp = VelocityNedYawRate((vn, ve, vd), rate)
        fast, slow = _Capture(), _Capture()
        clock = FakeClock()
        s_fast, s_slow = MavlinkSession(fast, clock), MavlinkSession(slow, clock)
        clock.advance(1.234567)
        adapter_cls(s_fast).send(sp)
        s_slow.send(setpoint_to_mavlink(sp, autopilot, (clock() - s_slow._start_ns) // 1_000_000, 1, 1))
        assert fast.frames == slow.frames, sp
    with pytest.raises(BridgeError, match=re.escape("refusing to send a non-finite setpoint")):
        adapter_cls(MavlinkSession(_Capture(), FakeClock())).send(VelocityNedYawRate((0.0, math.inf, 0.0)))


# -- activation against a scripted autopilot ----------------------------------------------------


class ModeArmVehicle:
    """Applies accepted DO_SET_MODE / ARM / TAKEOFF to the fake autopilot's heartbeat fields."""

    def __init__(self, ap: FakeAutopilot, px4: bool) -> None:
        self.ap, self.px4 = ap, px4
        ap.on_command = self

    def __call__(self, m: Any) -> None:
        if m.command == 176:
            self.ap.custom_mode = (int(m.param2) << 16 | int(m.param3) << 24) if self.px4 else int(m.param2)
        elif m.command == 400:
            self.ap.armed = m.param1 == 1.0
        self.ap.heartbeat()  # report the change at once (real autopilots take up to 1 s)


def run_activation(
    session: MavlinkSession, ap: FakeAutopilot, clock: FakeClock, adapter: Any, alt: float = 0.0
) -> Any:
    def poll(now: int) -> None:
        if now // 1_000_000_000 != getattr(poll, "last", -1):
            poll.last = now // 1_000_000_000  # type: ignore[attr-defined]
            ap.heartbeat()
        time.sleep(0.0002)
        ap.service()
        session.poll(now)

    return activate(
        adapter,
        poll,
        VelocityNedYawRate((0.0, 0.0, 0.0)),
        clock,
        takeoff_alt_m=alt,
        timeout_s=20,
        sleep=clock.advance,
    )


@pytest.fixture
def px4_rig(pty_pair, clock):
    master, slave = pty_pair
    ap = FakeAutopilot(slave, clock=clock)
    ModeArmVehicle(ap, px4=True)
    return MavlinkSession(master, clock), ap, clock


def test_px4_prestreams_then_offboard_then_arms(px4_rig) -> None:
    session, ap, clock = px4_rig
    adapter = Px4Offboard(session)
    start = clock()
    status = run_activation(session, ap, clock, adapter)
    assert status.done and adapter.in_control(session.state)
    # OFFBOARD requested only after ≥ 1 s of setpoints at > 2 Hz
    set_mode = next(m for m in ap.received if m.get_type() == "COMMAND_LONG" and m.command == 176)
    before = [
        m
        for m in ap.received[: ap.received.index(set_mode)]
        if m.get_type() == "SET_POSITION_TARGET_LOCAL_NED"
    ]
    assert len(before) >= 20 and (set_mode.param1, set_mode.param2) == (1.0, 6.0)
    assert all(m.type_mask == 1991 and m.coordinate_frame == 1 for m in before)
    assert (clock() - start) / 1e9 < 3.0


def test_leaving_offboard_is_reported_once_and_never_undone(px4_rig) -> None:
    session, ap, clock = px4_rig
    adapter = Px4Offboard(session)
    run_activation(session, ap, clock, adapter)
    assert adapter.check_control(session.state, clock()) is None
    n_cmds = len(ap.of_type("COMMAND_LONG"))
    ap.custom_mode = (4 << 16) | (3 << 24)  # the pilot switches to HOLD
    ap.heartbeat()
    events = []
    for _ in range(50):
        time.sleep(0.0002)
        session.poll(clock())
        adapter.send(VelocityNedYawRate((1.0, 0.0, 0.0)))
        events.append(adapter.check_control(session.state, clock()))
        clock.advance(0.02)
    lost = [e for e in events if e is not None]
    assert len(lost) == 1 and lost[0].mode == "HOLD"
    assert lost[0].reason == "mode changed to HOLD by the autopilot or the pilot"
    ap.service()
    assert len(ap.of_type("COMMAND_LONG")) == n_cmds  # no attempt to switch back
    with pytest.raises(
        BridgeError,
        match=re.escape("the bridge never takes it back by itself: call acknowledge_loss() first"),
    ):
        adapter.start_activation(clock())


def test_ardupilot_guided_retries_a_refused_arm_then_takes_off(pty_pair, clock) -> None:
    master, slave = pty_pair
    ap = FakeAutopilot(slave, autopilot=mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA, clock=clock)
    vehicle = ModeArmVehicle(ap, px4=False)
    ap.ack_script[400] = [4, 4]  # EKF not ready twice
    ap.texts_before_ack[400] = "Arm: Need Position Estimate"
    ap.ack_script[22] = [0]

    def takeoff_then_climb(m: Any) -> None:
        vehicle(m)
        if m.command == 22:
            ap.send(mavlink.MAVLink_local_position_ned_message(1000, 0, 0, -m.param7, 0, 0, 0))

    ap.on_command = takeoff_then_climb
    session = MavlinkSession(master, clock)
    adapter = ArduPilotGuided(session)
    status = run_activation(session, ap, clock, adapter, alt=5.0)
    assert status.done and session.state.mode == "GUIDED" and session.state.armed
    arms = [m for m in ap.of_type("COMMAND_LONG") if m.command == 400]
    assert len(arms) == 3
    (mode,) = [m for m in ap.of_type("COMMAND_LONG") if m.command == 176]
    assert (mode.param1, mode.param2) == (1.0, 4.0)
    (takeoff,) = [m for m in ap.of_type("COMMAND_LONG") if m.command == 22]
    assert takeoff.param7 == 5.0
    assert ap.received.index(takeoff) > ap.received.index(arms[-1])


def test_activation_gives_up_with_the_reason(px4_rig) -> None:
    session, ap, clock = px4_rig
    ap.ack_script[176] = [2]
    with pytest.raises(
        CommandError,
        match=re.escape(
            "taking control failed: PX4 refused OFFBOARD: set mode OFFBOARD refused by the autopilot: MAV_RESULT 2 (DENIED)"
        ),
    ):
        run_activation(session, ap, clock, Px4Offboard(session))


def test_a_temporary_offboard_rejection_is_retried_after_more_prestreaming(px4_rig) -> None:
    session, ap, clock = px4_rig
    ap.ack_script[176] = [1, 1]  # TEMPORARILY_REJECTED twice, then the default (accepted)
    status = run_activation(session, ap, clock, Px4Offboard(session))
    assert status.done


def test_offboard_gives_up_after_repeated_temporary_rejections(px4_rig) -> None:
    session, ap, clock = px4_rig
    ap.ack_script[176] = [1] * 10
    with pytest.raises(CommandError, match=re.escape("PX4 refused OFFBOARD after 5 attempts")):
        run_activation(session, ap, clock, Px4Offboard(session))


# -- custom firmware ------------------------------------------------------------------------------


class FakeFirmware:
    """The vehicle side of the custom protocol, using the public vehicle-side codec."""

    def __init__(self, link: Link, ack: cp.AckResult = cp.AckResult.ACCEPTED) -> None:
        self.link, self.enc, self.dec = link, cp.CustomEncoder(), cp.CustomDecoder()
        self.armed, self.mode, self.ack = False, "HOLD", ack
        self.got: list[cp.Message] = []

    def step(self, hb: bool) -> None:
        for m in self.dec.feed(self.link.read()):
            self.got.append(m)
            if isinstance(m, cp.Hello):
                self.link.write(self.enc.encode(cp.Hello(cp.PROTOCOL_VERSION, "vehicle", "fake-fw")))
            elif isinstance(m, cp.Command):
                if self.ack is cp.AckResult.ACCEPTED:
                    if m.kind is cp.CommandKind.SET_MODE:
                        self.mode = m.text
                    elif m.kind is cp.CommandKind.ARM:
                        self.armed = True
                self.link.write(self.enc.encode(cp.CommandAck(m.command_id, m.kind, self.ack, "no")))
                hb = True
        if hb:
            self.link.write(self.enc.encode(cp.Heartbeat(self.armed, self.mode)))
            self.link.write(
                self.enc.encode(
                    cp.State(1, (0, 0, -1), (0, 0, 0), (1, 0, 0, 0), (0, 0, 0), 0.9, 16.0, LandedState.IN_AIR)
                )
            )


def test_custom_firmware_handshake_activation_and_setpoints(pty_pair, clock) -> None:
    master, slave = pty_pair
    fw = FakeFirmware(slave)
    adapter = CustomFirmware(master, clock)
    adapter.set_healthy(True)
    ticks = [0]

    def poll(now: int) -> None:
        ticks[0] += 1
        time.sleep(0.0002)
        fw.step(hb=ticks[0] % 20 == 0)
        adapter.poll(now)

    status = activate(
        adapter, poll, VelocityNedYawRate((0.5, 0.0, 0.0)), clock, timeout_s=10, sleep=clock.advance
    )
    assert status.done and adapter.in_control(adapter.state)
    assert adapter.peer_hello == cp.Hello(1, "vehicle", "fake-fw")
    assert adapter.state.pos_ned_m is not None and adapter.state.pos_ned_m.value == (0, 0, -1)
    fw.step(hb=False)
    kinds = [type(m).__name__ for m in fw.got]
    assert kinds[0] == "Hello" and "Heartbeat" in kinds
    assert cp.SetpointMsg(VelocityNedYawRate((0.5, 0.0, 0.0))) in fw.got
    assert [m.kind for m in fw.got if isinstance(m, cp.Command)] == [
        cp.CommandKind.SET_MODE,
        cp.CommandKind.ARM,
    ]


def test_custom_firmware_refusal_is_a_clear_error(pty_pair, clock) -> None:
    master, slave = pty_pair
    fw = FakeFirmware(slave, ack=cp.AckResult.DENIED)
    adapter = CustomFirmware(master, clock)

    def poll(now: int) -> None:
        time.sleep(0.0002)
        fw.step(hb=True)
        adapter.poll(now)

    with pytest.raises(
        CommandError,
        match=re.escape("taking control failed: set_mode refused by the firmware: DENIED; firmware said: no"),
    ):
        activate(adapter, poll, VelocityNedYawRate((0.0, 0.0, 0.0)), clock, timeout_s=10, sleep=clock.advance)
