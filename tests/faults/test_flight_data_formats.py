"""A real flight (the built-in SITL as its own process, `edge-agent run` as users start it) recorded
with `--tlog` on both ends, and its flight log converted: pymavlink, mavlogdump.py, pandas, pyarrow
and mcap's reader open the results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymavlink import mavutil

from edge_agent.flightlog import read_log
from firmware_bridge.exitcodes import ExitCode
from tests.e2e.conftest import DEMO_MISSION, REPO, edge_agent, env, start_sitl

pytestmark = pytest.mark.timeout(240)

AGENT = (1, 191)  # sysid 1 (the vehicle's), MAV_COMP_ID_ONBOARD_COMPUTER
AUTOPILOT = (1, 1)


def _tlog_messages(path: Path) -> list:
    log = mavutil.mavlink_connection(str(path))
    out = []
    while (m := log.recv_match()) is not None:
        if m.get_type() != "BAD_DATA":
            out.append(m)
    return out


@pytest.fixture(scope="module")
def flight(goal_seeker: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("recorded")
    sitl = start_sitl("--flavor", "px4", "--link", "pty://", "--seed", "3", "--tlog", str(out / "sitl.tlog"))
    started = time.time()
    try:
        done = subprocess.run(
            edge_agent(
                "run",
                "--bundle",
                str(goal_seeker),
                "--mission",
                str(DEMO_MISSION),
                "--link",
                sitl.agent_url,
                "--log",
                str(out / "flight.eal"),
                "--tlog",
                str(out / "agent.tlog"),
                "--max-duration",
                "6",
                "--json",
            ),
            capture_output=True,
            text=True,
            timeout=150,
            cwd=REPO,
            env=env(),
        )
    finally:
        sitl_out = sitl.stop()
    assert done.returncode == ExitCode.TIME_LIMIT, done.stderr + done.stdout  # 6 s: a slice of the mission
    assert "tlog:" in sitl_out and " frames in " in sitl_out, sitl_out
    (out / "window.json").write_text(json.dumps([started, time.time()]))
    return {"dir": out, "summary": json.loads(done.stdout.strip().splitlines()[-1])}  # type: ignore[dict-item]


@pytest.mark.parametrize("name", ["agent.tlog", "sitl.tlog"])
def test_each_tlog_opens_in_pymavlink_with_both_directions(flight: dict, name: str) -> None:
    msgs = _tlog_messages(flight["dir"] / name)
    start, end = json.loads((flight["dir"] / "window.json").read_text())
    by_source: dict[tuple[int, int], set[str]] = {}
    for m in msgs:
        by_source.setdefault((m.get_srcSystem(), m.get_srcComponent()), set()).add(m.get_type())
    # What the autopilot sent (received by the agent, sent by the SITL) ...
    assert {"HEARTBEAT", "LOCAL_POSITION_NED", "ATTITUDE_QUATERNION", "COMMAND_ACK"} <= by_source[AUTOPILOT]
    # ... and what the agent sent: its heartbeat, commands, setpoints.
    assert {"HEARTBEAT", "COMMAND_LONG", "SET_POSITION_TARGET_LOCAL_NED"} <= by_source[AGENT]
    stamps = [m._timestamp for m in msgs]
    assert stamps == sorted(stamps) and start - 1 <= stamps[0] and stamps[-1] <= end + 1
    setpoints = [m for m in msgs if m.get_type() == "SET_POSITION_TARGET_LOCAL_NED"]
    assert len(setpoints) > 100  # the 6 s of flight, at the bundle's rate


def test_the_two_ends_recorded_the_same_setpoints(flight: dict) -> None:
    def setpoints(name: str) -> list[tuple[float, float, float]]:
        return [
            (m.vx, m.vy, m.vz)
            for m in _tlog_messages(flight["dir"] / name)
            if m.get_type() == "SET_POSITION_TARGET_LOCAL_NED"
        ]

    sent, received = setpoints("agent.tlog"), setpoints("sitl.tlog")
    assert len(sent) > 100 and received == sent[: len(received)] and len(received) >= len(sent) - 5


@pytest.mark.skipif(
    shutil.which("mavlogdump.py", path=str(Path(sys.executable).parent)) is None, reason="no mavlogdump.py"
)
def test_mavlogdump_reads_the_agents_tlog(flight: dict) -> None:
    tool = shutil.which("mavlogdump.py", path=str(Path(sys.executable).parent))
    assert tool is not None
    done = subprocess.run(
        [sys.executable, tool, "--types", "SET_POSITION_TARGET_LOCAL_NED", str(flight["dir"] / "agent.tlog")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("SET_POSITION_TARGET_LOCAL_NED") > 100


def test_the_flight_log_converts_to_csv_parquet_and_mcap(flight: dict) -> None:
    import pandas as pd
    import pyarrow.parquet as pq
    from mcap.reader import make_reader

    d = flight["dir"]
    log = d / "flight.eal"
    ticks = [r for r in read_log(log) if r["k"] == "tick"]
    n_events = sum(1 for r in read_log(log) if r["k"] == "event")
    assert len(ticks) > 100
    for fmt in ("csv", "parquet", "mcap"):
        done = subprocess.run(
            edge_agent("convert", str(log), "--to", fmt, "--out", str(d / f"flight.{fmt}")),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env=env(),
        )
        assert done.returncode == 0, done.stderr
        assert f"{len(ticks)} ticks, {n_events} events" in done.stdout

    csv = pd.read_csv(d / "flight.csv")
    parquet = pd.read_parquet(d / "flight.parquet")
    for table in (csv, parquet):
        assert len(table) == len(ticks)
        assert list(table["pos_ned_m/d"]) == pytest.approx([t["pos_ned_m"][2] for t in ticks])
        assert list(table["t_s"]) == pytest.approx([t["t_s"] for t in ticks])
        assert set(table["mode"]) <= {"OFFBOARD", "TAKEOFF", "HOLD", "LAND", "POSCTL"}
    assert len(pd.read_csv(d / "flight.events.csv")) == n_events
    meta = pq.read_schema(d / "flight.parquet").metadata
    header = json.loads(meta[b"edge_agent.header"])
    assert header["schema"] == 2 and header["link"].startswith("serial:///dev/pts/")

    with open(d / "flight.mcap", "rb") as f:
        reader = make_reader(f)
        counts: dict[str, int] = {}
        first_tick = None
        for schema, channel, message in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert schema.encoding == "jsonschema" and channel.message_encoding == "json"
            if channel.topic == "/edge_agent/tick" and first_tick is None:
                first_tick = (json.loads(message.data), message.log_time)
    assert counts == {"/edge_agent/header": 1, "/edge_agent/tick": len(ticks), "/edge_agent/event": n_events}
    assert first_tick is not None
    body, log_time = first_tick
    assert body["pos_ned_m"] == pytest.approx(ticks[0]["pos_ned_m"])
    assert log_time == pytest.approx((header["start_unix_s"] + ticks[0]["t_s"]) * 1e9, abs=1e3)
