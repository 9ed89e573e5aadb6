"""A UDP listener locks onto the autopilot it first hears (or the one ``target_sysid`` names): other
senders on the port never receive our frames and never get their telemetry into the state."""

from __future__ import annotations

import re
import time

import pytest
from bridge_fakes import FakeAutopilot, FakeClock
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import BridgeError
from firmware_bridge.links import ReconnectingLink, UdpLink, open_link
from firmware_bridge.session import MavlinkSession, SessionConfig, SessionEventKind


def _settle() -> None:
    time.sleep(0.005)  # loopback datagrams arrive within microseconds; leave room on a loaded machine


def test_udp_listener_one_sender_per_read_then_locked() -> None:
    with (
        open_link("udpin://127.0.0.1:0") as server,
        open_link("udpout://127.0.0.1:1") as placeholder,
    ):
        assert isinstance(server, UdpLink)
        port = server.local_address[1]
        placeholder.close()
        a = open_link(f"udpout://127.0.0.1:{port}")
        b = open_link(f"udpout://127.0.0.1:{port}")
        try:
            a.write(b"a1")
            _settle()
            b.write(b"b1")
            _settle()
            a.write(b"a2")
            _settle()
            # Not locked: each read returns one sender's bytes, named by .source.
            got = []
            for _ in range(3):
                data = server.read()
                got.append((data, server.source[1] if server.source else None))
            a_port, b_port = a.local_address[1], b.local_address[1]  # type: ignore[attr-defined]
            assert got == [(b"a1", a_port), (b"b1", b_port), (b"a2", a_port)]
            assert server.peer == ("127.0.0.1", a_port)  # replies go to the last sender heard
            server.lock_source(("127.0.0.1", a_port))
            b.write(b"b2")
            b.write(b"b3")
            a.write(b"a3")
            _settle()
            assert server.read() == b"a3"
            assert server.foreign_datagrams == 2 and server.foreign_bytes == 4
            assert server.foreign_senders == {f"127.0.0.1:{b_port}": 2}
            b.write(b"b4")  # b is heard last, but replies still go to a
            _settle()
            assert server.read() == b""
            server.write(b"to a")
            _settle()
            assert a.read() == b"to a" and b.read() == b""
        finally:
            a.close()
            b.close()


def _vehicle(port: int, sysid: int, clock: FakeClock) -> FakeAutopilot:
    return FakeAutopilot(open_link(f"udpout://127.0.0.1:{port}"), clock=clock, sysid=sysid)


def _position(ap: FakeAutopilot, x_m: float) -> None:
    ap.send(mavlink.MAVLink_local_position_ned_message(1000, x_m, 0.0, -5.0, 0.0, 0.0, 0.0))


def _pump(session: MavlinkSession, clock: FakeClock, *aps: FakeAutopilot, seconds: float = 0.3) -> None:
    for _ in range(round(seconds / 0.01)):
        _settle()
        for ap in aps:
            ap.service()
        session.poll(clock())
        clock.advance(0.01)


@pytest.mark.parametrize("reconnecting", [False, True])
def test_session_locks_onto_the_first_autopilot_and_ignores_a_second_sender(reconnecting: bool) -> None:
    clock = FakeClock()
    inner = open_link("udpin://127.0.0.1:0")
    assert isinstance(inner, UdpLink)
    port = inner.local_address[1]
    link = inner
    if reconnecting:  # what `edge-agent run` uses: the lock must pass through it
        inner.close()
        link = ReconnectingLink(f"udpin://127.0.0.1:{port}", clock=clock)
    session = MavlinkSession(link, clock)
    session.set_healthy(True)
    real = _vehicle(port, 1, clock)
    try:
        real.heartbeat()
        _position(real, 1.0)
        _pump(session, clock, real)
        assert session.link_up and session.state.pos_ned_m is not None
        assert session.state.pos_ned_m.value[0] == 1.0
        assert link.locked_source == ("127.0.0.1", real.link.local_address[1])  # type: ignore[attr-defined]
        # A second emulator, same sysid and compid, starts sending to the agent's port mid-flight.
        impostor = _vehicle(port, 1, clock)
        try:
            for k in range(5):
                impostor.heartbeat()
                _position(impostor, -100.0 - k)
                _pump(session, clock, real, impostor, seconds=0.05)
            _position(real, 2.0)
            _pump(session, clock, real, impostor)
            assert session.state.pos_ned_m.value[0] == 2.0  # never the impostor's -100
            assert link.foreign_datagrams == 10
            assert impostor.received == []  # not one heartbeat, command or setpoint reached it
            assert real.of_type("HEARTBEAT") and real.of_type("COMMAND_LONG")
            events = [e for e in session.events() if e.kind == SessionEventKind.FOREIGN_SENDER]
            # Reported at the first poll that dropped any (1 or 2 datagrams), then at 10, 100, ...
            counts = [int(e.detail.split(" ")[0]) for e in events]
            assert len(counts) == 2 and counts[0] <= 2 and counts[1] == 10, counts
            assert re.search(r"only the autopilot at 127\.0\.0\.1:\d+ \(sysid 1\) is heard", events[0].detail)
        finally:
            impostor.link.close()
    finally:
        real.link.close()
        link.close()


def test_target_sysid_picks_the_vehicle_on_a_shared_link() -> None:
    clock = FakeClock()
    link = open_link("udpin://127.0.0.1:0")
    assert isinstance(link, UdpLink)
    port = link.local_address[1]
    session = MavlinkSession(link, clock, SessionConfig(target_sysid=2))
    session.set_healthy(True)
    one, two = _vehicle(port, 1, clock), _vehicle(port, 2, clock)
    try:
        one.heartbeat()  # heard first, but not the vehicle asked for
        _position(one, 1.0)
        _pump(session, clock, one, two, seconds=0.1)
        assert not session.link_up and link.locked_source is None
        two.heartbeat()
        _position(two, 2.0)
        _pump(session, clock, one, two)
        assert session.link_up and session.telemetry.target_sysid == 2
        assert session.state.pos_ned_m is not None and session.state.pos_ned_m.value[0] == 2.0
        assert link.locked_source == ("127.0.0.1", two.link.local_address[1])  # type: ignore[attr-defined]
        assert two.of_type("COMMAND_LONG") and all(m.target_system == 2 for m in two.of_type("COMMAND_LONG"))
        n_one = len(one.received)
        _position(one, 9.0)
        _pump(session, clock, one, two)
        assert session.state.pos_ned_m.value[0] == 2.0 and len(one.received) == n_one
        assert one.received == []  # not even a heartbeat while the agent was waiting for vehicle 2
    finally:
        one.link.close()
        two.link.close()
        link.close()


@pytest.mark.parametrize("bad", [0, 256, -1])
def test_target_sysid_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(
        BridgeError,
        match=re.escape(
            f"target_sysid must be a MAVLink id in 1..255 (or None: the first autopilot), got {bad}"
        ),
    ):
        SessionConfig(target_sysid=bad)


def test_after_the_autopilot_falls_silent_the_lock_is_released_for_its_return_from_a_new_port() -> None:
    clock = FakeClock()
    link = open_link("udpin://127.0.0.1:0")
    assert isinstance(link, UdpLink)
    port = link.local_address[1]
    session = MavlinkSession(link, clock)
    session.set_healthy(True)
    before = _vehicle(port, 1, clock)
    other = _vehicle(port, 9, clock)  # another vehicle on the port, before and after
    try:
        before.heartbeat()
        _pump(session, clock, before)
        assert session.link_up and link.locked_source == ("127.0.0.1", before.link.local_address[1])  # type: ignore[attr-defined]
        before.link.close()  # the autopilot reboots: silent, then back from a new source port
        for _ in range(4):
            other.heartbeat()
            _pump(session, clock, other, seconds=1.0)
        assert not session.link_up and link.locked_source is None
        assert other.received == []  # released, but sysid 9 is not the autopilot: it is not answered
        after = _vehicle(port, 1, clock)
        try:
            after.heartbeat()
            _position(after, 3.0)
            _pump(session, clock, after, other, seconds=1.2)
            assert session.link_up and link.locked_source == ("127.0.0.1", after.link.local_address[1])  # type: ignore[attr-defined]
            assert session.state.pos_ned_m is not None and session.state.pos_ned_m.value[0] == 3.0
            assert after.of_type("HEARTBEAT") and after.of_type("COMMAND_LONG") and other.received == []
        finally:
            after.link.close()
    finally:
        other.link.close()
        link.close()
