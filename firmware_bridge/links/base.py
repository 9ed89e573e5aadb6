"""The link contract every transport implements, and the parts file-descriptor links share.

:class:`Link` is what the session, the tlog tap and the loop use; read/write never block, a
vanished peer is :class:`~firmware_bridge.errors.LinkDownError`. The package's ``__init__``
documents the URL forms.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from types import TracebackType

from firmware_bridge.errors import LinkDownError, LinkError

DEFAULT_READ_BYTES = 65536
"""Default ``max_bytes`` of one ``read``: large chunks keep the per-byte cost of the parser low."""
DEFAULT_TX_BUFFER_BYTES = 65536
"""Bytes a link keeps when the OS cannot take them yet; beyond this, writes are dropped and counted."""
DEFAULT_SERIAL_BAUD = 115200
"""Baud rate of a ``serial://`` URL without ``?baud=``."""
DEFAULT_TCP_CONNECT_TIMEOUT_S = 2.0
"""How long ``tcp://`` waits for the connection at open."""

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


class FdLink(Link):
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
