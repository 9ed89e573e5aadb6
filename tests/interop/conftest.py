"""Fixtures for driving ``edge-agent sitl`` with the clients drone developers use (MAVSDK, MAVProxy).

Each test starts the emulator as its own process on loopback (a free port), as a user would, and
kills it afterwards; a client package that is not installed skips its tests with one line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SitlProcess:
    """``edge-agent sitl`` in a child process; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "sitl", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            self.stop()
            raise RuntimeError(f"edge-agent sitl did not start: {line!r}")
        self.ready_line = line

    def stop(self) -> str:
        """Stop the emulator and return what it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        out = self.proc.stdout.read() if self.proc.stdout else ""
        return out or ""


@pytest.fixture
def sitl_factory() -> Iterator[object]:
    """Start emulators with ``factory(*cli_args)``; all are stopped at the end of the test."""
    started: list[SitlProcess] = []

    def start(*args: str) -> SitlProcess:
        p = SitlProcess(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def wait_until(pred: object, timeout_s: float, what: str) -> None:
    """Poll ``pred()`` every 50 ms; AssertionError naming ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
