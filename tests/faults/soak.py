"""Soak: fly the PX4 SITL for a long time at 250 Hz; sample the agent's RSS; plot RSS and latency.

    .venv/bin/python -m tests.faults.soak --bundle /tmp/bundles/goal_seeker --duration 1800 \\
        --out /tmp/soak --figure docs/figures/soak.png

Starts ``edge-agent sitl --flavor px4 --link pty://`` and ``edge-agent run --rate 250`` on the
soak mission (tests/faults/soak.toml, a route that outlasts the run), samples ``VmRSS`` of the
agent from ``/proc`` every ``--sample-s`` seconds, then reads the flight log back (all rotated
segments) and writes ``rss.csv``, ``summary.json`` and the figure. A script, not a test: it takes
the whole duration. ``--plot-only`` redraws from a finished run's folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EDGE_AGENT = [sys.executable, "-m", "edge_agent.cli"]


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB, None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def start_sitl(out: Path, nice: int, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start the SITL on a pty (output to ``out/sitl.log``); returns it and the URL it printed."""
    # A file, not a pipe nobody drains: a full pipe would stall the SITL. The child keeps its copy.
    with open(out / "sitl.log", "wb") as log:
        proc = subprocess.Popen(
            [*NICE(nice), *EDGE_AGENT, "sitl", "--fast-boot", "--flavor", "px4", "--link", "pty://", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    for _ in range(300):
        m = re.search(r"connect to (serial://\S+)", (out / "sitl.log").read_text())
        if m is not None:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the SITL did not print its device: {(out / 'sitl.log').read_text()!r}")


def NICE(level: int) -> list[str]:
    """``nice -n LEVEL`` prefix (a negative level needs root), nothing for 0."""
    return ["nice", "-n", str(level)] if level else []


def fly(args: argparse.Namespace) -> None:
    """Run the soak and sample RSS; writes rss.csv and run.json into ``args.out``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sitl_args = [a for p in args.sitl_param for a in ("--param", p)]
    sitl, url = start_sitl(out, args.nice, [*sitl_args, "--battery-mah", str(args.battery_mah)])
    try:
        cmd = [
            *NICE(args.nice),
            *EDGE_AGENT,
            "run",
            "--bundle",
            args.bundle,
            "--mission",
            str(HERE / "soak.toml"),
            "--link",
            url,
            "--rate",
            str(args.rate),
            "--max-duration",
            str(args.duration),
            "--end",
            "hold",
            "--log",
            str(out / "soak.eal"),
            "--json",
            *(["--no-shield"] if args.no_shield else []),
        ]
        t0 = time.monotonic()
        agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        with open(out / "rss.csv", "w") as f:
            f.write("t_s,rss_kib\n")
            while agent.poll() is None:
                kib = rss_kib(agent.pid)
                if kib is not None:
                    f.write(f"{time.monotonic() - t0:.1f},{kib}\n")
                    f.flush()
                time.sleep(args.sample_s)
        stdout, stderr = agent.communicate()
        (out / "agent.stderr").write_text(stderr)
        (out / "run.json").write_text(stdout.strip().splitlines()[-1] if stdout.strip() else "{}")
        print(f"agent exited {agent.returncode}; wall {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        sitl.terminate()
        sitl.wait(timeout=10)


def analyse(out: Path) -> dict[str, Any]:
    """Read the log and RSS samples back; summary figures per minute."""
    # The reader is the agent's own: it must read every rotated segment.
    sys.path.insert(0, str(REPO))
    from edge_agent.flightlog import read_log

    t, tick_us, late_us = [], [], []
    events: list[dict[str, Any]] = []
    segments = sorted(p.name for p in out.glob("soak.eal*"))
    for rec in read_log(out / "soak.eal"):
        if rec["k"] == "tick":
            t.append(rec["t_s"])
            tick_us.append(rec["tick_us"])
            late_us.append(rec["late_us"])
        elif rec["k"] == "event":
            events.append({k: v for k, v in rec.items() if k != "k"})
    ta, lat, late = np.array(t), np.array(tick_us), np.array(late_us)
    rss = np.loadtxt(out / "rss.csv", delimiter=",", skiprows=1, ndmin=2)
    run = json.loads((out / "run.json").read_text() or "{}")
    minute = (ta // 60).astype(int)
    per_min = [
        {
            "minute": int(m),
            "ticks": int((minute == m).sum()),
            "tick_us_p50": float(np.percentile(lat[minute == m], 50)),
            "tick_us_p99": float(np.percentile(lat[minute == m], 99)),
        }
        for m in np.unique(minute)
    ]
    # RSS growth: compare the mean of the second 5 minutes with the last 5 (start-up excluded).
    rt, rk = rss[:, 0], rss[:, 1]
    early = rk[(rt > 300) & (rt <= 600)]
    late_rss = rk[rt > rt.max() - 300]
    summary = {
        "duration_s": float(ta.max()) if ta.size else 0.0,
        "ticks_in_log": int(ta.size),
        "ticks_in_summary": run.get("ticks"),
        "segments": segments,
        "rss_kib_first": float(rk[0]),
        "rss_kib_5_10_min_mean": float(early.mean()) if early.size else None,
        "rss_kib_last_5_min_mean": float(late_rss.mean()),
        "rss_kib_max": float(rk.max()),
        "tick_us_p50": float(np.percentile(lat, 50)),
        "tick_us_p99": float(np.percentile(lat, 99)),
        "tick_us_p999": float(np.percentile(lat, 99.9)),
        "late_us_p99": float(np.percentile(late, 99)),
        "overruns": run.get("overruns"),
        "end_reason": run.get("end_reason"),
        "events": [e.get("name") for e in events],
        "per_minute": per_min,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {"summary": summary, "t": ta, "lat": lat, "rss": rss, "per_min": per_min}


def plot(data: dict[str, Any], figure: Path, compare: Path | None = None, compare_label: str = "") -> None:
    """RSS over time above tick latency (per-minute p50/p99) over time; optionally a second RSS run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rss, per_min = data["rss"], data["per_min"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a1.plot(rss[:, 0] / 60, rss[:, 1] / 1024, lw=1, label="this run")
    top = rss[:, 1].max()
    if compare is not None:
        other = np.loadtxt(compare / "rss.csv", delimiter=",", skiprows=1, ndmin=2)
        a1.plot(other[:, 0] / 60, other[:, 1] / 1024, lw=1, ls="--", label=compare_label or str(compare))
        top = max(top, other[:, 1].max())
        a1.legend(loc="lower right")
    a1.set_ylabel("agent RSS (MiB)")
    a1.set_ylim(0, max(1.0, top / 1024 * 1.2))
    a1.grid(alpha=0.3)
    m = np.array([p["minute"] for p in per_min]) + 0.5
    a2.plot(m, [p["tick_us_p50"] for p in per_min], label="p50", marker=".")
    a2.plot(m, [p["tick_us_p99"] for p in per_min], label="p99", marker=".")
    a2.set_ylabel("tick latency (µs), per minute")
    a2.set_xlabel("flight time (min)")
    a2.set_ylim(bottom=0)
    a2.legend()
    a2.grid(alpha=0.3)
    s = data["summary"]
    fig.suptitle(
        f"soak: {s['duration_s'] / 60:.0f} min, configured 250 Hz, achieved "
        f"{s['ticks_in_log'] / max(s['duration_s'], 1e-9):.0f} Hz (shared 2-core VM), PX4 SITL over a pty;\n"
        f"{s['ticks_in_log']} ticks logged in {len(s['segments'])} segment(s)",
        fontsize=10,
    )
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)


def main() -> int:
    """Command-line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="/tmp/bundles/goal_seeker")
    p.add_argument("--duration", type=float, default=1800.0, help="flight seconds (default 1800)")
    p.add_argument("--rate", type=float, default=250.0)
    p.add_argument(
        "--battery-mah", type=float, default=20000.0, help="SITL battery (default 20000: ~1 h of flight)"
    )
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    p.add_argument("--out", default="/tmp/soak")
    p.add_argument("--figure", default=str(REPO / "docs" / "figures" / "soak.png"))
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--compare", default=None, help="another run's folder whose RSS to overlay")
    p.add_argument("--compare-label", default="", help="legend for --compare")
    p.add_argument(
        "--sitl-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="autopilot parameter for the SITL (repeatable), e.g. COM_OF_LOSS_T=10",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness of the SITL and the agent (-5 on a shared machine, as root)",
    )
    p.add_argument(
        "--no-shield",
        action="store_true",
        help="bypass barrier/fallback (still computed and logged) so a fallback latch cannot end the soak",
    )
    args = p.parse_args()
    if not args.plot_only:
        fly(args)
    data = analyse(Path(args.out))
    plot(data, Path(args.figure), Path(args.compare) if args.compare else None, args.compare_label)
    print(json.dumps({k: v for k, v in data["summary"].items() if k != "per_minute"}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
