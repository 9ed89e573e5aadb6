"""Watch a real firmware vehicle on its second link: what the autopilot itself reports.

The agent's flight log says what the agent believed; tests and campaigns judge safety from what
the firmware reports on another link (LOCAL_POSITION_NED, HEARTBEAT, EXTENDED_SYS_STATE,
STATUSTEXT), recorded by a thread whose socket lives in the firmware's network namespace.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymavlink.dialects.v20 import common as mavlink2

from sitl.firmware import FirmwareSitl, FirmwareVehicle

_LOCAL_POSITION_NED = 32
_EXTENDED_SYS_STATE = 245


@dataclass
class Track:
    """What the firmware said: positions (wall time, NED) and heartbeats (wall time, mode, armed)."""

    t_s: list[float] = field(default_factory=list)
    pos_ned_m: list[tuple[float, float, float]] = field(default_factory=list)
    vel_ned_m_s: list[tuple[float, float, float]] = field(default_factory=list)
    modes: list[tuple[float, int, bool]] = field(default_factory=list)
    landed_state: list[tuple[float, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def positions(self, since_s: float = -np.inf, until_s: float = np.inf) -> np.ndarray:
        """[N, 3] positions received in [since_s, until_s] (wall time)."""
        t = np.asarray(self.t_s)
        keep = (t >= since_s) & (t <= until_s)
        return np.asarray(self.pos_ned_m[: len(t)], dtype=float).reshape(-1, 3)[keep]

    def velocities(self, since_s: float = -np.inf, until_s: float = np.inf) -> np.ndarray:
        """[N, 3] velocities received in [since_s, until_s] (wall time)."""
        t = np.asarray(self.t_s)
        keep = (t >= since_s) & (t <= until_s)
        return np.asarray(self.vel_ned_m_s[: len(t)], dtype=float).reshape(-1, 3)[keep]


class Observer:
    """A thread recording one vehicle's telemetry from its second link until :meth:`stop`."""

    def __init__(self, fw: FirmwareSitl, vehicle: FirmwareVehicle) -> None:
        self.fw, self.vehicle, self.track = fw, vehicle, Track()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._peer: tuple[str, int] | None = None
        self.mav = mavlink2.MAVLink(None, srcSystem=250, srcComponent=190)
        """Encoder for :meth:`send` (a ground station's ids, 250/190)."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("observer could not open the second link")

    def _run(self) -> None:
        with self.fw.observer_socket(self.vehicle) as sock:
            sock.settimeout(0.2)
            mav = mavlink2.MAVLink(None, srcSystem=250, srcComponent=190)
            mav.robust_parsing = True
            self._sock = sock
            if self.vehicle.kind == "px4":  # PX4's GCS link listens on 18570 + instance
                self._peer = ("127.0.0.1", 18570 + self.vehicle.instance)
            self._ready.set()
            next_ask = 0.0
            while not self._stop.is_set():
                now = time.time()
                if self.vehicle.kind == "ardupilot" and now >= next_ask:
                    # ArduCopter streams nothing until asked; ask for the state at 20 Hz on this link.
                    for msgid, hz in ((_LOCAL_POSITION_NED, 20.0), (_EXTENDED_SYS_STATE, 2.0)):
                        msg = mav.command_long_encode(
                            self.vehicle.sysid, 1, 511, 0, msgid, 1e6 / hz, 0, 0, 0, 0, 0
                        )
                        self.send(msg)
                    next_ask = now + 5.0
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for m in mav.parse_buffer(data) or []:
                    if m.get_srcSystem() != self.vehicle.sysid or m.get_srcComponent() != 1:
                        continue
                    kind = m.get_type()
                    if kind == "LOCAL_POSITION_NED":
                        # Time last: a reader on another thread takes len(t_s) samples of each.
                        self.track.pos_ned_m.append((m.x, m.y, m.z))
                        self.track.vel_ned_m_s.append((m.vx, m.vy, m.vz))
                        self.track.t_s.append(now)
                    elif kind == "HEARTBEAT":
                        self.track.modes.append((now, m.custom_mode, bool(m.base_mode & 0x80)))
                    elif kind == "EXTENDED_SYS_STATE":
                        self.track.landed_state.append((now, m.landed_state))
                    elif kind == "STATUSTEXT":
                        self.track.texts.append(m.text)

    def send(self, msg: Any) -> None:
        """Send one MAVLink message to the vehicle on the second link (from any thread)."""
        sock = self._sock
        if sock is None:
            return
        with self._send_lock:
            data = msg.pack(self.mav)
            if self._peer is None:
                sock.send(data)
            else:
                sock.sendto(data, self._peer)

    def stop(self) -> Track:
        """End the recording; the track so far."""
        self._stop.set()
        self._thread.join(5)
        return self.track
