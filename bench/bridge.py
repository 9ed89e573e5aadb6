"""Section 4 of the benchmark: the bridge's MAVLink encode / parse beside pymavlink's own helpers.

``edge-agent bench --sections bridge`` runs it inside the whole benchmark; ``python -m bench.bridge``
prints this section alone, as docs/bridge.md quotes it. Encode and parse are timed best-of-``repeat`` over a
telemetry mix (LOCAL_POSITION_NED, ATTITUDE_QUATERNION, HIGHRES_IMU, SET_POSITION_TARGET_LOCAL_NED);
the pty figures push the whole stream through a real pseudo-terminal and read it back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.links import PtyLink, open_link
from firmware_bridge.mavlink_codec import MavlinkEncoder, MavlinkParser


def telemetry_mix(n: int, rng: np.random.Generator) -> list[Any]:
    """n pymavlink messages cycling through the four kinds a flight carries most."""
    out: list[Any] = []
    for k in range(n):
        f = rng.normal(size=16).tolist()
        kind = k % 4
        if kind == 0:
            out.append(mavlink.MAVLink_local_position_ned_message(k, *f[:6]))
        elif kind == 1:
            out.append(mavlink.MAVLink_attitude_quaternion_message(k, *f[:7], [0, 0, 0, 0]))
        elif kind == 2:
            out.append(mavlink.MAVLink_highres_imu_message(k, *f[:13], 0xFFFF, 0))
        else:
            out.append(
                mavlink.MAVLink_set_position_target_local_ned_message(
                    k, 1, 1, 1, 1991, 0, 0, 0, f[0], f[1], f[2], 0, 0, 0, 0, f[3]
                )
            )
    return out


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """The shortest of ``repeat`` runs of fn, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class _Null:
    def write(self, data: bytes) -> None:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            k = os.write(fd, view[:4096])
        except BlockingIOError:
            time.sleep(0.0001)
            continue
        view = view[k:]


def _pty_rate(stream: bytes, n: int, reader: str, timeout_s: float) -> dict[str, float]:
    """Messages per second read back over a pty, with our link + parser or pymavlink's helper."""
    master = PtyLink()
    writer = threading.Thread(target=_write_all, args=(master.fileno(), stream), daemon=True)
    got = 0
    if reader == "ours":
        link = open_link(f"serial://{master.device_path}?baud=921600")
        parser = MavlinkParser()
        t0 = time.perf_counter()
        writer.start()
        while got < n and time.perf_counter() - t0 < timeout_s:
            got += len(parser.feed(link.read()))
        dt = time.perf_counter() - t0
        link.close()
    else:
        conn = mavutil.mavlink_connection(
            master.device_path, baud=921600, source_system=1, source_component=191
        )
        t0 = time.perf_counter()
        writer.start()
        while got < n and time.perf_counter() - t0 < timeout_s:
            if conn.recv_msg() is not None:
                got += 1
        dt = time.perf_counter() - t0
        conn.close()
    writer.join(timeout=timeout_s)
    master.close()
    return {"msg_per_s": got / dt, "us_per_msg": dt / max(got, 1) * 1e6, "received": got, "sent": n}


def measure_bridge(n: int, repeat: int, rng: np.random.Generator, *, pty: bool = True) -> dict[str, Any]:
    """Encode / parse µs per message, ours and pymavlink's, and pty read-back rates."""
    msgs = telemetry_mix(n, rng)
    enc = MavlinkEncoder(1, 1)
    mav = mavlink.MAVLink(_Null(), srcSystem=1, srcComponent=1)
    out: dict[str, Any] = {"messages": n}
    ours = best_of(lambda: [enc.encode(m) for m in msgs], repeat)
    theirs = best_of(lambda: [mav.send(m) for m in msgs], repeat)
    out["encode_us_per_msg"] = {"ours": ours / n * 1e6, "pymavlink_send": theirs / n * 1e6}
    stream = b"".join(MavlinkEncoder(1, 1).encode(m) for m in msgs)
    ours = best_of(lambda: MavlinkParser().feed(stream), repeat)
    theirs = best_of(lambda: mavlink.MAVLink(None).parse_buffer(stream), repeat)
    chunks = [stream[k : k + 4096] for k in range(0, len(stream), 4096)]

    def ours_chunked() -> None:
        p = MavlinkParser()
        for c in chunks:
            p.feed(c)

    chunked = best_of(ours_chunked, repeat)
    out["parse_us_per_msg"] = {
        "ours": ours / n * 1e6,
        "ours_4k_chunks": chunked / n * 1e6,
        "pymavlink_parse_buffer": theirs / n * 1e6,
    }
    if pty:
        out["pty"] = {
            "ours_serial_link_parser": _pty_rate(stream, n, "ours", 30.0),
            "pymavlink_mavutil_recv_msg": _pty_rate(stream, n, "pymavlink", 30.0),
        }
    return out


def main() -> None:
    """Print the bridge section alone: 20,000 messages, best of 5 (docs/bridge.md's figures)."""
    n = 20_000
    r = measure_bridge(n, 5, np.random.default_rng(0))
    e, p = r["encode_us_per_msg"], r["parse_us_per_msg"]
    print(f"encode   ours {e['ours']:6.2f} µs/msg   pymavlink MAVLink.send {e['pymavlink_send']:6.2f} µs/msg")
    print(
        f"parse    ours {p['ours']:6.2f} µs/msg   pymavlink parse_buffer  {p['pymavlink_parse_buffer']:6.2f} µs/msg"
    )
    print(f"parse    ours, 4 KiB chunks {p['ours_4k_chunks']:6.2f} µs/msg")
    for label, v in r["pty"].items():
        print(
            f"pty      {label:50s} {v['msg_per_s']:9.0f} msg/s  ({v['us_per_msg']:5.2f} µs/msg, {v['received']} of {n})"
        )


__all__ = ["best_of", "main", "measure_bridge", "telemetry_mix"]

if __name__ == "__main__":
    main()
