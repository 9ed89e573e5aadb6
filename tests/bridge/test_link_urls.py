"""Every row of the link URL table in docs/bridge.md: what it parses to, and that it opens and carries
bytes (network forms over loopback, IPv4 and IPv6; serial forms over a real pty at the baud given)."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path

import pytest

from firmware_bridge.errors import LinkError, LinkUrlError
from firmware_bridge.links import (
    Link,
    PtyLink,
    SerialLink,
    TcpServerLink,
    UdpLink,
    open_link,
    parse_link_url,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bridge.md"

# form -> (scheme, host, port, device, baud option)
TABLE = {
    "serial:///dev/ttyACM0?baud=921600": ("serial", "", 0, "/dev/ttyACM0", "921600"),
    "serial:///dev/ttyACM0": ("serial", "", 0, "/dev/ttyACM0", None),
    "serial:///dev/ttyACM0:57600": ("serial", "", 0, "/dev/ttyACM0", "57600"),
    "/dev/ttyACM0": ("serial", "", 0, "/dev/ttyACM0", None),
    "/dev/ttyUSB0,57600": ("serial", "", 0, "/dev/ttyUSB0", "57600"),
    "/dev/ttyUSB0:57600": ("serial", "", 0, "/dev/ttyUSB0", "57600"),
    "udpin://0.0.0.0:14540": ("udpin", "0.0.0.0", 14540, "", None),
    "udpin:127.0.0.1:14550": ("udpin", "127.0.0.1", 14550, "", None),
    "udp://:14540": ("udpin", "0.0.0.0", 14540, "", None),
    "udp://127.0.0.1:14540": ("udpin", "127.0.0.1", 14540, "", None),
    "udp:127.0.0.1:14550": ("udpin", "127.0.0.1", 14550, "", None),
    "udpout://127.0.0.1:14540": ("udpout", "127.0.0.1", 14540, "", None),
    "udpout:127.0.0.1:14550": ("udpout", "127.0.0.1", 14550, "", None),
    "tcp://127.0.0.1:5760": ("tcp", "127.0.0.1", 5760, "", None),
    "tcp:127.0.0.1:5760": ("tcp", "127.0.0.1", 5760, "", None),
    "tcpout://127.0.0.1:5760": ("tcp", "127.0.0.1", 5760, "", None),
    "tcpin://0.0.0.0:5760": ("tcpin", "0.0.0.0", 5760, "", None),
    "tcpin:0.0.0.0:5760": ("tcpin", "0.0.0.0", 5760, "", None),
    "udpin://[::1]:14540": ("udpin", "::1", 14540, "", None),
    "udpout://[::1]:14540": ("udpout", "::1", 14540, "", None),
    "tcp://[::1]:5760": ("tcp", "::1", 5760, "", None),
    "pty://": ("pty", "", 0, "", None),
    "loop://": ("loop", "", 0, "", None),
}


@pytest.mark.parametrize("url", sorted(TABLE))
def test_every_form_parses_to_its_meaning(url: str) -> None:
    parsed = parse_link_url(url)
    scheme, host, port, device, baud = TABLE[url]
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path) == (scheme, host, port, device)
    assert parsed.options.get("baud") == baud


def test_the_docs_table_lists_exactly_the_tested_forms() -> None:
    text = DOCS.read_text()
    section = text[text.index("| form | meaning |") : text.index("Writes never block")]
    documented = set(re.findall(r"^\| `([^`]+)`", section, flags=re.MULTILINE))
    assert documented == set(TABLE), documented ^ set(TABLE)


def _read_until(link: Link, n: int, timeout_s: float = 2.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        select.select([link.fileno()], [], [], 0.01)
        out += link.read()
    return out


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("listen", "send"),
    [
        ("udpin://{h}:0", "udpout://{h}:{port}"),
        ("udpin:{h}:0", "udpout:{h}:{port}"),
        ("udp://{h}:0", "udpout://{h}:{port}"),
        ("udp:{h}:0", "udpout:{h}:{port}"),
    ],
)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_udp_forms_carry_datagrams_both_ways(listen: str, send: str, family: str) -> None:
    if family == "ipv6" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    h = "127.0.0.1" if family == "ipv4" else "[::1]"
    with open_link(listen.format(h=h)) as server:
        assert isinstance(server, UdpLink)
        port = server.local_address[1]
        with open_link(send.format(h=h, port=port)) as client:
            client.write(b"ping")
            assert _read_until(server, 4) == b"ping"
            server.write(b"pong")
            assert _read_until(client, 4) == b"pong"


@pytest.mark.parametrize("server_form", ["tcpin://{h}:0", "tcpin:{h}:0"])
@pytest.mark.parametrize("client_form", ["tcp://{h}:{port}", "tcp:{h}:{port}", "tcpout://{h}:{port}"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_forms_connect_and_carry_bytes(server_form: str, client_form: str, family: str) -> None:
    if family == "ipv6" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    h = "127.0.0.1" if family == "ipv4" else "[::1]"
    with open_link(server_form.format(h=h)) as server:
        assert isinstance(server, TcpServerLink)
        with open_link(client_form.format(h=h, port=server.local_address[1])) as client:
            client.write(b"ping")
            assert _read_until(server, 4) == b"ping"


@pytest.mark.parametrize(
    ("form", "baud"),
    [
        ("serial://{dev}?baud=921600", 921600),
        ("serial://{dev}:57600", 57600),
        ("serial://{dev}", 115200),
        ("{dev}", 115200),
        ("{dev},57600", 57600),
        ("{dev}:230400", 230400),
    ],
)
def test_serial_forms_open_the_device_at_the_baud_given(form: str, baud: int) -> None:
    with PtyLink() as master:
        link = open_link(form.format(dev=master.device_path))
        with link:
            assert isinstance(link, SerialLink)
            assert link._serial.port == master.device_path and link._serial.baudrate == baud
            master.write(b"\x00\xfd\x03")
            assert _read_until(link, 3) == b"\x00\xfd\x03"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ttyACM0",
            "link URL 'ttyACM0': not a link URL or a device path; accepted: serial:///dev/DEV?baud=N",
        ),
        ("mavlink://x:1", "link URL 'mavlink://x:1': unsupported scheme 'mavlink'; accepted: serial:///"),
        ("udpbcast:1.2.3.255:14550", "unsupported scheme 'udpbcast'; accepted:"),
        ("udp://127.0.0.1", "link URL 'udp://127.0.0.1': needs a host and a port: udp://HOST:PORT"),
        ("udpout://:14540", "link URL 'udpout://:14540': needs a host to send to"),
        ("tcp://:5760", "link URL 'tcp://:5760': needs a host to connect to"),
        ("tcp://h:99999", "link URL 'tcp://h:99999': bad port '99999': write a number 0..65535"),
        ("serial://", "link URL 'serial://': names no device; write serial:///dev/ttyACM0?baud=921600"),
        (
            "serial:///dev/ttyACM0:57600?baud=921600",
            "two baud rates given (57600 and baud=921600); give one",
        ),
        (
            "serial:///dev/null?baud=fast",
            "link URL 'serial:///dev/null?baud=fast': baud='fast' must be a positive number",
        ),
        ("udpin://0.0.0.0:14540?baud=57600", "unknown option 'baud' for udpin (options it takes: none)"),
        ("tcp://h:1?timeout=2", "unknown option 'timeout' for tcp (options it takes: connect_timeout)"),
        ("pty://x", "link URL 'pty://x': pty:// takes nothing after the scheme"),
    ],
)
def test_bad_urls_name_the_fix(url: str, message: str) -> None:
    with pytest.raises(LinkUrlError, match=re.escape(message)):
        open_link(url)


def test_a_device_whose_name_ends_in_digits_is_kept_whole(tmp_path: Path) -> None:
    odd = tmp_path / "usb-0:2"  # /dev/serial/by-path names can end like this
    odd.touch()
    assert parse_link_url(str(odd)).path == str(odd)
    assert parse_link_url(f"serial://{odd}").path == str(odd)


def test_a_second_listener_on_a_udp_port_is_refused_naming_the_holder() -> None:
    with open_link("udpin://127.0.0.1:0") as first:
        assert isinstance(first, UdpLink)
        port = first.local_address[1]
        for url in (f"udpin://127.0.0.1:{port}", f"udp://:{port}", f"udp:127.0.0.1:{port}"):
            with pytest.raises(LinkError) as err:
                open_link(url)
            text = str(err.value)
            assert text.startswith(f"{url}: UDP port {port} on ")
            assert "is already in use: pid " in text  # this very process holds it
            assert f"use udpout://127.0.0.1:{port}" in text


def test_a_second_tcp_server_on_a_port_is_refused() -> None:
    with open_link("tcpin://127.0.0.1:0") as first:
        assert isinstance(first, TcpServerLink)
        port = first.local_address[1]
        with pytest.raises(LinkError, match=re.escape(f"TCP port {port} on 127.0.0.1 is already in use")):
            open_link(f"tcpin://127.0.0.1:{port}")
