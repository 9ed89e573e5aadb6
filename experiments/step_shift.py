"""Step shift in the SITL: steady wind 0 → 8 m/s mid-flight; rolling coverage of the onboard tracker
versus a fixed split-conformal margin.

A batch of vehicles flies a bundle (the goal seeker by default) under the shield through the
real onboard tick (``edge_agent.agent.build_agent`` → ``AgentCore.step``) over ``sitl.sim.Sim``.
Route ``hold`` (default): station keeping at one waypoint 10 m up; route ``shuttle``: back and
forth along the east axis (legs of 80 m). The wind blows north (``across``: across the shuttle's
legs) or east (``along``: head/tail wind on the legs). At ``shift_s`` every vehicle's steady wind
steps from ``wind_before_m_s`` to ``wind_after_m_s`` and its gust intensity to ``gust_after_m_s``.

Per tick we record the calibrator's own miss indicator err_t and its margin q_t (a
``Calibrator`` subclass that keeps the last ``CalibratorTick``), and the score s_t. The fixed
split-conformal margin q̂ is the ⌈(n+1)(1−α)⌉-th smallest of the pre-shift scores (after a
burn-in) and is judged on the very same scores: err_t = 1{s_t > q̂}.

Rolling coverage at tick t = 1 − (misses / scored ticks) over the trailing window of W ticks,
pooled over the batch. "Recovered" = from some tick on, rolling coverage stays within
1 − α ± tol until the end of the run; the recovery time counts from the shift.

    python -m experiments.step_shift --bundle /tmp/b/goal_seeker --out docs/figures/step_shift.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calib.stats import split_conformal_quantile
from edge_agent.agent import build_agent
from edge_agent.bundle import load_bundle
from edge_agent.calibrator import Calibrator, CalibratorTick
from edge_agent.errors import ConfigError
from edge_agent.mission import Mission, parse_mission
from edge_agent.observation import StateArrays
from edge_agent.policy import PolicyRunner
from sitl.disturbance import Disturbances, MeasurementNoise
from sitl.sim import SetpointKind, Sim

F64 = npt.NDArray[np.float64]
B8 = npt.NDArray[np.bool_]

LEG_HALF_M = 40.0
"""The route's waypoints sit at east = ±LEG_HALF_M (north 0, 10 m up)."""


def shuttle_mission(legs: int = 40) -> Mission:
    """A 120 m × 120 m box with a route that shuttles east–west ``legs`` times (no keep-out zones)."""
    return _box_mission([[0.0, (-1.0) ** (i + 1) * LEG_HALF_M, 10.0] for i in range(legs)])


def hold_mission() -> Mission:
    """The same box with one waypoint at its centre, 10 m up: the goal seeker keeps station there."""
    return _box_mission([[0.0, 0.0, 10.0]])


def _box_mission(wps: list[list[float]]) -> Mission:
    return parse_mission(
        {
            "geofence": {
                "kind": "box",
                "north_min_m": -60.0,
                "north_max_m": 60.0,
                "east_min_m": -60.0,
                "east_max_m": 60.0,
                "floor_alt_m": 2.0,
                "ceiling_alt_m": 40.0,
            },
            "route": {"waypoints_nea_m": wps, "acceptance_radius_m": 1.5},
            "limits": {"horizontal_speed_m_s": 5.0, "up_speed_m_s": 2.0, "down_speed_m_s": 1.5},
            "autopilot": {"flavour": "px4"},
        }
    )


@dataclass(frozen=True, slots=True)
class StepShiftConfig:
    """One step-shift run."""

    n_vehicles: int = 256
    route: str = "hold"
    """'hold': station keeping at one waypoint; 'shuttle': back and forth along the east axis."""
    """Vehicles flown side by side (the coverage is pooled over them)."""
    duration_s: float = 120.0
    shift_s: float = 40.0
    """Sim time at which the steady wind steps."""
    burn_in_s: float = 10.0
    """Pre-shift scores before this are left out of the fixed margin's calibration set."""
    wind_before_m_s: float = 0.0
    wind_after_m_s: float = 8.0
    gust_after_m_s: float = 1.5
    """Gust intensity (std per axis, m/s) after the step; the demo scenario's strongest. 0 = steady only."""
    wind_direction: str = "across"
    """'along': the wind blows east (along the shuttle's legs: head/tail wind); 'across': it blows north."""
    alpha: float = 0.1
    window_ticks: int = 250
    """Trailing window of the rolling coverage (250 ticks = 5 s at 50 Hz)."""
    tolerance: float = 0.03
    pos_noise_std_m: float = 0.05
    vel_noise_std_m_s: float = 0.05
    latency_s: float = 0.02
    warm_quantile_m: float | None = None
    """Tracker warm start; None: the split-conformal quantile of a short calm pilot run."""
    seed: int = 0


@dataclass(frozen=True, slots=True)
class StepShiftTrace:
    """Per-tick records of a run: arrays [T, B] unless noted."""

    t_s: F64
    """[T] sim time of each tick."""
    score_m: F64
    """s_t (NaN where not scored)."""
    miss_tracker: B8
    """The calibrator's err_t against the margin it had set."""
    margin_m: F64
    """q_t, the calibrator's margin after the tick."""
    rate_hz: float


@dataclass(frozen=True, slots=True)
class StepShiftResult:
    """What the experiment concludes."""

    config: StepShiftConfig
    warm_quantile_m: float
    fixed_quantile_m: float
    """q̂ from the pre-shift scores."""
    n_calibration_scores: int
    shift_tick: int
    recovery_ticks_tracker: int | None
    """Ticks from the shift until rolling coverage enters 1−α ± tol for good (None: never)."""
    recovery_ticks_fixed: int | None
    coverage_pre_tracker: float
    """Pooled coverage over [burn-in, shift)."""
    coverage_pre_fixed: float
    coverage_end_tracker: float
    """Pooled coverage over the last third of the post-shift period."""
    coverage_end_fixed: float
    margin_pre_m: float
    """Mean q_t just before the shift."""
    margin_end_m: float
    """Mean q_t over the last third of the post-shift period."""
    rate_hz: float

    @property
    def recovery_s_tracker(self) -> float | None:
        """Recovery time of the tracker in seconds."""
        return None if self.recovery_ticks_tracker is None else self.recovery_ticks_tracker / self.rate_hz

    def to_json(self) -> dict[str, object]:
        """Plain values for a results file."""
        d = {k: getattr(self, k) for k in self.__slots__ if k != "config"}
        d["config"] = asdict(self.config)
        d["recovery_s_tracker"] = self.recovery_s_tracker
        return d


class RecordingCalibrator(Calibrator):
    """The onboard calibrator, unchanged, remembering the last ``CalibratorTick`` (for the miss flags)."""

    last: CalibratorTick | None = None

    def update(self, score_m: npt.ArrayLike, valid: npt.ArrayLike) -> CalibratorTick:
        """Calibrator.update (what AgentCore calls every tick), keeping its result."""
        tick = super().update(score_m, valid)
        self.last = tick
        return tick


def _wind(cfg: StepShiftConfig, speed: float) -> tuple[float, float, float]:
    if cfg.wind_direction == "along":
        return (0.0, speed, 0.0)
    if cfg.wind_direction == "across":
        return (speed, 0.0, 0.0)
    raise ConfigError(f"wind_direction must be 'along' or 'across', got {cfg.wind_direction!r}")


def fly(bundle_dir: str | Path, cfg: StepShiftConfig, warm_quantile_m: float) -> StepShiftTrace:
    """Fly the batch through the onboard tick with the wind step; return the per-tick records."""
    _wind(cfg, 0.0)  # validates the direction before any work
    if cfg.route not in ("hold", "shuttle"):
        raise ConfigError(f"route must be 'hold' or 'shuttle', got {cfg.route!r}")
    if not 0.0 < cfg.shift_s < cfg.duration_s:
        raise ConfigError(f"shift_s = {cfg.shift_s} must lie inside (0, duration_s = {cfg.duration_s})")
    bundle = load_bundle(bundle_dir)
    cal = {"alpha": cfg.alpha, "quantile_m": warm_quantile_m}
    manifest = replace(bundle.manifest, calibration=cal)
    mission = hold_mission() if cfg.route == "hold" else shuttle_mission()
    n = cfg.n_vehicles
    core = build_agent(policy=PolicyRunner(bundle), manifest=manifest, mission=mission, n=n)
    rec = RecordingCalibrator(core.calibrator.config, n=n, warm_quantile_m=warm_quantile_m)
    core.calibrator = rec
    rate = manifest.control_rate_hz
    dt = 0.004
    substeps = round(1.0 / (rate * dt))
    rng = np.random.default_rng(cfg.seed)
    sim = Sim(
        n,
        rng=rng,
        disturbances=Disturbances(
            wind_ned_m_s=_wind(cfg, cfg.wind_before_m_s),
            noise=MeasurementNoise(cfg.pos_noise_std_m, cfg.vel_noise_std_m_s, 0.005, 0.01),
            latency_s=cfg.latency_s,
        ),
        dt_s=dt,
    )
    # Start hovering at random points (of the route: the batch is spread over the legs' phases).
    half_e = 5.0 if cfg.route == "hold" else LEG_HALF_M
    start = np.column_stack([rng.uniform(-5.0, 5.0, n), rng.uniform(-half_e, half_e, n), np.full(n, -10.0)])
    sim.reset(pos_ned_m=start, on_ground=False)
    sp5 = np.zeros((n, 5))
    link_ok = np.ones(n, dtype=bool)
    ticks = math.ceil(cfg.duration_s * rate - 1e-9)
    shift_tick = round(cfg.shift_s * rate)
    t_s = np.zeros(ticks)
    score = np.full((ticks, n), np.nan)
    miss = np.zeros((ticks, n), dtype=bool)
    margin = np.zeros((ticks, n))
    for k in range(ticks):
        if k == shift_tick:
            sim.set_params(wind_ned_m_s=_wind(cfg, cfg.wind_after_m_s), gust_std_m_s=cfg.gust_after_m_s)
        t = sim.time_s
        m = sim.measure()
        age = np.full((n, 4), cfg.latency_s)
        arrays = StateArrays(m.pos_ned_m, m.vel_ned_m_s, m.q_wxyz, m.rates_frd_rad_s, m.battery_frac, age)
        d = core.step(arrays, t, link_ok)
        sp5[:, :4] = d.setpoint
        sim.set_setpoint(SetpointKind.VELOCITY, sp5)
        sim.step(substeps)
        tick = rec.last
        assert tick is not None
        t_s[k] = t
        score[k] = tick.score_m
        miss[k] = tick.miss
        margin[k] = tick.margin_m
    return StepShiftTrace(t_s, score, miss, margin, rate)


def rolling_coverage(miss: B8, scored: B8, window: int) -> F64:
    """1 − pooled miscoverage over the trailing ``window`` ticks [T] (NaN where nothing was scored)."""
    m = np.cumsum(np.concatenate([[0.0], miss.sum(axis=1)]))
    s = np.cumsum(np.concatenate([[0.0], scored.sum(axis=1)]))
    lo = np.maximum(np.arange(1, miss.shape[0] + 1) - window, 0)
    hi = np.arange(1, miss.shape[0] + 1)
    num, den = m[hi] - m[lo], s[hi] - s[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 1.0 - num / den, np.nan)


def recovery_ticks(coverage: F64, start: int, target: float, tol: float) -> int | None:
    """Ticks after ``start`` from which ``coverage`` stays within target ± tol to the end (None: never)."""
    inside = np.abs(coverage[start:] - target) <= tol
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return 0 if outside.size == 0 else int(outside[-1] + 1)


def analyse(trace: StepShiftTrace, cfg: StepShiftConfig, warm_quantile_m: float) -> StepShiftResult:
    """Fixed q̂ from the pre-shift scores, both rolling coverages, recovery times and summaries."""
    rate = trace.rate_hz
    shift = round(cfg.shift_s * rate)
    burn = round(cfg.burn_in_s * rate)
    scored = np.isfinite(trace.score_m)
    pre = trace.score_m[burn:shift][scored[burn:shift]]
    q_fixed = split_conformal_quantile(pre, cfg.alpha)
    miss_fixed = scored & (np.nan_to_num(trace.score_m, nan=-np.inf) > q_fixed)
    target = 1.0 - cfg.alpha
    cov_t = rolling_coverage(trace.miss_tracker, scored, cfg.window_ticks)
    cov_f = rolling_coverage(miss_fixed, scored, cfg.window_ticks)
    end = len(trace.t_s) - (len(trace.t_s) - shift) // 3

    def pooled(miss: B8, a: int, b: int) -> float:
        return float(1.0 - miss[a:b].sum() / max(1, scored[a:b].sum()))

    return StepShiftResult(
        config=cfg,
        warm_quantile_m=warm_quantile_m,
        fixed_quantile_m=q_fixed,
        n_calibration_scores=int(pre.size),
        shift_tick=shift,
        recovery_ticks_tracker=recovery_ticks(cov_t, shift, target, cfg.tolerance),
        recovery_ticks_fixed=recovery_ticks(cov_f, shift, target, cfg.tolerance),
        coverage_pre_tracker=pooled(trace.miss_tracker, burn, shift),
        coverage_pre_fixed=pooled(miss_fixed, burn, shift),
        coverage_end_tracker=pooled(trace.miss_tracker, end, len(trace.t_s)),
        coverage_end_fixed=pooled(miss_fixed, end, len(trace.t_s)),
        margin_pre_m=float(trace.margin_m[shift - 1].mean()),
        margin_end_m=float(trace.margin_m[end:].mean()),
        rate_hz=rate,
    )


def pilot_quantile(bundle_dir: str | Path, cfg: StepShiftConfig) -> float:
    """Warm start for the tracker: split-conformal quantile of a short calm-air run (as `calibrate` would)."""
    pilot = replace(
        cfg,
        n_vehicles=min(cfg.n_vehicles, 64),
        duration_s=cfg.burn_in_s + 10.0,
        shift_s=cfg.burn_in_s + 9.0,
        wind_after_m_s=cfg.wind_before_m_s,
        gust_after_m_s=0.0,
        seed=cfg.seed + 1,
    )
    tr = fly(bundle_dir, pilot, warm_quantile_m=1.0)
    burn = round(cfg.burn_in_s * tr.rate_hz)
    s = tr.score_m[burn:]
    return split_conformal_quantile(s[np.isfinite(s)], cfg.alpha)


def run(bundle_dir: str | Path, cfg: StepShiftConfig) -> tuple[StepShiftTrace, StepShiftResult]:
    """The whole experiment: pilot (if no warm start given), the step-shift run and its analysis."""
    warm = cfg.warm_quantile_m if cfg.warm_quantile_m is not None else pilot_quantile(bundle_dir, cfg)
    trace = fly(bundle_dir, cfg, warm)
    return trace, analyse(trace, cfg, warm)


def plot(trace: StepShiftTrace, result: StepShiftResult, out: Path) -> None:
    """Rolling coverage of both margins and the margin q_t over time, to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result.config
    scored = np.isfinite(trace.score_m)
    miss_fixed = scored & (np.nan_to_num(trace.score_m, nan=-np.inf) > result.fixed_quantile_m)
    cov_t = rolling_coverage(trace.miss_tracker, scored, cfg.window_ticks)
    cov_f = rolling_coverage(miss_fixed, scored, cfg.window_ticks)
    target = 1.0 - cfg.alpha
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    t = trace.t_s
    ax1.axhspan(target - cfg.tolerance, target + cfg.tolerance, color="0.9", label=f"1−α ± {cfg.tolerance:g}")
    ax1.axhline(target, color="0.5", lw=0.8)
    ax1.plot(t, cov_t, label="online quantile tracker (onboard)")
    ax1.plot(t, cov_f, label=f"fixed split-conformal q̂ = {result.fixed_quantile_m:.3f} m")
    ax1.axvline(cfg.shift_s, color="k", ls="--", lw=0.8)
    if result.recovery_ticks_tracker is not None:
        ax1.axvline(t[result.shift_tick + result.recovery_ticks_tracker], color="C0", ls=":", lw=1.0)
    ax1.set_ylabel(f"rolling coverage ({cfg.window_ticks / trace.rate_hz:g} s window)")
    ax1.set_ylim(max(0.0, min(np.nanmin(cov_f), np.nanmin(cov_t)) - 0.05), 1.0)
    ax1.legend(loc="lower left", fontsize=8)
    ax1.set_title(
        f"Step shift at t = {cfg.shift_s:g} s: {_describe(cfg)}; {cfg.n_vehicles} vehicles, α = {cfg.alpha:g}",
        fontsize=9,
    )
    q = trace.margin_m
    ax2.plot(t, q.mean(axis=1), label="q_t (batch mean)")
    ax2.fill_between(t, np.quantile(q, 0.05, axis=1), np.quantile(q, 0.95, axis=1), alpha=0.3, label="5–95 %")
    ax2.axhline(result.fixed_quantile_m, color="C1", label="fixed q̂")
    ax2.axvline(cfg.shift_s, color="k", ls="--", lw=0.8)
    ax2.set_xlabel("sim time (s)")
    ax2.set_ylabel("margin (m)")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _describe(cfg: StepShiftConfig) -> str:
    toward = "east" if cfg.wind_direction == "along" else "north"
    what = "station keeping" if cfg.route == "hold" else "shuttling east–west"
    gust = f" + gusts {cfg.gust_after_m_s:g} m/s std" if cfg.gust_after_m_s > 0 else " (steady, no gusts)"
    return f"wind {cfg.wind_before_m_s:g} → {cfg.wind_after_m_s:g} m/s toward {toward}{gust}, {what}"


def summary(result: StepShiftResult) -> str:
    """Human-readable figures of a run."""
    r, c = result, result.config

    def rec(ticks: int | None) -> str:
        return (
            "never (not within tolerance at the end)"
            if ticks is None
            else f"{ticks} ticks ({ticks / r.rate_hz:.1f} s)"
        )

    return "\n".join(
        [
            f"{_describe(c)} at t = {c.shift_s:g} s; "
            f"{c.n_vehicles} vehicles, {c.duration_s:g} s, α = {c.alpha:g}, window {c.window_ticks} ticks",
            f"tracker warm start {r.warm_quantile_m:.4f} m; fixed q̂ {r.fixed_quantile_m:.4f} m from {r.n_calibration_scores} pre-shift scores",
            f"pre-shift coverage: tracker {r.coverage_pre_tracker:.4f}, fixed {r.coverage_pre_fixed:.4f}",
            f"end coverage (last third): tracker {r.coverage_end_tracker:.4f}, fixed {r.coverage_end_fixed:.4f}",
            f"margin q_t: {r.margin_pre_m:.4f} m before the shift, {r.margin_end_m:.4f} m at the end",
            f"back within 1−α ± {c.tolerance:g} for good: tracker {rec(r.recovery_ticks_tracker)}; fixed {rec(r.recovery_ticks_fixed)}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: run the experiment, print the figures, write the figure (and a JSON)."""
    p = argparse.ArgumentParser(prog="python -m experiments.step_shift", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder (e.g. the scripted goal seeker)")
    p.add_argument("--out", type=Path, default=Path("docs/figures/step_shift.png"), help="figure path (PNG)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    d = StepShiftConfig()
    p.add_argument("--vehicles", type=int, default=d.n_vehicles)
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds of sim time")
    p.add_argument("--shift", type=float, default=d.shift_s, help="time of the wind step (s)")
    p.add_argument("--wind", type=float, default=d.wind_after_m_s, help="wind after the step (m/s)")
    p.add_argument("--direction", choices=("along", "across"), default=d.wind_direction)
    p.add_argument("--gust", type=float, default=d.gust_after_m_s, help="gust std after the step (m/s)")
    p.add_argument("--route", choices=("hold", "shuttle"), default=d.route)
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    cfg = replace(
        d,
        n_vehicles=a.vehicles,
        duration_s=a.duration,
        shift_s=a.shift,
        wind_after_m_s=a.wind,
        wind_direction=a.direction,
        gust_after_m_s=a.gust,
        route=a.route,
        alpha=a.alpha,
        seed=a.seed,
    )
    trace, result = run(a.bundle, cfg)
    print(summary(result))
    plot(trace, result, a.out)
    print(f"figure: {a.out}")
    if a.json is not None:
        a.json.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
