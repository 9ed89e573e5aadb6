"""Layer 2 of the shield: a discrete-time barrier filter on velocity setpoints.

Every boundary (fence edge, altitude floor and ceiling, keep-out surface) becomes, on each tick,
a half-space with unit normal n (pointing from the vehicle toward the boundary) and distance d.
For a command u the approach speeds are w_u = n·u and w_0 = n·v (v the current velocity). The
condition is that the worst-case travel toward the boundary, if the agent dies right after this
tick, stays within the distance left:

    D(w_u, w_0) ≤ d − margin_kind − q_t − (w_0⁺ + a·L)·L                           (1)

where L is the age of the state plus the actuation latency. D bounds ∫ (n·v(t))⁺ dt under the
nominal model for: the autopilot tracks u for T = hold_last_s + brake_delay_s, then brakes at
a_b. With p = w_u⁺, q = w_0⁺, c = S/(2·a_b) (S bounds the speed when braking starts) and the lag
integrals G = ∫₀ᵀ g, g = g(T) of the model's normalised velocity error g(t):

    D = q·(T + c) + (p − q)·[(T − G_lin) + (1 − g_lin)·c]     if p ≥ q   (speeding up: fastest lag)
    D = q·(G_hi + g_hi·c) + p·[(T − G_hi) + (1 − g_hi)·c]     if p < q   (slowing: slowest lag)

It is continuous and increasing in p, so (1) is ``w_u ≤ b`` with b in closed form: a linear
half-space in u. Why it is conservative: during the hold the velocity moves on the straight
segment from v to u (vector saturation keeps the error's direction), so n·v(t) = w_u(1−g) + w_0·g
≤ p(1−g) + q·g; g decays no faster than the unsaturated exponential (g_lin) and no slower than
with the largest possible error |u| + |v| (g_hi); the brake travels (n·v_T)·|v_T|/(2a_b) ≤ (n·v_T)⁺·S/(2a_b).

Several active half-spaces: most-violated projections ``u ← u − (n·u − b)·n`` (a few), then a
shrink toward zero, which is exact because every half-space contains 0 when the filter is
feasible (b ≥ 0) — and projections onto sets containing 0 never increase |u|, so the speed
bounds S and |u|+|v| computed from the clipped raw command stay valid. If some half-space has
b < 0 (already too fast or too close), the zero command is tried with its own (tighter) bounds;
if that fails too the tick is infeasible and the fallback layer takes over.

Keep-out zones with a finite altitude range are a disjunction: staying out horizontally *or*
staying above/below is enough. The one the raw command already satisfies is kept (no change);
otherwise the one with the most room.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.mission import Mission
from edge_agent.nominal import NominalModel, SilenceBehavior, lag_error, lag_error_one
from edge_agent.watchdog import Reason

_NONE = int(Reason.NONE)

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]
I64 = NDArray[np.int64]

_OFF = 1e18  # distance of a switched-off constraint (finite: keeps inf − inf out of the algebra)


def _row_min(a: F64) -> F64:
    """``a.min(axis=1)`` of a [B, K] array. At certification's batch sizes numpy's reduction along
    a short last axis costs ~150 µs whatever K (B = 4096), K − 1 elementwise minimums ~5 µs each.
    The values are the same (min is exact; both propagate NaN)."""
    if a.shape[0] < 256:
        return a.min(axis=1)
    out = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.minimum(out, a[:, j], out=out)
    return out


@dataclass(frozen=True, slots=True)
class BarrierResult:
    """What the barrier made of one batch of commands (arrays [B] unless noted)."""

    vel_cmd_ned_m_s: F64
    """[B, 3] certified velocity command (the input untouched where it was already safe)."""
    ok: B8
    """The command satisfies every condition (raw, projected, or the zero command)."""
    modified: B8
    """The command differs from the input."""
    reason: I64
    """Reason of the binding constraint kind where modified or not ok (FENCE, ALTITUDE, KEEPOUT)."""
    min_slack_m: F64
    """Smallest d − D − margin over the enforced constraints, for the returned command."""
    raw_min_slack_m: F64
    """The same for the input command."""
    breached: B8
    """Some enforced boundary is already crossed (distance < 0 before margins)."""


@dataclass(slots=True)
class Prepared:
    """Per-tick geometry shared by every candidate command (arrays with leading axis B)."""

    normal: F64
    """[B, K, 3]"""
    dist_m: F64
    """[B, K] raw distance to each boundary."""
    d_eff: F64
    """[B, K] distance left after margins, q_t and latency."""
    w0: F64
    """[B, K] current approach speed."""
    q: F64
    """[B, K] w0⁺"""
    speed_h: F64
    """[B] |v_h|"""
    speed_z: F64
    """[B] |v_d|"""


class Barrier:
    """The barrier filter over a mission's fence, altitude band and keep-out zones."""

    def __init__(
        self,
        mission: Mission,
        nominal: NominalModel,
        silence: SilenceBehavior,
        *,
        projection_iterations: int = 4,
        tolerance_m: float = 1e-9,
    ) -> None:
        geo = mission.geometry
        m = mission.margins
        self.geometry = geo
        self.iterations = projection_iterations
        self.tol = tolerance_m
        kinds: list[int] = []
        vertical: list[bool] = []
        margins: list[float] = []
        static_n: list[tuple[float, float, float]] = []

        def add(k: int, vert: bool, margin: float, n: tuple[float, float, float], count: int = 1) -> slice:
            start = len(kinds)
            for _ in range(count):
                kinds.append(k)
                vertical.append(vert)
                margins.append(margin)
                static_n.append(n)
            return slice(start, len(kinds))

        if geo.is_box:
            self.fence_cols = add(Reason.FENCE, False, m.fence_m, (0.0, 0.0, 0.0), 4)
            self._box_idx = np.array([0, 0, 1, 1])
            self._box_sign = np.array([-1.0, 1.0, -1.0, 1.0])
            self._box_off = np.array(
                [geo.box_max_ne[0], -geo.box_min_ne[0], geo.box_max_ne[1], -geo.box_min_ne[1]]
            )
            box_normals = [(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)]
            static_n[self.fence_cols] = box_normals
        else:
            self.fence_cols = add(Reason.FENCE, False, m.fence_m, (0.0, 0.0, 0.0), len(geo.edge_a_ne))
        self.floor_col = add(Reason.ALTITUDE, True, m.altitude_m, (0.0, 0.0, 1.0)).start
        self.ceiling_col = add(Reason.ALTITUDE, True, m.altitude_m, (0.0, 0.0, -1.0)).start
        self.zone_h_cols = add(Reason.KEEPOUT, False, m.keepout_m, (0.0, 0.0, 0.0), geo.n_zones)
        finite = np.isfinite(geo.zone_top_down_m) | np.isfinite(geo.zone_bottom_down_m)
        self._zv = np.flatnonzero(finite)  # zones with a vertical way out
        self.zone_v_cols = add(Reason.KEEPOUT, True, m.keepout_m, (0.0, 0.0, 1.0), len(self._zv))
        self.pair_h = np.arange(self.zone_h_cols.start, self.zone_h_cols.stop)[self._zv]
        self.pair_v = np.arange(self.zone_v_cols.start, self.zone_v_cols.stop)
        self.n_cols = len(kinds)
        self.kind = np.array([int(k) for k in kinds], dtype=np.int64)
        self.vert_idx = np.array(vertical, dtype=np.int64)
        self.margin_m = np.array(margins)
        self.static_normal = np.array(static_n).reshape(-1, 3)
        self.accel_col = np.where(self.vert_idx == 1, nominal.accel_z_m_s2, nominal.accel_xy_m_s2)

        # Model constants per column type (0 horizontal, 1 vertical).
        t_hold = silence.total_hold_s
        self.t_hold = t_hold
        self.tau = np.array([nominal.tau_xy_s, nominal.tau_z_s])
        self.accel = np.array([nominal.accel_xy_m_s2, nominal.accel_z_m_s2])
        self.inv_2ab = 1.0 / (2.0 * np.array([silence.brake_decel_m_s2, silence.brake_decel_z_m_s2]))
        self.g_lin = np.exp(-t_hold / self.tau)
        self.big_g_lin = self.tau * (1.0 - self.g_lin)
        self._slope_lin_t = t_hold - self.big_g_lin
        self._slope_lin_c = 1.0 - self.g_lin
        self._zone_top = geo.zone_top_down_m[self._zv]
        self._zone_bottom = geo.zone_bottom_down_m[self._zv]
        self._init_scalar()

    def _init_scalar(self) -> None:
        """Python-float copies of the constants for :meth:`filter_one` (batch 1 onboard)."""
        geo = self.geometry
        self._s_margin = self.margin_m.tolist()
        self._s_accel = self.accel_col.tolist()
        self._s_vert = self.vert_idx.tolist()
        self._s_kind = self.kind.tolist()
        self._s_static = [tuple(r) for r in self.static_normal.tolist()]
        self._s_tau = self.tau.tolist()
        self._s_accel_t = self.accel.tolist()
        self._s_inv_2ab = self.inv_2ab.tolist()
        self._s_slope_lin_t = self._slope_lin_t.tolist()
        self._s_slope_lin_c = self._slope_lin_c.tolist()
        self._s_box = (
            (self._box_idx.tolist(), self._box_sign.tolist(), self._box_off.tolist()) if geo.is_box else None
        )
        self._s_edges = [
            (a[0], a[1], b[0], b[1], ab[0], ab[1], ab2, o[0], o[1])
            for a, b, ab, ab2, o in zip(
                geo.edge_a_ne.tolist(),
                geo.edge_b_ne.tolist(),
                geo._ab.tolist(),
                geo._ab2.tolist(),
                geo.edge_outward_ne.tolist(),
                strict=True,
            )
        ]
        self._s_cyl = [
            (c[0], c[1], r)
            for c, r in zip(geo.cyl_center_ne.tolist(), geo.cyl_radius_m.tolist(), strict=True)
        ]
        self._s_boxz = [
            (lo[0], lo[1], hi[0], hi[1])
            for lo, hi in zip(geo.box_lo_ne.tolist(), geo.box_hi_ne.tolist(), strict=True)
        ]
        self._s_zv = list(zip(self._zone_top.tolist(), self._zone_bottom.tolist(), strict=True))
        self._s_pairs = list(zip(self.pair_h.tolist(), self.pair_v.tolist(), strict=True))

    # -- geometry -------------------------------------------------------------------------

    def prepare(self, pos_ned_m: F64, vel_ned_m_s: F64, margin_m: F64, latency_s: F64) -> Prepared:
        """Normals and distances for positions [B, 3]; margins q_t [B]; latency L [B] (seconds)."""
        geo = self.geometry
        b = pos_ned_m.shape[0]
        normal = np.empty((b, self.n_cols, 3))
        normal[:] = self.static_normal
        dist = np.empty((b, self.n_cols))
        p_h = pos_ned_m[:, :2]
        down = pos_ned_m[:, 2]
        fc = self.fence_cols
        if geo.is_box:
            dist[:, fc] = pos_ned_m[:, self._box_idx] * self._box_sign + self._box_off
        else:
            rel = p_h[:, None, :] - geo.edge_a_ne
            t = np.clip((rel * geo._ab).sum(-1) / geo._ab2, 0.0, 1.0)
            diff = geo.edge_a_ne + t[..., None] * geo._ab - p_h[:, None, :]
            dd = np.sqrt((diff**2).sum(-1))
            # On an edge the direction is undefined: use the edge's outward normal.
            nz = dd > 1e-12
            normal[:, fc, :2] = np.where(
                nz[..., None], diff / np.where(nz, dd, 1.0)[..., None], geo.edge_outward_ne
            )
            normal[:, fc, 2] = 0.0
            an, ae = geo.edge_a_ne[:, 0], geo.edge_a_ne[:, 1]
            bn, be = geo.edge_b_ne[:, 0], geo.edge_b_ne[:, 1]
            pe = p_h[:, 1:2]
            crosses = (ae > pe) != (be > pe)
            n_at = an + (pe - ae) * (bn - an) / np.where(be != ae, be - ae, 1.0)
            inside = ((crosses & (p_h[:, 0:1] < n_at)).sum(-1) % 2) == 1
            dist[:, fc] = np.where(inside[:, None], dd, -dd)
        dist[:, self.floor_col] = geo.floor_down_m - down
        dist[:, self.ceiling_col] = down - geo.ceiling_down_m
        if geo.n_zones:
            dh, nh = geo.keepout_horizontal(pos_ned_m)
            dist[:, self.zone_h_cols] = dh
            normal[:, self.zone_h_cols, :2] = nh
            normal[:, self.zone_h_cols, 2] = 0.0
            if len(self._zv):
                above = self._zone_top - down[:, None]
                below = down[:, None] - self._zone_bottom
                dist[:, self.zone_v_cols] = np.maximum(above, below)
                normal[:, self.zone_v_cols, 2] = np.where(above >= below, 1.0, -1.0)
        w0 = np.matmul(normal, vel_ned_m_s[:, :, None])[..., 0]
        q = np.maximum(w0, 0.0)
        lat = latency_s[:, None]
        d_eff = dist - self.margin_m - margin_m[:, None] - (q + self.accel_col * lat) * lat
        speed_h = np.hypot(vel_ned_m_s[:, 0], vel_ned_m_s[:, 1])
        return Prepared(normal, dist, d_eff, w0, q, speed_h, np.abs(vel_ned_m_s[:, 2]))

    def _geometry_one(
        self, pn: float, pe: float, pd: float
    ) -> tuple[list[tuple[float, float, float]], list[float]]:
        """Normals and raw distances of every column for one position (Python floats)."""
        normals = list(self._s_static)
        dist: list[float] = []
        if self._s_box is not None:
            p = (pn, pe, pd)
            idx, sign, off = self._s_box
            dist.extend(p[i] * s + o for i, s, o in zip(idx, sign, off, strict=True))
        else:
            crossings = 0
            dds: list[float] = []
            for k, (an, ae, bn, be, abn, abe, ab2, on, oe) in enumerate(self._s_edges):
                t = ((pn - an) * abn + (pe - ae) * abe) / ab2
                t = min(max(t, 0.0), 1.0)
                dn = an + t * abn - pn
                de = ae + t * abe - pe
                dd = math.sqrt(dn * dn + de * de)
                normals[k] = (dn / dd, de / dd, 0.0) if dd > 1e-12 else (on, oe, 0.0)
                dds.append(dd)
                if (ae > pe) != (be > pe):
                    n_at = an + (pe - ae) * (bn - an) / (be - ae if be != ae else 1.0)
                    crossings += pn < n_at
            inside = crossings % 2 == 1
            dist.extend(dds if inside else [-d for d in dds])
        dist.append(self.geometry.floor_down_m - pd)
        dist.append(pd - self.geometry.ceiling_down_m)
        col = len(dist)
        for cn, ce, r in self._s_cyl:
            dn, de = cn - pn, ce - pe
            dc = math.hypot(dn, de)
            s = dc if dc > 0 else 1.0
            normals[col] = (dn / s, de / s, 0.0)
            dist.append(dc - r)
            col += 1
        for lon, loe, hin, hie in self._s_boxz:
            dn = min(max(pn, lon), hin) - pn
            de = min(max(pe, loe), hie) - pe
            db = math.hypot(dn, de)
            if db > 0:
                normals[col] = (dn / db, de / db, 0.0)
                dist.append(db)
            else:  # inside: inward from the nearest side (Mission.keepout_horizontal says why)
                sides = (pn - lon, hin - pn, pe - loe, hie - pe)  # ties broken as the batched path does
                k = min(range(4), key=sides.__getitem__)
                normals[col] = ((1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0))[k]
                dist.append(-sides[k])
            col += 1
        for top, bottom in self._s_zv:
            above, below = top - pd, pd - bottom
            normals[col] = (0.0, 0.0, 1.0 if above >= below else -1.0)
            dist.append(max(above, below))
            col += 1
        return normals, dist

    def _conditions_one(
        self,
        normals: list[tuple[float, float, float]],
        dist: list[float],
        d_eff: list[float],
        q: list[float],
        sv: tuple[float, float],
        u: tuple[float, float, float],
        guard_m: float,
        fine_m: float,
        need_kind: bool,
    ) -> tuple[list[float], list[float], list[float], bool, float, int] | None:
        """:meth:`_conditions` for one vehicle in Python floats: (w_u, bound, slack, violated, min
        slack, the binding kind), or None where rounding could change a decision (then the batched
        path decides). The bound and travel formulas are continuous across their branches, so only
        the comparisons that pick a set are guarded: against the tolerance by ``fine_m`` (a
        projected command sits on its boundary, slack ≈ 0 by construction, and that is decided
        the same way by both paths as long as rounding stays far below the tolerance), the
        recovery, disjunction and binding-kind choices by ``guard_m``.
        """
        un, ue, ud = u
        su = (math.hypot(un, ue), abs(ud))
        t = self.t_hold
        coefs = []
        for j in (0, 1):
            e0 = max(sv[j] + su[j], 1e-9)
            c = max(sv[j], su[j]) * self._s_inv_2ab[j]
            e_t, integral = lag_error_one(e0, self._s_accel_t[j], self._s_tau[j], t)
            g_hi = e_t / e0
            big_g_hi = integral / e0
            coefs.append(
                (
                    t + c,
                    max(self._s_slope_lin_t[j] + self._s_slope_lin_c[j] * c, 1e-12),
                    big_g_hi + g_hi * c,
                    max((t - big_g_hi) + (1.0 - g_hi) * c, 1e-12),
                )
            )
        tol = self.tol
        wus: list[float] = []
        bounds: list[float] = []
        slacks: list[float] = []
        rooms: list[float] = []
        bads: list[bool] = []
        # Conditional expressions are cheaper than max(x, 0.0) and equal for every number; the
        # caller passes finite inputs only and normals are unit vectors, so q and p are never NaN.
        for (nx, ny, nz), vert, dk, de, qk in zip(normals, self._s_vert, dist, d_eff, q, strict=True):
            a1, s1, d0, s0 = coefs[vert]
            wu = nx * un + ny * ue + nz * ud
            p = wu if wu > 0.0 else 0.0
            qa1, qd0 = qk * a1, qk * d0
            room = de - qd0
            bound = qk + (de - qa1) / s1 if de >= qa1 else room / s0
            slack = de - (qa1 + (p - qk) * s1 if p >= qk else qd0 + p * s0)
            recovering = room < 0.0 and qk == 0.0 and dk > 0.0
            if recovering:
                bound = 0.0
                if abs(p - tol) < fine_m:
                    return None
            if abs(slack + tol) < fine_m or (qk == 0.0 and (abs(room) < guard_m or abs(dk) < guard_m)):
                return None
            wus.append(wu)
            bounds.append(bound)
            slacks.append(slack)
            rooms.append(room)
            bads.append(slack < -tol and not (recovering and p <= tol))
        for h, v in self._s_pairs:
            sh, sv_ = slacks[h], slacks[v]
            score_h = 1e12 + sh if sh >= 0 else rooms[h]
            score_v = 1e12 + sv_ if sv_ >= 0 else rooms[v]
            if not abs(score_v - score_h) > guard_m:
                return None  # a near tie could go either way after rounding
            off = h if score_v > score_h else v
            slacks[off] = bounds[off] = _OFF
            bads[off] = False
        lowest = min(slacks)
        if lowest != lowest:  # not min() alone: min() lets a NaN hide behind a later number
            return None
        kind = self._s_kind[slacks.index(lowest)]
        if need_kind:
            for k, x in enumerate(slacks):  # a near tie of another kind could flip the reason
                if self._s_kind[k] != kind and not x - lowest > guard_m:
                    return None
        return wus, bounds, slacks, any(bads), lowest, kind

    def filter_one(
        self,
        pos: Sequence[float],
        vel: Sequence[float],
        margin_m: float,
        latency_s: float,
        u: tuple[float, float, float],
        guard_m: float,
    ) -> tuple[tuple[float, float, float], int, float] | None:
        """:meth:`prepare` + :meth:`certify` for one vehicle in Python floats: (command, reason,
        min slack of the command) when the command passes or its projection is verified safe, else
        None (infeasible, a zero command, or a decision within ``guard_m`` of a threshold): the
        caller then runs the batched path. At batch 1 the ~150 numpy calls of the batched path cost
        far more than the arithmetic. Decisions equal the batched path's; the projected command
        equals it up to rounding (the same operations in another summation order).
        """
        normals, dist = self._geometry_one(*pos)
        vn, ve, vd = vel
        lat = latency_s
        q: list[float] = []
        d_eff: list[float] = []
        for (nx, ny, nz), dk, mk, ak in zip(normals, dist, self._s_margin, self._s_accel, strict=True):
            w0 = nx * vn + ny * ve + nz * vd
            if w0 != 0.0 and abs(w0) < guard_m:
                return None  # q == 0 decides recovery; rounding must not flip it
            qk = w0 if w0 > 0.0 else 0.0
            q.append(qk)
            d_eff.append(dk - mk - margin_m - (qk + ak * lat) * lat)
        sv = (math.hypot(vn, ve), abs(vd))
        tol = self.tol
        fine = max(0.1 * tol, 1e-12)
        raw = self._conditions_one(normals, dist, d_eff, q, sv, u, guard_m, fine, True)
        if raw is None:
            return None
        wu, bound, _, bad, raw_min, raw_kind = raw
        if not bad:
            return u, _NONE, raw_min
        for b in bound:
            # Infeasible: the zero command and the fallback. Exactly 0 is a recovery column's.
            if not (b == 0.0 or b >= fine):
                return None
        vx, vy, vz = u
        w = wu
        for _ in range(self.iterations):
            viol = [a - b for a, b in zip(w, bound, strict=True)]
            vmax = max(viol)
            if abs(vmax - tol) < fine:
                return None  # the stop test is a near tie
            if not vmax > tol:
                break
            if sum(1 for x in viol if vmax - x < fine) > 1:
                return None  # so is the most-violated column
            nx, ny, nz = normals[viol.index(vmax)]
            vx, vy, vz = vx - vmax * nx, vy - vmax * ny, vz - vmax * nz
            w = [nx * vx + ny * vy + nz * vz for nx, ny, nz in normals]
        ratio = 1.0
        for a, b in zip(w, bound, strict=True):
            if abs(a - b - tol) < fine:
                return None  # whether this column shrinks the command is a near tie
            if a > b + tol:
                ratio = min(ratio, b / a)
        ratio = max(ratio, 0.0)
        out = (vx * ratio, vy * ratio, vz * ratio)
        if max(abs(out[0] - u[0]), abs(out[1] - u[1]), abs(out[2] - u[2])) < guard_m:
            return None  # "modified" would hang on rounding
        fin = self._conditions_one(normals, dist, d_eff, q, sv, out, guard_m, fine, False)
        if fin is None or fin[3]:
            return None  # not verified: the batched path decides (and the fallback takes over)
        return out, raw_kind, fin[4]

    # -- conditions -----------------------------------------------------------------------

    def _coefficients(self, prep: Prepared, u: F64) -> F64:
        """[B, K, 4]: (T + c, slope above q, D(0)/q, slope below q) for the command u's speed bounds."""
        b = u.shape[0]
        spd = np.empty((b, 2, 2))  # [:, 0] vehicle, [:, 1] command; last axis (horizontal, vertical)
        spd[:, 0, 0] = prep.speed_h
        spd[:, 0, 1] = prep.speed_z
        spd[:, 1, 0] = np.hypot(u[:, 0], u[:, 1])
        spd[:, 1, 1] = np.abs(u[:, 2])
        e0 = np.maximum(spd[:, 0] + spd[:, 1], 1e-9)  # bounds |u − v| for any command no faster than u
        c = np.maximum(spd[:, 0], spd[:, 1]) * self.inv_2ab
        e_t, integral = lag_error(e0, self.accel, self.tau, self.t_hold)
        g_hi = e_t / e0
        big_g_hi = integral / e0
        t = self.t_hold
        coef = np.empty((b, 2, 4))
        coef[..., 0] = t + c
        coef[..., 1] = self._slope_lin_t + self._slope_lin_c * c
        coef[..., 2] = big_g_hi + g_hi * c
        coef[..., 3] = (t - big_g_hi) + (1.0 - g_hi) * c
        # A zero hold time makes both slopes 0: the command no longer matters, only q does.
        np.maximum(coef[..., 1::2], 1e-12, out=coef[..., 1::2])
        return coef[:, self.vert_idx]

    def _conditions(self, prep: Prepared, u: F64, d_eff: F64) -> tuple[F64, F64, F64, B8, B8]:
        """(w_u, bound b, slack, switched-off, violated), all [B, K], for command u."""
        coef = self._coefficients(prep, u)
        a1, s1, d0, s0 = coef[..., 0], coef[..., 1], coef[..., 2], coef[..., 3]
        q = prep.q
        wu = np.matmul(prep.normal, u[:, :, None])[..., 0]
        p = np.maximum(wu, 0.0)
        qa1 = q * a1
        qd0 = q * d0
        room = d_eff - qd0  # slack of the best command; < 0: no command meets (1)
        bound = np.where(d_eff >= qa1, q + (d_eff - qa1) / s1, room / s0)
        travel = np.where(p >= q, qa1 + (p - q) * s1, qd0 + p * s0)
        slack = d_eff - travel
        # Recovery inside a margin band (boundary not crossed, not approaching it): a command that
        # does not approach either keeps the distance from shrinking, so it is accepted there.
        recovering = (room < 0) & (q == 0.0) & (prep.dist_m > 0)
        bound[recovering] = 0.0
        bad = (slack < -self.tol) & ~(recovering & (p <= self.tol))
        off = np.zeros(slack.shape, dtype=bool)
        if len(self.pair_v):
            score = np.where(slack >= 0, 1e12 + slack, room)
            use_v = score[:, self.pair_v] > score[:, self.pair_h]
            off[:, self.pair_h] = use_v
            off[:, self.pair_v] = ~use_v
            bound[off] = _OFF
            slack[off] = _OFF
            bad &= ~off
        return wu, bound, slack, off, bad

    def min_slack_m(self, prep: Prepared, u: F64) -> F64:
        """Smallest d − D − margin [B] over the enforced constraints for commands u [B, 3]."""
        return _row_min(self._conditions(prep, u, prep.d_eff)[2])

    def certify(self, prep: Prepared, u: F64, floor_off: B8 | None = None) -> BarrierResult:
        """Filter velocity commands u [B, 3] (already clipped to the speed limits)."""
        d_eff = prep.d_eff
        if floor_off is not None:
            d_eff = d_eff.copy()
            d_eff[floor_off, self.floor_col] = _OFF
        wu, bound, slack, off, bad = self._conditions(prep, u, d_eff)
        raw_min = _row_min(slack)
        ok: B8 = np.logical_not(bad.any(axis=1))
        out = u
        modified = np.zeros(u.shape[0], dtype=bool)
        min_slack = raw_min
        reason = np.where(ok, _NONE, self.kind[np.argmin(slack, axis=1)])
        dist = prep.dist_m
        if floor_off is not None:
            dist = dist.copy()
            dist[floor_off, self.floor_col] = _OFF
        breached: B8 = np.asarray(((dist < 0) & ~off).any(axis=1))
        if ok.all():
            return BarrierResult(out, ok, modified, reason, min_slack, raw_min, breached)

        feasible = (bound >= 0).all(axis=1)
        todo = ~ok & feasible
        out = u.copy()
        if todo.any():
            rows = np.arange(u.shape[0])
            v = out[todo]
            nrm = prep.normal[todo]
            bd = bound[todo]
            w = wu[todo]
            r = rows[: v.shape[0]]
            for _ in range(self.iterations):
                viol = w - bd
                k = np.argmax(viol, axis=1)
                vmax = viol[r, k]
                if not (vmax > self.tol).any():
                    break
                v -= np.maximum(vmax, 0.0)[:, None] * nrm[r, k]
                w = np.matmul(nrm, v[:, :, None])[..., 0]
            # Whatever is left: shrink toward 0, which lies in every half-space (b ≥ 0). Only
            # violations beyond the tolerance count: a column projected onto b = 0 keeps w ≈ ±1e-16,
            # and b / w would then zero the whole command on rounding noise.
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = _row_min(np.where(w > bd + self.tol, bd / w, 1.0))
            v *= np.clip(ratio, 0.0, 1.0)[:, None]
            out[todo] = v
        zero = ~ok & ~feasible
        if zero.any():
            out[zero] = 0.0
        # Verify the final commands with their own bounds (never trust the construction alone).
        _, _, fin_slack, _, fin_bad = self._conditions(prep, out, d_eff)
        min_slack = _row_min(fin_slack)
        ok = np.logical_not(fin_bad.any(axis=1))
        modified = np.any(out != u, axis=1)
        return BarrierResult(out, ok, modified, reason, min_slack, raw_min, breached)

    def recovery_command(
        self, prep: Prepared, u: F64, gain_1_s: float, speed_m_s: float, floor_off: B8 | None = None
    ) -> F64:
        """Commands [B, 3] that recede from every boundary whose margin band the vehicle is in.

        For each enforced boundary with ``d_eff < 0`` (inside its band: margins, q_t, latency), the
        approach speed must be at most ``−min(gain · depth, speed)``; u is projected onto those
        half-spaces (a few passes), keeping its other components. This is what the fallback flies
        when :meth:`certify` finds nothing: a zero velocity there has no position feedback, so in
        wind the vehicle drifts across the boundary it is stuck next to (docs/shield.md).
        """
        d_eff = prep.d_eff
        if floor_off is not None:
            d_eff = d_eff.copy()
            d_eff[floor_off, self.floor_col] = _OFF
        off = self._conditions(prep, u, d_eff)[3]
        depth = np.where(off, 0.0, np.maximum(-d_eff, 0.0))
        bound = np.where(depth > 0.0, -np.minimum(gain_1_s * depth, speed_m_s), _OFF)
        v = u.copy()
        rows = np.arange(u.shape[0])
        for _ in range(self.iterations + 2):
            viol = np.matmul(prep.normal, v[:, :, None])[..., 0] - bound
            k = np.argmax(viol, axis=1)
            vmax = viol[rows, k]
            if not (vmax > self.tol).any():
                break
            v -= np.maximum(vmax, 0.0)[:, None] * prep.normal[rows, k]
        return v


__all__ = ["Barrier", "BarrierResult", "Prepared"]
