"""The loop's scheduling knobs: SCHED_FIFO on request (refused clearly), tight timer slack, spin."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.loop_config import LoopConfig
from edge_agent.timing import set_realtime_priority, set_timer_slack, wait_until


def test_realtime_priority_is_checked_and_a_refusal_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=re.escape("realtime priority 0 must lie in 1..99")):
        LoopConfig(realtime_priority=0)
    assert LoopConfig().realtime_priority is None

    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(ConfigError, match=re.escape("grant it CAP_SYS_NICE")):
        set_realtime_priority(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux setting")
def test_timer_slack_is_set_for_the_calling_thread() -> None:
    path = Path("/proc/self/timerslack_ns")
    before = int(path.read_text())
    try:
        assert set_timer_slack(1000)
        assert int(path.read_text()) == 1000
    finally:
        set_timer_slack(before)


class _Clock:
    """Moves 1 µs per read and by the requested time per sleep; remembers the sleeps."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        self.now_ns += 1_000
        return self.now_ns

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now_ns += round(s * 1e9)


def test_spin_sleeps_to_just_before_the_tick_then_reads_the_clock_to_it() -> None:
    clock = _Clock(0)
    now = wait_until(10_000_000, clock, clock.sleep, spin_ns=200_000)
    assert clock.sleeps == [pytest.approx((10_000_000 - 200_000 - 1_000) * 1e-9)]
    assert 10_000_000 <= now < 10_000_000 + 1_000  # on time, within one clock read
    # Without spin: one sleep to the deadline and the tick starts when it wakes.
    clock = _Clock(0)
    now = wait_until(10_000_000, clock, clock.sleep, spin_ns=0)
    assert clock.sleeps == [pytest.approx((10_000_000 - 1_000) * 1e-9)]
    assert now == 10_000_000 + 1_000
    # Inside the spin window: no sleep at all; past the deadline: neither sleep nor spin.
    clock = _Clock(9_900_000)
    wait_until(10_000_000, clock, clock.sleep, spin_ns=200_000)
    assert clock.sleeps == []
    clock = _Clock(12_000_000)
    assert wait_until(10_000_000, clock, clock.sleep, spin_ns=200_000) == 12_001_000
    assert clock.sleeps == []
    with pytest.raises(ConfigError, match="spin -1"):
        LoopConfig(spin_us=-1.0)
