"""A link that reopens itself: exponential backoff, link-up / link-down events (``ReconnectingLink``)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from firmware_bridge.errors import LinkDownError, LinkError, LinkUrlError
from firmware_bridge.links.base import DEFAULT_READ_BYTES, Link
from firmware_bridge.links.url import open_link, parse_link_url


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
