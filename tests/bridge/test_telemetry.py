"""Telemetry tracker against real ArduCopter traffic and PX4-style messages."""

from __future__ import annotations

import math
import re
import struct

import pytest
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.telemetry import (
    TelemetryTracker,
    arducopter_custom_mode,
    arducopter_mode_name,
    px4_custom_mode,
    px4_mode_name,
    quat_from_euler,
)
from firmware_bridge.types import Autopilot, LandedState, VehicleState
from tests.conftest import SHARED_DATA

DATA = str(SHARED_DATA / "ardupilot")


def replay(path: str) -> tuple[TelemetryTracker, list[tuple[float, VehicleState]]]:
    """Feed a .tlog through the tracker, stamping each message with its log time (ns)."""
    conn = mavutil.mavlink_connection(path)
    tracker = TelemetryTracker()
    seen = []
    while (m := conn.recv_msg()) is not None:
        now_ns = int(conn.timestamp * 1e9)
        tracker.update(m, now_ns)
        seen.append((conn.timestamp, tracker.state))
    return tracker, seen


def test_real_arducopter_flight_modes_arming_and_landing() -> None:
    tracker, seen = replay(f"{DATA}/flight.tlog")
    changes = [(c.old_mode, c.new_mode, c.old_armed, c.new_armed) for c in tracker.mode_changes]
    assert changes == [
        ("STABILIZE", "GUIDED", False, False),
        ("GUIDED", "GUIDED", False, True),
        ("GUIDED", "LAND", True, True),
        ("LAND", "LAND", True, False),
    ]
    landed: list[LandedState] = []
    for _, s in seen:
        if not landed or landed[-1] != s.landed_state:
            landed.append(s.landed_state)
    # ground → takeoff → air → landing → ground, exactly the MAV_LANDED_STATE sequence of the flight
    assert landed[landed.index(LandedState.ON_GROUND) :] == [
        LandedState.ON_GROUND,
        LandedState.TAKEOFF,
        LandedState.IN_AIR,
        LandedState.LANDING,
        LandedState.ON_GROUND,
    ]
    final = tracker.state
    assert final.autopilot == Autopilot.ARDUPILOT
    assert final.custom_mode == 9 and final.mode == "LAND" and not final.armed
    assert final.pos_ned_m is not None and final.pos_ned_m.value[0] == pytest.approx(16.0, abs=0.1)
    assert final.pos_ned_m.source_time_us > 0 and final.pos_ned_m.source_time_us % 1000 == 0
    # ArduCopter sends ATTITUDE (Euler): the tracker turns it into a unit quaternion
    q = final.q_wxyz.value if final.q_wxyz else ()
    assert math.isclose(sum(x * x for x in q), 1.0, rel_tol=1e-6)
    assert final.battery is not None and 0 < final.battery.value[0] <= 1 and final.battery.value[1] > 10
    assert (tracker.target_sysid, tracker.target_compid) == (1, 1)


def test_unsolicited_traffic_from_a_cold_boot() -> None:
    tracker, _ = replay(f"{DATA}/probe_early.tlog")
    s = tracker.state
    # PARAM_VALUE pushes land in params; STATUSTEXT arm refusals are kept for command errors.
    assert len(s.params) >= 5
    assert any(t.text.startswith("Arm: ") for t in tracker.statustexts)
    assert s.mode == "GUIDED"


def test_companion_and_gcs_traffic_is_ignored() -> None:
    conn = mavutil.mavlink_connection(f"{DATA}/flight_sent.tlog")
    tracker = TelemetryTracker()
    while (m := conn.recv_msg()) is not None:
        assert tracker.update(m, 0) is False
    assert not tracker.locked
    assert tracker.state.mode == "UNKNOWN"


def _msg(m: object, sysid: int = 1, compid: int = 1) -> object:
    mav = mavlink.MAVLink(None, srcSystem=sysid, srcComponent=compid)
    buf = m.pack(mav)  # type: ignore[attr-defined]
    return mav.decode(bytearray(buf))


def test_px4_modes_and_bytewise_integer_params() -> None:
    t = TelemetryTracker()
    hb = _msg(mavlink.MAVLink_heartbeat_message(2, 12, 0x81, 6 << 16, 4, 3))
    t.update(hb, 10)
    assert (t.state.mode, t.state.armed, t.state.autopilot) == ("OFFBOARD", True, Autopilot.PX4)
    raw = struct.unpack("<f", struct.pack("<i", 4))[0]  # COM_OBL_RC_ACT = 4 (Land), sent bytewise
    t.update(_msg(mavlink.MAVLink_param_value_message(b"COM_OBL_RC_ACT", raw, 6, 1000, 1)), 11)
    t.update(_msg(mavlink.MAVLink_param_value_message(b"COM_OF_LOSS_T", 1.0, 9, 1000, 2)), 12)
    assert t.state.params == {"COM_OBL_RC_ACT": 4.0, "COM_OF_LOSS_T": 1.0}


@pytest.mark.parametrize(
    ("custom_mode", "name"),
    [(6 << 16, "OFFBOARD"), (3 << 16, "POSCTL"), (2 << 16, "ALTCTL"), ((4 << 16) | (3 << 24), "HOLD"),
     ((4 << 16) | (5 << 24), "RTL"), ((4 << 16) | (6 << 24), "LAND"), ((4 << 16) | (2 << 24), "TAKEOFF"),
     ((4 << 16) | (4 << 24), "MISSION"), (1 << 16, "MANUAL")],
)  # fmt: skip
def test_px4_mode_table_round_trips(custom_mode: int, name: str) -> None:
    assert px4_mode_name(custom_mode) == name
    assert px4_custom_mode(name) == custom_mode


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "STABILIZE"),
        (2, "ALTCTL"),
        (3, "MISSION"),
        (4, "GUIDED"),
        (5, "LOITER"),  # follows the sticks: not a hold (real ArduCopter descended into the ground)
        (6, "RTL"),
        (9, "LAND"),
        (16, "POSCTL"),
        (17, "HOLD"),  # BRAKE holds position whatever the sticks say
    ],
)
def test_arducopter_mode_table_round_trips(number: int, name: str) -> None:
    assert arducopter_mode_name(number) == name
    assert arducopter_custom_mode(name) == number


def test_unknown_mode_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match=re.escape("PX4 has no mode 'GUIDED'")):
        px4_custom_mode("GUIDED")
    assert arducopter_mode_name(99) == "COPTER_99"


def test_odometry_body_velocity_is_rotated_into_ned() -> None:
    t = TelemetryTracker(target_sysid=1, target_compid=1)
    yaw90 = quat_from_euler(0.0, 0.0, math.pi / 2)  # facing east
    odo = mavlink.MAVLink_odometry_message(5_000_000, 1, 12, 1.0, 2.0, -3.0, list(yaw90), 2.0, 0.0, 0.0, 0.0, 0.0, 0.1,
                                           [math.nan] * 21, [math.nan] * 21, 0, 0, 0)  # fmt: skip
    t.update(_msg(odo), 99)
    s = t.state
    assert s.vel_ned_m_s is not None and s.vel_ned_m_s.value == pytest.approx((0.0, 2.0, 0.0), abs=1e-6)
    assert s.pos_ned_m is not None and s.pos_ned_m.stamp_ns == 99 and s.pos_ned_m.source_time_us == 5_000_000
    assert s.rates_frd_rad_s is not None and s.rates_frd_rad_s.value[2] == pytest.approx(0.1)
    # A LOCAL_FRD odometry is not north-aligned: ignored rather than mistaken for NED.
    frd = mavlink.MAVLink_odometry_message(
        6_000_000, 20, 12, 9.0, 9.0, 9.0, list(yaw90), 0, 0, 0, 0, 0, 0, [0.0] * 21, [0.0] * 21, 0, 0, 0
    )
    t.update(_msg(frd), 100)
    assert t.state.pos_ned_m is not None and t.state.pos_ned_m.value[0] == 1.0


def test_snapshot_is_reused_until_something_changes() -> None:
    t = TelemetryTracker(target_sysid=1, target_compid=1)
    a = t.state
    assert t.state is a
    t.update(_msg(mavlink.MAVLink_extended_sys_state_message(0, 2)), 5)
    assert t.state is not a and t.state.landed_state == LandedState.IN_AIR


def _text(text: str, text_id: int = 0, seq: int = 0, severity: int = 2) -> object:
    return _msg(mavlink.MAVLink_statustext_message(severity, text.encode(), text_id, seq))


def test_chunked_statustexts_are_reassembled_and_a_broken_sequence_is_marked() -> None:
    """PX4 sends texts longer than 50 characters in chunks that share a nonzero id (real PX4
    SIH's 'Arming denied: Resolve system health failures first' is 51); each arrives whole."""
    tracker = TelemetryTracker()
    tracker.update(_msg(mavlink.MAVLink_heartbeat_message(2, 12, 0, 0, 3, 3)), 0)
    long = "Arming denied: Resolve system health failures first"
    tracker.update(_text(long[:50], 7, 0), 1)
    assert not tracker.statustexts  # waiting for the last chunk
    tracker.update(_text(long[50:], 7, 1), 2)
    tracker.update(_text("short one"), 3)
    # a sequence whose end never comes is kept as far as it came when the next text arrives
    tracker.update(_text("x" * 50, 8, 0), 4)
    tracker.update(_text("y" * 50, 9, 0), 5)
    tracker.update(_text("", 9, 1), 6)  # exactly 50: an empty chunk ends it
    tracker.update(_text("tail without its start", 10, 1), 7)
    assert [(t.stamp_ns, t.text) for t in tracker.statustexts] == [
        (1, long),
        (3, "short one"),
        (4, "x" * 50 + "…"),
        (5, "y" * 50),
        (7, "…tail without its start"),
    ]
    for k in range(40):  # a sender that never ends a sequence cannot grow it without bound
        tracker.update(_text("z" * 50, 11, k), 10 + k)
    assert max(len(t.text) for t in tracker.statustexts) <= 16 * 50
