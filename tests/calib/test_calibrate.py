"""Calibration: the section the loader accepts, real ArduPilot logs, refusing a bench ULog."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from calib.calibrate import calibrate_scores, calibration_section, horizon_ticks_for
from calib.logs import scores_from_logs
from calib.stats import split_conformal_quantile
from edge_agent.agent import calibrator_config_for
from edge_agent.bundle import load_bundle
from edge_agent.cli import main
from edge_agent.errors import CalibrationError
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
TLOGS = [DATA / "ardupilot" / "flight.tlog", DATA / "ardupilot" / "flight_sent.tlog"]


def test_calibrate_from_scenarios_writes_a_section_the_runtime_reads(
    good_bundle: Path, scenario_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "calibrate",
            str(good_bundle),
            "--scenarios",
            str(scenario_path),
            "--episodes",
            "60",
            "--holdout",
            "30",
            "--alpha",
            "0.1",
            "--quiet",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    m = load_bundle(good_bundle).manifest
    cal = m.calibration
    # An episode that ends (goal reached) within the 1 s horizon has no score and is left out.
    assert cal is not None and 55 <= cal["n"] <= 60
    assert f"n = {cal['n']} scores, α = 0.1" in out and "held-out empirical coverage" in out
    assert cal["alpha"] == 0.1 and cal["horizon_ticks"] == 50
    assert 0.0 < cal["quantile_m"] < 2.0
    assert cal["score_definition"].startswith("euclidean_position_error_m over horizon H=50")
    config, warm = calibrator_config_for(cal, m.control_rate_hz)
    assert warm == cal["quantile_m"] and config.alpha == 0.1


def test_quantile_is_the_split_conformal_one_and_the_report_is_honest() -> None:
    rng = np.random.default_rng(3)
    s, h = rng.exponential(size=500), rng.exponential(size=4000)
    r = calibrate_scores(s, h, 0.1)
    assert r.quantile_m == split_conformal_quantile(s, 0.1) == np.sort(s)[math.ceil(501 * 0.9) - 1]
    assert r.band == pytest.approx((0.877, 0.921), abs=2e-3)
    assert 0.86 <= r.holdout_coverage <= 0.94
    sec = calibration_section(r, horizon_ticks_for(50.0), "abc", "test")
    assert sec["quantile_m"] == r.quantile_m and sec["n"] == 500
    with pytest.raises(CalibrationError, match=re.escape("n = 5 scores cannot support α = 0.1")):
        calibrate_scores(s[:5], h, 0.1)


def test_calibration_from_the_ardupilot_tlogs_gives_a_finite_quantile(
    good_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = scores_from_logs(TLOGS, 1.0)
    assert logs.scores_m.size >= 30 and np.all(np.isfinite(logs.scores_m))
    # The vehicle flew 2 m/s north for 5 s: the nominal model is right to within a metre over 1 s.
    assert float(np.median(logs.scores_m)) < 1.0
    rc = main(["calibrate", str(good_bundle), "--from-log", *map(str, TLOGS), "--alpha", "0.2"])
    assert rc == 0
    cal = load_bundle(good_bundle).manifest.calibration
    assert cal is not None and math.isfinite(cal["quantile_m"]) and cal["source"].startswith("logs: ")


def test_only_the_companions_file_is_refused_with_the_fix() -> None:
    with pytest.raises(
        CalibrationError, match=re.escape("no LOCAL_POSITION_NED messages; give the vehicle's")
    ):
        scores_from_logs(TLOGS[1:], 1.0)


@pytest.mark.parametrize("name", ["sample_log_small.ulg", "sample_px4_events.ulg"])
def test_ulog_without_offboard_flight_is_refused(name: str) -> None:
    with pytest.raises(CalibrationError, match=re.escape("holds no offboard flight with velocity setpoints")):
        scores_from_logs([DATA / "px4-ulog" / name], 1.0)


def test_cli_error_for_a_bench_log(good_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["calibrate", str(good_bundle), "--from-log", str(DATA / "px4-ulog" / "sample_log_small.ulg")])
    assert rc == 1
    assert "never OFFBOARD = 14; no trajectory_setpoint topic at all" in capsys.readouterr().err


def test_replay_reproduces_the_campaign_episode(
    bundles: dict[str, Path], scenario_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "r.png"
    rc = main(
        [
            "replay",
            str(bundles["bad"]),
            "--scenarios",
            str(scenario_path),
            "--seed",
            "3",
            "--no-shield",
            "--out",
            str(png),
        ]
    )
    assert rc == 0 and png.stat().st_size > 10_000
    assert capsys.readouterr().out.startswith("episode 3: ")
