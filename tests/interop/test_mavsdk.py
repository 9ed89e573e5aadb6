"""MAVSDK-Python (the gRPC API, with its bundled mavsdk_server) against ``edge-agent sitl --flavor px4``.

The flows are MAVSDK's own examples (tests/interop/mavsdk_flows.py): every telemetry subscription
they use delivers samples, the standard "wait for health, arm, take off, wait for altitude" loop
ends, OFFBOARD starts after ONE setpoint (as on real PX4), a mission uploads and flies to the end.
The same flows fly the real PX4 in tests/interop/test_real_firmware_clients.py; here they also
check the emulator's values (its home is `--home`'s default).
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from tests.interop.conftest import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    pytest.importorskip("mavsdk", reason="MAVSDK-Python not installed (pip install 'mavsdk<4')")

from tests.interop.mavsdk_flows import run_flow

pytestmark = pytest.mark.timeout(120)


def fly(sitl_factory: Any, flow: str) -> dict[str, Any]:
    """Start the PX4 emulator on UDP (it sends to the port MAVSDK listens on, as PX4 does to 14540)."""
    port = free_port()
    sitl_factory("--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}")
    return asyncio.run(run_flow(flow, f"udpin://127.0.0.1:{port}"))


def test_every_telemetry_subscription_delivers_samples(sitl_factory: Any) -> None:
    seen = fly(sitl_factory, "telemetry")
    assert seen["lat"] == pytest.approx(-35.3632621, abs=1e-5)
    assert seen["home_lat"] == pytest.approx(-35.3632621, abs=1e-6)
    assert seen["home_amsl_m"] == pytest.approx(584.09, abs=0.01)
    assert seen["mode"] == "HOLD"  # real PX4 SIH boots in Hold (tests/interop/test_real_firmware_clients.py)


def test_takeoff_and_land_example(sitl_factory: Any) -> None:
    assert 2.5 < fly(sitl_factory, "takeoff_and_land")["relative_altitude_m"] < 4.0


def test_offboard_velocity_starts_after_one_setpoint_and_moves_the_vehicle(sitl_factory: Any) -> None:
    assert fly(sitl_factory, "offboard_velocity")["north_m_s"] > 1.6


def test_mission_upload_download_and_fly_to_the_end(sitl_factory: Any) -> None:
    seen = fly(sitl_factory, "mission")
    assert seen["end_ne_m"] == pytest.approx([15.0, 15.0], abs=2.5)
    assert seen["mode_after"] == "HOLD"  # PX4 loiters after the last item


def test_goto_location_and_unknown_parameter_refused(sitl_factory: Any) -> None:
    seen = fly(sitl_factory, "goto_and_params")
    assert seen["COM_OF_LOSS_T"] == pytest.approx(1.0)
    assert seen["unknown_param"]
