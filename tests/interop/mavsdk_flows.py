"""MAVSDK-Python's own examples (takeoff_and_land.py, offboard_velocity_ned.py, mission.py,
telemetry.py), cut to what each checks, as flows that run against any PX4: the emulator (in the
test's process, tests/interop/test_mavsdk.py) or the real firmware (as a script inside its network
namespace, tests/interop/test_real_firmware_clients.py)::

    python -m tests.interop.mavsdk_flows FLOW --address udpin://0.0.0.0:14540

Each flow starts and ends with the vehicle landed and disarmed, so that flows can follow each
other on one vehicle; it returns what it saw (printed as the script's last line, JSON) and raises
AssertionError naming what never came (the script's exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # the package announces its rename to mavsdk-grpc
    from mavsdk import System
    from mavsdk.action import ActionError
    from mavsdk.mission import MissionItem, MissionPlan
    from mavsdk.offboard import VelocityNedYaw
    from mavsdk.param import ParamError

M_PER_DEG_LAT = 111_320.0


async def first(stream: AsyncIterator[Any], timeout_s: float, what: str) -> Any:
    """The first sample of a MAVSDK subscription, or fail naming it."""
    return await until(stream, lambda _: True, timeout_s, f"a telemetry.{what} sample")


async def until(stream: AsyncIterator[Any], pred: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
    """The first sample satisfying ``pred``, or fail naming what was awaited and the last sample seen."""
    last: list[Any] = []

    async def get() -> Any:
        async for sample in stream:
            if pred(sample):
                return sample
            last[:] = [sample]
        raise AssertionError(f"{what}: stream ended")

    try:
        return await asyncio.wait_for(get(), timeout_s)
    except TimeoutError:
        seen = f"last sample: {last[0]}" if last else "no sample at all"
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({seen})") from None


async def arm(drone: System, timeout_s: float = 30.0) -> None:
    """``action.arm()``, retried while the autopilot's pre-arm checks still refuse (as a user does)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        try:
            await drone.action.arm()
            return
        except ActionError as exc:
            if loop.time() > end:
                raise AssertionError(f"arming refused for {timeout_s} s: {exc}") from None
            await asyncio.sleep(1.0)


async def landed(drone: System, timeout_s: float = 60.0) -> None:
    await until(drone.telemetry.in_air(), lambda a: not a, timeout_s, "landed (in_air false)")
    await until(drone.telemetry.armed(), lambda a: not a, 15, "disarmed after landing")


def offset(lat0: float, lon0: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat0 + north_m / M_PER_DEG_LAT, lon0 + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat0)))


def ne_m(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    return (lat - lat0) * M_PER_DEG_LAT, (lon - lon0) * M_PER_DEG_LAT * math.cos(math.radians(lat0))


async def telemetry(drone: System) -> dict[str, Any]:
    """Every subscription telemetry.py uses delivers a sample."""
    t = drone.telemetry
    pos = await first(t.position(), 5, "position")
    home = await first(t.home(), 5, "home")
    assert abs(pos.relative_altitude_m) < 0.5, pos
    assert abs(pos.latitude_deg - home.latitude_deg) * M_PER_DEG_LAT < 2.0, (pos, home)
    att = await first(t.attitude_euler(), 5, "attitude_euler")
    assert abs(att.roll_deg) < 5 and abs(att.pitch_deg) < 5, att
    gps = await first(t.gps_info(), 5, "gps_info")
    assert gps.num_satellites >= 6, gps
    vel = await first(t.velocity_ned(), 5, "velocity_ned")
    assert math.isfinite(vel.north_m_s)
    assert (await first(t.in_air(), 5, "in_air")) is False
    assert (await first(t.armed(), 5, "armed")) is False
    mode = await first(t.flight_mode(), 5, "flight_mode")
    bat = await first(t.battery(), 5, "battery")
    assert 0 < bat.remaining_percent <= 100 and bat.voltage_v > 10, bat
    return {
        "lat": pos.latitude_deg,
        "home_lat": home.latitude_deg,
        "home_amsl_m": home.absolute_altitude_m,
        "mode": mode.name,
        "satellites": gps.num_satellites,
    }


async def takeoff_and_land(drone: System) -> dict[str, Any]:
    """takeoff_and_land.py with the usual "wait until relative altitude > h" loop."""
    await drone.action.set_takeoff_altitude(3.0)
    await arm(drone)
    await drone.action.takeoff()
    pos = await until(
        drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.5, 30, "relative altitude > 2.5 m"
    )
    assert pos.relative_altitude_m < 4.0, pos
    await until(drone.telemetry.in_air(), lambda a: a, 5, "in_air")
    await drone.action.land()
    await landed(drone)
    return {"relative_altitude_m": pos.relative_altitude_m}


async def offboard_velocity(drone: System) -> dict[str, Any]:
    """offboard_velocity_ned.py: ONE setpoint, then ``offboard.start()`` (real PX4 accepts it)."""
    await arm(drone)
    await drone.action.takeoff()
    await until(drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.0, 30, "takeoff")
    await drone.offboard.set_velocity_ned(VelocityNedYaw(0.0, 0.0, 0.0, 0.0))
    await drone.offboard.start()
    await until(drone.telemetry.flight_mode(), lambda m: m.name == "OFFBOARD", 5, "OFFBOARD")
    await drone.offboard.set_velocity_ned(VelocityNedYaw(2.0, 0.0, 0.0, 0.0))
    try:
        vel = await until(
            drone.telemetry.velocity_ned(), lambda v: v.north_m_s > 1.6, 20, "north velocity > 1.6 m/s"
        )
    except AssertionError as exc:  # say whether PX4 left OFFBOARD (setpoint loss) or just lagged
        mode = await first(drone.telemetry.flight_mode(), 5, "flight_mode")
        raise AssertionError(f"{exc}; flight mode then: {mode.name}") from None
    assert abs(vel.east_m_s) < 0.5, vel
    await drone.offboard.set_velocity_ned(VelocityNedYaw(0.0, 0.0, 0.0, 0.0))
    await drone.offboard.stop()
    await drone.action.land()
    await landed(drone)
    return {"north_m_s": vel.north_m_s}


async def mission(drone: System) -> dict[str, Any]:
    """mission.py: two waypoints 15 m out at 5 m, uploaded, read back, flown to the end."""
    home = await first(drone.telemetry.home(), 5, "home")
    lat0, lon0 = home.latitude_deg, home.longitude_deg
    nan = float("nan")
    items = [
        MissionItem(
            lat, lon, 5.0, 5.0, True, nan, nan, MissionItem.CameraAction.NONE, nan, nan, 2.0, nan, nan,
            MissionItem.VehicleAction.NONE,
        )
        for lat, lon in (offset(lat0, lon0, 15.0, 0.0), offset(lat0, lon0, 15.0, 15.0))
    ]  # fmt: skip
    await drone.mission.set_return_to_launch_after_mission(False)
    await drone.mission.upload_mission(MissionPlan(items))
    downloaded = await drone.mission.download_mission()
    assert len(downloaded.mission_items) == 2, downloaded
    assert abs(downloaded.mission_items[1].longitude_deg - items[1].longitude_deg) < 1e-6
    await arm(drone)
    await drone.mission.start_mission()
    await until(
        drone.mission.mission_progress(), lambda p: p.current == p.total == 2, 90, "mission progress 2/2"
    )
    assert await drone.mission.is_mission_finished()
    # MISSION_ITEM_REACHED for the last item comes as the vehicle enters its acceptance radius; it
    # then holds there. Real PX4 SIH was once seen 6.3 m up as it arrived (its baro-fused altitude
    # wanders): the altitude is judged over the hold, not on the one sample at arrival.
    pos = await until(
        drone.telemetry.position(),
        lambda p: (
            math.dist(ne_m(lat0, lon0, p.latitude_deg, p.longitude_deg), (15.0, 15.0)) < 2.5
            and abs(p.relative_altitude_m - 5.0) < 1.0
        ),
        15,
        "the vehicle within 2.5 m of the last waypoint, 4-6 m up",
    )
    mode = await first(drone.telemetry.flight_mode(), 5, "flight_mode")
    await drone.action.land()
    await landed(drone)
    return {"end_ne_m": ne_m(lat0, lon0, pos.latitude_deg, pos.longitude_deg), "mode_after": mode.name}


async def goto_and_params(drone: System) -> dict[str, Any]:
    """An unknown parameter is refused; a known one reads; ``goto_location`` flies there."""
    try:
        await asyncio.wait_for(drone.param.set_param_float("NO_SUCH_PARAM", 1.0), 15)
    except ParamError as exc:
        refused = str(exc)
    else:
        raise AssertionError("setting NO_SUCH_PARAM was accepted")
    loss_timeout = await drone.param.get_param_float("COM_OF_LOSS_T")
    await arm(drone)
    await drone.action.takeoff()
    await until(drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.0, 30, "takeoff")
    home = await first(drone.telemetry.home(), 5, "home")
    lat, lon = offset(home.latitude_deg, home.longitude_deg, 10.0, 0.0)
    await drone.action.goto_location(lat, lon, home.absolute_altitude_m + 4.0, 0.0)
    await until(
        drone.telemetry.position(),
        lambda p: abs(p.latitude_deg - lat) * M_PER_DEG_LAT < 1.0 and abs(p.relative_altitude_m - 4.0) < 0.5,
        30,
        "goto_location reached",
    )
    await drone.action.land()
    await landed(drone)
    return {"unknown_param": refused, "COM_OF_LOSS_T": loss_timeout}


FLOWS: dict[str, Callable[[System], Awaitable[dict[str, Any]]]] = {
    f.__name__: f for f in (telemetry, takeoff_and_land, offboard_velocity, mission, goto_and_params)
}


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_flow(name: str, address: str, ready_timeout_s: float = 20.0) -> dict[str, Any]:
    """Connect as the examples do (mavsdk_server on a free gRPC port), wait for a global position
    and home, run flow ``name``."""
    port = free_tcp_port()
    # each step said as it starts: a flow that hangs (a mavsdk_server that never answers) shows where
    print(f"{name}: starting mavsdk_server (gRPC port {port}) on {address}", flush=True)
    drone = System(port=port)
    await drone.connect(system_address=address)
    print(f"{name}: mavsdk_server up; waiting for the vehicle", flush=True)
    try:
        await until(drone.core.connection_state(), lambda s: s.is_connected, 20, "connection")
        print(f"{name}: connected; waiting for global position and home", flush=True)
        await until(
            drone.telemetry.health(),
            lambda h: h.is_global_position_ok and h.is_home_position_ok,
            ready_timeout_s,
            "health: global position and home ok",
        )
        return await FLOWS[name](drone)
    finally:
        drone._stop_mavsdk_server()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flow", choices=sorted(FLOWS))
    parser.add_argument("--address", required=True, help="MAVSDK connection URL, e.g. udpin://0.0.0.0:14540")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        seen = asyncio.run(run_flow(args.flow, args.address, args.ready_timeout))
    except AssertionError as exc:
        print(f"FAIL {args.flow}: {exc}", flush=True)
        return 1
    print(json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
