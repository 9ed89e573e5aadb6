"""Crash-safe flight log: a stream of msgpack records, written in small batches.

Records are packed as they come and handed to the kernel with one ``os.write`` on an unbuffered
descriptor per batch: a batch is written when it is :attr:`LogLimits.flush_interval_s` old (0.1 s)
or :attr:`LogLimits.flush_bytes` long, and at once for every event record, :meth:`FlightLog.sync`
and :meth:`FlightLog.close` (the loop closes the log on every way out of a flight: mission end,
SIGINT/SIGTERM, an exception). So a ``kill -9`` of the agent loses at most the tick records of the
last 0.1 s (at 1 kHz, ~100 records; events are never held back), and the reader stops cleanly at
a truncated tail. Writing every tick on its own cost one system call per tick, which the
1 kHz loop could not afford. (A power cut is another matter: call :meth:`FlightLog.sync` at phase
changes, which the loop does; fsync on every tick would cost milliseconds on an SD card.)

A long flight cannot fill the disk: past ``max_bytes`` the log rotates into numbered segments
``NAME.1, NAME.2, ...`` and only the newest ``keep_segments`` are kept; the first segment
(with the header) is always kept so a log stays attributable to its bundle and mission.

Record kinds (``"k"`` key): ``header`` (once, first), ``tick`` (every loop tick), ``event``
(mode changes, link loss, shield latches, activation steps, ...). Field names carry units.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edge_agent.errors import EdgeAgentError

SCHEMA_VERSION = 1
_MAX_RECORD_BYTES = 1 << 20


class FlightLogError(EdgeAgentError):
    """A flight log cannot be opened or is not a flight log."""


@dataclass(frozen=True, slots=True)
class LogLimits:
    """Disk budget of one flight log."""

    max_bytes: int = 64 << 20
    """Size at which the current segment is closed and a new one begun."""
    keep_segments: int = 8
    """Newest segments kept (besides the first, which holds the header)."""
    flush_interval_s: float = 0.1
    """Longest a record waits in memory before it is written (a kill -9 loses at most this much)."""
    flush_bytes: int = 32 << 10
    """Buffered bytes at which the batch is written whatever its age."""


class FlightLog:
    """Append-only writer. Not thread-safe: the loop owns it."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], limits: LogLimits = LogLimits()):
        self.path = Path(path)
        self.limits = limits
        self._packer = msgpack.Packer(use_bin_type=True)
        self._segment = 0
        self._written = 0
        self._buf = bytearray()
        self._ends: list[int] = []
        """End offset in ``_buf`` of each buffered record."""
        self._flush_at_ns = 0
        self._interval_ns = max(int(limits.flush_interval_s * 1e9), 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:
            raise FlightLogError(
                f"cannot create flight log {self.path}: {exc.strerror}; choose a writable --log path"
            ) from exc
        self.write({"k": "header", "schema": SCHEMA_VERSION, **header})
        self.flush()
        if self.dropped:
            os.close(self._fd)
            raise FlightLogError(
                f"cannot write the flight log header to {self.path}: the disk is full or failing; "
                f"free space or choose another --log path"
            )

    dropped: int = 0
    """Records lost to a full or failing disk."""

    @property
    def buffered(self) -> int:
        """Records packed but not yet handed to the kernel."""
        return len(self._ends)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (written with its batch); rotates past the size limit. Never raises on a full disk."""
        data = self._packer.pack(record)
        buf = self._buf
        if not buf:
            self._flush_at_ns = time.monotonic_ns() + self._interval_ns
        buf += data
        self._ends.append(len(buf))
        if (
            len(buf) >= self.limits.flush_bytes
            or self._written + len(buf) >= self.limits.max_bytes
            or time.monotonic_ns() >= self._flush_at_ns
        ):
            self.flush()

    def flush(self) -> None:
        """Hand the buffered records to the kernel now (one ``write(2)``); never raises on a full disk."""
        buf = self._buf
        if not buf or self._fd < 0:
            return
        ends = self._ends
        try:
            n = os.write(self._fd, buf)
        except OSError:
            # A full or failed disk must not take the vehicle down; the loop reports it.
            n = 0
        if n < len(buf):
            # Keep the whole records that made it; cut a partial one off again, or every record
            # after it would be read as garbage.
            kept = 0
            while kept < len(ends) and ends[kept] <= n:
                kept += 1
            keep_bytes = ends[kept - 1] if kept else 0
            if n > keep_bytes:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._written + keep_bytes)
            self.dropped += len(ends) - kept
            n = keep_bytes
        self._written += n
        buf.clear()
        ends.clear()
        if self._written >= self.limits.max_bytes:
            self._rotate()

    def event(self, t_s: float, name: str, **fields: Any) -> None:
        """Append an event record and write it at once (with any tick records before it)."""
        self.write({"k": "event", "t_s": t_s, "name": name, **fields})
        self.flush()

    def sync(self) -> None:
        """Write what is buffered and flush it to stable storage (phase changes only: it can take milliseconds)."""
        self.flush()
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._segment += 1
        self._written = 0
        seg_path = segment_path(self.path, self._segment)
        self._fd = os.open(seg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        stale = self._segment - self.limits.keep_segments
        if stale >= 1:
            segment_path(self.path, stale).unlink(missing_ok=True)

    def close(self) -> None:
        """Write what is buffered, flush and close."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FlightLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def segment_path(path: Path, index: int) -> Path:
    """Path of rotated segment ``index`` (0 is the log itself)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def read_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every complete record of a log and its rotated segments, oldest first.

    A truncated last record (the agent was killed mid-write) is skipped silently; anything
    else that is not a msgpack map raises :class:`FlightLogError`.
    """
    base = Path(path)
    if not base.is_file():
        raise FlightLogError(
            f"flight log {base} does not exist; pass the file written by `edge-agent run --log`"
        )
    segments = [base]
    i = 1
    while True:
        p = segment_path(base, i)
        if p.exists():
            segments.append(p)
        elif i > 1 and not any(segment_path(base, j).exists() for j in range(i, i + 1024)):
            break
        i += 1
    first = True
    for seg in segments:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_RECORD_BYTES * 4, strict_map_key=False)
        with open(seg, "rb") as f:
            while chunk := f.read(1 << 16):
                try:
                    unpacker.feed(chunk)
                    for rec in unpacker:
                        if not isinstance(rec, dict) or "k" not in rec:
                            raise FlightLogError(f"{seg} holds a record that is not a flight-log record")
                        if first and rec["k"] != "header":
                            raise FlightLogError(f"{base} does not start with a flight-log header")
                        first = False
                        yield rec
                except FlightLogError:
                    raise
                except (msgpack.UnpackException, ValueError, TypeError) as exc:
                    # TypeError: a map keyed by a map or list (unhashable), which we never write.
                    raise FlightLogError(f"{seg} is corrupt ({exc}); it is not a flight log") from exc
        # Leftover bytes in the unpacker are a record cut short by a crash: dropped by design.
    if first:
        raise FlightLogError(f"{base} is empty: the agent wrote no header")
