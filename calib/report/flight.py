"""Reading a flight log into arrays: :func:`load_flight` → :class:`Flight` (with the mission from its header)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.flightlog import FlightLogError, read_log
from edge_agent.mission import Fence, Keepout, KeepoutBox, KeepoutCylinder, MissionGeometry

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

LAYER_NAMES = ("none", "watchdog", "barrier", "fallback")


@dataclass(frozen=True, slots=True)
class LoggedMission:
    """The mission geometry as the log header recorded it (NED metres; altitudes up-positive)."""

    geofence: Fence
    keepouts: tuple[Keepout, ...]
    waypoints_ned_m: tuple[tuple[float, float, float], ...]
    fence_margin_m: float
    keepout_margin_m: float
    altitude_margin_m: float
    autopilot_fence: Fence | None
    geometry: MissionGeometry = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Flight:
    """One flight log as arrays over its T tick records, with its header and events."""

    path: Path
    header: dict[str, Any]
    events: tuple[dict[str, Any], ...]
    mission: LoggedMission
    t_s: F64
    """[T] seconds since the policy took control."""
    pos_ned_m: F64
    """[T, 3]"""
    vel_ned_m_s: F64
    """[T, 3]"""
    layer: I64
    """[T] 0 none, 1 watchdog, 2 barrier, 3 fallback."""
    reason: I64
    """[T] edge_agent.shield.Reason values."""
    stage: I64
    """[T] edge_agent.fallback.Stage values."""
    margin_m: F64
    """[T] the calibrated margin q_t."""
    score_m: F64
    """[T] the calibrator's score (NaN where not scored)."""
    miscoverage: F64
    """[T] running miscoverage since the start (NaN before the first score)."""
    infer_us: F64
    """[T]"""
    tick_us: F64
    """[T]"""
    late_us: F64
    """[T] how late each tick started after its scheduled time."""

    @property
    def rate_hz(self) -> float:
        """The control rate the flight ran at."""
        return float(self.header.get("rate_hz", 50.0))

    @property
    def shield_enabled(self) -> bool:
        """False for a flight flown with ``--no-shield``."""
        return bool(self.header.get("shield_enabled", True))

    @property
    def acted(self) -> NDArray[np.bool_]:
        """[T] ticks where the shield changed the command that went out.

        With ``--no-shield`` the log still records what the barrier and fallback *would* have
        done (layer 2 / 3), but only the watchdog's hold reached the vehicle.
        """
        return self.layer > 0 if self.shield_enabled else self.layer == 1


def _fence(rec: Mapping[str, Any]) -> Fence:
    return Fence(
        str(rec["kind"]),
        tuple((float(n), float(e)) for n, e in rec["vertices_ne_m"]),
        float(rec["floor_alt_m"]),
        float(rec["ceiling_alt_m"]),
    )


def _keepout(rec: Mapping[str, Any]) -> Keepout:
    lo, hi = float(rec["alt_min_m"]), float(rec["alt_max_m"])
    if "center_ne_m" in rec:
        c = rec["center_ne_m"]
        return KeepoutCylinder((float(c[0]), float(c[1])), float(rec["radius_m"]), lo, hi)
    return KeepoutBox(
        float(rec["north_min_m"]),
        float(rec["north_max_m"]),
        float(rec["east_min_m"]),
        float(rec["east_max_m"]),
        lo,
        hi,
    )


def mission_from_header(header: Mapping[str, Any]) -> LoggedMission:
    """Rebuild the mission geometry from a log header's ``mission`` record (dataclasses as dicts)."""
    rec = header.get("mission")
    if not isinstance(rec, Mapping):
        raise FlightLogError(
            "the log header has no mission record; it was not written by `edge-agent run` "
            "(the report needs the mission to draw the fence and measure distances)"
        )
    try:
        fence = _fence(rec["geofence"])
        keepouts = tuple(_keepout(k) for k in rec.get("keepouts", ()))
        waypoints = tuple((float(w[0]), float(w[1]), float(w[2])) for w in rec["waypoints_ned_m"])
        margins = rec.get("margins") or {}
        ap = rec.get("autopilot") or {}
        ap_fence = _fence(ap["fence"]) if ap.get("fence") else None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FlightLogError(
            f"the log header's mission record is malformed ({type(exc).__name__}: {exc}); "
            f"the log comes from an incompatible edge-agent version"
        ) from exc
    return LoggedMission(
        fence,
        keepouts,
        waypoints,
        float(margins.get("fence_m", 0.0)),
        float(margins.get("keepout_m", 0.0)),
        float(margins.get("altitude_m", 0.0)),
        ap_fence,
        MissionGeometry(fence, keepouts),
    )


_TICK_FLOATS = ("margin_m", "score_m", "miscoverage", "infer_us", "tick_us", "late_us")


def load_flight(path: str | os.PathLike[str]) -> Flight:
    """Read a flight log into arrays; raises FlightLogError if it is not one or holds no ticks."""
    p = Path(path)
    header: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    ticks: list[dict[str, Any]] = []
    climb: list[dict[str, Any]] = []
    for rec in read_log(p):
        kind = rec["k"]
        if kind == "header":
            header = rec
        elif kind == "tick":
            ticks.append(rec)
        elif kind == "climb":
            climb.append(rec)
        elif kind == "event":
            events.append(rec)
    assert header is not None  # read_log guarantees the header comes first
    mission = mission_from_header(header)
    ticks = ticks or climb  # a flight that ended in the take-off climb: report the climb itself
    if not ticks:
        names = ", ".join(str(e.get("name")) for e in events) or "none"
        raise FlightLogError(
            f"{p} holds no tick records: the agent never took control (events: {names}); "
            f"there is no flight to report on"
        )
    try:
        cols = {k: np.array([float(r[k]) for r in ticks]) for k in _TICK_FLOATS}
        pos = np.array([r["pos_ned_m"] for r in ticks], dtype=np.float64).reshape(-1, 3)
        vel = np.array([r["vel_ned_m_s"] for r in ticks], dtype=np.float64).reshape(-1, 3)
        ints = {k: np.array([int(r[k]) for r in ticks], dtype=np.int64) for k in ("layer", "reason", "stage")}
        t = np.array([float(r["t_s"]) for r in ticks])
    except (KeyError, TypeError, ValueError) as exc:
        raise FlightLogError(
            f"{p} has a tick record without the fields the report needs ({type(exc).__name__}: {exc}); "
            f"it was written by an incompatible edge-agent version"
        ) from exc
    return Flight(
        p,
        header,
        tuple(events),
        mission,
        t,
        pos,
        vel,
        ints["layer"],
        ints["reason"],
        ints["stage"],
        cols["margin_m"],
        cols["score_m"],
        cols["miscoverage"],
        cols["infer_us"],
        cols["tick_us"],
        cols["late_us"],
    )
