"""The adapter (and session) for firmware speaking :mod:`firmware_bridge.custom_protocol`.

It lives apart from :mod:`firmware_bridge.adapters` so that a MAVLink flight never imports the
custom protocol (its dataclasses cost ~5 ms of the agent's cold start); what both share is in
:mod:`firmware_bridge.control`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from firmware_bridge import custom_protocol as cp
from firmware_bridge.control import ActivationStatus, ControlLatch, LatchedControl, check_setpoint_finite
from firmware_bridge.errors import BridgeError, CommandError, LinkDownError
from firmware_bridge.links import Link
from firmware_bridge.types import Autopilot, Setpoint, Signal, VehicleState


class _CustomCommand:
    __slots__ = ("attempts", "deadline_ns", "done", "error", "msg", "started_ns")

    def __init__(self, msg: cp.Command) -> None:
        self.msg = msg
        self.attempts = 0
        self.deadline_ns = 0
        self.started_ns = 0
        self.done = False
        self.error: CommandError | None = None


class CustomFirmware(LatchedControl):
    """Session and adapter in one for firmware speaking :mod:`firmware_bridge.custom_protocol`.

    Same surface as the MAVLink pair: ``poll(now_ns)``, ``state``, ``set_healthy``, commands
    with ACK/timeout/retries, ``send(setpoint)``, ``in_control``, ``check_control`` and
    activation (Hello handshake → mode OFFBOARD → arm → optional takeoff).
    """

    autopilot = Autopilot.CUSTOM
    external_mode = "OFFBOARD"
    prestream = False

    def __init__(
        self,
        link: Link,
        clock: Callable[[], int],
        *,
        heartbeat_period_s: float = 1.0,
        liveness_timeout_s: float = 3.0,
        command_timeout_s: float = 0.5,
        command_retries: int = 3,
        firmware_name: str = "edge-agent",
    ) -> None:
        self.link = link
        self._clock = clock
        self.encoder = cp.CustomEncoder()
        self.decoder = cp.CustomDecoder()
        self._hb_period_ns = int(heartbeat_period_s * 1e9)
        self._liveness_ns = int(liveness_timeout_s * 1e9)
        self._cmd_timeout_ns = int(command_timeout_s * 1e9)
        self._retries = command_retries
        self._name = firmware_name
        self._healthy = False
        self._next_hb_ns = 0
        self._next_hello_ns = 0
        self.peer_hello: cp.Hello | None = None
        self._fields: dict[str, Any] = {}
        self._snapshot: VehicleState | None = None
        self._last_hb_ns = 0
        self._commands: dict[int, _CustomCommand] = {}
        self._next_cmd_id = 1
        self._latch = ControlLatch()
        self._phase = "idle"
        self._error: str | None = None
        self._takeoff_alt_m = 0.0
        self._pending: _CustomCommand | None = None
        self.statustexts: deque[cp.StatusText] = deque(maxlen=32)
        """Recent STATUSTEXTs from the firmware."""
        self.protocol_errors: deque[str] = deque(maxlen=8)
        """Handshake problems (version or role mismatch), newest last."""

    # -- session -----------------------------------------------------------------------------------

    @property
    def state(self) -> VehicleState:
        """The current VehicleState snapshot."""
        if self._snapshot is None:
            self._snapshot = VehicleState(autopilot=Autopilot.CUSTOM, **self._fields)
        return self._snapshot

    def set_healthy(self, healthy: bool) -> None:
        """The agent's watchdog verdict; heartbeats to the firmware stop while False."""
        if healthy and not self._healthy:
            self._next_hb_ns = 0
        self._healthy = healthy

    def _set(self, **kw: Any) -> None:
        self._fields.update(kw)
        self._snapshot = None

    def _write(self, msg: cp.Message) -> None:
        try:
            self.link.write(self.encoder.encode(msg))
        except LinkDownError:
            self._set(link_up=False)

    def poll(self, now_ns: int) -> None:
        """Read, decode and fold messages; send due heartbeat, hello and command retries."""
        try:
            data = self.link.read() if self.link.is_open else b""
        except LinkDownError:
            data = b""
            self._set(link_up=False)
        for msg in self.decoder.feed(data) if data else ():
            self._handle(msg, now_ns)
        if self._fields.get("link_up") and now_ns - self._last_hb_ns > self._liveness_ns:
            self._set(link_up=False)
        if self.peer_hello is None and now_ns >= self._next_hello_ns:
            self._next_hello_ns = now_ns + self._hb_period_ns
            self._write(cp.Hello(cp.PROTOCOL_VERSION, "companion", self._name))
        if self._healthy and now_ns >= self._next_hb_ns:
            self._next_hb_ns = now_ns + self._hb_period_ns
            self._write(cp.Heartbeat(False, "COMPANION", True))
        for cmd_id, c in list(self._commands.items()):
            if now_ns < c.deadline_ns:
                continue
            if c.attempts <= self._retries:
                self._transmit(c, now_ns)
            else:
                c.done = True
                c.error = CommandError(
                    f"{c.msg.kind.name.lower()}: no ACK from the firmware after {c.attempts} attempts",
                    command=int(c.msg.kind),
                    result=None,
                )
                del self._commands[cmd_id]

    def _handle(self, msg: cp.Message, now_ns: int) -> None:
        if isinstance(msg, cp.State):
            t = msg.time_us
            self._set(
                pos_ned_m=Signal(msg.pos_ned_m, now_ns, t),
                vel_ned_m_s=Signal(msg.vel_ned_m_s, now_ns, t),
                q_wxyz=Signal(msg.q_wxyz, now_ns, t),
                rates_frd_rad_s=Signal(msg.rates_frd_rad_s, now_ns, t),
                battery=Signal((msg.battery_frac, msg.battery_v), now_ns, t),
                landed_state=msg.landed_state,
            )
        elif isinstance(msg, cp.Heartbeat):
            self._last_hb_ns = now_ns
            self._set(armed=msg.armed, mode=msg.mode, heartbeat_stamp_ns=now_ns, link_up=True)
        elif isinstance(msg, cp.CommandAck):
            c = self._commands.get(msg.command_id)
            if c is None:
                return
            del self._commands[msg.command_id]
            c.done = True
            if msg.result != cp.AckResult.ACCEPTED:
                text = f"; firmware said: {msg.text}" if msg.text else ""
                c.error = CommandError(
                    f"{c.msg.kind.name.lower()} refused by the firmware: {msg.result.name}{text}",
                    command=int(c.msg.kind),
                    result=int(msg.result),
                )
        elif isinstance(msg, cp.Hello):
            try:
                cp.check_hello(msg, "vehicle")
            except BridgeError as exc:
                self.protocol_errors.append(str(exc))
                return
            self.peer_hello = msg
        elif isinstance(msg, cp.StatusText):
            self.statustexts.append(msg)

    def command(self, kind: cp.CommandKind, param: float = 0.0, text: str = "") -> _CustomCommand:
        """Send a command (retried); the returned handle has ``done`` and ``error``."""
        c = _CustomCommand(cp.Command(self._next_cmd_id, kind, param, text))
        self._next_cmd_id = self._next_cmd_id % 0xFFFF + 1
        self._commands[c.msg.command_id] = c
        self._transmit(c, self._clock())
        return c

    def _transmit(self, c: _CustomCommand, now_ns: int) -> None:
        if c.attempts == 0:
            c.started_ns = now_ns
        c.attempts += 1
        c.deadline_ns = now_ns + self._cmd_timeout_ns
        self._write(c.msg)

    # -- adapter -----------------------------------------------------------------------------------

    def send(self, setpoint: Setpoint) -> None:
        """Send one setpoint as a SETPOINT frame."""
        check_setpoint_finite(setpoint)
        self._write(cp.SetpointMsg(setpoint))

    def start_activation(self, now_ns: int, takeoff_alt_m: float = 0.0) -> None:
        """Begin: handshake → OFFBOARD → arm → (takeoff) → in control."""
        if self._latch.lost is not None:
            raise BridgeError(
                f"control was taken away ({self._latch.lost.reason}); call acknowledge_loss() first if a person decided so"
            )
        self._takeoff_alt_m = takeoff_alt_m
        self._phase = "hello"
        self._error = None
        self._pending = None

    def activation_step(self, now_ns: int) -> ActivationStatus:
        """Advance activation by what has arrived."""
        if self._phase in ("idle", "done", "failed"):
            return ActivationStatus(self._phase, self._phase == "done", self._error)
        state = self.state
        if self.protocol_errors:
            self._phase, self._error = "failed", self.protocol_errors[-1]
            return ActivationStatus(self._phase, False, self._error)
        steps: list[tuple[str, cp.CommandKind, float, str]] = [
            ("mode", cp.CommandKind.SET_MODE, 0.0, self.external_mode),
            ("arm", cp.CommandKind.ARM, 0.0, ""),
        ]
        if self._takeoff_alt_m > 0:
            steps.append(("takeoff", cp.CommandKind.TAKEOFF, self._takeoff_alt_m, ""))
        if self._phase == "hello":
            if self.peer_hello is not None and state.link_up:
                self._phase = steps[0][0]
            else:
                return ActivationStatus(self._phase, detail="waiting for the firmware's hello and heartbeat")
        for idx, (phase, kind, param, text) in enumerate(steps):
            if self._phase != phase:
                continue
            if self._pending is None:
                self._pending = self.command(kind, param, text)
            if self._pending.done:
                err = self._pending.error
                self._pending = None
                if err is not None:
                    self._phase, self._error = "failed", str(err)
                    return ActivationStatus(self._phase, False, self._error)
                self._phase = steps[idx + 1][0] if idx + 1 < len(steps) else "wait"
            break
        if self._phase == "wait" and self.in_control(state):
            self._phase = "done"
            self._latch.had_control = True
        return ActivationStatus(self._phase, self._phase == "done", self._error)


__all__ = ["CustomFirmware"]
