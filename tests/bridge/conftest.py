"""Fixtures for the bridge tests."""

from __future__ import annotations

import pytest
from bridge_fakes import FakeClock

from firmware_bridge.links import PtyLink, open_link


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pty_pair():
    """(master PtyLink, slave SerialLink) — the companion and the vehicle ends of a serial line."""
    master = PtyLink()
    slave = open_link(f"serial://{master.device_path}?baud=921600")
    yield master, slave
    slave.close()
    master.close()
