"""The loop's scheduling knobs: SCHED_FIFO on request (refused clearly), tight timer slack."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.loop import LoopConfig, set_realtime_priority, set_timer_slack


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
