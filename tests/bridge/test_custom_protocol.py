"""Custom COBS+msgpack protocol: round trips, CRC, resynchronisation, bounded memory, never raising."""

from __future__ import annotations

import math
import re

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import custom_protocol as cp
from firmware_bridge.errors import BridgeError, ProtocolError
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    LandedState,
    PositionNedYaw,
    RatesThrust,
    VelocityNedYawRate,
)

ALL: list[cp.Message] = [
    cp.Hello(cp.PROTOCOL_VERSION, "vehicle", "fw 1.2"),
    cp.Heartbeat(True, "OFFBOARD", True),
    cp.State(
        123456,
        (1.0, -2.0, -3.5),
        (0.1, 0.2, 0.3),
        (1.0, 0.0, 0.0, 0.0),
        (0.01, 0.02, 0.03),
        0.8,
        15.9,
        LandedState.IN_AIR,
    ),
    cp.SetpointMsg(VelocityNedYawRate((1.0, 0.0, -0.5), 0.2)),
    cp.SetpointMsg(PositionNedYaw((1.0, 2.0, -3.0), math.pi / 2)),
    cp.SetpointMsg(AccelerationNedYawRate((0.5, 0.0, 0.0), 0.0)),
    cp.SetpointMsg(AttitudeThrust((0.9238795, 0.0, 0.0, 0.3826834), 0.55)),
    cp.SetpointMsg(RatesThrust((0.1, -0.1, 0.0), 0.5)),
    cp.Command(7, cp.CommandKind.TAKEOFF, 5.0),
    cp.Command(8, cp.CommandKind.SET_MODE, 0.0, "OFFBOARD"),
    cp.CommandAck(7, cp.CommandKind.TAKEOFF, cp.AckResult.ACCEPTED),
    cp.CommandAck(9, cp.CommandKind.ARM, cp.AckResult.DENIED, "battery low"),
    cp.StatusText(4, "geofence breach"),
]


def test_every_message_round_trips() -> None:
    enc, dec = cp.CustomEncoder(), cp.CustomDecoder()
    stream = b"".join(enc.encode(m) for m in ALL)
    assert dec.feed(stream) == ALL
    assert dec.counters() == cp.CustomCounters(len(ALL), 0, 0, 0, 0, 0)
    assert stream.count(0) == len(ALL)  # zero bytes only as delimiters


def test_crc_is_ccitt_false() -> None:
    assert cp.crc16_ccitt_false(b"123456789") == 0x29B1


def test_frame_layout_is_as_documented() -> None:
    frame = cp.CustomEncoder().encode(cp.StatusText(6, "hi"))
    raw = cp.cobs_decode(frame[:-1])
    assert raw[0] == 0 and raw[1] == cp.MsgType.STATUSTEXT
    assert msgpack.unpackb(raw[2:-2]) == [6, "hi"]
    assert int.from_bytes(raw[-2:], "big") == cp.crc16_ccitt_false(raw[:-2])


def test_handshake_check_names_the_mismatch() -> None:
    cp.check_hello(cp.Hello(cp.PROTOCOL_VERSION, "vehicle"), "vehicle")
    with pytest.raises(
        ProtocolError, match=re.escape("peer speaks custom protocol version 9, this bridge speaks 1")
    ):
        cp.check_hello(cp.Hello(9, "vehicle"), "vehicle")
    with pytest.raises(ProtocolError, match=re.escape("peer says it is a 'companion', expected a 'vehicle'")):
        cp.check_hello(cp.Hello(1, "companion"), "vehicle")


def test_oversized_body_is_refused_with_the_limit() -> None:
    with pytest.raises(BridgeError, match=re.escape("StatusText body is 605 bytes, the limit is 512")):
        cp.CustomEncoder().encode(cp.StatusText(6, "x" * 600))


def test_malformed_msgpack_and_schema_never_raise() -> None:
    bodies = [
        b"\xc1",
        b"\x93\x01",
        b"\xdd\xff\xff\xff\xff",
        msgpack.packb({"a": 1}),
        msgpack.packb([1, 2]),
        msgpack.packb([True, 5, True]),
        msgpack.packb(["x"] * 8),
        b"",
    ]
    dec = cp.CustomDecoder()
    stream = b""
    for seq, body in enumerate(bodies):
        for msg_type in (cp.MsgType.STATE, cp.MsgType.HEARTBEAT, cp.MsgType.SETPOINT, 0x7F):
            raw = bytes((seq, msg_type)) + body
            raw += cp.crc16_ccitt_false(raw).to_bytes(2, "big")
            stream += cp.cobs_encode(raw) + b"\x00"
    assert dec.feed(stream) == []
    assert dec.malformed == dec.frames == len(bodies) * 4


def test_mixed_damage_frames_received_plus_gaps_equals_frames_sent() -> None:
    rng = np.random.default_rng(0)
    enc, dec = cp.CustomEncoder(), cp.CustomDecoder()
    sent = 5000
    stream = bytearray()
    for k in range(sent):
        frame = bytearray(enc.encode(ALL[k % len(ALL)]))
        r = rng.random()
        if r < 0.1:  # one bit flipped anywhere, delimiter included
            pos = int(rng.integers(0, len(frame) * 8))
            frame[pos // 8] ^= 1 << (pos % 8)
        elif r < 0.15:  # truncated (the delimiter survives, as when bytes are lost mid-frame)
            frame = frame[: int(rng.integers(0, len(frame) - 1))] + b"\x00"
        elif r < 0.2:  # noise burst after the frame
            frame += bytes(rng.integers(0, 256, int(rng.integers(1, 50)), dtype=np.uint8)) + b"\x00"
        stream += frame
    # The last frame must arrive intact for gaps at the very end to be countable.
    stream += enc.encode(ALL[0])
    sent += 1
    got = []
    for k in range(0, len(stream), 777):
        got += dec.feed(bytes(stream[k : k + 777]))
    c = dec.counters()
    assert c.frames + c.gaps == sent
    assert len(got) == c.frames - c.malformed
    assert c.frames > 0.75 * sent
    assert dec.buffered_bytes <= cp.MAX_FRAME_BYTES


def test_memory_is_bounded_without_delimiters_and_decoding_resumes() -> None:
    dec = cp.CustomDecoder()
    for _ in range(100):
        assert dec.feed(b"\x55" * 1000) == []
        assert dec.buffered_bytes <= cp.MAX_FRAME_BYTES
    good = cp.CustomEncoder().encode(cp.StatusText(6, "back"))
    # The first delimiter ends the discarded run; the next frame decodes.
    assert dec.feed(b"\x00" + good) == [cp.StatusText(6, "back")]
    assert dec.oversize_dropped == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_cobs_round_trips_and_has_no_zero(data: bytes) -> None:
    enc = cp.cobs_encode(data)
    assert 0 not in enc
    assert cp.cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_decoder_never_raises_on_garbage(data: bytes, chunk: int) -> None:
    dec = cp.CustomDecoder()
    for k in range(0, len(data), chunk):
        dec.feed(data[k : k + chunk])
    assert dec.buffered_bytes <= cp.MAX_FRAME_BYTES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ALL), max_size=20), st.integers(1, 50))
def test_chunking_does_not_change_messages(msgs: list[cp.Message], chunk: int) -> None:
    enc, dec = cp.CustomEncoder(), cp.CustomDecoder()
    stream = b"".join(enc.encode(m) for m in msgs)
    got = [m for k in range(0, len(stream), chunk) for m in dec.feed(stream[k : k + chunk])]
    assert got == msgs
