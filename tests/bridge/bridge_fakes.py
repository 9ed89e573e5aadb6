"""Fakes for the bridge tests: a settable clock and a scripted autopilot speaking pymavlink's own encoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from firmware_bridge.links import Link
from firmware_bridge.mavlink_codec import MavlinkParser


class FakeClock:
    """Monotonic nanoseconds that move only when told to."""

    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)


class _Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


@dataclass
class FakeAutopilot:
    """The vehicle end of a link: answers commands by a script, sends heartbeats on demand.

    ``ack_script`` maps MAV_CMD → a list of what to do with successive attempts: None = drop,
    an int = answer with that MAV_RESULT. When the list runs out the command is accepted.
    """

    link: Link
    autopilot: int = mavlink.MAV_AUTOPILOT_PX4
    custom_mode: int = 0
    armed: bool = False
    ack_script: dict[int, list[int | None]] = field(default_factory=dict)
    texts_before_ack: dict[int, str] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    mission_counts: dict[int, int] = field(default_factory=dict)
    """Items stored per MAV_MISSION_TYPE: what MISSION_REQUEST_LIST is answered (others: silence)."""
    lists_dropped: int = 0
    """MISSION_REQUEST_LISTs to leave unanswered before answering (a lossy link)."""
    received: list[Any] = field(default_factory=list)
    on_command: Callable[[Any], None] | None = None
    clock: Callable[[], int] | None = None
    clock_offset_ns: int = 0
    timesync_delay_ns: int = 0
    sysid: int = 1

    def __post_init__(self) -> None:
        self._sink = _Sink()
        self.mav = mavlink.MAVLink(self._sink, srcSystem=self.sysid, srcComponent=1)
        self.parser = MavlinkParser()

    def send(self, msg: Any) -> None:
        self.mav.send(msg)
        for chunk in self._sink.chunks:
            self.link.write(chunk)
        self._sink.chunks.clear()

    def heartbeat(self) -> None:
        base = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (
            mavlink.MAV_MODE_FLAG_SAFETY_ARMED if self.armed else 0
        )
        self.send(mavlink.MAVLink_heartbeat_message(2, self.autopilot, base, self.custom_mode, 4, 3))

    def service(self) -> list[Any]:
        """Read what the companion sent and answer it; return the messages read."""
        msgs = self.parser.feed(self.link.read())
        for m in msgs:
            self.received.append(m)
            t = m.get_type()
            if t == "COMMAND_LONG":
                script = self.ack_script.get(m.command, [])
                action = script.pop(0) if script else 0
                if action is None:
                    continue
                if m.command in self.texts_before_ack:
                    self.send(
                        mavlink.MAVLink_statustext_message(3, self.texts_before_ack[m.command].encode())
                    )
                if action == 0 and self.on_command is not None:
                    self.on_command(m)
                self.send(
                    mavlink.MAVLink_command_ack_message(
                        m.command, action, 0, 0, m.get_srcSystem(), m.get_srcComponent()
                    )
                )
            elif t == "TIMESYNC" and m.tc1 == 0 and self.clock is not None:
                self.send(mavlink.MAVLink_timesync_message(self.clock() + self.clock_offset_ns, m.ts1))
            elif t == "PARAM_REQUEST_READ" and m.param_id in self.params:
                self.send(
                    mavlink.MAVLink_param_value_message(m.param_id.encode(), self.params[m.param_id], 9, 1, 0)
                )
            elif t == "MISSION_REQUEST_LIST" and m.mission_type in self.mission_counts:
                if self.lists_dropped > 0:
                    self.lists_dropped -= 1
                    continue
                self.send(
                    mavlink.MAVLink_mission_count_message(
                        m.get_srcSystem(),
                        m.get_srcComponent(),
                        self.mission_counts[m.mission_type],
                        m.mission_type,
                    )
                )
        return msgs

    def of_type(self, name: str) -> list[Any]:
        return [m for m in self.received if m.get_type() == name]
