"""MAVSDK and MAVProxy against the real firmware (../shared/firmware/), as against the emulator.

The clients run inside the firmware's private network namespace (``FirmwareSitl.popen``), with
the same flows and assertions as tests/interop/test_mavsdk.py and test_mavproxy.py: MAVSDK's
examples on real PX4 SIH (one boot, the flows in turn, each ending landed and disarmed); MAVProxy's
``mode GUIDED`` / ``arm throttle`` / ``takeoff 5`` on real ArduCopter. Without the firmware (or
without root for the namespace) every test skips with one line saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitl.firmware import FirmwareSitl, unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
CMAC = (-35.3632621, 149.1652374, 584.09)
"""The emulator's default home, given to ArduCopter too, so both answer the same altitude."""


def need(kind: str) -> None:
    why = unavailable_reason(kind)
    if why is not None:
        pytest.skip(f"real {kind} firmware not available here: {why}")


@pytest.fixture(scope="module")
def px4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirmwareSitl]:
    need("px4")
    with FirmwareSitl("px4", workdir=tmp_path_factory.mktemp("px4")) as fw:
        yield fw


FLOWS = ("telemetry", "takeoff_and_land", "offboard_velocity", "mission", "goto_and_params")


@pytest.mark.parametrize("flow", FLOWS)
def test_mavsdk_example_flies_real_px4(px4: FirmwareSitl, flow: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pytest.importorskip("mavsdk", reason="MAVSDK-Python not installed (pip install 'mavsdk<4')")
    # MAVSDK's usual SITL address: listen on 14540, where PX4's onboard link sends
    argv = [sys.executable, "-m", "tests.interop.mavsdk_flows", flow, "--address", "udpin://0.0.0.0:14540"]
    proc = px4.popen(
        argv, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        assert px4.ns is not None
        px4.ns.stop(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"the {flow} flow did not finish:\n{out[-3000:]}") from None
    lines = [ln for ln in out.strip().splitlines() if ln.startswith(("{", "FAIL"))]
    assert proc.returncode == 0 and lines, out[-3000:]
    seen = json.loads(lines[-1])
    print(flow, seen)
    if flow == "goto_and_params":
        assert seen["COM_OF_LOSS_T"] == pytest.approx(1.0)
    if flow == "mission":
        assert seen["end_ne_m"] == pytest.approx([15.0, 15.0], abs=2.5)


def test_mavproxy_guided_arm_takeoff_5_on_real_arducopter(tmp_path: Path) -> None:
    need("ardupilot")
    pytest.importorskip("MAVProxy", reason="MAVProxy not installed (pip install MAVProxy)")
    from tests.interop.test_mavproxy import MavProxy, guided_takeoff_5

    with FirmwareSitl("ardupilot", workdir=tmp_path / "fw", boot_speedup=10.0, home=CMAC) as fw:
        master = fw.vehicles[0].link_url.replace("tcp://", "tcp:")
        mp = MavProxy(master, tmp_path, popen=fw.popen)
        try:
            guided_takeoff_5(mp, home_amsl_m=CMAC[2], arm_tries=60)
        finally:
            mp.stop()
