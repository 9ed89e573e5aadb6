"""Sans-IO MAVLink v2 codec over pymavlink's generated ``ardupilotmega`` dialect.

``ardupilotmega`` is a superset of ``common``: it decodes everything PX4 sends and the
ArduPilot-only messages (EKF_STATUS_REPORT, ...) real ArduCopter traffic carries.

The encoder produces frames byte-equal to pymavlink's ``MAVLink.send`` (the golden tests pin it)
but assembles the header and CRC itself, which is about twice as fast.

The parser is fed whole chunks and differs from pymavlink's (and the C library's) on purpose:
after a candidate frame fails its CRC it rescans from the byte after that frame's start
instead of skipping the whole claimed length, so one corrupted length byte costs one frame,
not the nine that follow it. It never raises on garbage; what it dropped is in its counters.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as dialect

from firmware_bridge.errors import BridgeError

MAVLink_message = dialect.MAVLink_message
"""The pymavlink message base class every decoded message derives from."""

MARKER_V1 = 0xFE
MARKER_V2 = 0xFD
IFLAG_SIGNED = 0x01
SIGNATURE_LEN = 13
SIGNING_EPOCH_UNIX_S = 1420070400
"""2015-01-01T00:00:00Z: the origin of MAVLink signing timestamps (10 µs units)."""
NEW_STREAM_MAX_AGE_10US = 6_000_000
"""A new signed stream is accepted if its timestamp is at most one minute behind ours (spec)."""

_HDR_V2 = struct.Struct("<BBBBBBHB")  # len, incompat, compat, seq, sysid, compid, msgid lo16, msgid hi8
_CRC = struct.Struct("<H")
_SIG_TS = struct.Struct("<BQ")

try:  # pymavlink depends on fastcrc; its pure-Python fallback is ~50x slower
    from fastcrc import crc16 as _fastcrc16

    _mcrf4xx: Callable[[bytes, int], int] = _fastcrc16.mcrf4xx
except ImportError:  # pragma: no cover - fastcrc is a pymavlink dependency

    def _mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
        x = dialect.x25crc()
        x.crc = crc
        x.accumulate(data)
        return int(x.crc)


def crc_mcrf4xx(data: bytes, crc_extra: int) -> int:
    """MAVLink's CRC-16/MCRF4XX over ``data`` followed by the message's CRC_EXTRA byte."""
    return _mcrf4xx(data + bytes((crc_extra,)), 0xFFFF)


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """MAVLink 2 signing: the shared 32-byte key, our link id, and which unsigned messages to accept."""

    key: bytes
    link_id: int = 0
    allow_unsigned_msgids: frozenset[int] = frozenset()
    """Message ids accepted unsigned while signing is on (the spec's RADIO_STATUS exception, say)."""

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise BridgeError(f"signing key must be 32 bytes (SHA-256 of a passphrase), got {len(self.key)}")
        if not 0 <= self.link_id <= 255:
            raise BridgeError(f"signing link_id must be in 0..255, got {self.link_id}")


def signing_key_from_passphrase(passphrase: str) -> bytes:
    """The 32-byte key QGroundControl and MAVProxy derive from a passphrase: SHA-256 of its UTF-8."""
    return hashlib.sha256(passphrase.encode("utf-8")).digest()


def unix_us_to_signing_timestamp(unix_us: int) -> int:
    """Convert a UNIX time in µs to a MAVLink signing timestamp (10 µs units since 2015-01-01)."""
    return max(0, (unix_us - SIGNING_EPOCH_UNIX_S * 1_000_000) // 10)


def _unix_us() -> int:
    return time.time_ns() // 1000


# ---------------------------------------------------------------------------------------------
# Encoder


def _return_payload(mav: object, crc_extra: int, payload: bytes, force_mavlink1: bool = False) -> bytes:
    return payload


class MavlinkEncoder:
    """Turns pymavlink message objects into MAVLink 2 frames from one (sysid, compid), seq counting up.

    Output is byte-equal to ``pymavlink``'s ``MAVLink(file, sysid, compid).send(msg)`` with the
    same sequence number (and, when signing, the same link id and timestamp).
    """

    def __init__(
        self,
        sysid: int,
        compid: int,
        *,
        signing: SigningConfig | None = None,
        unix_time_us: Callable[[], int] = _unix_us,
    ) -> None:
        if not 1 <= sysid <= 255 or not 0 <= compid <= 255:
            raise BridgeError(
                f"sysid must be in 1..255 and compid in 0..255, got sysid={sysid}, compid={compid}"
            )
        self.sysid = sysid
        self.compid = compid
        self.seq = 0
        """Sequence number of the next frame."""
        self._signing = signing
        self._unix_time_us = unix_time_us
        self._sign_ts = 0
        self.frames = 0
        """Frames encoded so far."""
        # A MAVLink object is only needed for the (rare) fallback path through pymavlink's pack.
        self._mav = dialect.MAVLink(None, srcSystem=sysid, srcComponent=compid)

    @property
    def mav(self) -> Any:
        """A pymavlink ``MAVLink`` object for its ``*_encode`` helpers (building messages, not sending)."""
        return self._mav

    def encode(self, msg: Any) -> bytes:
        """Encode one pymavlink message as a MAVLink 2 frame (signed when signing is configured)."""
        payload = self._payload(msg)
        # type(msg).id, not msg.id: STATUSTEXT has a payload field named "id" that shadows it.
        cls = type(msg)
        return self.encode_payload(cls.id, cls.crc_extra, payload)

    def encode_payload(self, msgid: int, crc_extra: int, payload: bytes) -> bytes:
        """Frame an already packed (untruncated) payload; what ``encode`` does after packing."""
        body = payload.rstrip(b"\x00") or payload[:1]
        signing = self._signing
        core = _HDR_V2.pack(
            len(body),
            IFLAG_SIGNED if signing is not None else 0,
            0,
            self.seq,
            self.sysid,
            self.compid,
            msgid & 0xFFFF,
            msgid >> 16,
        )
        core += body
        frame = b"\xfd" + core + _CRC.pack(_mcrf4xx(core + bytes((crc_extra,)), 0xFFFF))
        if signing is not None:
            # Timestamps must increase strictly per stream: at least the wall clock, at least last + 1.
            ts = max(self._sign_ts + 1, unix_us_to_signing_timestamp(self._unix_time_us()))
            self._sign_ts = ts
            frame += _SIG_TS.pack(signing.link_id, ts)[:7]
            frame += hashlib.sha256(signing.key + frame).digest()[:6]
        self.seq = (self.seq + 1) & 0xFF
        self.frames += 1
        return frame

    def _payload(self, msg: Any) -> bytes:
        # Every generated pack() ends in self._pack(mav, crc_extra, <packed payload>); shadowing
        # _pack on the instance for one call gets pymavlink's own payload bytes (field order,
        # arrays, strings) without its slower frame assembly.
        attrs = msg.__dict__
        attrs["_pack"] = _return_payload
        try:
            payload: bytes = msg.pack(self._mav)
        finally:
            del attrs["_pack"]
        return payload


# ---------------------------------------------------------------------------------------------
# Parser


@dataclass(frozen=True, slots=True)
class ParserCounters:
    """A snapshot of what a parser has seen."""

    frames: int
    """Frames accepted (CRC, flags and signature good)."""
    crc_errors: int
    """Complete candidate frames whose CRC failed."""
    seq_gaps: int
    """Frames missing according to per-(sysid, compid) sequence numbers, across the 255 → 0 wrap."""
    signature_errors: int
    """Signed frames with a wrong signature or a replayed / too old timestamp."""
    unsigned_rejected: int
    """Unsigned (or MAVLink 1) frames refused because signing is on."""
    incompat_dropped: int
    """Frames with an incompatibility flag this parser does not understand (spec: must drop)."""
    unknown_msgid: int
    """Frame starts whose message id the dialect lacks: unverifiable, so rescanned as noise."""
    decode_errors: int
    """Frames with a good CRC that pymavlink could not turn into a message object."""
    bytes_dropped: int
    """Bytes discarded as not part of any accepted frame."""


class _MsgInfo:
    """Per-message-type decode plan, precomputed once from the dialect."""

    __slots__ = ("array_spans", "cls", "crc_extra", "order", "size", "string_idx", "unpack")

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.crc_extra: int = cls.crc_extra
        self.unpack = cls.unpacker.unpack
        self.size: int = cls.unpacker.size
        lengths: list[int] = list(cls.lengths)
        orders: list[int] = list(cls.orders)
        if sum(lengths) == len(lengths):
            self.order: tuple[int, ...] | None = tuple(orders)
            self.array_spans: tuple[tuple[int, int], ...] = ()
        else:
            # Mirrors pymavlink's decode for messages with arrays: (start, length) per field.
            self.order = None
            self.array_spans = tuple((sum(lengths[:o]), lengths[o]) for o in orders)
        fmt = cls.unpacker.format
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        self.string_idx = "s" in fmt


_INFO: dict[int, _MsgInfo] = {msgid: _MsgInfo(cls) for msgid, cls in dialect.mavlink_map.items()}


class MavlinkParser:
    """Sans-IO MAVLink 1/2 parser: ``feed(chunk)`` returns the messages completed by that chunk.

    Memory is bounded: between calls it keeps at most one incomplete frame (< 294 bytes).
    """

    def __init__(self, *, signing: SigningConfig | None = None) -> None:
        self._buf = b""
        self._signing = signing
        self._last_seq: dict[tuple[int, int], int] = {}
        self._stream_ts: dict[tuple[int, int, int], int] = {}
        self._newest_ts = 0
        self.frames = 0
        self.crc_errors = 0
        self.seq_gaps = 0
        self.signature_errors = 0
        self.unsigned_rejected = 0
        self.incompat_dropped = 0
        self.unknown_msgid = 0
        self.decode_errors = 0
        self.bytes_dropped = 0
        self.gaps_by_peer: dict[tuple[int, int], int] = {}
        """Missing frames per (sysid, compid)."""

    def counters(self) -> ParserCounters:
        """A frozen snapshot of the counters."""
        return ParserCounters(
            self.frames,
            self.crc_errors,
            self.seq_gaps,
            self.signature_errors,
            self.unsigned_rejected,
            self.incompat_dropped,
            self.unknown_msgid,
            self.decode_errors,
            self.bytes_dropped,
        )

    @property
    def buffered_bytes(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Any]:
        """Consume ``chunk``; return the pymavlink messages it completed, in order. Never raises."""
        buf = self._buf + bytes(chunk) if self._buf else bytes(chunk)
        out: list[Any] = []
        n = len(buf)
        pos = 0
        try_frame = self._try_frame
        while pos < n:
            c = buf[pos]
            if c in (MARKER_V2, MARKER_V1):
                i = pos
            else:
                i = _find_marker(buf, pos)
                if i < 0:
                    self.bytes_dropped += n - pos
                    pos = n
                    break
                self.bytes_dropped += i - pos
            end = try_frame(buf, i, out, True)
            if end > 0:
                pos = end
            elif end == 0:
                # Not a frame here: rescan from the next byte, so a damaged frame costs only itself.
                self.bytes_dropped += 1
                pos = i + 1
            else:
                # Incomplete. If a complete, valid frame starts later in the buffer, the candidate at
                # i was noise (a real frame would have ended before it); otherwise wait for bytes.
                j = self._lookahead(buf, i + 1, out)
                if j < 0:
                    pos = i
                    break
                pos = j
        self._buf = buf[pos:]
        return out

    def _lookahead(self, buf: bytes, start: int, out: list[Any]) -> int:
        k = _find_marker(buf, start)
        while k >= 0:
            end = self._try_frame(buf, k, out, False)
            if end > 0:
                self.bytes_dropped += k - (start - 1)
                return end
            k = _find_marker(buf, k + 1)
        return -1

    def _try_frame(self, buf: bytes, i: int, out: list[Any], count: bool) -> int:
        """Return the end of an accepted/consumed frame at ``i``, 0 if none is there, -1 if incomplete.

        With ``count`` False (look-ahead), rejected candidates are not counted: they will be
        examined again once more bytes arrive.
        """
        n = len(buf)
        if buf[i] == MARKER_V2:
            if n - i < 10:
                return -1
            msgid = buf[i + 7] | (buf[i + 8] << 8) | (buf[i + 9] << 16)
            hlen = 10
        else:
            if n - i < 6:
                return -1
            msgid = buf[i + 5]
            hlen = 6
        info = _INFO.get(msgid)
        if info is None:
            # Without CRC_EXTRA a frame cannot be verified, and skipping its claimed length on
            # faith loses the real frames behind a false start (seen on real traffic): treat the
            # marker as noise. A genuine frame of an unknown type then shows up as a sequence gap.
            if count:
                self.unknown_msgid += 1
            return 0
        mlen = buf[i + 1]
        if hlen == 10:
            iflags = buf[i + 2]
            end_crc = i + 10 + mlen
            end = end_crc + 2 + (SIGNATURE_LEN if iflags & IFLAG_SIGNED else 0)
        else:
            iflags = 0
            end_crc = i + 6 + mlen
            end = end_crc + 2
        if end > n:
            return -1
        crc = buf[end_crc] | (buf[end_crc + 1] << 8)
        if _mcrf4xx(buf[i + 1 : end_crc] + bytes((info.crc_extra,)), 0xFFFF) != crc:
            if count:
                self.crc_errors += 1
            return 0
        if iflags & ~IFLAG_SIGNED:
            if count:
                self.incompat_dropped += 1
                self._track_seq(buf, i, hlen)
            return end
        signing = self._signing
        signed = False
        if signing is not None:
            if iflags & IFLAG_SIGNED:
                if not self._check_signature(buf, i, end):
                    # The CRC held, so this is a whole frame: consume it, do not rescan inside.
                    self.signature_errors += 1
                    return end
                signed = True
            elif msgid not in signing.allow_unsigned_msgids:
                self.unsigned_rejected += 1
                return end
        self._track_seq(buf, i, hlen)
        self.frames += 1
        msg = self._decode(buf, i, hlen, mlen, end_crc, end, msgid, iflags, crc, info)
        if msg is None:
            self.decode_errors += 1
        else:
            if signed:
                msg._signed = True
                msg._link_id = buf[end - 13]
            out.append(msg)
        return end

    def _track_seq(self, buf: bytes, i: int, hlen: int) -> None:
        if hlen == 10:
            seq, key = buf[i + 4], (buf[i + 5], buf[i + 6])
        else:
            seq, key = buf[i + 2], (buf[i + 3], buf[i + 4])
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        if last is not None:
            gap = (seq - last - 1) & 0xFF
            if gap:
                self.seq_gaps += gap
                self.gaps_by_peer[key] = self.gaps_by_peer.get(key, 0) + gap

    def _check_signature(self, buf: bytes, i: int, end: int) -> bool:
        signing = self._signing
        assert signing is not None
        digest = hashlib.sha256(signing.key + buf[i : end - 6]).digest()[:6]
        if not hmac.compare_digest(digest, buf[end - 6 : end]):
            return False
        link_id = buf[end - 13]
        ts = int.from_bytes(buf[end - 12 : end - 6], "little")
        stream = (link_id, buf[i + 5], buf[i + 6])
        last = self._stream_ts.get(stream)
        if last is not None:
            if ts <= last:
                return False  # replayed or reordered
        elif ts + NEW_STREAM_MAX_AGE_10US < self._newest_ts:
            return False  # a "new" stream far in the past: a replay of an old capture
        # Updated only after the signature verified, so a forged frame cannot poison the stream.
        self._stream_ts[stream] = ts
        if ts > self._newest_ts:
            self._newest_ts = ts
        return True

    @staticmethod
    def _decode(
        buf: bytes,
        i: int,
        hlen: int,
        mlen: int,
        end_crc: int,
        end: int,
        msgid: int,
        iflags: int,
        crc: int,
        info: _MsgInfo,
    ) -> Any:
        payload = buf[i + hlen : end_crc]
        size = info.size
        if mlen < size:
            payload += bytes(size - mlen)  # MAVLink 2 truncates trailing zeros; pad them back
        elif mlen > size:
            payload = payload[:size]  # extensions this dialect does not know
        try:
            t = info.unpack(payload)
            order = info.order
            if order is not None:
                fields: list[Any] = [t[o] for o in order]
            else:
                fields = []
                for tip, length in info.array_spans:
                    f = t[tip]
                    fields.append(f if length == 1 or isinstance(f, bytes) else list(t[tip : tip + length]))
            if info.string_idx:
                fields = [f.rstrip(b"\x00") if isinstance(f, bytes) else f for f in fields]
            msg = info.cls(*fields)
        except Exception:
            # pymavlink's constructors validate some fields; a bad value must not escape the codec.
            return None
        frame = buf[i:end]
        msg._msgbuf = bytearray(frame)
        # pymavlink's own decode slices from byte 6 for both versions; kept for equality.
        msg._payload = buf[i + 6 : end_crc]
        msg._crc = crc
        if hlen == 10:
            msg._header = dialect.MAVLink_header(
                msgid, iflags, buf[i + 3], mlen, buf[i + 4], buf[i + 5], buf[i + 6]
            )
        else:
            msg._header = dialect.MAVLink_header(msgid, 0, 0, mlen, buf[i + 2], buf[i + 3], buf[i + 4])
        return msg


def _find_marker(buf: bytes, start: int) -> int:
    a = buf.find(b"\xfd", start)
    b = buf.find(b"\xfe", start, a if a >= 0 else len(buf))
    return b if b >= 0 else a
