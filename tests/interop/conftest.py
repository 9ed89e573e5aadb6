"""Fixtures for driving a vehicle with the clients drone developers use (MAVSDK, MAVProxy).

On the emulator each test starts ``edge-agent sitl`` as its own process on loopback (a free port),
as a user would, and stops it afterwards; on the real firmware the clients run inside its private
network namespace. A client package that is not installed skips its tests with one line.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import Sitl, start_sitl


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sitl_factory() -> Iterator[Callable[..., Sitl]]:
    """Start emulators with ``factory(*cli_args)``; all are stopped at the end of the test."""
    started: list[Sitl] = []

    def start(*args: str) -> Sitl:
        s = start_sitl(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
