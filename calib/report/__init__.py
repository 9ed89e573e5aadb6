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

One module per stage: :mod:`~calib.report.flight` (reading), :mod:`~calib.report.summary` (the
table of figures), :mod:`~calib.report.figures` (the PNGs) and :mod:`~calib.report.page` (the HTML);
import from here.
"""

from __future__ import annotations

from calib.report.figures import FIGURES, draw_trajectory, figure_compare_trajectories, render_figures
from calib.report.flight import LAYER_NAMES, Flight, LoggedMission, load_flight, mission_from_header
from calib.report.page import Cell, ReportResult, render_html, table_rows, write_report
from calib.report.summary import (
    ConstraintDistance,
    FlightSummary,
    constraint_distances,
    inference_deadline_us,
    rolling_coverage,
    summarize,
)

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
