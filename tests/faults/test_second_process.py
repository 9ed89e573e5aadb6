"""Issue 18, case 2: a second ``edge-agent sitl`` started on the agent's UDP port mid-flight.

Before: both processes bound the port (SO_REUSEADDR), the kernel split the datagrams between them,
the agent lost control and the other vehicle's telemetry landed in the flight log as false floor
breaches. Now, with real processes on loopback: a second listener cannot bind an address the agent
or the emulator owns (it exits with a message naming the port and the process to stop), and a
second *sender* to the agent's listening port is locked out (dropped, counted, logged) while the
flight completes without breach.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.flightlog import read_log
from edge_agent.mission import load_mission
from firmware_bridge.exitcodes import ExitCode
from tests.e2e.conftest import DEMO_MISSION, REPO, Sitl, edge_agent, env, start_sitl

pytestmark = pytest.mark.timeout(240)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sitl_refused(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge_agent("sitl", *args), capture_output=True, text=True, timeout=60, cwd=REPO, env=env()
    )


def test_a_second_sitl_cannot_take_the_emulators_port() -> None:
    first = start_sitl("--flavor", "px4", "--link", "udpin://127.0.0.1:0")
    try:
        port = int(first.agent_url.rsplit(":", 1)[1])
        for url in (f"udpin://127.0.0.1:{port}", f"udp://:{port}", f"udpin:0.0.0.0:{port}"):
            second = _sitl_refused("--flavor", "px4", "--link", url)
            assert second.returncode == 1, second.stdout + second.stderr
            assert "ready" not in second.stdout
            assert re.search(
                rf"cannot open --link '{re.escape(url)}': {re.escape(url)}: UDP port {port} on \S+ is already "
                rf"in use: pid {first.proc.pid} \(.*edge_agent\.cli sitl.*\) holds it\. .* stop that program "
                rf"or choose another port",
                second.stderr,
            ), second.stderr
        assert first.proc.poll() is None  # the first emulator is untouched
    finally:
        first.stop()


def test_a_second_sitl_mid_flight_neither_steals_control_nor_enters_the_log(
    goal_seeker: Path, tmp_path: Path
) -> None:
    port = _free_udp_port()
    log = tmp_path / "shared_port.eal"
    # The agent listens (MAVSDK's form: udp:// listens); the emulator sends to it, as PX4 SITL does.
    agent = subprocess.Popen(
        edge_agent(
            "run",
            "--bundle",
            str(goal_seeker),
            "--mission",
            str(DEMO_MISSION),
            "--link",
            f"udp://127.0.0.1:{port}",
            "--log",
            str(log),
            "--max-duration",
            "80",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env(),
    )
    sitls: list[Sitl] = []
    try:
        sitls.append(start_sitl("--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}", "--seed", "3"))
        deadline = time.monotonic() + 60
        ticks = 0
        while time.monotonic() < deadline and ticks < 200:
            time.sleep(0.5)
            if log.exists():
                ticks = sum(1 for r in read_log(log) if r["k"] == "tick")
        assert ticks >= 200, "the agent never started flying"

        # Mid-flight, a second emulator tries to listen on the agent's port: refused, naming the agent.
        taken = _sitl_refused("--flavor", "px4", "--link", f"udpin://127.0.0.1:{port}")
        assert taken.returncode == 1
        assert f"UDP port {port} on 127.0.0.1 is already in use: pid {agent.pid} (" in taken.stderr

        # And a second emulator (a vehicle on the ground: false floor breaches if its telemetry got
        # in) sends to the agent's port: locked out. At quarter speed it still sends its HEARTBEAT
        # and state streams, for a quarter of the CPU: on a loaded 2-core machine a second full-speed
        # emulator starves the first one's streams (stale attitude) whatever the link does.
        impostor = start_sitl(
            "--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}", "--seed", "9", "--speed", "0.25"
        )
        sitls.append(impostor)
        out, err = agent.communicate(timeout=150)
        assert agent.returncode == 0, err + out
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["mission_complete"] and summary["control_lost"] is None, summary
        impostor_out = impostor.stop()
        m = re.search(r"(\d+) B in, (\d+) B out", impostor_out)
        assert m is not None, impostor_out
        assert int(m[1]) == 0 and int(m[2]) > 0  # it talked; not one byte of ours reached it
    finally:
        if agent.poll() is None:
            agent.kill()
        for s in sitls:
            s.stop()

    records = list(read_log(log))
    foreign = [r for r in records if r["k"] == "event" and r["name"] == "foreign_sender"]
    assert foreign and "datagram(s) from other senders dropped" in foreign[0]["detail"]
    mission = load_mission(DEMO_MISSION)
    pos = np.array([r["pos_ned_m"] for r in records if r["k"] == "tick"])
    floor, ceiling = mission.geometry.altitude_distances(pos)
    fence, _ = mission.geometry.fence_distance(pos)
    assert float(floor.min()) > 0 and float(ceiling.min()) > 0 and float(fence.min()) > 0


def test_target_system_flies_the_vehicle_asked_for_on_a_shared_port(
    goal_seeker: Path, tmp_path: Path
) -> None:
    """Two emulated vehicles (sysid 1 and 2) send to one agent port; --target-system 2 flies the second."""
    port = _free_udp_port()
    log = tmp_path / "two.eal"
    one = start_sitl("--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}", "--sysid", "1", "--seed", "1")
    two = start_sitl("--flavor", "px4", "--link", f"udpout://127.0.0.1:{port}", "--sysid", "2", "--seed", "2")
    try:
        done = subprocess.run(
            edge_agent(
                "run",
                "--bundle",
                str(goal_seeker),
                "--mission",
                str(DEMO_MISSION),
                "--link",
                f"udpin:127.0.0.1:{port}",  # pymavlink's form
                "--target-system",
                "2",
                "--log",
                str(log),
                "--max-duration",
                "5",
                "--json",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env=env(),
        )
    finally:
        out_one, out_two = one.stop(), two.stop()
    assert done.returncode == ExitCode.TIME_LIMIT, done.stderr + done.stdout  # 5 s of the mission
    bytes_in = {
        name: int(re.search(r"(\d+) B in", text)[1])  # type: ignore[index]
        for name, text in (("one", out_one), ("two", out_two))
    }
    assert bytes_in["one"] == 0 and bytes_in["two"] > 10_000, bytes_in
    records = list(read_log(log))
    assert sum(1 for r in records if r["k"] == "tick") > 100


def test_target_system_out_of_range_is_refused(goal_seeker: Path) -> None:
    done = subprocess.run(
        edge_agent(
            "run",
            "--bundle",
            str(goal_seeker),
            "--mission",
            str(DEMO_MISSION),
            "--link",
            "udp://:0",
            "--target-system",
            "300",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env(),
    )
    assert done.returncode == 1
    assert (
        "edge-agent run: error: --target-system: target_sysid must be a MAVLink id in 1..255 "
        "(or None: the first autopilot), got 300"
    ) in done.stderr
