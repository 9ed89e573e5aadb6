"""Judge a real-firmware flight from the firmware's own telemetry (sitl.firmware_observer)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

from edge_agent.mission import Mission
from sitl.firmware_observer import Track


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
