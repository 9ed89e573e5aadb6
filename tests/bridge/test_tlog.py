"""The tlog tap: frames cut from chunks, both directions, in the format pymavlink reads."""

from __future__ import annotations

import re
import select
import time
from pathlib import Path

import pytest
from bridge_fakes import FakeAutopilot, FakeClock
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import LinkError
from firmware_bridge.links import PtyLink, ReconnectingLink, open_link
from firmware_bridge.mavlink_codec import MavlinkEncoder
from firmware_bridge.session import MavlinkSession
from firmware_bridge.tlog import MavlinkFramer, TlogWriter

RECORDED = Path("/work/shared/data/ardupilot/flight.tlog")


def _frames(n: int, *, sysid: int = 1) -> list[bytes]:
    enc = MavlinkEncoder(sysid, 1)
    out = []
    for k in range(n):
        out.append(enc.encode(mavlink.MAVLink_local_position_ned_message(k, 0.1 * k, 0.0, -5.0, 0, 0, 0)))
        out.append(enc.encode(mavlink.MAVLink_heartbeat_message(2, 12, 0, 0, 4, 3)))
    return out


def test_framer_cuts_any_chunking_into_the_frames_sent() -> None:
    frames = _frames(50)
    stream = b"".join(frames)
    for size in (1, 3, 17, 64, len(stream)):
        framer = MavlinkFramer()
        got: list[bytes] = []
        for i in range(0, len(stream), size):
            got += framer.feed(stream[i : i + size])
        assert got == frames and framer.skipped_bytes == 0


def test_framer_skips_noise_and_loses_only_a_corrupted_frame() -> None:
    frames = _frames(20)
    noisy = bytearray(
        b"\xfd\x09\x00" + b"".join(frames[:10]) + b"\x00\xfe\xfd garbage " + b"".join(frames[10:])
    )
    hit = len(b"\xfd\x09\x00") + sum(map(len, frames[:4])) + 12  # inside the fifth frame
    noisy[hit] ^= 0x55
    framer = MavlinkFramer()
    got = framer.feed(bytes(noisy))
    assert got == frames[:4] + frames[5:]
    assert framer.skipped_bytes == len(noisy) - sum(map(len, got))


@pytest.mark.skipif(not RECORDED.is_file(), reason="the ArduCopter recording is not on this machine")
def test_framer_recovers_every_frame_of_a_real_tlog_and_our_tlog_reads_back_the_same() -> None:
    raw = RECORDED.read_bytes()
    framer = MavlinkFramer()
    frames = framer.feed(raw)
    # Between frames a tlog holds only the 8-byte timestamps: all of them, and nothing else, skipped.
    assert len(frames) == 4308 and framer.skipped_bytes == 8 * 4308
    theirs = mavutil.mavlink_connection(str(RECORDED))
    n = 0
    while theirs.recv_match() is not None:
        n += 1
    assert n == 4308


def test_writer_output_reads_in_pymavlink_with_its_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "x.tlog"
    t = [1_700_000_000_000_000]

    def clock_us() -> int:
        t[0] += 1000
        return t[0]

    frames = _frames(10, sysid=1) + _frames(5, sysid=7)
    with TlogWriter(path, unix_time_us=clock_us) as w:
        for f in frames[:20]:
            w.record(True, f)
        w.record(False, b"".join(frames[20:]))  # one chunk of several frames: one record each
    assert w.frames_written == 30
    data = path.read_bytes()
    assert len(data) == sum(8 + len(f) for f in frames)
    assert data[:8] == (1_700_000_000_001_000).to_bytes(8, "big")
    log = mavutil.mavlink_connection(str(path))
    msgs = []
    while (m := log.recv_match()) is not None:
        msgs.append(m)
    assert [m.get_srcSystem() for m in msgs] == [1] * 20 + [7] * 10
    assert msgs[0]._timestamp == pytest.approx(1_700_000_000.001)
    assert [m.get_type() for m in msgs[:2]] == ["LOCAL_POSITION_NED", "HEARTBEAT"]


def test_tlog_path_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        LinkError, match=re.escape(f"cannot create the tlog {tmp_path}/no/x.tlog: No such file or directory")
    ):
        TlogWriter(tmp_path / "no" / "x.tlog")


def test_a_failing_disk_stops_the_recording_not_the_link(tmp_path: Path) -> None:
    w = TlogWriter(tmp_path / "x.tlog")
    w._file.close()  # writes now raise ValueError, as a dead disk's raise OSError
    w.record(True, b"".join(_frames(3)))
    assert w.frames_dropped == 6 and w.frames_written == 0 and w.error is not None
    w.record(False, b"".join(_frames(1)))
    assert w.frames_dropped == 8
    w.close()


def test_a_session_over_a_reconnecting_tapped_link_records_both_directions(tmp_path: Path) -> None:
    """What `edge-agent run --tlog` builds: ReconnectingLink(opener = tap(open_link(url)))."""
    clock = FakeClock()
    path = tmp_path / "agent.tlog"
    server = open_link("tcpin://127.0.0.1:0")
    port = server.local_address[1]  # type: ignore[attr-defined]
    writer = TlogWriter(path)
    link = ReconnectingLink(f"tcp://127.0.0.1:{port}", clock=clock, opener=lambda u: writer.tap(open_link(u)))
    session = MavlinkSession(link, clock)
    session.set_healthy(True)
    ap = FakeAutopilot(server, clock=clock)
    try:
        for _ in range(150):
            if clock.now_ns % 1_000_000_000 == 0:
                ap.heartbeat()
            time.sleep(0.0005)
            select.select([server.fileno()], [], [], 0)
            ap.service()
            session.poll(clock())
            clock.advance(0.01)
    finally:
        link.close()
        server.close()
        writer.close()
    log = mavutil.mavlink_connection(str(path))
    by_source: dict[tuple[int, int], set[str]] = {}
    while (m := log.recv_match()) is not None:
        by_source.setdefault((m.get_srcSystem(), m.get_srcComponent()), set()).add(m.get_type())
    assert "HEARTBEAT" in by_source[(1, 1)]  # from the autopilot: received
    assert {"HEARTBEAT", "COMMAND_LONG"} <= by_source[(1, 191)]  # from us: sent
    assert writer.frames_written > 0 and writer.error is None and writer.skipped_bytes == 0


def test_tap_forwards_what_the_session_needs() -> None:
    with PtyLink() as inner:
        w = TlogWriter("/dev/null")
        tap = w.tap(inner)
        assert tap.fileno() == inner.fileno() and tap.url == "pty://" and tap.is_open
        assert tap.source is None and tap.locked_source is None and tap.foreign_datagrams == 0
        tap.close()
        assert not inner.is_open and not tap.is_open
        w.close()
