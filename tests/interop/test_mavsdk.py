"""MAVSDK-Python (the gRPC API, with its bundled mavsdk_server) against ``edge-agent sitl --flavor px4``.

The flows are MAVSDK's own examples (takeoff_and_land.py, offboard_velocity_ned.py, mission.py,
telemetry.py), cut to what each checks: every telemetry subscription they use delivers samples,
the standard "wait for health, arm, take off, wait for altitude" loop ends, OFFBOARD starts after
ONE setpoint (as on real PX4), a mission uploads and flies to the end.
"""

from __future__ import annotations

import asyncio
import math
import socket
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.interop.conftest import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # the package announces its rename to mavsdk-grpc
    mavsdk = pytest.importorskip("mavsdk", reason="MAVSDK-Python not installed (pip install 'mavsdk<4')")
    from mavsdk import System
    from mavsdk.mission import MissionItem, MissionPlan
    from mavsdk.offboard import VelocityNedYaw

pytestmark = pytest.mark.timeout(120)


async def first(stream: AsyncIterator[Any], timeout_s: float, what: str) -> Any:
    """The first sample of a MAVSDK subscription, or fail naming it."""

    async def get() -> Any:
        async for sample in stream:
            return sample
        raise AssertionError(f"{what}: stream ended")

    try:
        return await asyncio.wait_for(get(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"telemetry.{what} delivered no sample within {timeout_s} s") from None


async def until(stream: AsyncIterator[Any], pred: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
    """The first sample satisfying ``pred``, or fail naming what was awaited."""

    async def get() -> Any:
        async for sample in stream:
            if pred(sample):
                return sample
        raise AssertionError(f"{what}: stream ended")

    try:
        return await asyncio.wait_for(get(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


def run_with_drone(sitl_factory: Any, body: Callable[[System], Awaitable[None]]) -> None:
    """Start the PX4 emulator on UDP (it sends to the port MAVSDK listens on, as PX4 does to 14540)."""
    port = free_port()
    sitl_factory("--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}")

    async def main() -> None:
        drone = System(port=free_port(socket.SOCK_STREAM))  # mavsdk_server's gRPC port
        await drone.connect(system_address=f"udpin://127.0.0.1:{port}")
        try:
            await until(drone.core.connection_state(), lambda s: s.is_connected, 20, "connection")
            await until(
                drone.telemetry.health(),
                lambda h: h.is_global_position_ok and h.is_home_position_ok,
                20,
                "health: global position and home ok",
            )
            await body(drone)
        finally:
            drone._stop_mavsdk_server()

    asyncio.run(main())


def test_every_telemetry_subscription_delivers_samples(sitl_factory: Any) -> None:
    async def body(drone: System) -> None:
        t = drone.telemetry
        pos = await first(t.position(), 5, "position")
        home = await first(t.home(), 5, "home")
        assert pos.latitude_deg == pytest.approx(-35.3632621, abs=1e-5)
        assert home.latitude_deg == pytest.approx(-35.3632621, abs=1e-6)
        assert home.absolute_altitude_m == pytest.approx(584.09, abs=0.01)
        assert abs(pos.relative_altitude_m) < 0.3
        att = await first(t.attitude_euler(), 5, "attitude_euler")
        assert abs(att.roll_deg) < 5 and abs(att.pitch_deg) < 5
        gps = await first(t.gps_info(), 5, "gps_info")
        assert gps.num_satellites >= 6
        vel = await first(t.velocity_ned(), 5, "velocity_ned")
        assert math.isfinite(vel.north_m_s)
        assert (await first(t.in_air(), 5, "in_air")) is False
        assert (await first(t.armed(), 5, "armed")) is False
        mode = await first(t.flight_mode(), 5, "flight_mode")
        assert mode.name == "POSCTL"
        bat = await first(t.battery(), 5, "battery")
        assert 0 < bat.remaining_percent <= 100 and bat.voltage_v > 10

    run_with_drone(sitl_factory, body)


def test_takeoff_and_land_example(sitl_factory: Any) -> None:
    async def body(drone: System) -> None:
        await drone.action.set_takeoff_altitude(3.0)
        await drone.action.arm()
        await drone.action.takeoff()
        pos = await until(
            drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.5, 20, "relative altitude > 2.5 m"
        )
        assert pos.relative_altitude_m < 4.0
        await until(drone.telemetry.in_air(), lambda a: a, 5, "in_air")
        await drone.action.land()
        await until(drone.telemetry.in_air(), lambda a: not a, 30, "landed (in_air false)")
        await until(drone.telemetry.armed(), lambda a: not a, 10, "disarmed after landing")

    run_with_drone(sitl_factory, body)


def test_offboard_velocity_starts_after_one_setpoint_and_moves_the_vehicle(sitl_factory: Any) -> None:
    async def body(drone: System) -> None:
        await drone.action.arm()
        await drone.action.takeoff()
        await until(drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.0, 20, "takeoff")
        # offboard_velocity_ned.py: ONE setpoint, then start (real PX4 accepts this)
        await drone.offboard.set_velocity_ned(VelocityNedYaw(0.0, 0.0, 0.0, 0.0))
        await drone.offboard.start()
        await until(drone.telemetry.flight_mode(), lambda m: m.name == "OFFBOARD", 5, "OFFBOARD")
        await drone.offboard.set_velocity_ned(VelocityNedYaw(2.0, 0.0, 0.0, 0.0))
        vel = await until(
            drone.telemetry.velocity_ned(), lambda v: v.north_m_s > 1.6, 10, "north velocity > 1.6 m/s"
        )
        assert abs(vel.east_m_s) < 0.5
        await drone.offboard.stop()
        await drone.action.land()
        await until(drone.telemetry.in_air(), lambda a: not a, 40, "landed")

    run_with_drone(sitl_factory, body)


def test_mission_upload_download_and_fly_to_the_end(sitl_factory: Any) -> None:
    async def body(drone: System) -> None:
        home = await first(drone.telemetry.home(), 5, "home")
        lat0, lon0 = home.latitude_deg, home.longitude_deg
        d_lat = 15.0 / 111_320.0  # 15 m north
        d_lon = 15.0 / (111_320.0 * math.cos(math.radians(lat0)))
        items = [
            MissionItem(
                lat,
                lon,
                5.0,
                5.0,
                True,
                float("nan"),
                float("nan"),
                MissionItem.CameraAction.NONE,
                float("nan"),
                float("nan"),
                2.0,
                float("nan"),
                float("nan"),
                MissionItem.VehicleAction.NONE,
            )
            for lat, lon in ((lat0 + d_lat, lon0), (lat0 + d_lat, lon0 + d_lon))
        ]
        await drone.mission.set_return_to_launch_after_mission(False)
        await drone.mission.upload_mission(MissionPlan(items))
        downloaded = await drone.mission.download_mission()
        assert len(downloaded.mission_items) == 2
        assert downloaded.mission_items[1].longitude_deg == pytest.approx(lon0 + d_lon, abs=1e-6)
        await drone.action.arm()
        await drone.mission.start_mission()
        progress = await until(
            drone.mission.mission_progress(), lambda p: p.current == p.total == 2, 60, "mission progress 2/2"
        )
        assert progress.total == 2
        assert await drone.mission.is_mission_finished()
        pos = await first(drone.telemetry.position(), 5, "position")
        north = (pos.latitude_deg - lat0) * 111_320.0
        east = (pos.longitude_deg - lon0) * 111_320.0 * math.cos(math.radians(lat0))
        assert north == pytest.approx(15.0, abs=2.5) and east == pytest.approx(15.0, abs=2.5)
        assert pos.relative_altitude_m == pytest.approx(5.0, abs=1.0)
        mode = await first(drone.telemetry.flight_mode(), 5, "flight_mode")
        assert mode.name == "HOLD"  # PX4 loiters after the last item

    run_with_drone(sitl_factory, body)


def test_goto_location_and_unknown_parameter_refused(sitl_factory: Any) -> None:
    async def body(drone: System) -> None:
        from mavsdk.param import ParamError

        with pytest.raises(ParamError):
            await asyncio.wait_for(drone.param.set_param_float("NO_SUCH_PARAM", 1.0), 15)
        assert await drone.param.get_param_float("COM_OF_LOSS_T") == pytest.approx(1.0)
        await drone.action.arm()
        await drone.action.takeoff()
        await until(drone.telemetry.position(), lambda p: p.relative_altitude_m > 2.0, 20, "takeoff")
        home = await first(drone.telemetry.home(), 5, "home")
        lat = home.latitude_deg + 10.0 / 111_320.0
        await drone.action.goto_location(lat, home.longitude_deg, home.absolute_altitude_m + 4.0, 0.0)
        await until(
            drone.telemetry.position(),
            lambda p: abs(p.latitude_deg - lat) * 111_320.0 < 1.0 and abs(p.relative_altitude_m - 4.0) < 0.5,
            20,
            "goto_location reached",
        )

    run_with_drone(sitl_factory, body)
