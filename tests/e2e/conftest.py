"""End-to-end fixtures: real processes on real links. The SITL runs as its own process, as a
flight controller would, and ``edge-agent run`` is started as users start it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
DEMO_MISSION = REPO / "examples" / "missions" / "demo.toml"


def edge_agent(*args: str) -> list[str]:
    """The command line of ``edge-agent ARGS`` with this interpreter."""
    return [sys.executable, "-m", "edge_agent.cli", *args]


@dataclass
class Sitl:
    """A running SITL process and the URL the agent should open."""

    proc: subprocess.Popen[str]
    agent_url: str

    def stop(self) -> str:
        """Stop the SITL and return what it printed."""
        stop_process(self.proc)
        return self.proc.stdout.read() if self.proc.stdout else ""


def start_sitl(*args: str, timeout_s: float = 20.0, cold_boot: bool = False) -> Sitl:
    """Start ``edge-agent sitl ARGS`` and wait for its 'ready: connect to URL' line.

    With ``--fast-boot`` (ready to arm after 1-2 s) unless ``cold_boot``: then the vehicle starts
    as the real firmware does (PX4 ~5 s, ArduCopter ~42 s before it can arm)."""
    proc = subprocess.Popen(
        edge_agent("sitl", *(() if cold_boot else ("--fast-boot",)), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"connect to (\S+)", line)
        if m:
            url = m.group(1)
            if url.startswith("udpin://"):  # the SITL listens; the agent sends to it
                url = "udpout://" + url.removeprefix("udpin://")
            return Sitl(proc, url)
    proc.kill()
    raise RuntimeError(f"SITL did not become ready: {proc.stdout.read()}")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted goal_seeker/ and adversary/ bundles, exported once."""
    out = tmp_path_factory.mktemp("bundles")
    subprocess.run(
        [sys.executable, "-m", "examples.scripted_policies", "--out", str(out)], check=True, cwd=REPO
    )
    return out


@pytest.fixture
def sitl_factory() -> Iterator[list[Sitl]]:
    """Start SITLs with start_sitl and append them here; they are stopped after the test."""
    started: list[Sitl] = []
    yield started
    for s in started:
        s.stop()


def env() -> dict[str, str]:
    """Environment for child processes: unbuffered, so partial output is seen."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
