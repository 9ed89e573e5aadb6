"""The compact protocol for custom microcontroller firmware: COBS frames around msgpack bodies.

Wire format of one frame::

    COBS( seq:u8 | msg_type:u8 | msgpack body | crc:u16 big-endian ) 0x00

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor; check
value 0x29B1 for b"123456789") over ``seq | msg_type | body``; it is ``binascii.crc_hqx(data,
0xFFFF)``, and on a microcontroller the common table-free 0x1021 loop. COBS removes every zero
byte from the frame, so ``0x00`` only ever delimits: a receiver resynchronises at the next one.

Bodies are msgpack *arrays* with fixed positions (the schema is in each message's docstring),
smaller and faster on an MCU than maps. Both directions use the same sequence-numbered framing;
every message here has a public encoder and decoder so the vehicle side (``sitl``'s "custom"
flavour, or real firmware) speaks it with this very code.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from firmware_bridge.errors import BridgeError, ProtocolError
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    LandedState,
    PositionNedYaw,
    RatesThrust,
    Setpoint,
    VelocityNedYawRate,
)

PROTOCOL_VERSION = 1
"""Version carried in Hello; peers with a different major version refuse each other."""
MAX_BODY_BYTES = 512
"""Largest msgpack body a frame may carry."""
MAX_FRAME_BYTES = (2 + MAX_BODY_BYTES + 2) + (2 + MAX_BODY_BYTES + 2) // 254 + 1
"""Largest COBS-encoded frame (delimiter excluded); a longer run without a delimiter is noise."""


class MsgType(IntEnum):
    """The ``msg_type`` byte."""

    HELLO = 0x01
    HEARTBEAT = 0x02
    STATE = 0x03
    SETPOINT = 0x10
    COMMAND = 0x20
    COMMAND_ACK = 0x21
    STATUSTEXT = 0x30


class SetpointKind(IntEnum):
    """First element of a SETPOINT body: which ``types.Setpoint`` follows."""

    VELOCITY_NED_YAW_RATE = 1
    POSITION_NED_YAW = 2
    ACCELERATION_NED_YAW_RATE = 3
    ATTITUDE_THRUST = 4
    RATES_THRUST = 5


class CommandKind(IntEnum):
    """What a COMMAND asks the vehicle to do."""

    ARM = 1
    DISARM = 2
    SET_MODE = 3
    TAKEOFF = 4
    LAND = 5
    RETURN = 6


class AckResult(IntEnum):
    """Result of a COMMAND, numbered like MAV_RESULT."""

    ACCEPTED = 0
    TEMPORARILY_REJECTED = 1
    DENIED = 2
    UNSUPPORTED = 3
    FAILED = 4
    IN_PROGRESS = 5


@dataclass(frozen=True, slots=True)
class Hello:
    """Version handshake, sent by each side at connect. Body: [proto_version, role, firmware]."""

    proto_version: int
    role: str
    """"companion" or "vehicle"."""
    firmware: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness, 1 Hz each way. Body: [armed, mode, healthy]."""

    armed: bool
    mode: str
    """Normalised mode name (e.g. OFFBOARD, HOLD, LAND); the companion sends its own state name."""
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class State:
    """Vehicle state. Body: [time_us, pos_ned_m[3], vel_ned_m_s[3], q_wxyz[4], rates_frd_rad_s[3],
    battery_frac, battery_v, landed_state]."""

    time_us: int
    pos_ned_m: tuple[float, float, float]
    vel_ned_m_s: tuple[float, float, float]
    q_wxyz: tuple[float, float, float, float]
    rates_frd_rad_s: tuple[float, float, float]
    battery_frac: float
    battery_v: float
    landed_state: LandedState = LandedState.UNDEFINED


@dataclass(frozen=True, slots=True)
class SetpointMsg:
    """A setpoint for the vehicle. Body: [kind, *values] with the values of the ``types`` dataclass."""

    setpoint: Setpoint


@dataclass(frozen=True, slots=True)
class Command:
    """A command. Body: [command_id, kind, param, text] (param: takeoff altitude m; text: mode name)."""

    command_id: int
    kind: CommandKind
    param: float = 0.0
    text: str = ""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """The answer to a Command. Body: [command_id, kind, result, text]."""

    command_id: int
    kind: CommandKind
    result: AckResult
    text: str = ""


@dataclass(frozen=True, slots=True)
class StatusText:
    """Human-readable status, MAV_SEVERITY numbering. Body: [severity, text]."""

    severity: int
    text: str


Message = Hello | Heartbeat | State | SetpointMsg | Command | CommandAck | StatusText


def check_hello(hello: Hello, expected_role: str) -> None:
    """Raise ProtocolError unless ``hello`` comes from ``expected_role`` speaking our protocol version."""
    if hello.proto_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks custom protocol version {hello.proto_version}, this bridge speaks {PROTOCOL_VERSION}; "
            "update the firmware or the companion so they match"
        )
    if hello.role != expected_role:
        raise ProtocolError(
            f"peer says it is a {hello.role!r}, expected a {expected_role!r}; check the wiring"
        )


# ---------------------------------------------------------------------------------------------
# Bodies


def _floats(values: Any, n: int) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise ValueError(f"expected {n} numbers, got {values!r}")
    out = tuple(float(v) for v in values)
    if any(isinstance(v, bool) for v in values):
        raise ValueError("booleans where numbers belong")
    return out


def _setpoint_body(sp: Setpoint) -> list[Any]:
    if isinstance(sp, VelocityNedYawRate):
        return [SetpointKind.VELOCITY_NED_YAW_RATE, *sp.vel_ned_m_s, sp.yaw_rate_rad_s]
    if isinstance(sp, PositionNedYaw):
        return [SetpointKind.POSITION_NED_YAW, *sp.pos_ned_m, sp.yaw_rad]
    if isinstance(sp, AccelerationNedYawRate):
        return [SetpointKind.ACCELERATION_NED_YAW_RATE, *sp.acc_ned_m_s2, sp.yaw_rate_rad_s]
    if isinstance(sp, AttitudeThrust):
        return [SetpointKind.ATTITUDE_THRUST, *sp.q_wxyz, sp.thrust_frac]
    if isinstance(sp, RatesThrust):
        return [SetpointKind.RATES_THRUST, *sp.rates_frd_rad_s, sp.thrust_frac]
    raise BridgeError(f"not a setpoint: {sp!r}; use one of the dataclasses in firmware_bridge.types")


def _setpoint_from_body(b: list[Any]) -> Setpoint:
    kind = SetpointKind(b[0])
    if kind is SetpointKind.VELOCITY_NED_YAW_RATE:
        v = _floats(b[1:], 4)
        return VelocityNedYawRate((v[0], v[1], v[2]), v[3])
    if kind is SetpointKind.POSITION_NED_YAW:
        v = _floats(b[1:], 4)
        return PositionNedYaw((v[0], v[1], v[2]), v[3])
    if kind is SetpointKind.ACCELERATION_NED_YAW_RATE:
        v = _floats(b[1:], 4)
        return AccelerationNedYawRate((v[0], v[1], v[2]), v[3])
    if kind is SetpointKind.ATTITUDE_THRUST:
        v = _floats(b[1:], 5)
        return AttitudeThrust((v[0], v[1], v[2], v[3]), v[4])
    v = _floats(b[1:], 4)
    return RatesThrust((v[0], v[1], v[2]), v[3])


def message_body(msg: Message) -> tuple[MsgType, list[Any]]:
    """The (msg_type, msgpack array) of a message."""
    if isinstance(msg, State):
        return MsgType.STATE, [
            msg.time_us,
            list(msg.pos_ned_m),
            list(msg.vel_ned_m_s),
            list(msg.q_wxyz),
            list(msg.rates_frd_rad_s),
            msg.battery_frac,
            msg.battery_v,
            int(msg.landed_state),
        ]
    if isinstance(msg, SetpointMsg):
        return MsgType.SETPOINT, _setpoint_body(msg.setpoint)
    if isinstance(msg, Heartbeat):
        return MsgType.HEARTBEAT, [msg.armed, msg.mode, msg.healthy]
    if isinstance(msg, Hello):
        return MsgType.HELLO, [msg.proto_version, msg.role, msg.firmware]
    if isinstance(msg, Command):
        return MsgType.COMMAND, [msg.command_id, int(msg.kind), msg.param, msg.text]
    if isinstance(msg, CommandAck):
        return MsgType.COMMAND_ACK, [msg.command_id, int(msg.kind), int(msg.result), msg.text]
    if isinstance(msg, StatusText):
        return MsgType.STATUSTEXT, [msg.severity, msg.text]
    raise BridgeError(f"not a custom-protocol message: {msg!r}")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected a boolean, got {v!r}")
    return v


def message_from_body(msg_type: int, b: Any) -> Message:
    """Build a message from its type byte and decoded msgpack body; ValueError/KeyError if malformed."""
    if not isinstance(b, list):
        raise ValueError(f"body must be a msgpack array, got {type(b).__name__}")
    t = MsgType(msg_type)
    if t is MsgType.STATE:
        if len(b) != 8:
            raise ValueError(f"STATE has 8 fields, got {len(b)}")
        p, v, q, r = _floats(b[1], 3), _floats(b[2], 3), _floats(b[3], 4), _floats(b[4], 3)
        return State(
            _int(b[0]),
            (p[0], p[1], p[2]),
            (v[0], v[1], v[2]),
            (q[0], q[1], q[2], q[3]),
            (r[0], r[1], r[2]),
            float(b[5]),
            float(b[6]),
            LandedState(_int(b[7])),
        )
    if t is MsgType.SETPOINT:
        if not b:
            raise ValueError("empty SETPOINT")
        return SetpointMsg(_setpoint_from_body(b))
    if t is MsgType.HEARTBEAT:
        if len(b) != 3:
            raise ValueError(f"HEARTBEAT has 3 fields, got {len(b)}")
        return Heartbeat(_bool(b[0]), _str(b[1]), _bool(b[2]))
    if t is MsgType.HELLO:
        if len(b) != 3:
            raise ValueError(f"HELLO has 3 fields, got {len(b)}")
        return Hello(_int(b[0]), _str(b[1]), _str(b[2]))
    if t is MsgType.COMMAND:
        if len(b) != 4:
            raise ValueError(f"COMMAND has 4 fields, got {len(b)}")
        return Command(_int(b[0]), CommandKind(_int(b[1])), float(b[2]), _str(b[3]))
    if t is MsgType.COMMAND_ACK:
        if len(b) != 4:
            raise ValueError(f"COMMAND_ACK has 4 fields, got {len(b)}")
        return CommandAck(_int(b[0]), CommandKind(_int(b[1])), AckResult(_int(b[2])), _str(b[3]))
    if len(b) != 2:
        raise ValueError(f"STATUSTEXT has 2 fields, got {len(b)}")
    return StatusText(_int(b[0]), _str(b[1]))


# ---------------------------------------------------------------------------------------------
# COBS and framing


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result has no zero byte (delimiter not included)."""
    out = bytearray()
    for block in data.split(b"\x00"):
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Undo ``cobs_encode``; ValueError on a zero byte or a block that runs past the end."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError(f"zero byte inside a COBS frame at offset {i}")
        j = i + code
        if j > n:
            raise ValueError(f"COBS block at offset {i} claims {code - 1} bytes, only {n - i - 1} left")
        out += data[i + 1 : j]
        if code < 0xFF and j < n:
            out.append(0)
        i = j
    return bytes(out)


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); check value 0x29B1 for b"123456789"."""
    return binascii.crc_hqx(data, 0xFFFF)


class CustomEncoder:
    """Frames messages with a sequence number that counts up from 0 and wraps at 256."""

    def __init__(self) -> None:
        self.seq = 0
        """Sequence number of the next frame."""
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, msg: Message) -> bytes:
        """One complete frame, delimiter included; BridgeError if the body is too large or not finite-safe."""
        msg_type, body = message_body(msg)
        packed = self._packer.pack(body)
        if len(packed) > MAX_BODY_BYTES:
            raise BridgeError(
                f"{type(msg).__name__} body is {len(packed)} bytes, the limit is {MAX_BODY_BYTES}"
            )
        raw = bytes((self.seq, int(msg_type))) + packed
        raw += crc16_ccitt_false(raw).to_bytes(2, "big")
        self.seq = (self.seq + 1) & 0xFF
        return cobs_encode(raw) + b"\x00"


@dataclass(frozen=True, slots=True)
class CustomCounters:
    """A snapshot of what a custom-protocol decoder has seen."""

    frames: int
    """Frames whose CRC held (including those with a malformed body)."""
    crc_errors: int
    """Delimited frames with a bad CRC or bad COBS."""
    malformed: int
    """Frames with a good CRC whose msgpack body or schema was wrong (sender bug)."""
    gaps: int
    """Frames missing according to sequence numbers."""
    oversize_dropped: int
    """Runs of bytes longer than MAX_FRAME_BYTES without a delimiter, dropped."""
    bytes_dropped: int
    """Bytes discarded (bad frames, oversize runs)."""


class CustomDecoder:
    """Sans-IO decoder: ``feed(chunk)`` returns decoded messages; never raises on bad input.

    Memory is bounded by MAX_FRAME_BYTES: a run without a delimiter longer than that is
    discarded and decoding resumes after the next delimiter.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self._last_seq: int | None = None
        self.frames = 0
        self.crc_errors = 0
        self.malformed = 0
        self.gaps = 0
        self.oversize_dropped = 0
        self.bytes_dropped = 0

    def counters(self) -> CustomCounters:
        """A frozen snapshot of the counters."""
        return CustomCounters(
            self.frames, self.crc_errors, self.malformed, self.gaps, self.oversize_dropped, self.bytes_dropped
        )

    @property
    def buffered_bytes(self) -> int:
        """Bytes held waiting for a delimiter."""
        return len(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Message]:
        """Consume ``chunk``; return the messages it completed, in order."""
        out: list[Message] = []
        data = bytes(chunk)
        start = 0
        while True:
            z = data.find(b"\x00", start)
            if z < 0:
                self._stash(data[start:])
                break
            piece = data[start:z]
            start = z + 1
            if self._discarding:
                self.bytes_dropped += len(piece) + 1
                self._discarding = False
                self._buf.clear()
                continue
            if self._buf:
                self._buf += piece
                frame = bytes(self._buf)
                self._buf.clear()
            else:
                frame = piece
            if len(frame) > MAX_FRAME_BYTES:
                self.oversize_dropped += 1
                self.bytes_dropped += len(frame) + 1
                continue
            if frame:
                self._frame(frame, out)
        return out

    def _stash(self, rest: bytes) -> None:
        if self._discarding:
            self.bytes_dropped += len(rest)
            return
        self._buf += rest
        if len(self._buf) > MAX_FRAME_BYTES:
            self.oversize_dropped += 1
            self.bytes_dropped += len(self._buf)
            self._buf.clear()
            self._discarding = True

    def _frame(self, frame: bytes, out: list[Message]) -> None:
        try:
            raw = cobs_decode(frame)
        except ValueError:
            self.crc_errors += 1
            self.bytes_dropped += len(frame) + 1
            return
        if len(raw) < 4 or crc16_ccitt_false(raw[:-2]) != int.from_bytes(raw[-2:], "big"):
            self.crc_errors += 1
            self.bytes_dropped += len(frame) + 1
            return
        self.frames += 1
        seq = raw[0]
        if self._last_seq is not None:
            self.gaps += (seq - self._last_seq - 1) & 0xFF
        self._last_seq = seq
        try:
            body = msgpack.unpackb(raw[2:-2], raw=False, use_list=True, strict_map_key=True)
            msg = message_from_body(raw[1], body)
        except Exception:
            # A good CRC with a bad body is a sender bug; it must never take the receiver down.
            self.malformed += 1
            return
        out.append(msg)
