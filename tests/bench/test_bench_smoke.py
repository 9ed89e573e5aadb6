"""CI smoke test of ``edge-agent bench``: it runs end to end on a tiny budget and emits the
documented JSON keys. It says nothing about speed (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.mark.timeout(300)
def test_bench_json_has_every_documented_key(tmp_path: Path) -> None:
    proc = bench(
        "--json", "--ticks", "60", "--loop-duration", "2", "--loop-rates", "250",
        "--batches", "1,4", "--episode-s", "0.2", "--bridge-messages", "40", "--repeat", "1",
        "--sections", "tick,loop,startup,bridge,certify", "--no-sb3", "--work-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1
    assert {"cpu_model", "cpus", "load_avg_start", "load_avg_end", "python", "onnxruntime"} <= set(
        doc["machine"]
    )
    pct = {"p50_us", "p99_us", "p99_9_us", "mean_us", "n"}
    tick = doc["tick"]
    assert pct <= set(tick["tick"]) and tick["tick"]["n"] == 60
    assert pct <= set(tick["onnxruntime_run"]) and pct <= set(tick["torch_eager"])
    assert tick["sb3_predict"] == {"skipped": "not requested (--no-sb3)"}
    assert {"tick_over_onnxruntime_run_p50", "tick_over_torch_eager_p50"} <= set(tick["ratios"])
    assert 0.0 <= tick["shield_full_path_fraction"] <= 1.0
    assert 0.0 <= tick["barrier_projection_fraction"] <= 1.0
    stages = tick["stages"]
    names = ("state_arrays", "observation", "policy", "shield", "shadows", "calibrator", "encode")
    assert set(stages) == {*names, "other", "tick"}
    assert all(pct <= set(v) and v["n"] == 100 for v in stages.values())
    # The stages are timed inside the tick: none is longer than it, and the rest is not negative.
    assert all(stages[k]["mean_us"] <= stages["tick"]["mean_us"] for k in names)
    assert stages["other"]["mean_us"] >= 0.0
    loop = doc["loop"]["250"]
    assert {
        "achieved_rate_hz", "jitter_p99_us", "deadline_misses", "dropped_ticks", "missed_fraction",
        "telemetry_to_setpoint_p50_us", "telemetry_to_setpoint_p99_us", "rss_steady_mib",
    } <= set(loop)  # fmt: skip
    assert loop["ticks"] > 0 and loop["rss_steady_mib"] > 0
    start = doc["startup"]
    assert start["cold_start_s"] > 0 and "onnxruntime" in start["modules"]
    assert not {"torch", "scipy", "sitl", "calib", "export"} & set(start["modules"])
    bridge = doc["bridge"]
    assert set(bridge["encode_us_per_msg"]) == {"ours", "pymavlink_send"}
    assert set(bridge["parse_us_per_msg"]) == {"ours", "ours_4k_chunks", "pymavlink_parse_buffer"}
    assert all(v["received"] == 40 for v in bridge["pty"].values())
    cert = doc["certify"]
    assert [r["batch"] for r in cert["local"]] == [1, 4]
    assert all(r["vehicle_steps_per_s"] > 0 for r in cert["local"])
    assert {t["name"] for t in doc["targets"]} >= {"tick p99 (µs)", "cold start (s)"}
    # The saved run is shown and drawn again without measuring anything.
    saved = tmp_path / "run.json"
    saved.write_text(proc.stdout)
    shown = bench("--from-json", str(saved), "--plot", str(tmp_path / "run.png"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "targets (issue 8)" in shown.stdout and "figure written" in shown.stderr
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_table_and_bad_arguments(tmp_path: Path) -> None:
    proc = bench("--sections", "bridge", "--bridge-messages", "8", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[4] bridge" in proc.stdout and "targets (issue 8)" in proc.stdout
    bad = bench("--sections", "tick,warp")
    assert bad.returncode == 1
    assert re.search(
        re.escape("--sections 'tick,warp': unknown ['warp']; choose from tick,variants"), bad.stderr
    )
    not_a_run = tmp_path / "x.json"
    not_a_run.write_text('{"a": 1}')
    refused = bench("--from-json", str(not_a_run))
    assert refused.returncode == 1
    assert "not the output of `edge-agent bench --json` (schema 1)" in refused.stderr
    missing = bench("--sections", "tick", "--mission", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1
    assert (
        f"--mission {tmp_path / 'nope.toml'} does not exist; give the path of a mission TOML"
        in missing.stderr
    )
