"""Stream sets, data-stream requests, missions, home, parameters and FTP of the MAVLink flavours,
driven by a plain pymavlink client in lock-step (no bridge code, no sockets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink
from test_autopilot_px4 import Client

from sitl.mavlink_vehicle import Home, MavlinkVehicle, make_vehicle
from sitl.sim import Sim

M = mavlink


def vehicle(flavor: str, **kw: object) -> MavlinkVehicle:
    kw.setdefault("fast_boot", True)
    return make_vehicle(Sim(1, rng=np.random.default_rng(0)), flavor, **kw)  # type: ignore[arg-type]


def rate_hz(c: Client, kind: str, since_s: float) -> float:
    return len(c.of(kind, since_s=since_s)) / (c.t - since_s)


def test_px4_sends_its_measured_onboard_stream_set_unasked() -> None:
    c = Client(vehicle("px4"))
    c.run(1.0)
    t0 = c.t
    c.run(4.0)
    # ../shared/firmware/README.md and tests/conformance: real PX4 SIH's onboard link
    for kind, hz in [
        ("ATTITUDE", 100),
        ("ATTITUDE_QUATERNION", 50),
        ("GLOBAL_POSITION_INT", 40),  # PX4 asks 50 Hz; SIH delivered 30-36
        ("HIGHRES_IMU", 50),
        ("LOCAL_POSITION_NED", 30),
        ("ODOMETRY", 30),
        ("VFR_HUD", 10),
        ("ALTITUDE", 10),
        ("GPS_RAW_INT", 8),
        ("ATTITUDE_TARGET", 10),
        ("POSITION_TARGET_LOCAL_NED", 10),
        ("SERVO_OUTPUT_RAW", 10),
        ("DISTANCE_SENSOR", 10),
        ("TIMESYNC", 10),
        ("PING", 1),
        ("OPEN_DRONE_ID_LOCATION", 1),
        ("OPEN_DRONE_ID_SYSTEM", 1),
        ("VIBRATION", 0.5),
        ("SYS_STATUS", 5),
        ("EXTENDED_SYS_STATE", 5),
        ("MISSION_CURRENT", 1),
        ("ESTIMATOR_STATUS", 1),
        ("HOME_POSITION", 0.5),
        ("BATTERY_STATUS", 0.5),
    ]:
        assert rate_hz(c, kind, t0) == pytest.approx(hz, rel=0.15, abs=0.3), kind
    gpi = c.of("GLOBAL_POSITION_INT")[-1][1]
    home = c.of("HOME_POSITION")[-1][1]
    assert (gpi.lat, gpi.lon) == (home.latitude, home.longitude) == (-353632621, 1491652374)
    assert gpi.alt == pytest.approx(home.altitude, abs=50)  # on the ground at home, mm AMSL
    flags = [m.flags & M.ESTIMATOR_POS_HORIZ_ABS for _, m in c.of("ESTIMATOR_STATUS")]
    assert flags[0] == 0 and flags[-1]  # no absolute position before the estimate is ready (1 s)


def test_home_sets_every_geodetic_message_and_the_origin() -> None:
    c = Client(vehicle("px4", home=Home(47.397742, 8.545594, 488.0)))
    c.run(2.1)
    gpi = c.of("GLOBAL_POSITION_INT")[-1][1]
    assert (gpi.lat, gpi.lon) == (473977420, 85455940)
    assert gpi.alt == pytest.approx(488_000, abs=50)
    assert c.of("HOME_POSITION")[-1][1].altitude == 488_000
    assert c.command(M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_GPS_GLOBAL_ORIGIN).result == 0
    c.run(0.02)
    assert c.of("GPS_GLOBAL_ORIGIN")[-1][1].latitude == 473977420
    with pytest.raises(ValueError, match="latitude"):
        Home(123.0, 0.0, 0.0)


def test_ardupilot_request_data_stream_all_then_stop_and_sr0_params_at_boot() -> None:
    c = Client(vehicle("ardupilot"))
    c.run(2.0)
    assert not c.of("GLOBAL_POSITION_INT")  # nothing streams until asked
    c.send(c.mav.request_data_stream_encode(1, 1, M.MAV_DATA_STREAM_ALL, 4, 1))  # MAVProxy's default
    t0 = c.t
    c.run(5.0)
    for kind in (
        "GLOBAL_POSITION_INT",
        "LOCAL_POSITION_NED",
        "ATTITUDE",
        "VFR_HUD",
        "SYS_STATUS",
        "GPS_RAW_INT",
    ):
        assert rate_hz(c, kind, t0) == pytest.approx(4.0, abs=0.25), kind
    assert c.v.ap.param("SR0_POSITION") == 4  # the in-memory SRx_ value follows
    assert c.v.ap.param("SR0_PARAMS") == 0  # ALL leaves the parameter stream alone
    c.send(c.mav.request_data_stream_encode(1, 1, M.MAV_DATA_STREAM_POSITION, 0, 0))
    t1 = c.t + 0.1
    c.run(2.0)
    assert not c.of("GLOBAL_POSITION_INT", since_s=t1)
    assert rate_hz(c, "ATTITUDE", t1) == pytest.approx(4.0, abs=0.6)

    d = Client(vehicle("ardupilot", params={"SR0_EXTRA1": 10}))
    d.run(3.0)
    assert len(d.of("ATTITUDE")) == pytest.approx(30, abs=1)
    assert not d.of("GLOBAL_POSITION_INT")


def test_get_home_position_and_request_message_answer_with_the_message() -> None:
    for flavor in ("px4", "ardupilot"):
        c = Client(vehicle(flavor))
        c.run(0.5)
        assert c.command(M.MAV_CMD_GET_HOME_POSITION).result == M.MAV_RESULT_ACCEPTED
        c.run(0.02)
        assert c.of("HOME_POSITION"), flavor
        ver = c.command(M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_AUTOPILOT_VERSION)
        assert ver.result == M.MAV_RESULT_ACCEPTED
        c.run(0.02)
        assert c.of("AUTOPILOT_VERSION")[-1][1].capabilities & M.MAV_PROTOCOL_CAPABILITY_MISSION_INT


def test_unknown_parameter_set_gets_no_answer_from_either_flavour() -> None:
    # real PX4 SIH and real ArduCopter both answer nothing (tests/conformance, param.set_unknown)
    c = Client(vehicle("px4"))
    c.run(0.1)
    c.send(c.mav.param_set_encode(1, 1, b"NO_SUCH_PARAM", 1.0, M.MAV_PARAM_TYPE_REAL32))
    c.run(0.05)
    assert not c.of("PARAM_VALUE") and not c.of("STATUSTEXT")
    a = Client(vehicle("ardupilot"))
    a.run(0.1)
    a.send(a.mav.param_set_encode(1, 1, b"NO_SUCH_PARAM", 1.0, M.MAV_PARAM_TYPE_REAL32))
    a.run(0.05)
    assert not a.of("PARAM_VALUE") and not a.of("STATUSTEXT")


def test_ftp_is_nacked_at_once_so_clients_fall_back_to_param_request_list() -> None:
    c = Client(vehicle("ardupilot"))
    c.run(0.1)
    name = b"@PARAM/param.pck"
    # seq 7, session 0, opcode OpenFileRO (4), size, ..., offset 0, data = path
    payload = bytes([7, 0, 0, 4, len(name), 0, 0, 0, 0, 0, 0, 0]) + name
    c.send(c.mav.file_transfer_protocol_encode(0, 1, 1, list(payload + bytes(251 - len(payload)))))
    c.run(0.01)
    reply = bytes(c.of("FILE_TRANSFER_PROTOCOL")[-1][1].payload)
    assert int.from_bytes(reply[0:2], "little") == 8  # seq + 1
    assert (reply[3], reply[4], reply[5], reply[12]) == (
        129,
        1,
        4,
        10,
    )  # NAK, size 1, OpenFileRO, FileNotFound


def _upload(c: Client, items: list[tuple[int, int, float, float, float, float]]) -> int:
    """(frame, command, param1, lat deg, lon deg, alt) items; returns the MISSION_ACK type."""
    start = len(c.log)
    c.send(c.mav.mission_count_encode(1, 1, len(items), 0))
    for _ in range(len(items) + 5):
        c.run(0.02)
        reqs = [m for _, m in c.log[start:] if m.get_type() == "MISSION_REQUEST_INT"]
        acks = [m for _, m in c.log[start:] if m.get_type() == "MISSION_ACK"]
        if acks:
            return int(acks[-1].type)
        seq = reqs[-1].seq
        frame, cmd, p1, lat, lon, alt = items[seq]
        c.send(
            c.mav.mission_item_int_encode(
                1, 1, seq, frame, cmd, 0, 1, p1, 0, 0, math.nan, round(lat * 1e7), round(lon * 1e7), alt, 0
            )
        )
    raise AssertionError("upload did not finish")


def test_ardupilot_mission_upload_download_fly_auto_with_reached_and_clear() -> None:
    c = Client(vehicle("ardupilot"))
    c.run(2.5)
    lat0, lon0 = -35.3632621, 149.1652374
    north = 10.0 / 6378137.0 * 180 / math.pi
    rel = M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
    items = [
        (M.MAV_FRAME_GLOBAL_INT, M.MAV_CMD_NAV_WAYPOINT, 0, lat0, lon0, 584.09),  # 0: home
        (rel, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 5.0),
        (rel, M.MAV_CMD_DO_CHANGE_SPEED, 1, 0, 0, 0),
        (rel, M.MAV_CMD_NAV_WAYPOINT, 1.0, lat0 + north, lon0, 5.0),
        (rel, M.MAV_CMD_NAV_LAND, 0, lat0 + north, lon0, 0.0),
    ]
    assert _upload(c, items) == M.MAV_MISSION_ACCEPTED
    c.send(c.mav.mission_request_list_encode(1, 1, 0))
    c.run(0.02)
    assert c.of("MISSION_COUNT")[-1][1].count == 5
    c.send(c.mav.mission_request_int_encode(1, 1, 3, 0))
    c.run(0.02)
    item = c.of("MISSION_ITEM_INT")[-1][1]
    assert (item.seq, item.command, item.x) == (3, M.MAV_CMD_NAV_WAYPOINT, round((lat0 + north) * 1e7))
    assert c.command(M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, 3).result == 0  # AUTO
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    c.run(30.0)
    reached = [m.seq for _, m in c.of("MISSION_ITEM_REACHED")]
    assert reached == [1, 3, 4]
    pos = c.v.ap.sim.pos_ned_m[0] - c.v.ap.home_ned_m
    assert pos[0] == pytest.approx(10.0, abs=1.0) and abs(pos[1]) < 1.0
    assert not c.v.ap.armed  # landed and disarmed, as after a real LAND item
    assert c.v.ap.plan.complete
    c.send(c.mav.mission_clear_all_encode(1, 1, 0))
    c.run(0.02)
    assert c.of("MISSION_ACK")[-1][1].type == M.MAV_MISSION_ACCEPTED
    assert c.v.ap.plan.items == ()
    # a navigation command the emulator cannot fly is refused, not silently dropped
    assert (
        _upload(c, [items[0], (rel, M.MAV_CMD_NAV_SPLINE_WAYPOINT, 0, lat0, lon0, 5.0)])
        == M.MAV_MISSION_UNSUPPORTED
    )


def test_px4_mission_start_flies_to_the_rtl_item_lands_and_an_empty_mission_is_refused() -> None:
    c = Client(vehicle("px4", params={"RTL_RETURN_ALT": 6.0}))
    c.run(1.2)
    assert c.command(M.MAV_CMD_MISSION_START).result == M.MAV_RESULT_TEMPORARILY_REJECTED  # no mission
    lat0, lon0 = -35.3632621, 149.1652374
    east = 8.0 / (6378137.0 * math.cos(math.radians(lat0))) * 180 / math.pi
    rel = M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
    items = [
        (rel, M.MAV_CMD_NAV_TAKEOFF, 0, lat0, lon0, 3.0),
        (rel, M.MAV_CMD_NAV_WAYPOINT, 0, lat0, lon0 + east, 4.0),
        (rel, M.MAV_CMD_NAV_RETURN_TO_LAUNCH, 0, 0, 0, 0),
    ]
    assert _upload(c, items) == M.MAV_MISSION_ACCEPTED
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == M.MAV_RESULT_ACCEPTED
    assert c.command(M.MAV_CMD_MISSION_START).result == M.MAV_RESULT_ACCEPTED
    c.run(1.5)
    assert c.heartbeat().custom_mode == (4 << 16) | (4 << 24)  # AUTO.MISSION
    states = []
    for _ in range(80):
        c.run(0.5)
        states.append(c.of("MISSION_CURRENT")[-1][1].mission_state)
        if not c.v.ap.armed:
            break
    assert [m.seq for _, m in c.of("MISSION_ITEM_REACHED")] == [0, 1, 2]
    assert states[0] == 3 and states[-1] == 5  # active ... complete
    assert max(-m.relative_alt for _, m in c.of("GLOBAL_POSITION_INT")) < 100  # never below home
    assert max(m.relative_alt for _, m in c.of("GLOBAL_POSITION_INT")) == pytest.approx(6000, abs=700)
    pos = c.v.ap.sim.pos_ned_m[0] - c.v.ap.home_ned_m
    assert np.hypot(pos[0], pos[1]) < 1.0 and not c.v.ap.armed  # back home, landed, disarmed


def test_ardupilot_reposition_is_a_guided_target_and_sr0_param_sets_apply_at_reboot() -> None:
    c = Client(vehicle("ardupilot"))
    c.run(2.5)
    assert c.command(M.MAV_CMD_DO_SET_MODE, 1, 4).result == 0
    assert c.command(M.MAV_CMD_COMPONENT_ARM_DISARM, 1).result == 0
    assert c.command(M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, 4.0).result == 0
    c.run(8.0)
    lat = round((-35.3632621 + 6.0 / 6378137.0 * 180 / math.pi) * 1e7)
    start = len(c.log)
    c.send(
        c.mav.command_int_encode(
            1,
            1,
            M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            M.MAV_CMD_DO_REPOSITION,
            0,
            0,
            -1,
            1,
            0,
            math.nan,
            lat,
            1491652374,
            4.0,
        )
    )
    c.run(8.0)
    acks = [m for _, m in c.log[start:] if m.get_type() == "COMMAND_ACK"]
    assert acks[0].command == M.MAV_CMD_DO_REPOSITION and acks[0].result == 0
    pos = c.v.ap.sim.pos_ned_m[0] - c.v.ap.home_ned_m
    assert pos[0] == pytest.approx(6.0, abs=0.5) and -pos[2] == pytest.approx(4.0, abs=0.4)
    assert c.v.ap.mode.value == "GUIDED"

    d = Client(vehicle("ardupilot"))
    d.run(0.2)
    d.send(d.mav.param_set_encode(1, 1, b"SR0_POSITION", 5, M.MAV_PARAM_TYPE_INT16))
    d.run(2.0)
    assert d.of("PARAM_VALUE")[-1][1].param_value == 5
    assert not d.of("GLOBAL_POSITION_INT")  # read when the link starts, not on PARAM_SET
    assert d.command(M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1).result == 0
    t0 = d.t
    d.run(2.0)
    assert rate_hz(d, "GLOBAL_POSITION_INT", t0) == pytest.approx(5.0, abs=0.6)
