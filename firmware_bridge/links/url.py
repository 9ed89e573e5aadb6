"""Link URLs: every accepted form (pymavlink/MAVProxy, MAVSDK, MAVROS) parsed into :class:`LinkUrl`,
and :func:`open_link`, which opens what a URL names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from firmware_bridge.errors import LinkUrlError
from firmware_bridge.links.base import DEFAULT_SERIAL_BAUD, DEFAULT_TCP_CONNECT_TIMEOUT_S, Link
from firmware_bridge.links.local import LoopLink, PtyLink, SerialLink
from firmware_bridge.links.net import TcpLink, TcpServerLink, UdpLink


@dataclass(frozen=True, slots=True)
class LinkUrl:
    """A parsed link URL, whatever form it was written in (see :data:`URL_FORMS`)."""

    scheme: str
    """What to open: serial, udpin (listen), udpout (send to), tcp (client), tcpin (server), pty, loop."""
    host: str
    port: int
    path: str
    """The serial device."""
    options: dict[str, str]
    """Query options (``baud``, ``connect_timeout``); a baud written as ``:57600`` lands here too."""


URL_FORMS: tuple[tuple[str, str], ...] = (
    ("serial:///dev/ttyACM0?baud=921600", "serial port (raw 8N1; baud default 115200)"),
    ("serial:///dev/ttyACM0:57600", "serial port, MAVSDK's form"),
    ("/dev/ttyACM0, /dev/ttyUSB0,57600, /dev/ttyUSB0:57600", "serial port, MAVProxy's and MAVROS' forms"),
    ("udpin://HOST:PORT, udpin:HOST:PORT", "UDP listen on HOST:PORT"),
    ("udp://:PORT, udp://HOST:PORT", "UDP listen (MAVSDK's meaning; empty HOST = all interfaces)"),
    ("udp:HOST:PORT", "UDP listen (pymavlink's and MAVProxy's meaning)"),
    ("udpout://HOST:PORT, udpout:HOST:PORT", "UDP send to HOST:PORT"),
    ("tcp://HOST:PORT, tcp:HOST:PORT, tcpout://HOST:PORT", "TCP client (?connect_timeout=S)"),
    ("tcpin://HOST:PORT, tcpin:HOST:PORT", "TCP server, one client at a time"),
    ("pty://", "a fresh pty pair (for tests and the SITL)"),
    ("loop://", "pyserial's in-memory loopback (for tests)"),
)
"""Every accepted form and what it opens; IPv6 hosts go in brackets (``udpin://[::1]:14540``)."""

_ALIASES = {"udp": "udpin", "tcpout": "tcp"}
_NETWORK = ("udpin", "udpout", "tcp", "tcpin")
_LISTENERS = ("udpin", "tcpin")
_OPTIONS = {"serial": ("baud",), "tcp": ("connect_timeout",)}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?(.*)", re.DOTALL)
_HOST_PORT_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z]*)\]|(?P<host>[^:\[\]/]*)):(?P<port>[^:/]*)/?")
_BAUD_SUFFIX_RE = re.compile(r"(?P<dev>/.+?)[:,](?P<baud>[0-9]+)")


def accepted_forms() -> str:
    """The accepted link URL forms in one line, for error messages and ``--help``."""
    return (
        "serial:///dev/DEV?baud=N, serial:///dev/DEV:BAUD, /dev/DEV[,BAUD or :BAUD], "
        "udpin://HOST:PORT or udp://[HOST]:PORT (listen), udpout://HOST:PORT (send to), "
        "tcp://HOST:PORT (client), tcpin://HOST:PORT (server), the pymavlink forms "
        "udpin:/udp:/udpout:/tcp:/tcpin:HOST:PORT, pty://, loop://; IPv6 as [::1]"
    )


def _refuse(url: str, why: str, *, list_forms: bool = False) -> LinkUrlError:
    more = f"; accepted: {accepted_forms()}" if list_forms else ""
    return LinkUrlError(f"link URL {url!r}: {why}{more} (table in docs/bridge.md)")


def _split_device(url: str, text: str, options: dict[str, str]) -> str:
    """``/dev/ttyUSB0,57600`` or ``/dev/ttyUSB0:57600`` → the device, the baud into ``options``."""
    m = _BAUD_SUFFIX_RE.fullmatch(text)
    # A device whose own name ends in ":digits" (some /dev/serial/by-path names) stays whole.
    if m is None or os.path.exists(text):
        return text
    if "baud" in options and options["baud"] != m["baud"]:
        raise _refuse(url, f"two baud rates given ({m['baud']} and baud={options['baud']}); give one")
    options["baud"] = m["baud"]
    return m["dev"]


def parse_link_url(url: str) -> LinkUrl:
    """Parse and validate a link URL in any accepted form without opening anything.

    Raises LinkUrlError naming the fix and listing the accepted forms.
    """
    options: dict[str, str] = {}
    if url.startswith("/"):  # a bare device path, as MAVProxy and MAVROS take it
        return LinkUrl("serial", "", 0, _split_device(url, url, options), options)
    m = _SCHEME_RE.fullmatch(url)
    if m is None:
        raise _refuse(url, "not a link URL or a device path", list_forms=True)
    written, rest = m[1].lower(), m[3]
    scheme = _ALIASES.get(written, written)
    if scheme not in (*_NETWORK, "serial", "pty", "loop"):
        raise _refuse(url, f"unsupported scheme {written!r}", list_forms=True)
    rest, _, query = rest.partition("?")
    try:
        parsed_query = parse_qs(query, strict_parsing=bool(query))
    except ValueError:
        raise _refuse(url, f"malformed options {query!r}; write ?name=value&name=value") from None
    options = {k: v[-1] for k, v in parsed_query.items()}
    allowed = _OPTIONS.get(scheme, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise _refuse(url, f"unknown option {unknown[0]!r} for {scheme} (options it takes: {known})")
    if scheme in ("pty", "loop"):
        if rest:
            raise _refuse(url, f"{scheme}:// takes nothing after the scheme")
        return LinkUrl(scheme, "", 0, "", options)
    if scheme == "serial":
        if not rest.startswith("/"):
            raise _refuse(url, "names no device; write serial:///dev/ttyACM0?baud=921600")
        return LinkUrl("serial", "", 0, _split_device(url, rest, options), options)
    hp = _HOST_PORT_RE.fullmatch(rest)
    if hp is None:
        raise _refuse(url, f"needs a host and a port: {written}://HOST:PORT")
    host = hp["v6"] if hp["v6"] is not None else hp["host"]
    if not hp["port"].isdigit() or not 0 <= int(hp["port"]) <= 65535:
        raise _refuse(url, f"bad port {hp['port']!r}: write a number 0..65535")
    if not host:
        if scheme not in _LISTENERS:
            raise _refuse(url, f"needs a host to {'connect' if scheme == 'tcp' else 'send'} to")
        host = "0.0.0.0"
    return LinkUrl(scheme, host, int(hp["port"]), "", options)


def _float_option(parsed: LinkUrl, url: str, name: str, default: float) -> float:
    raw = parsed.options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise LinkUrlError(f"link URL {url!r}: {name}={raw!r} must be a positive number")
    return value


def open_link(url: str) -> Link:
    """Open the link a URL names (see :data:`URL_FORMS`); raise LinkUrlError or LinkError on failure."""
    parsed = parse_link_url(url)
    if parsed.scheme == "serial":
        baud = _float_option(parsed, url, "baud", DEFAULT_SERIAL_BAUD)
        if baud != int(baud):
            raise LinkUrlError(f"link URL {url!r}: baud must be a whole number, got {baud}")
        return SerialLink(url, parsed.path, int(baud))
    if parsed.scheme in ("udpin", "udpout"):
        return UdpLink(url, parsed.host, parsed.port, listen=parsed.scheme == "udpin")
    if parsed.scheme == "tcp":
        timeout = _float_option(parsed, url, "connect_timeout", DEFAULT_TCP_CONNECT_TIMEOUT_S)
        return TcpLink(url, parsed.host, parsed.port, connect_timeout_s=timeout)
    if parsed.scheme == "tcpin":
        return TcpServerLink(url, parsed.host, parsed.port)
    if parsed.scheme == "pty":
        return PtyLink(url)
    return LoopLink(url)
