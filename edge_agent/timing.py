"""Timing for the onboard loop: waiting for a tick, the scheduler's settings, latency percentiles.

None of it knows about the vehicle: :mod:`edge_agent.loop` uses it per tick, the benchmarks and
tests use it alone.
"""

from __future__ import annotations

import bisect
import os
import sys
from collections.abc import Callable

import numpy as np

from edge_agent.errors import ConfigError


class LatencyHistogram:
    """Durations in log-spaced bins: percentiles within 2 % in O(1) memory, however long the flight.

    The loop used to keep every tick's latency in a list for the summary's percentiles: at 250 Hz
    that grew the agent by ~1 MB a minute (found by the soak, docs/safety.md).
    """

    EDGES_NS: tuple[float, ...] = tuple(np.geomspace(1e2, 1e11, 1001).tolist())
    """Bin edges from 100 ns to 100 s; each bin spans a factor of 10**(9/1000) ≈ 1.021."""

    def __init__(self) -> None:
        self.counts = [0] * (len(self.EDGES_NS) + 1)
        self.count = 0

    def add(self, duration_ns: int) -> None:
        """Count one duration (negative counts as zero); a bisection, ~1 µs, every tick."""
        self.counts[bisect.bisect_left(self.EDGES_NS, duration_ns)] += 1
        self.count += 1

    def percentile_ns(self, q: float) -> float:
        """The q-th percentile (0-100): the geometric middle of the bin that holds it; nan if empty."""
        if self.count == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(self.counts), q / 100.0 * self.count))
        lo = self.EDGES_NS[max(k - 1, 0)] if k > 0 else 0.0
        hi = self.EDGES_NS[min(k, len(self.EDGES_NS) - 1)]
        return float(np.sqrt(lo * hi)) if lo > 0 else float(hi)


def wait_until(
    deadline_ns: int, clock: Callable[[], int], sleep: Callable[[float], None], spin_ns: int
) -> int:
    """Wait for the tick due at ``deadline_ns``; returns the clock's reading when it starts.

    Sleeps until ``spin_ns`` before the deadline, then reads the clock until it is reached (the
    loop's ``--spin-us``: a wake-up from sleep may come hundreds of µs late, a clock read takes
    ~1 µs). With ``spin_ns`` = 0 it only sleeps, and a clock that moves only when slept (the tests'
    simulated ones) never spins."""
    now = clock()
    if now < deadline_ns:
        if now < deadline_ns - spin_ns:
            sleep((deadline_ns - spin_ns - now) * 1e-9)
        now = clock()
        while spin_ns and now < deadline_ns:
            now = clock()
    return now


def set_realtime_priority(priority: int) -> None:
    """Run this process at SCHED_FIFO ``priority``; ConfigError (with the fix) when refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"cannot run the agent at SCHED_FIFO priority {priority}: {why}; grant it CAP_SYS_NICE "
            f"(systemd: CPUSchedulingPolicy=fifo, or AmbientCapabilities=CAP_SYS_NICE) or leave out "
            f"--realtime-priority"
        ) from exc


def set_timer_slack(ns: int) -> bool:
    """Ask Linux to end this thread's sleeps within ``ns`` of their deadline; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # already loaded by numpy

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_timerslack = 29
        ok = libc.prctl(
            ctypes.c_int(pr_set_timerslack),
            ctypes.c_ulong(ns),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    except (OSError, AttributeError):
        return False
    return bool(ok == 0)
