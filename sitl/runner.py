"""Runners: put a sans-IO emulated vehicle on a real link, in real time or in lock-step.

* :class:`RealtimeRunner` paces simulation time by a clock (``time.monotonic`` by default):
  what ``edge-agent sitl`` runs, and what end-to-end tests use with the agent in another process.
  It waits on the link's file descriptor between steps, so a command is answered within one
  step period rather than a whole tick.
* :class:`LockstepRunner` advances simulation time by a fixed step per :meth:`~LockstepRunner.tick`
  and never sleeps: faster than real time, for tests that drive the client in the same thread.

A lost peer (pty closed, TCP client gone) is not fatal: a flight controller keeps flying when the
companion's cable comes out. Reads and writes on a down link are dropped and counted.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.errors import LinkDownError

DEFAULT_STEP_S = 0.004
"""Simulation advanced per runner iteration: one Sim step at its default dt (250 Hz)."""


class SansIoVehicle(Protocol):
    """What a runner needs from a vehicle: bytes in at a time, bytes out up to a time."""

    def receive(self, data: bytes, now_s: float) -> None:
        """Feed bytes received at sim time ``now_s``."""

    def step(self, now_s: float) -> bytes:
        """Advance to sim time ``now_s`` and return what the vehicle sends."""


class ByteLink(Protocol):
    """The part of ``firmware_bridge.links.Link`` a runner uses."""

    def read(self, max_bytes: int = ...) -> bytes:
        """Whatever is waiting, ``b""`` if nothing."""

    def write(self, data: bytes) -> None:
        """Send (buffered, non-blocking)."""

    def fileno(self) -> int:
        """Descriptor to wait on."""


@dataclass(frozen=True, slots=True)
class RunnerStats:
    """What a run did."""

    sim_time_s: float
    wall_time_s: float
    iterations: int
    bytes_in: int
    bytes_out: int
    link_errors: int
    max_lag_s: float
    """Real time only: the largest amount the simulation fell behind the clock."""

    @property
    def real_time_factor(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_time_s / self.wall_time_s if self.wall_time_s > 0 else float("inf")


class _Pump:
    """Shared link plumbing: read → receive, step → write, errors counted."""

    def __init__(self, vehicle: SansIoVehicle, link: ByteLink) -> None:
        self.vehicle = vehicle
        self.link = link
        self.bytes_in = 0
        self.bytes_out = 0
        self.link_errors = 0
        self.iterations = 0

    def pump(self, now_s: float) -> None:
        try:
            data = self.link.read()
        except LinkDownError:
            data = b""
            self.link_errors += 1
        if data:
            self.bytes_in += len(data)
            self.vehicle.receive(data, now_s)
        out = self.vehicle.step(now_s)
        if out:
            self.bytes_out += len(out)
            try:
                self.link.write(out)
            except LinkDownError:
                self.link_errors += 1
        self.iterations += 1


class LockstepRunner(_Pump):
    """Advance ``step_s`` of simulation per :meth:`tick`, as fast as the CPU allows."""

    def __init__(
        self, vehicle: SansIoVehicle, link: ByteLink, *, step_s: float = DEFAULT_STEP_S, start_s: float = 0.0
    ) -> None:
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        super().__init__(vehicle, link)
        self.step_s = step_s
        self.now_s = start_s
        self._t0 = start_s

    def tick(self) -> None:
        """Deliver what the link holds at the current time, then advance one step."""
        self.now_s += self.step_s
        self.pump(self.now_s)

    def run_for(self, sim_s: float, *, between: Callable[[float], None] | None = None) -> RunnerStats:
        """Tick for ``sim_s`` of simulation; ``between(now_s)`` runs after every tick (a test's client)."""
        wall0 = time.perf_counter()
        end = self.now_s + sim_s
        while self.now_s < end - 1e-9:
            self.tick()
            if between is not None:
                between(self.now_s)
        return self.stats(time.perf_counter() - wall0)

    def stats(self, wall_s: float) -> RunnerStats:
        """Counters so far, with the given wall time."""
        return RunnerStats(
            self.now_s - self._t0,
            wall_s,
            self.iterations,
            self.bytes_in,
            self.bytes_out,
            self.link_errors,
            0.0,
        )


class RealtimeRunner(_Pump):
    """Simulation time follows ``clock`` (seconds) times ``speed``."""

    def __init__(
        self,
        vehicle: SansIoVehicle,
        link: ByteLink,
        *,
        clock: Callable[[], float] = time.monotonic,
        step_s: float = DEFAULT_STEP_S,
        speed: float = 1.0,
        wait: Callable[[int, float], None] | None = None,
    ) -> None:
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (1 = real time), got {speed}")
        super().__init__(vehicle, link)
        self.clock = clock
        self.step_s = step_s
        self.speed = speed
        self._wait = _wait_readable if wait is None else wait
        self.stopped = False

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current iteration (from a callback or signal handler)."""
        self.stopped = True

    def run(self, *, duration_s: float | None = None, start_s: float = 0.0) -> RunnerStats:
        """Run until ``duration_s`` of simulation has passed (forever if None) or :meth:`stop`."""
        wall0 = self.clock()
        sim_now = start_s
        max_lag = 0.0
        next_wall = wall0
        while not self.stopped:
            now_wall = self.clock()
            target = start_s + (now_wall - wall0) * self.speed
            max_lag = max(max_lag, target - sim_now - self.step_s)
            sim_now = target
            if duration_s is not None and sim_now - start_s >= duration_s:
                break
            self.pump(sim_now)
            next_wall += self.step_s / self.speed
            delay = next_wall - self.clock()
            if delay > 0:
                self._wait(self.link.fileno(), delay)
            else:
                next_wall = self.clock()  # behind: do not try to catch up in a burst
        wall = self.clock() - wall0
        return RunnerStats(
            sim_now - start_s,
            wall,
            self.iterations,
            self.bytes_in,
            self.bytes_out,
            self.link_errors,
            max(0.0, max_lag),
        )


def _wait_readable(fd: int, timeout_s: float) -> None:
    """Sleep until ``fd`` is readable or ``timeout_s`` passes (a command is answered promptly)."""
    try:
        select.select([fd], [], [], timeout_s)
    except (OSError, ValueError):
        time.sleep(timeout_s)
