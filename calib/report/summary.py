"""The table of figures of one flight (:func:`summarize`), with every distance recomputed from the logged positions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calib.report.flight import LAYER_NAMES, Flight
from edge_agent.agent import calibrator_config_for
from edge_agent.fallback import Stage
from edge_agent.loop_config import LoopConfig
from edge_agent.mission import Keepout, KeepoutBox, KeepoutCylinder
from edge_agent.shield import Reason

F64 = NDArray[np.float64]
#: Window of the rolling coverage curve.
ROLLING_WINDOW_S = 5.0


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
