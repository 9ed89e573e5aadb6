"""The flight report: figures and a table of figures from one flight log, or two side by side.

A log written by ``edge-agent run`` (:mod:`edge_agent.flightlog`) holds everything needed: the
header carries the mission geometry, the calibration and the certificate; every tick carries the
position, the shield's layer and reason, the margin q_t, the running miscoverage and the timings.
Nothing here trusts the agent's own verdicts about safety: distances to every constraint are
recomputed from the logged positions with the runtime's own :class:`MissionGeometry`.

Pipeline: :func:`load_flight` (log → arrays) → :func:`summarize` (the table of figures) and
:func:`render_figures` (PNG figures) → :func:`write_report` (one self-contained HTML page, rendered
from the autoescaped jinja2 template ``calib/templates/report.html.j2``, the PNGs embedded and
also written beside it). Figures are drawn on matplotlib's Agg canvas through the
object API, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon, Rectangle
from numpy.typing import NDArray

from edge_agent.agent import calibrator_config_for
from edge_agent.fallback import Stage
from edge_agent.flightlog import FlightLogError, read_log
from edge_agent.loop import LoopConfig
from edge_agent.mission import Fence, Keepout, KeepoutBox, KeepoutCylinder, MissionGeometry
from edge_agent.shield import Reason

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

LAYER_NAMES = ("none", "watchdog", "barrier", "fallback")
#: Barrier reasons that are about a boundary (the others merely clip speed to the mission's limits).
GEOMETRIC_REASONS = frozenset({int(Reason.FENCE), int(Reason.ALTITUDE), int(Reason.KEEPOUT)})
#: Window of the rolling coverage curve.
ROLLING_WINDOW_S = 5.0
_FIG_DPI = 110


# ---------------------------------------------------------------------------------------------
# Reading a log


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


# ---------------------------------------------------------------------------------------------
# The table of figures


@dataclass(frozen=True, slots=True)
class ConstraintDistance:
    """How close a flight came to one constraint, from the logged positions."""

    name: str
    min_distance_m: float
    """Smallest signed distance over the flight (negative = it was breached)."""
    breach_ticks: int
    """Ticks spent on the wrong side."""
    breaches: int
    """Separate entries into the wrong side."""


@dataclass(frozen=True, slots=True)
class FlightSummary:
    """The table of figures of one flight."""

    log: str
    shield_enabled: bool
    mission_complete: bool
    end_reason: str
    duration_s: float
    ticks: int
    interventions_by_layer: dict[str, int]
    interventions_by_reason: dict[str, int]
    would_have_intervened: int
    """Ticks where a bypassed shield (--no-shield) would have changed the command (0 when shielded)."""
    constraints: tuple[ConstraintDistance, ...]
    breaches: int
    """Entries into the wrong side of any constraint (0 for a safe flight)."""
    coverage: float
    """1 − the final running miscoverage (NaN if no score was ever taken)."""
    target_coverage: float
    """1 − α of the onboard calibrator."""
    max_margin_m: float
    certificate: dict[str, Any] | None
    """The bundle's certificate: n, k, beta, epsilon (None if never certified)."""
    calibrated: bool
    tick_us_p50: float
    tick_us_p99: float
    tick_us_max: float
    infer_us_p50: float
    infer_us_p99: float
    deadline_us: float
    deadline_misses: int
    overruns: int


def constraint_distances(flight: Flight) -> tuple[tuple[str, F64, NDArray[np.bool_]], ...]:
    """Per constraint: name, signed distance [T] (negative = breached) and the ticks that count [T].

    The floor does not count while the fallback is landing the vehicle: going down through it is
    then the intended way out of the sky, not a breach.
    """
    geo, pos = flight.mission.geometry, flight.pos_ned_m
    every = np.ones(len(pos), dtype=bool)
    fence, _ = geo.fence_distance(pos)
    floor, ceiling = geo.altitude_distances(pos)
    out: list[tuple[str, F64, NDArray[np.bool_]]] = [
        ("geofence (horizontal)", fence, every),
        ("altitude floor", floor, flight.stage != int(Stage.LAND)),
        ("altitude ceiling", ceiling, every),
    ]
    if geo.n_zones:
        dist, _ = geo.keepout_distance(pos)
        # MissionGeometry orders zones cylinders first, then boxes: name them in that order.
        zones = flight.mission.keepouts
        order = [i for i, k in enumerate(zones) if isinstance(k, KeepoutCylinder)] + [
            i for i, k in enumerate(zones) if isinstance(k, KeepoutBox)
        ]
        for col, i in enumerate(order):
            out.append((_zone_name(i, zones[i]), dist[:, col], every))
    return tuple(out)


def _zone_name(index: int, zone: Keepout) -> str:
    if isinstance(zone, KeepoutCylinder):
        n, e = zone.center_ne_m
        return f"keep-out {index}: cylinder r {zone.radius_m:g} m at N {n:g}, E {e:g}"
    return (
        f"keep-out {index}: box N {zone.north_min_m:g}..{zone.north_max_m:g}, "
        f"E {zone.east_min_m:g}..{zone.east_max_m:g}"
    )


def _entries(mask: NDArray[np.bool_]) -> int:
    """Number of runs of True."""
    m = mask.astype(np.int8)
    return int(m[0] + np.count_nonzero(np.diff(m) == 1)) if m.size else 0


def _pct(x: F64, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else math.nan


def inference_deadline_us(flight: Flight) -> float:
    """The inference deadline the loop applied (its default fraction of the control period)."""
    return LoopConfig().deadline_frac / flight.rate_hz * 1e6


def summarize(flight: Flight) -> FlightSummary:
    """The table of figures: outcome, interventions, distances, coverage, bound, latency."""
    finish = [e for e in flight.events if e.get("name") == "finish"]
    end_reason = str(finish[-1].get("reason", "")) if finish else "log ends without a finish record"
    acted = flight.acted
    by_layer = {
        name: int(np.count_nonzero(acted & (flight.layer == i))) for i, name in enumerate(LAYER_NAMES) if i
    }
    by_reason: dict[str, int] = {}
    for code in np.unique(flight.reason[acted]):
        by_reason[Reason(int(code)).name] = int(np.count_nonzero(flight.reason[acted] == code))
    constraints = []
    for name, dist, counts in constraint_distances(flight):
        breached = (dist < 0) & counts
        relevant = dist[counts]
        constraints.append(
            ConstraintDistance(
                name,
                float(relevant.min()) if relevant.size else math.nan,
                int(breached.sum()),
                _entries(breached),
            )
        )
    finite_mis = flight.miscoverage[np.isfinite(flight.miscoverage)]
    cal_config, _ = calibrator_config_for(flight.header.get("calibration"), flight.rate_hz)
    cert = flight.header.get("certificate")
    deadline = inference_deadline_us(flight)
    period_us = 1e6 / flight.rate_hz
    return FlightSummary(
        log=str(flight.path),
        shield_enabled=flight.shield_enabled,
        mission_complete=end_reason == "mission complete",
        end_reason=end_reason,
        duration_s=float(flight.t_s[-1] - flight.t_s[0]),
        ticks=len(flight.t_s),
        interventions_by_layer=by_layer,
        interventions_by_reason=dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        would_have_intervened=int(np.count_nonzero((flight.layer > 0) & ~acted)),
        constraints=tuple(constraints),
        breaches=sum(c.breaches for c in constraints),
        coverage=float(1.0 - finite_mis[-1]) if finite_mis.size else math.nan,
        target_coverage=1.0 - cal_config.alpha,
        max_margin_m=float(np.nanmax(flight.margin_m)),
        certificate=dict(cert) if isinstance(cert, Mapping) else None,
        calibrated=bool(flight.header.get("calibration")),
        tick_us_p50=_pct(flight.tick_us, 50),
        tick_us_p99=_pct(flight.tick_us, 99),
        tick_us_max=float(np.nanmax(flight.tick_us)),
        infer_us_p50=_pct(flight.infer_us, 50),
        infer_us_p99=_pct(flight.infer_us, 99),
        deadline_us=deadline,
        deadline_misses=int(np.count_nonzero(flight.infer_us > deadline)),
        overruns=int(np.count_nonzero(flight.late_us > period_us)),
    )


def rolling_coverage(flight: Flight, window_s: float = ROLLING_WINDOW_S) -> tuple[F64, F64]:
    """Coverage over the last ``window_s`` [T] and since the start [T] (NaN before any score).

    The log keeps the running miscoverage n_miss/n_scored and the score of every scored tick, so
    each tick's miss is recovered exactly as the increment of n_miss = miscoverage · n_scored.
    """
    scored = np.isfinite(flight.score_m)
    n_scored = np.cumsum(scored)
    mis = np.where(np.isfinite(flight.miscoverage), flight.miscoverage, 0.0)
    n_miss = np.rint(mis * n_scored)
    miss = np.diff(n_miss, prepend=0.0)
    w = max(1, round(window_s * flight.rate_hz))
    kernel = np.ones(w)
    roll_miss = np.convolve(miss, kernel)[: len(miss)]
    roll_scored = np.convolve(scored.astype(np.float64), kernel)[: len(miss)]
    with np.errstate(invalid="ignore", divide="ignore"):
        rolling = np.where(roll_scored > 0, 1.0 - roll_miss / roll_scored, np.nan)
    cumulative = np.where(np.isfinite(flight.miscoverage), 1.0 - flight.miscoverage, np.nan)
    return rolling, cumulative


# ---------------------------------------------------------------------------------------------
# Figures

_LAYER_STYLE = {
    1: {"marker": "^", "color": "#e67e22", "label": "watchdog (hold)"},
    3: {"marker": "s", "color": "#c0392b", "label": "fallback (brake / hold / land)"},
}
_REASON_COLORS = {
    int(Reason.FENCE): "#8e44ad",
    int(Reason.ALTITUDE): "#16a085",
    int(Reason.KEEPOUT): "#d35400",
}


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=_FIG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _draw_fence(ax: Any, fence: Fence, **style: Any) -> None:
    ax.add_patch(Polygon([(e, n) for n, e in fence.vertices_ne_m], closed=True, fill=False, **style))


def draw_trajectory(ax: Any, flight: Flight, *, title: str | None = None, legend: bool = True) -> None:
    """Top-down map (east right, north up): fence, keep-outs, route, track, interventions, breaches."""
    m = flight.mission
    if m.autopilot_fence is not None:
        _draw_fence(ax, m.autopilot_fence, edgecolor="#999999", linestyle=":", linewidth=1.2)
    _draw_fence(ax, m.geofence, edgecolor="black", linewidth=2.0, label="geofence")
    zone_style: dict[str, Any] = {
        "facecolor": "#f5b7b1",
        "edgecolor": "#922b21",
        "hatch": "//",
        "linewidth": 1.5,
    }
    for i, z in enumerate(m.keepouts):
        label = "keep-out zone" if i == 0 else None
        if isinstance(z, KeepoutCylinder):
            n, e = z.center_ne_m
            ax.add_patch(Circle((e, n), z.radius_m, label=label, **zone_style))
            ax.add_patch(
                Circle((e, n), z.radius_m + m.keepout_margin_m, fill=False, ls="--", ec="#922b21", lw=0.8)
            )
        else:
            ax.add_patch(
                Rectangle(
                    (z.east_min_m, z.north_min_m),
                    z.east_max_m - z.east_min_m,
                    z.north_max_m - z.north_min_m,
                    label=label,
                    **zone_style,
                )
            )
            k = m.keepout_margin_m
            ax.add_patch(
                Rectangle(
                    (z.east_min_m - k, z.north_min_m - k),
                    z.east_max_m - z.east_min_m + 2 * k,
                    z.north_max_m - z.north_min_m + 2 * k,
                    fill=False,
                    ls="--",
                    ec="#922b21",
                    lw=0.8,
                )
            )
    wp = np.array(m.waypoints_ned_m)
    ax.plot(wp[:, 1], wp[:, 0], ls=":", color="#7f8c8d", lw=1.0)
    ax.scatter(
        wp[:, 1], wp[:, 0], marker="*", s=180, color="#f1c40f", edgecolor="black", zorder=5, label="waypoints"
    )
    for i, (n, e, _) in enumerate(m.waypoints_ned_m):
        ax.annotate(f"{i + 1}", (e, n), textcoords="offset points", xytext=(7, 7), fontsize=9, weight="bold")
    p = flight.pos_ned_m
    ax.plot(p[:, 1], p[:, 0], color="#2471a3", lw=1.6, label="flown track", zorder=3)
    ax.scatter(
        [p[0, 1]], [p[0, 0]], marker="o", s=50, color="#2471a3", zorder=6, label="policy takes control"
    )
    barrier = flight.acted & (flight.layer == 2)
    speed = barrier & ~np.isin(flight.reason, list(GEOMETRIC_REASONS))
    if speed.any():
        # Below the track: speed clipping is routine, and must not hide the line.
        ax.scatter(p[speed, 1], p[speed, 0], s=12, color="#aed6f1", zorder=2, label="barrier: speed limit")
    for code, color in _REASON_COLORS.items():
        sel = barrier & (flight.reason == code)
        if sel.any():
            name = Reason(code).name.lower().replace("keepout", "keep-out")
            ax.scatter(p[sel, 1], p[sel, 0], s=14, color=color, zorder=5, label=f"barrier: {name}")
    for layer, style in _LAYER_STYLE.items():
        sel = flight.acted & (flight.layer == layer)
        if sel.any():
            ax.scatter(p[sel, 1], p[sel, 0], s=22, zorder=6, **style)
    breached = np.zeros(len(p), dtype=bool)
    for _, dist, counts in constraint_distances(flight):
        breached |= (dist < 0) & counts
    if breached.any():
        ax.scatter(
            p[breached, 1], p[breached, 0], marker="x", s=30, color="#e74c3c", zorder=7, label="BREACH"
        )
    lo = np.minimum(m.geometry.box_min_ne, p[:, :2].min(axis=0)) - 4.0
    hi = np.maximum(m.geometry.box_max_ne, p[:, :2].max(axis=0)) + 4.0
    ax.set_xlim(lo[1], hi[1])
    ax.set_ylim(lo[0], hi[0])
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.grid(alpha=0.3)
    ax.set_title(title or _flight_title(flight))
    if legend:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)


def _flight_title(flight: Flight) -> str:
    return f"{flight.path.name}: shield {'ON' if flight.shield_enabled else 'OFF'}"


def _shade_fallback(ax: Any, flight: Flight) -> None:
    fb = flight.acted & (flight.layer == 3)
    if not fb.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate([[0], fb.astype(np.int8), [0]])))
    for k, (a, b) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        ax.axvspan(
            flight.t_s[a], flight.t_s[b - 1], color="#f5b7b1", alpha=0.5, label="fallback" if k == 0 else None
        )


def figure_trajectory(flight: Flight) -> Figure:
    """The report's main figure: the top-down map."""
    fig = _new_figure(7.0, 7.0)
    draw_trajectory(fig.add_subplot(), flight)
    return fig


def figure_compare_trajectories(a: Flight, b: Flight) -> Figure:
    """Two top-down maps side by side (typically shielded vs. unshielded)."""
    fig = _new_figure(13.0, 6.8)
    ax1, ax2 = fig.subplots(1, 2, sharex=True, sharey=True)
    draw_trajectory(ax1, a)
    draw_trajectory(ax2, b)
    return fig


def figure_altitude(flight: Flight) -> Figure:
    """Altitude over time with the fence's floor and ceiling (and the margins inside them)."""
    fig = _new_figure(7.0, 3.4)
    ax = fig.add_subplot()
    f, m = flight.mission.geofence, flight.mission
    alt = -flight.pos_ned_m[:, 2]
    _shade_fallback(ax, flight)
    ax.plot(flight.t_s, alt, color="#2471a3", lw=1.5, label="altitude")
    ax.axhline(f.floor_alt_m, color="black", lw=1.8, label="floor / ceiling")
    ax.axhline(f.ceiling_alt_m, color="black", lw=1.8)
    ax.axhline(f.floor_alt_m + m.altitude_margin_m, color="black", lw=0.8, ls="--", label="with margin")
    ax.axhline(f.ceiling_alt_m - m.altitude_margin_m, color="black", lw=0.8, ls="--")
    floor, ceiling = flight.mission.geometry.altitude_distances(flight.pos_ned_m)
    bad = ((floor < 0) & (flight.stage != int(Stage.LAND))) | (ceiling < 0)
    if bad.any():
        ax.scatter(flight.t_s[bad], alt[bad], marker="x", color="#e74c3c", s=20, label="BREACH", zorder=5)
    ax.set_ylim(min(0.0, float(alt.min()) - 1.0), f.ceiling_alt_m + 3.0)
    ax.set_xlabel("time since the policy took control (s)")
    ax.set_ylabel("altitude above origin (m)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("altitude")
    return fig


def figure_calibration(flight: Flight, summary: FlightSummary) -> Figure:
    """Margin q_t with the scores it must contain, and rolling / cumulative coverage vs. the target."""
    fig = _new_figure(7.0, 5.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    t = flight.t_s
    ax1.scatter(t, flight.score_m, s=3, color="#95a5a6", label="score s_t (realised − predicted, m)")
    ax1.plot(t, flight.margin_m, color="#c0392b", lw=1.6, label="margin q_t (m)")
    ax1.set_ylabel("metres")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_title("conformal margin q_t" + ("" if summary.calibrated else " (bundle not calibrated)"))
    rolling, cumulative = rolling_coverage(flight)
    ax2.plot(t, rolling, color="#2471a3", lw=1.3, label=f"rolling coverage ({ROLLING_WINDOW_S:g} s)")
    ax2.plot(t, cumulative, color="#1e8449", lw=1.6, label="coverage since start")
    ax2.axhline(summary.target_coverage, color="black", ls="--", lw=1.0, label="target 1 − α")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("time since the policy took control (s)")
    ax2.set_ylabel("coverage")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    return fig


def figure_latency(flight: Flight, summary: FlightSummary) -> Figure:
    """Histograms of the tick time and the inference time against the deadline and the period."""
    fig = _new_figure(7.0, 3.4)
    ax = fig.add_subplot()
    period = 1e6 / flight.rate_hz
    values = np.concatenate([flight.tick_us, flight.infer_us])
    values = values[np.isfinite(values) & (values > 0)]
    lo = max(1.0, float(values.min()) if values.size else 1.0)
    hi = max(period * 1.5, float(values.max()) if values.size else period)
    bins = np.geomspace(lo, hi, 60).tolist()
    ax.hist(flight.tick_us, bins=bins, color="#5dade2", alpha=0.8, label="whole tick")
    ax.hist(flight.infer_us, bins=bins, color="#f5b041", alpha=0.8, label="policy inference")
    ax.axvline(
        summary.deadline_us,
        color="#c0392b",
        ls="--",
        label=f"inference deadline {summary.deadline_us:.0f} µs",
    )
    ax.axvline(period, color="black", lw=1.2, label=f"control period {period:.0f} µs")
    ax.set_xscale("log")
    ax.set_xlabel("microseconds (log scale)")
    ax.set_ylabel("ticks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(
        f"latency: {summary.deadline_misses} deadline misses, {summary.overruns} overruns in {summary.ticks} ticks"
    )
    return fig


#: (file stem, caption) of the figures of one flight, in page order.
FIGURES: tuple[tuple[str, str], ...] = (
    ("trajectory", "Top-down track with the geofence, keep-out zones and every shield intervention"),
    ("altitude", "Altitude with the floor and ceiling"),
    ("calibration", "The calibrated margin q_t and rolling coverage"),
    ("latency", "Tick and inference latency"),
)


def render_figures(flight: Flight, summary: FlightSummary) -> dict[str, bytes]:
    """PNG bytes of every figure of one flight, keyed by the stems in FIGURES."""
    return {
        "trajectory": _png(figure_trajectory(flight)),
        "altitude": _png(figure_altitude(flight)),
        "calibration": _png(figure_calibration(flight, summary)),
        "latency": _png(figure_latency(flight, summary)),
    }


# ---------------------------------------------------------------------------------------------
# The page


def _fmt_m(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.2f} m"


@dataclass(frozen=True, slots=True)
class Cell:
    """One value of the table of figures: plain text (escaped by the template) and an optional style."""

    text: str
    css: str | None = None
    """'ok' (green) or 'bad' (red), or None."""


def _yes_no(ok: bool, yes: str, no: str) -> Cell:
    return Cell(yes if ok else no, "ok" if ok else "bad")


def table_rows(s: FlightSummary) -> list[tuple[str, Cell]]:
    """(label, value) rows of the table of figures; the values are text, never markup."""
    rows: list[tuple[str, Cell]] = [
        ("shield", _yes_no(s.shield_enabled, "on", "OFF (--no-shield)")),
        ("mission", _yes_no(s.mission_complete, "complete", "not complete")),
        ("flight ended", Cell(s.end_reason)),
        ("duration under policy control", Cell(f"{s.duration_s:.1f} s ({s.ticks} ticks)")),
        ("breaches (entries into a forbidden region)", _yes_no(s.breaches == 0, "0", str(s.breaches))),
    ]
    total = sum(s.interventions_by_layer.values())
    layers = ", ".join(f"{k} {v}" for k, v in s.interventions_by_layer.items())
    rows.append(("shield interventions by layer", Cell(f"{total} of {s.ticks} ticks ({layers})")))
    reasons = ", ".join(f"{k.lower()} {v}" for k, v in s.interventions_by_reason.items()) or "none"
    rows.append(("… by reason", Cell(reasons)))
    # Always present, so the rows of two flights line up in compare mode.
    rows.append(
        (
            "ticks a bypassed shield would have changed",
            Cell(f"{s.would_have_intervened}" if not s.shield_enabled else "— (shield on)"),
        )
    )
    for c in s.constraints:
        value = _fmt_m(c.min_distance_m)
        cell = Cell(value)
        if c.breach_ticks:
            cell = Cell(f"{value} — breached {c.breaches}×, {c.breach_ticks} ticks", "bad")
        rows.append((f"min distance: {c.name}", cell))
    cov = "—" if not math.isfinite(s.coverage) else f"{s.coverage:.3f}"
    rows.append(("coverage of the margin (target 1 − α)", Cell(f"{cov} (target {s.target_coverage:.2f})")))
    rows.append(("largest margin q_t", Cell(_fmt_m(s.max_margin_m))))
    if s.certificate:
        cert = s.certificate
        rows.append(
            (
                "certified failure bound",
                Cell(
                    f"ε = {float(cert['epsilon']):.3g} (k = {cert['k']} failures in N = {cert['n']} episodes, "
                    f"confidence 1 − β, β = {float(cert['beta']):g}; "
                    f"shield {'on' if cert.get('shield_enabled', True) else 'OFF'} in certification)"
                ),
            )
        )
    else:
        rows.append(("certified failure bound", Cell("not certified", "bad")))
    rows.append(
        (
            "tick time p50 / p99 / max",
            Cell(f"{s.tick_us_p50:.0f} / {s.tick_us_p99:.0f} / {s.tick_us_max:.0f} µs"),
        )
    )
    rows.append(("inference p50 / p99", Cell(f"{s.infer_us_p50:.0f} / {s.infer_us_p99:.0f} µs")))
    rows.append(
        (
            "deadline misses / overruns",
            Cell(f"{s.deadline_misses} / {s.overruns} (deadline {s.deadline_us:.0f} µs)"),
        )
    )
    return rows


def _verdict(s: FlightSummary) -> tuple[bool, str]:
    ok = s.mission_complete and s.breaches == 0
    parts = ["mission complete" if s.mission_complete else f"mission not complete ({s.end_reason})"]
    parts.append("no breaches" if s.breaches == 0 else f"{s.breaches} breach{'es' if s.breaches > 1 else ''}")
    parts.append(f"shield {'on' if s.shield_enabled else 'OFF'}")
    return ok, " · ".join(parts)


def _environment() -> jinja2.Environment:
    """The template environment: autoescape on for every template, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("calib", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render_html(
    flights: Sequence[Flight], summaries: Sequence[FlightSummary], figures: Sequence[Mapping[str, bytes]]
) -> str:
    """The page (``calib/templates/report.html.j2``): verdicts, the table of figures, then the figures.

    Every value reaches the template as text and is escaped there, so a crafted log header
    (a bundle path, a certificate field, an end reason) cannot inject markup into the page.
    """
    n = len(flights)
    names = [_flight_title(f) for f in flights]
    h = flights[0].header
    verdicts = []
    for name, s in zip(names, summaries, strict=True):
        ok, text = _verdict(s)
        verdicts.append({"name": name, "ok": ok, "text": text})
    per_flight = [table_rows(s) for s in summaries]
    rows = [(label, [r[i][1] for r in per_flight]) for i, (label, _) in enumerate(per_flight[0])]
    panels = [
        (
            caption,
            [
                {"name": name, "png_b64": base64.b64encode(figs[stem]).decode("ascii")}
                for name, figs in zip(names, figures, strict=True)
            ],
        )
        for stem, caption in FIGURES
    ]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title="Flight report" if n == 1 else "Flight comparison",
            names=names,
            bundle=str(h.get("bundle", "?")),
            autopilot=str(h.get("autopilot", "?")),
            link=str(h.get("link", "?")),
            rate=f"{flights[0].rate_hz:g}",
            verdicts=verdicts,
            rows=rows,
            figures=panels,
        )
    )


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`write_report` wrote and found."""

    html_path: Path
    figure_paths: tuple[Path, ...]
    summaries: tuple[FlightSummary, ...]


def write_report(
    log: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    compare: str | os.PathLike[str] | None = None,
) -> ReportResult:
    """Write ``out_dir/report.html`` (self-contained) and its PNG figures beside it.

    With ``compare``, the two flights go side by side (and ``compare_trajectory.png`` shows both maps).
    """
    flights = [load_flight(log)] + ([load_flight(compare)] if compare is not None else [])
    summaries = [summarize(f) for f in flights]
    figures = [render_figures(f, s) for f, s in zip(flights, summaries, strict=True)]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FlightLogError(
            f"cannot create report folder {out}: {exc.strerror}; choose a writable --out"
        ) from exc
    paths: list[Path] = []
    for i, figs in enumerate(figures):
        suffix = "" if i == 0 else "_compare"
        for stem, png in figs.items():
            p = out / f"{stem}{suffix}.png"
            p.write_bytes(png)
            paths.append(p)
    if len(flights) == 2:
        p = out / "compare_trajectory.png"
        p.write_bytes(_png(figure_compare_trajectories(flights[0], flights[1])))
        paths.append(p)
    html_path = out / "report.html"
    html_path.write_text(render_html(flights, summaries, figures), encoding="utf-8")
    return ReportResult(html_path, tuple(paths), tuple(summaries))


__all__ = [
    "FIGURES",
    "LAYER_NAMES",
    "Cell",
    "ConstraintDistance",
    "Flight",
    "FlightSummary",
    "LoggedMission",
    "ReportResult",
    "constraint_distances",
    "draw_trajectory",
    "figure_compare_trajectories",
    "inference_deadline_us",
    "load_flight",
    "mission_from_header",
    "render_figures",
    "render_html",
    "rolling_coverage",
    "summarize",
    "table_rows",
    "write_report",
]
