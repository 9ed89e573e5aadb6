"""One small MAVLink client for every conformance target (emulator or real firmware).

It speaks over a plain socket (UDP or TCP) so that a test can make the socket wherever the target
lives (the host for the emulator, the firmware's private network namespace for the real builds)
and then use it from any thread. It sends HEARTBEAT at 1 Hz as a ground station, records every
message from the vehicle with its arrival time (``time.monotonic()``), and offers the few
request/answer exchanges the suite needs: COMMAND_LONG with an ACK wait, parameter read/set,
message intervals, data streams and a setpoint stream.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mav

Message = Any  # a pymavlink MAVLink_message
GCS_SYSID, GCS_COMPID = 255, 190
VELOCITY_MASK = 0b0000_1111_1100_0111  # 4039: velocity only, ignore yaw and yaw rate


def result_name(result: int | None) -> str:
    """MAV_RESULT as a name (``None``: no COMMAND_ACK came)."""
    if result is None:
        return "no ACK"
    entry = mav.enums["MAV_RESULT"].get(result)
    return entry.name.removeprefix("MAV_RESULT_") if entry is not None else str(result)


@dataclass
class Received:
    t: float
    msg: Message

    @property
    def type(self) -> str:
        return str(self.msg.get_type())


class MavClient:
    """A GCS on one link to one vehicle (``target_system``, component 1)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        peer: tuple[str, int] | None = None,
        target_system: int = 1,
        target_component: int = 1,
    ) -> None:
        self.sock = sock
        self.udp = sock.type == socket.SOCK_DGRAM
        self.peer = peer  # UDP: where to send; learnt from the first datagram when None
        self.target_system = target_system
        self.target_component = target_component
        self._tx = mav.MAVLink(None, srcSystem=GCS_SYSID, srcComponent=GCS_COMPID)
        self._rx = mav.MAVLink(None)
        self._rx.robust_parsing = True
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._setpoint: tuple[float, float, float] | None = None
        self._setpoint_hz = 10.0
        self.setpoints_sent = 0
        self._threads = [
            threading.Thread(target=self._read_loop, name="conf-rx", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="conf-hb", daemon=True),
            threading.Thread(target=self._setpoint_loop, name="conf-sp", daemon=True),
        ]

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> MavClient:
        for th in self._threads:
            th.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=2.0)
        self.sock.close()

    def __enter__(self) -> MavClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        with self._send_lock:
            data = msg.pack(self._tx)
            self._tx.seq = (self._tx.seq + 1) % 256
            try:
                if self.udp:
                    if self.peer is not None:
                        self.sock.sendto(data, self.peer)
                else:
                    self.sock.sendall(data)
            except OSError:
                pass  # a lost peer is seen as silence by the test

    def _read_loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                if self.udp:
                    data, addr = self.sock.recvfrom(65536)
                    if self.peer is None:
                        self.peer = addr
                else:
                    data = self.sock.recv(65536)
                    if not data:
                        return
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            msgs = self._rx.parse_buffer(data) or []
            mine = [m for m in msgs if m.get_srcSystem() == self.target_system and m.get_type() != "BAD_DATA"]
            if mine:
                with self._cond:
                    self.received.extend(Received(now, m) for m in mine)
                    self._cond.notify_all()

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            self.send(mav.MAVLink_heartbeat_message(mav.MAV_TYPE_GCS, mav.MAV_AUTOPILOT_INVALID, 0, 0, 0, 3))
            self._stop.wait(1.0)

    def _setpoint_loop(self) -> None:
        while not self._stop.is_set():
            sp = self._setpoint
            if sp is not None:
                self.send_velocity(*sp)
            self._stop.wait(1.0 / self._setpoint_hz)

    # -- reading the record ---------------------------------------------------------------------
    def since(self, t0: float, kind: str | None = None, t1: float = math.inf) -> list[Received]:
        with self._cond:
            return [r for r in self.received if t0 <= r.t < t1 and (kind is None or r.type == kind)]

    def wait_for(
        self, pred: Callable[[Received], bool], *, since: float, timeout_s: float
    ) -> Received | None:
        """The first message at or after ``since`` that satisfies ``pred``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        i = 0
        with self._cond:
            while True:
                while i < len(self.received):
                    r = self.received[i]
                    i += 1
                    if r.t >= since and pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def heartbeat(self, *, since: float, timeout_s: float = 2.0) -> Message | None:
        r = self.wait_for(
            lambda r: r.type == "HEARTBEAT" and r.msg.get_srcComponent() == 1,
            since=since,
            timeout_s=timeout_s,
        )
        return None if r is None else r.msg

    def texts(self, t0: float, t1: float = math.inf) -> list[str]:
        """STATUSTEXTs received in [t0, t1), long ones reassembled from their chunks (``id`` > 0)."""
        out: list[str] = []
        open_id: dict[int, int] = {}  # STATUSTEXT id -> index in out
        for r in self.since(t0, "STATUSTEXT", t1):
            part = str(r.msg.text).split("\x00", 1)[0]
            ident = int(getattr(r.msg, "id", 0) or 0)
            if ident and ident in open_id:
                out[open_id[ident]] += part
            else:
                if ident:
                    open_id[ident] = len(out)
                out.append(part)
        return [t.strip() for t in out]

    # -- requests -------------------------------------------------------------------------------
    def command_long(self, command: int, *params: float, timeout_s: float = 2.0) -> tuple[int | None, float]:
        """Send COMMAND_LONG once; (MAV_RESULT or None, seconds to the ACK)."""
        p = [float(x) for x in params] + [0.0] * (7 - len(params))
        t0 = time.monotonic()
        self.send(mav.MAVLink_command_long_message(self.target_system, self.target_component, command, 0, *p))
        r = self.wait_for(
            lambda r: r.type == "COMMAND_ACK" and r.msg.command == command, since=t0, timeout_s=timeout_s
        )
        if r is None:
            return None, math.inf
        return int(r.msg.result), r.t - t0

    def set_message_interval(self, msgid: int, hz: float) -> int | None:
        interval_us = 1e6 / hz if hz > 0 else -1
        return self.command_long(mav.MAV_CMD_SET_MESSAGE_INTERVAL, msgid, interval_us)[0]

    def request_data_stream(self, stream_id: int, hz: int) -> None:
        self.send(
            mav.MAVLink_request_data_stream_message(
                self.target_system, self.target_component, stream_id, hz, 1
            )
        )

    def param_read(self, name: str) -> float:
        """Send PARAM_REQUEST_READ by name; returns the send time (answers are in the record)."""
        t0 = time.monotonic()
        self.send(
            mav.MAVLink_param_request_read_message(
                self.target_system, self.target_component, name.encode(), -1
            )
        )
        return t0

    def param_set(self, name: str, value: float, param_type: int = mav.MAV_PARAM_TYPE_REAL32) -> float:
        t0 = time.monotonic()
        self.send(
            mav.MAVLink_param_set_message(
                self.target_system, self.target_component, name.encode(), value, param_type
            )
        )
        return t0

    def set_mode(self, custom_main: int, custom_sub: int = 0) -> tuple[int | None, float]:
        """DO_SET_MODE with the custom-mode flag (PX4: main/sub mode; ArduPilot: mode number)."""
        return self.command_long(
            mav.MAV_CMD_DO_SET_MODE, mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, custom_main, custom_sub
        )

    def send_velocity(self, vn: float, ve: float, vd: float) -> None:
        self.setpoints_sent += 1
        self.send(
            mav.MAVLink_set_position_target_local_ned_message(
                int(time.monotonic() * 1000) & 0xFFFFFFFF,
                self.target_system,
                self.target_component,
                mav.MAV_FRAME_LOCAL_NED,
                VELOCITY_MASK,
                0, 0, 0, vn, ve, vd, 0, 0, 0, 0, 0,
            )
        )  # fmt: skip

    def stream_velocity(self, v: tuple[float, float, float] | None, hz: float = 10.0) -> None:
        """Keep sending this velocity setpoint at ``hz`` (None stops the stream)."""
        self._setpoint_hz = hz
        self._setpoint = v
