"""A faultable world for link-fault tests: the SITL flight controller on a real link, on a fake clock.

The agent's :class:`~edge_agent.loop.Runtime` runs unchanged in the test's thread with an injected
clock and ``sleep``. Every ``sleep(s)`` advances the fake clock by ``s`` and steps the emulated
vehicle through that time in 4 ms steps, moving its bytes over a real pty, TCP or UDP socket. So
a flight is deterministic in simulated time and runs several times faster than real time, and
detection times can be asserted against the documented limits exactly rather than with wall-clock
slop. Faults are scheduled at simulated times: pull the cable (close the pty, reset the TCP
connection), silence the vehicle, corrupt its bytes, reboot it.

The vehicle side also decodes what the agent sends, so tests can check the STATUSTEXTs the ground
station would see and that no mode-change command followed a loss of control.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.errors import LinkDownError
from firmware_bridge.links import Link, PtyLink, TcpServerLink, UdpLink, open_link
from sitl.mavlink_vehicle import MavlinkVehicle, make_vehicle
from sitl.sim import Sim

STEP_S = 0.004
MAV_CMD_DO_SET_MODE = 176
MAV_CMD_COMPONENT_ARM_DISARM = 400


class FakeClock:
    """Monotonic nanoseconds that move only when the world is stepped."""

    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class Sent:
    """What the agent sent, decoded on the vehicle side, stamped in world seconds."""

    statustext: list[tuple[float, int, str]] = field(default_factory=list)
    commands: list[tuple[float, int, float, float]] = field(default_factory=list)
    """(t_s, command, param1, param2) of every COMMAND_LONG."""
    setpoints: list[float] = field(default_factory=list)


class World:
    """One emulated flight controller behind one real link, driven by the agent's sleeps."""

    def __init__(
        self,
        tmp: Path,
        *,
        flavor: str = "px4",
        link: str = "pty",
        params: dict[str, float] | None = None,
        seed: int = 0,
        signing_key: bytes | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.t0_ns = self.clock.now_ns
        self.sim = Sim(1, rng=np.random.default_rng(seed))
        self.vehicle: MavlinkVehicle = make_vehicle(
            self.sim,
            flavor,
            params=params,
            fast_boot=True,
            signing_key=signing_key,
            signing_epoch_s=time.time(),
        )
        self.kind = link
        self.tmp = tmp
        self._schedule: list[tuple[float, Callable[[], None]]] = []
        self._triggers: list[tuple[Callable[[], bool], Callable[[], None]]] = []
        self.silent_until_s = -1.0
        self.corrupt_until_s = -1.0
        self.corrupt_prob = 0.0
        self.rng = np.random.default_rng(seed + 1)
        self.sent = Sent()
        self._decoder = mavlink.MAVLink(None)
        self._decoder.robust_parsing = True
        if signing_key is not None:
            self._decoder.signing.secret_key = signing_key
        self.modes: list[tuple[float, str, bool]] = []
        self.vlink: Link = self._open_vehicle_link()

    # -- links -------------------------------------------------------------------------------

    def _open_vehicle_link(self) -> Link:
        if self.kind == "pty":
            pty = PtyLink()
            # A stable name in front of the changing /dev/pts/N, as udev's /dev/serial/by-id is.
            alias = self.tmp / "ttyFC"
            staging = self.tmp / "ttyFC.new"
            staging.unlink(missing_ok=True)
            os.symlink(pty.device_path, staging)
            os.replace(staging, alias)
            return pty
        if self.kind == "tcp":
            return open_link("tcpin://127.0.0.1:0")
        if self.kind == "udp":
            return open_link("udpin://127.0.0.1:0")
        raise ValueError(f"unknown link kind {self.kind!r}")

    @property
    def agent_url(self) -> str:
        """What the agent opens to reach the vehicle."""
        if isinstance(self.vlink, PtyLink):
            return f"serial://{self.tmp / 'ttyFC'}?baud=921600"
        if isinstance(self.vlink, TcpServerLink):
            return f"tcp://127.0.0.1:{self.vlink.local_address[1]}"
        assert isinstance(self.vlink, UdpLink)
        return f"udpout://127.0.0.1:{self.vlink.local_address[1]}"

    # -- faults ------------------------------------------------------------------------------

    @property
    def now_s(self) -> float:
        """World time in seconds since the start."""
        return (self.clock.now_ns - self.t0_ns) * 1e-9

    def at(self, t_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` once the world reaches ``t_s``."""
        self._schedule.append((t_s, action))
        self._schedule.sort(key=lambda x: x[0])

    def when(self, predicate: Callable[[], bool], action: Callable[[], None]) -> None:
        """Run ``action`` once, at the first step where ``predicate()`` holds."""
        self._triggers.append((predicate, action))

    def pull_cable(self, replug_after_s: float) -> None:
        """Close the vehicle's end (pty closed / TCP connection reset); reconnect after a while."""
        if isinstance(self.vlink, PtyLink):
            self.vlink.close()
            (self.tmp / "ttyFC").unlink()
            self.at(self.now_s + replug_after_s, self._replug_pty)
        elif isinstance(self.vlink, TcpServerLink):
            # The accepted connection is closed (the agent reads EOF / ECONNRESET); the server
            # stops listening until the "cable" is back.
            port = self.vlink.local_address[1]
            self.vlink.close()
            self.at(self.now_s + replug_after_s, lambda: self._reopen_tcp(port))
        else:
            raise ValueError("a UDP link has no cable to pull; use silence()")

    def _replug_pty(self) -> None:
        self.vlink = self._open_vehicle_link()

    def _reopen_tcp(self, port: int) -> None:
        self.vlink = open_link(f"tcpin://127.0.0.1:{port}")

    def silence(self, duration_s: float) -> None:
        """The vehicle's transmissions stop reaching the agent (radio fade, UDP peer silent)."""
        self.silent_until_s = self.now_s + duration_s

    def corrupt(self, duration_s: float, byte_prob: float = 0.2) -> None:
        """Flip one random bit in each byte of the vehicle's output with probability ``byte_prob``."""
        self.corrupt_until_s = self.now_s + duration_s
        self.corrupt_prob = byte_prob

    # -- driving -----------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """The agent's sleep: advance the world by ``seconds`` (at least one vehicle step)."""
        end_ns = self.clock.now_ns + max(round(seconds * 1e9), 1)
        while self.clock.now_ns < end_ns:
            self.clock.now_ns = min(end_ns, self.clock.now_ns + round(STEP_S * 1e9))
            self._step()
        time.sleep(0.0002)  # let the kernel carry the bytes to the agent's end

    def _step(self) -> None:
        now = self.now_s
        while self._schedule and self._schedule[0][0] <= now:
            _, action = self._schedule.pop(0)
            action()
        for trig in list(self._triggers):
            if trig[0]():
                self._triggers.remove(trig)
                trig[1]()
        link = self.vlink
        data = b""
        if link.is_open:
            try:
                data = link.read()
            except (LinkDownError, OSError):
                data = b""
        if data:
            self._decode(data, now)
            self.vehicle.receive(data, now)
        out = self.vehicle.step(now)
        ap = self.vehicle.ap
        mode = ap.mode.name if hasattr(ap.mode, "name") else str(ap.mode)
        if not self.modes or self.modes[-1][1:] != (mode, ap.armed):
            self.modes.append((now, mode, ap.armed))
        if not out or now < self.silent_until_s or not link.is_open:
            return
        if now < self.corrupt_until_s:
            buf = bytearray(out)
            hits = self.rng.random(len(buf)) < self.corrupt_prob
            for i in np.flatnonzero(hits):
                buf[i] ^= 1 << int(self.rng.integers(8))
            out = bytes(buf)
        with contextlib.suppress(LinkDownError, OSError):
            link.write(out)

    def _decode(self, data: bytes, now: float) -> None:
        try:
            msgs = self._decoder.parse_buffer(data) or []
        except Exception:
            return
        for m in msgs:
            kind = m.get_type()
            if kind == "STATUSTEXT":
                self.sent.statustext.append((now, m.severity, str(m.text)))
            elif kind == "COMMAND_LONG":
                self.sent.commands.append((now, int(m.command), float(m.param1), float(m.param2)))
            elif kind == "SET_POSITION_TARGET_LOCAL_NED":
                self.sent.setpoints.append(now)

    def close(self) -> None:
        """Close the vehicle's link."""
        if self.vlink.is_open:
            self.vlink.close()


def events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event records of a flight log."""
    return [r for r in records if r["k"] == "event"]
