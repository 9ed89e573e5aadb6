"""Encode/parse throughput of the bridge's MAVLink codec beside pymavlink's, and over a pty link.

Run: .venv/bin/python tests/bridge/bench_bridge.py   (figures go into docs/bridge.md)
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from pymavlink import mavutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.links import PtyLink
from firmware_bridge.mavlink_codec import MavlinkEncoder, MavlinkParser


def telemetry_mix(n: int) -> list[Any]:
    rng = np.random.default_rng(0)
    f = lambda: float(rng.normal())  # noqa: E731
    out: list[Any] = []
    for k in range(n):
        kind = k % 4
        if kind == 0:
            out.append(mavlink.MAVLink_local_position_ned_message(k, f(), f(), f(), f(), f(), f()))
        elif kind == 1:
            out.append(
                mavlink.MAVLink_attitude_quaternion_message(
                    k, f(), f(), f(), f(), f(), f(), f(), [0, 0, 0, 0]
                )
            )
        elif kind == 2:
            out.append(mavlink.MAVLink_highres_imu_message(k, *[f() for _ in range(13)], 0xFFFF, 0))
        else:
            out.append(
                mavlink.MAVLink_set_position_target_local_ned_message(
                    k, 1, 1, 1, 1991, 0, 0, 0, f(), f(), f(), 0, 0, 0, 0, f()
                )
            )
    return out


def best_of(fn: Any, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class _Null:
    def write(self, data: bytes) -> None:
        pass


def main() -> None:
    n = 20_000
    msgs = telemetry_mix(n)
    enc = MavlinkEncoder(1, 1)
    mav = mavlink.MAVLink(_Null(), srcSystem=1, srcComponent=1)
    t_ours = best_of(lambda: [enc.encode(m) for m in msgs])
    t_theirs = best_of(lambda: [mav.send(m) for m in msgs])
    print(
        f"encode   ours {t_ours / n * 1e6:6.2f} µs/msg   pymavlink MAVLink.send {t_theirs / n * 1e6:6.2f} µs/msg"
    )

    stream = b"".join(MavlinkEncoder(1, 1).encode(m) for m in msgs)
    t_ours = best_of(lambda: MavlinkParser().feed(stream))
    t_theirs = best_of(lambda: mavlink.MAVLink(None).parse_buffer(stream))
    print(
        f"parse    ours {t_ours / n * 1e6:6.2f} µs/msg   pymavlink parse_buffer  {t_theirs / n * 1e6:6.2f} µs/msg"
    )
    chunks = [stream[k : k + 4096] for k in range(0, len(stream), 4096)]

    def ours_chunked() -> None:
        p = MavlinkParser()
        for c in chunks:
            p.feed(c)

    t_ours = best_of(ours_chunked)
    print(f"parse    ours, 4 KiB chunks {t_ours / n * 1e6:6.2f} µs/msg")

    # Over a real pty: the vehicle writes the whole stream; the companion reads until it has all.
    for label, reader in (
        ("ours: PtyLink→SerialLink.read + MavlinkParser", "ours"),
        ("pymavlink mavutil serial recv_msg", "pymavlink"),
    ):
        master = PtyLink()
        writer = threading.Thread(target=lambda m=master: _write_all(m, stream))
        got = 0
        if reader == "ours":
            from firmware_bridge.links import open_link

            link = open_link(f"serial://{master.device_path}?baud=921600")
            p = MavlinkParser()
            t0 = time.perf_counter()
            writer.start()
            while got < n and time.perf_counter() - t0 < 30:
                got += len(p.feed(link.read()))
            dt = time.perf_counter() - t0
            link.close()
        else:
            conn = mavutil.mavlink_connection(
                master.device_path, baud=921600, source_system=1, source_component=191
            )
            t0 = time.perf_counter()
            writer.start()
            while got < n and time.perf_counter() - t0 < 30:
                if conn.recv_msg() is not None:
                    got += 1
            dt = time.perf_counter() - t0
            conn.close()
        writer.join()
        master.close()
        print(
            f"pty      {label:50s} {got / dt:9.0f} msg/s  ({dt / max(got, 1) * 1e6:5.2f} µs/msg, {got} of {n})"
        )


def _write_all(link: PtyLink, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            k = os.write(link.fileno(), view[:4096])
        except BlockingIOError:
            time.sleep(0.0001)
            continue
        view = view[k:]


if __name__ == "__main__":
    main()
