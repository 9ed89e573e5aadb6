"""Calibration from real flight logs vs the equivalent SITL scenario (issue 6).

1. Fly the bundle with ``edge-agent run`` against ``edge-agent sitl --flavor px4 --link pty://``
   (separate processes, a pty serial link, MAVLink, real time) on a mission, in a given steady
   wind speed and gust intensity, a few times; flight k has the wind blowing toward 360°·k/F
   (so the flights cover the directions the scenario draws uniformly). Each writes an .eal log.
2. The log quantile: what ``edge-agent calibrate BUNDLE --from-log LOGS --alpha A --dry-run``
   computes (``calib.logs.scores_from_logs``; first two thirds calibrate, the last third is held out).
3. The scenario quantile: what ``edge-agent calibrate BUNDLE --scenarios S --alpha A --dry-run``
   computes, on a scenario written to match the SITL flights: the same mission, the same wind
   speed and gust intensity, nominal mass and motors, no faults, no sensor noise, latency or
   dropouts (the ``edge-agent sitl`` defaults), a hover start at the take-off height with zero
   speed and yaw. What still differs: the scenario starts anywhere in the fence (the flight starts
   over the origin), and the flight has the real link and real-time loop jitter.
4. The tolerance: the log quantile's coverage of the scenario's held-out scores lies in the
   scenario's Beta band (5–95 %, widened by the held-out set's own 90 % sampling noise), or the two
   quantile intervals implied by the bands (metres) overlap.

    python -m experiments.log_vs_scenario --bundle /tmp/b/goal_seeker --flights 4 --wind 3 --gust 1
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calib.calibrate import CalibrationResult, calibrate_scores, calibration_episodes, horizon_ticks_for
from calib.certify import run_campaign
from calib.logs import scores_from_logs
from calib.scenario import load_scenario
from edge_agent.bundle import load_bundle
from edge_agent.errors import CalibrationError, EdgeAgentError
from firmware_bridge.exitcodes import FLIGHT_OUTCOMES

F64 = npt.NDArray[np.float64]

REPO = Path(__file__).resolve().parents[1]
DEMO_MISSION = REPO / "examples" / "missions" / "demo.toml"
READY = re.compile(r"ready: connect to (\S+)")
#: `edge-agent run`'s default take-off height: the flight's first tick hovers there.
TAKEOFF_ALT_M = 5.0
#: Two-sided 90 % normal quantile for the held-out set's sampling noise.
Z90 = 1.645


class FlightError(EdgeAgentError):
    """A real SITL flight could not be flown (simulator or agent failed)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent.cli", *args]


def wind_vector(speed_m_s: float, toward_deg: float) -> tuple[float, float, float]:
    """Steady wind NED (m/s) blowing toward the compass direction ``toward_deg``."""
    a = math.radians(toward_deg)
    return (speed_m_s * math.cos(a), speed_m_s * math.sin(a), 0.0)


def fly(
    bundle: Path,
    log: Path,
    *,
    wind_ned_m_s: tuple[float, float, float],
    gust_m_s: float,
    seed: int,
    mission: Path = DEMO_MISSION,
    max_duration_s: float = 60.0,
    timeout_s: float = 180.0,
) -> dict[str, object]:
    """One real flight: ``edge-agent sitl`` (PX4, pty) and ``edge-agent run``; returns run's JSON summary."""
    wind = ",".join(f"{round(w, 9) + 0.0:g}" for w in wind_ned_m_s)  # + 0.0: no "-0"
    sitl = subprocess.Popen(
        _cli(
            "sitl",
            "--fast-boot",  # what is compared is the flight, not the boot
            "--flavor",
            "px4",
            "--link",
            "pty://",
            f"--wind={wind}",  # one token: a leading minus must not read as an option
            "--gust",
            f"{gust_m_s:g}",
            "--seed",
            str(seed),
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        url = _wait_ready(sitl, 60.0)
        cmd = _cli(
            "run", "--bundle", str(bundle), "--mission", str(mission), "--link", url, "--log", str(log),
            "--max-duration", f"{max_duration_s:g}", "--json",
        )  # fmt: skip
        try:
            out = subprocess.run(
                cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise FlightError(
                f"`edge-agent run` did not finish within {timeout_s:g} s; raise timeout_s"
            ) from exc
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode not in FLIGHT_OUTCOMES or not lines:  # 4: stopped by --max-duration
            raise FlightError(
                f"`edge-agent run` failed (status {out.returncode}): {(out.stdout + out.stderr)[-600:]}"
            )
        summary: dict[str, object] = json.loads(lines[-1])
        return summary
    finally:
        if sitl.poll() is None:
            sitl.send_signal(signal.SIGINT)
            try:
                sitl.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sitl.kill()
                sitl.wait()


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    found: list[str] = []
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            m = READY.search(line)
            if m and not found:
                found.append(m.group(1))
        # keep draining so a chatty simulator never blocks on a full pipe

    threading.Thread(target=read, daemon=True).start()
    deadline = threading.Event()
    for _ in range(int(timeout_s * 10)):
        if found or proc.poll() is not None:
            break
        deadline.wait(0.1)
    if not found:
        raise FlightError(
            f"the simulator did not report ready within {timeout_s:g} s: {''.join(seen)[-400:]}"
        )
    return found[0]


SCENARIO_TEMPLATE = """# Written by experiments.log_vs_scenario: the SITL flights' conditions as a scenario.
[scenario]
name = "log-equivalent"
seed = {seed}
mission = "{mission}"
duration_s = {duration}
physics_dt_s = 0.004

[wind]
speed_m_s = [{wind}, {wind}]
gust_std_m_s = [{gust}, {gust}]
gust_time_constant_s = 2.0

[vehicle]
mass_scale = [1.0, 1.0]
motor_efficiency = [1.0, 1.0]
motor_fault_probability = 0.0

[sensors]
pos_noise_std_m = 0.0
vel_noise_std_m_s = 0.0
att_noise_std_rad = 0.0
rates_noise_std_rad_s = 0.0
latency_s = 0.0
dropout_rate_hz = 0.0
dropout_duration_s = 0.3  # unused: no dropouts

[start]
altitude_m = [{alt}, {alt}]
clearance_m = 4.0
yaw_rad = [0.0, 0.0]
speed_m_s = [0.0, 0.0]
"""


def write_equivalent_scenario(
    path: Path,
    *,
    wind_m_s: float,
    gust_m_s: float,
    duration_s: float,
    mission: Path = DEMO_MISSION,
    seed: int = 1,
) -> Path:
    """A scenario TOML matching the SITL flights (see the module docstring for what still differs)."""
    path.write_text(
        SCENARIO_TEMPLATE.format(
            seed=seed,
            mission=mission.resolve(),
            duration=duration_s,
            wind=wind_m_s,
            gust=gust_m_s,
            alt=TAKEOFF_ALT_M,
        ),
        encoding="utf-8",
    )
    return path


def log_calibration(bundle: Path, logs: list[Path], alpha: float) -> tuple[CalibrationResult, F64]:
    """What `edge-agent calibrate --from-log` computes (calib/calibrate_cli.py), and all the scores."""
    b = load_bundle(bundle)
    rate = b.manifest.control_rate_hz
    s = scores_from_logs(logs, horizon_ticks_for(rate) / rate).scores_m
    cut = max(1, (2 * s.size) // 3)  # as calibrate_cli: the later third of the flights is held out
    return calibrate_scores(s[:cut], s[cut:], alpha), s


def scenario_calibration(
    bundle: Path, scenario: Path, alpha: float, *, episodes: int, holdout: int, batch: int = 1024
) -> tuple[CalibrationResult, F64]:
    """What `edge-agent calibrate --scenarios` computes, and the held-out scores."""
    spec = load_scenario(scenario)
    cal, hold = calibration_episodes(episodes, holdout)
    res = run_campaign(bundle, spec, np.concatenate([cal, hold]), batch=batch)
    is_cal = np.isin(res.episode, cal)
    return calibrate_scores(res.score_m[is_cal], res.score_m[~is_cal], alpha), res.score_m[~is_cal]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The two quantiles and the tolerance checks."""

    alpha: float
    log_quantile_m: float
    log_n: int
    log_band: tuple[float, float]
    log_holdout_coverage: float
    scenario_quantile_m: float
    scenario_n: int
    scenario_band: tuple[float, float]
    scenario_holdout_n: int
    log_q_coverage_on_scenario: float
    """Fraction of the scenario's held-out scores ≤ the log quantile."""
    tolerance: tuple[float, float]
    """The scenario's Beta band widened by the held-out set's 90 % sampling noise."""
    log_q_interval_m: tuple[float, float]
    """Scores at the log band's coverage levels, in the log scores' distribution."""
    scenario_q_interval_m: tuple[float, float]
    coverage_in_band: bool
    intervals_overlap: bool

    @property
    def within_tolerance(self) -> bool:
        """Either check holds."""
        return self.coverage_in_band or self.intervals_overlap


def compare(log: CalibrationResult, log_scores: F64, sc: CalibrationResult, sc_holdout: F64) -> Comparison:
    """Judge whether the log quantile reproduces the scenario quantile within the statistical tolerance."""
    if log.alpha != sc.alpha:
        raise CalibrationError(f"compare needs the same α on both sides, got {log.alpha} and {sc.alpha}")
    h = sc_holdout[np.isfinite(sc_holdout)]
    if h.size == 0:
        raise CalibrationError("the scenario has no held-out scores; raise the held-out episodes")
    cov = float(np.mean(h <= log.quantile_m))
    lo, hi = sc.band
    p = 1.0 - sc.alpha
    noise = Z90 * math.sqrt(p * (1.0 - p) / h.size)
    tol = (lo - noise, hi + noise)
    ls = log_scores[np.isfinite(log_scores)]
    log_iv = (float(np.quantile(ls, log.band[0])), float(np.quantile(ls, log.band[1])))
    sc_iv = (float(np.quantile(h, lo)), float(np.quantile(h, hi)))
    return Comparison(
        alpha=sc.alpha,
        log_quantile_m=log.quantile_m,
        log_n=log.n,
        log_band=log.band,
        log_holdout_coverage=log.holdout_coverage,
        scenario_quantile_m=sc.quantile_m,
        scenario_n=sc.n,
        scenario_band=sc.band,
        scenario_holdout_n=int(h.size),
        log_q_coverage_on_scenario=cov,
        tolerance=tol,
        log_q_interval_m=log_iv,
        scenario_q_interval_m=sc_iv,
        coverage_in_band=tol[0] <= cov <= tol[1],
        intervals_overlap=log_iv[0] <= sc_iv[1] and sc_iv[0] <= log_iv[1],
    )


def summary(c: Comparison) -> str:
    """The figures as text."""
    return "\n".join(
        [
            f"α = {c.alpha:g}",
            f"log:      q̂ = {c.log_quantile_m:.4f} m from n = {c.log_n} per-tick scores; Beta band "
            f"[{c.log_band[0]:.3f}, {c.log_band[1]:.3f}] → q in [{c.log_q_interval_m[0]:.4f}, {c.log_q_interval_m[1]:.4f}] m; "
            f"held-out (last third) coverage {c.log_holdout_coverage:.3f}",
            f"scenario: q̂ = {c.scenario_quantile_m:.4f} m from n = {c.scenario_n} episodes; Beta band "
            f"[{c.scenario_band[0]:.3f}, {c.scenario_band[1]:.3f}] → q in [{c.scenario_q_interval_m[0]:.4f}, "
            f"{c.scenario_q_interval_m[1]:.4f}] m",
            f"log q̂ covers {c.log_q_coverage_on_scenario:.3f} of the scenario's {c.scenario_holdout_n} held-out scores; "
            f"tolerance [{c.tolerance[0]:.3f}, {c.tolerance[1]:.3f}] → {'inside' if c.coverage_in_band else 'OUTSIDE'}",
            f"quantile intervals {'overlap' if c.intervals_overlap else 'do NOT overlap'}; "
            f"within tolerance: {'YES' if c.within_tolerance else 'NO'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: fly, calibrate both ways, compare."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.log_vs_scenario", description=__doc__.split("\n")[0]
    )
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder (e.g. the scripted goal seeker)")
    p.add_argument(
        "--out", type=Path, default=Path("out/log_vs_scenario"), help="folder for logs and the scenario"
    )
    p.add_argument("--flights", type=int, default=4, help="real SITL flights (about 40 s each)")
    p.add_argument("--wind", type=float, default=3.0, help="steady wind speed (m/s)")
    p.add_argument("--gust", type=float, default=1.0, help="gust intensity (std per axis, m/s)")
    p.add_argument(
        "--max-duration", type=float, default=60.0, help="flight time limit = scenario duration (s)"
    )
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--episodes", type=int, default=1000, help="scenario calibration episodes")
    p.add_argument("--holdout", type=int, default=1000, help="scenario held-out episodes")
    p.add_argument(
        "--reuse-logs", action="store_true", help="fly only the flights whose log is not in --out yet"
    )
    p.add_argument("--json", type=Path, default=None, help="write the comparison as JSON here")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    logs = []
    for k in range(a.flights):
        log = a.out / f"flight_{k}.eal"
        logs.append(log)
        toward = 360.0 * k / a.flights
        if a.reuse_logs and log.is_file():
            continue
        s = fly(
            a.bundle,
            log,
            wind_ned_m_s=wind_vector(a.wind, toward),
            gust_m_s=a.gust,
            seed=k,
            max_duration_s=a.max_duration,
        )
        print(
            f"flight {k}: wind {a.wind:g} m/s toward {toward:.0f}°, gusts {a.gust:g} m/s: {s.get('end_reason')}, {s.get('ticks')} ticks"
        )
    scn = write_equivalent_scenario(
        a.out / "equivalent.toml", wind_m_s=a.wind, gust_m_s=a.gust, duration_s=a.max_duration
    )
    log_res, log_scores = log_calibration(a.bundle, logs, a.alpha)
    sc_res, sc_hold = scenario_calibration(a.bundle, scn, a.alpha, episodes=a.episodes, holdout=a.holdout)
    c = compare(log_res, log_scores, sc_res, sc_hold)
    print(summary(c))
    print("same figures from the CLI:")
    print(
        f"  edge-agent calibrate {a.bundle} --from-log {' '.join(map(str, logs))} --alpha {a.alpha:g} --dry-run"
    )
    print(
        f"  edge-agent calibrate {a.bundle} --scenarios {scn} --alpha {a.alpha:g} --episodes {a.episodes} --holdout {a.holdout} --dry-run"
    )
    if a.json is not None:
        a.json.write_text(json.dumps(asdict(c), indent=1), encoding="utf-8")
    return 0 if c.within_tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
