"""Byte links opened from URLs: serial, UDP, TCP, pty pairs and pyserial's loop.

Every link is non-blocking: ``read`` returns what is waiting (``b""`` when nothing is) in one
large chunk, ``write`` hands bytes to the OS and keeps what the OS cannot take yet in a bounded
transmit buffer (overflow is dropped and counted, never blocks the control loop). A peer that
vanishes (pty master closed, TCP reset or close, serial unplugged) raises
:class:`~firmware_bridge.errors.LinkDownError` from ``read``/``write``; :class:`ReconnectingLink`
turns that into link-down/link-up events and reconnects with exponential backoff.

URLs (the pymavlink/MAVProxy, MAVSDK and MAVROS forms are accepted too; :data:`URL_FORMS` and
docs/bridge.md list them all)::

    serial:///dev/ttyACM0?baud=921600   pyserial, raw 8N1 (baud defaults to 115200);
                                         also serial:///dev/ttyACM0:57600, /dev/ttyUSB0,57600
    udpin://0.0.0.0:14540                listen; locks onto the autopilot first heard
    udp://:14540, udp:HOST:PORT          listen too (MAVSDK's and pymavlink's meaning)
    udpout://127.0.0.1:14540             send to; also receives whatever comes back
    tcp://127.0.0.1:5760?connect_timeout=2   client
    tcpin://0.0.0.0:5760                 server, one client at a time
    pty://                               a fresh pty pair; the master is the link,
                                         ``.device_path`` is the slave a peer opens
    loop://                              pyserial's in-memory loopback

IPv6 hosts go in brackets: ``udpin://[::1]:14540``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import termios
import time
import tty
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import serial

from firmware_bridge.errors import LinkDownError, LinkError, LinkUrlError

if TYPE_CHECKING:
    import socket  # imported where a network link is opened: a serial flight does not need it

DEFAULT_READ_BYTES = 65536
"""Default ``max_bytes`` of one ``read``: large chunks keep the per-byte cost of the parser low."""
DEFAULT_TX_BUFFER_BYTES = 65536
"""Bytes a link keeps when the OS cannot take them yet; beyond this, writes are dropped and counted."""
DEFAULT_SERIAL_BAUD = 115200
"""Baud rate of a ``serial://`` URL without ``?baud=``."""
DEFAULT_TCP_CONNECT_TIMEOUT_S = 2.0
"""How long ``tcp://`` waits for the connection at open."""

_UDP_MAX_DATAGRAM = 65535
_PEER_GONE_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.EPIPE})


class Link(ABC):
    """A non-blocking byte pipe opened from a URL; a context manager that closes it."""

    url: str
    """The URL the link was opened from."""

    def __init__(self, url: str, tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES) -> None:
        if tx_buffer_bytes < 0:
            raise LinkError(f"tx_buffer_bytes must be >= 0, got {tx_buffer_bytes}")
        self.url = url
        self._tx_limit = tx_buffer_bytes
        self._tx_pending = bytearray()
        self._open = True
        self.bytes_rx = 0
        """Bytes returned by ``read`` so far."""
        self.bytes_tx = 0
        """Bytes accepted by the OS so far."""
        self.tx_dropped_bytes = 0
        """Bytes dropped because the transmit buffer was full or there was no peer to send to."""

    @property
    def is_open(self) -> bool:
        """True until ``close`` (or a failure that closed the link)."""
        return self._open

    # A link with one peer (serial, TCP, pty) has nothing to lock onto; a UDP listener has.
    foreign_datagrams: int = 0
    """Datagrams dropped because another sender than the locked one sent them (UDP listeners)."""

    @property
    def source(self) -> tuple[str, int] | None:
        """Who sent the bytes the last ``read`` returned; None where the link has only one peer."""
        return None

    @property
    def locked_source(self) -> tuple[str, int] | None:
        """The only sender accepted from now on (see :meth:`lock_source`); None if not locked."""
        return None

    def lock_source(self, address: tuple[str, int] | None) -> None:
        """Accept bytes from ``address`` only and send only there (None: unlock); a no-op on one-peer links."""
        return None

    def read(self, max_bytes: int = DEFAULT_READ_BYTES) -> bytes:
        """Return up to ``max_bytes`` waiting bytes, ``b""`` if none; raise LinkDownError if the peer vanished."""
        if not self._open:
            raise LinkDownError(f"{self.url}: read on a closed link; open it again")
        if self._tx_pending:
            self._flush()
        data = self._read_raw(max_bytes)
        self.bytes_rx += len(data)
        return data

    def write(self, data: bytes) -> None:
        """Send ``data``; what the OS cannot take now is buffered (bounded) and sent on later calls."""
        if not self._open:
            raise LinkDownError(f"{self.url}: write on a closed link; open it again")
        if self._tx_pending:
            self._flush()
        if self._tx_pending:
            self._queue(data)
            return
        sent = self._send(data)
        self.bytes_tx += sent
        if sent < len(data):
            self._queue(data[sent:])

    def flush(self) -> int:
        """Try to send buffered bytes now; return how many are still waiting."""
        if self._open and self._tx_pending:
            self._flush()
        return len(self._tx_pending)

    def close(self) -> None:
        """Release the OS resources; idempotent."""
        if self._open:
            self._open = False
            self._tx_pending.clear()
            self._close_raw()

    @abstractmethod
    def fileno(self) -> int:
        """A file descriptor that becomes readable when ``read`` has something (for select/poll)."""

    def __enter__(self) -> Link:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, open={self._open})"

    # -- for subclasses ------------------------------------------------------------------------

    @abstractmethod
    def _read_raw(self, max_bytes: int) -> bytes: ...

    @abstractmethod
    def _send(self, data: bytes | bytearray | memoryview) -> int:
        """Hand bytes to the OS without blocking; return how many it took (0 if it would block)."""

    @abstractmethod
    def _close_raw(self) -> None: ...

    def _queue(self, rest: bytes | bytearray | memoryview) -> None:
        # Dropping the whole remainder (not a prefix) keeps at most one torn frame on the wire;
        # the peer's parser resynchronises on the next frame start.
        if len(self._tx_pending) + len(rest) > self._tx_limit:
            self.tx_dropped_bytes += len(rest)
        else:
            self._tx_pending += rest

    def _flush(self) -> None:
        sent = self._send(memoryview(self._tx_pending))
        self.bytes_tx += sent
        del self._tx_pending[:sent]


class _FdLink(Link):
    """A link over one non-blocking file descriptor (pty master, serial tty)."""

    _fd: int

    def fileno(self) -> int:
        """The tty file descriptor."""
        return self._fd

    def _read_raw(self, max_bytes: int) -> bytes:
        try:
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._down(exc) from exc
        if not data:
            raise self._down(None)
        return data

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._down(exc) from exc

    def _down(self, exc: OSError | None) -> LinkDownError:
        why = "end of file" if exc is None else (exc.strerror or str(exc))
        self.close()
        return LinkDownError(f"{self.url}: peer vanished ({why}); reconnect or use ReconnectingLink")


class PtyLink(_FdLink):
    """The master side of a fresh pty pair in raw mode; a peer opens ``device_path`` as ``serial://``."""

    device_path: str
    """The slave device (``/dev/pts/N``) a peer opens."""

    def __init__(self, url: str = "pty://", tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES) -> None:
        super().__init__(url, tx_buffer_bytes)
        master, slave = os.openpty()
        # Raw on both ends: no echo, no CR/LF translation, no ^C/^S interpretation of binary frames.
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fd = master
        # We keep our own slave descriptor open so that reads on the master do not fail with EIO
        # before the peer has opened the device or between its reconnects.
        self._slave_fd = slave
        self.device_path = os.ttyname(slave)

    def close_peer_side(self) -> None:
        """Close our hold on the slave: from now on the master sees EIO once the peer closes too."""
        if self._slave_fd >= 0:
            os.close(self._slave_fd)
            self._slave_fd = -1

    def _close_raw(self) -> None:
        os.close(self._fd)
        self.close_peer_side()

    def __repr__(self) -> str:
        return f"PtyLink(device_path={self.device_path!r}, open={self._open})"


class SerialLink(_FdLink):
    """A serial device (or pty slave) opened with pyserial, read and written through its descriptor."""

    def __init__(
        self, url: str, port: str, baud: int, tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES
    ) -> None:
        super().__init__(url, tx_buffer_bytes)
        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._open = False
            raise LinkError(f"{url}: cannot open {port} at {baud} baud: {exc}") from exc
        # pyserial configures the port (raw 8N1, baud); the hot path uses the descriptor directly:
        # one syscall per chunk, and pyserial's own non-blocking write spins on EAGAIN.
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        # pyserial sets VMIN=0 for timeout=0, where "no data" and "hung up" both read as b"".
        # With VMIN=1 an empty non-blocking read is EAGAIN, so b"" (or EIO) really means gone.
        attrs = termios.tcgetattr(self._fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    def _close_raw(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self._serial.close()


class LoopLink(Link):
    """pyserial's in-memory ``loop://``: what is written is read back. For tests."""

    def __init__(self, url: str = "loop://", tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES) -> None:
        super().__init__(url, tx_buffer_bytes)
        # write_timeout=None: pyserial's loop refuses any write "slower" than a zero timeout at its
        # baud; we never block anyway because _send only writes what fits in the queue.
        self._serial = serial.serial_for_url(url, timeout=0, write_timeout=None)
        # loop:// has no descriptor; a self-pipe gives select() one that is readable while data waits.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def fileno(self) -> int:
        """A pipe that is readable while loopback data waits."""
        return self._wake_r

    def _read_raw(self, max_bytes: int) -> bytes:
        waiting = self._serial.in_waiting
        data = bytes(self._serial.read(min(waiting, max_bytes))) if waiting else b""
        if self._serial.in_waiting == 0:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        return data

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        room = self._serial.buffer_size - self._serial.in_waiting
        n = min(room, len(data))
        if n <= 0:
            return 0
        self._serial.write(bytes(data[:n]))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\x01")
        return n

    def _close_raw(self) -> None:
        self._serial.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class UdpLink(Link):
    """UDP: a listener (``udpin``) answers the sender it locked onto; ``udpout`` sends to a fixed address.

    One ``write`` is one datagram; a datagram that cannot be sent now is dropped and counted
    (UDP has no stream to keep in order, and stale setpoints are worse than none).

    A listener hears anyone who sends to its port. Until :meth:`lock_source` is called (the
    session calls it when the autopilot's first HEARTBEAT arrives) one ``read`` returns bytes
    of one sender only, named by :attr:`source`, and replies go to the last sender heard. Once
    locked, datagrams from any other address are dropped and counted
    (:attr:`foreign_datagrams`, :attr:`foreign_senders`) and replies go to the locked address
    only: a second program on the port neither receives our setpoints nor feeds us telemetry.

    The listening socket is bound without SO_REUSEADDR, so a second process cannot bind the
    same address (Linux lets two UDP sockets share a port with it, and delivers each datagram
    to one of them): it gets :class:`~firmware_bridge.errors.LinkError` naming the holder.
    """

    def __init__(self, url: str, host: str, port: int, listen: bool) -> None:
        super().__init__(url, 0)
        import socket

        family, address = _resolve(url, host, port, socket.SOCK_DGRAM, passive=listen)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if listen:
                self._sock.bind(address)
                self._peer: tuple[str, int] | None = None
            else:
                self._sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
                self._peer = (str(address[0]), int(address[1]))
        except OSError as exc:
            self._sock.close()
            self._open = False
            if exc.errno == errno.EADDRINUSE:
                raise LinkError(_in_use_message(url, "udp", host, port)) from exc
            raise LinkError(f"{url}: cannot open UDP socket: {exc}") from exc
        self._sock.setblocking(False)
        self._listen = listen
        self._held: tuple[tuple[str, int], bytes] | None = None
        self._source: tuple[str, int] | None = None
        self._locked: tuple[str, int] | None = None
        self.foreign_datagrams = 0
        """Datagrams dropped because they came from another sender than the locked one."""
        self.foreign_bytes = 0
        """Bytes in those datagrams."""
        self._foreign: dict[tuple[str, int], int] = {}

    @property
    def peer(self) -> tuple[str, int] | None:
        """Where writes go: the fixed target (udpout), else the locked or last sender; None if none yet."""
        return self._peer

    @property
    def source(self) -> tuple[str, int] | None:
        """The sender of the bytes the last non-empty ``read`` returned (listeners only)."""
        return self._source

    @property
    def locked_source(self) -> tuple[str, int] | None:
        """The only sender accepted, once :meth:`lock_source` was called."""
        return self._locked

    @property
    def foreign_senders(self) -> dict[str, int]:
        """Datagrams dropped per other sender (``"host:port"``; the first 16 senders)."""
        return {_addr_text(a): n for a, n in self._foreign.items()}

    def lock_source(self, address: tuple[str, int] | None) -> None:
        """Accept datagrams from ``address`` only, and send only there (a listener; no-op for udpout).

        None unlocks: the next sender heard is the peer again (until the next lock)."""
        if not self._listen:
            return
        if address is None:
            self._locked = None
            return
        self._locked = self._peer = (str(address[0]), int(address[1]))
        if self._held is not None and self._held[0] != self._locked:
            self._drop_foreign(*self._held)
            self._held = None

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port); useful with port 0."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        """The UDP socket."""
        return self._sock.fileno()

    def _drop_foreign(self, addr: tuple[str, int], datagram: bytes) -> None:
        self.foreign_datagrams += 1
        self.foreign_bytes += len(datagram)
        if addr in self._foreign or len(self._foreign) < 16:
            self._foreign[addr] = self._foreign.get(addr, 0) + 1

    def _read_raw(self, max_bytes: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        src: tuple[str, int] | None = None
        if self._held is not None:
            src, datagram = self._held
            self._held = None
            if len(datagram) > max_bytes:
                self._held = (src, datagram[max_bytes:])
                datagram = datagram[:max_bytes]
            chunks.append(datagram)
            total = len(datagram)
        while total < max_bytes and self._held is None:
            try:
                datagram, raw_addr = self._sock.recvfrom(_UDP_MAX_DATAGRAM)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                # An ICMP port-unreachable for an earlier send: nobody listens yet; not fatal for UDP.
                continue
            if not self._listen:
                chunks.append(datagram)
                total += len(datagram)
                continue
            addr = (str(raw_addr[0]), int(raw_addr[1]))
            if self._locked is not None and addr != self._locked:
                self._drop_foreign(addr, datagram)
                continue
            if src is None:
                src = addr
            if addr != src or total + len(datagram) > max_bytes:
                # One read, one sender: the session must know whose bytes it parses.
                self._held = (addr, datagram)
                break
            chunks.append(datagram)
            total += len(datagram)
        if src is not None:
            self._source = src
            if self._locked is None:
                self._peer = src
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Send ``data`` as one datagram; dropped and counted when there is no peer yet or no room."""
        if not self._open:
            raise LinkDownError(f"{self.url}: write on a closed link; open it again")
        self.bytes_tx += self._send(data)

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        if self._peer is None:
            self.tx_dropped_bytes += len(data)
            return 0
        try:
            return self._sock.sendto(data, self._peer)
        except (BlockingIOError, ConnectionRefusedError):
            self.tx_dropped_bytes += len(data)
            return 0

    def _close_raw(self) -> None:
        self._sock.close()


class TcpLink(Link):
    """A TCP client; the server closing or resetting the connection raises LinkDownError."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        connect_timeout_s: float = DEFAULT_TCP_CONNECT_TIMEOUT_S,
        tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES,
    ) -> None:
        super().__init__(url, tx_buffer_bytes)
        import socket

        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        except OSError as exc:
            self._open = False
            raise LinkDownError(
                f"{url}: cannot connect to {host}:{port} ({exc}); is the autopilot or SITL listening there?"
            ) from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        """The connected socket."""
        return self._sock.fileno()

    def _read_raw(self, max_bytes: int) -> bytes:
        try:
            data = self._sock.recv(max_bytes)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._down(exc.strerror or str(exc)) from exc
        if not data:
            raise self._down("closed by the peer")
        return data

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._down(exc.strerror or str(exc)) from exc

    def _down(self, why: str) -> LinkDownError:
        self.close()
        return LinkDownError(f"{self.url}: connection lost ({why}); reconnect or use ReconnectingLink")

    def _close_raw(self) -> None:
        self._sock.close()


class TcpServerLink(Link):
    """A TCP server serving one client at a time; the link stays open while clients come and go.

    A client leaving is not an error here (the server keeps listening); ``peer_connected`` says
    whether one is attached. Writes with no client attached are dropped and counted.
    """

    def __init__(
        self, url: str, host: str, port: int, tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES
    ) -> None:
        super().__init__(url, tx_buffer_bytes)
        import socket

        family, address = _resolve(url, host, port, socket.SOCK_STREAM, passive=True)
        self._server = socket.socket(family, socket.SOCK_STREAM)
        try:
            # For TCP, SO_REUSEADDR only lets a restarted server take the port past TIME_WAIT;
            # Linux still refuses a second listener on the same address.
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._server.bind(address)
            self._server.listen(1)
        except OSError as exc:
            self._server.close()
            self._open = False
            if exc.errno == errno.EADDRINUSE:
                raise LinkError(_in_use_message(url, "tcp", host, port)) from exc
            raise LinkError(f"{url}: cannot listen on {host}:{port}: {exc}") from exc
        self._server.setblocking(False)
        self._client: socket.socket | None = None
        self.connections = 0
        """Clients accepted so far."""

    @property
    def peer_connected(self) -> bool:
        """Whether a client is attached now."""
        return self._client is not None

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port); useful with port 0."""
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        """The client socket while one is attached, else the listening socket (readable on connect)."""
        return self._client.fileno() if self._client is not None else self._server.fileno()

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
        except BlockingIOError:
            return
        import socket

        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        self._client = client
        self.connections += 1

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._tx_pending.clear()

    def _read_raw(self, max_bytes: int) -> bytes:
        if self._client is None:
            self._accept()
            if self._client is None:
                return b""
        try:
            data = self._client.recv(max_bytes)
        except BlockingIOError:
            return b""
        except OSError:
            self._drop_client()
            return b""
        if not data:
            self._drop_client()
        return data

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        if self._client is None:
            self._accept()
        if self._client is None:
            self.tx_dropped_bytes += len(data)
            # Report everything as taken: with no client there is nothing to keep it for.
            return len(data)
        try:
            return self._client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._drop_client()
            self.tx_dropped_bytes += len(data)
            return len(data)

    def _close_raw(self) -> None:
        self._drop_client()
        self._server.close()


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


def _resolve(url: str, host: str, port: int, socktype: int, *, passive: bool) -> tuple[int, tuple[str, int]]:
    """(address family, socket address) for ``host`` (IPv4, IPv6 or a name) and ``port``."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socktype, flags=socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as exc:
        raise LinkError(f"{url}: cannot resolve host {host!r} ({exc.strerror}); check the address") from exc
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def _addr_text(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_holder(proto: str, port: int) -> str | None:
    """Which local process has ``proto`` ("udp"/"tcp") port ``port`` open: "pid N (command)", or None.

    Best effort from /proc (Linux; processes of other users stay unnamed).
    """
    inodes: set[str] = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (OSError, ValueError, IndexError):
            continue
    targets = {f"socket:[{i}]" for i in inodes if i != "0"}
    if not targets:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {pid} ({cmd[:120]})"
        except OSError:
            continue
    return None


def _in_use_message(url: str, proto: str, host: str, port: int) -> str:
    holder = port_holder(proto, port)
    who = f"{holder} holds it" if holder else "another program holds it"
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return (
        f"{url}: {proto.upper()} port {port} on {host} is already in use: {who}. Two programs on one "
        f"address would split the traffic (the agent loses control, another vehicle's telemetry lands in "
        f"its log): stop that program or choose another port. To talk to the program listening there, "
        f"use {'udpout' if proto == 'udp' else 'tcp'}://{_addr_text((reach, port))}"
    )


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


# ---------------------------------------------------------------------------------------------
# Reconnection


class LinkEventKind(Enum):
    """What happened to a reconnecting link."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A link-up or link-down event, stamped with the injected clock."""

    kind: LinkEventKind
    stamp_ns: int
    url: str
    reason: str


class ReconnectingLink(Link):
    """Wraps ``open_link(url)``: a lost link is reopened with exponential backoff; events are queued.

    ``read``/``write`` never raise LinkDownError: while disconnected, reads return ``b""`` and
    writes are dropped and counted. Reconnect attempts happen inside ``read``/``write`` calls
    once the backoff delay has passed, so a single-threaded loop drives it by reading each tick.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        opener: Callable[[str], Link] = open_link,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 1.0,
        max_events: int = 64,
    ) -> None:
        super().__init__(url, 0)
        parse_link_url(url)  # a malformed URL is a start-up error, not something to retry
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise LinkError(
                f"backoff must satisfy 0 < backoff_initial_s <= backoff_max_s, got {backoff_initial_s}, {backoff_max_s}"
            )
        self._clock = clock
        self._opener = opener
        self._backoff_initial_ns = int(backoff_initial_s * 1e9)
        self._backoff_max_ns = int(backoff_max_s * 1e9)
        self._failures = 0
        self._next_attempt_ns = clock()
        self._events: deque[LinkEvent] = deque(maxlen=max_events)
        self._inner: Link | None = None
        self.reconnects = 0
        """Successful opens after the first."""
        self._ever_up = False
        self._locked: tuple[str, int] | None = None
        self._foreign_before = 0
        self._try_open()

    @property
    def connected(self) -> bool:
        """Whether an underlying link is open now."""
        return self._inner is not None

    @property
    def source(self) -> tuple[str, int] | None:
        """The underlying link's :attr:`Link.source`."""
        return self._inner.source if self._inner is not None else None

    @property
    def locked_source(self) -> tuple[str, int] | None:
        """The sender locked onto; kept across reopenings (a reopened listener is locked again)."""
        return self._locked

    def lock_source(self, address: tuple[str, int] | None) -> None:
        """Lock the underlying link onto ``address`` (None: unlock), now and after every reopening."""
        self._locked = address
        if self._inner is not None:
            self._inner.lock_source(address)

    @property
    def foreign_datagrams(self) -> int:  # type: ignore[override]
        """Datagrams from other senders dropped, over every underlying link opened so far."""
        return self._foreign_before + (self._inner.foreign_datagrams if self._inner is not None else 0)

    @property
    def inner(self) -> Link | None:
        """The underlying link while connected."""
        return self._inner

    def events(self) -> list[LinkEvent]:
        """Drain and return the queued link events, oldest first (the queue keeps the last 64)."""
        if not self._events:  # the loop asks every tick
            return []
        out = list(self._events)
        self._events.clear()
        return out

    def fileno(self) -> int:
        """The underlying link's descriptor; raises LinkDownError while disconnected."""
        if self._inner is None:
            raise LinkDownError(f"{self.url}: not connected (reconnecting); no descriptor to wait on")
        return self._inner.fileno()

    def read(self, max_bytes: int = DEFAULT_READ_BYTES) -> bytes:
        """Read from the underlying link; ``b""`` while disconnected (a reconnect may be tried)."""
        if not self._open:
            raise LinkDownError(f"{self.url}: read on a closed link; open it again")
        self._maybe_reconnect()
        if self._inner is None:
            return b""
        try:
            data = self._inner.read(max_bytes)
        except LinkDownError as exc:
            self._lost(str(exc))
            return b""
        self.bytes_rx += len(data)
        return data

    def write(self, data: bytes) -> None:
        """Write to the underlying link; dropped and counted while disconnected."""
        if not self._open:
            raise LinkDownError(f"{self.url}: write on a closed link; open it again")
        self._maybe_reconnect()
        if self._inner is None:
            self.tx_dropped_bytes += len(data)
            return
        try:
            self._inner.write(data)
        except LinkDownError as exc:
            self._lost(str(exc))
            self.tx_dropped_bytes += len(data)
            return
        self.bytes_tx += len(data)

    def _maybe_reconnect(self) -> None:
        if self._inner is None and self._clock() >= self._next_attempt_ns:
            self._try_open()

    def _try_open(self) -> None:
        now = self._clock()
        try:
            self._inner = self._opener(self.url)
        except LinkUrlError:
            raise
        except LinkError as exc:
            delay = min(self._backoff_initial_ns << min(self._failures, 30), self._backoff_max_ns)
            self._failures += 1
            self._next_attempt_ns = now + delay
            if self._failures == 1 and not self._ever_up:
                self._events.append(LinkEvent(LinkEventKind.DOWN, now, self.url, str(exc)))
            return
        self._failures = 0
        if self._locked is not None:
            self._inner.lock_source(self._locked)
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = True
        self._events.append(LinkEvent(LinkEventKind.UP, now, self.url, "connected"))

    def _lost(self, reason: str) -> None:
        now = self._clock()
        if self._inner is not None:
            self._foreign_before += self._inner.foreign_datagrams
            self._inner.close()
        self._inner = None
        self._failures = 0
        self._next_attempt_ns = now + self._backoff_initial_ns
        self._events.append(LinkEvent(LinkEventKind.DOWN, now, self.url, reason))

    def _read_raw(self, max_bytes: int) -> bytes:  # pragma: no cover - read() is overridden
        return b""

    def _send(self, data: bytes | bytearray | memoryview) -> int:  # pragma: no cover - write() is overridden
        return len(data)

    def _close_raw(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
