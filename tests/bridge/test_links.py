"""Links opened from URLs: real ptys, sockets and pyserial's loop; link loss and reconnection."""

from __future__ import annotations

import itertools
import re
import select
import time

import pytest
from bridge_fakes import FakeClock

from firmware_bridge.errors import LinkDownError, LinkError
from firmware_bridge.links import Link, LinkEventKind, PtyLink, ReconnectingLink, TcpServerLink, open_link


def read_until(link: Link, n: int, timeout_s: float = 2.0, sender: Link | None = None) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        if sender is not None:
            sender.flush()  # what the kernel could not take at write time goes out as room appears
        select.select([link.fileno()], [], [], 0.01)
        out += link.read()
    return out


def test_pty_pair_carries_every_byte_value_both_ways(pty_pair) -> None:
    master, slave = pty_pair
    payload = bytes(range(256)) * 64  # 16 KiB: 0x00, 0x03 (^C), 0x11/0x13 (XON/XOFF), \r, \n all intact
    master.write(payload)
    got = read_until(slave, len(payload), sender=master)
    assert got == payload
    slave.write(b"\r\n\x00\x03")
    assert read_until(master, 4) == b"\r\n\x00\x03"
    assert master.bytes_tx == len(payload) and slave.bytes_rx == len(payload)


def test_closing_the_pty_master_makes_the_peer_read_raise(pty_pair) -> None:
    master, slave = pty_pair
    master.close()
    with pytest.raises(LinkDownError, match=re.escape("peer vanished")):
        for _ in range(100):
            slave.read()
            time.sleep(0.001)
    assert not slave.is_open


def test_loop_link_and_its_select_descriptor() -> None:
    with open_link("loop://") as link:
        assert select.select([link.fileno()], [], [], 0)[0] == []
        link.write(b"x" * 5000)  # more than pyserial's 4096-byte loop queue: the rest waits in our buffer
        assert select.select([link.fileno()], [], [], 0)[0] == [link.fileno()]
        got = link.read()
        assert len(got) == 4096 and link.flush() == 0
        assert link.read() == b"x" * 904
    assert not link.is_open


def test_tcp_client_and_server_and_reset() -> None:
    server = open_link("tcpin://127.0.0.1:0")
    assert isinstance(server, TcpServerLink)
    port = server.local_address[1]
    client = open_link(f"tcp://127.0.0.1:{port}")
    client.write(b"ping")
    assert read_until(server, 4) == b"ping" and server.peer_connected
    server.write(b"pong")
    assert read_until(client, 4) == b"pong"
    server.close()
    with pytest.raises(LinkDownError, match=re.escape(f"tcp://127.0.0.1:{port}: connection lost")):
        read_until(client, 1)


def test_tcp_connect_refused_is_a_link_down_error() -> None:
    server = TcpServerLink("tcpin://127.0.0.1:0", "127.0.0.1", 0)
    port = server.local_address[1]
    server.close()
    with pytest.raises(LinkDownError, match=re.escape("is the autopilot or SITL listening there?")):
        open_link(f"tcp://127.0.0.1:{port}?connect_timeout=0.5")


def test_udp_listen_answers_the_sender_it_hears() -> None:
    with open_link("udpin://127.0.0.1:0") as server:
        port = server.local_address[1]  # type: ignore[attr-defined]
        server.write(b"nobody yet")
        assert server.tx_dropped_bytes == 10
        with open_link(f"udpout://127.0.0.1:{port}") as client:
            client.write(b"hello")
            assert read_until(server, 5) == b"hello"
            assert server.source == ("127.0.0.1", client.local_address[1])  # type: ignore[attr-defined]
            server.write(b"back")
            assert read_until(client, 4) == b"back"


def test_transmit_buffer_is_bounded_when_the_peer_does_not_read() -> None:
    master = PtyLink()
    try:
        for _ in range(400):
            master.write(b"y" * 1024)  # nobody reads the slave: the kernel fills, then our buffer
        assert len(master._tx_pending) <= 65536
        assert master.tx_dropped_bytes > 0
        assert master.bytes_tx + len(master._tx_pending) + master.tx_dropped_bytes == 400 * 1024
    finally:
        master.close()


def test_missing_serial_device_is_a_link_error() -> None:
    with pytest.raises(
        LinkError,
        match=re.escape("serial:///dev/does-not-exist: cannot open /dev/does-not-exist at 115200 baud"),
    ):
        open_link("serial:///dev/does-not-exist")


def test_reconnecting_link_survives_a_server_restart() -> None:
    server = open_link("tcpin://127.0.0.1:0")
    assert isinstance(server, TcpServerLink)
    port = server.local_address[1]
    link = ReconnectingLink(f"tcp://127.0.0.1:{port}", backoff_initial_s=0.02, backoff_max_s=0.5)
    assert [e.kind for e in link.events()] == [LinkEventKind.UP]
    link.write(b"a")
    assert read_until(server, 1) == b"a"
    server.close()
    deadline = time.monotonic() + 2
    while link.connected and time.monotonic() < deadline:
        link.read()
        time.sleep(0.005)
    lost_at = time.monotonic()
    assert [e.kind for e in link.events()] == [LinkEventKind.DOWN]
    link.write(b"dropped while down")
    assert link.tx_dropped_bytes == len(b"dropped while down")
    time.sleep(0.3)  # the peer is away for a while; reconnects back off
    server = open_link(f"tcpin://127.0.0.1:{port}")
    back_at = time.monotonic()
    while not link.connected and time.monotonic() - back_at < 3:
        link.read()
        time.sleep(0.005)
    assert link.connected and time.monotonic() - back_at < 2.0
    assert [e.kind for e in link.events()] == [LinkEventKind.UP]
    link.write(b"b")
    assert read_until(server, 1) == b"b"
    assert link.reconnects == 1 and lost_at < back_at
    link.close()
    server.close()


def test_reconnect_backoff_doubles_up_to_the_cap() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def opener(url: str) -> Link:
        attempts.append(clock())
        raise LinkDownError("refused")

    link = ReconnectingLink(
        "tcp://127.0.0.1:1", clock=clock, opener=opener, backoff_initial_s=0.1, backoff_max_s=0.8
    )
    for _ in range(600):
        link.read()
        clock.advance(0.01)
    gaps = [round((b - a) / 1e9, 2) for a, b in itertools.pairwise(attempts)]
    assert gaps[:6] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    (down,) = link.events()
    assert down.kind is LinkEventKind.DOWN and "refused" in down.reason
