"""Sections 2 and 3 of the benchmark: the loop against the SITL, memory and start-up.

Section 2 runs the real thing in two processes: ``edge-agent sitl --flavor px4 --link pty://``
(the simulated autopilot, on a pseudo-terminal carrying MAVLink) and ``edge-agent run --rate R``
against it. Rate, jitter and deadline figures come from the run's summary and its flight log;
telemetry-to-setpoint latency is, per tick, the age of the position sample when the tick began
(the bridge stamps a message when it parses it) plus the tick's own duration up to the write.
The run's resident set size is sampled from /proc/PID/status while it flies.

Section 3's start-up probe is a fresh interpreter doing what ``edge-agent run`` does up to its
first certified setpoint (imports, bundle verification, session, agent), timed from spawn.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import skipped
from edge_agent.errors import EdgeAgentError
from edge_agent.flightlog import read_log
from firmware_bridge.exitcodes import FLIGHT_OUTCOMES

_HINT = re.compile(r"connect to (serial://\S+)")


class BenchError(EdgeAgentError):
    """A benchmark could not run (the SITL did not start, the agent failed)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent.cli", *args]


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (None once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def start_sitl(
    timeout_s: float = 30.0, *, realtime_priority: int | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start the PX4 SITL on a pty; returns the process and the serial URL it printed.

    With ``realtime_priority`` the SITL runs at SCHED_FIFO: it stands in for the autopilot, which
    on a vehicle has a processor of its own. Left at the normal scheduler on a loaded machine it is
    preempted while it holds the pty's locks, and a SCHED_FIFO agent then waits in ``read`` for a
    whole scheduler tick (4 ms) — a priority inversion a UART to a real autopilot does not have.
    """
    proc = subprocess.Popen(
        _cli("sitl", "--fast-boot", "--flavor", "px4", "--link", "pty://"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if realtime_priority is not None:
        try:
            os.sched_setscheduler(proc.pid, os.SCHED_FIFO, os.sched_param(realtime_priority))
        except OSError as exc:
            proc.kill()
            raise BenchError(
                f"cannot run the SITL at SCHED_FIFO priority {realtime_priority}: {exc.strerror}; "
                f"run the bench with CAP_SYS_NICE or without --loop-realtime-priority"
            ) from exc
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        m = _HINT.search(line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise BenchError(
        f"`edge-agent sitl --link pty://` printed no 'connect to serial://...' line within {timeout_s:.0f} s; "
        f"its output was: {' | '.join(seen[-5:]) or '(nothing)'}"
    )


def measure_loop(
    bundle: Path,
    mission: Path,
    rate_hz: float,
    duration_s: float,
    *,
    realtime_priority: int | None = None,
    spin_us: float = 0.0,
) -> dict[str, Any]:
    """One flight of ``edge-agent run --rate rate_hz`` against the SITL for duration_s seconds.

    With ``realtime_priority`` the agent runs at SCHED_FIFO (``--realtime-priority``) and the SITL
    just below it (see :func:`start_sitl`); with ``spin_us`` it waits the last µs before each tick
    on the clock (``--spin-us``).
    """
    sitl, url = start_sitl(
        realtime_priority=None if realtime_priority is None else max(realtime_priority - 1, 1)
    )
    log = Path(tempfile.mkdtemp(prefix="ea-bench-")) / "flight.eal"
    try:
        cmd = _cli(
            "run", "--bundle", str(bundle), "--mission", str(mission), "--link", url,
            "--rate", f"{rate_hz:g}", "--max-duration", f"{duration_s:g}", "--end", "hold",
            "--json", "--log", str(log),
        )  # fmt: skip
        if realtime_priority is not None:
            cmd += ["--realtime-priority", str(realtime_priority)]
        if spin_us:
            cmd += ["--spin-us", f"{spin_us:g}"]
        t0 = time.monotonic()
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rss: list[int] = []
        limit = duration_s + 120.0
        while run.poll() is None and time.monotonic() - t0 < limit:
            r = rss_kib(run.pid)
            if r is not None:
                rss.append(r)
            time.sleep(0.1)
        if run.poll() is None:
            run.kill()
            raise BenchError(f"`edge-agent run` did not finish within {limit:.0f} s")
        out, err = run.communicate()
        lines = [x for x in out.splitlines() if x.startswith("{")]
        if run.returncode not in FLIGHT_OUTCOMES or not lines:  # 4: stopped by --max-duration
            raise BenchError(
                f"`edge-agent run` exited with {run.returncode}: {err.strip().splitlines()[-1:] or out[-300:]}"
            )
        summary = json.loads(lines[-1])
    finally:
        sitl.terminate()
        try:
            sitl.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sitl.kill()
    figures = _loop_figures(summary, log, rate_hz, rss)
    figures["realtime_priority"] = realtime_priority
    figures["spin_us"] = spin_us
    return figures


def _loop_figures(summary: dict[str, Any], log: Path, rate_hz: float, rss: list[int]) -> dict[str, Any]:
    period_us = 1e6 / rate_hz
    ages, tick_us, late_us = [], [], []
    for rec in read_log(log):
        if rec.get("k") == "tick":
            ages.append(rec["age_s"][0] * 1e6)
            tick_us.append(rec["tick_us"])
            late_us.append(rec["late_us"])
    ticks = len(tick_us)
    duration = float(summary["duration_s"])
    expected = max(round(duration * rate_hz), 1)
    t_arr, late = np.asarray(tick_us), np.asarray(late_us)
    missed = int(np.sum(late + t_arr > period_us)) if ticks else 0
    dropped = max(expected - ticks, 0)
    lat = np.asarray(ages) + t_arr if ticks else np.zeros(0)
    steady = rss[len(rss) // 2 :] or rss  # after connect, activation and climb
    return {
        "rate_hz": rate_hz,
        "duration_s": duration,
        "ticks": ticks,
        "achieved_rate_hz": ticks / duration if duration > 0 else float("nan"),
        "jitter_p99_us": float(np.percentile(late, 99)) if ticks else float("nan"),
        "tick_p50_us": float(np.percentile(t_arr, 50)) if ticks else float("nan"),
        "tick_p99_us": float(np.percentile(t_arr, 99)) if ticks else float("nan"),
        "deadline_misses": missed,
        "dropped_ticks": dropped,
        "missed_fraction": (missed + dropped) / expected,
        "inference_deadline_misses": int(summary["deadline_misses"]),
        "overruns": int(summary["overruns"]),
        "telemetry_to_setpoint_p50_us": float(np.percentile(lat, 50)) if ticks else float("nan"),
        "telemetry_to_setpoint_p99_us": float(np.percentile(lat, 99)) if ticks else float("nan"),
        "rss_steady_mib": (max(steady) / 1024.0) if steady else float("nan"),
        "end_reason": summary["end_reason"],
    }


_PROBE = r"""
import json, sys, time
t_import = time.perf_counter()
import edge_agent.run_cli  # what `edge-agent run` imports
import numpy as np
from edge_agent.agent import build_agent
from edge_agent.bundle import load_bundle
from edge_agent.mission import load_mission
from edge_agent.observation import state_arrays
from edge_agent.policy import PolicyRunner
from firmware_bridge.adapters import setpoint_to_mavlink
from firmware_bridge.mavlink_codec import MavlinkEncoder
from firmware_bridge.types import Autopilot, Signal, VehicleState, VelocityNedYawRate
imported = time.perf_counter()
public_key = bytes.fromhex(sys.argv[3]) if len(sys.argv) > 3 else None  # signed: as `run --public-key`
bundle = load_bundle(sys.argv[1], public_key=public_key)
mission = load_mission(sys.argv[2])
core = build_agent(policy=PolicyRunner(bundle), manifest=bundle.manifest, mission=mission)
now = 10**9
p = tuple(float(x) for x in mission.waypoints_ned_m[0])
st = VehicleState(pos_ned_m=Signal(p, now), vel_ned_m_s=Signal((0.0, 0.0, 0.0), now),
    q_wxyz=Signal((1.0, 0.0, 0.0, 0.0), now), rates_frd_rad_s=Signal((0.0, 0.0, 0.0), now),
    link_up=True, heartbeat_stamp_ns=now)
d = core.step(state_arrays(st, now), 1.0, np.ones(1, dtype=bool))
sp = d.setpoint[0]
frame = MavlinkEncoder(1, 191).encode(setpoint_to_mavlink(
    VelocityNedYawRate((float(sp[0]), float(sp[1]), float(sp[2])), float(sp[3])), Autopilot.PX4, 0, 1, 1))
done = time.perf_counter()
status = open("/proc/self/status").read()
rss = int(status.split("VmRSS:")[1].split()[0])
print("READY " + json.dumps({"import_s": imported - t_import, "load_to_setpoint_s": done - imported,
    "rss_kib": rss, "frame_bytes": len(frame),
    "modules": sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})}), flush=True)
"""

_TORCH_PROBE = r"""
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
print("READY " + json.dumps({"import_s": t1 - t0, "rss_kib": rss}), flush=True)
"""


def _probe(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a probe; ``ready_s`` is spawn → its READY line (read here), ``process_wall_s`` → its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = None
    ready = float("nan")
    for raw in proc.stdout:
        if raw.startswith("READY "):
            ready = time.perf_counter() - t0
            line = raw
            break
    try:
        _rest, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BenchError("start-up probe did not exit within 120 s") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or line is None:
        raise BenchError(f"start-up probe failed: {err.strip().splitlines()[-1:]}")
    out: dict[str, Any] = json.loads(line[6:])
    out["ready_s"] = ready
    out["process_wall_s"] = wall
    return out


def _median_probe(code: str, *args: str, runs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The run with the median time to READY among ``runs`` probes (one warm-up first)."""
    _probe(code, *args, env=env)  # warm the page cache (and, with a pycache prefix, the bytecode)
    results = sorted((_probe(code, *args, env=env) for _ in range(max(runs, 1))), key=lambda r: r["ready_s"])
    med = dict(results[len(results) // 2])
    med["ready_s_all"] = [r["ready_s"] for r in results]
    return med


def measure_startup(bundle: Path, mission: Path, runs: int = 3) -> dict[str, Any]:
    """Cold start (spawn → first certified, encoded setpoint), its RSS and modules; torch beside it.

    ``cold_start_s`` stops the clock when the probe reports its first encoded setpoint (median of
    ``runs``, after one warm-up run for the page cache); the old figure, spawn → process exit
    (interpreter teardown included), is ``cold_start_to_exit_s``. When this interpreter writes no
    bytecode (``PYTHONDONTWRITEBYTECODE``, as in the development container) every edge_agent and
    firmware_bridge module is compiled from source at each start; ``cold_start_bytecode_cached_s``
    is the same probe with the bytecode cached (in a temporary ``PYTHONPYCACHEPREFIX``), which is
    what a pip-installed runtime sees. ``signed`` is the probe on a signed copy of the bundle with
    the public key given, as ``edge-agent run --public-key`` starts (Ed25519 verification loads
    libsodium through PyNaCl; an unsigned start does not).
    """
    runtime = _median_probe(_PROBE, str(bundle), str(mission), runs=runs)
    out: dict[str, Any] = {
        "cold_start_s": runtime["ready_s"],
        "cold_start_runs_s": runtime["ready_s_all"],
        "cold_start_to_exit_s": runtime["process_wall_s"],
        "import_s": runtime["import_s"],
        "load_to_first_setpoint_s": runtime["load_to_setpoint_s"],
        "rss_at_first_setpoint_mib": runtime["rss_kib"] / 1024.0,
        "modules": runtime["modules"],
        "bytecode_written": not sys.flags.dont_write_bytecode,
    }
    if sys.flags.dont_write_bytecode:
        with tempfile.TemporaryDirectory(prefix="ea-pyc-") as pyc:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = pyc
            cached = _median_probe(_PROBE, str(bundle), str(mission), runs=runs, env=env)
        out["cold_start_bytecode_cached_s"] = cached["ready_s"]
        out["import_bytecode_cached_s"] = cached["import_s"]
    try:
        torch = _probe(_TORCH_PROBE)
        out["import_torch"] = {
            "process_wall_s": torch["process_wall_s"],
            "import_s": torch["import_s"],
            "rss_mib": torch["rss_kib"] / 1024.0,
        }
    except BenchError as exc:
        out["import_torch"] = skipped(str(exc))
    out["signed"] = _measure_signed_startup(bundle, mission, runs)
    return out


def _measure_signed_startup(bundle: Path, mission: Path, runs: int) -> dict[str, Any]:
    """The same probe on a signed copy of the bundle with the public key given (``run --public-key``)."""
    from edge_agent.bundle import ed25519_public_key, sign_bundle

    secret = bytes(range(32))  # a throwaway key: only the cost of verification is measured
    with tempfile.TemporaryDirectory(prefix="ea-signed-") as tmp:
        signed = Path(shutil.copytree(bundle, Path(tmp) / "bundle"))
        sign_bundle(signed, secret)
        probe = _median_probe(_PROBE, str(signed), str(mission), ed25519_public_key(secret).hex(), runs=runs)
    return {
        "cold_start_s": probe["ready_s"],
        "cold_start_runs_s": probe["ready_s_all"],
        "load_to_first_setpoint_s": probe["load_to_setpoint_s"],
        "rss_at_first_setpoint_mib": probe["rss_kib"] / 1024.0,
    }


__all__ = ["BenchError", "measure_loop", "measure_startup", "rss_kib", "start_sitl"]
