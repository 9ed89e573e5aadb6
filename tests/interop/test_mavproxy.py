"""MAVProxy, scripted through its stdin, against ``edge-agent sitl --flavor ardupilot`` over TCP.

What a user types at the MAVProxy prompt: ``mode GUIDED``, ``arm throttle``, ``takeoff 5``,
``status``. MAVProxy runs with its defaults, so its telemetry comes from REQUEST_DATA_STREAM and
its parameters from PARAM_REQUEST_LIST once the emulator has NAKed the MAVLink-FTP download.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import free_port
from tests.processes import stop_process

pytest.importorskip("MAVProxy", reason="MAVProxy not installed (pip install MAVProxy)")

pytestmark = pytest.mark.timeout(120)


class MavProxy:
    """``mavproxy.py --master tcp:...`` with commands written to its stdin and its output collected."""

    def __init__(
        self, master: str, cwd: Path, popen: Callable[..., subprocess.Popen[str]] = subprocess.Popen
    ) -> None:
        """``popen``: how to start it (the real firmware's ``FirmwareSitl.popen`` runs it in its namespace)."""
        exe = shutil.which("mavproxy.py", path=os.path.dirname(sys.executable)) or shutil.which("mavproxy.py")
        if exe is None:
            pytest.skip("MAVProxy is installed but mavproxy.py is not on PATH")
        self.proc = popen(
            [sys.executable, exe, "--master", master, "--source-system", "255"],
            cwd=cwd,  # its mav.tlog and mav.parm go to the test's own directory
            env=dict(os.environ, PYTHONUNBUFFERED="1"),  # else its prints sit in a pipe buffer
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def send(self, command: str) -> int:
        """Type one command; returns the output position to search from."""
        with self._lock:
            mark = len(self.lines)
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return mark

    def wait_for(self, pattern: str, timeout_s: float, since: int = 0) -> re.Match[str]:
        """The first output line (from ``since``) matching ``pattern``, or fail showing the tail."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                for line in self.lines[since:]:
                    m = rx.search(line)
                    if m:
                        return m
            time.sleep(0.05)
        with self._lock:
            tail = "\n".join(self.lines[-25:])
        raise AssertionError(
            f"MAVProxy printed nothing matching {pattern!r} in {timeout_s} s; last lines:\n{tail}"
        )

    def status(self, message: str, pattern: str, timeout_s: float) -> re.Match[str]:
        """``status MESSAGE`` every 0.5 s until its line matches ``pattern`` (MAVProxy prints nothing
        for a message it has not received yet)."""
        end = time.monotonic() + timeout_s
        while True:
            mark = self.send(f"status {message}")
            try:
                return self.wait_for(pattern, 0.5, mark)
            except AssertionError:
                if time.monotonic() > end:
                    raise

    def stop(self) -> None:
        stop_process(self.proc)


def guided_takeoff_5(mp: MavProxy, *, home_amsl_m: float, arm_tries: int = 20) -> None:
    """What a user types: ``mode GUIDED``, ``arm throttle`` (retried until the EKF lets it),
    ``takeoff 5``; then ``status`` shows the vehicle at 5 m (relative and AMSL) and its attitude."""
    mp.wait_for(r"online system 1", 20)
    # MAVProxy tries MAVLink FTP for parameters first: the emulator NAKs it (then PARAM_REQUEST_LIST),
    # real ArduCopter answers it; either way the download ends within seconds
    t0 = time.monotonic()
    mp.wait_for(r"Received \d+ parameters", 30)
    assert time.monotonic() - t0 < 20
    mark = mp.send("mode GUIDED")
    mp.wait_for(r"DO_SET_MODE: ACCEPTED|Got COMMAND_ACK: DO_SET_MODE: ACCEPTED", 10, mark)
    for _ in range(arm_tries):
        mark = mp.send("arm throttle")
        m = mp.wait_for(r"COMPONENT_ARM_DISARM: (\w+)", 10, mark)
        if m.group(1) == "ACCEPTED":
            break
        time.sleep(0.5)
    else:
        raise AssertionError("arm throttle never accepted")
    mark = mp.send("takeoff 5")
    mp.wait_for(r"NAV_TAKEOFF: ACCEPTED", 10, mark)
    # MAVProxy's default REQUEST_DATA_STREAM (all streams at 4 Hz) is re-sent every 15 s and the first
    # one usually goes out before the vehicle is known, so telemetry starts within ~15 s of connecting
    # (as with real ArduCopter); meanwhile the vehicle spools up and climbs: poll `status` until it
    # shows the altitude
    m = mp.status("GLOBAL_POSITION_INT", r"relative_alt : (4[5-9]\d\d|5[0-5]\d\d),", 40)
    assert 4500 <= int(m.group(1)) <= 5599
    m = mp.status("VFR_HUD", r"VFR_HUD \{.*alt : ([\d.]+)", 5)
    assert float(m.group(1)) == pytest.approx(home_amsl_m + 5.0, abs=0.8)
    mp.status("ATTITUDE", r"ATTITUDE \{", 5)


def test_mode_guided_arm_throttle_takeoff_5_and_status_shows_the_altitude(
    sitl_factory: Any, tmp_path: Path
) -> None:
    port = free_port(socket.SOCK_STREAM)
    sitl_factory("--flavor", "ardupilot", "--link", f"tcpin://127.0.0.1:{port}")
    mp = MavProxy(f"tcp:127.0.0.1:{port}", tmp_path)
    try:
        guided_takeoff_5(mp, home_amsl_m=584.09)
    finally:
        mp.stop()
