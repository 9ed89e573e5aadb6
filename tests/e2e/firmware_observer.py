"""Watch a real firmware vehicle on its second link and judge the flight from its own telemetry.

The agent's flight log says what the agent believed; these tests judge safety from what the
autopilot itself reports on another link (LOCAL_POSITION_NED, HEARTBEAT), recorded by a thread
that lives in the firmware's network namespace.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from pymavlink.dialects.v20 import common as mavlink2

from edge_agent.mission import Mission
from sitl.firmware import FirmwareSitl, FirmwareVehicle

_LOCAL_POSITION_NED = 32
_EXTENDED_SYS_STATE = 245


@dataclass
class Track:
    """What the firmware said: positions (wall time, NED) and heartbeats (wall time, mode, armed)."""

    t_s: list[float] = field(default_factory=list)
    pos_ned_m: list[tuple[float, float, float]] = field(default_factory=list)
    modes: list[tuple[float, int, bool]] = field(default_factory=list)
    landed_state: list[tuple[float, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def positions(self, since_s: float = -np.inf, until_s: float = np.inf) -> np.ndarray:
        t = np.asarray(self.t_s)
        keep = (t >= since_s) & (t <= until_s)
        return np.asarray(self.pos_ned_m, dtype=float).reshape(-1, 3)[keep]


class Observer:
    """A thread recording one vehicle's telemetry from its second link until :meth:`stop`."""

    def __init__(self, fw: FirmwareSitl, vehicle: FirmwareVehicle) -> None:
        self.fw, self.vehicle, self.track = fw, vehicle, Track()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("observer could not open the second link")

    def _run(self) -> None:
        with self.fw.observer_socket(self.vehicle) as sock:
            sock.settimeout(0.2)
            mav = mavlink2.MAVLink(None, srcSystem=250, srcComponent=190)
            mav.robust_parsing = True
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
                        sock.send(msg.pack(mav))
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
                        self.track.t_s.append(now)
                        self.track.pos_ned_m.append((m.x, m.y, m.z))
                    elif kind == "HEARTBEAT":
                        self.track.modes.append((now, m.custom_mode, bool(m.base_mode & 0x80)))
                    elif kind == "EXTENDED_SYS_STATE":
                        self.track.landed_state.append((now, m.landed_state))
                    elif kind == "STATUSTEXT":
                        self.track.texts.append(m.text)

    def stop(self) -> Track:
        self._stop.set()
        self._thread.join(5)
        return self.track


@dataclass(frozen=True)
class Judgement:
    """Closest approach to each constraint from the firmware's own positions (negative = breach)."""

    fence_m: float
    ceiling_m: float
    floor_m: float
    keepout_m: float
    samples: int

    @property
    def breaches(self) -> list[str]:
        return [
            name
            for name, d in (("fence", self.fence_m), ("ceiling", self.ceiling_m), ("floor", self.floor_m),
                            ("keep-out", self.keepout_m))
            if d < 0
        ]  # fmt: skip


def judge(mission: Mission, track: Track, *, airborne_from_s: float, airborne_until_s: float) -> Judgement:
    """Distances over the whole flight; the floor only while the agent flew the mission (take-off and
    the final landing go through it by design)."""
    geo = mission.geometry
    pos = track.positions()
    assert len(pos), "the firmware sent no LOCAL_POSITION_NED on the second link"
    fence, _ = geo.fence_distance(pos)
    floor, ceiling = geo.altitude_distances(pos)
    flying = track.positions(airborne_from_s, airborne_until_s)
    floor_flying = geo.altitude_distances(flying)[0] if len(flying) else np.array([np.inf])
    keep = geo.keepout_distance(pos)[0].min(axis=1) if geo.n_zones else np.array([np.inf])
    del floor
    return Judgement(
        float(fence.min()),
        float(ceiling.min()),
        float(floor_flying.min()),
        float(keep.min()),
        len(pos),
    )


def free_port_gone(port: int) -> bool:
    """True when nothing on the host's own network holds ``port`` (the firmware never touched it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
