"""The mission an emulated autopilot flies in its MISSION mode (PX4 AUTO.MISSION, ArduCopter AUTO).

Protocol-free: :mod:`sitl.mission_protocol` turns the MAVLink mission items a client uploads
into :class:`NavItem` values (positions already in the Sim's NED frame) and the
:class:`~sitl.autopilot.Autopilot` flies them one after the other. This module holds the plan and
its progress: which item is current, which were reached (MISSION_ITEM_REACHED), whether the
mission is complete. It does not fly anything itself.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class NavKind(StrEnum):
    """What one mission item makes the vehicle do."""

    WAYPOINT = "waypoint"
    TAKEOFF = "takeoff"
    LAND = "land"
    RTL = "rtl"
    SPEED = "speed"
    """DO_CHANGE_SPEED: sets the cruise speed for the items after it, done at once."""
    SKIP = "skip"
    """A command the emulator accepts but that does not move the vehicle (camera, gimbal, ...)."""
    HOME = "home"
    """ArduPilot's item 0: the home position, never flown."""


class MissionState(IntEnum):
    """MISSION_STATE, as MISSION_CURRENT reports it."""

    UNKNOWN = 0
    NO_MISSION = 1
    NOT_STARTED = 2
    ACTIVE = 3
    PAUSED = 4
    COMPLETE = 5


@dataclass(frozen=True, slots=True)
class NavItem:
    """One mission item in the Sim's frame.

    ``pos_ned_m`` is the target in the Sim's NED frame (metres, the same frame as
    ``Autopilot.home_ned_m``); a NaN component means "keep the current one" (a waypoint without
    latitude/longitude, a land item "here"). ``hold_s`` is the time to wait at a waypoint before
    the next item; ``radius_m`` the acceptance radius (0 = the firmware's parameter);
    ``speed_m_s`` the new cruise speed of a SPEED item.
    """

    seq: int
    kind: NavKind
    pos_ned_m: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    hold_s: float = 0.0
    radius_m: float = 0.0
    speed_m_s: float = math.nan


class MissionPlan:
    """The uploaded items, the current one and the reached events, for one vehicle."""

    def __init__(self) -> None:
        self.items: tuple[NavItem, ...] = ()
        self.current = 0
        """Index (= MAVLink seq) of the item being flown or to be flown next."""
        self.started = False
        self.complete = False
        self.arrived_s = math.inf
        """When the vehicle got to the current item (its hold time runs from then)."""
        self.speed_m_s = math.nan
        """Cruise speed set by the last SPEED item (NaN: the firmware's parameter)."""
        self._reached: deque[int] = deque(maxlen=64)

    def load(self, items: tuple[NavItem, ...], first: int = 0) -> None:
        """Replace the plan (an upload or a clear) and start again from item ``first``."""
        self.items = items
        self.current = min(first, max(len(items) - 1, 0))
        self.started = False
        self.complete = False
        self.arrived_s = math.inf
        self.speed_m_s = math.nan
        self._reached.clear()

    def set_current(self, seq: int) -> bool:
        """MISSION_SET_CURRENT / DO_SET_MISSION_CURRENT; False when ``seq`` is out of range."""
        if not 0 <= seq < len(self.items):
            return False
        self.current = seq
        self.complete = False
        self.arrived_s = math.inf
        return True

    @property
    def item(self) -> NavItem | None:
        """The current item, or None when there is none to fly."""
        if self.complete or not 0 <= self.current < len(self.items):
            return None
        return self.items[self.current]

    def arrive(self, now_s: float) -> None:
        """The vehicle reached the current item's position: report it once."""
        if self.arrived_s == math.inf:
            self.arrived_s = now_s
            self._reached.append(self.current)

    def advance(self) -> None:
        """Go on with the next item, or mark the mission complete after the last one."""
        self.arrived_s = math.inf
        if self.current + 1 >= len(self.items):
            self.complete = True
            return
        self.current += 1

    def take_reached(self) -> list[int]:
        """Sequence numbers reached since the last call, oldest first (MISSION_ITEM_REACHED)."""
        out = list(self._reached)
        self._reached.clear()
        return out

    def state(self, active: bool) -> MissionState:
        """MISSION_STATE for MISSION_CURRENT; ``active`` says whether the MISSION mode is flying it."""
        if not self.items:
            return MissionState.NO_MISSION
        if self.complete:
            return MissionState.COMPLETE
        if active:
            return MissionState.ACTIVE
        return MissionState.PAUSED if self.started else MissionState.NOT_STARTED
