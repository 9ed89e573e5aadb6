"""`edge-agent run` flies the SITL end to end (issue 5), as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pymavlink import mavutil

from edge_agent.flightlog import read_log
from edge_agent.mission import load_mission
from tests.e2e.conftest import DEMO_MISSION, REPO, Sitl, edge_agent, env, start_sitl

pytestmark = pytest.mark.timeout(180)


def _run(
    bundle: Path, sitl: Sitl, log: Path, *extra: str, timeout: float = 120.0, mission: Path = DEMO_MISSION
) -> dict:
    out = subprocess.run(
        edge_agent(
            "run",
            "--bundle",
            str(bundle),
            "--mission",
            str(mission),
            "--link",
            sitl.agent_url,
            "--log",
            str(log),
            "--json",
            *extra,
        ),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env(),
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


def _min_distances(log: Path, mission_path: Path = DEMO_MISSION) -> dict[str, float]:
    """Smallest signed distance to the fence, floor and keep-outs over the logged positions."""
    import numpy as np

    mission = load_mission(mission_path)
    pos = np.array([r["pos_ned_m"] for r in read_log(log) if r["k"] == "tick"])
    g = mission.geometry
    fence, _ = g.fence_distance(pos)
    floor, ceiling = g.altitude_distances(pos)
    keepout, _ = g.keepout_distance(pos)
    return {
        "fence": float(fence.min()),
        "floor": float(floor.min()),
        "ceiling": float(ceiling.min()),
        "keepout": float(keepout.min()),
    }


def test_px4_without_rc_and_a_stick_mode_as_offboard_loss_action_is_refused_before_arming(
    bundles: Path, sitl_factory, tmp_path: Path
) -> None:
    """As real PX4 SIH boots (COM_RC_IN_MODE 1, no RC; COM_OBL_RC_ACT 0, Position): refused, with the
    fix, before anything is commanded (tests/e2e/test_real_firmware.py flies the real one)."""
    sitl = start_sitl("--flavor", "px4", "--link", "udpin://127.0.0.1:0", "--param", "COM_RC_IN_MODE=1")
    sitl_factory.append(sitl)
    log = tmp_path / "refused.eal"
    out = subprocess.run(
        edge_agent("run", "--bundle", str(bundles / "goal_seeker"), "--mission", str(DEMO_MISSION),
                   "--link", sitl.agent_url, "--log", str(log)),
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env(),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "refusing to take control" in out.stderr and "COM_RC_IN_MODE 1" in out.stderr, out.stderr
    assert "set COM_OBL_RC_ACT to 5 (Hold)" in out.stderr and "Traceback" not in out.stderr
    assert not log.exists()  # refused before the flight log opens, so before activation


def test_px4_over_pty_completes_the_mission_without_breach(
    bundles: Path, sitl_factory, tmp_path: Path
) -> None:
    sitl = start_sitl("--flavor", "px4", "--link", "pty://", "--wind", "2,0,0", "--gust", "1", "--seed", "3")
    sitl_factory.append(sitl)
    assert sitl.agent_url.startswith("serial:///dev/pts/")
    log = tmp_path / "px4.eal"
    summary = _run(bundles / "goal_seeker", sitl, log, "--max-duration", "80")
    assert summary["mission_complete"], summary
    assert summary["control_lost"] is None
    assert summary["interventions"]["barrier"] > 0  # the straight legs clip the mast: the shield acted
    d = _min_distances(log)
    assert min(d.values()) > 0.0, d
    events = [r["name"] for r in read_log(log) if r["k"] == "event"]
    assert events[:2] == ["connected", "activated"] and "finish" in events


def test_ardupilot_over_udp_completes_the_mission_without_breach(
    bundles: Path, sitl_factory, tmp_path: Path
) -> None:
    sitl = start_sitl("--flavor", "ardupilot", "--link", "udpin://127.0.0.1:0", "--seed", "4")
    sitl_factory.append(sitl)
    assert sitl.agent_url.startswith("udpout://127.0.0.1:")
    log = tmp_path / "ardupilot.eal"
    ardupilot_mission = REPO / "examples" / "missions" / "demo_ardupilot.toml"
    summary = _run(bundles / "goal_seeker", sitl, log, "--max-duration", "80", mission=ardupilot_mission)
    assert summary["mission_complete"], summary
    assert min(_min_distances(log, ardupilot_mission).values()) > 0.0


def test_kill_9_hands_over_to_the_px4_failsafe_and_leaves_the_log_readable(
    bundles: Path, sitl_factory, tmp_path: Path
) -> None:
    sitl = start_sitl("--flavor", "px4", "--link", "pty://", "--seed", "5")
    sitl_factory.append(sitl)
    log = tmp_path / "killed.eal"
    agent = subprocess.Popen(
        edge_agent(
            "run",
            "--bundle",
            str(bundles / "goal_seeker"),
            "--mission",
            str(DEMO_MISSION),
            "--link",
            sitl.agent_url,
            "--log",
            str(log),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env(),
    )
    # Wait until the agent flies under the policy (ticks in the log), then kill it mid-flight.
    deadline = time.monotonic() + 60
    ticks = 0
    while time.monotonic() < deadline and ticks < 150:
        time.sleep(0.5)
        if log.exists():
            ticks = sum(1 for r in read_log(log) if r["k"] == "tick")
    assert ticks >= 150, "the agent never started flying"
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(5)
    killed_at = time.monotonic()

    # The log written up to the kill reads cleanly (at most the record being written is lost).
    records = list(read_log(log))
    assert records[0]["k"] == "header"
    assert sum(1 for r in records if r["k"] == "tick") >= ticks

    # A plain pymavlink client on the same serial port watches the autopilot leave OFFBOARD by
    # itself after COM_OF_LOSS_T (1 s) into its failsafe (COM_OBL_RC_ACT default: Position).
    port = sitl.agent_url.removeprefix("serial://")
    gcs = mavutil.mavlink_connection(port, baud=921600, source_system=255, source_component=190)
    try:
        modes = []
        end = time.monotonic() + 8
        while time.monotonic() < end:
            hb = gcs.recv_match(type="HEARTBEAT", blocking=True, timeout=1)
            if hb is not None and hb.autopilot == mavutil.mavlink.MAV_AUTOPILOT_PX4:
                main_mode = (hb.custom_mode >> 16) & 0xFF
                modes.append((time.monotonic() - killed_at, main_mode))
                if main_mode != 6:  # 6 = OFFBOARD
                    break
    finally:
        gcs.close()
    left = [t for t, m in modes if m != 6]
    assert left, f"PX4 never left OFFBOARD after the agent died: {modes}"
    assert left[0] < 1.0 + 2.5, f"failsafe took {left[0]:.1f} s (COM_OF_LOSS_T = 1 s)"
    assert modes[-1][1] == 3, f"expected Position mode (3), got main mode {modes[-1][1]}"


def test_a_px4_mission_is_refused_on_an_ardupilot_vehicle(
    bundles: Path, sitl_factory, tmp_path: Path
) -> None:
    """Issue 18, case 6: the shield's silence model comes from the mission's flavour; flying a PX4
    mission on ArduPilot (which keeps the last velocity 3 s, not 1 s) must be refused, naming both."""
    sitl = start_sitl("--flavor", "ardupilot", "--link", "udpin://127.0.0.1:0", "--seed", "4")
    sitl_factory.append(sitl)
    out = subprocess.run(
        edge_agent(
            "run", "--bundle", str(bundles / "goal_seeker"), "--mission", str(DEMO_MISSION),
            "--link", sitl.agent_url, "--log", str(tmp_path / "refused.eal"),
        ),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env(),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "the mission is for px4 ([autopilot] flavour = 'px4') but the vehicle on" in out.stderr
    assert (
        "is ARDUPILOT (its HEARTBEAT)" in out.stderr and "examples/missions/demo_ardupilot.toml" in out.stderr
    )
