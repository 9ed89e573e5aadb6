"""Both MAVLink adapters fly the built-in SITL in the matching flavour, over a pty serial line and UDP."""

from __future__ import annotations

import time

import numpy as np
import pytest

from firmware_bridge.adapters import ArduPilotGuided, Px4Offboard, activate
from firmware_bridge.links import Link, PtyLink, UdpLink, open_link
from firmware_bridge.session import MavlinkSession
from firmware_bridge.types import VelocityNedYawRate

sitl_sim = pytest.importorskip("sitl.sim")
sitl_vehicle = pytest.importorskip("sitl.mavlink_vehicle")

TICK_S = 0.02


def link_pair(kind: str) -> tuple[Link, Link]:
    """(companion end, vehicle end)."""
    if kind == "pty":
        master = PtyLink()
        return master, open_link(f"serial://{master.device_path}?baud=921600")
    vehicle = open_link("udpin://127.0.0.1:0")
    assert isinstance(vehicle, UdpLink)
    return open_link(f"udpout://127.0.0.1:{vehicle.local_address[1]}"), vehicle


@pytest.mark.parametrize("kind", ["pty", "udp"])
@pytest.mark.parametrize("flavor", ["px4", "ardupilot"])
def test_adapter_flies_the_sitl(flavor: str, kind: str) -> None:
    sim = sitl_sim.Sim(1, rng=np.random.default_rng(0))
    vehicle = sitl_vehicle.make_vehicle(sim, flavor, fast_boot=True)
    companion_link, vehicle_link = link_pair(kind)
    t_ns = [0]
    clock = lambda: t_ns[0]  # noqa: E731 - fake time: the sim advances only as we say
    session = MavlinkSession(companion_link, clock)
    session.set_healthy(True)
    adapter = Px4Offboard(session) if flavor == "px4" else ArduPilotGuided(session)

    def tick(now_ns: int) -> None:
        now_s = now_ns / 1e9
        vehicle.receive(vehicle_link.read(), now_s)
        out = vehicle.step(now_s)
        if out:
            vehicle_link.write(out)
        time.sleep(0.0003)  # let the kernel move the bytes
        session.poll(now_ns)

    def advance(s: float) -> None:
        t_ns[0] += round(s * 1e9)

    try:
        hold = VelocityNedYawRate((0.0, 0.0, -1.0 if flavor == "px4" else 0.0))
        status = activate(
            adapter, tick, hold, clock, takeoff_alt_m=3.0, timeout_s=30, rate_hz=1 / TICK_S, sleep=advance
        )
        assert status.done and adapter.in_control(session.state)
        assert session.state.mode == adapter.external_mode
        # Fly north at 1 m/s for 4 s and check the vehicle went there.
        start = session.state.pos_ned_m
        assert start is not None
        for _ in range(int(4.0 / TICK_S)):
            tick(clock())
            adapter.send(VelocityNedYawRate((1.0, 0.0, 0.0)))
            assert adapter.check_control(session.state, clock()) is None
            advance(TICK_S)
        end = session.state.pos_ned_m
        assert end is not None
        assert end.value[0] - start.value[0] > 2.0
        assert end.stamp_ns > start.stamp_ns
        assert session.parser.crc_errors == 0
    finally:
        companion_link.close()
        vehicle_link.close()
