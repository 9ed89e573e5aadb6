"""The MAVLink mission protocol on the vehicle side: upload, download, clear, set current.

Follows mavlink.io's mission microservice as PX4 and ArduPilot implement it: the vehicle drives
an upload (MISSION_COUNT → MISSION_REQUEST_INT for each seq → MISSION_ITEM_INT → MISSION_ACK) and
re-requests an item that does not arrive within ``RETRY_S``; a download answers
MISSION_REQUEST_LIST with MISSION_COUNT and each MISSION_REQUEST(_INT) with the stored item.
Only the plain mission (MAV_MISSION_TYPE_MISSION) is kept: a fence or rally upload is answered
MAV_MISSION_UNSUPPORTED, a fence or rally download has no items (ArduCopter's rally list counts
RALLY_TOTAL, as the real one does).

Uploaded items become :class:`~sitl.mission.NavItem` values for the autopilot
(:meth:`~sitl.autopilot.Autopilot.load_mission`); the raw items are kept for download.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from sitl.autopilot import Autopilot
from sitl.mavlink_telemetry import Home
from sitl.mission import NavItem, NavKind

M = mavlink
RETRY_S = 0.5
"""Seconds before the vehicle asks again for an item that did not come (PX4: 0.5 s… ArduPilot 1 s)."""
MAX_RETRIES = 5
"""Requests for one item before the upload is given up with MAV_MISSION_OPERATION_CANCELLED."""
MAX_ITEMS = 500
"""Largest mission stored; more is refused with MAV_MISSION_NO_SPACE."""

_GLOBAL_FRAMES = {
    M.MAV_FRAME_GLOBAL: False,
    M.MAV_FRAME_GLOBAL_INT: False,
    M.MAV_FRAME_GLOBAL_RELATIVE_ALT: True,
    M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: True,
}
"""Frames whose position the emulator understands, and whether the altitude is above home."""
_NAV_KINDS = {
    M.MAV_CMD_NAV_WAYPOINT: NavKind.WAYPOINT,
    M.MAV_CMD_NAV_LOITER_TIME: NavKind.WAYPOINT,
    M.MAV_CMD_NAV_LOITER_UNLIM: NavKind.WAYPOINT,
    M.MAV_CMD_NAV_TAKEOFF: NavKind.TAKEOFF,
    M.MAV_CMD_NAV_LAND: NavKind.LAND,
    M.MAV_CMD_NAV_RETURN_TO_LAUNCH: NavKind.RTL,
    M.MAV_CMD_DO_CHANGE_SPEED: NavKind.SPEED,
}


@dataclass(frozen=True, slots=True)
class RawItem:
    """A mission item as uploaded (MISSION_ITEM_INT fields; x/y in degE7 for global frames)."""

    seq: int
    frame: int
    command: int
    current: int
    autocontinue: int
    params: tuple[float, float, float, float]
    x: int
    y: int
    z: float


class MissionProtocol:
    """One vehicle's mission store and transfer state; ``send`` puts a message on the wire."""

    def __init__(
        self,
        ap: Autopilot,
        home: Home,
        mav: mavlink.MAVLink,
        send_current: Callable[[], None],
    ) -> None:
        self.ap = ap
        self.home = home
        self.mav = mav
        self._send_current = send_current
        self.items: list[RawItem] = []
        self._incoming: list[RawItem] | None = None
        self._expect = 0
        self._count = 0
        self._peer = (0, 0)
        self._asked_s = -math.inf
        self._retries = 0

    # ------------------------------------------------------------------ messages
    def handle(self, msg: mavlink.MAVLink_message, now_s: float) -> None:
        """One MISSION_* message addressed to this vehicle."""
        kind = msg.get_type()
        mission_type = int(getattr(msg, "mission_type", 0))
        peer = (msg.get_srcSystem(), msg.get_srcComponent())
        if kind == "MISSION_COUNT":
            self._start_upload(int(msg.count), mission_type, peer, now_s)
        elif kind in ("MISSION_ITEM_INT", "MISSION_ITEM"):
            self._item(msg, kind == "MISSION_ITEM_INT", mission_type, now_s)
        elif kind == "MISSION_REQUEST_LIST":
            self._send(
                self.mav.mission_count_encode(peer[0], peer[1], self._count_of(mission_type), mission_type)
            )
        elif kind in ("MISSION_REQUEST_INT", "MISSION_REQUEST"):
            self._download(int(msg.seq), kind == "MISSION_REQUEST_INT", mission_type, peer)
        elif kind == "MISSION_CLEAR_ALL":
            if mission_type in (M.MAV_MISSION_TYPE_MISSION, M.MAV_MISSION_TYPE_ALL):
                self.items = []
                self.ap.load_mission(())
            self._ack(peer, M.MAV_MISSION_ACCEPTED, mission_type)
        elif kind == "MISSION_SET_CURRENT":
            if self.ap.plan.set_current(int(msg.seq)):
                self._send_current()
            else:
                self._ack(peer, M.MAV_MISSION_INVALID_SEQUENCE, 0)
        # a MISSION_ACK from the client ends a download; nothing is pending on our side then

    def _count_of(self, mission_type: int) -> int:
        """Items stored of ``mission_type``. Rally points: none are kept, but ArduCopter counts
        RALLY_TOTAL (real ArduCopter SITL answers the rally list with it, items or not)."""
        if mission_type == M.MAV_MISSION_TYPE_MISSION:
            return len(self.items)
        if mission_type == M.MAV_MISSION_TYPE_RALLY and "RALLY_TOTAL" in self.ap.params:
            return int(self.ap.params["RALLY_TOTAL"])
        return 0

    def step(self, now_s: float) -> None:
        """Re-request an upload item that is late; give the upload up after MAX_RETRIES."""
        if self._incoming is None or now_s - self._asked_s < RETRY_S:
            return
        if self._retries >= MAX_RETRIES:
            self._incoming = None
            self._ack(self._peer, M.MAV_MISSION_OPERATION_CANCELLED, M.MAV_MISSION_TYPE_MISSION)
            return
        self._retries += 1
        self._request(now_s)

    # ------------------------------------------------------------------ upload
    def _start_upload(self, count: int, mission_type: int, peer: tuple[int, int], now_s: float) -> None:
        if mission_type != M.MAV_MISSION_TYPE_MISSION:
            self._ack(peer, M.MAV_MISSION_UNSUPPORTED, mission_type)
            return
        if count > MAX_ITEMS:
            self._ack(peer, M.MAV_MISSION_NO_SPACE, mission_type)
            return
        self._peer = peer
        if count == 0:
            self.items = []
            self.ap.load_mission(())
            self._incoming = None
            self._ack(peer, M.MAV_MISSION_ACCEPTED, mission_type)
            return
        self._incoming = []
        self._count = count
        self._expect = 0
        self._retries = 0
        self._request(now_s)

    def _request(self, now_s: float) -> None:
        self._asked_s = now_s
        self._send(
            self.mav.mission_request_int_encode(
                self._peer[0], self._peer[1], self._expect, M.MAV_MISSION_TYPE_MISSION
            )
        )

    def _item(self, msg: mavlink.MAVLink_message, is_int: bool, mission_type: int, now_s: float) -> None:
        if self._incoming is None or mission_type != M.MAV_MISSION_TYPE_MISSION:
            return  # not uploading: a stray or repeated item
        seq = int(msg.seq)
        if seq != self._expect:
            if seq < self._expect:
                return  # a duplicate of one we have: the next request is already out
            self._request(now_s)  # out of order: ask again for the one we need
            return
        x, y = (int(msg.x), int(msg.y)) if is_int else (round(msg.x * 1e7), round(msg.y * 1e7))
        raw = RawItem(
            seq,
            int(msg.frame),
            int(msg.command),
            int(msg.current),
            int(msg.autocontinue),
            (float(msg.param1), float(msg.param2), float(msg.param3), float(msg.param4)),
            x,
            y,
            float(msg.z),
        )
        nav = self._to_nav(raw)
        if nav is None:
            self._incoming = None
            self._ack(self._peer, M.MAV_MISSION_UNSUPPORTED, mission_type)
            return
        self._incoming.append(raw)
        self._expect += 1
        self._retries = 0
        if self._expect < self._count:
            self._request(now_s)
            return
        items = self._incoming
        self._incoming = None
        navs = tuple(self._to_nav(r) for r in items)
        self.items = items
        self.ap.load_mission(tuple(n for n in navs if n is not None))
        self._ack(self._peer, M.MAV_MISSION_ACCEPTED, mission_type)

    def _to_nav(self, raw: RawItem) -> NavItem | None:
        """The autopilot's view of an item; None when the emulator cannot fly it."""
        if raw.seq == 0 and self.ap.rules.mission_has_home_item:
            return NavItem(0, NavKind.HOME)
        kind = _NAV_KINDS.get(raw.command)
        if kind is None:
            # navigation commands (below 100) the emulator does not fly are refused; DO and
            # CONDITION commands (camera, gimbal, servo, ...) are accepted and passed over
            return None if raw.command < 100 else NavItem(raw.seq, NavKind.SKIP)
        if kind is NavKind.SPEED:
            return NavItem(raw.seq, kind, speed_m_s=raw.params[1])
        if kind is NavKind.RTL:
            return NavItem(raw.seq, kind)
        relative = _GLOBAL_FRAMES.get(raw.frame)
        if relative is None:
            return None
        home_d = float(self.ap.home_ned_m[2])
        up_m = raw.z if relative else raw.z - self.home.alt_amsl_m
        north = east = math.nan
        if raw.x != 0 or raw.y != 0:  # lat/lon 0 means "here" (a land or takeoff without a position)
            north, east = self.home.offset(raw.x * 1e-7, raw.y * 1e-7)
            north += float(self.ap.home_ned_m[0])
            east += float(self.ap.home_ned_m[1])
        down = home_d - up_m if kind is not NavKind.LAND else math.nan
        hold_s = raw.params[0] if raw.command in (M.MAV_CMD_NAV_WAYPOINT, M.MAV_CMD_NAV_LOITER_TIME) else 0.0
        if raw.command == M.MAV_CMD_NAV_LOITER_UNLIM:
            hold_s = math.inf
        radius = raw.params[1] if raw.command == M.MAV_CMD_NAV_WAYPOINT else 0.0
        return NavItem(
            raw.seq,
            kind,
            (north, east, down),
            hold_s=0.0 if math.isnan(hold_s) else max(0.0, hold_s),
            radius_m=max(0.0, radius) if math.isfinite(radius) else 0.0,
        )

    # ------------------------------------------------------------------ download
    def _download(self, seq: int, as_int: bool, mission_type: int, peer: tuple[int, int]) -> None:
        if mission_type != M.MAV_MISSION_TYPE_MISSION or not 0 <= seq < len(self.items):
            self._ack(peer, M.MAV_MISSION_INVALID_SEQUENCE, mission_type)
            return
        r = self.items[seq]
        current = int(seq == self.ap.plan.current)
        if as_int:
            msg = self.mav.mission_item_int_encode(
                peer[0],
                peer[1],
                r.seq,
                r.frame,
                r.command,
                current,
                r.autocontinue,
                *r.params,
                r.x,
                r.y,
                r.z,
                mission_type,
            )
        else:
            msg = self.mav.mission_item_encode(
                peer[0],
                peer[1],
                r.seq,
                r.frame,
                r.command,
                current,
                r.autocontinue,
                *r.params,
                r.x * 1e-7,
                r.y * 1e-7,
                r.z,
                mission_type,
            )
        self._send(msg)

    def _send(self, msg: mavlink.MAVLink_message) -> None:
        self.mav.send(msg)

    def _ack(self, peer: tuple[int, int], result: int, mission_type: int) -> None:
        self._send(self.mav.mission_ack_encode(peer[0], peer[1], result, mission_type))
