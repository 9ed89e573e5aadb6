"""The mission file: where the vehicle may fly, where it should go, and what it does on fallback.

A mission is a TOML file (documented in docs/mission.md) parsed once at start-up into frozen
dataclasses. Every length is in metres in the local NED frame of the mission origin, except
altitudes, which the *file* gives up-positive (metres above the origin, as pilots think) and
which this module converts to NED down (``down = -alt``) for everything it computes.

Validation is strict and happens here, before anything flies: unknown keys (typos), wrong
types, missing sections, degenerate or self-intersecting fences, floor above ceiling, waypoints
outside the fence or inside a keep-out zone, a companion fence not inside the autopilot's by the
stopping distance. Each failure is a :class:`MissionError` naming the problem and the fix.

:class:`MissionGeometry` holds the same geometry as arrays and answers the batched distance
queries the shield and the observation builder need (arrays with a leading batch axis B).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import MissionError
from edge_agent.tomlcheck import Table, check_sections, read_toml

F64 = NDArray[np.float64]

FALLBACK_ACTIONS = ("hold", "land", "return")
AUTOPILOT_FLAVOURS = ("px4", "ardupilot")

#: Offboard-loss defaults per flavour: (seconds the last setpoint is kept, brake deceleration m/s²).
#: PX4: COM_OF_LOSS_T = 1.0 s, then the failsafe (Position mode) brakes; 2.0 m/s² is a cautious
#: figure for its braking. ArduPilot: GUID_TIMEOUT = 3.0 s keeping the last velocity, then a stop
#: measured at 2 m/s → 1.75 m (≈1.14 m/s², data/ardupilot); 1.0 m/s² keeps us on the safe side.
SILENCE_DEFAULTS: dict[str, tuple[float, float]] = {"px4": (1.0, 2.0), "ardupilot": (3.0, 1.0)}

#: Seconds beyond the offboard-loss timeout before the autopilot starts braking, per flavour. Measured
#: over 48 kills of the agent on real PX4 SIH (experiments.firmware_kill, docs/safety.md): its failsafe
#: came 1.10-2.06 s after the last setpoint with COM_OF_LOSS_T = 1.0 (p50 1.45 s), so PX4 gets
#: 1.1 s; real ArduCopter kept GUID_TIMEOUT and braked (50 kills, travel within the model), 0.2 s.
FAILSAFE_DELAY_S: dict[str, float] = {"px4": 1.1, "ardupilot": 0.2}

#: Reported when there are no keep-out zones (finite, so an observation clip still applies).
NO_KEEPOUT_DIST_M = 1.0e3


# ---------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the local NED origin sits on Earth (information only; nothing is computed from it)."""

    lat_deg: float
    lon_deg: float
    alt_amsl_m: float


@dataclass(frozen=True, slots=True)
class Fence:
    """A horizontal fence (box or polygon) with an optional altitude band (up-positive, metres)."""

    kind: str
    """"box" or "polygon"."""
    vertices_ne_m: tuple[tuple[float, float], ...]
    """Closed implicitly, counter-clockwise seen from above with north up (normalised at parse)."""
    floor_alt_m: float = -math.inf
    ceiling_alt_m: float = math.inf


@dataclass(frozen=True, slots=True)
class KeepoutCylinder:
    """A vertical cylinder no part of the flight may enter; altitudes up-positive (inf = unbounded)."""

    center_ne_m: tuple[float, float]
    radius_m: float
    alt_min_m: float = -math.inf
    alt_max_m: float = math.inf


@dataclass(frozen=True, slots=True)
class KeepoutBox:
    """An axis-aligned box no part of the flight may enter; altitudes up-positive (inf = unbounded)."""

    north_min_m: float
    north_max_m: float
    east_min_m: float
    east_max_m: float
    alt_min_m: float = -math.inf
    alt_max_m: float = math.inf


Keepout = KeepoutCylinder | KeepoutBox


@dataclass(frozen=True, slots=True)
class SpeedLimits:
    """Command limits the shield clips to."""

    horizontal_m_s: float
    up_m_s: float
    down_m_s: float
    yaw_rate_rad_s: float


@dataclass(frozen=True, slots=True)
class FallbackPlan:
    """What the Simplex fallback does after braking and holding for ``hold_s``."""

    action: str
    """"hold", "land" or "return"."""
    hold_s: float
    land_speed_m_s: float
    home_ned_m: tuple[float, float, float]
    """Return target: home north/east and the return altitude as NED down."""


@dataclass(frozen=True, slots=True)
class Margins:
    """Distances (metres) kept from each kind of boundary on top of the calibrated margin q_t."""

    fence_m: float
    keepout_m: float
    altitude_m: float


@dataclass(frozen=True, slots=True)
class AutopilotSpec:
    """The flight controller the mission is flown with, its silence behaviour and its own fence."""

    flavour: str
    """"px4" or "ardupilot"."""
    silence_hold_s: float
    """Seconds the autopilot keeps the last setpoint when the companion falls silent."""
    brake_decel_m_s2: float
    """Deceleration of the autopilot's own stop after that time."""
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """The airframe's velocity loop as the shield models it; None = the built-in defaults
    (measured on the SITL's X500, see docs/shield.md). Fit them from a step response."""

    velocity_tau_xy_s: float | None = None
    velocity_tau_z_s: float | None = None
    accel_m_s2: float | None = None
    latency_s: float | None = None
    """Dead time of the autopilot's loop plus link delay (ShieldConfig.latency_s)."""


@dataclass(frozen=True, slots=True)
class Mission:
    """A validated mission. Lengths in metres, local NED of the origin."""

    geofence: Fence
    keepouts: tuple[Keepout, ...]
    waypoints_ned_m: tuple[tuple[float, float, float], ...]
    acceptance_radius_m: float
    limits: SpeedLimits
    fallback: FallbackPlan
    margins: Margins
    autopilot: AutopilotSpec
    origin: Origin | None = None
    vehicle: VehicleSpec = field(default_factory=VehicleSpec)
    geometry: MissionGeometry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "geometry", MissionGeometry(self.geofence, self.keepouts))

    def geometry_features(self, pos_ned_m: F64) -> dict[str, F64]:
        """The geometry fields of firmware_bridge.features.FeatureInputs for positions [B, 3]."""
        return self.geometry.features(pos_ned_m)


# ---------------------------------------------------------------------------------------------
# Batched geometry


def _segment_closest(p_ne: F64, a: F64, ab: F64, ab2: F64) -> tuple[F64, F64]:
    """Closest points on segments a→a+ab to points p: returns (closest [B,E,2], distance [B,E])."""
    rel = p_ne[:, None, :] - a[None]
    t = np.clip((rel * ab[None]).sum(-1) / ab2[None], 0.0, 1.0)
    q = a[None] + t[..., None] * ab[None]
    dist = np.sqrt(((q - p_ne[:, None, :]) ** 2).sum(-1))
    return q, dist


def _point_in_polygon(p_ne: F64, a: F64, b: F64) -> NDArray[np.bool_]:
    """Even-odd crossing test, [B] (points exactly on an edge may land either way)."""
    pn, pe = p_ne[:, 0:1], p_ne[:, 1:2]
    an, ae, bn, be = a[None, :, 0], a[None, :, 1], b[None, :, 0], b[None, :, 1]
    crosses = (ae > pe) != (be > pe)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_at = an + (pe - ae) * (bn - an) / (be - ae)
    hit = crosses & (pn < n_at)
    return np.asarray(hit.sum(-1) % 2 == 1)


class MissionGeometry:
    """The mission's fence and keep-out zones as arrays, with batched distance queries.

    Public arrays (read-only by convention): ``edge_a_ne`` / ``edge_b_ne`` [E, 2] the fence's
    edges (counter-clockwise), ``floor_down_m`` / ``ceiling_down_m`` (NED down of the altitude
    band), ``cyl_center_ne`` [C, 2], ``cyl_radius_m`` [C], ``box_lo_ne`` / ``box_hi_ne`` [X, 2],
    ``zone_top_down_m`` / ``zone_bottom_down_m`` [C + X] (cylinders first; ±inf = unbounded).
    """

    def __init__(self, fence: Fence, keepouts: tuple[Keepout, ...]) -> None:
        v = np.asarray(fence.vertices_ne_m, dtype=np.float64)
        self.is_box = fence.kind == "box"
        self.edge_a_ne = v
        self.edge_b_ne = np.roll(v, -1, axis=0)
        ab = self.edge_b_ne - self.edge_a_ne
        self._ab = ab
        self._ab2 = (ab**2).sum(-1)
        # Outward normal of a counter-clockwise polygon (north = x, east = y, seen from above with
        # north up and east right the orientation flips, so be explicit): rotate edge by -90°.
        length = np.sqrt(self._ab2)
        self.edge_outward_ne = np.stack([ab[:, 1], -ab[:, 0]], axis=-1) / length[:, None]
        if _signed_area(v) < 0:
            self.edge_outward_ne = -self.edge_outward_ne
        self.box_min_ne = v.min(axis=0)
        self.box_max_ne = v.max(axis=0)
        self.floor_down_m = -fence.floor_alt_m
        self.ceiling_down_m = -fence.ceiling_alt_m
        cyl = [k for k in keepouts if isinstance(k, KeepoutCylinder)]
        box = [k for k in keepouts if isinstance(k, KeepoutBox)]
        self.cyl_center_ne = np.array([c.center_ne_m for c in cyl], dtype=np.float64).reshape(-1, 2)
        self.cyl_radius_m = np.array([c.radius_m for c in cyl], dtype=np.float64)
        self.box_lo_ne = np.array([[b.north_min_m, b.east_min_m] for b in box], dtype=np.float64).reshape(
            -1, 2
        )
        self.box_hi_ne = np.array([[b.north_max_m, b.east_max_m] for b in box], dtype=np.float64).reshape(
            -1, 2
        )
        zones: list[Keepout] = [*cyl, *box]
        self.zones: tuple[Keepout, ...] = tuple(zones)
        """The keep-out zones in the order of every per-zone array here (cylinders, then boxes)."""
        self.zone_top_down_m = np.array([-z.alt_max_m for z in zones], dtype=np.float64)
        self.zone_bottom_down_m = np.array([-z.alt_min_m for z in zones], dtype=np.float64)
        self.n_zones = len(zones)

    # -- fence --------------------------------------------------------------------------------

    def fence_distance(self, pos_ned_m: F64) -> tuple[F64, F64]:
        """Signed horizontal distance to the fence edge [B] (positive inside) and inward normal [B, 2]."""
        p = pos_ned_m[:, :2]
        q, dist = _segment_closest(p, self.edge_a_ne, self._ab, self._ab2)
        i = np.argmin(dist, axis=1)
        rows = np.arange(p.shape[0])
        d = dist[rows, i]
        inside = _point_in_polygon(p, self.edge_a_ne, self.edge_b_ne)
        diff = p - q[rows, i]  # from the boundary to the point: inward when inside
        with np.errstate(invalid="ignore", divide="ignore"):
            normal = diff / d[:, None]
        on_edge = ~(d > 1e-12)
        normal[on_edge] = -self.edge_outward_ne[i[on_edge]]
        normal[~inside & ~on_edge] *= -1.0
        return np.where(inside, d, -d), normal

    def altitude_distances(self, pos_ned_m: F64) -> tuple[F64, F64]:
        """Height above the floor [B] and depth below the ceiling [B] (negative = outside the band)."""
        down = pos_ned_m[:, 2]
        return self.floor_down_m - down, down - self.ceiling_down_m

    # -- keep-out zones -----------------------------------------------------------------------

    def keepout_horizontal(self, pos_ned_m: F64) -> tuple[F64, F64]:
        """Signed horizontal distance to each zone's footprint [B, Z] (negative inside) and the
        unit vector from the vehicle toward the footprint's closest point [B, Z, 2]."""
        p = pos_ned_m[:, None, :2]
        diff_c = self.cyl_center_ne - p
        dc = np.hypot(diff_c[..., 0], diff_c[..., 1])
        q_b = np.minimum(np.maximum(p, self.box_lo_ne), self.box_hi_ne)
        diff_b = q_b - p
        db = np.hypot(diff_b[..., 0], diff_b[..., 1])
        diff = np.concatenate([diff_c, diff_b], axis=1)
        dist = np.concatenate([dc, db], axis=1)
        # Unit vector toward the zone; at zero distance (on the axis, inside a box) any is as good.
        normal = diff / np.where(dist > 0, dist, 1.0)[..., None]
        dist[:, : dc.shape[1]] -= self.cyl_radius_m
        if self.box_lo_ne.shape[0]:
            inside = db == 0
            if inside.any():
                # Inside a box footprint: minus the depth to the nearest side, and the normal pointing
                # inward from that side, so that receding (n·u < 0) is leaving by the shortest way.
                # (A zero normal here left the fallback's recovery nothing to push along: on real PX4
                # a vehicle that drifted into the demo's building hovered inside it; docs/safety.md.)
                to_lo, to_hi = p - self.box_lo_ne, self.box_hi_ne - p
                depth = np.minimum(to_lo, to_hi).min(-1)
                dist[:, dc.shape[1] :] = np.where(inside, -depth, db)
                axis = np.minimum(to_lo, to_hi).argmin(-1)
                sign = np.where(
                    np.take_along_axis(to_lo, axis[..., None], -1)[..., 0]
                    <= np.take_along_axis(to_hi, axis[..., None], -1)[..., 0],
                    1.0,
                    -1.0,
                )
                inward = np.zeros_like(diff_b)
                np.put_along_axis(inward, axis[..., None], sign[..., None], -1)
                nb = normal[:, dc.shape[1] :]
                nb[inside] = inward[inside]
        return dist, normal

    def keepout_distance(self, pos_ned_m: F64) -> tuple[F64, F64]:
        """Signed 3-D distance to each zone [B, Z] (negative inside) and its closest point [B, Z, 3]."""
        dh, n_h = self.keepout_horizontal(pos_ned_m)
        down = pos_ned_m[:, None, 2]
        above = self.zone_top_down_m[None] - down
        below = down - self.zone_bottom_down_m[None]
        dv = np.maximum(above, below)  # > 0 outside the zone's altitude range
        out_h, out_v = dh > 0, dv > 0
        dist = np.where(
            out_h & out_v,
            np.hypot(np.maximum(dh, 0.0), np.maximum(dv, 0.0)),
            np.where(out_h | out_v, np.maximum(dh, dv), np.maximum(dh, dv)),
        )
        closest = np.empty((*dh.shape, 3))
        closest[..., :2] = pos_ned_m[:, None, :2] + np.maximum(dh, 0.0)[..., None] * n_h
        closest[..., 2] = np.clip(down, self.zone_top_down_m[None], self.zone_bottom_down_m[None])
        return dist, closest

    def features(self, pos_ned_m: F64) -> dict[str, F64]:
        """fence_dist_m, alt_floor_dist_m, alt_ceiling_dist_m, keepout_rel_ned_m, keepout_dist_m for [B, 3]."""
        pos = np.asarray(pos_ned_m, dtype=np.float64)
        fence, _ = self.fence_distance(pos)
        floor, ceiling = self.altitude_distances(pos)
        b = pos.shape[0]
        if self.n_zones:
            dist, closest = self.keepout_distance(pos)
            i = np.argmin(dist, axis=1)
            rows = np.arange(b)
            k_dist = dist[rows, i]
            k_rel = closest[rows, i] - pos
        else:
            k_dist = np.full(b, NO_KEEPOUT_DIST_M)
            k_rel = np.zeros((b, 3))
        return {
            "fence_dist_m": fence,
            "alt_floor_dist_m": floor,
            "alt_ceiling_dist_m": ceiling,
            "keepout_rel_ned_m": k_rel,
            "keepout_dist_m": k_dist,
        }


def _signed_area(v: F64) -> float:
    w = np.roll(v, -1, axis=0)
    return float(0.5 * (v[:, 0] * w[:, 1] - w[:, 0] * v[:, 1]).sum())


# ---------------------------------------------------------------------------------------------
# Parsing


def _table(data: Any, where: str) -> Table:
    """A mission table read by the shared TOML checker (MissionError, docs/mission.md)."""
    return Table(data, where, error=MissionError, docs="docs/mission.md")


def _segments_cross(p1: F64, p2: F64, q1: F64, q2: F64) -> bool:
    def orient(a: F64, b: F64, c: F64) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    def on_seg(a: F64, b: F64, c: F64) -> bool:
        return bool(min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1]))

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if (o1 > 0) != (o2 > 0) and (o3 > 0) != (o4 > 0) and o1 * o2 < 0 and o3 * o4 < 0:
        return True
    return (
        (o1 == 0 and on_seg(p1, p2, q1))
        or (o2 == 0 and on_seg(p1, p2, q2))
        or (o3 == 0 and on_seg(q1, q2, p1))
        or (o4 == 0 and on_seg(q1, q2, p2))
    )


def _parse_fence(t: Table, *, band_required: bool) -> Fence:
    kind = t.string("kind", ("box", "polygon"))
    if kind == "box":
        n0, n1 = t.number("north_min_m"), t.number("north_max_m")
        e0, e1 = t.number("east_min_m"), t.number("east_max_m")
        if n0 >= n1 or e0 >= e1:
            raise MissionError(
                f"[{t.where}] box is empty: north_min_m={n0} must be < north_max_m={n1} and "
                f"east_min_m={e0} < east_max_m={e1}; swap or fix the bounds"
            )
        verts: tuple[tuple[float, ...], ...] = ((n0, e0), (n1, e0), (n1, e1), (n0, e1))
    else:
        verts = t.vectors("vertices_ne_m", 2)
        if len(verts) >= 2 and verts[0] == verts[-1]:
            verts = verts[:-1]  # the fence closes itself; an explicit closing vertex is tolerated
        if len(verts) < 3:
            raise MissionError(
                f"[{t.where}] polygon has {len(verts)} distinct vertices; a fence needs at least 3 "
                f"[north, east] vertices (it is closed implicitly)"
            )
        v = np.asarray(verts)
        for i in range(len(v)):
            if np.array_equal(v[i], v[(i + 1) % len(v)]):
                raise MissionError(
                    f"[{t.where}] polygon repeats vertex {i} ({verts[i]}); remove the duplicate so "
                    f"every edge has a length"
                )
        e = len(v)
        for i in range(e):
            for j in range(i + 1, e):
                if j == i + 1 or (i == 0 and j == e - 1):
                    continue  # neighbours share a vertex
                if _segments_cross(v[i], v[(i + 1) % e], v[j], v[(j + 1) % e]):
                    raise MissionError(
                        f"[{t.where}] polygon is self-intersecting: edge {i} ({verts[i]}→"
                        f"{verts[(i + 1) % e]}) crosses edge {j} ({verts[j]}→{verts[(j + 1) % e]}); "
                        f"list the vertices in order around the boundary"
                    )
        if abs(_signed_area(v)) < 1e-6:
            raise MissionError(
                f"[{t.where}] polygon encloses no area (all vertices on a line), so the fence is "
                f"not closed around anything; give vertices that surround the flight area"
            )
        if _signed_area(v) < 0:
            verts = tuple(reversed(verts))
    floor = t.number("floor_alt_m") if band_required or t.has("floor_alt_m") else -math.inf
    ceiling = t.number("ceiling_alt_m") if band_required or t.has("ceiling_alt_m") else math.inf
    if floor >= ceiling:
        raise MissionError(
            f"[{t.where}] floor_alt_m={floor} must be below ceiling_alt_m={ceiling} "
            f"(altitudes in metres above the origin, up positive)"
        )
    t.done()
    return Fence(kind, tuple((float(a), float(b)) for a, b in verts), floor, ceiling)


def _parse_keepout(t: Table) -> Keepout:
    kind = t.string("kind", ("cylinder", "box"))
    lo = t.number("alt_min_m", -math.inf) if t.has("alt_min_m") else -math.inf
    hi = t.number("alt_max_m", math.inf) if t.has("alt_max_m") else math.inf
    if lo >= hi:
        raise MissionError(f"[{t.where}] alt_min_m={lo} must be below alt_max_m={hi}")
    zone: Keepout
    if kind == "cylinder":
        c = t.vector("center_ne_m", 2)
        zone = KeepoutCylinder((c[0], c[1]), t.number("radius_m", gt=0.0), lo, hi)
    else:
        n0, n1 = t.number("north_min_m"), t.number("north_max_m")
        e0, e1 = t.number("east_min_m"), t.number("east_max_m")
        if n0 >= n1 or e0 >= e1:
            raise MissionError(
                f"[{t.where}] box is empty: need north_min_m < north_max_m and east_min_m < east_max_m, "
                f"got north {n0}..{n1}, east {e0}..{e1}"
            )
        zone = KeepoutBox(n0, n1, e0, e1, lo, hi)
    t.done()
    return zone


def stopping_distance_m(speed_m_s: float, silence_hold_s: float, brake_decel_m_s2: float) -> float:
    """Distance flown at ``speed_m_s`` if the companion falls silent: kept for the hold, then braked."""
    return speed_m_s * silence_hold_s + speed_m_s**2 / (2.0 * brake_decel_m_s2)


def _check_inside_autopilot_fence(mission: Mission) -> None:
    ap = mission.autopilot
    if ap.fence is None:
        return
    lim = mission.limits
    hold = ap.silence_hold_s + FAILSAFE_DELAY_S[ap.flavour]
    gap = stopping_distance_m(lim.horizontal_m_s, hold, ap.brake_decel_m_s2)
    inner = np.asarray(mission.geofence.vertices_ne_m)
    outer = MissionGeometry(ap.fence, ())
    dist_in, _ = outer.fence_distance(np.column_stack([inner, np.zeros(len(inner))]))
    inner_geo = mission.geometry
    # The outer fence's vertices must not come closer to the inner boundary than the gap either
    # (a non-convex autopilot fence can poke in between two companion vertices).
    outer_v = np.asarray(ap.fence.vertices_ne_m)
    dist_out, _ = inner_geo.fence_distance(np.column_stack([outer_v, np.zeros(len(outer_v))]))
    worst = min(float(dist_in.min()), float(-dist_out.max()))
    if worst < gap:
        raise MissionError(
            f"the companion geofence is not inside the autopilot's fence by the stopping distance: "
            f"closest approach {worst:.2f} m, need >= {gap:.2f} m (horizontal {lim.horizontal_m_s} m/s "
            f"kept for {hold:g} s, then braking at {ap.brake_decel_m_s2} m/s²); shrink "
            f"[geofence], widen [autopilot.fence] or lower [limits] horizontal_speed_m_s"
        )
    fence = mission.geofence
    up = stopping_distance_m(lim.up_m_s, hold, ap.brake_decel_m_s2)
    down = stopping_distance_m(lim.down_m_s, hold, ap.brake_decel_m_s2)
    if fence.ceiling_alt_m + up > ap.fence.ceiling_alt_m:
        raise MissionError(
            f"[geofence] ceiling_alt_m={fence.ceiling_alt_m} is within the stopping distance "
            f"({up:.2f} m) of [autopilot.fence] ceiling_alt_m={ap.fence.ceiling_alt_m}; lower it"
        )
    if fence.floor_alt_m - down < ap.fence.floor_alt_m:
        raise MissionError(
            f"[geofence] floor_alt_m={fence.floor_alt_m} is within the stopping distance "
            f"({down:.2f} m) of [autopilot.fence] floor_alt_m={ap.fence.floor_alt_m}; raise it"
        )


def _check_point(mission: Mission, p: tuple[float, float, float], what: str) -> None:
    geo, m = mission.geometry, mission.margins
    pos = np.asarray([p], dtype=np.float64)
    fence, _ = geo.fence_distance(pos)
    alt = -p[2]
    if fence[0] < m.fence_m:
        raise MissionError(
            f"{what} (north {p[0]}, east {p[1]}) is outside the geofence or within its margin "
            f"({m.fence_m} m; distance inside {fence[0]:.2f} m); move it inside"
        )
    if not (
        mission.geofence.floor_alt_m + m.altitude_m <= alt <= mission.geofence.ceiling_alt_m - m.altitude_m
    ):
        raise MissionError(
            f"{what} altitude {alt} m is outside the band [{mission.geofence.floor_alt_m}, "
            f"{mission.geofence.ceiling_alt_m}] m less the altitude margin {m.altitude_m} m; change it"
        )
    if geo.n_zones:
        dist, _ = geo.keepout_distance(pos)
        i = int(np.argmin(dist[0]))
        if dist[0, i] < m.keepout_m:
            raise MissionError(
                f"{what} is inside keep-out zone {i} or within its margin ({m.keepout_m} m; "
                f"distance {dist[0, i]:.2f} m); move it away from the zone"
            )


_SECTIONS = (
    "origin",
    "geofence",
    "keepout",
    "route",
    "limits",
    "fallback",
    "margins",
    "autopilot",
    "vehicle",
)


def parse_mission(data: Mapping[str, Any]) -> Mission:
    """Build and validate a Mission from a parsed TOML document; raises MissionError."""
    top = _table(data, "")
    for required in ("geofence", "route", "limits", "autopilot"):
        if required not in data:
            raise MissionError(f"the mission has no [{required}] section; add it (see docs/mission.md)")
    check_sections(data, _SECTIONS, error=MissionError)
    top.used.update(_SECTIONS)

    origin = None
    if "origin" in data:
        t = top.table("origin")
        origin = Origin(t.number("lat_deg"), t.number("lon_deg"), t.number("alt_amsl_m", 0.0))
        t.done()

    fence = _parse_fence(top.table("geofence"), band_required=True)

    zones_raw = data.get("keepout", [])
    if not isinstance(zones_raw, list):
        raise MissionError("keepout must be an array of tables: write each zone as [[keepout]]")
    keepouts = tuple(_parse_keepout(_table(z, f"keepout.{i}")) for i, z in enumerate(zones_raw))

    t = top.table("route")
    if t.has("waypoints_nea_m") == t.has("goal_nea_m"):
        raise MissionError("[route] needs exactly one of waypoints_nea_m (a list) or goal_nea_m (one point)")
    nea = t.vectors("waypoints_nea_m", 3) if t.has("waypoints_nea_m") else (t.vector("goal_nea_m", 3),)
    if not nea:
        raise MissionError("[route] waypoints_nea_m is empty; give at least one [north, east, alt] point")
    waypoints = tuple((w[0], w[1], -w[2]) for w in nea)
    acceptance = t.number("acceptance_radius_m", 1.0, gt=0.0)
    t.done()

    t = top.table("limits")
    limits = SpeedLimits(
        t.number("horizontal_speed_m_s", gt=0.0),
        t.number("up_speed_m_s", gt=0.0),
        t.number("down_speed_m_s", gt=0.0),
        t.number("yaw_rate_rad_s", 1.0, gt=0.0),
    )
    t.done()

    t = top.table("fallback") if "fallback" in data else _table({}, "fallback")
    action = t.string("action", FALLBACK_ACTIONS, "land")
    home = t.vector("home_ne_m", 2, [0.0, 0.0])
    return_alt = t.number("return_alt_m", -waypoints[0][2])
    plan = FallbackPlan(
        action,
        t.number("hold_s", 3.0, ge=0.0),
        t.number("land_speed_m_s", 0.7, gt=0.0),
        (home[0], home[1], -return_alt),
    )
    t.done()

    t = top.table("margins") if "margins" in data else _table({}, "margins")
    margins = Margins(
        t.number("fence_m", 1.0, ge=0.0),
        t.number("keepout_m", 1.0, ge=0.0),
        t.number("altitude_m", 0.5, ge=0.0),
    )
    t.done()

    t = top.table("autopilot")
    flavour = t.string("flavour", AUTOPILOT_FLAVOURS)
    hold_default, brake_default = SILENCE_DEFAULTS[flavour]
    ap_fence = _parse_fence(t.table("fence"), band_required=False) if t.has("fence") else None
    autopilot = AutopilotSpec(
        flavour,
        t.number("silence_hold_s", hold_default, ge=0.0),
        t.number("brake_decel_m_s2", brake_default, gt=0.0),
        ap_fence,
    )
    t.done()

    t = top.table("vehicle") if "vehicle" in data else _table({}, "vehicle")
    vehicle = VehicleSpec(
        *(
            t.number(k, None, gt=0.0) if t.has(k) else None
            for k in ("velocity_tau_xy_s", "velocity_tau_z_s", "accel_m_s2", "latency_s")
        )
    )
    t.done()

    mission = Mission(
        fence, keepouts, waypoints, acceptance, limits, plan, margins, autopilot, origin, vehicle
    )
    for i, w in enumerate(waypoints):
        _check_point(mission, w, f"[route] waypoint {i}")
    if action == "return":
        _check_point(mission, plan.home_ned_m, "[fallback] home at the return altitude")
    _check_inside_autopilot_fence(mission)
    return mission


def load_mission(path: str | Path) -> Mission:
    """Read, parse and validate a mission TOML file; raises MissionError naming problem and fix."""
    return parse_mission(read_toml(path, what="mission file", error=MissionError))


__all__ = [
    "AUTOPILOT_FLAVOURS",
    "FAILSAFE_DELAY_S",
    "FALLBACK_ACTIONS",
    "SILENCE_DEFAULTS",
    "AutopilotSpec",
    "FallbackPlan",
    "Fence",
    "Keepout",
    "KeepoutBox",
    "KeepoutCylinder",
    "Margins",
    "Mission",
    "MissionGeometry",
    "Origin",
    "SpeedLimits",
    "load_mission",
    "parse_mission",
    "stopping_distance_m",
]
