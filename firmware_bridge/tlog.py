"""Record a MAVLink link as a telemetry log (``.tlog``), both directions, with a tap around the link.

The tlog format is MAVProxy's and QGroundControl's: one record per MAVLink frame, an 8-byte
big-endian UNIX time in microseconds followed by the raw frame (MAVLink 1 or 2, signature
included). ``pymavlink.mavutil.mavlink_connection("flight.tlog")``, ``mavlogdump.py`` and
MAVExplorer read it; the recordings in ``../shared/data/ardupilot/*.tlog`` are the same format.

A link hands over chunks, not frames, so each direction has its own :class:`MavlinkFramer` that
cuts the byte stream into CRC-checked frames (bytes between frames, line noise, are skipped and
counted). ``edge-agent run --tlog`` wraps every (re)opened link with :meth:`TlogWriter.tap`;
``edge-agent sitl --tlog`` wraps its one link, so both record the same way.

Recording must never take the vehicle down: a full or failing disk stops the recording (counted
in :attr:`TlogWriter.frames_dropped`, the first error kept in :attr:`TlogWriter.error`), the link
goes on.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

from pymavlink.dialects.v20 import ardupilotmega as dialect

from firmware_bridge.errors import LinkError
from firmware_bridge.links import DEFAULT_READ_BYTES, Link
from firmware_bridge.mavlink_codec import IFLAG_SIGNED, MARKER_V1, MARKER_V2, SIGNATURE_LEN, crc_mcrf4xx

_STAMP = struct.Struct(">Q")
_CRC_EXTRA: dict[int, int] = {msgid: int(cls.crc_extra) for msgid, cls in dialect.mavlink_map.items()}
_MARKERS = (MARKER_V1, MARKER_V2)


class MavlinkFramer:
    """Cuts a MAVLink byte stream into whole, CRC-checked frames (sans-IO; ``feed`` never raises).

    A candidate that fails its CRC, or whose message id the dialect does not know, is noise: the
    search goes on from the next byte (as :class:`~firmware_bridge.mavlink_codec.MavlinkParser`
    does). Between calls it keeps at most one incomplete frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        """Frames returned so far."""
        self.skipped_bytes = 0
        """Bytes that were not part of a valid frame."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return the frames completed by them, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        i, n = 0, len(buf)
        while i < n:
            if buf[i] not in _MARKERS:
                j = _next_marker(buf, i + 1)
                self.skipped_bytes += j - i
                i = j
                continue
            if buf[i] == MARKER_V2:
                if n - i < 10:
                    break
                plen = buf[i + 1]
                size = 12 + plen + (SIGNATURE_LEN if buf[i + 2] & IFLAG_SIGNED else 0)
                msgid = buf[i + 7] | (buf[i + 8] << 8) | (buf[i + 9] << 16)
                body_end = i + 10 + plen
            else:
                if n - i < 6:
                    break
                plen = buf[i + 1]
                size = 8 + plen
                msgid = buf[i + 5]
                body_end = i + 6 + plen
            if n - i < size:
                break
            extra = _CRC_EXTRA.get(msgid)
            crc = buf[body_end] | (buf[body_end + 1] << 8)
            if extra is None or crc_mcrf4xx(bytes(buf[i + 1 : body_end]), extra) != crc:
                self.skipped_bytes += 1
                i += 1
                continue
            out.append(bytes(buf[i : i + size]))
            i += size
        del buf[:i]
        self.frames += len(out)
        return out


def _next_marker(buf: bytearray, start: int) -> int:
    a, b = buf.find(MARKER_V2, start), buf.find(MARKER_V1, start)
    if a < 0:
        return len(buf) if b < 0 else b
    return a if b < 0 else min(a, b)


class TlogWriter:
    """Appends timestamped MAVLink frames of both directions to one tlog file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        unix_time_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        flush_interval_s: float = 0.5,
    ) -> None:
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "wb", buffering=1 << 16)  # noqa: SIM115 - lives as long as the flight
        except OSError as exc:
            raise LinkError(
                f"cannot create the tlog {self.path}: {exc.strerror}; choose a writable --tlog path"
            ) from exc
        self._clock = unix_time_us
        self._flush_every_us = int(flush_interval_s * 1e6)
        self._next_flush_us = 0
        self._rx = MavlinkFramer()
        self._tx = MavlinkFramer()
        self.frames_written = 0
        """Frames recorded so far (both directions)."""
        self.frames_dropped = 0
        """Frames not recorded because the disk failed."""
        self.error: str | None = None
        """The first write error, if any (recording stopped there)."""

    @property
    def skipped_bytes(self) -> int:
        """Bytes on the link that were not part of a valid frame (noise), both directions."""
        return self._rx.skipped_bytes + self._tx.skipped_bytes

    def tap(self, link: Link) -> TlogLink:
        """``link`` with everything read from and written to it also recorded here."""
        return TlogLink(link, self)

    def record(self, received: bool, data: bytes | bytearray | memoryview) -> None:
        """Record the frames in ``data`` (bytes read from the link if ``received``, else written)."""
        frames = (self._rx if received else self._tx).feed(data)
        if not frames:
            return
        if self.error is not None:
            self.frames_dropped += len(frames)
            return
        now = self._clock()
        stamp = _STAMP.pack(now)
        try:
            for frame in frames:
                self._file.write(stamp)
                self._file.write(frame)
            if now >= self._next_flush_us:
                self._next_flush_us = now + self._flush_every_us
                self._file.flush()
        except (OSError, ValueError) as exc:
            self.error = getattr(exc, "strerror", None) or str(exc)
            self.frames_dropped += len(frames)
            return
        self.frames_written += len(frames)

    def close(self) -> None:
        """Write what is buffered and close the file; idempotent."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc.strerror or str(exc)

    def __enter__(self) -> TlogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TlogLink(Link):
    """A tap: reads and writes go to the wrapped link and are recorded by a :class:`TlogWriter`.

    Closing the tap closes the wrapped link, not the writer (a reconnecting link opens a new tap
    for each reopening, all recording into one file).
    """

    def __init__(self, inner: Link, writer: TlogWriter) -> None:
        super().__init__(inner.url, 0)
        self.inner = inner
        """The link being recorded."""
        self.writer = writer

    @property
    def is_open(self) -> bool:
        """Whether the wrapped link is open."""
        return self.inner.is_open

    @property
    def source(self) -> tuple[str, int] | None:
        """The wrapped link's :attr:`Link.source`."""
        return self.inner.source

    @property
    def locked_source(self) -> tuple[str, int] | None:
        """The wrapped link's :attr:`Link.locked_source`."""
        return self.inner.locked_source

    def lock_source(self, address: tuple[str, int] | None) -> None:
        """Lock (None: unlock) the wrapped link."""
        self.inner.lock_source(address)

    @property
    def foreign_datagrams(self) -> int:  # type: ignore[override]
        """The wrapped link's count (other senders' datagrams are dropped before they are recorded)."""
        return self.inner.foreign_datagrams

    def read(self, max_bytes: int = DEFAULT_READ_BYTES) -> bytes:
        """Read from the wrapped link and record it."""
        data = self.inner.read(max_bytes)
        if data:
            self.bytes_rx += len(data)
            self.writer.record(True, data)
        return data

    def write(self, data: bytes) -> None:
        """Write to the wrapped link and record what was handed to it."""
        self.inner.write(data)
        self.bytes_tx += len(data)
        self.writer.record(False, data)

    def flush(self) -> int:
        """Flush the wrapped link."""
        return self.inner.flush()

    def fileno(self) -> int:
        """The wrapped link's descriptor."""
        return self.inner.fileno()

    def close(self) -> None:
        """Close the wrapped link (the writer stays open)."""
        self.inner.close()

    def _read_raw(self, max_bytes: int) -> bytes:  # pragma: no cover - read() is overridden
        return self.inner.read(max_bytes)

    def _send(self, data: bytes | bytearray | memoryview) -> int:  # pragma: no cover - write() is overridden
        self.inner.write(bytes(data))
        return len(data)

    def _close_raw(self) -> None:  # pragma: no cover - close() is overridden
        self.inner.close()

    def __repr__(self) -> str:
        return f"TlogLink({self.inner!r}, tlog={self.writer.path!r})"
