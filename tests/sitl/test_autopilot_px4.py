"""The PX4 flavour, driven by a plain pymavlink client in lock-step (no bridge code)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from sitl.disturbance import Disturbances
from sitl.mavlink_vehicle import MavlinkVehicle, make_vehicle
from sitl.sim import Sim

DT_S = 0.01
M = mavlink
POSCTL = 3 << 16
OFFBOARD = 6 << 16
AUTO_TAKEOFF = (4 << 16) | (2 << 24)
AUTO_LOITER = (4 << 16) | (3 << 24)
AUTO_RTL = (4 << 16) | (5 << 24)
AUTO_LAND = (4 << 16) | (6 << 24)


class Client:
    """A pymavlink companion (sysid 255, compid 191) in lock-step with the vehicle."""

    def __init__(self, vehicle: MavlinkVehicle, *, mav: mavlink.MAVLink | None = None) -> None:
        self.v = vehicle
        self.mav = mav or mavlink.MAVLink(None, srcSystem=255, srcComponent=191)
        self.t = 0.0
        self.log: list[tuple[float, mavlink.MAVLink_message]] = []
        self.stream: tuple[float, float, float] | None = None
        """Velocity setpoint re-sent at 20 Hz while running, like a companion's offboard loop."""
        self._next_sp = 0.0

    def send(self, msg: mavlink.MAVLink_message) -> None:
        buf = msg.pack(self.mav)
        self.mav.seq = (self.mav.seq + 1) % 256
        self.v.receive(buf, self.t)

    def velocity(self, vn: float, ve: float = 0.0, vd: float = 0.0) -> None:
        self.send(
            self.mav.set_position_target_local_ned_encode(
                0, 1, 1, 1, 1991, 0, 0, 0, vn, ve, vd, 0, 0, 0, 0, 0
            )
        )

    def run(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            if self.stream is not None and self.t >= self._next_sp - 1e-9:
                self.velocity(*self.stream)
                self._next_sp = self.t + 0.05
            self.t += DT_S
            for m in self.mav.parse_buffer(self.v.step(self.t)) or []:
                self.log.append((self.t, m))

    def command(self, cmd: int, *params: float) -> mavlink.MAVLink_message:
        p = [*params] + [0.0] * (7 - len(params))
        start = len(self.log)
        self.send(self.mav.command_long_encode(1, 1, cmd, 0, *p))
        for _ in range(100):
            self.run(DT_S)
            acks = [m for _, m in self.log[start:] if m.get_type() == "COMMAND_ACK" and m.command == cmd]
            if acks:
                return acks[0]
        raise AssertionError(f"no COMMAND_ACK for command {cmd}")

    def of(self, kind: str, since_s: float = -1.0) -> list[tuple[float, mavlink.MAVLink_message]]:
        return [(t, m) for t, m in self.log if m.get_type() == kind and t > since_s]

    def heartbeat(self) -> mavlink.MAVLink_message:
        return self.of("HEARTBEAT")[-1][1]


def px4(seed: int = 0, **kw: object) -> MavlinkVehicle:
    sim = Sim(1, rng=np.random.default_rng(seed), disturbances=kw.pop("disturbances", None))  # type: ignore[arg-type]
    kw.setdefault("fast_boot", True)
    return make_vehicle(sim, "px4", **kw)  # type: ignore[arg-type]


def airborne(**kw: object) -> Client:
    """Armed, taken off to MIS_TAKEOFF_ALT (2.5 m) and loitering."""
    c = Client(px4(**kw))  # type: ignore[arg-type]
    c.run(1.1)
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    assert c.command(M.MAV_CMD_NAV_TAKEOFF, -1, 0, 0, math.nan, math.nan, math.nan, math.nan).result == 0
    for _ in range(16):  # the climb to 2.5 m takes ~3 s; TAKEOFF then switches to LOITER
        c.run(0.5)  # (it booted in LOITER too: real PX4 SIH does)
        if c.heartbeat().custom_mode == AUTO_LOITER and c.v.ap.landed_state == 2:
            break
    assert c.heartbeat().custom_mode == AUTO_LOITER
    return c


def enter_offboard(c: Client, vel: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    c.stream = vel
    c.run(1.2)
    ack = c.command(M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 6)
    assert ack.result == M.MAV_RESULT_ACCEPTED


def test_heartbeat_fields_and_default_streams() -> None:
    c = Client(px4())
    c.run(2.5)
    hbs = c.of("HEARTBEAT")
    assert [round(t) for t, _ in hbs] == [0, 1, 2]
    hb = hbs[-1][1]
    # real PX4 SIH boots in Hold (AUTO.LOITER), base_mode 29 (custom, auto, guided, stabilize)
    assert (hb.type, hb.autopilot, hb.custom_mode, hb.base_mode, hb.system_status, hb.mavlink_version) == (
        M.MAV_TYPE_QUADROTOR,
        M.MAV_AUTOPILOT_PX4,
        AUTO_LOITER,
        29,
        M.MAV_STATE_STANDBY,
        3,
    )
    assert hb.base_mode & M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
    assert not hb.base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED
    # PX4 streams its onboard-link profile without being asked (unlike ArduPilot)
    kinds = {m.get_type() for _, m in c.log}
    assert {
        "LOCAL_POSITION_NED",
        "ATTITUDE_QUATERNION",
        "ODOMETRY",
        "HIGHRES_IMU",
        "SYS_STATUS",
        "EXTENDED_SYS_STATE",
        "BATTERY_STATUS",
    } <= kinds
    odo = c.of("ODOMETRY")[-1][1]
    assert (odo.frame_id, odo.child_frame_id) == (M.MAV_FRAME_LOCAL_NED, M.MAV_FRAME_BODY_FRD)
    imu = c.of("HIGHRES_IMU")[-1][1]
    assert imu.zacc == pytest.approx(-9.81, abs=0.2)  # specific force on the ground, FRD


def test_arming_is_refused_until_the_estimate_is_ready_then_reported() -> None:
    c = Client(px4())
    c.run(0.3)
    ack = c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1)
    assert ack.result == M.MAV_RESULT_TEMPORARILY_REJECTED  # PX4 Commander: arming denied
    assert any("Arming denied" in m.text for _, m in c.of("STATUSTEXT"))
    c.run(1.0)
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    c.run(1.0)
    hb = c.heartbeat()
    assert hb.base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED and hb.system_status == M.MAV_STATE_ACTIVE
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 0).result == M.MAV_RESULT_ACCEPTED
    c.run(1.0)
    assert not c.heartbeat().base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED


def test_offboard_needs_one_setpoint_within_the_last_second_while_armed_as_measured_on_px4() -> None:
    # ../shared/firmware/README.md: armed and hovering, OFFBOARD is refused with no setpoint and
    # accepted once ONE setpoint arrived within the last ~1 s (0 and 0.5 s before: accepted,
    # 1.5 s before: refused); disarmed it is accepted with none and arming then waits
    c = airborne()
    ack = c.command(M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 6)
    assert ack.result == M.MAV_RESULT_TEMPORARILY_REJECTED
    assert c.of("STATUSTEXT")[-1][1].text == "Switching to Offboard is currently not available"
    c.velocity(0, 0, 0)
    c.run(1.5)
    assert c.command(M.MAV_CMD_DO_SET_MODE, 1, 6).result == M.MAV_RESULT_TEMPORARILY_REJECTED
    c.velocity(0, 0, 0)
    c.run(0.5)
    assert c.command(M.MAV_CMD_DO_SET_MODE, 1, 6).result == M.MAV_RESULT_ACCEPTED
    assert c.v.ap.mode.value == "OFFBOARD"
    # no further setpoint: COM_OF_LOSS_T after it the failsafe takes the vehicle out of OFFBOARD
    c.run(1.5)
    assert c.heartbeat().custom_mode == POSCTL
    assert any(m.text.startswith("Failsafe activated") for _, m in c.of("STATUSTEXT"))

    d = Client(px4())
    d.run(1.1)
    assert d.command(M.MAV_CMD_DO_SET_MODE, 1, 6).result == M.MAV_RESULT_ACCEPTED  # disarmed: no check
    assert d.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_TEMPORARILY_REJECTED
    d.velocity(0, 0, 0)
    assert d.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED


def test_takeoff_then_velocity_setpoints_move_the_vehicle_as_commanded() -> None:
    # in a steady 3 m/s crosswind: the velocity loop must reject it
    c = airborne(disturbances=Disturbances(wind_ned_m_s=(0.0, 3.0, 0.0)))
    lpn = c.of("LOCAL_POSITION_NED")[-1][1]
    assert -lpn.z == pytest.approx(2.5, abs=0.3)  # MIS_TAKEOFF_ALT
    assert c.of("EXTENDED_SYS_STATE")[-1][1].landed_state == M.MAV_LANDED_STATE_IN_AIR
    enter_offboard(c, (0.0, 0.0, 0.0))
    t0 = c.t
    start = c.of("LOCAL_POSITION_NED")[-1][1]
    c.stream = (1.0, -0.5, 0.0)
    c.run(5.0)
    end = c.of("LOCAL_POSITION_NED")[-1][1]
    assert end.vx == pytest.approx(1.0, abs=0.15) and end.vy == pytest.approx(-0.5, abs=0.15)
    assert end.x - start.x == pytest.approx(4.5, abs=0.8)  # 5 s at 1 m/s, less the ~0.5 s response
    assert end.y - start.y == pytest.approx(-2.25, abs=0.5)
    assert abs(end.z - start.z) < 0.3
    assert all(m.custom_mode == OFFBOARD for t, m in c.of("HEARTBEAT", since_s=t0 + 0.1))


@pytest.mark.parametrize(
    ("action", "mode"),
    [(0, POSCTL), (4, AUTO_LAND), (3, AUTO_RTL), (5, AUTO_LOITER)],
    ids=["position", "land", "return", "hold"],
)
def test_setpoint_loss_triggers_the_configured_failsafe_after_com_of_loss_t(action: int, mode: int) -> None:
    c = airborne(params={"COM_OBL_RC_ACT": action})
    enter_offboard(c, (1.0, 0.0, 0.0))
    c.run(1.0)
    c.stream = None
    t_last = c.v.ap.last_target_s
    c.run(0.9)
    assert c.v.ap.mode.value == "OFFBOARD"  # holds the last setpoint for COM_OF_LOSS_T = 1.0 s
    c.run(1.3)
    assert c.v.ap.mode_changed_s - t_last == pytest.approx(1.0, abs=0.03)
    assert c.heartbeat().custom_mode == mode
    assert any(m.text.startswith("Failsafe activated") for _, m in c.of("STATUSTEXT"))
    if mode == POSCTL:
        # Position mode without sticks: the vehicle brakes and holds
        c.run(3.0)
        assert np.linalg.norm(c.v.ap.sim.vel_ned_m_s[0]) < 0.2


def test_position_failsafe_without_rc_brakes_and_descends_to_a_landing_as_real_sih() -> None:
    """COM_RC_IN_MODE 1 (SIH's airframe: no RC): Position mode cannot run, so PX4 brakes over a
    few metres, descends at ~0.6 m/s, lands and disarms, its HEARTBEAT still naming Position."""
    c = airborne(params={"COM_OBL_RC_ACT": 0, "COM_RC_IN_MODE": 1})
    enter_offboard(c, (2.0, 0.0, 0.0))
    c.run(3.0)
    c.stream = None
    x0, z0 = float(c.v.ap.sim.pos_ned_m[0, 0]), float(c.v.ap.sim.pos_ned_m[0, 2])
    c.run(4.0)
    assert c.heartbeat().custom_mode == POSCTL
    travel = float(c.v.ap.sim.pos_ned_m[0, 0]) - x0
    assert 3.0 < travel < 4.8  # 1 s at 2 m/s, then ~2.3 m of braking (real SIH: 2.9-4.2 m in all)
    assert float(c.v.ap.sim.pos_ned_m[0, 2]) > z0 + 0.5  # descending
    c.run(10.0)
    assert not c.v.ap.armed and c.heartbeat().custom_mode == POSCTL


def test_a_cold_boot_reports_uninit_first_and_chunks_a_long_refusal_text() -> None:
    c = Client(px4(fast_boot=False))
    c.run(0.5)
    assert c.heartbeat().system_status == M.MAV_STATE_UNINIT
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_TEMPORARILY_REJECTED
    c.run(0.05)
    chunks = [m for _, m in c.of("STATUSTEXT")]
    assert len(chunks) == 2 and chunks[0].id == chunks[1].id != 0
    assert [m.chunk_seq for m in chunks] == [0, 1]
    # real PX4 SIH's text this early (51 characters: two chunks)
    assert chunks[0].text + chunks[1].text == "Arming denied: Resolve system health failures first"
    c.run(2.0)
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_TEMPORARILY_REJECTED
    c.run(0.05)
    texts = [m for _, m in c.of("STATUSTEXT")][2:]
    assert "".join(m.text for m in texts) == "Arming denied: Preflight Fail: No valid position estimate"
    assert c.heartbeat().system_status == M.MAV_STATE_STANDBY
    c.run(2.6)  # ready ~5 s after boot, as real PX4 SIH after its first HEARTBEAT
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED


def test_message_interval_request_changes_the_measured_rate() -> None:
    c = Client(px4())
    c.run(2.0)
    t0 = c.t
    c.run(4.0)
    assert len(c.of("LOCAL_POSITION_NED", since_s=t0)) == pytest.approx(120, abs=1)  # 30 Hz default
    assert c.command(M.MAV_CMD_SET_MESSAGE_INTERVAL, 32, 100_000).result == M.MAV_RESULT_ACCEPTED
    t1 = c.t
    c.run(4.0)
    assert len(c.of("LOCAL_POSITION_NED", since_s=t1)) == pytest.approx(40, abs=1)
    assert c.command(M.MAV_CMD_SET_MESSAGE_INTERVAL, 32, 0).result == M.MAV_RESULT_ACCEPTED  # back to default
    t2 = c.t
    c.run(2.0)
    assert len(c.of("LOCAL_POSITION_NED", since_s=t2)) == pytest.approx(60, abs=1)
    assert c.command(M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_AUTOPILOT_VERSION).result == 0
    c.run(0.05)
    ver = c.of("AUTOPILOT_VERSION")[-1][1]
    assert ver.capabilities & M.MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE


def test_parameters_read_and_set_with_px4_bytewise_integers() -> None:
    c = Client(px4())
    c.run(0.1)
    c.send(c.mav.param_request_read_encode(1, 1, b"COM_OF_LOSS_T", -1))
    c.send(c.mav.param_request_read_encode(1, 1, b"COM_OBL_RC_ACT", -1))
    c.run(0.02)
    values = {m.param_id: m for _, m in c.of("PARAM_VALUE")}
    assert values["COM_OF_LOSS_T"].param_value == pytest.approx(1.0)
    assert values["COM_OF_LOSS_T"].param_type == M.MAV_PARAM_TYPE_REAL32
    rc_act = values["COM_OBL_RC_ACT"]
    assert rc_act.param_type == M.MAV_PARAM_TYPE_INT32
    assert struct.unpack("<i", struct.pack("<f", rc_act.param_value))[0] == 0
    wire = struct.unpack("<f", struct.pack("<i", 4))[0]
    c.send(c.mav.param_set_encode(1, 1, b"COM_OBL_RC_ACT", wire, M.MAV_PARAM_TYPE_INT32))
    c.run(0.02)
    assert c.v.ap.param("COM_OBL_RC_ACT") == 4.0


def test_geofence_and_battery_failsafes_are_the_last_line() -> None:
    c = airborne(params={"GF_MAX_HOR_DIST": 5.0})  # GF_ACTION default 2 = Hold
    enter_offboard(c, (3.0, 0.0, 0.0))
    c.run(4.0)
    assert c.heartbeat().custom_mode == AUTO_LOITER
    assert any(m.text == "Geofence: exceeding maximum distance to Home" for _, m in c.of("STATUSTEXT"))
    c.run(3.0)
    north = float(c.v.ap.sim.pos_ned_m[0, 0])
    assert 4.0 < north < 8.0  # stopped just past the fence and holds inside-ish, not flying on
    # Battery: critical level → COM_LOW_BAT_ACT 3 → Return
    # raise the thresholds just above the charge left (the emulated pack drains slowly)
    left = float(c.v.ap.sim.battery_frac[0])
    c.send(c.mav.param_set_encode(1, 1, b"BAT_LOW_THR", left + 0.002, M.MAV_PARAM_TYPE_REAL32))
    c.send(c.mav.param_set_encode(1, 1, b"BAT_CRIT_THR", left + 0.001, M.MAV_PARAM_TYPE_REAL32))
    c.run(1.1)  # PX4 reports the new mode with the next 1 Hz HEARTBEAT
    assert c.heartbeat().custom_mode == AUTO_RTL
    texts = [m.text for _, m in c.of("STATUSTEXT")]
    assert (
        "Low battery level, return advised" in texts and "Critical battery level, executing failsafe" in texts
    )


def test_garbage_never_crashes_it() -> None:
    rng = np.random.default_rng(7)
    c = Client(px4())
    c.run(1.1)
    good = c.mav.command_long_encode(1, 1, M.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0).pack(c.mav)
    absurd = [
        c.mav.command_long_encode(1, 1, M.MAV_CMD_SET_MESSAGE_INTERVAL, 0, math.nan, math.inf, 0, 0, 0, 0, 0),
        c.mav.command_long_encode(1, 1, M.MAV_CMD_DO_SET_MODE, 0, 1, 1e30, -5, 0, 0, 0, 0),
        c.mav.command_long_encode(1, 1, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, 0, -1e38),
        c.mav.set_position_target_local_ned_encode(0, 1, 1, 1, 0, math.nan, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        c.mav.set_position_target_local_ned_encode(0, 1, 1, 99, 1991, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0),
        c.mav.set_attitude_target_encode(0, 1, 1, 0, [0, 0, 0, 0], 0, 0, 0, 2.0),
        c.mav.param_set_encode(1, 1, b"COM_OF_LOSS_T", math.nan, M.MAV_PARAM_TYPE_REAL32),
        c.mav.param_request_read_encode(1, 1, b"", 30000),
    ]
    for msg in absurd:
        c.send(msg)
    for _ in range(300):
        kind = rng.integers(4)
        if kind == 0:
            blob = rng.integers(0, 256, rng.integers(1, 300), dtype=np.uint8).tobytes()
        elif kind == 1:  # a valid frame with one flipped byte
            frame = bytearray(good)
            frame[rng.integers(len(frame))] ^= 1 << int(rng.integers(8))
            blob = bytes(frame)
        elif kind == 2:  # truncated frames and stray start markers
            blob = good[: rng.integers(1, len(good))] + b"\xfd" * int(rng.integers(1, 5))
        else:  # a MAVLink v2 header claiming an unknown incompat flag
            blob = b"\xfd\x09\x80\x00\x00\xff\xbe\x00\x00\x00" + bytes(11)
        c.v.receive(blob, c.t)
        c.run(DT_S)
    assert c.v.counters.bad_frames > 0
    assert c.v.ap.param("COM_OF_LOSS_T") == 1.0
    # Like the C parser, pymavlink waits for the whole length a bogus header claimed (up to 280
    # bytes) before it resynchronises; a companion's 20 Hz setpoint stream fills that in < 0.5 s.
    c.stream = (0.0, 0.0, 0.0)
    c.run(0.5)
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    hbs = [t for t, _ in c.of("HEARTBEAT")]
    assert np.all(np.diff(hbs) < 1.05)  # heartbeats never stopped


def test_reboot_restarts_sequence_clock_and_mode() -> None:
    c = Client(px4())
    c.run(1.1)
    enter_offboard(c)
    assert c.command(M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1).result == M.MAV_RESULT_ACCEPTED
    c.stream = None
    c.run(0.05)
    t_boot = c.t
    c.run(1.5)
    hbs = c.of("HEARTBEAT", since_s=t_boot - 0.05)
    assert hbs[0][1].get_seq() == 0
    assert hbs[-1][1].custom_mode == AUTO_LOITER
    lpn = c.of("LOCAL_POSITION_NED")[-1][1]
    assert lpn.time_boot_ms < 1600


def test_signing_rejects_unsigned_commands_when_a_key_is_set() -> None:
    key = bytes(range(32))
    c = Client(px4(signing_key=key, signing_epoch_s=1.7e9))
    c.run(1.1)
    # an unsigned client first: its ARM is dropped, no ACK
    c.send(c.mav.command_long_encode(1, 1, M.MAV_CMD_COMPONENT_ARM_DISARM, 0, 1, 0, 0, 0, 0, 0, 0))
    c.run(0.2)
    assert c.of("COMMAND_ACK") == [] and not c.v.ap.armed
    signed = mavlink.MAVLink(None, srcSystem=255, srcComponent=191)
    signed.signing.secret_key = key
    signed.signing.sign_outgoing = True
    signed.signing.link_id = 1
    signed.signing.timestamp = int((1.7e9 - 1420070400) * 1e5)
    c2 = Client(c.v, mav=signed)
    c2.t = c.t
    assert c2.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    c2.run(1.0)
    assert c2.of("HEARTBEAT")
    assert all(m._signed for _, m in c2.log)
