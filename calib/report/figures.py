"""The report's figures, drawn on matplotlib's Agg canvas through the object API (no pyplot, no global backend)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Polygon, Rectangle

from calib.report.flight import Flight
from calib.report.summary import ROLLING_WINDOW_S, FlightSummary, constraint_distances, rolling_coverage
from edge_agent.fallback import Stage
from edge_agent.mission import Fence, KeepoutCylinder
from edge_agent.shield import Reason

#: Barrier reasons that are about a boundary (the others merely clip speed to the mission's limits).
GEOMETRIC_REASONS = frozenset({int(Reason.FENCE), int(Reason.ALTITUDE), int(Reason.KEEPOUT)})
_FIG_DPI = 110


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


def png_bytes(fig: Figure) -> bytes:
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
    ax.set_title(title or flight_title(flight))
    if legend:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.9)


def flight_title(flight: Flight) -> str:
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
        "trajectory": png_bytes(figure_trajectory(flight)),
        "altitude": png_bytes(figure_altitude(flight)),
        "calibration": png_bytes(figure_calibration(flight, summary)),
        "latency": png_bytes(figure_latency(flight, summary)),
    }
