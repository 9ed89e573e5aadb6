"""MAVLink codec: byte-equality with pymavlink, robustness to damage, counters, signing."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import BridgeError
from firmware_bridge.mavlink_codec import (
    MavlinkEncoder,
    MavlinkParser,
    SigningConfig,
    signing_key_from_passphrase,
)
from tests.conftest import SHARED_DATA

DATA = str(SHARED_DATA / "ardupilot")
KEY = signing_key_from_passphrase("edge-agent test key")


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))


def sample_messages(rng: np.random.Generator) -> list[Any]:
    """One of each message the bridge sends or reads, with random field values."""
    f = lambda: float(rng.normal())  # noqa: E731
    u = lambda hi: int(rng.integers(0, hi))  # noqa: E731
    return [
        mavlink.MAVLink_heartbeat_message(18, 8, u(256), u(2**32), 4, 3),
        mavlink.MAVLink_command_long_message(1, 1, 400, u(4), 1, 0, 0, 0, 0, 0, f()),
        mavlink.MAVLink_command_ack_message(u(600), u(7), u(100), 0, 1, 191),
        mavlink.MAVLink_set_position_target_local_ned_message(
            u(2**32), 1, 1, 1, 1991, 0, 0, 0, f(), f(), f(), 0, 0, 0, 0, f()
        ),
        mavlink.MAVLink_set_attitude_target_message(
            u(2**32), 1, 1, 7, [f(), f(), f(), f()], 0, 0, 0, float(rng.random())
        ),
        mavlink.MAVLink_local_position_ned_message(u(2**32), f(), f(), f(), f(), f(), f()),
        mavlink.MAVLink_attitude_quaternion_message(
            u(2**32), f(), f(), f(), f(), f(), f(), f(), [0, 0, 0, 0]
        ),
        mavlink.MAVLink_odometry_message(
            u(2**40),
            1,
            12,
            f(),
            f(),
            f(),
            [f(), f(), f(), f()],
            f(),
            f(),
            f(),
            f(),
            f(),
            f(),
            [0.0] * 21,
            [0.0] * 21,
            u(256),
            0,
            0,
        ),
        mavlink.MAVLink_highres_imu_message(
            u(2**40), f(), f(), f(), f(), f(), f(), f(), f(), f(), f(), f(), f(), f(), u(65536), 0
        ),
        mavlink.MAVLink_sys_status_message(
            u(2**31), u(2**31), u(2**31), u(1000), u(65535), -1, u(101), 0, 0, 0, 0, 0, 0, 0, 0, 0
        ),
        mavlink.MAVLink_battery_status_message(
            0, 1, 1, 250, [4100, 4100, 4100] + [65535] * 7, -1, -1, -1, u(101), 0, 0, [0, 0, 0, 0], 0, 0
        ),
        mavlink.MAVLink_extended_sys_state_message(0, u(5)),
        mavlink.MAVLink_statustext_message(u(8), b"Arm: GPS not healthy", 0, 0),
        mavlink.MAVLink_timesync_message(u(2**62), u(2**62)),
        mavlink.MAVLink_named_value_float_message(u(2**32), b"margin", f()),
        mavlink.MAVLink_param_request_read_message(1, 1, b"COM_OF_LOSS_T", -1),
        mavlink.MAVLink_param_value_message(b"GUID_TIMEOUT", 3.0, 9, 900, u(900)),
    ]


def pymavlink_frames(
    msgs: list[Any], sysid: int = 1, compid: int = 1, signing: bytes | None = None, ts: int = 0
) -> list[bytes]:
    sink = _Sink()
    mav = mavlink.MAVLink(sink, srcSystem=sysid, srcComponent=compid)
    if signing is not None:
        mav.signing.secret_key = signing
        mav.signing.sign_outgoing = True
        mav.signing.link_id = 3
        mav.signing.timestamp = ts
    for m in msgs:
        mav.send(m)
    return sink.frames


def make_stream(n: int, seed: int = 0) -> tuple[list[bytes], list[Any]]:
    rng = np.random.default_rng(seed)
    msgs: list[Any] = []
    while len(msgs) < n:
        msgs.extend(sample_messages(rng))
    msgs = msgs[:n]
    return pymavlink_frames(msgs), msgs


def same(a: Any, b: Any) -> bool:
    return a == b and a.to_dict() == b.to_dict() and bytes(a.get_msgbuf()) == bytes(b.get_msgbuf())


# -- encoding ----------------------------------------------------------------------------------


def test_golden_frames_are_byte_equal_to_pymavlink() -> None:
    rng = np.random.default_rng(1)
    msgs = [m for _ in range(20) for m in sample_messages(rng)]
    ours = MavlinkEncoder(7, 191)
    theirs = pymavlink_frames(msgs, 7, 191)
    assert len(msgs) == 340
    for m, ref in zip(msgs, theirs):
        assert ours.encode(m) == ref, m.get_type()
    assert ours.seq == 340 % 256


def test_signed_frames_are_byte_equal_to_pymavlink() -> None:
    rng = np.random.default_rng(2)
    msgs = sample_messages(rng)
    ts0 = 500_000_000_000
    theirs = pymavlink_frames(msgs, 1, 191, signing=KEY, ts=ts0)
    # Our timestamp is max(last + 1, wall clock); a wall clock stuck just before ts0 reproduces pymavlink's sequence.
    ours = MavlinkEncoder(
        1, 191, signing=SigningConfig(KEY, link_id=3), unix_time_us=lambda: 1420070400_000_000 + ts0 * 10 - 10
    )
    ours._sign_ts = ts0 - 1
    assert [ours.encode(m) for m in msgs] == theirs


def test_encoder_rejects_bad_ids_with_a_clear_message() -> None:
    with pytest.raises(
        BridgeError, match=re.escape("sysid must be in 1..255 and compid in 0..255, got sysid=0, compid=191")
    ):
        MavlinkEncoder(0, 191)
    with pytest.raises(
        BridgeError, match=re.escape("signing key must be 32 bytes (SHA-256 of a passphrase), got 5")
    ):
        SigningConfig(b"short")


# -- decoding ----------------------------------------------------------------------------------


def test_decodes_exactly_what_pymavlink_decodes() -> None:
    frames, _ = make_stream(500)
    ref = mavlink.MAVLink(None)
    expected = ref.parse_buffer(b"".join(frames))
    got = MavlinkParser().feed(b"".join(frames))
    assert len(got) == len(expected) == 500
    assert all(same(a, b) for a, b in zip(got, expected))


def test_mavlink_v1_frames_decode() -> None:
    rng = np.random.default_rng(3)
    msgs = sample_messages(rng)[:6]
    sink = _Sink()
    mav = mavlink.MAVLink(sink, srcSystem=3, srcComponent=1)
    for m in msgs:
        mav.send(m, force_mavlink1=True)
    assert all(f[0] == 0xFE for f in sink.frames)
    p = MavlinkParser()
    got = p.feed(b"".join(sink.frames))
    assert [g.get_type() for g in got] == [m.get_type() for m in msgs]
    assert got[0].custom_mode == msgs[0].custom_mode
    assert p.counters().crc_errors == 0


def test_untruncated_v2_frames_decode() -> None:
    # Senders may skip trailing-zero truncation (it is optional); the zero bytes must not matter.
    msg = mavlink.MAVLink_local_position_ned_message(1000, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0)
    payload = msg.unpacker.pack(1000, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0)
    frame = MavlinkEncoder(1, 1).encode_payload(msg.id, msg.crc_extra, payload)
    assert frame[1] < len(payload)  # the encoder truncated...
    body = bytes([len(payload), 0, 0, 0, 1, 1, 32, 0, 0]) + payload
    from firmware_bridge.mavlink_codec import crc_mcrf4xx

    full = b"\xfd" + body + crc_mcrf4xx(body, msg.crc_extra).to_bytes(2, "little")
    (got,) = MavlinkParser().feed(full)
    assert (got.time_boot_ms, got.x, got.vz) == (1000, 1.5, 0.0)


def test_real_arducopter_log_with_interleaved_timestamps() -> None:
    # A .tlog is 8-byte timestamps between frames: 34 kB of noise with plenty of false 0xFD/0xFE starts.
    with open(f"{DATA}/flight.tlog", "rb") as fh:
        data = fh.read()
    conn = mavutil.mavlink_connection(f"{DATA}/flight.tlog")
    expected = []
    while (m := conn.recv_msg()) is not None:
        expected.append(bytes(m.get_msgbuf()))
    p = MavlinkParser()
    got = [bytes(m.get_msgbuf()) for m in p.feed(data)]
    assert got == expected
    assert len(got) == 4308
    assert p.seq_gaps == 0


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunk_size_does_not_change_the_messages(chunk: int) -> None:
    frames, _ = make_stream(300, seed=4)
    rng = np.random.default_rng(5)
    noisy = b"".join(f + bytes(rng.integers(0, 256, int(rng.integers(0, 5)), dtype=np.uint8)) for f in frames)
    whole = [bytes(m.get_msgbuf()) for m in MavlinkParser().feed(noisy)]
    p = MavlinkParser()
    pieces = [
        bytes(m.get_msgbuf()) for k in range(0, len(noisy), chunk) for m in p.feed(noisy[k : k + chunk])
    ]
    assert pieces == whole
    assert len(whole) >= 299  # noise may (rarely) hide a frame behind a false start; never more


def test_bit_flip_at_every_position_of_10000_frames() -> None:
    frames, _ = make_stream(10_000, seed=6)
    rng = np.random.default_rng(7)
    damaged = rng.random(10_000) < 0.5  # half the frames get one flipped bit, at every bit position in turn
    stream = bytearray()
    bit = 0
    flipped_positions = set()
    for f, dmg in zip(frames, damaged):
        b = bytearray(f)
        if dmg:
            pos = bit % (len(b) * 8)
            b[pos // 8] ^= 1 << (pos % 8)
            flipped_positions.add(pos)
            bit += 1
        stream += b
    p = MavlinkParser()
    got = [bytes(m.get_msgbuf()) for m in p.feed(bytes(stream))]
    undamaged = [f for f, d in zip(frames, damaged) if not d]
    assert got == undamaged  # every undamaged frame, in order, and nothing else (no false accept)
    assert p.counters().frames == len(undamaged)
    assert max(flipped_positions) >= 8 * 60  # flips reached the end of the longest frames
    assert p.buffered_bytes < 300


def test_corrupted_length_byte_loses_only_that_frame() -> None:
    frames, _ = make_stream(40, seed=8)
    for victim in range(1, 39):
        for new_len in (0, 1, 255, frames[victim][1] + 1, max(frames[victim][1] - 1, 0)):
            bad = bytearray(frames[victim])
            if bad[1] == new_len:
                continue
            bad[1] = new_len
            stream = b"".join(frames[:victim]) + bytes(bad) + b"".join(frames[victim + 1 :])
            got = [bytes(m.get_msgbuf()) for m in MavlinkParser().feed(stream)]
            assert got == frames[:victim] + frames[victim + 1 :], (victim, new_len)


def test_pymavlink_loses_more_than_one_frame_on_a_corrupted_length_byte() -> None:
    # The reason for our own parser (REFERENCE.md): its parser skips the whole claimed length.
    frames, _ = make_stream(40, seed=8)
    bad = bytearray(frames[10])
    bad[1] = 255
    stream = b"".join(frames[:10]) + bytes(bad) + b"".join(frames[11:])
    ref = mavlink.MAVLink(None)
    ref.robust_parsing = True
    theirs = [m for m in ref.parse_buffer(stream) or [] if m.get_type() != "BAD_DATA"]
    ours = MavlinkParser().feed(stream)
    assert len(ours) == 39
    assert len(theirs) < 39 - 1


def test_noise_bursts_and_truncation_lose_a_bounded_number_of_frames() -> None:
    frames, _ = make_stream(3000, seed=9)
    rng = np.random.default_rng(10)
    stream = bytearray()
    kept = []
    hurt = 0
    for f in frames:
        r = rng.random()
        if r < 0.05:  # truncated frame
            stream += f[: int(rng.integers(1, len(f)))]
            hurt += 1
        elif r < 0.10:  # noise burst, often full of start markers
            stream += f
            kept.append(f)
            stream += bytes(
                rng.choice([0xFD, 0xFE, 0x00, 0x55], size=int(rng.integers(1, 400))).astype(np.uint8)
            )
        else:
            stream += f
            kept.append(f)
    p = MavlinkParser()
    got = []
    peak = 0
    for k in range(0, len(stream), 512):
        got += [bytes(m.get_msgbuf()) for m in p.feed(bytes(stream[k : k + 512]))]
        peak = max(peak, p.buffered_bytes)
    assert set(got) <= set(kept)  # nothing false
    # Look-ahead past an incomplete false start means no intact frame is lost here at all
    # (the design bound is one frame per damaged one), and the truncated ones show up as gaps.
    assert got == kept
    assert p.seq_gaps == hurt == 131
    assert peak < 300  # memory stays bounded: at most one incomplete frame


def test_sequence_gaps_are_counted_exactly_across_the_wrap() -> None:
    msg = mavlink.MAVLink_heartbeat_message(2, 12, 0, 0, 4, 3)
    enc = MavlinkEncoder(1, 1)
    other = MavlinkEncoder(2, 1)
    enc.seq = 250
    kept = []
    dropped = 0
    rng = np.random.default_rng(11)
    for i in range(600):  # wraps twice
        f = enc.encode(msg)
        if i > 0 and rng.random() < 0.2:  # a loss before the first frame is invisible
            dropped += 1
        else:
            kept.append(f)
            kept.append(other.encode(msg))  # a second peer without loss, interleaved
    p = MavlinkParser()
    p.feed(b"".join(kept))
    # A loss at the very end is invisible to sequence numbers; make the last frame a survivor.
    last_frame = enc.encode(msg)
    p.feed(last_frame)
    assert p.seq_gaps == dropped
    assert p.gaps_by_peer == {(1, 1): dropped}


def test_frame_with_unknown_incompat_flag_is_dropped() -> None:
    from firmware_bridge.mavlink_codec import crc_mcrf4xx

    frames, _ = make_stream(3, seed=12)
    f = bytearray(frames[1])
    f[2] = 0x02  # an incompat flag nobody defined
    msgid = f[7] | f[8] << 8 | f[9] << 16
    f[-2:] = crc_mcrf4xx(bytes(f[1:-2]), mavlink.mavlink_map[msgid].crc_extra).to_bytes(2, "little")
    p = MavlinkParser()
    got = p.feed(frames[0] + bytes(f) + frames[2])
    assert [bytes(m.get_msgbuf()) for m in got] == [frames[0], frames[2]]
    assert p.incompat_dropped == 1


# -- signing -------------------------------------------------------------------------------------


def test_signing_accepts_good_and_rejects_unsigned_forged_and_replayed() -> None:
    clock_us = [1_700_000_000_000_000]
    signer = MavlinkEncoder(1, 1, signing=SigningConfig(KEY), unix_time_us=lambda: clock_us[0])
    forger = MavlinkEncoder(
        1,
        1,
        signing=SigningConfig(signing_key_from_passphrase("wrong")),
        unix_time_us=lambda: clock_us[0] + 10**6,
    )
    plain = MavlinkEncoder(1, 1)
    msg = mavlink.MAVLink_heartbeat_message(2, 12, 0, 0, 4, 3)
    p = MavlinkParser(signing=SigningConfig(KEY))
    good = [signer.encode(msg) for _ in range(3)]
    assert len(p.feed(b"".join(good))) == 3
    assert all(m.get_signed() for m in p.feed(signer.encode(msg)))
    assert p.feed(plain.encode(msg)) == []
    assert p.feed(forger.encode(msg)) == []
    assert p.feed(good[1]) == []  # replay of an accepted frame
    tampered = bytearray(signer.encode(msg))
    tampered[-1] ^= 1
    assert p.feed(bytes(tampered)) == []
    assert len(p.feed(signer.encode(msg))) == 1  # the forged frame did not poison the stream's timestamp
    c = p.counters()
    assert (c.unsigned_rejected, c.signature_errors, c.frames) == (1, 3, 5)


def test_signing_rejects_a_replayed_capture_from_an_old_session() -> None:
    old = MavlinkEncoder(
        1, 1, signing=SigningConfig(KEY, link_id=1), unix_time_us=lambda: 1_700_000_000_000_000
    )
    new = MavlinkEncoder(
        1, 1, signing=SigningConfig(KEY, link_id=2), unix_time_us=lambda: 1_700_000_000_000_000 + 3600 * 10**6
    )
    msg = mavlink.MAVLink_heartbeat_message(2, 12, 0, 0, 4, 3)
    captured = old.encode(msg)
    p = MavlinkParser(signing=SigningConfig(KEY))
    assert len(p.feed(new.encode(msg))) == 1
    assert p.feed(captured) == []  # a "new" stream an hour in the past


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_never_raises_on_garbage(data: bytes) -> None:
    p = MavlinkParser()
    p.feed(data)
    p.feed(data[::-1])
    assert p.buffered_bytes < 300


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 16), min_size=1, max_size=30), st.binary(max_size=40), st.integers(1, 64))
def test_frames_survive_any_chunking_and_leading_garbage(picks: list[int], junk: bytes, chunk: int) -> None:
    rng = np.random.default_rng(len(picks))
    pool = sample_messages(rng)
    msgs = [pool[i] for i in picks]
    frames = pymavlink_frames(msgs)
    stream = junk + b"".join(frames)
    p = MavlinkParser()
    got = [bytes(m.get_msgbuf()) for k in range(0, len(stream), chunk) for m in p.feed(stream[k : k + chunk])]
    # Leading junk can pose as a start and hide at most the first frame; everything after it arrives.
    assert got[-(len(frames) - 1) :] == frames[1:] if len(frames) > 1 else len(got) <= 1
