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

Framing (schema 2): every record is ``MAGIC | length u32 LE | CRC-32 u32 LE | msgpack map``, the
CRC (zlib's) over the length bytes and the payload. One flipped byte then costs one record: the
reader checks each record, and after a bad one searches forward for the next magic whose record
checks out, counting what it skipped (:class:`LogDamage`; a :class:`FlightLogDamaged` warning says
it). Schema-1 logs (bare msgpack maps one after another, no framing) are still read, strictly.

A full or failing disk never stops the flight: the records that cannot be written are dropped and
counted (:attr:`FlightLog.dropped`), the first loss is announced once on stderr, a ``log_gap``
event is written when writing works again and a ``log_incomplete`` event at close, and
:attr:`FlightLog.incomplete` tells the loop that the log is not the whole flight.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from edge_agent.errors import EdgeAgentError

SCHEMA_VERSION = 2
"""2: each record framed with a magic, its length and a CRC-32; 1: bare msgpack maps (still read)."""
MAGIC = b"\xea\x17"
"""Start of every schema-2 record (0xEA is a msgpack negative fixint: no schema-1 log starts so)."""
_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<2sII")  # magic, payload length, CRC-32 of the length bytes and the payload
FRAME_BYTES = _FRAME.size
_MAX_RECORD_BYTES = 1 << 20


class FlightLogError(EdgeAgentError):
    """A flight log cannot be opened or is not a flight log."""


class FlightLogDamaged(UserWarning):
    """A flight log had damaged bytes; the records in them were skipped (the rest were read)."""


@dataclass(slots=True)
class LogDamage:
    """What :func:`read_log` skipped; filled in while it reads."""

    skipped_bytes: int = 0
    """Bytes in damaged stretches, skipped."""
    damaged_spans: int = 0
    """Damaged stretches: each began with a record that failed its check and ends at the next good one."""
    records_lost: int = 0
    """Records that began in the damaged stretches (counted by their magic; at least one a stretch)."""
    truncated_tail_bytes: int = 0
    """Bytes of a last record cut short (the agent was killed while writing): expected, not damage."""
    segments: list[str] = field(default_factory=list)
    """Files that had damage."""

    @property
    def damaged(self) -> bool:
        """Whether anything but a cut-short last record was skipped."""
        return self.damaged_spans > 0

    def describe(self) -> str:
        """One line for a user: what was lost and where."""
        return (
            f"{self.records_lost} damaged record(s) skipped ({self.skipped_bytes} bytes in "
            f"{self.damaged_spans} stretch(es) of {', '.join(self.segments)}); every other record was read"
        )


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
        # The wall-clock start lets converters give records absolute times (MCAP log_time, tlog alignment).
        self.write({"k": "header", "schema": SCHEMA_VERSION, "start_unix_s": time.time(), **header})
        self.flush()
        if self.dropped:
            os.close(self._fd)
            raise FlightLogError(
                f"cannot write the flight log header to {self.path}: the disk is full or failing; "
                f"free space or choose another --log path"
            )

    dropped: int = 0
    """Records lost to a full or failing disk."""
    _dropped_noted = 0
    _last_t_s: Any = None

    @property
    def incomplete(self) -> bool:
        """Whether records were lost to a full or failing disk: the log is not the whole flight."""
        return self.dropped > 0

    @property
    def buffered(self) -> int:
        """Records packed but not yet handed to the kernel."""
        return len(self._ends)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (written with its batch); rotates past the size limit. Never raises on a full disk."""
        data = self._packer.pack(record)
        size = _U32.pack(len(data))
        buf = self._buf
        if not buf:
            self._flush_at_ns = time.monotonic_ns() + self._interval_ns
        buf += _FRAME.pack(MAGIC, len(data), zlib.crc32(data, zlib.crc32(size)))
        buf += data
        self._ends.append(len(buf))
        self._last_t_s = record.get("t_s", self._last_t_s)
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
        error = ""
        dropped_before = self.dropped
        try:
            n = os.write(self._fd, buf)
        except OSError as exc:
            # A full or failed disk must not take the vehicle down; the loop reports it.
            n = 0
            error = exc.strerror or str(exc)
        if n < len(buf):
            if not self.dropped:
                self._warn_once(error or "the disk took only part of a write")
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
        elif self.dropped > self._dropped_noted and self.dropped == dropped_before:
            # A whole batch went out: writing works again. Say in the log where records are missing.
            self._dropped_noted = self.dropped
            self._note("log_gap")

    def _note(self, name: str) -> None:
        """Write an event about the log itself, alone in its batch; losing it is not counted as data."""
        self.flush()
        lost = self.dropped
        self.write({"k": "event", "t_s": self._last_t_s, "name": name, "records_dropped": lost})
        self.flush()
        self.dropped = lost

    def _warn_once(self, why: str) -> None:
        # Once per flight, one write(2) to stderr: the operator must know the log will be incomplete.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(
                f"edge-agent: WARNING: cannot write the flight log {self.path} ({why}): the disk is full "
                f"or failing; records are dropped and the log will be incomplete. Free space on the disk.\n"
            )
            sys.stderr.flush()

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
        """Write what is buffered (and a ``log_incomplete`` event if records were lost), flush and close."""
        if self._fd >= 0:
            self.flush()
            if self.dropped:
                self._note("log_incomplete")
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


def read_log(path: str | os.PathLike[str], damage: LogDamage | None = None) -> Iterator[dict[str, Any]]:
    """Yield every intact record of a log and its rotated segments, oldest first.

    Schema 2: a record that fails its check is skipped and reading goes on at the next good one;
    what was skipped is added to ``damage`` (pass a :class:`LogDamage` to read it) and, when
    anything was, a :class:`FlightLogDamaged` warning says so at the end. A truncated last record
    (the agent was killed mid-write) is skipped silently. Schema 1 (no framing): anything that is
    not a msgpack map raises :class:`FlightLogError`.
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
    report = damage if damage is not None else LogDamage()
    first = True
    for seg in segments:
        with open(seg, "rb") as f:
            framed = f.read(len(MAGIC)) == MAGIC
            f.seek(0)
            records = _read_framed(seg, f.read(), report) if framed else _read_schema1(seg, f)
            for rec in records:
                if not isinstance(rec, dict) or "k" not in rec:
                    raise FlightLogError(f"{seg} holds a record that is not a flight-log record")
                if first and rec["k"] != "header":
                    lost = f" (its first bytes are damaged: {report.describe()})" if report.damaged else ""
                    raise FlightLogError(f"{base} does not start with a flight-log header{lost}")
                first = False
                yield rec
    if first:
        raise FlightLogError(f"{base} is empty: the agent wrote no header")
    if report.damaged:
        warnings.warn(FlightLogDamaged(f"{base}: {report.describe()}"), stacklevel=2)


def _read_framed(seg: Path, buf: bytes, damage: LogDamage) -> Iterator[Any]:
    """Records of one schema-2 segment; damaged stretches skipped and counted into ``damage``."""
    view = memoryview(buf)
    n = len(buf)
    pos = 0
    bad_from = -1  # start of the damaged stretch being skipped, -1 if none
    bad_is_tail = False  # the stretch began with a record cut short by the end of the file
    while pos < n:
        cut_short = False  # a record that runs past the end of the file (killed mid-write)
        if buf.startswith(MAGIC, pos) and pos + FRAME_BYTES <= n:
            _, length, crc = _FRAME.unpack_from(buf, pos)
            end = pos + FRAME_BYTES + length
            cut_short = length <= _MAX_RECORD_BYTES and end > n
            if length <= _MAX_RECORD_BYTES and end <= n:
                payload = view[pos + FRAME_BYTES : end]
                if zlib.crc32(payload, zlib.crc32(view[pos + 2 : pos + 6])) == crc:
                    try:
                        rec = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                    except (msgpack.UnpackException, ValueError, TypeError) as exc:
                        # The CRC held, so the writer wrote this: a bug, not damage.
                        raise FlightLogError(f"{seg} holds a record msgpack cannot read ({exc})") from exc
                    if bad_from >= 0:
                        _count_damage(seg, view[bad_from:pos], damage)
                        bad_from = -1
                    yield rec
                    pos = end
                    continue
        else:
            cut_short = n - pos < FRAME_BYTES and MAGIC.startswith(buf[pos : pos + 2])
        if bad_from < 0:
            bad_from, bad_is_tail = pos, cut_short
        nxt = buf.find(MAGIC, pos + 1)
        pos = n if nxt < 0 else nxt
    if bad_from >= 0:
        # Nothing good after it: a record cut short at the end is the expected trace of a kill -9.
        if bad_is_tail:
            damage.truncated_tail_bytes += n - bad_from
        else:
            _count_damage(seg, view[bad_from:n], damage)


def _count_damage(seg: Path, stretch: memoryview, damage: LogDamage) -> None:
    damage.damaged_spans += 1
    damage.skipped_bytes += len(stretch)
    damage.records_lost += max(1, bytes(stretch).count(MAGIC))
    if seg.name not in damage.segments:
        damage.segments.append(seg.name)


def _read_schema1(seg: Path, f: Any) -> Iterator[Any]:
    """Records of one schema-1 segment (bare msgpack maps); corruption raises FlightLogError."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_RECORD_BYTES * 4, strict_map_key=False)
    while chunk := f.read(1 << 16):
        try:
            unpacker.feed(chunk)
            yield from unpacker
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            # TypeError: a map keyed by a map or list (unhashable), which we never write.
            raise FlightLogError(f"{seg} is corrupt ({exc}); it is not a flight log") from exc
    # Leftover bytes in the unpacker are a record cut short by a crash: dropped by design.
