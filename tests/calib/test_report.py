"""`edge-agent report`: flight logs written by the real FlightLog, with the demo mission in the header."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calib.report import (
    constraint_distances,
    load_flight,
    mission_from_header,
    rolling_coverage,
    summarize,
    write_report,
)
from calib.report_cli import default_out_dir, summary_line
from calib.report_cli import run as report_run
from edge_agent.cli import main as cli_main
from edge_agent.errors import ConfigError
from edge_agent.fallback import Stage
from edge_agent.flightlog import FlightLog, FlightLogError
from edge_agent.loop import _mission_record  # the exact header format the loop writes
from edge_agent.mission import load_mission
from edge_agent.shield import Reason

ROOT = Path(__file__).resolve().parents[2]
DEMO_MISSION = ROOT / "examples" / "missions" / "demo.toml"
RATE_HZ = 50.0


def _header(*, shield: bool = True, certificate: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "bundle": "bundles/test",
        "manifest_sha256": "0" * 64,
        "features": ["goal_rel_ned_m", "vel_ned_m_s"],
        "action_kind": "velocity_ned_yaw_rate",
        "rate_hz": RATE_HZ,
        "mission": _mission_record(load_mission(DEMO_MISSION)),
        "shield_enabled": shield,
        "certificate": certificate,
        "calibration": None,
        "autopilot": "PX4",
        "params": {},
        "link": "serial:///dev/pts/9",
    }


def write_flight(
    path: Path,
    pos_ned_m: np.ndarray,
    *,
    layer: np.ndarray | None = None,
    reason: np.ndarray | None = None,
    stage: np.ndarray | None = None,
    miss: np.ndarray | None = None,
    infer_us: np.ndarray | None = None,
    late_us: np.ndarray | None = None,
    shield: bool = True,
    certificate: dict[str, Any] | None = None,
    finish: str | None = "mission complete",
    header: dict[str, Any] | None = None,
) -> Path:
    """A flight log through the real writer; ``miss`` [T] (1 miss, 0 covered, NaN unscored)."""
    t = len(pos_ned_m)
    z = np.zeros(t, dtype=np.int64)
    layer = z if layer is None else layer
    reason = z if reason is None else reason
    stage = z if stage is None else stage
    miss = np.zeros(t) if miss is None else miss
    infer_us = np.full(t, 200.0) if infer_us is None else infer_us
    late_us = np.full(t, 50.0) if late_us is None else late_us
    scored = np.isfinite(miss)
    n_scored = np.cumsum(scored)
    n_miss = np.cumsum(np.where(scored, miss, 0.0))
    with FlightLog(path, {**_header(shield=shield, certificate=certificate), **(header or {})}) as log:
        log.event(0.0, "connected", autopilot="PX4", mode="POSCTL")
        for i in range(t):
            log.write(
                {
                    "k": "tick",
                    "t_s": i / RATE_HZ,
                    "pos_ned_m": [float(x) for x in pos_ned_m[i]],
                    "vel_ned_m_s": [0.0, 0.0, 0.0],
                    "age_s": [0.0, 0.0, 0.0, 0.0],
                    "raw_action": [0.0, 0.0, 0.0, 0.0],
                    "setpoint": [0.0, 0.0, 0.0, 0.0],
                    "layer": int(layer[i]),
                    "reason": int(reason[i]),
                    "stage": int(stage[i]),
                    "margin_m": 0.5,
                    "score_m": 0.3 if scored[i] else math.nan,
                    "miscoverage": n_miss[i] / n_scored[i] if n_scored[i] else math.nan,
                    "alarm": False,
                    "slack_m": 1.0,
                    "goal": 0,
                    "infer_us": float(infer_us[i]),
                    "tick_us": float(infer_us[i]) + 1000.0,
                    "late_us": float(late_us[i]),
                    "mode": "OFFBOARD",
                }
            )
        if finish is not None:
            log.event(t / RATE_HZ, "finish", reason=finish)
    return path


def _line(a: tuple[float, float, float], b: tuple[float, float, float], n: int) -> np.ndarray:
    return np.linspace(a, b, n)


# -- reading --------------------------------------------------------------------------------------


def test_mission_from_header_measures_like_the_mission_that_flew() -> None:
    mission = load_mission(DEMO_MISSION)
    logged = mission_from_header(_header())
    rng = np.random.default_rng(3)
    pts = rng.uniform([-40, -40, -35], [40, 40, 2], size=(500, 3))
    for ours, theirs in zip(
        logged.geometry.features(pts).values(), mission.geometry.features(pts).values(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    assert logged.waypoints_ned_m == mission.waypoints_ned_m
    assert logged.autopilot_fence == mission.autopilot.fence


def test_missing_log_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        FlightLogError, match=re.escape("does not exist; pass the file written by `edge-agent run --log`")
    ):
        load_flight(tmp_path / "nope.eal")


def test_log_without_ticks_says_the_agent_never_took_control(tmp_path: Path) -> None:
    path = tmp_path / "f.eal"
    with FlightLog(path, _header()) as log:
        log.event(0.0, "connected", autopilot="PX4", mode="POSCTL")
    with pytest.raises(
        FlightLogError,
        match=re.escape("holds no tick records: the agent never took control (events: connected)"),
    ):
        load_flight(path)


def test_header_without_mission_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.eal"
    header = _header()
    del header["mission"]
    with FlightLog(path, header):
        pass
    with pytest.raises(FlightLogError, match=re.escape("the log header has no mission record")):
        load_flight(path)


# -- the table of figures ---------------------------------------------------------------------------


def test_cutting_through_the_mast_counts_one_breach_of_its_radius(tmp_path: Path) -> None:
    # Straight through the centre of the mast (cylinder r 3 m at N 9, E 4), 10 m up.
    pos = _line((9.0, -10.0, -10.0), (9.0, 18.0, -10.0), 281)
    flight = load_flight(write_flight(tmp_path / "f.eal", pos))
    s = summarize(flight)
    mast = next(c for c in s.constraints if c.name.startswith("keep-out 0: cylinder r 3 m at N 9, E 4"))
    assert mast.min_distance_m == pytest.approx(-3.0, abs=1e-9)  # a sample lands on the axis
    inside = np.hypot(pos[:, 0] - 9.0, pos[:, 1] - 4.0) < 3.0
    assert mast.breach_ticks == int(inside.sum()) and mast.breaches == 1
    # The building (N 8..14, E -12..-6) is crossed too: its footprint contains the path.
    building = next(c for c in s.constraints if c.name.startswith("keep-out 1: box"))
    assert building.breaches == 1 and building.min_distance_m == pytest.approx(-1.0, abs=1e-9)
    assert s.breaches == 2
    fence = next(c for c in s.constraints if c.name == "geofence (horizontal)")
    assert fence.breach_ticks == 0 and fence.min_distance_m == pytest.approx(12.0)


def test_two_entries_are_two_breaches_and_the_floor_is_free_while_landing(tmp_path: Path) -> None:
    alt = np.concatenate(
        [np.full(10, 5.0), np.full(5, 1.0), np.full(10, 5.0), np.full(5, 1.5), np.full(5, 0.5)]
    )
    pos = np.column_stack([np.zeros_like(alt) - 20, np.zeros_like(alt) - 20, -alt])
    stage = np.zeros(len(alt), dtype=np.int64)
    stage[-5:] = int(Stage.LAND)  # the fallback lands: going through the floor is the plan
    s = summarize(load_flight(write_flight(tmp_path / "f.eal", pos, stage=stage)))
    floor = next(c for c in s.constraints if c.name == "altitude floor")
    assert (floor.breaches, floor.breach_ticks) == (2, 10)
    assert floor.min_distance_m == pytest.approx(
        -1.0
    )  # 1 m below the 2 m floor; the 0.5 m landing is excluded


def test_interventions_by_layer_and_reason_and_the_bypassed_shield(tmp_path: Path) -> None:
    pos = _line((-20.0, -20.0, -10.0), (20.0, -20.0, -10.0), 100)
    layer = np.array([0] * 50 + [2] * 30 + [1] * 5 + [3] * 15)
    reason = np.array(
        [0] * 50
        + [int(Reason.KEEPOUT)] * 20
        + [int(Reason.SPEED_LIMIT)] * 10
        + [int(Reason.DEADLINE)] * 5
        + [int(Reason.INFEASIBLE)] * 15
    )
    on = summarize(load_flight(write_flight(tmp_path / "on.eal", pos, layer=layer, reason=reason)))
    assert on.interventions_by_layer == {"watchdog": 5, "barrier": 30, "fallback": 15}
    assert on.interventions_by_reason == {"KEEPOUT": 20, "INFEASIBLE": 15, "SPEED_LIMIT": 10, "DEADLINE": 5}
    assert on.would_have_intervened == 0
    # With --no-shield the log says what the barrier and fallback would have done; only the
    # watchdog's hold reached the vehicle.
    off = summarize(
        load_flight(write_flight(tmp_path / "off.eal", pos, layer=layer, reason=reason, shield=False))
    )
    assert off.interventions_by_layer == {"watchdog": 5, "barrier": 0, "fallback": 0}
    assert off.interventions_by_reason == {"DEADLINE": 5}
    assert off.would_have_intervened == 45


def test_outcome_certificate_and_latency(tmp_path: Path) -> None:
    pos = _line((-20.0, -20.0, -10.0), (20.0, 20.0, -10.0), 10)
    cert = {"n": 400, "k": 0, "beta": 0.05, "epsilon": 1 - 0.05 ** (1 / 400)}
    infer = np.array([100.0] * 8 + [20_000.0, 9_000.0])  # deadline = half of 20 ms
    late = np.array([0.0] * 9 + [25_000.0])  # one tick started more than a period late
    s = summarize(
        load_flight(
            write_flight(
                tmp_path / "f.eal",
                pos,
                certificate=cert,
                infer_us=infer,
                late_us=late,
                finish="signal SIGINT",
            )
        )
    )
    assert not s.mission_complete and s.end_reason == "signal SIGINT"
    assert s.certificate == cert
    assert s.deadline_us == pytest.approx(10_000.0)
    assert (s.deadline_misses, s.overruns) == (1, 1)
    assert s.tick_us_max == pytest.approx(21_000.0)
    unfinished = summarize(load_flight(write_flight(tmp_path / "g.eal", pos, finish=None)))
    assert unfinished.end_reason == "log ends without a finish record"


def test_rolling_coverage_recovers_every_miss_from_the_running_miscoverage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = 900
    miss = (rng.random(t) < 0.15).astype(np.float64)
    miss[:40] = np.nan  # nothing scored until the horizon has passed
    miss[rng.random(t) < 0.05] = np.nan  # and a few invalid samples later on
    pos = np.tile([-20.0, -20.0, -10.0], (t, 1))
    flight = load_flight(write_flight(tmp_path / "f.eal", pos, miss=miss))
    rolling, cumulative = rolling_coverage(flight, window_s=2.0)
    w = int(2.0 * RATE_HZ)
    scored = np.isfinite(miss)
    for i in (60, 300, 899):
        sl = slice(max(0, i - w + 1), i + 1)
        expect = 1.0 - np.nansum(miss[sl]) / scored[sl].sum()
        assert rolling[i] == pytest.approx(expect, abs=1e-12)
    assert np.isnan(rolling[:40]).all() and np.isnan(cumulative[:40]).all()
    assert cumulative[-1] == pytest.approx(1.0 - np.nansum(miss) / scored.sum(), abs=1e-12)
    s = summarize(flight)
    assert s.coverage == pytest.approx(cumulative[-1]) and s.target_coverage == pytest.approx(0.9)


def test_constraint_distances_name_every_zone_in_mission_order(tmp_path: Path) -> None:
    pos = _line((-20.0, -20.0, -10.0), (20.0, 20.0, -10.0), 5)
    names = [n for n, _, _ in constraint_distances(load_flight(write_flight(tmp_path / "f.eal", pos)))]
    assert names == [
        "geofence (horizontal)",
        "altitude floor",
        "altitude ceiling",
        "keep-out 0: cylinder r 3 m at N 9, E 4",
        "keep-out 1: box N 8..14, E -12..-6",
    ]


# -- the page ----------------------------------------------------------------------------------------


def test_compare_report_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    safe = _line((-20.0, -20.0, -10.0), (20.0, -20.0, -10.0), 150)
    layer = np.where(np.arange(150) % 3 == 0, 2, 0)
    reason = np.where(layer == 2, int(Reason.FENCE), 0)
    a = write_flight(tmp_path / "shielded.eal", safe, layer=layer, reason=reason)
    b = write_flight(
        tmp_path / "unshielded.eal", _line((9.0, -10.0, -10.0), (9.0, 18.0, -10.0), 150), shield=False
    )
    out = tmp_path / "rep"
    assert cli_main(["report", str(a), "--compare", str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shielded.eal: shield on; mission complete; breaches 0" in printed
    assert "unshielded.eal: shield OFF; mission complete; breaches 2" in printed
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 8  # 4 figures × 2 flights, embedded
    assert "Flight comparison" in page and "2 breaches" in page and "no breaches" in page
    assert "not certified" in page
    for name in ("trajectory", "altitude", "calibration", "latency"):
        for suffix in ("", "_compare"):
            assert (out / f"{name}{suffix}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare_trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_report_default_folder_and_summary_line(tmp_path: Path) -> None:
    log = write_flight(tmp_path / "flight.eal", _line((-20.0, -20.0, -10.0), (20.0, 20.0, -10.0), 60))
    assert default_out_dir(log) == tmp_path / "flight-report"
    result = write_report(log, default_out_dir(log))
    assert result.html_path == tmp_path / "flight-report" / "report.html"
    assert len(result.figure_paths) == 4
    line = summary_line(result.summaries[0])
    assert line.startswith(
        "flight.eal: shield on; mission complete; breaches 0; interventions 0/60 ticks; closest "
    )
    assert "Flight report" in result.html_path.read_text(encoding="utf-8")


def test_comparing_a_log_with_itself_is_refused(tmp_path: Path) -> None:
    log = write_flight(tmp_path / "f.eal", _line((-20.0, -20.0, -10.0), (20.0, 20.0, -10.0), 5))
    args = argparse.Namespace(log=log, compare=log, out=None)
    with pytest.raises(ConfigError, match=re.escape("is the same log as LOG; pass a different flight's log")):
        report_run(args)


HOSTILE = "<script>alert(1)</script>"


def test_hostile_log_header_is_escaped_in_the_page(tmp_path: Path) -> None:
    # Every string a flight log carries into the page: header fields, certificate fields, the end
    # reason, the log's own file name. The template autoescapes all of them.
    cert = {"epsilon": 1e-3, "k": HOSTILE, "n": '"><img src=x onerror=alert(2)>', "beta": 1e-6}
    log = write_flight(
        tmp_path / "<b onmouseover=alert(3)>.eal",
        _line((-20.0, -20.0, -10.0), (20.0, 20.0, -10.0), 30),
        certificate=cert,
        finish="</td></tr></table><script>alert(4)</script>",
        header={"bundle": HOSTILE, "autopilot": "<iframe src=//evil>", "link": "udp://'onload='alert(5)"},
    )
    page = write_report(log, tmp_path / "rep").html_path.read_text(encoding="utf-8")
    for raw in (
        HOSTILE,
        "<img src=x",
        "<b onmouseover",
        "</td></tr></table><script>",
        "<iframe",
        "'onload='",
    ):
        assert raw not in page, raw
    assert "<script" not in page and "<iframe" not in page
    assert "bundle &lt;script&gt;alert(1)&lt;/script&gt; · autopilot &lt;iframe src=//evil&gt;" in page
    assert "k = &lt;script&gt;alert(1)&lt;/script&gt; failures in N = &#34;&gt;&lt;img src=x" in page
    assert "&lt;b onmouseover=alert(3)&gt;.eal: shield ON" in page
    assert "link udp://&#39;onload=&#39;alert(5)" in page
