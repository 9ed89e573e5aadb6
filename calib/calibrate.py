"""Split-conformal calibration of the onboard margin, from scenario episodes or from flight logs.

One score per episode: the onboard nonconformity score (``edge_agent.calibrator``) at one tick
chosen uniformly among the episode's scored ticks (``calib.rollout``). Episodes are i.i.d. draws
from the scenario, and the tick is chosen by randomness independent of the scores, so the n
calibration scores and a new episode's score are i.i.d., hence exchangeable: split conformal's
guarantee P(s_new ≤ q̂) ≥ 1 − α holds. The score at a uniformly random tick has the per-tick
distribution the onboard tracker steers its miscoverage against, so q̂ is its warm start. (The
maximum over an episode would also be exchangeable, but would cover whole episodes, a far
stricter and wider margin than the per-tick coverage the tracker maintains.)

Calibration episodes use indices from CALIBRATION_OFFSET on, so they are never the episodes a
certification campaign (indices 0..N-1) counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calib.stats import conformal_coverage_band, heldout_coverage_band, split_conformal_quantile
from edge_agent.agent import HORIZON_S
from edge_agent.calibrator import score_definition
from edge_agent.errors import CalibrationError

F64 = NDArray[np.float64]

CALIBRATION_OFFSET = 1 << 40
"""First episode index of calibration runs (certification uses 0..N-1)."""


def horizon_ticks_for(rate_hz: float) -> int:
    """The onboard scoring horizon H in ticks at the bundle's rate (as edge_agent.agent computes it)."""
    return max(1, round(HORIZON_S * rate_hz))


def calibration_episodes(n: int, holdout: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Episode indices of the calibration set and of the held-out set."""
    if n < 1:
        raise CalibrationError(f"--episodes must be at least 1, got {n}")
    if holdout < 0:
        raise CalibrationError(f"--holdout must be >= 0, got {holdout}")
    cal = CALIBRATION_OFFSET + np.arange(n, dtype=np.int64)
    return cal, CALIBRATION_OFFSET + n + np.arange(holdout, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """The quantile and how well it covers."""

    n: int
    alpha: float
    quantile_m: float
    band: tuple[float, float]
    """5–95 % band of the coverage of this calibration set, Beta(k, n + 1 − k)."""
    holdout_n: int
    holdout_coverage: float
    """Fraction of held-out scores ≤ quantile_m (NaN without a held-out set)."""
    dropped: int
    """Episodes or samples without a score."""


def calibrate_scores(scores: F64, holdout: F64, alpha: float) -> CalibrationResult:
    """Split-conformal quantile (finite-sample rank ⌈(n+1)(1−α)⌉) with its coverage report."""
    s = np.asarray(scores, dtype=np.float64)
    h = np.asarray(holdout, dtype=np.float64)
    dropped = int((~np.isfinite(s)).sum() + (~np.isfinite(h)).sum())
    s, h = s[np.isfinite(s)], h[np.isfinite(h)]
    q = split_conformal_quantile(s, alpha)
    band = conformal_coverage_band(int(s.size), alpha)
    cov = float(np.mean(h <= q)) if h.size else float("nan")
    return CalibrationResult(int(s.size), float(alpha), q, band, int(h.size), cov, dropped)


def calibration_section(
    result: CalibrationResult,
    horizon_ticks: int,
    scenario: str,
    source: str,
    vehicle: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest's ``calibration`` section (read onboard by edge_agent.agent.calibrator_config_for).

    ``vehicle`` (edge_agent.vehicle.identity) says which vehicle the scores came from; the runtime
    reports a flight on another one."""
    return {
        "vehicle": vehicle,
        "score_definition": score_definition(horizon_ticks),
        "n": result.n,
        "alpha": result.alpha,
        "quantile_m": result.quantile_m,
        "horizon_ticks": horizon_ticks,
        "scenario_hash": scenario,
        "source": source,
        "coverage_band_5_95": list(result.band),
        "holdout_n": result.holdout_n,
        "holdout_coverage": None if result.holdout_n == 0 else result.holdout_coverage,
    }


def report(result: CalibrationResult) -> str:
    """A short human-readable coverage report."""
    lo, hi = result.band
    lines = [
        f"n = {result.n} scores, α = {result.alpha:g}: quantile q̂ = {result.quantile_m:.4f} m "
        f"(rank ⌈(n+1)(1−α)⌉ = {int(np.ceil((result.n + 1) * (1 - result.alpha) - 1e-9))})",
        f"coverage of this calibration set ~ Beta: 5–95 % band [{lo:.3f}, {hi:.3f}] (target ≥ {1 - result.alpha:.3f})",
    ]
    if result.holdout_n:
        h_lo, h_hi = heldout_coverage_band(result.n, result.alpha, result.holdout_n)
        inside = "inside" if h_lo <= result.holdout_coverage <= h_hi else "OUTSIDE"
        lines.append(
            f"held-out empirical coverage {result.holdout_coverage:.3f} on {result.holdout_n} scores: {inside} "
            f"[{h_lo:.3f}, {h_hi:.3f}], the 5–95 % band of a correct calibration (Beta-Binomial: this "
            f"calibration set's spread plus the held-out set's own)"
        )
    if result.dropped:
        lines.append(f"{result.dropped} episodes/samples had no score and were left out")
    return "\n".join(lines)


__all__ = [
    "CALIBRATION_OFFSET",
    "CalibrationResult",
    "calibrate_scores",
    "calibration_episodes",
    "calibration_section",
    "horizon_ticks_for",
    "report",
]
