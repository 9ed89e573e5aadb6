"""The demo's orchestration pieces: the simulator process, command steps, failure reporting, progress.

The whole demo takes minutes; these check its parts for real (a real ``edge-agent sitl`` process
on a real pty, real ``edge-agent`` subprocesses), and one slow test flies the real thing.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.flightlog import FlightLog
from edge_agent.loop import _mission_record  # the exact header format the loop writes
from edge_agent.mission import load_mission
from examples.demo import (
    Args,
    Demo,
    SitlProcess,
    StepFailed,
    edge_agent_cmd,
    flight_status,
    run_command,
    run_demo,
    shown,
    step_flight,
    step_report,
    steps,
)
from firmware_bridge.links import open_link

ROOT = Path(__file__).resolve().parents[2]


def test_simulator_process_is_a_flight_controller_on_a_serial_port() -> None:
    with SitlProcess(wind="1,0,0", gust_m_s=0.5, seed=3) as sitl:
        assert re.fullmatch(r"serial:///dev/pts/\d+", sitl.url)
        assert Path(sitl.url.removeprefix("serial://")).exists()
        # It talks MAVLink: bytes starting with the v2 magic arrive within a second or so.
        link = open_link(sitl.url)
        try:
            data = b""
            for _ in range(100):
                data += link.read()
                if b"\xfd" in data:
                    break
                time.sleep(0.02)
        finally:
            link.close()
        assert b"\xfd" in data
    assert sitl.proc.poll() is not None  # stopped on leaving the block


def test_a_failing_command_fails_the_step_loudly_with_its_output() -> None:
    cmd = edge_agent_cmd("report", "/nonexistent/flight.eal")
    assert shown(cmd) == "edge-agent report /nonexistent/flight.eal"
    with pytest.raises(
        StepFailed, match=re.escape("`edge-agent report /nonexistent/flight.eal` exited with status 1")
    ) as e:
        run_command(cmd, timeout_s=60, echo=False)
    assert "does not exist" in str(e.value)


def test_a_step_without_its_input_fails_and_the_demo_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Calibrate (2) and the shielded report (5) without the bundle and the flight they need.
    assert run_demo(Args(out=tmp_path / "demo"), only=[2, 5]) == 1
    out = capsys.readouterr().out
    assert "[2/7] Calibrate the safety margin" in out
    assert "!! FAILED after" in out and "needs the bundle from step 1, which failed" in out
    assert "needs the flight log(s) of the flight step(s), which failed" in out
    assert "2 step(s) FAILED:" in out


def test_steps_are_numbered_and_explained() -> None:
    titles = [s.title for s in steps()]
    assert len(titles) == 7 and titles[0].startswith("Export") and "--no-shield" in titles[5]


def _log(path: Path, layers: list[int], *, shield: bool) -> Path:
    mission = _mission_record(load_mission(ROOT / "examples" / "missions" / "demo.toml"))
    with FlightLog(path, {"mission": mission, "shield_enabled": shield, "rate_hz": 50.0}) as log:
        for i, layer in enumerate(layers):
            log.write(
                {"k": "tick", "t_s": i / 50, "pos_ned_m": [1.0, 2.0, -10.0], "goal": 0, "margin_m": 0.5,
                 "layer": layer, "miscoverage": math.nan}
            )  # fmt: skip
    return path


def test_flight_status_reads_a_growing_log(tmp_path: Path) -> None:
    layers = [2] * 10 + [1] * 2 + [0] * 8
    assert flight_status(tmp_path / "none.eal") == ""
    on = flight_status(_log(tmp_path / "on.eal", layers, shield=True))
    assert "waypoint 1/3" in on and "alt  10.0 m" in on and "shield acted on 12/20 ticks" in on
    off = flight_status(_log(tmp_path / "off.eal", layers, shield=False))
    assert "shield acted on 2/20 ticks" in off  # a bypassed barrier did not act


@pytest.mark.slow
def test_one_real_flight_and_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Steps 4–5 for real: scripted bundle, SITL process, `edge-agent run` over MAVLink, report."""
    from examples.scripted_policies import export_goal_seeker

    bundle = tmp_path / "bundle"
    export_goal_seeker(bundle)
    demo = Demo(Args(out=tmp_path))
    demo.bundle = bundle
    result = step_flight(demo, "shielded", shield=True)
    assert result.startswith("mission complete;"), result
    assert step_report(demo, "shielded").startswith("report written:")
    s = demo.summaries["shielded"]
    assert s.mission_complete and s.breaches == 0
    assert (tmp_path / "report_shielded" / "report.html").is_file()
    assert "closest to keep-out 0" in capsys.readouterr().out


def test_make_demo_runs_this_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "make demo" in out.stdout
    assert "$(BIN)/python -m examples.demo" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_the_demo_never_wipes_a_folder_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    assert run_demo(Args(out=tmp_path), only=[]) == 2
    assert keep.read_text() == "mine"
    assert "exists and was not made by the demo; choose another --out or remove it" in capsys.readouterr().err
    ours = tmp_path / "demo"
    assert run_demo(Args(out=ours), only=[]) == 0
    (ours / "old.eal").write_text("stale")
    assert run_demo(Args(out=ours), only=[]) == 0  # its own folder is wiped and reused
    assert not (ours / "old.eal").exists()
