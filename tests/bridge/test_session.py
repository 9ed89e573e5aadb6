"""Session over a real pty pair with a fake clock: heartbeats, liveness, commands, timesync."""

from __future__ import annotations

import re
import time

import pytest
from bridge_fakes import FakeAutopilot, FakeClock
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import BridgeError, CommandError
from firmware_bridge.links import open_link
from firmware_bridge.session import MavlinkSession, SessionConfig, SessionEventKind

TICK_S = 0.01


def pump(
    session: MavlinkSession,
    ap: FakeAutopilot,
    clock: FakeClock,
    seconds: float,
    hb: bool = True,
    tick_s: float = TICK_S,
) -> None:
    """Run both ends for ``seconds`` of fake time; the autopilot sends its 1 Hz heartbeat if ``hb``."""
    ticks = round(seconds / tick_s)
    last_hb_s = -1
    for _ in range(ticks):
        if hb and clock.now_ns // 1_000_000_000 != last_hb_s:
            last_hb_s = clock.now_ns // 1_000_000_000
            ap.heartbeat()
        time.sleep(0.0002)  # let the pty's line discipline move the bytes
        ap.service()
        session.poll(clock())
        clock.advance(tick_s)


@pytest.fixture
def rig(pty_pair, clock):
    master, slave = pty_pair
    session = MavlinkSession(master, clock)
    ap = FakeAutopilot(slave, clock=clock, params={"COM_OF_LOSS_T": 1.0, "COM_OBL_RC_ACT": 0.0})
    return session, ap, clock


def test_heartbeat_identity_rate_and_stop_when_unhealthy(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 2.0)
    assert ap.of_type("HEARTBEAT") == []  # never healthy yet: silent
    session.set_healthy(True)
    pump(session, ap, clock, 5.0)
    hbs = ap.of_type("HEARTBEAT")
    assert len(hbs) == 5
    hb = hbs[0]
    assert (hb.type, hb.autopilot, hb.get_srcSystem(), hb.get_srcComponent()) == (18, 8, 1, 191)
    session.set_healthy(False)
    pump(session, ap, clock, 3.0)
    assert len(ap.of_type("HEARTBEAT")) == 5


def test_connect_requests_intervals_and_failsafe_params(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 1.5)
    intervals = {(m.param1, m.param2) for m in ap.of_type("COMMAND_LONG") if m.command == 511}
    assert intervals == {
        (32.0, 20000.0),
        (31.0, 10000.0),
        (105.0, 10000.0),
        (1.0, 500000.0),
        (147.0, 1e6),
        (245.0, 500000.0),
        (193.0, 500000.0),  # EKF_STATUS_REPORT: ArduPilot's estimator health, for the readiness wait
    }
    # The failsafe parameters the fake autopilot has; SYS_AUTOSTART (the airframe) it does not know.
    assert session.state.params == {"COM_OF_LOSS_T": 1.0, "COM_OBL_RC_ACT": 0.0}
    assert session.state.link_up and session.link_up
    assert [e.kind for e in session.events()] == [SessionEventKind.LINK_UP]


def test_mission_counts_are_read_retried_and_a_download_is_cancelled(rig) -> None:
    """The rally-point count the RTL check needs: MISSION_REQUEST_LIST is retried when unanswered,
    the count lands in the state, and with items stored the download the autopilot now expects is
    cancelled (MISSION_ACK OPERATION_CANCELLED), so it does not wait on the agent."""
    session, ap, clock = rig
    ap.mission_counts = {mavlink.MAV_MISSION_TYPE_RALLY: 3, mavlink.MAV_MISSION_TYPE_FENCE: 0}
    ap.lists_dropped = 1
    pump(session, ap, clock, 0.5)
    session.request_mission_count(mavlink.MAV_MISSION_TYPE_RALLY)
    session.request_mission_count(mavlink.MAV_MISSION_TYPE_FENCE)
    session.request_mission_count(mavlink.MAV_MISSION_TYPE_MISSION)  # never answered
    assert session.reading_mission_count(mavlink.MAV_MISSION_TYPE_RALLY)
    pump(session, ap, clock, 5.0)
    assert session.state.mission_counts == {2: 3, 1: 0}
    lists = ap.of_type("MISSION_REQUEST_LIST")
    assert [m.mission_type for m in lists].count(2) == 2  # the first was dropped, then retried
    assert [m.mission_type for m in lists].count(0) == SessionConfig().param_attempts
    assert not any(session.reading_mission_count(t) for t in (0, 1, 2))  # answered, or given up
    acks = [(m.type, m.mission_type) for m in ap.of_type("MISSION_ACK")]
    assert acks == [(mavlink.MAV_MISSION_OPERATION_CANCELLED, 2)], acks  # nothing to cancel for 0 items
    assert [e.kind for e in session.events()] == [SessionEventKind.LINK_UP]  # optional: no PARAM_MISSING


def test_link_loss_seen_within_3_s_and_traffic_again_within_2_s_of_return(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 2.0)
    session.events()
    gone_at = clock()
    pump(session, ap, clock, 4.0, hb=False)  # the autopilot falls silent
    (down,) = session.events()
    assert down.kind is SessionEventKind.LINK_DOWN
    assert down.stamp_ns - gone_at <= 3.0e9
    assert not session.state.link_up
    before = len(ap.of_type("COMMAND_LONG"))
    back_at = clock()
    pump(session, ap, clock, 2.0)
    (up,) = session.events()
    assert up.kind is SessionEventKind.LINK_UP and up.stamp_ns - back_at <= 2.0e9
    # Intervals requested again on reconnect: traffic flows.
    assert len([m for m in ap.of_type("COMMAND_LONG")[before:] if m.command == 511]) == 7


def test_command_succeeds_on_the_third_attempt(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 1.0)
    ap.ack_script[400] = [None, None]  # the first two attempts vanish
    h = session.arm()
    pump(session, ap, clock, 1.5)
    assert h.accepted and h.attempts == 3 and h.result == 0
    arms = [m for m in ap.of_type("COMMAND_LONG") if m.command == 400]
    assert [m.confirmation for m in arms] == [0, 1, 2]


def test_command_fails_clearly_after_the_last_retry_and_never_hangs(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 1.0)
    ap.ack_script[400] = [None] * 10
    h = session.arm()
    start = clock()

    def step(s: float) -> None:
        time.sleep(0.0002)
        ap.service()
        clock.advance(s)

    with pytest.raises(CommandError) as info:
        session.wait(h, sleep=lambda s: step(s))
    elapsed_s = (clock() - start) / 1e9
    assert 2.0 <= elapsed_s < 2.1  # four attempts, 0.5 s apart
    assert info.value.result is None and info.value.command == 400
    assert str(info.value) == (
        "arm: no COMMAND_ACK after 4 attempts (0.5 s apart); is the autopilot connected and addressed as sysid/compid (1, 1)?"
    )
    assert [e.kind for e in session.events()][-1] is SessionEventKind.COMMAND_FAILED


def test_denied_command_carries_the_result_and_the_autopilots_reason(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 1.0)
    ap.ack_script[400] = [4]
    ap.texts_before_ack[400] = "Arm: GPS not healthy"
    h = session.arm()
    pump(session, ap, clock, 0.2)
    with pytest.raises(
        CommandError,
        match=re.escape(
            "arm refused by the autopilot: MAV_RESULT 4 (FAILED); autopilot said: Arm: GPS not healthy"
        ),
    ):
        h.raise_for_result()
    assert h.attempts == 1 and h.result == 4


def test_commands_with_the_same_number_are_serialised(rig) -> None:
    session, ap, clock = rig
    pump(session, ap, clock, 1.5)
    n0 = len(ap.of_type("COMMAND_LONG"))
    a = session.set_message_interval(33, 5.0)
    b = session.set_message_interval(34, 5.0)
    assert len(ap.of_type("COMMAND_LONG")) == n0  # b waits for a's ACK
    pump(session, ap, clock, 0.3)
    assert a.accepted and b.accepted
    sent = [m.param1 for m in ap.of_type("COMMAND_LONG")[n0:]]
    assert sent == [33.0, 34.0]


def test_timesync_offset_and_answering_the_autopilots_requests(rig) -> None:
    session, ap, clock = rig
    ap.clock_offset_ns = 5_000_000_000
    pump(session, ap, clock, 1.0)
    # With 10 ms ticks every round trip is ≥ 10 ms of fake time: all samples refused.
    assert session.timesync_offset_ns is None
    clock.advance(5.0)
    pump(session, ap, clock, 0.1, tick_s=0.002)
    assert session.timesync_offset_ns is not None
    assert abs(session.timesync_offset_ns - 5_000_000_000) <= 2_000_000
    ap.send(mavlink.MAVLink_timesync_message(0, 123456789))
    pump(session, ap, clock, 0.05)
    replies = [m for m in ap.of_type("TIMESYNC") if m.ts1 == 123456789]
    assert len(replies) == 1 and replies[0].tc1 > 0


def test_ground_station_messages(rig) -> None:
    session, ap, clock = rig
    session.send_statustext(4, "shield: barrier active")
    session.send_statustext(6, "x" * 120)
    session.send_named_value_float("margin", 0.42)
    pump(session, ap, clock, 0.05)
    texts = ap.of_type("STATUSTEXT")
    assert texts[0].text == "shield: barrier active" and texts[0].id == 0
    assert [len(t.text) for t in texts[1:]] == [50, 50, 20] and len({t.id for t in texts[1:]}) == 1
    (nv,) = ap.of_type("NAMED_VALUE_FLOAT")
    assert nv.name == "margin" and nv.value == pytest.approx(0.42)
    with pytest.raises(
        BridgeError, match=re.escape("NAMED_VALUE_FLOAT names have 1..10 characters, 'coverage_rate' has 13")
    ):
        session.send_named_value_float("coverage_rate", 1.0)


def test_bad_config_is_refused() -> None:
    with pytest.raises(
        BridgeError,
        match=re.escape("sysid and compid must be in 1..255 (compid 191 for an onboard computer), got 1, 0"),
    ):
        SessionConfig(compid=0)


def test_plain_link_failure_is_reported_once(clock) -> None:
    from firmware_bridge.links import PtyLink

    master = PtyLink()
    slave = open_link(f"serial://{master.device_path}")
    session = MavlinkSession(slave, clock)
    master.close()
    for _ in range(5):
        session.poll(clock())
        clock.advance(0.01)
    events = session.events()
    assert [e.kind for e in events] == [SessionEventKind.LINK_DOWN]
    assert "peer vanished" in events[0].detail


def test_state_streams_follow_the_control_rate() -> None:
    """Position and attitude are asked for at the loop's rate (capped, never lowered); the rest
    keep their rates. A 250 Hz loop fed 50 Hz positions would act on each sample five times."""
    from firmware_bridge.session import DEFAULT_MESSAGE_RATES_HZ, MAX_STATE_STREAM_HZ, stream_rates_for

    assert stream_rates_for(50.0) == DEFAULT_MESSAGE_RATES_HZ  # 50 Hz position, 100 Hz attitude
    fast = dict(stream_rates_for(250.0))
    assert fast[32] == fast[31] == 250.0
    assert {m: hz for m, hz in fast.items() if m not in (31, 32)} == {
        m: hz for m, hz in DEFAULT_MESSAGE_RATES_HZ if m not in (31, 32)
    }
    assert dict(stream_rates_for(1000.0))[32] == MAX_STATE_STREAM_HZ
    assert dict(stream_rates_for(100.0, ((32, 400.0), (147, 1.0)))) == {32: 400.0, 147: 1.0}
