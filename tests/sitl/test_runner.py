"""Runners on real links: lock-step over a pty, real time in a subprocess, and the CLI's errors."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from edge_agent.cli import main
from firmware_bridge.links import PtyLink
from sitl.cli import SitlOptionError, parse_params, parse_wind
from sitl.mavlink_vehicle import make_vehicle
from sitl.runner import LockstepRunner, RealtimeRunner
from sitl.sim import Sim

REPO = Path(__file__).resolve().parents[2]


def _open_peer(path: str) -> int:
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_lockstep_runner_over_a_real_pty() -> None:
    vehicle = make_vehicle(Sim(1, rng=np.random.default_rng(0)), "px4", fast_boot=True)
    link = PtyLink()
    peer = _open_peer(link.device_path)
    mav = mavlink.MAVLink(None, srcSystem=255, srcComponent=191)
    got: list[mavlink.MAVLink_message] = []
    try:
        runner = LockstepRunner(vehicle, link, step_s=0.004)

        def client(now_s: float) -> None:
            got.extend(mav.parse_buffer(_read_all(peer)) or [])

        stats = runner.run_for(1.5, between=client)
        assert stats.sim_time_s == pytest.approx(1.5, abs=1e-6)
        assert stats.iterations == 375
        assert stats.link_errors == 0
        os.write(peer, mav.command_long_encode(1, 1, 400, 0, 1, 0, 0, 0, 0, 0, 0).pack(mav))
        time.sleep(0.01)  # the kernel moves the bytes to the master side
        runner.run_for(0.1, between=client)
        kinds = [m.get_type() for m in got]
        assert kinds.count("HEARTBEAT") == 2  # t = 0 and 1 s of simulated time
        acks = [m for m in got if m.get_type() == "COMMAND_ACK"]
        assert [(a.command, a.result) for a in acks] == [(400, 0)]
        assert stats.bytes_out > 0 and runner.bytes_in > 0
    finally:
        os.close(peer)
        link.close()


class _FakeClock:
    """Seconds that advance only when the runner waits."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wait(self, fd: int, timeout_s: float) -> None:
        self.now += timeout_s


def test_realtime_runner_paces_simulation_by_its_clock() -> None:
    vehicle = make_vehicle(Sim(1, rng=np.random.default_rng(0)), "ardupilot", fast_boot=True)
    link = PtyLink()
    clock = _FakeClock()
    try:
        runner = RealtimeRunner(vehicle, link, clock=clock, wait=clock.wait, step_s=0.01, speed=2.0)
        stats = runner.run(duration_s=3.0)
        assert stats.sim_time_s == pytest.approx(3.0, abs=0.01)
        assert stats.wall_time_s == pytest.approx(1.5, abs=0.01)  # speed 2
        assert stats.real_time_factor == pytest.approx(2.0, abs=0.02)
        assert vehicle.ap.sim.time_s == pytest.approx(3.0, abs=0.01)
        assert stats.iterations == pytest.approx(300, abs=2)
    finally:
        link.close()
    with pytest.raises(ValueError, match=re.escape("speed must be > 0 (1 = real time), got 0")):
        RealtimeRunner(vehicle, link, speed=0)


def test_realtime_sitl_subprocess_over_pty_answers_a_pymavlink_client() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "sitl",
            "--fast-boot",
            "--flavor",
            "px4",
            "--link",
            "pty://",
            "--duration",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    fd = -1
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 5.0)
        assert ready, "the SITL printed nothing within 5 s"
        line = proc.stdout.readline()
        match = re.fullmatch(r"SITL \(px4\) ready: connect to serial://(/dev/pts/\d+)\n", line)
        assert match, line
        fd = _open_peer(match.group(1))
        mav = mavlink.MAVLink(None, srcSystem=255, srcComponent=191)
        msgs: list[tuple[float, mavlink.MAVLink_message]] = []

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                select.select([fd], [], [], 0.02)
                now = time.monotonic()
                msgs.extend((now, m) for m in mav.parse_buffer(_read_all(fd)) or [])

        pump(2.2)
        hbs = [t for t, m in msgs if m.get_type() == "HEARTBEAT"]
        assert 2 <= len(hbs) <= 3
        assert np.all(np.abs(np.diff(hbs) - 1.0) < 0.15)  # 1 Hz in wall-clock time
        sent = time.monotonic()
        os.write(fd, mav.command_long_encode(1, 1, 400, 0, 1, 0, 0, 0, 0, 0, 0).pack(mav))
        pump(0.5)
        acks = [(t, m) for t, m in msgs if m.get_type() == "COMMAND_ACK"]
        assert acks and acks[0][1].result == mavlink.MAV_RESULT_ACCEPTED
        assert acks[0][0] - sent < 0.1  # answered within one step, not one heartbeat
        proc.terminate()
        assert (
            proc.wait(timeout=5) == 143
        )  # stopped by SIGTERM (firmware_bridge.exitcodes), after its summary
        assert "real-time factor" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if fd >= 0:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_option_errors_name_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sitl", "--wind", "3,0", "--duration", "0"]) == 1
    assert (
        "--wind must be three finite numbers N,E,D in m/s, e.g. 3,0,0; got '3,0'" in capsys.readouterr().err
    )
    assert main(["sitl", "--param", "NOPE=1", "--duration", "0"]) == 1
    assert "unknown parameter 'NOPE'" in capsys.readouterr().err
    assert main(["sitl", "--link", "bogus://x", "--duration", "0"]) == 1
    assert "cannot open --link 'bogus://x'" in capsys.readouterr().err
    with pytest.raises(
        SitlOptionError,
        match=re.escape("--param must look like NAME=NUMBER, e.g. COM_OF_LOSS_T=1.0; got 'X'"),
    ):
        parse_params(["X"])
    assert parse_params(["com_of_loss_t=0.5"]) == {"COM_OF_LOSS_T": 0.5}
    assert parse_wind("1,-2,0.5") == (1.0, -2.0, 0.5)
