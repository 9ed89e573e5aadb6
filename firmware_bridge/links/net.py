"""Network links: UDP (listen and lock on, or send to) and TCP (client, one-client server).

``socket`` is imported where a network link opens, so a serial flight never loads it.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from firmware_bridge.errors import LinkDownError, LinkError
from firmware_bridge.links.base import DEFAULT_TCP_CONNECT_TIMEOUT_S, DEFAULT_TX_BUFFER_BYTES, Link

if TYPE_CHECKING:
    import socket  # imported where a network link is opened: a serial flight does not need it

_UDP_MAX_DATAGRAM = 65535


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
